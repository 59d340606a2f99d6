"""``grimace sync``: push this station's store to the facility's central PostgreSQL.

Exit status: 0 when the pass (or the continuous loop, stopped by SIGTERM/SIGINT) finished, 1 when the
central database could not be reached (nothing on the station changed; run again later), 2 for bad
arguments or an unreadable store. Imports nothing heavy until the command runs.
"""

from __future__ import annotations

import signal
from pathlib import Path

import typer

app = typer.Typer(no_args_is_help=True)


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
        None,
        "--station",
        envvar="GRIMACE_STATION_ID",
        help="This station's id (default: the login's name when it is a `grimace central add-station` "
        "role, which may sync only as itself; else the host name).",
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

    station_id = station or None

    def err(msg: str) -> None:
        typer.secho(f"error: {msg}", err=True, fg=typer.colors.RED)

    try:
        if continuous > 0:
            stop = {"now": False}

            def _stop(*_a: object) -> None:
                stop["now"] = True

            signal.signal(signal.SIGTERM, _stop)
            signal.signal(signal.SIGINT, _stop)
            who = f"as station {station_id}" if station_id else "as the station its login names (or the host)"
            typer.echo(f"syncing {store} to {redact(to)} every {continuous:g}s {who}")
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


# ------------------------------------------------------------------------------ grimace central
central_app = typer.Typer(no_args_is_help=True)

_DB_HELP = (
    "The central database, connected to as its owner with CREATEROLE (or a superuser): "
    "postgresql://admin@host/grimace?sslmode=verify-full (or set GRIMACE_CENTRAL_ADMIN_URL)."
)


def _fail(msg: str, code: int = 2) -> typer.Exit:
    typer.secho(f"error: {msg}", err=True, fg=typer.colors.RED)
    return typer.Exit(code)


_ADMIN_DB = typer.Option(..., "--db", envvar="GRIMACE_CENTRAL_ADMIN_URL", help=_DB_HELP)
_PASSWORD_FILE = typer.Option(
    None,
    "--password-file",
    help="Write the generated password to this new file (0600) instead of printing it.",
)


@central_app.command("init")
def central_init(
    db: str = _ADMIN_DB,
) -> None:
    """Set the central database up: tables, group roles, privileges, row-level security (rerun safe)."""
    from edge.scale.roles import init_central
    from edge.scale.sync import CentralUnavailable, SyncError, redact

    try:
        rep = init_central(db)
    except CentralUnavailable as e:
        raise _fail(str(e), 1) from None
    except SyncError as e:
        raise _fail(str(e)) from None
    for line in rep.changes:
        typer.echo(f"  {line}")
    state = f"{len(rep.changes)} change(s)" if rep.changes else "already set up, nothing changed"
    typer.echo(f"{redact(db)}: {state}; row-level security on {', '.join(rep.tables)}")


def _add(name: str, db: str, group: str, password_file: Path | None, reset: bool) -> None:
    import os

    from edge.scale.roles import add_login, check_login_name, login_url, new_password
    from edge.scale.sync import CentralUnavailable, SyncError

    try:
        check_login_name(name)
        url = login_url(db, name)
    except SyncError as e:
        raise _fail(str(e)) from None
    password = new_password()
    fd = None
    if password_file is not None:
        try:  # before the role exists: a file that cannot be written leaves nothing behind
            fd = os.open(password_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError as e:
            raise _fail(f"{password_file}: {e.strerror} (the password file must be new)") from None
    try:
        add_login(db, name, group, password, reset=reset)
    except (CentralUnavailable, SyncError) as e:
        if fd is not None:
            os.close(fd)
            password_file.unlink()
        raise _fail(str(e), 1 if isinstance(e, CentralUnavailable) else 2) from None
    verb = "new password for" if reset else "created"
    typer.echo(f"{verb} login {name} (member of {group})")
    if fd is not None:
        with os.fdopen(fd, "w") as f:
            f.write(password + "\n")
        typer.echo(f"password written to {password_file} (mode 0600); it is not shown again")
    else:
        typer.echo("password (shown once; keep it in ~/.pgpass or GRIMACE_CENTRAL_URL on the machine):")
        typer.echo(password)
    typer.echo(f"connect as: {url}")


@central_app.command("add-station")
def central_add_station(
    name: str = typer.Argument(..., help="The station id; it is also the station's login name."),
    db: str = _ADMIN_DB,
    password_file: Path | None = _PASSWORD_FILE,
    reset_password: bool = typer.Option(
        False, "--reset-password", help="The station's login exists: give it a new password."
    ),
) -> None:
    """A station's own login: it syncs as NAME only and sees and writes only NAME's rows."""
    from edge.scale.sync import STATION_ROLE

    _add(name, db, STATION_ROLE, password_file, reset_password)


@central_app.command("add-reader")
def central_add_reader(
    name: str = typer.Argument(..., help="The login name (e.g. facility_view)."),
    db: str = _ADMIN_DB,
    password_file: Path | None = _PASSWORD_FILE,
    reset_password: bool = typer.Option(
        False, "--reset-password", help="The reader's login exists: give it a new password."
    ),
) -> None:
    """A read-only login (the facility view, analysts): every station's rows, no write."""
    from edge.scale.sync import READER_ROLE

    _add(name, db, READER_ROLE, password_file, reset_password)
