"""Errors the store raises, each carrying a reason a user or operator can act on."""

from __future__ import annotations


class StoreError(Exception):
    """Base class of everything the store raises on purpose."""


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

    def __init__(self, run_id: str, owner: str | None, epoch: int | None) -> None:
        self.run_id = run_id
        self.owner = owner
        self.epoch = epoch
        holder = f"runner {owner!r} at epoch {epoch}" if owner else "an unleased writer"
        super().__init__(
            f"lease lost on run {run_id!r}: {holder} does not hold its lease "
            "(it expired and was reclaimed, or another runner took it over); the write was rejected"
        )


class UnknownRun(StoreError):
    """A write named a run that does not exist."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        super().__init__(f"run {run_id!r} not found")
