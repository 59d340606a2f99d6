"""CLI commands: grimace convert (imports nothing heavy at module level)."""

from __future__ import annotations

import typer

app = typer.Typer(no_args_is_help=True)
