"""`python -m autointerp` is the `autointerp` command."""

from .cli import main

main()
