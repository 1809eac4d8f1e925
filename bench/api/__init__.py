"""The API benchmark's parts; `python -m bench.bench_api` is the entry point (bench/bench_api.py)."""
