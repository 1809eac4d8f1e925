"""Errors the store raises, each carrying a reason a user or operator can act on, and its kind.

Every error the store raises on purpose is a `StoreError` and says what kind of failure it is:

- `not_found`: a run, bundle, flow, artifact... that does not exist (the caller named it);
- `conflict`: the request clashes with what is stored (a reused idempotency key, a bundle version that
  exists, a delivery still pending, a concurrency key full);
- `invalid`: a value a request rule refuses, naming the field (the API's 422);
- `bad_value`: a value that cannot be used at all (a damaged zip, a filter that does not parse: 400);
- `unavailable`: the store cannot serve now (busy, disk full, damaged, wrong schema): the caller may
  retry, it is never the client's fault;
- `lease_lost`: a runner wrote a run whose lease it no longer holds (fencing).

The HTTP status of each kind is decided in one place, api_service/errors.py. The classes of kinds that
a client causes also derive from the builtin an older caller catches (ValueError, LookupError).
"""

from __future__ import annotations

from typing import ClassVar, Literal, get_args

ErrorKind = Literal["not_found", "conflict", "invalid", "bad_value", "unavailable", "lease_lost"]
KINDS: tuple[ErrorKind, ...] = get_args(ErrorKind)


class StoreError(Exception):
    """Base class of everything the store raises on purpose; `kind` says which kind of failure."""

    kind: ClassVar[ErrorKind] = "unavailable"


# --- the kinds a client causes (the store is fine; the request is not) ---------------------------------
class NotFound(StoreError, LookupError):
    """The thing the caller named does not exist."""

    kind: ClassVar[ErrorKind] = "not_found"


class Conflict(StoreError, ValueError):
    """The request clashes with what is stored; nothing was written."""

    kind: ClassVar[ErrorKind] = "conflict"


class Invalid(StoreError, ValueError):
    """A value a request rule refuses; the message names the field and the rule."""

    kind: ClassVar[ErrorKind] = "invalid"


class BadValue(StoreError, ValueError):
    """A value that cannot be used at all (not parseable, damaged)."""

    kind: ClassVar[ErrorKind] = "bad_value"


class RequestInvalid(Invalid):
    """A media job request or command payload that the shared request rules (shared_store.contracts)
    refuse. The API refuses it with 422 before anything is stored; a runner refuses a stored one (a
    capability default's options, a payload written by an older API) before doing any work."""


# --- the store cannot serve ----------------------------------------------------------------------------
class NotADatabase(StoreError):
    """The file at the db path exists but is not an SQLite database (it was left untouched)."""


class StoreCorrupt(StoreError):
    """The SQLite file is damaged (it was left untouched)."""


class StoreUnavailable(StoreError):
    """The database cannot be used right now: disk full, read-only, I/O error, locked for too long."""


class StoreBusy(StoreUnavailable):
    """Another process held the write lock for longer than the busy deadline."""


class SchemaTooNew(StoreError):
    """The db was migrated by a newer abstractgateway than this one."""


class SchemaTooOld(StoreError):
    """The db has migrations this abstractgateway knows but has not applied."""


class MigrationError(StoreError):
    """A migration file is malformed or failed to apply (nothing of it was kept)."""


class LeaseLost(StoreError):
    """A runner tried to write a run whose lease it no longer holds (fencing).

    Raised inside the write transaction, which is rolled back: nothing the writer tried is visible.
    """

    kind: ClassVar[ErrorKind] = "lease_lost"

    def __init__(self, run_id: str, owner: str | None, epoch: int | None) -> None:
        self.run_id = run_id
        self.owner = owner
        self.epoch = epoch
        holder = f"runner {owner!r} at epoch {epoch}" if owner else "an unleased writer"
        super().__init__(
            f"lease lost on run {run_id!r}: {holder} does not hold its lease "
            "(it expired and was reclaimed, or another runner took it over); the write was rejected"
        )


class UnknownRun(NotFound):
    """A request or a write named a run that does not exist."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        super().__init__(f"Run '{run_id}' not found")  # the API's wording for an unknown run
