"""Webhooks over a real Hypercorn and runner process, delivered to loopback receivers: Standard Webhooks
signatures (verified here independently of the gateway's code), retries after 500s, rotation,
redelivery, the delivery log, and nothing sent to an address the operator did not allow."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.backends import store_args

from .conftest import TERMINAL, Gateway, make_gateway, stop_process


@dataclass
class Receiver:
    """A loopback HTTP server recording every request; `fail[path]` answers 500 that many times."""

    host: str
    fail: dict[str, int] = field(default_factory=dict)
    got: list[dict] = field(default_factory=list)

    def __post_init__(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                receiver.got.append({"path": self.path, "headers": dict(self.headers.items()), "body": body})
                failing = receiver.fail.get(self.path, 0)
                receiver.fail[self.path] = max(0, failing - 1)
                self.send_response(500 if failing else 200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer((self.host, 0), Handler)
        self.url = f"http://{self.host}:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def at(self, path: str) -> list[dict]:
        return [r for r in self.got if r["path"] == path]


def verify(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """Standard Webhooks verification, written from the specification: HMAC-SHA256 with the key that
    follows `whsec_` (base64), over `{webhook-id}.{webhook-timestamp}.{body}`, base64, any of the
    space-separated `v1,` signatures; the timestamp within 5 minutes."""
    lower = {k.lower(): v for k, v in headers.items()}
    msg_id, stamp = lower["webhook-id"], lower["webhook-timestamp"]
    if abs(time.time() - int(stamp)) > 300:
        return False
    key = base64.b64decode(secret.split("_", 1)[1])
    expected = base64.b64encode(hmac.new(key, f"{msg_id}.{stamp}.".encode() + body, hashlib.sha256).digest())
    return any(
        version == "v1" and hmac.compare_digest(expected, sig.encode())
        for version, _, sig in (part.partition(",") for part in lower["webhook-signature"].split())
    )


def _eventually(predicate, what: str, tries: int = 1_500) -> None:  # type: ignore[no-untyped-def]
    for _ in range(tries):
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"never happened: {what}")


@pytest.fixture(scope="module")
def hooked(tmp_path_factory: pytest.TempPathFactory, flows: Path) -> Iterator[Gateway]:
    """A gateway whose runner may call 127.0.0.1 only (127.0.0.2 stays refused), retrying fast."""
    tmp = tmp_path_factory.mktemp("webhooks")
    with make_gateway(tmp, flows) as gw:
        env = {
            **os.environ,
            "ABSTRACTGATEWAY_WEBHOOK_ALLOW_NETWORKS": "127.0.0.1/32",
            "ABSTRACTGATEWAY_WEBHOOK_RETRY_BASE_S": "0.2",
            "ABSTRACTGATEWAY_WEBHOOK_TIMEOUT_S": "2",
        }
        args = [
            sys.executable,
            "-m",
            "abstractgateway",
            "runner",
            *store_args(gw.db_path),
            "--flows-dir",
            str(flows),
        ]
        with (tmp / "runner.log").open("ab") as log:
            runner = subprocess.Popen(
                [*args, "--poll-s", "0.02"], env=env, stdout=subprocess.DEVNULL, stderr=log
            )
        try:
            yield gw
        finally:
            stop_process(runner)


def _subscribe(gw: Gateway, **body: object) -> dict:
    response = gw.client.post("/api/gateway/webhooks", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def test_signed_deliveries_retries_and_refused_targets(hooked: Gateway) -> None:
    gw = hooked
    allowed, refused = Receiver("127.0.0.1", fail={"/flaky": 2}), Receiver("127.0.0.2")
    tag = f"hooked-{uuid.uuid4().hex[:6]}"
    events = ["run.completed", "run.failed", "run.cancelled", "run.waiting"]
    main = _subscribe(gw, url=f"{allowed.url}/main", events=events, tag=tag)
    flaky = _subscribe(gw, url=f"{allowed.url}/flaky", events=["run.completed"], workflow_id="bench-echo@")
    blocked = _subscribe(gw, url=f"{refused.url}/blocked", events=["run.completed"], tag=tag)
    assert main["secret"].startswith("whsec_") and main["secrets_active"] == 1

    echo = gw.start("bench-echo", {"message": "hi"}, tags=[tag])
    gw.wait_for(echo, lambda v: v["status"] in TERMINAL)
    _eventually(lambda: allowed.at("/main"), "the completed event reaches the subscriber")
    delivery = allowed.at("/main")[0]
    assert verify(main["secret"], delivery["headers"], delivery["body"])
    assert not verify(flaky["secret"], delivery["headers"], delivery["body"]), "each subscription its own key"
    sent = json.loads(delivery["body"])
    assert sent["type"] == "run.completed" and sent["data"]["run_id"] == echo
    assert sent["data"]["output"]["result"] == "hi" and sent["data"]["tags"] == [tag]
    assert delivery["headers"]["webhook-id"].startswith("msg_")

    # The flaky receiver answered 500 twice: the third attempt lands, with the same id and body.
    _eventually(lambda: len(allowed.at("/flaky")) == 3, "two retries after 500s")
    ids = {r["headers"]["webhook-id"] for r in allowed.at("/flaky")}
    assert len(ids) == 1 and len({r["body"] for r in allowed.at("/flaky")}) == 1
    assert all(verify(flaky["secret"], r["headers"], r["body"]) for r in allowed.at("/flaky"))
    _eventually(
        lambda: (
            gw.client.get(f"/api/gateway/webhooks/{flaky['webhook_id']}/deliveries").json()["items"][0][
                "status"
            ]
            == "delivered"
        ),
        "the log shows the delivery",
    )
    log = gw.client.get(f"/api/gateway/webhooks/{flaky['webhook_id']}/deliveries").json()["items"]
    mine = [d for d in log if d["run_id"] == echo]
    assert mine[0]["attempts"] == 3 and mine[0]["last_status_code"] == 200

    # The refused address: the attempt is logged as refused and nothing ever reached it.
    _eventually(
        lambda: any(
            d["status"] == "refused"
            for d in gw.client.get(f"/api/gateway/webhooks/{blocked['webhook_id']}/deliveries").json()[
                "items"
            ]
        ),
        "the refused delivery is logged",
    )
    refusal = gw.client.get(f"/api/gateway/webhooks/{blocked['webhook_id']}/deliveries").json()["items"][0]
    assert "non-public" in refusal["last_error"] and refusal["attempts"] == 1
    assert refused.got == []

    # A run waiting for its user, with its own webhook_url; then cancelled.
    ask = gw.start("bench-ask", tags=[tag], webhook_url=f"{allowed.url}/start")
    gw.wait_for(ask, lambda v: v["status"] == "waiting")
    start_secret = gw.client.get("/api/gateway/webhooks").json()["start_secret"]
    _eventually(lambda: allowed.at("/start"), "the per-start webhook")
    waiting = allowed.at("/start")[0]
    assert verify(start_secret, waiting["headers"], waiting["body"])
    assert json.loads(waiting["body"])["type"] == "run.waiting"
    assert json.loads(waiting["body"])["data"]["waiting"]["prompt"] == "continue?"
    gw.command(ask, "cancel")
    _eventually(lambda: len(allowed.at("/start")) == 2, "the cancelled event")
    assert json.loads(allowed.at("/start")[1]["body"])["type"] == "run.cancelled"
    _eventually(
        lambda: (
            [json.loads(r["body"])["type"] for r in allowed.at("/main")]
            == ["run.completed", "run.waiting", "run.cancelled"]
        ),
        "the subscription got completed, waiting, cancelled in order",
    )
    assert refused.got == []


def test_rotation_redelivery_and_deletion(hooked: Gateway) -> None:
    gw = hooked
    receiver = Receiver("127.0.0.1")
    hook = _subscribe(
        gw, url=f"{receiver.url}/r", events=["run.completed"], workflow_id="bench-echo@1.0.0:echo"
    )
    run_id = gw.start("bench-echo", {"message": "r"})
    _eventually(lambda: receiver.at("/r"), "the first delivery")
    first = receiver.at("/r")[0]

    rotated = gw.client.post(f"/api/gateway/webhooks/{hook['webhook_id']}/rotate").json()["secret"]
    assert rotated != hook["secret"]

    def logged() -> dict:
        log = gw.client.get(f"/api/gateway/webhooks/{hook['webhook_id']}/deliveries").json()["items"]
        return next(d for d in log if d["run_id"] == run_id)

    # The receiver may hold the request before the runner has recorded the answer: until then the
    # delivery is still pending, and redelivering it is refused.
    _eventually(lambda: logged()["status"] == "delivered", "the delivery is recorded")
    delivery_id = logged()["delivery_id"]
    again = gw.client.post(f"/api/gateway/webhooks/{hook['webhook_id']}/deliveries/{delivery_id}/redeliver")
    assert again.status_code == 200 and again.json()["status"] == "pending"
    _eventually(lambda: len(receiver.at("/r")) == 2, "the redelivery")
    second = receiver.at("/r")[1]
    assert second["headers"]["webhook-id"] == first["headers"]["webhook-id"] == delivery_id
    assert second["body"] == first["body"]
    # During the overlap both secrets sign: receivers on either verify.
    assert verify(rotated, second["headers"], second["body"]) and verify(
        hook["secret"], second["headers"], second["body"]
    )
    assert len(second["headers"]["webhook-signature"].split()) == 2

    assert gw.client.delete(f"/api/gateway/webhooks/{hook['webhook_id']}").json() == {"deleted": True}
    listed = gw.client.get("/api/gateway/webhooks").json()["items"]
    assert hook["webhook_id"] not in {h["webhook_id"] for h in listed}
    assert all("secret" not in h for h in listed)
    gw.start("bench-echo", {"message": "after"})
    time.sleep(1.0)  # room for a (wrong) delivery to a deleted subscription
    assert len(receiver.at("/r")) == 2


def test_bad_webhook_requests_write_nothing(hooked: Gateway) -> None:
    gw = hooked
    before = int(gw.db.query_one("SELECT count(*) FROM webhooks")[0])  # type: ignore[index]
    for body in [
        {"url": "ftp://example.com/x", "events": ["run.completed"]},
        {"url": "http://user:pw@example.com/x", "events": ["run.completed"]},
        {"url": "https://example.com/x", "events": ["run.exploded"]},
        {"url": "https://example.com/x", "events": []},
        {"url": "https://example.com/x", "events": ["run.completed"], "colour": "red"},
    ]:
        response = gw.client.post("/api/gateway/webhooks", json=body)
        assert response.status_code == 422, (body, response.text)
    response = gw.client.post(
        "/api/gateway/runs/start", json={"bundle_id": "bench-echo", "webhook_url": "file:///etc"}
    )
    assert response.status_code == 422
    assert int(gw.db.query_one("SELECT count(*) FROM webhooks")[0]) == before  # type: ignore[index]
    assert gw.client.delete("/api/gateway/webhooks/wh_nope").status_code == 404
    assert gw.client.post("/api/gateway/webhooks/wh_nope/rotate").status_code == 404
    assert gw.client.get("/api/gateway/webhooks/wh_nope/deliveries").status_code == 404
