"""Which runs a list page or a bulk operation is about: validated filters and their SQL.

One `RunFilter` serves the runs list (query string), bulk commands (JSON body, stored with the
operation) and reruns' tags. Every filter is an index range or an index probe (migration
`operations`): a tag or metadata filter drives the page from its own table, already in page order
(newest first, ties by run_id); otherwise the runs indexes on (created_at DESC, run_id) and
(status, created_at DESC, run_id) give the order, so a page reads about `limit` index entries.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import msgspec

from .codec import decode, encode
from .errors import BadValue

MAX_TAGS = 32
MAX_TAG_LEN = 64
MAX_METADATA_BYTES = 4_096
MAX_METADATA_KEYS = 32
MAX_KEY_LEN = 64

# Client statuses over stored ones (a queued run reads "running"; COMPLETED with a failed output reads
# "failed"): each an index-friendly condition on r.status.
STATUS_SQL = {
    "running": "r.status IN ('running', 'queued')",
    "queued": "r.status = 'queued'",
    "waiting": "r.status = 'waiting'",
    "completed": "(r.status = 'completed' AND r.output_failed = 0)",
    "failed": "(r.status = 'failed' OR (r.status = 'completed' AND r.output_failed = 1))",
    "cancelled": "r.status = 'cancelled'",
}
STATUSES = tuple(STATUS_SQL)
TERMINAL_SQL = "r.status IN ('completed', 'failed', 'cancelled')"


class FilterInvalid(BadValue):
    """A filter value that cannot be used; the message names it (a 400 for the client)."""


def check_tags(tags: Any, where: str = "tags") -> tuple[str, ...]:
    if not isinstance(tags, list | tuple) or not all(isinstance(t, str) for t in tags):
        raise FilterInvalid(f"{where} must be a list of strings")
    if len(tags) > MAX_TAGS:
        raise FilterInvalid(f"{where}: at most {MAX_TAGS} tags")
    for tag in tags:
        if not 0 < len(tag) <= MAX_TAG_LEN:
            raise FilterInvalid(f"{where}: each tag is 1 to {MAX_TAG_LEN} characters")
    return tuple(dict.fromkeys(tags))


def check_metadata(metadata: Any, where: str = "metadata") -> dict[str, Any]:
    """A small JSON object: at most MAX_METADATA_KEYS keys and MAX_METADATA_BYTES encoded."""
    if not isinstance(metadata, dict):
        raise FilterInvalid(f"{where} must be a JSON object")
    if len(metadata) > MAX_METADATA_KEYS:
        raise FilterInvalid(f"{where}: at most {MAX_METADATA_KEYS} keys")
    if any(not 0 < len(key) <= MAX_KEY_LEN for key in metadata):
        raise FilterInvalid(f"{where}: keys are 1 to {MAX_KEY_LEN} characters")
    if len(encode(metadata)) > MAX_METADATA_BYTES:
        raise FilterInvalid(f"{where}: at most {MAX_METADATA_BYTES} bytes as JSON")
    return metadata


def metadata_text(value: Any) -> str | None:
    """How a metadata value is indexed and matched: strings as they are, other scalars as JSON;
    objects and lists are kept in the run's metadata but not filterable (None)."""
    if isinstance(value, str):
        return value
    if value is None or isinstance(value, bool | int | float):
        return encode(value).decode()
    return None


def normalize_time(value: str, where: str) -> str:
    """ISO 8601 (a naive time is UTC) → the stored form (datetime.isoformat in UTC), so that text
    comparison on created_at / updated_at is time order."""
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except (TypeError, ValueError):
        raise FilterInvalid(f"{where}: {value!r} is not an ISO 8601 time") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC).isoformat()
    except OverflowError:
        raise FilterInvalid(f"{where}: {value!r} is out of range") from None


