"""The client host of the multi-host test (`python -m tests.netns.sse_client CONFIG.json`): starts runs
on the first API host, follows each run's ledger over SSE there, and when a stream breaks (its API
host is gone) resumes on the next host with `Last-Event-ID` — as a client behind a load balancer
does. At the end it reads each run's whole ledger (`GET .../ledger`, from the last host that
answers) and writes what it received beside it, so the test can say: nothing missed, nothing twice.

One JSON line per event on stdout (`healthy`, `started`, `streaming`, `finished`); the results go to
the config's `out` file (the namespaces share the file system). Bounded by the config's `deadline_s`."""

from __future__ import annotations

import json
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

RECONNECT_PAUSE_S = 0.2


def say(**event: object) -> None:
    print(json.dumps(event), flush=True)


@dataclass
class Stream:
    """What one run's subscriber saw: every step event's cursor and record in arrival order, the
    hosts it read from (with the cursor it resumed after there), and how it ended."""

    run_id: str
    cursors: list[int] = field(default_factory=list)
    records: list[Any] = field(default_factory=list)
    resumes: list[tuple[str, int | None]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    done: dict[str, Any] | None = None

    @property
    def last_id(self) -> int | None:
        return self.cursors[-1] if self.cursors else None


class Client:
    def __init__(self, config: dict[str, Any]) -> None:
        self.apis: list[str] = config["apis"]
        self.headers = {"Authorization": f"Bearer {config['token']}"}
        self.config = config
        self.deadline = time.monotonic() + float(config["deadline_s"])
        self.streaming = threading.Event()
        self._lock = threading.Lock()

    def remaining(self) -> float:
        return max(0.0, self.deadline - time.monotonic())

    def wait_healthy(self) -> None:
        """Every API host answers health, and it lists the expected number of live runners."""
        want = int(self.config["runners"])
        until = time.monotonic() + min(self.remaining(), float(self.config.get("startup_s", 120)))
        for api in self.apis:
            last: object = None
            with httpx.Client(base_url=api, headers=self.headers, timeout=10) as http:
                while time.monotonic() < until:
                    try:
                        response = http.get("/api/health")
                        last = (response.status_code, response.text[:500])
                        if response.status_code == 200 and len(response.json().get("runners") or []) >= want:
                            break
                    except httpx.HTTPError as exc:
                        last = repr(exc)
                    time.sleep(0.3)
                else:
                    raise SystemExit(f"{api} never became healthy with {want} runners: {last}")
        say(event="healthy")

    def start_runs(self) -> list[str]:
        body = {"bundle_id": self.config["bundle_id"], "input_data": self.config["input_data"]}
        with httpx.Client(base_url=self.apis[0], headers=self.headers, timeout=30) as http:
            run_ids = []
            for _ in range(int(self.config["runs"])):
                response = http.post("/api/gateway/runs/start", json=body)
                response.raise_for_status()
                run_ids.append(response.json()["run_id"])
        say(event="started", run_ids=run_ids)
        return run_ids

    def follow(self, stream: Stream, streams: list[Stream]) -> None:
        """Read the run's SSE until `done`; a broken stream resumes on the next host."""
        host = 0
        while stream.done is None and self.remaining() > 0:
            api = self.apis[host]
            stream.resumes.append((api, stream.last_id))
            headers = dict(self.headers)
            if stream.last_id is not None:
                headers["Last-Event-ID"] = str(stream.last_id)
            try:
                timeout = httpx.Timeout(10.0, read=60.0)
                with (
                    httpx.Client(base_url=api, timeout=timeout) as http,
                    http.stream(
                        "GET", f"/api/gateway/runs/{stream.run_id}/ledger/stream", headers=headers
                    ) as response,
                ):
                    if response.status_code != 200:
                        raise RuntimeError(f"HTTP {response.status_code}: {response.read()[:300]!r}")
                    self._read(response, stream, streams)
                if stream.done is None:
                    stream.errors.append(f"{api}: the stream ended without done")
            except (httpx.HTTPError, RuntimeError) as exc:
                stream.errors.append(f"{api}: {type(exc).__name__}: {exc}")
            if stream.done is None:
                host = (host + 1) % len(self.apis)  # the load balancer's next host
                time.sleep(RECONNECT_PAUSE_S)

    def _read(self, response: httpx.Response, stream: Stream, streams: list[Stream]) -> None:
        event: dict[str, str] = {}
        for line in response.iter_lines():
            if line == "":
                if event.get("event") == "step":
                    data = json.loads(event["data"])
                    stream.cursors.append(int(data["cursor"]))
                    stream.records.append(data["record"])
                    if int(event["id"]) != int(data["cursor"]):
                        stream.errors.append(f"id {event['id']} != cursor {data['cursor']}")
                    self._check_streaming(streams)
                elif event.get("event") == "done":
                    stream.done = json.loads(event["data"])
                    return
                event = {}
            elif not line.startswith(":"):
                name, _, value = line.partition(":")
                event[name] = value[1:] if value.startswith(" ") else value

    def _check_streaming(self, streams: list[Stream]) -> None:
        if not self.streaming.is_set():
            with self._lock:
                if not self.streaming.is_set() and all(s.cursors for s in streams):
                    self.streaming.set()
                    say(event="streaming")

    def ledger(self, api: str, run_id: str) -> list[Any]:
        """The run's whole ledger as the API serves it (pages of up to 10,000 records)."""
        records: list[Any] = []
        with httpx.Client(base_url=api, headers=self.headers, timeout=60) as http:
            while True:
                page = http.get(
                    f"/api/gateway/runs/{run_id}/ledger", params={"after": len(records), "limit": 10_000}
                ).json()
                records.extend(page["items"])
                if not page["items"]:
                    return records


def main(config_path: str) -> None:
    config = json.loads(Path(config_path).read_text())
    client = Client(config)
    client.wait_healthy()
    run_ids = client.start_runs()
    streams = [Stream(run_id) for run_id in run_ids]
    threads = [
        threading.Thread(target=client.follow, args=(stream, streams), daemon=True) for stream in streams
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(client.remaining())
    results = {}
    for stream in streams:
        expected: list[Any] | str = "no API host answered"
        for api in reversed(client.apis):  # the host a stream ended on answers; a dead one refuses
            try:
                expected = client.ledger(api, stream.run_id)
                break
            except httpx.HTTPError as exc:
                expected = f"ledger read failed: {exc!r}"
        results[stream.run_id] = {
            "cursors": stream.cursors,
            "matches_ledger": stream.records == expected,
            "expected": len(expected) if isinstance(expected, list) else expected,
            "resumes": stream.resumes,
            "errors": stream.errors,
            "done": stream.done,
        }
    Path(config["out"]).write_text(json.dumps(results))
    say(event="finished", timed_out=client.remaining() <= 0)


if __name__ == "__main__":
    main(sys.argv[1])
