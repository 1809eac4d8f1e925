"""The cost of running a code node in the sandbox process instead of in the runner's.

Times the same small code node (`return x * 2`) through abstractruntime's in-process RestrictedPython
handler and through the gateway's sandbox (request over a pipe, fork of the warm fork server, limits,
run, JSON reply), and the sandbox's cold start (a fresh fork server: interpreter, imports, isolation).
Usage: python -m bench.bench_sandbox [--quick]; its last stdout line is the JSON that bench.report reads.
"""

from __future__ import annotations

import json
import statistics
import sys
import time

from abstractruntime.visualflow_compiler.visual.code_executor import create_code_handler as in_process

from bench.options import bench_parser
from runner_service.sandbox import SandboxSettings, close_thread_client
from runner_service.sandbox.handlers import SandboxedCode

CODE = "def transform(_input):\n    return {'doubled': _input['x'] * 2}"


def _per_call_ms(handler, n: int) -> list[float]:  # type: ignore[no-untyped-def]
    samples = []
    for i in range(n):
        start = time.perf_counter()
        handler({"x": i})
        samples.append((time.perf_counter() - start) * 1000)
    return samples


def _summary(samples: list[float]) -> dict[str, float]:
    q = statistics.quantiles(samples, n=100)
    return {"p50_ms": statistics.median(samples), "p95_ms": q[94], "p99_ms": q[98]}


def main() -> None:
    args = bench_parser(__doc__ or "", quick_help="fewer calls").parse_args()
    n = 50 if args.quick else 300
    sandboxed = SandboxedCode(SandboxSettings())
    local = in_process(CODE)
    start = time.perf_counter()
    remote = sandboxed.create_code_handler(CODE)
    remote({"x": 0})
    cold_ms = (time.perf_counter() - start) * 1000
    rows = {"in process": _per_call_ms(local, n), "sandbox": _per_call_ms(remote, n)}
    close_thread_client()
    summary = {name: _summary(samples) for name, samples in rows.items()}
    print(f"code node, {n} calls each (ms per call)", file=sys.stderr)
    for name, row in summary.items():
        print(f"  {name:<11} p50 {row['p50_ms']:7.3f}  p95 {row['p95_ms']:7.3f}", file=sys.stderr)
    extra = summary["sandbox"]["p50_ms"] - summary["in process"]["p50_ms"]
    print(
        f"  sandbox overhead per code node (p50): {extra:.2f} ms; cold start of the sandbox: {cold_ms:.0f} ms",
        file=sys.stderr,
    )
    result = {"bench": "sandbox", "quick": args.quick, "calls": n, "in_process": summary["in process"],
              "sandbox": summary["sandbox"], "overhead_p50_ms": extra, "cold_start_ms": cold_ms}  # fmt: skip
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