@dataclass(frozen=True)
class RunFilter:
    statuses: tuple[str, ...] = ()
    workflow_id: str | None = None
    session_id: str | None = None
    parent_run_id: str | None = None
    tags: tuple[str, ...] = ()  # every tag must be on the run
    metadata: tuple[tuple[str, str], ...] = ()  # every key must have that value
    created_after: str | None = None
    created_before: str | None = None
    ended_after: str | None = None
    ended_before: str | None = None
    q: str | None = None  # a workflow_id or run_id prefix

    @classmethod
    def parse(cls, data: dict[str, Any]) -> RunFilter:
        """From a JSON object (a bulk filter) or the list's query: names as in the runs list
        (`status` and `tag` one value or a list; `metadata` an object, or `metadata.<key>` entries)."""
        known = {
            "status", "tag", "tags", "metadata", "workflow_id", "session_id", "parent_run_id",
            "created_after", "created_before", "ended_after", "ended_before", "q",
        }  # fmt: skip
        unknown = sorted(k for k in data if k not in known and not k.startswith("metadata."))
        if unknown:
            raise FilterInvalid(
                f"unknown filter(s): {', '.join(unknown)} (known: {', '.join(sorted(known))})"
            )
        statuses = _listed(data.get("status"), "status")
        bad = [s for s in statuses if s not in STATUS_SQL]
        if bad:
            raise FilterInvalid(f"unknown status {bad[0]!r}; one of: {', '.join(STATUSES)}")
        tags = check_tags([*_listed(data.get("tag"), "tag"), *_listed(data.get("tags"), "tags")], "tag")
        wanted: dict[str, Any] = {}
        if data.get("metadata") is not None:
            wanted.update(check_metadata(data["metadata"]))
        for key, value in data.items():
            if key.startswith("metadata."):
                wanted[key.removeprefix("metadata.")] = value
        check_metadata(wanted, "metadata filter")
        pairs = []
        for key, value in wanted.items():
            text = metadata_text(value)
            if text is None:
                raise FilterInvalid(f"metadata.{key}: only a string, number, boolean or null can be matched")
            pairs.append((key, text))
        times = {}
        for name in ("created_after", "created_before", "ended_after", "ended_before"):
            value = data.get(name)
            if value is not None:
                if not isinstance(value, str):
                    raise FilterInvalid(f"{name} must be an ISO 8601 time")
                times[name] = normalize_time(value, name)
        texts = {}
        for name in ("workflow_id", "session_id", "parent_run_id", "q"):
            value = data.get(name)
            if value is not None and (not isinstance(value, str) or not 0 < len(value) <= 256):
                raise FilterInvalid(f"{name} must be a string of 1 to 256 characters")
            texts[name] = value
        return cls(
            statuses=tuple(dict.fromkeys(statuses)), tags=tags, metadata=tuple(pairs), **times, **texts
        )

    def to_json(self) -> bytes:
        return encode(asdict(self))

    @classmethod
    def from_json(cls, raw: bytes) -> RunFilter:
        data = decode(raw)
        data["statuses"] = tuple(data["statuses"])
        data["tags"] = tuple(data["tags"])
        data["metadata"] = tuple(tuple(pair) for pair in data["metadata"])
        return cls(**data)

    def is_empty(self) -> bool:
        return self == RunFilter()


def _listed(value: Any, where: str) -> list[str]:
    if value is None:
        return []
    values = value if isinstance(value, list | tuple) else [value]
    if not all(isinstance(v, str) for v in values):
        raise FilterInvalid(f"{where} must be a string or a list of strings")
    return list(values)


def _prefix_end(prefix: str) -> str:
    """The smallest string after every string starting with prefix (a range scan's upper bound)."""
    return prefix + "\U0010ffff"


# What a `q` prefix matches, probed before the page (run_list.q_scope): which condition to write.
Q_SCOPES = ("both", "workflow", "run", "none")
# A run id prefix over the primary key (then the few matches sorted): walking the page order for an id
# prefix that only old runs have read 60k rows (70 ms over 100k runs, measured).
BY_RUN_ID = "runs r INDEXED BY sqlite_autoindex_runs_1"


