"""Per-key counters of held resources (SSE streams per client and per token, in-flight requests per
client): one client cannot take every slot, so others are still served while it is cut off."""

from __future__ import annotations


class Quota:
    """How many of a resource each key holds, against one cap per key (single event loop: no lock)."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.held: dict[str, int] = {}

    def try_acquire(self, key: str) -> bool:
        count = self.held.get(key, 0)
        if count >= self.cap:
            return False
        self.held[key] = count + 1
        return True

    def release(self, key: str) -> None:
        count = self.held.get(key, 0) - 1
        if count > 0:
            self.held[key] = count
        else:
            self.held.pop(key, None)


class StreamQuotas:
    """SSE streams held per client address and per token fingerprint."""

    def __init__(self, per_client: int, per_token: int) -> None:
        self.clients = Quota(per_client)
        self.tokens = Quota(per_token)

    def acquire(self, client: str, token: str) -> str | None:
        """None when granted (release it later), else why not."""
        if not self.clients.try_acquire(client):
            return f"too many open streams from this client (max {self.clients.cap})"
        if not self.tokens.try_acquire(token):
            self.clients.release(client)
            return f"too many open streams with this token (max {self.tokens.cap})"
        return None

    def release(self, client: str, token: str) -> None:
        self.clients.release(client)
        self.tokens.release(token)
