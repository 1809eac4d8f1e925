"""Running the app under Hypercorn until asked to stop (the CLI and the tests share this)."""

from __future__ import annotations

import asyncio
import socket

from hypercorn.asyncio import serve
from hypercorn.config import Config
from starlette.applications import Starlette


def reuse_port_socket(host: str, port: int) -> socket.socket:
    """A listening socket with SO_REUSEPORT: a second API process can bind the same port, so a new
    version starts serving before the old one stops (rolling upgrade; the kernel spreads new
    connections over the live listeners)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    return sock


def hypercorn_config(
    host: str,
    port: int,
    *,
    graceful_timeout_s: float = 5.0,
    sock: socket.socket | None = None,
    header_timeout_s: float = 75.0,
) -> Config:
    config = Config()
    if sock is not None:
        config.bind = [f"fd://{sock.fileno()}"]
    else:
        config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    config.accesslog = None  # the audit log records writes; per-request logging costs throughput
    config.graceful_timeout = graceful_timeout_s
    config.backlog = 4096  # thousands of SSE clients may connect at once
    # Hypercorn's keep-alive timer runs from a connection's start (or its last response) until a
    # request's headers are complete, whatever trickles in meanwhile: it is the header deadline too
    # (a slow-headers client is disconnected when it fires). Body deadlines: middleware/body_limit.
    config.keep_alive_timeout = header_timeout_s
    config.keep_alive_max_requests = 100_000  # clients polling on one connection need not reconnect
    config.include_server_header = False
    return config


async def serve_until(app: Starlette, config: Config, stop: asyncio.Event) -> None:
    """Serve until `stop` is set; then end every SSE stream with a final comment and shut down."""
    hub = app.state.gateway.hub

    async def shutdown_trigger() -> None:
        await stop.wait()
        hub.close()  # open streams end now, so the graceful wait is short

    await serve(app, config, shutdown_trigger=shutdown_trigger)  # type: ignore[arg-type]
