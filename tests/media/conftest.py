"""Media tests reuse the runner tests' `gateway` fixture (a db and real runner processes)."""

from tests.runner.conftest import gateway  # noqa: F401
