"""Code nodes and flow functions run out of the runner's process, in a fork server with no network,
no privileges, an empty environment and per-execution limits (see zygote.py, client.py, handlers.py)."""

from .client import SandboxCancelled, SandboxLimit, SandboxSettings, SandboxStop, close_thread_client
from .handlers import install, run_context

__all__ = [
    "SandboxCancelled",
    "SandboxLimit",
    "SandboxSettings",
    "SandboxStop",
    "close_thread_client",
    "install",
    "run_context",
]
