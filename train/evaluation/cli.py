"""CLI commands: grimace eval / cv / baseline (imports nothing heavy at module level)."""

from __future__ import annotations

import typer

eval_app = typer.Typer(no_args_is_help=True)
cv_app = typer.Typer(no_args_is_help=True)
baseline_app = typer.Typer(no_args_is_help=True)
