"""``grimace demo`` and ``grimace disk``: the demo and the disk guard as commands of the one app.

Both keep their own argument parsers (:func:`edge.demo.main`, :func:`edge.diskguard.main`), which the
``python -m edge.demo`` / ``python -m edge.diskguard`` entry points (used by ``make demo`` and the
systemd units) also use; these commands forward their arguments to them, so there is one parser per job.
"""

from __future__ import annotations

import typer

_FORWARD = {"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []}

app = typer.Typer(add_completion=False)
disk_app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Disk guard: free space for the results database, rotation of old selected-frame images.",
)


@app.command("demo", context_settings=_FORWARD, add_help_option=False)
def demo_cmd(ctx: typer.Context) -> None:
    """Score a synthetic session video with the demo model (options: grimace demo --help)."""
    from edge.demo import main

    raise typer.Exit(main(list(ctx.args), prog="grimace demo"))


def _disk(command: str, ctx: typer.Context) -> None:
    from edge.diskguard import main

    raise typer.Exit(main([command, *ctx.args], prog="grimace disk"))


@disk_app.command("status", context_settings=_FORWARD, add_help_option=False)
def disk_status(ctx: typer.Context) -> None:
    """Free space and thresholds of a storage folder; exit 1 below the start floor (PATH, --help)."""
    _disk("status", ctx)


@disk_app.command("preflight", context_settings=_FORWARD, add_help_option=False)
def disk_preflight(ctx: typer.Context) -> None:
    """Rotate if below the target, then exit 1 if still below the start floor (PATH, --help)."""
    _disk("preflight", ctx)


@disk_app.command("rotate", context_settings=_FORWARD, add_help_option=False)
def disk_rotate(ctx: typer.Context) -> None:
    """Delete the oldest selected-frame images until the target is free (PATH, --dry-run, --help)."""
    _disk("rotate", ctx)
