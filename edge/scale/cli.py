"""``grimace sync``: push this station's store to the facility's central PostgreSQL.

Exit status: 0 when the pass (or the continuous loop, stopped by SIGTERM/SIGINT) finished, 1 when the
central database could not be reached (nothing on the station changed; run again later), 2 for bad
arguments or an unreadable store. Imports nothing heavy until the command runs.
"""

from __future__ import annotations

import re
import signal
import socket
from pathlib import Path

import typer

app = typer.Typer(no_args_is_help=True)


def _default_station() -> str:
    """The host name, made a valid station id."""
    name = re.sub(r"[^A-Za-z0-9._-]", "-", socket.gethostname()).strip(".-") or "station"
    return name[:64]


@app.command("sync")
def sync_cmd(
    store: Path = typer.Argument(
        ..., help="The station store: grimace.sqlite, or the `grimace watch --out` folder holding it."
    ),
    to: str = typer.Option(
        ...,
        "--to",
        envvar="GRIMACE_CENTRAL_URL",
        help="Central database, postgresql://user:password@host/db?sslmode=verify-full "
        "(or set GRIMACE_CENTRAL_URL, which keeps the password off the command line).",
    ),
    station: str | None = typer.Option(
        None, "--station", envvar="GRIMACE_STATION_ID", help="This station's id (default: the host name)."
    ),
    images: Path | None = typer.Option(
        None,
        "--images",
        help="Folder (e.g. a mounted share) for selected frames' images, as <station>/<session>/<file>; "
        "without it images are not copied.",
    ),
    continuous: float = typer.Option(
        0.0,
        "--continuous",
        min=0.0,
        help="Keep syncing every this many seconds (0: one pass); an unreachable database is retried "
        "with backoff.",
    ),
    batch: int = typer.Option(1000, "--batch", min=1, help="Rows per central transaction."),
) -> None:
    """Push sessions, frames, selected images, studies and grades to a central PostgreSQL."""
    from edge.scale.sync import CentralUnavailable, SyncError, redact, sync_continuous, sync_once

    station_id = station or _default_station()

    def err(msg: str) -> None:
        typer.secho(f"error: {msg}", err=True, fg=typer.colors.RED)

    try:
        if continuous > 0:
            stop = {"now": False}

            def _stop(*_a: object) -> None:
                stop["now"] = True

            signal.signal(signal.SIGTERM, _stop)
            signal.signal(signal.SIGINT, _stop)
            typer.echo(f"syncing {store} to {redact(to)} every {continuous:g}s as station {station_id}")
            n = sync_continuous(
                store,
                to,
                station_id=station_id,
                interval_s=continuous,
                images_dir=images,
                batch=batch,
                should_stop=lambda: stop["now"],
                log=lambda s: typer.echo(s, err=True),
            )
            typer.echo(f"stopped after {n} pass(es)")
            return
        report = sync_once(
            store, to, station_id=station_id, images_dir=images, batch=batch, log=lambda s: typer.echo(s)
        )
    except CentralUnavailable as e:
        err(f"{e}; the station's data is unchanged, run `grimace sync` again later")
        raise typer.Exit(1) from None
    except SyncError as e:
        err(str(e))
        raise typer.Exit(2) from None
    typer.echo(report.summary())
