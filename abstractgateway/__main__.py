"""`python -m abstractgateway ...`: the same as the `abstractgateway` command."""

from .cli import main

main()
