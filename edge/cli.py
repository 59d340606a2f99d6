"""The ``grimace`` command line.

The root lives in ``edge`` so ``grimace score`` works on a Jetson with only the core install. Command
groups from ``train``/``convert``/``bench`` are mounted from modules that import nothing heavy at
import time (torch, ultralytics, transformers are imported inside the commands), so ``grimace --help``
stays fast and works without them; a command whose extra is missing says which extra to install.
"""

from __future__ import annotations

import importlib
import os
import sys

import typer

from edge import __version__


def _hide_flag_types() -> None:
    """Boolean flags in help without a ``<bool>`` type column (typer 0.2x's rich help prints one).

    ``--annotate/--no-annotate`` takes no value, so a type next to it reads as if it wanted one; the
    plain-text help already omits it. One patch here covers every command of the app.
    """
    from typer.core import TyperOption

    original = getattr(TyperOption, "display_type_rich", None)
    if original is None or getattr(original, "_grimace_flags_hidden", False):
        return

    def display_type_rich(self: TyperOption, ctx: object) -> str | None:
        if getattr(self, "is_flag", False) and self.metavar is None:
            return None
        return original(self, ctx)

    display_type_rich._grimace_flags_hidden = True  # type: ignore[attr-defined]
    TyperOption.display_type_rich = display_type_rich  # type: ignore[method-assign]


_hide_flag_types()

app = typer.Typer(
    name="grimace",
    help="Automated grimace-scale pain scoring for the edge (rats, mice, goats).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# (module, attribute, group name or None to merge its commands into the root, help)
_GROUPS: list[tuple[str, str, str | None, str]] = [
    ("train.cli_synth", "app", None, "Synthetic data generator."),
    ("train.cli_data", "app", "data", "Dataset tools: check, stats, importers."),
    ("train.teacher.cli", "app", "teacher", "Two-stage teacher: YOLO unit detector + ViT graders."),
    ("train.fused.cli", "train_app", "train", "Train the fused student model."),
    ("train.fused.cli", "distill_app", "distill", "Distillation data from the teacher."),
    ("train.fused.cli", "predict_app", None, "PyTorch prediction with the fused model."),
    ("convert.cli", "app", "convert", "Export to ONNX / TensorRT and check parity."),
    ("edge.cli_score", "app", None, "Score images, videos and cameras."),
    ("edge.scale.cli", "app", None, "Push a station's store to a central PostgreSQL."),
    ("edge.scale.cli", "central_app", "central", "Central PostgreSQL: station logins, row security."),
    ("edge.station.cli", "app", None, "Lab station web app."),
    ("train.evaluation.cli", "eval_app", "eval", "Validation statistics against human graders."),
    ("train.evaluation.cli", "cv_app", None, "Cross-validation."),
    ("train.evaluation.cli", "baseline_app", "baseline", "Baselines (goat VGG-16 + SVM)."),
    ("bench.cli", "app", None, "Benchmarks."),
    ("edge.cli_tools", "app", None, "Demo."),
    ("edge.cli_tools", "disk_app", "disk", "Disk guard: free space, rotation of old images."),
]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"grimace-edge {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Automated grimace-scale pain scoring for the edge."""


def _mount() -> None:
    for module, attr, name, help_ in _GROUPS:
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as e:
            # the package is not part of this install (e.g. an edge-only deployment)
            if e.name and module.startswith(e.name):
                continue
            raise
        sub = getattr(mod, attr, None)
        if sub is None:
            continue
        if name is None:
            app.add_typer(sub)
        else:
            app.add_typer(sub, name=name, help=help_)


_mount()


_OUR_PACKAGES = ("edge", "train", "convert", "bench")


def _is_user_error(exc: BaseException) -> bool:
    """Errors that describe bad input or a missing extra: print the message, not a traceback."""
    if isinstance(exc, (ValueError, FileNotFoundError, PermissionError, ImportError)):
        return True
    return type(exc).__module__.split(".")[0] in _OUR_PACKAGES


def main() -> None:
    """Console-script entry point.

    No command ends in a traceback. The project's own errors (bad file, wrong scale, missing extra...)
    end with ``error: <message>`` and exit status 2; an operating-system error (disk full, read-only
    folder, a name over the system's limits) or a database error is named the same way; anything else
    is reported as an internal error naming its type (exit 3) and ``Ctrl-C`` exits 130. Set
    ``GRIMACE_DEBUG=1`` to see the traceback instead.
    """
    try:
        app()
    except KeyboardInterrupt:
        if os.environ.get("GRIMACE_DEBUG"):
            raise
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as exc:
        if os.environ.get("GRIMACE_DEBUG"):
            raise
        if _is_user_error(exc) or isinstance(exc, (OSError, MemoryError)) or _is_sqlite_error(exc):
            print(f"error: {_describe(exc)}", file=sys.stderr)
            code = 2
        else:
            print(f"internal error: {type(exc).__name__}: {exc}", file=sys.stderr)
            print("(please report it; GRIMACE_DEBUG=1 shows where it happened)", file=sys.stderr)
            code = 3
        print("(set GRIMACE_DEBUG=1 for the traceback)", file=sys.stderr)
        sys.exit(code)


def _is_sqlite_error(exc: BaseException) -> bool:
    return type(exc).__module__ == "sqlite3"


def _describe(exc: BaseException) -> str:
    """The message of an error, with the file an ``OSError`` concerns."""
    if isinstance(exc, MemoryError):
        return "out of memory"
    if isinstance(exc, OSError) and exc.strerror and exc.filename:
        return f"{exc.filename}: {exc.strerror}"
    return str(exc) or type(exc).__name__


if __name__ == "__main__":
    main()
