"""What every part of the API bench shares: the server address and token, targets, sizes, helpers."""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent
# Read as `common.TOKEN`: a spawned fan-out client process sets it to its parent's token.
TOKEN = "bench-api-token-" + uuid.uuid4().hex
HOST = "127.0.0.1"
# The bench's own PostgreSQL's postmaster (`--backend postgresql`), whose CPU the phases meter too.
PG_SERVER_PID: int | None = None
RUNNER_POLL_S = 0.005
API = "/api/gateway"

# Targets (2 cores), printed as MET/MISSED.
STARTS_TARGET_PER_S = 3_500.0
REPLAY_P50_TARGET_MS = 3.0
RESUME_P50_TARGET_MS = 25.0
FANOUT_P99_TARGET_MS = 500.0
IDLE_RSS_TARGET_MB = 100.0


@dataclass(frozen=True)
class Sizes:
    starts: dict[int, int]  # concurrency -> requests
    commands: dict[int, int]
    cap_s: float  # per load case
    replays: int
    resumes: int
    fanout_clients: tuple[int, ...]
    tick_n: int
    tick_delay_s: float
    client_procs: int
    health: bool = True  # the GET /api/health reference case


FULL = Sizes({1: 2_000, 16: 20_000}, {1: 2_000, 16: 20_000}, 30.0, 500, 200, (1_000, 5_000), 20, 0.25, 2)
QUICK = Sizes({1: 300, 16: 500}, {1: 300, 16: 500}, 10.0, 100, 30, (200,), 8, 0.1, 1)
# PostgreSQL (`--backend postgresql`): the cases of the report's PostgreSQL column only (starts,
# replay, resume -> done); no commands, fan-out or health reference, to keep the report short.
PG_FULL = Sizes({1: 1_000, 16: 10_000}, {}, 15.0, 200, 50, (), 8, 0.1, 1, False)
PG_QUICK = Sizes({1: 200, 16: 500}, {}, 10.0, 100, 20, (), 8, 0.1, 1, False)

# Targets on PostgreSQL (issue 14; 2 cores, the server on the same machine).
PG_STARTS_TARGET_PER_S = 1_500.0
PG_REPLAY_P50_TARGET_MS = 5.0
PG_RESUME_P50_TARGET_MS = 50.0


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile (no interpolation: p99 is a latency that really happened)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(pct / 100 * len(ordered)) - 1)]


def verdict(met: bool) -> str:
    return "MET" if met else "MISSED"


def report(line: str) -> None:
    print(line, flush=True)


class BenchFailure(Exception):
    """A correctness check failed: the numbers of this phase mean nothing."""
