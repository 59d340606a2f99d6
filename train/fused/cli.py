"""CLI commands: grimace train / distill / predict (imports nothing heavy at module level)."""

from __future__ import annotations

import typer

train_app = typer.Typer(no_args_is_help=True)
distill_app = typer.Typer(no_args_is_help=True)
predict_app = typer.Typer(no_args_is_help=True)