def where_sql(f: RunFilter, params: dict[str, Any], q_scope: str = "both") -> tuple[str, list[str]]:
    """(FROM clause, WHERE conditions) for a filter; values go into params (names f_*).

    The first tag (or metadata pair) drives the scan: `d` is its table, ordered like a page."""
    conditions: list[str] = []
    if f.tags:
        source = "run_tags d JOIN runs r ON r.run_id = d.run_id"
        params["f_tag0"] = f.tags[0]
        conditions.append("d.tag = :f_tag0")
        rest_tags, pairs = f.tags[1:], f.metadata
    elif f.metadata:
        source = "run_metadata d JOIN runs r ON r.run_id = d.run_id"
        params["f_key0"], params["f_value0"] = f.metadata[0]
        conditions.append("d.key = :f_key0 AND d.value = :f_value0")
        rest_tags, pairs = (), f.metadata[1:]
    elif f.q is not None and q_scope == "run":
        source, rest_tags, pairs = BY_RUN_ID, (), ()
    else:
        source, rest_tags, pairs = "runs r", (), ()
    for i, tag in enumerate(rest_tags, 1):
        params[f"f_tag{i}"] = tag
        conditions.append(
            f"EXISTS (SELECT 1 FROM run_tags t WHERE t.tag = :f_tag{i} AND t.created_at = r.created_at "
            "AND t.run_id = r.run_id)"
        )
    for i, (key, value) in enumerate(pairs, 1):
        params[f"f_key{i}"], params[f"f_value{i}"] = key, value
        conditions.append(
            f"EXISTS (SELECT 1 FROM run_metadata m WHERE m.key = :f_key{i} AND m.value = :f_value{i} "
            "AND m.created_at = r.created_at AND m.run_id = r.run_id)"
        )
    if f.statuses and source != "runs r":  # else run_list splits the page into one arm per status
        conditions.append("(" + " OR ".join(STATUS_SQL[s] for s in f.statuses) + ")")
    for column in ("workflow_id", "session_id", "parent_run_id"):
        value = getattr(f, column)
        if value is not None:
            params[f"f_{column}"] = value
            conditions.append(f"r.{column} = :f_{column}")
    created = order_columns(f)[0]  # the driving index's copy: a created range is a range of its key
    if f.created_after is not None:
        params["f_created_after"] = f.created_after
        conditions.append(f"{created} >= :f_created_after")
    if f.created_before is not None:
        params["f_created_before"] = f.created_before
        conditions.append(f"{created} < :f_created_before")
    # A finished run's updated_at is when it ended (nothing saves a terminal run again). `+` keeps
    # the planner off runs_status_updated, whose order is not a page's: it would sort every match
    # (a week of ended runs) to return 50; walking the page order and checking is bounded by the page.
    if f.ended_after is not None:
        params["f_ended_after"] = f.ended_after
        conditions.append(f"{TERMINAL_SQL} AND +r.updated_at >= :f_ended_after")
    if f.ended_before is not None:
        params["f_ended_before"] = f.ended_before
        conditions.append(f"{TERMINAL_SQL} AND +r.updated_at < :f_ended_before")
    if f.q is not None:  # the same for a prefix (measured over 100k runs: 76 ms sorted, 2 ms walked)
        params["f_q"], params["f_q_end"] = f.q, _prefix_end(f.q)
        workflow = "(+r.workflow_id >= :f_q AND +r.workflow_id < :f_q_end)"
        run = "(r.run_id >= :f_q AND r.run_id < :f_q_end)"
        conditions.append(
            {
                "both": f"({workflow} OR (+r.run_id >= :f_q AND +r.run_id < :f_q_end))",
                "workflow": workflow,
                "run": run,
                "none": "0",
            }[q_scope]
        )
    return source, conditions


# Stored statuses (and the condition on output_failed) behind each client status; one page arm each.
STATUS_ARMS: dict[str, tuple[tuple[str, int | None], ...]] = {
    "running": (("running", None), ("queued", None)),
    "queued": (("queued", None),),
    "waiting": (("waiting", None),),
    "completed": (("completed", 0),),
    "failed": (("failed", None), ("completed", 1)),
    "cancelled": (("cancelled", None),),
}


def status_arms(f: RunFilter) -> list[tuple[str, int | None]]:
    """(stored status, output_failed or None for either) pairs the filter's statuses cover; ended_*
    filters keep only terminal ones. Empty: no status condition."""
    arms: dict[str, set[int | None]] = {}
    for status in f.statuses:
        for stored, failed in STATUS_ARMS[status]:
            arms.setdefault(stored, set()).add(failed)
    if (f.ended_after or f.ended_before) and not arms:
        arms = {s: {None} for s in ("completed", "failed", "cancelled")}
    if f.ended_after or f.ended_before:
        arms = {s: v for s, v in arms.items() if s in ("completed", "failed", "cancelled")}
        if not arms:
            return [("none", None)]  # ended, but of a status that never ends: nothing matches
    return [(s, None if len(v) > 1 or None in v else v.pop()) for s, v in sorted(arms.items())]


def order_columns(f: RunFilter) -> tuple[str, str]:
    """(created_at, run_id) columns a page is ordered on: the driving table's when a tag or metadata
    drives (its key is in page order), the runs row's otherwise."""
    return ("d.created_at", "d.run_id") if f.tags or f.metadata else ("r.created_at", "r.run_id")


# --- keyset cursors ----------------------------------------------------------------------------------
class _Cursor(msgspec.Struct, array_like=True):
    created_at: str
    run_id: str


def encode_cursor(created_at: str, run_id: str) -> str:
    raw = msgspec.json.encode(_Cursor(created_at, run_id))
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[str, str]:
    """(created_at, run_id) of the last run of the previous page; FilterInvalid when not ours."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        parsed = msgspec.json.decode(raw, type=_Cursor)
    except (binascii.Error, ValueError, msgspec.DecodeError, msgspec.ValidationError):
        raise FilterInvalid("cursor: not a cursor this server gave out (use next_cursor as is)") from None
    return parsed.created_at, parsed.run_id
