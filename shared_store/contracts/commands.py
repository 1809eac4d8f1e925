"""Command payloads (POST /commands, bulk commands): one declaration for the API and the runners.

The API refuses a payload these Structs refuse (422, before the command is stored); a runner converts
the stored payload with the same Struct before applying the command, so a payload the API accepted is
one the runner accepts, and one written by another version is refused with the same reason.
Unknown keys are kept (a runner may understand more than this API version), except for
update_schedule, whose runner refuses any key it cannot update: the API now refuses them too.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from msgspec import Meta, Struct

SQLITE_MAX_INT = 2**63 - 1  # a larger int cannot be bound to a query


class PausePayload(Struct):
    reason: str | None = None
    cascade: bool | None = None  # a schedule's children are paused too only when asked


class ResumePayload(Struct):
    wait_key: str | None = None
    # Not null: the runner refuses anything but an object ("resume payload.payload must be an object").
    payload: dict[str, Any] = {}
    cascade: bool | None = None


class CancelPayload(Struct):
    reason: str | None = None
    cascade: bool | None = None


class EmitEventPayload(Struct):
    name: Annotated[str, Meta(min_length=1, pattern=r"\S")]  # the runner refuses a blank name
    payload: Any = None
    scope: Literal["session", "run", "workflow", "global"] | None = None
    session_id: str | None = None
    workflow_id: str | None = None  # for scope=workflow (the run's own workflow otherwise)
    event_id: str | None = None  # the command_id otherwise


class UpdateSchedulePayload(Struct, forbid_unknown_fields=True):
    interval: str | None = None
    cron: str | None = None
    timezone: str | None = None
    repeat_count: Annotated[int, Meta(ge=1, le=SQLITE_MAX_INT)] | None = None
    repeat_until: str | None = None
    catch_up: Literal["skip", "one", "all"] | None = None
    overlap: Literal["skip", "allow"] | None = None
    cascaded_from: str | None = None  # set by a runner on a command it cascades, never by a client


class CompactMemoryPayload(Struct):
    """compact_memory's options go to abstractruntime's memory-compaction handler as they are."""


COMMAND_PAYLOADS: dict[str, type[Struct]] = {
    "pause": PausePayload,
    "resume": ResumePayload,
    "cancel": CancelPayload,
    "emit_event": EmitEventPayload,
    "update_schedule": UpdateSchedulePayload,
    "compact_memory": CompactMemoryPayload,
}
