"""The run console in real headless Chromium: start from the form, a live timeline, answering an
ask, cancelling, an image inline, a server restart mid-stream, and the same 4xx as any client."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx

from .conftest import TOKEN, Deployment, login, screenshot


def timeline_cursors(page: Any) -> list[int]:
    return [
        int(c) for c in page.eval_on_selector_all("#timeline li", "els => els.map(e => e.dataset.cursor)")
    ]


def test_start_from_the_form_and_watch_the_timeline_fill_live(
    page: Any, deployment: Deployment, tmp_path: Path
) -> None:
    page.click("a[href='#/bundles']")
    page.click("a[href^='#/start/bench-tick']")
    page.wait_for_selector("[data-pin='n'] textarea")
    page.fill("[data-pin='n'] textarea", "4")
    page.fill("[data-pin='delay'] textarea", "0.4")
    page.click("#start-submit")
    page.wait_for_url("**/console/#/runs/*")
    run_id = page.url.rsplit("/", 1)[-1]
    assert deployment.run(run_id)["workflow_id"].startswith("bench-tick@")
    # Live: the page shows steps while the run is still going (paced by its wait_until nodes)...
    page.wait_for_selector("#timeline li[data-cursor='2']")
    seen_while_running = len(timeline_cursors(page))
    assert deployment.run(run_id)["status"] != "completed" or seen_while_running >= 2
    page.wait_for_selector("#timeline[data-done='completed']")
    cursors = timeline_cursors(page)
    ledger = deployment.ledger(run_id)
    # ...and in the end exactly the ledger: every step once, in order.
    assert cursors == list(range(1, len(ledger) + 1))
    assert seen_while_running < len(ledger)
    nodes = page.eval_on_selector_all("#timeline li", "els => els.map(e => e.dataset.node)")
    assert nodes == [record["node_id"] for record in ledger]
    page.wait_for_selector("#run-header .badge[data-status='completed']")
    screenshot(page, tmp_path, "run-timeline")


def test_answer_an_ask_with_free_text(page: Any, deployment: Deployment, tmp_path: Path) -> None:
    run_id = deployment.start("bench-ask")
    deployment.wait_run(run_id, lambda v: v["status"] == "waiting")
    page.goto(f"{deployment.url}/console/#/runs/{run_id}")
    page.wait_for_selector("#ask-card")
    assert page.inner_text("#ask-prompt") == "continue?"
    screenshot(page, tmp_path, "run-ask")
    page.fill("#answer-text", "yes, go on")
    page.click("#answer-form button[type=submit]")
    page.wait_for_selector("#run-header .badge[data-status='completed']")
    view = deployment.run(run_id)
    assert view["status"] == "completed" and view["output"]["response"] == "yes, go on"
    page.wait_for_selector("#timeline[data-done='completed']")
    assert timeline_cursors(page) == list(range(1, len(deployment.ledger(run_id)) + 1))


def test_cancel_a_waiting_run(page: Any, deployment: Deployment) -> None:
    run_id = deployment.start("bench-ask")
    deployment.wait_run(run_id, lambda v: v["status"] == "waiting")
    page.goto(f"{deployment.url}/console/#/runs/{run_id}")
    page.wait_for_selector("#ask-card")
    page.click("#cancel")
    page.wait_for_selector("#run-header .badge[data-status='cancelled']")
    assert deployment.run(run_id)["status"] == "cancelled"
    assert page.is_disabled("#cancel")
    page.wait_for_selector("#timeline[data-done='cancelled']")


def test_page_survives_a_server_restart_mid_stream(page: Any, deployment: Deployment, tmp_path: Path) -> None:
    run_id = deployment.start("bench-tick", {"n": 6, "delay": 0.5})
    page.goto(f"{deployment.url}/console/#/runs/{run_id}")
    page.wait_for_selector("#timeline li[data-cursor='3']")
    assert deployment.run(run_id)["status"] != "completed"
    deployment.restart_api()  # SIGKILL: the stream drops without a goodbye; a new process comes up
    page.wait_for_selector("#timeline[data-done='completed']", timeout=120_000)
    ledger = deployment.ledger(run_id)
    assert timeline_cursors(page) == list(range(1, len(ledger) + 1))  # nothing lost, nothing twice
    log = page.evaluate("document.getElementById('stream-state').dataset.state")
    assert log == "finished"
    screenshot(page, tmp_path, "run-after-restart")


def test_bad_input_from_the_console_gets_the_same_4xx_as_any_client(
    page: Any, deployment: Deployment, tmp_path: Path
) -> None:
    with deployment.client() as client:
        schema = client.get("/api/gateway/bundles/no-such-bundle/flows/x/input_schema")
        upload = client.post(
            "/api/gateway/bundles/upload", files={"file": ("bad.flow", b"not a zip", "application/zip")}
        )
    assert schema.status_code == 404 and upload.status_code == 400
    page.goto(f"{deployment.url}/console/#/start/no-such-bundle/x")
    page.wait_for_selector("#start-problem .error")
    assert page.inner_text("#start-problem .error") == f"404: {schema.json()['detail']}"
    page.goto(f"{deployment.url}/console/#/bundles")
    bad = tmp_path / "bad.flow"
    bad.write_bytes(b"not a zip")
    page.set_input_files("#upload-form input[type=file]", str(bad))
    page.click("#upload-form button[type=submit]")
    page.wait_for_selector("#upload-state .error")
    assert page.inner_text("#upload-state .error") == f"400: {upload.json()['detail']}"


def test_the_token_stays_out_of_urls_and_logs(browser: Any, deployment: Deployment) -> None:
    context = browser.new_context()
    tab = context.new_page()
    seen: list[str] = []
    tab.on("request", lambda request: seen.append(request.url))
    try:
        tab.goto(f"{deployment.url}/console/")
        tab.fill("#token", "wrong-token")
        tab.click("#login button[type=submit]")
        tab.wait_for_selector("#login-error:not([hidden])")
        assert "401" in tab.inner_text("#login-error")
        login(tab, deployment.url)
        tab.click("a[href='#/deployment']")
        tab.wait_for_selector("#health-status")
        assert tab.evaluate("sessionStorage.length") == 1
        assert tab.evaluate("localStorage.length") == 0  # the tab only, not the browser profile
    finally:
        context.close()
    assert seen and not any(TOKEN in url or "wrong-token" in url for url in seen)
    time.sleep(0.2)
    assert TOKEN not in deployment.log.read_text()


def test_console_is_static_and_data_needs_the_token(deployment: Deployment) -> None:
    with httpx.Client(base_url=deployment.url, timeout=30) as anon:
        page = anon.get("/console/")
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        assert "default-src 'self'" in page.headers["content-security-policy"]
        assert (
            anon.get("/console/js/app.js")
            .headers["content-type"]
            .startswith(("text/javascript", "application/javascript"))
        )
        assert anon.get("/api/gateway/runs").status_code == 401
        assert anon.get("/console/js/nope.js").status_code == 404


def test_pause_and_resume_from_the_page(page: Any, deployment: Deployment) -> None:
    run_id = deployment.start("bench-tick", {"n": 100_000, "delay": 0.05})
    deployment.wait_run(run_id, lambda v: v["ledger_len"] > 2)
    page.goto(f"{deployment.url}/console/#/runs/{run_id}")
    page.wait_for_selector("#timeline li[data-cursor='2']")
    page.click("#pause")
    page.wait_for_function("() => document.getElementById('paused').textContent.startsWith('yes')")
    assert deployment.run(run_id)["paused"] is True
    page.click("#resume")
    page.wait_for_function("() => document.getElementById('paused').textContent === 'no'")
    paused_at = deployment.run(run_id)["ledger_len"]
    deployment.wait_run(run_id, lambda v: v["ledger_len"] > paused_at + 2)
    page.click("#cancel")
    page.wait_for_selector("#run-header .badge[data-status='cancelled']")


def test_schedule_from_the_form_shows_its_next_firing(page: Any, deployment: Deployment) -> None:
    page.goto(f"{deployment.url}/console/#/bundles")
    page.click("a[href^='#/start/bench-echo']")
    page.wait_for_selector("[data-pin='message']")
    page.fill("[data-pin='message'] textarea", '"hello"')
    page.check("#schedule-toggle")
    page.fill("input[name=interval]", "1h")
    page.click("#start-submit")
    page.wait_for_url("**/console/#/runs/*")
    parent = page.url.rsplit("/", 1)[-1]
    view = deployment.wait_run(parent, lambda v: v["is_scheduled"] and v["schedule"].get("next_fire_at"))
    assert view["schedule"].get("interval") == "1h" or view["schedule"].get("interval_s") == 3600
    page.click("a[href='#/schedules']")
    row = page.wait_for_selector(f"#schedules-table tr[data-run-id='{parent}']")
    page.wait_for_function(
        "id => { const c = document.querySelector(`tr[data-run-id='${id}'] .next-firing`);"
        " return c && c.textContent && c.textContent !== '—'; }",
        arg=parent,
    )
    assert row.query_selector(".every").inner_text() in ("1h", "3600s", "3600.0s")
    page.click("a[href='#/runs']")
    page.check("input[name=scheduled]")
    page.click("#run-filters button[type=submit]")
    page.wait_for_selector("#runs-table[data-loaded*='\"scheduled\":true']")
    page.wait_for_selector(f"#runs-table tr[data-run-id='{parent}']")
    rows = page.eval_on_selector_all(
        "#runs-table tbody tr[data-run-id]", "els => els.map(e => e.dataset.runId)"
    )
    assert parent in rows and all(deployment.run(r)["is_scheduled"] for r in rows)
    with deployment.client() as client:  # stop it: cancel the parent
        body = {"command_id": f"stop-{parent}", "run_id": parent, "type": "cancel", "payload": {}}
        assert client.post("/api/gateway/commands", json=body).status_code == 200
