"""Capability defaults and VisualFlow directories under a real runner process: a run's llm_call follows
the output.text default to a loopback stand-in for vLLM (checking what AbstractCore's vLLM provider
sends), a flow that names its own model wins, and plain VisualFlow `*.json` files are served and run."""

from __future__ import annotations

from pathlib import Path

from runner_service.llm import NO_PROVIDER
from shared_store.bundles import compile_failures, get_bundle, import_flows_dir, list_bundles
from shared_store.capability_defaults import clear_default, set_default
from tests.runner.conftest import Gateway
from tests.runner.fake_openai import FAKE_MODEL, running_fake_openai
from tests.visualflows import caller_flow, echo_flow, llm_flow, write


def test_a_visualflow_directory_is_served_and_run(gateway: Gateway, tmp_path: Path) -> None:
    folder = tmp_path / "visualflows"
    write(folder, "echo.json", echo_flow("echo_json"))
    write(folder, "named by file.json", {**echo_flow(), "id": "not a valid id!"})
    write(folder, "broken.json", {"id": "broken_json", "nodes": [], "edges": []})  # valid JSON, no flow
    write(folder, "garbage.json", "{ not json")
    write(folder, "caller.json", caller_flow("caller_json", "echo_json"))  # calls echo.json's flow
    problems = import_flows_dir(gateway.db, folder)
    assert len(problems) == 1 and problems[0].startswith("garbage.json: not a readable VisualFlow")
    info = get_bundle(gateway.db, "echo_json")
    assert (info.bundle_version, info.source, info.manifest["metadata"]["format"]) == (
        "0.0.0", "flows_dir", "visualflow",
    )  # fmt: skip
    assert {"echo_json", "named-by-file", "broken_json"} <= {b.bundle_id for b in list_bundles(gateway.db)}
    # The flow a file calls as a subflow travels in its bundle, found by id in the same folder.
    assert sorted(get_bundle(gateway.db, "caller_json").manifest["flows"]) == ["caller_json", "echo_json"]
    # Unchanged files import to the same bytes: nothing is replaced, the id stays.
    assert import_flows_dir(gateway.db, folder) == problems
    assert get_bundle(gateway.db, "echo_json").sha256 == info.sha256

    echo = gateway.start("echo_json", {"message": "from a json file"})
    by_file = gateway.start("named-by-file", {"message": "named by its file"})
    caller = gateway.start("caller_json")
    runner = gateway.runner()
    assert gateway.wait_status(echo, "completed")["output"]["result"] == "from a json file"
    assert gateway.wait_status(by_file, "completed")["output"]["result"] == "named by its file"
    gateway.wait_status(caller, "completed")
    children = gateway.db.query("SELECT workflow_id, status FROM runs WHERE parent_run_id = ?", (caller,))
    assert children == [("caller_json@0.0.0:echo_json", "completed")]
    # The file that does not compile is reported (health / bundle listing), the runner goes on.
    assert any("broken_json@0.0.0 does not compile" in p for p in compile_failures(gateway.db))
    assert runner.stop() == 0


def test_llm_calls_follow_the_text_default_to_a_vllm_server(gateway: Gateway, tmp_path: Path) -> None:
    folder = tmp_path / "visualflows"
    write(folder, "ask.json", llm_flow("ask_llm"))
    write(folder, "pinned.json", llm_flow("ask_pinned", pins={"provider": "vllm", "model": "pinned-model"}))
    assert import_flows_dir(gateway.db, folder) == []
    with running_fake_openai(extra_models=("pinned-model",)) as fake:
        set_default(
            gateway.db, "output.text", provider="vllm", model=FAKE_MODEL, base_url=fake.base_url,
            options={"seed": 42, "guided_regex": "[a-z :]+"},
        )  # fmt: skip
        unpinned = gateway.start("ask_llm", {"prompt": "route me"})
        pinned = gateway.start("ask_pinned", {"prompt": "my own model"})
        gateway.runner()  # no ABSTRACTGATEWAY_PROVIDER: the db decides
        run = gateway.wait_status(unpinned, "completed", "failed")
        assert run["status"] == "completed", run["error"]
        assert (
            run["output"]["response"].startswith("fake answer:") and "route me" in run["output"]["response"]
        )
        run = gateway.wait_status(pinned, "completed", "failed")
        assert run["status"] == "completed", run["error"]

        def sent(prompt: str) -> list[dict]:
            return [r.body for r in fake.chat_requests if r.body and prompt in str(r.body["messages"])]

        (routed,) = sent("route me")
        assert routed["model"] == FAKE_MODEL
        # AbstractCore's vLLM provider sends vLLM's extensions as top-level fields (not extra_body).
        assert routed["guided_regex"] == "[a-z :]+" and "extra_body" not in routed
        assert routed["seed"] == 42  # a default option the flow does not set
        # The flow names its own model: it wins, on the default's server (same provider).
        assert [body["model"] for body in sent("my own model")] == ["pinned-model"]
        assert any(r.method == "GET" and r.path == "/v1/models" for r in fake.requests)

        assert clear_default(gateway.db, "output.text") is True
        after = gateway.start("ask_llm", {"prompt": "nobody routes me"})
        failed = gateway.wait_status(after, "failed")
        assert NO_PROVIDER in failed["error"]
        assert sent("nobody routes me") == []
