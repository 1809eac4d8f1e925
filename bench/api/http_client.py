"""A small HTTP/1.1 client on asyncio streams: keep-alive connections, an SSE parser, a load driver."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

from bench.api import common
from bench.api.common import API, HOST, BenchFailure, percentile, report


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def run_async(coro: Awaitable[Any]) -> Any:
    loop = new_loop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()


class Conn:
    """One keep-alive HTTP/1.1 connection: request() -> (status, body)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, port: int) -> None:
        self.reader = reader
        self.writer = writer
        self.head = f"Host: {HOST}:{port}\r\nAuthorization: Bearer {common.TOKEN}\r\n".encode()

    @classmethod
    async def open(cls, port: int) -> Conn:
        reader, writer = await asyncio.open_connection(HOST, port, limit=1 << 22)
        return cls(reader, writer, port)

    def send(self, method: str, path: str, body: bytes | None = None, extra: bytes = b"") -> None:
        head = b"%s %s HTTP/1.1\r\n%s%s" % (method.encode(), path.encode(), self.head, extra)
        if body is not None:
            head += b"Content-Type: application/json\r\nContent-Length: %d\r\n" % len(body)
        self.writer.write(head + b"\r\n" + (body or b""))

    async def read_head(self) -> tuple[int, dict[bytes, bytes]]:
        raw = await self.reader.readuntil(b"\r\n\r\n")
        lines = raw.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            if line:
                key, _, value = line.partition(b":")
                headers[key.strip().lower()] = value.strip()
        return status, headers

    async def read_body(self, headers: dict[bytes, bytes]) -> bytes:
        if b"content-length" in headers:
            return await self.reader.readexactly(int(headers[b"content-length"]))
        if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
            parts = []
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                if size == 0:
                    await self.reader.readuntil(b"\r\n")
                    return b"".join(parts)
                parts.append(await self.reader.readexactly(size + 2))
                parts[-1] = parts[-1][:-2]
        return await self.reader.read()

    async def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        self.send(method, path, body)
        status, headers = await self.read_head()
        return status, await self.read_body(headers)

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()


async def one_request(port: int, method: str, path: str, body: Any = None) -> tuple[int, bytes]:
    conn = await Conn.open(port)
    try:
        return await conn.request(method, path, None if body is None else json.dumps(body).encode())
    finally:
        await conn.close()


def api_json(port: int, method: str, path: str, body: Any = None, expect: int = 200) -> Any:
    status, raw = run_async(one_request(port, method, path, body))
    if status != expect:
        raise BenchFailure(f"{method} {path} -> {status} (wanted {expect}): {raw[:500]!r}")
    return json.loads(raw)


class SseParser:
    """Incremental parser of a chunked text/event-stream body into (event, id, data) tuples."""

    def __init__(self) -> None:
        self.raw = b""  # transfer-encoded bytes not yet de-chunked
        self.text = b""  # de-chunked bytes not yet split into events
        self.ended = False  # the zero-size last chunk arrived

    def feed(self, data: bytes) -> list[tuple[bytes, bytes, bytes]]:
        self.raw += data
        while not self.ended:
            nl = self.raw.find(b"\r\n")
            if nl < 0:
                break
            size = int(self.raw[:nl].split(b";")[0], 16)
            if size == 0:
                self.ended = True
                break
            end = nl + 2 + size + 2
            if len(self.raw) < end:
                break
            self.text += self.raw[nl + 2 : end - 2]
            self.raw = self.raw[end:]
        events = []
        while True:
            cut = self.text.find(b"\n\n")
            if cut < 0:
                break
            block, self.text = self.text[:cut], self.text[cut + 2 :]
            event = ident = data = b""
            for line in block.split(b"\n"):
                if line.startswith(b"event: "):
                    event = line[7:]
                elif line.startswith(b"id: "):
                    ident = line[4:]
                elif line.startswith(b"data: "):
                    data = line[6:]
            if event:
                events.append((event, ident, data))
        return events


async def open_stream(port: int, run_id: str, after: int = 0) -> tuple[Conn, SseParser]:
    conn = await Conn.open(port)
    conn.send("GET", f"{API}/runs/{run_id}/ledger/stream?after={after}")
    status, headers = await conn.read_head()
    if status != 200:
        body = await conn.read_body(headers)
        await conn.close()
        raise BenchFailure(f"stream of {run_id} -> {status}: {body[:300]!r}")
    return conn, SseParser()


async def load(
    port: int, count: int, concurrency: int, cap_s: float, make: Callable[[int], tuple[str, str, bytes]]
) -> dict[str, Any]:
    """`count` requests (make(i) -> method, path, body) from `concurrency` keep-alive connections."""
    conns = [await Conn.open(port) for _ in range(concurrency)]
    for k, conn in enumerate(conns):  # warm-up (not timed): one request per connection
        await conn.request(*make(-1 - k))
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    bodies: list[bytes] = []
    next_i = 0
    started = time.perf_counter()
    deadline = started + cap_s

    async def worker(conn: Conn) -> None:
        nonlocal next_i
        while next_i < count and time.perf_counter() < deadline:
            i = next_i
            next_i += 1
            t = time.perf_counter()
            status, body = await conn.request(*make(i))
            latencies.append(time.perf_counter() - t)
            statuses[status] = statuses.get(status, 0) + 1
            if 200 <= status < 300:
                bodies.append(body)
            elif len(bodies) < 5:
                report(f"  non-2xx {status}: {body[:200]!r}")

    await asyncio.gather(*(worker(c) for c in conns))
    seconds = time.perf_counter() - started
    for conn in conns:
        await conn.close()
    ok = sum(n for s, n in statuses.items() if 200 <= s < 300)
    return {
        "concurrency": concurrency,
        "requests": sum(statuses.values()),
        "ok": ok,
        "seconds": seconds,
        "req_per_s": ok / seconds,
        "p50_ms": percentile(latencies, 50) * 1e3,
        "p99_ms": percentile(latencies, 99) * 1e3,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "capped": sum(statuses.values()) < count,
        "_bodies": bodies,
    }
