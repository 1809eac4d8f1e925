"""The cost of running a code node in the sandbox process instead of in the runner's.

Times the same small code node (`return x * 2`) through abstractruntime's in-process RestrictedPython
handler and through the gateway's sandbox (request over a pipe, fork of the warm fork server, limits,
run, JSON reply), and the sandbox's cold start (a fresh fork server: interpreter, imports, isolation).
Usage: python -m bench.bench_sandbox [--quick]
"""

from __future__ import annotations

import statistics
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
    print(f"code node, {n} calls each (ms per call)")
    for name, samples in rows.items():
        q = statistics.quantiles(samples, n=20)
        print(f"  {name:<11} p50 {statistics.median(samples):7.3f}  p95 {q[18]:7.3f}")
    extra = statistics.median(rows["sandbox"]) - statistics.median(rows["in process"])
    print(
        f"  sandbox overhead per code node (p50): {extra:.2f} ms; cold start of the sandbox: {cold_ms:.0f} ms"
    )


if __name__ == "__main__":
    main()
