"""Provenance of an evaluation run: software versions, file hashes, date, command line, device.

Every report (``report.json``/``report.html`` of ``eval grades``, ``cv_report.json``,
``baseline_report.json``, the saved SVM's ``svm_model.json``) carries this block, so a figure in a
paper can be traced to the exact model file, data and software that produced it.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import platform
import shlex
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

PACKAGES = (
    "grimace-edge",
    "numpy",
    "scipy",
    "pandas",
    "pingouin",
    "statsmodels",
    "scikit-learn",
    "matplotlib",
    "Jinja2",
    "opencv-python",
    "torch",
    "torchvision",
)
"""Distributions whose versions are recorded (those installed)."""


def versions(packages: Iterable[str] = PACKAGES) -> dict[str, str]:
    """Python and the installed versions of ``packages`` (missing ones left out)."""
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in packages:
        with contextlib.suppress(md.PackageNotFoundError):
            out[pkg] = md.version(pkg)
    return out


def sha256_file(path: str | Path) -> str:
    """SHA-256 hex digest of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def path_hash(path: str | Path) -> str:
    """SHA-256 of a file, or of a folder's sorted relative paths and file bytes (model folders)."""
    p = Path(path)
    if p.is_file():
        return sha256_file(p)
    h = hashlib.sha256()
    for f in sorted(x for x in p.rglob("*") if x.is_file()):
        h.update(f.relative_to(p).as_posix().encode())
        h.update(sha256_file(f).encode())
    return h.hexdigest()


def data_hash(paths: Iterable[str | Path]) -> str:
    """One SHA-256 over the given input files, in the given order (names and bytes)."""
    h = hashlib.sha256()
    for p in paths:
        p = Path(p)
        h.update(p.name.encode())
        h.update(path_hash(p).encode() if p.exists() else b"missing")
    return h.hexdigest()


def provenance(
    *,
    model: str | Path | None = None,
    data: Iterable[str | Path] = (),
    argv: list[str] | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The provenance block.

    Args:
        model: The model artifact (file or folder) whose output is evaluated; ``None`` when not given.
        data: The input files (predictions, grader files, subjects.csv, labels, videos...).
        argv: Command line (default ``sys.argv``).
        extra: More fields (device, backbone weights...).

    Returns:
        ``{"date_utc", "command_line", "software", "model", "model_sha256", "data_files",
        "data_sha256", **extra}``.
    """
    data = [Path(p) for p in data]
    argv = list(sys.argv if argv is None else argv)
    if argv:
        argv[0] = Path(argv[0]).name
        if argv[0] in ("cli.py", "__main__.py"):  # python -m edge.cli ...
            argv[0] = "grimace"
    out: dict[str, Any] = {
        "date_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command_line": shlex.join(argv),
        "software": versions(),
        "model": str(model) if model else None,
        "model_sha256": path_hash(model) if model and Path(model).exists() else None,
        "data_files": [str(p) for p in data],
        "data_sha256": data_hash(data) if data else None,
    }
    out.update(extra or {})
    return out
