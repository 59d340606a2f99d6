"""``python -m bench``: the same as ``grimace bench``."""

from bench.cli import main

main()
