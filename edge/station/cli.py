"""``grimace station``: serve the lab station (imports nothing heavy at module level).

Examples::

    grimace station --data /var/lib/grimace --model model.onnx --chamber c1=0 --chamber c2=/dev/video2
    grimace station --data /var/lib/grimace --set-password          # admin password (prompted)
    grimace station --data /var/lib/grimace --add-grader alice      # grader login (prompted)
    grimace station --data ... --model ... --host 0.0.0.0           # other PCs of the lab (needs a password)
    grimace station --data /var/lib/grimace-view --central postgresql://reader@db/grimace --images /srv/imgs
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from edge.storage import Store

app = typer.Typer(no_args_is_help=True)

STATION_MODULES = ("fastapi", "uvicorn", "jinja2", "multipart")


def _fail(msg: str, code: int = 2) -> typer.Exit:
    typer.secho(f"error: {msg}", err=True, fg=typer.colors.RED)
    return typer.Exit(code)


def _password(prompt: str) -> str:
    """A password from ``GRIMACE_STATION_PASSWORD`` (services, tests) or prompted twice."""
    env = os.environ.get("GRIMACE_STATION_PASSWORD")
    if env:
        return env
    if not sys.stdin.isatty():
        line = sys.stdin.readline().rstrip("\n")
        if line:
            return line
    return typer.prompt(prompt, hide_input=True, confirmation_prompt=True)


@app.command("station")
def station_cmd(
    data: Path = typer.Option(
        ..., "--data", "-d", help="Station data folder (grimace.sqlite, selected frames)."
    ),
    model: Path | None = typer.Option(None, "--model", "-m", help="ONNX model or TensorRT engine."),
    chamber: list[str] = typer.Option(
        [],
        "--chamber",
        help="ID=CAMERA (repeatable): add or re-point a chamber, e.g. c1=0 or c2=/dev/video2.",
    ),
    host: str = typer.Option(
        "127.0.0.1", "--host", help="Address to listen on (not loopback: needs a password)."
    ),
    port: int = typer.Option(8080, "--port", help="TCP port."),
    realtime: float = typer.Option(
        1.0, "--realtime", help="Video files standing in for cameras play at this multiple of real speed."
    ),
    threads: int = typer.Option(0, "--threads", min=0, help="ONNX Runtime CPU threads (0 = all cores)."),
    scale: str | None = typer.Option(None, "--scale", help="Scale the model must be made for."),
    no_batch: bool = typer.Option(False, "--no-batch", help="Score chambers frame by frame (no batching)."),
    set_password: bool = typer.Option(False, "--set-password", help="Set the admin password and exit."),
    add_grader: str | None = typer.Option(
        None, "--add-grader", help="Add a grader (or new password) and exit."
    ),
    resume: bool = typer.Option(True, "--resume/--no-resume", help="Resume sessions that were running."),
    central: str | None = typer.Option(
        None,
        "--central",
        help="postgresql://reader@host/db: serve a read-only view of every station's studies in the "
        "central database (grimace sync --to) instead of a station; no --model needed.",
    ),
    images: Path | None = typer.Option(
        None, "--images", help="With --central: the grimace sync --images folder (selected frames' images)."
    ),
    db: str | None = typer.Option(
        None,
        "--db",
        help="The station's store: postgresql://user@host/database (needs the central extra) or an "
        "SQLite file (default: grimace.sqlite in --data). Images stay under --data.",
    ),
) -> None:
    """Serve the lab station: chambers, studies, sessions, blinded grading and validation in a browser."""
    import ipaddress

    from edge.station import auth
    from edge.station.study import StudyError
    from edge.storage import StoreError, check_target

    if db is not None and central is not None:
        raise _fail("--db is the station's store; the facility view (--central) keeps its logins in --data")
    try:
        target = check_target(db, "--db") if db is not None else data / "grimace.sqlite"
    except StoreError as e:
        raise _fail(str(e)) from None
    data.mkdir(parents=True, exist_ok=True)
    if set_password or add_grader:
        with _open(target) as store:
            try:
                if set_password:
                    auth.create_user(store, "admin", "admin", _password("admin password"))
                    typer.echo("admin password set")
                if add_grader:
                    auth.create_user(store, add_grader, "grader", _password(f"password for {add_grader}"))
                    typer.echo(f"grader {add_grader} saved")
            except StudyError as e:
                raise _fail(str(e)) from None
        return
    if model is None and central is None:
        raise _fail("--model is needed to serve the station (or --central URL for the facility view)")
    if images is not None and central is None:
        raise _fail("--images is for the facility view (--central URL)")
    missing = [m for m in STATION_MODULES if not _available(m)]
    if missing:
        raise _fail(
            f"grimace station needs {', '.join(missing)}; "
            "install it with: pip install 'grimace-edge[station]'"
        )
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    with _open(target) as store:
        admin = auth.has_admin(store)
    if not loopback and not admin:
        raise _fail(
            f"listening on {host} (reachable from other machines) needs an admin password first: "
            f"grimace station --data {data} --set-password"
        )
    if central is not None:
        _serve_central(central, data, images, host, port, admin)
        return
    pairs = []
    for c in chamber:
        cid, sep, cam = c.partition("=")
        if not sep or not cid or not cam:
            raise _fail(f"--chamber {c!r}: expected ID=CAMERA, e.g. c1=0")
        pairs.append((cid, cam))

    import uvicorn

    from edge.artifact import ArtifactError
    from edge.cli_score import _quiet_opencv
    from edge.predictor import load_model
    from edge.scales import ScaleError, ScaleMismatchError
    from edge.station.app import create_app
    from edge.station.chambers import Station

    _quiet_opencv()
    try:
        m = load_model(model, scale=scale, threads=threads)
    except (FileNotFoundError, ArtifactError, ScaleError, ScaleMismatchError) as e:
        raise _fail(str(e)) from None
    try:
        station = Station(m, data, realtime=realtime, batching=not no_batch, db=target)
    except StoreError as e:
        m.close()
        raise _fail(str(e)) from None
    try:
        for cid, cam in pairs:
            try:
                station.add_chamber(cid, cam)
            except StudyError as e:
                raise _fail(str(e)) from None
        if resume:
            for sid in station.resume():
                typer.echo(f"resumed session {sid}")
        url = f"http://{host}:{port}/"
        typer.echo(f"grimace station on {url} ({len(station.chambers)} chamber(s), model {model})")
        if not admin:
            typer.echo(f"first start: open {url}setup on this machine to set the admin password")
        uvicorn.run(create_app(station), host=host, port=port, log_level="warning")
    finally:
        station.close()


def _serve_central(url: str, data: Path, images: Path | None, host: str, port: int, admin: bool) -> None:
    """Serve the read-only facility view of the central database (:mod:`edge.station.central`)."""
    from edge.scale.sync import SyncError, redact

    if images is not None and not images.is_dir():
        raise _fail(f"--images {images}: no such folder")
    from edge.station.central import CentralReader, create_central_app, read_only_engine

    try:
        engine = read_only_engine(url)
    except SyncError as e:
        raise _fail(str(e)) from None
    import sqlalchemy as sa

    try:
        n = len(CentralReader(engine).stations())
    except sa.exc.DBAPIError as e:
        engine.dispose()
        raise _fail(f"central database {redact(url)}: {str(e.orig or e).strip().splitlines()[0]}") from None
    import uvicorn

    where = f"http://{host}:{port}/"
    typer.echo(f"grimace facility view (read-only) on {where}: {n} station(s) in {redact(url)}")
    if not admin:
        typer.echo(f"first start: open {where}setup on this machine to set the admin password")
    try:
        uvicorn.run(create_central_app(data, engine, images), host=host, port=port, log_level="warning")
    finally:
        engine.dispose()


def _open(target: str | Path) -> Store:
    """The station's :class:`~edge.storage.Store`; a store that cannot be opened ends the command
    with its message."""
    from edge.storage import Store, StoreError

    try:
        return Store(target)
    except StoreError as e:
        raise _fail(str(e)) from None


def _available(module: str) -> bool:
    from edge.deps import available

    return available(module)
