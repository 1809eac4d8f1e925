"""Flow control: runner labels, concurrency keys, priorities and rate limits (API-safe, no runtime).

- Labels: a run may require runner labels (`requires`); a claim takes only runs whose labels are all
  among the claiming runner's (queries.LABELS_MET, in the claim statement itself).
- Priority 1-5 (default 3): claims take higher priority first.
- Fairness: a queued keyed start gets a fair tag, max(now, the key's last tag + FAIR_STEP_S), as its
  claim order (start-time fair queueing with wall time as virtual time): two keys with a backlog each
  are claimed alternately, whichever enqueued first.
- Concurrency: a key with max_concurrent lets that many of its runs hold a slot. A runner takes a
  slot for a claimed run before doing its work (admit()); a run that finds none is held (out of the
  claimable set) and gets a slot from the trigger that frees one (migrations: flow_slot_freed).
- Rate limits: at most rate_limit starts begun per rate_window_s per key; admit() counts the key's
  begun_at times and defers a start beyond them to the time it becomes eligible.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import apsw

from . import queries as q
from .codec import decode, encode, utc_now_iso
from .db import Database
from .errors import Invalid
from .leases import LeaseHolder
from .runners import live_runners

PRIORITY_DEFAULT = 3
OVERFLOW = ("enqueue", "reject", "cancel_oldest", "cancel_newest")
# One fair-queueing step: the claim order gap between two queued starts of one key. It must exceed
# the time between two starts of a burst (well under 1 s), or one key's burst sorts before the next.
FAIR_STEP_S = 1.0
MAX_KEY_LEN = 256
MAX_LABELS = 16
LIVE_RUNNER_S = 30.0  # a runner heartbeating within this long counts (what health calls live)
_LABEL = re.compile(r"^[A-Za-z0-9_.:/-]{1,64}(=[A-Za-z0-9_.:/-]{1,64})?$")
_TEMPLATE_FIELD = re.compile(r"\{([^{}]*)\}")


class FlowControlError(Invalid):
    """A flow-control value the API refuses (its kind says how: invalid, or conflict for KeyFull)."""


class KeyFull(FlowControlError):
    """overflow: reject, and the key has max_concurrent runs in flight: nothing is written."""

    kind = "conflict"


def parse_labels(values: Any) -> list[str]:
    """Labels from a CLI/env value ("gpu,region=eu" or a list); sorted, de-duplicated, validated."""
    if values is None:
        return []
    items = re.split(r"[,\s]+", values) if isinstance(values, str) else list(values)
    labels = sorted({str(v).strip() for v in items if str(v).strip()})
    for label in labels:
        if not _LABEL.match(label):
            raise FlowControlError(
                f"label {label!r} must be a name or name=value of letters, digits and _ . : / - (64 each)"
            )
    if len(labels) > MAX_LABELS:
        raise FlowControlError(f"at most {MAX_LABELS} labels, not {len(labels)}")
    return labels


def parse_media_requires(raw: str | None, kinds: tuple[str, ...]) -> dict[str, list[str]]:
    """ABSTRACTGATEWAY_MEDIA_REQUIRES: a JSON object of media kind -> required runner labels, e.g.
    {"image_generate": ["gpu"], "video_generate": ["gpu"]} (jobs of those kinds need such a runner)."""
    if not raw or not raw.strip():
        return {}
    try:
        data = decode(raw.encode())
    except Exception:
        raise FlowControlError(f"must be a JSON object of media kind -> labels, not {raw!r}") from None
    if not isinstance(data, dict):
        raise FlowControlError("must be a JSON object of media kind -> labels")
    unknown = sorted(set(data) - set(kinds))
    if unknown:
        raise FlowControlError(f"unknown media kind {unknown[0]!r}; kinds: {', '.join(kinds)}")
    if not all(isinstance(v, list) for v in data.values()):
        raise FlowControlError("each media kind maps to a list of labels")
    return {kind: parse_labels(labels) for kind, labels in data.items() if labels}


def labels_met(requires: list[str], labels: list[str]) -> bool:
    return set(requires) <= set(labels)


@dataclass(frozen=True)
class FlowRequest:
    """What a start, a schedule or a bundle asks for; None: not asked (another source may say)."""

    priority: int | None = None
    concurrency_key: str | None = None  # a literal, or a template over the input: "user:{input.user_id}"
    max_concurrent: int | None = None
    overflow: str | None = None
    count_waiting: bool | None = None
    rate_limit: int | None = None
    rate_window_s: float | None = None
    requires: list[str] | None = None

    @classmethod
    def from_json(cls, data: Any, *, where: str = "flow_control") -> FlowRequest:
        """From a bundle manifest's or a stored schedule's JSON object; bad values raise."""
        if data is None:
            return cls()
        if not isinstance(data, dict):
            raise FlowControlError(f"{where} must be an object")
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise FlowControlError(
                f"{where}: unknown field {unknown[0]!r}; known: {', '.join(sorted(known))}"
            )
        return cls(**data).checked(where)

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}

    def checked(self, where: str = "request") -> FlowRequest:
        """Range and shape checks (the API's msgspec schema does them too, for its own input)."""

        def bad(field: str, detail: str) -> FlowControlError:
            return FlowControlError(f"{where}.{field}: {detail}")

        if self.priority is not None and (
            not isinstance(self.priority, int)
            or isinstance(self.priority, bool)
            or not 1 <= self.priority <= 5
        ):
            raise bad("priority", "must be an integer from 1 (lowest) to 5 (highest)")
        if self.concurrency_key is not None and (
            not isinstance(self.concurrency_key, str) or not 0 < len(self.concurrency_key) <= MAX_KEY_LEN
        ):
            raise bad("concurrency_key", f"must be a string of 1 to {MAX_KEY_LEN} characters")
        for name in ("max_concurrent", "rate_limit"):
            value = getattr(self, name)
            if value is not None and (
                not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 1_000_000
            ):
                raise bad(name, "must be an integer from 1 to 1000000")
        if self.rate_window_s is not None and (
            not isinstance(self.rate_window_s, int | float) or not 0.01 <= self.rate_window_s <= 86_400 * 366
        ):
            raise bad("rate_window_s", "must be a number of seconds from 0.01 to one year")
        if self.overflow is not None and self.overflow not in OVERFLOW:
            raise bad("overflow", f"must be one of {', '.join(OVERFLOW)}")
        if self.requires is not None:
            if not isinstance(self.requires, list):
                raise bad("requires", "must be a list of labels")
            try:
                requires = parse_labels(self.requires)
            except FlowControlError as exc:
                raise bad("requires", str(exc)) from None
            return replace(self, requires=requires)
        return self

    def over(self, base: FlowRequest) -> FlowRequest:
        """This request's values, falling back to `base` (what the bundle declares) field by field."""
        return FlowRequest(**{k: base.__dict__[k] if v is None else v for k, v in self.__dict__.items()})


def declared_flow(manifest: dict[str, Any], flow_id: str) -> FlowRequest:
    """What a bundle declares: `metadata.flow_control` for every flow, overridden per entrypoint by
    the entrypoint's own `flow_control`."""
    metadata: dict[str, Any] = manifest["metadata"] if isinstance(manifest.get("metadata"), dict) else {}
    bundle = FlowRequest.from_json(metadata.get("flow_control"), where="bundle flow_control")
    for entry in manifest.get("entrypoints") or []:
        if isinstance(entry, dict) and entry.get("flow_id") == flow_id and "flow_control" in entry:
            return FlowRequest.from_json(
                entry["flow_control"], where=f"entrypoint {flow_id} flow_control"
            ).over(bundle)
    return bundle


def render_key(template: str, input_data: dict[str, Any]) -> str:
    """`user:{input.user_id}` → `user:42`; a field the input lacks (or that is not a scalar) is a 422."""

    def field(match: re.Match[str]) -> str:
        path = match.group(1).strip()
        parts = path.split(".")
        if len(parts) < 2 or parts[0] != "input" or not all(parts[1:]):
            raise FlowControlError(
                f"concurrency_key: {{{path}}} must name an input field, like {{input.user_id}}"
            )
        value: Any = input_data
        for part in parts[1:]:
            if not isinstance(value, dict) or part not in value:
                raise FlowControlError(f"concurrency_key: the input has no {path.removeprefix('input.')!r}")
            value = value[part]
        if isinstance(value, dict | list) or value is None:
            raise FlowControlError(f"concurrency_key: {path} must be a string, number or boolean")
        return str(value).lower() if isinstance(value, bool) else str(value)

    key = _TEMPLATE_FIELD.sub(field, template)
    if not 0 < len(key) <= MAX_KEY_LEN:
        raise FlowControlError(f"concurrency_key must render to 1 to {MAX_KEY_LEN} characters")
    return key


@dataclass(frozen=True)
class FlowSettings:
    """A run's flow control, resolved (key rendered, defaults applied): what is stored."""

    priority: int = PRIORITY_DEFAULT
    concurrency_key: str | None = None
    requires: list[str] | None = None
    request: FlowRequest = FlowRequest()

    @property
    def empty(self) -> bool:
        return self.priority == PRIORITY_DEFAULT and self.concurrency_key is None and not self.requires

    @classmethod
    def resolve(cls, request: FlowRequest, input_data: dict[str, Any]) -> FlowSettings:
        request = request.checked()
        key = None if request.concurrency_key is None else render_key(request.concurrency_key, input_data)
        limits = (request.max_concurrent, request.rate_limit, request.rate_window_s, request.overflow)
        if key is None and any(v is not None for v in limits):
            raise FlowControlError("max_concurrent, overflow and rate limits need a concurrency_key")
        if (request.rate_limit is None) != (request.rate_window_s is None):
            raise FlowControlError("rate_limit and rate_window_s go together")
        return cls(
            priority=request.priority or PRIORITY_DEFAULT,
            concurrency_key=key,
            requires=request.requires or None,
            request=request,
        )


def _cancel(conn: apsw.Connection, run_id: str, reason: str, now: float) -> None:
    conn.execute(
        q.INSERT_COMMAND,
        {
            "command_id": f"flow-control-cancel:{run_id}",
            "run_id": run_id,
            "type": "cancel",
            "payload": encode({"reason": reason}),
            "ts": utc_now_iso(),
            "client_id": "gateway:flow_control",
            "request_id": None,
        },
    )
    conn.execute(q.WAKE_RUN, {"run_id": run_id, "now": now})


def apply_at_enqueue(conn: apsw.Connection, run_id: str, flow: FlowSettings, *, now: float) -> None:
    """Inside the enqueue transaction, after the queued row is written: store the run's flow control,
    its fair tag, and what the key's overflow policy says (KeyFull rolls the whole start back)."""
    if flow.empty:
        return
    key, hold, tag, cancel_self = flow.concurrency_key, 0, None, None
    if key is not None:
        request = flow.request
        store_key_limits(conn, flow)
        key_row: Any = conn.execute(q.FLOW_KEY, (key,)).fetchone()
        max_concurrent, _, _, _, last_tag = key_row
        tag = now if last_tag is None else max(now, float(last_tag) + FAIR_STEP_S)
        conn.execute(q.SET_KEY_TAG, {"key": key, "tag": tag})
        if max_concurrent is not None:
            # A run of a limited key is born held; ADMIT_HELD (after the row is complete, below)
            # hands it a slot at once when one is free, as a freed slot is handed on later.
            hold = 1
            conn.execute(q.LOCK_FLOW_KEY, {"key": key}).fetchall()
            slots_row: Any = conn.execute(q.KEY_SLOTS, (key,)).fetchone()
            slots = slots_row[0]
            overflow = request.overflow or "enqueue"
            if slots >= max_concurrent and overflow != "enqueue":
                full = (
                    f"concurrency key {key!r} has {slots} of max_concurrent {max_concurrent} runs in flight"
                )
                if overflow == "reject":
                    raise KeyFull(f"{full} (overflow: reject)")
                if overflow == "cancel_oldest":
                    row = conn.execute(q.KEY_OLDEST_SLOT, (key,)).fetchone()
                    if row is not None:
                        _cancel(
                            conn,
                            str(row[0]),
                            f"{full}: cancelled for newer run {run_id} (cancel_oldest)",
                            now,
                        )
                else:  # cancel_newest: this run is recorded, and cancelled before it starts
                    cancel_self = f"{full}: cancelled (cancel_newest)"
    conn.execute(
        q.SET_RUN_FLOW,
        {
            "run_id": run_id,
            "priority": flow.priority,
            "concurrency_key": key,
            "requires": encode(flow.requires).decode() if flow.requires else None,
            "fair_tag": tag,
            "hold": hold,
        },
    )
    if hold:
        conn.execute(q.ADMIT_HELD, {"key": key, "now": now})
    if cancel_self is not None:
        _cancel(conn, run_id, cancel_self, now)


def store_key_limits(conn: apsw.Connection, flow: FlowSettings) -> None:
    """Record the key's limits (a schedule's, at creation: its firings find them there)."""
    request = flow.request
    conn.execute(
        q.UPSERT_FLOW_KEY,
        {
            "key": flow.concurrency_key,
            "max_concurrent": request.max_concurrent,
            "count_waiting": None if request.count_waiting is None else int(request.count_waiting),
            "rate_limit": request.rate_limit,
            "rate_window_s": request.rate_window_s,
            "updated_at": utc_now_iso(),
        },
    )


def child_statements(
    flow: dict[str, Any], child_run_id: str, *, now: float
) -> list[tuple[str, dict[str, Any]]]:
    """The statements that give a schedule's child run the schedule's flow control (run in the
    parent's save transaction, after the child's row): priority, labels, fair tag, slot or hold."""
    key = flow.get("concurrency_key")
    params = {
        "child_run_id": child_run_id,
        "priority": int(flow.get("priority") or PRIORITY_DEFAULT),
        "key": key,
        "requires": encode(flow["requires"]).decode() if flow.get("requires") else None,
        "now": now,
        "step": FAIR_STEP_S,
    }
    statements = [(q.SET_CHILD_FLOW, params)]
    if key is not None:
        statements.append((q.SET_KEY_TAG_OF_RUN, {"key": key, "child_run_id": child_run_id}))
        statements.append((q.LOCK_FLOW_KEY, {"key": key}))
        statements.append((q.ADMIT_HELD, {"key": key, "now": now}))
    return statements


# --- runner side -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Admission:
    go: bool
    why: str | None = None  # when not: "held" (waiting for a slot) or "rate" (deferred)


def admit(
    db: Database,
    fence: LeaseHolder,
    run_id: str,
    *,
    now: float | None = None,
    flow: tuple[Any, ...] | None = None,
) -> Admission:
    """Before a runner works on a claimed run: take a slot of its key and count its start against the
    key's rate, or hold / defer it (fenced writes, one transaction so no slot is freed in between).

    `flow`: the run's RUN_FLOW columns when the caller already read them (run_unit.RunUnit.open)."""
    now = time.time() if now is None else now
    # Most runs have no limited key: no write transaction.
    row = flow if flow is not None else db.query_one(q.RUN_FLOW, (run_id,))
    if row is None or row[1] is None or (row[4] is None and row[5] is None):
        return Admission(True)
    with db.write() as conn:
        conn.execute(q.LOCK_FLOW_KEY, {"key": row[1]}).fetchall()  # before its slots are counted
        row = conn.execute(q.RUN_FLOW, (run_id,)).fetchone()
        assert row is not None  # we hold its lease: it exists
        status, key, slot, begun_at, max_concurrent, rate_limit, window_s, cancelling = row
        if cancelling or status in ("completed", "failed", "cancelled"):
            return Admission(True)  # a cancel is applied without a slot: it ends the run
        fenced = {**fence.params(run_id), "run_id": run_id}
        need_slot = max_concurrent is not None and not slot
        held_slots: Any = conn.execute(q.KEY_SLOTS, (key,)).fetchone()
        if need_slot and held_slots[0] >= max_concurrent:
            conn.execute(q.HOLD_RUN_FENCED, fenced)
            return Admission(False, "held")
        starting = status == "queued" and begun_at is None
        if starting and rate_limit is not None:
            begun = [float(t) for (t,) in conn.execute(q.KEY_BEGUN_SINCE, (key, now - float(window_s)))]
            if len(begun) >= rate_limit:
                # Eligible once enough of the window's starts have aged out of it.
                eligible = begun[len(begun) - rate_limit] + float(window_s)
                conn.execute(q.DEFER_START_FENCED, {**fenced, "due_at": eligible})
                return Admission(False, "rate")
        if need_slot or starting:
            conn.execute(
                q.ADMIT_RUN_FENCED, {**fenced, "slot": int(need_slot), "begun_at": now if starting else None}
            )
            if conn.changes() == 0:
                raise fence.lost(run_id)
    return Admission(True)


# --- what clients see ----------------------------------------------------------------------------------
def live_labels(runners: list[Any]) -> list[list[str]]:
    """The label sets of live runners (RunnerInfo.capabilities['labels'])."""
    return [list(r.capabilities.get("labels") or []) for r in runners]


def live_label_sets(db: Database, *, within_s: float = LIVE_RUNNER_S) -> Callable[[], list[list[str]]]:
    """A lazy, once-computed reader of the live runners' label sets (for a page of run views)."""
    cache: list[list[list[str]]] = []

    def read() -> list[list[str]]:
        if not cache:
            cache.append(live_labels(live_runners(db, within_s=within_s)))
        return cache[0]

    return read


def unmet_requirements(db: Database, label_sets: list[list[str]]) -> list[str]:
    """Health problems: live runs requiring labels that no live runner has."""
    problems = []
    for requires_json, count in db.query(q.REQUIRED_LABEL_SETS):
        requires = decode(requires_json)
        if not any(labels_met(requires, labels) for labels in label_sets):
            problems.append(
                f"{count} run(s) require runner labels {requires} that no live runner has: they stay queued"
            )
    return problems


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat()


def _rate_eligible(db: Database, row: tuple[Any, ...]) -> float | None:
    """When a queued start of a rate-limited key may begin, if not now: the time a runner deferred it
    to, or (not yet looked at) when enough of the window's starts age out."""
    key, due_at, rate_limit, window_s = row[1], row[4], row[8], float(row[9])
    now = time.time()
    if due_at is not None and due_at > now:
        return float(due_at)
    begun = [float(t) for (t,) in db.query(q.KEY_BEGUN_SINCE, (key, now - window_s))]
    return begun[len(begun) - rate_limit] + window_s if len(begun) >= rate_limit else None


def flow_view(db: Database, run_id: str, label_sets: Callable[[], list[list[str]]]) -> dict[str, Any]:
    """The run's flow-control fields and why it is not running (None when nothing holds it back);
    label_sets() gives the live runners' labels (asked only for a run that requires some)."""
    row = db.query_one(q.RUN_FLOW_VIEW, (run_id,))
    return {} if row is None else flow_from_row(db, row, label_sets)


def flow_from_row(
    db: Database, row: tuple[Any, ...], label_sets: Callable[[], list[list[str]]]
) -> dict[str, Any]:
    """flow_view from the columns of q.RUN_FLOW_VIEW (the runs list selects them with its page)."""
    priority, key, requires_json, hold, _due_at, status, owner, max_concurrent, rate_limit, window_s = row
    requires = decode(requires_json) if requires_json else []
    blocked: dict[str, Any] | None = None
    live = status in ("queued", "running", "waiting")
    if live and hold:
        blocked = {
            "reason": "concurrency_limit",
            "detail": f"waiting for one of the {max_concurrent} slots of concurrency key {key!r}",
            "until": None,
        }
    elif live and status == "queued" and owner is None and rate_limit and (until := _rate_eligible(db, row)):
        blocked = {
            "reason": "rate_limit",
            "detail": f"concurrency key {key!r} allows {rate_limit} starts per {window_s:g} s",
            "until": _iso(until),
        }
    elif live and requires and owner is None and not any(labels_met(requires, ls) for ls in label_sets()):
        blocked = {
            "reason": "no_runner_with_labels",
            "detail": f"no live runner has the labels {requires}",
            "until": None,
        }
    return {
        "priority": int(priority),
        "concurrency_key": key,
        "requires": requires,
        "blocked": blocked,
    }
