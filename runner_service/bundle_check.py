"""`python -m runner_service.bundle_check < bundle.flow`: exit 0 when every flow compiles, else 1 + reason.

The API runs this in a child process for uploads, so it never imports the compiler itself.
"""

from __future__ import annotations

import sys

from shared_store.bundle_files import BundleError, read_bundle


def compile_errors(data: bytes) -> list[str]:
    """Why a bundle's flows do not compile (empty when they all do)."""
    from abstractruntime.visualflow_compiler import compile_visualflow

    try:
        _, documents = read_bundle(data)
    except BundleError as exc:
        return [exc.detail]
    errors = []
    for flow_id, document in documents.items():
        try:
            compile_visualflow(document)
        except Exception as exc:  # the compiler raises many kinds; each is a reason to report
            errors.append(f"flow {flow_id!r} does not compile: {type(exc).__name__}: {exc}")
    return errors


def main() -> int:
    errors = compile_errors(sys.stdin.buffer.read())
    if errors:
        print("; ".join(errors), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
