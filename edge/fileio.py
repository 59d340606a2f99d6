"""Crash-safe file writes shared by every writer (tables, images, sidecars).

A file is written to a temporary name in its own folder, flushed, fsynced and renamed over the target
(then the folder is fsynced): a reader, a crash or a power cut sees the old file or the complete new
one, never a torn one. New files get the usual ``0644`` permissions less the process umask (a
temporary file from :func:`tempfile.mkstemp` would otherwise stay ``0600``).
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

import numpy as np

DEFAULT_MODE = 0o644


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def fsync_dir(folder: Path) -> None:
    """fsync a folder so a rename in it is durable (no-op where unsupported)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | Path, data: bytes, mode: int = DEFAULT_MODE) -> Path:
    """Write ``data`` to ``path`` atomically (temp file + fsync + rename + folder fsync).

    Args:
        path: Target file; its folder is created.
        data: The bytes.
        mode: Permission bits before the umask is applied.

    Raises:
        OSError: The write failed (disk full, read-only folder...); the target is left as it was and
            no temporary file remains.
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name[:100]}.", suffix=".tmp", dir=p.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode & ~_umask())
        os.replace(tmp, p)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError) and e.filename is None:
            e.filename = str(p)  # name the target, not the temporary file
        raise
    fsync_dir(p.parent)
    return p


def atomic_write_text(path: str | Path, text: str, mode: int = DEFAULT_MODE) -> Path:
    """:func:`atomic_write_bytes` of UTF-8 text."""
    return atomic_write_bytes(path, text.encode("utf-8"), mode)


def atomic_write_image(
    path: str | Path, image: np.ndarray, jpeg_quality: int = 95, mode: int = DEFAULT_MODE
) -> Path:
    """Encode ``image`` (BGR uint8 ``(H, W, 3)``) by the path's extension and write it atomically.

    Raises:
        OSError: The image could not be encoded or written.
    """
    import cv2

    p = Path(path)
    params = [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality] if p.suffix.lower() in (".jpg", ".jpeg") else []
    ok, buf = cv2.imencode(p.suffix or ".jpg", image, params)
    if not ok:
        raise OSError(f"{p}: could not encode image")
    return atomic_write_bytes(p, buf.tobytes(), mode)


SAFE_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
"""Names that become files or folders (session ids, subject ids, unit names): a letter or digit, then
letters, digits, ``.``, ``_`` or ``-`` (128 characters at most). No ``/``, no ``..``, no leading dot
or dash, nothing a shell or a file system treats specially."""

_SAFE_NAME = re.compile(SAFE_NAME_PATTERN)


def check_safe_name(name: str, what: str = "name") -> str:
    """Return ``name`` when it matches :data:`SAFE_NAME_PATTERN`.

    Raises:
        ValueError: The name could leave its folder or is not portable (the message names it).
    """
    if not isinstance(name, str) or not _SAFE_NAME.match(name):
        raise ValueError(
            f"{what} {name!r} cannot be used as a file or folder name: use letters, digits, '.', '_' "
            "or '-', starting with a letter or digit (at most 128 characters)"
        )
    return name


def path_under(root: str | Path, *parts: str | Path) -> Path:
    """``root / parts...``, refused when it would resolve outside ``root`` (``..``, an absolute part,
    a symlink pointing elsewhere).

    Raises:
        ValueError: The path leaves ``root`` (the message names both).
    """
    base = Path(root)
    p = base.joinpath(*parts)
    r_base, r_p = base.resolve(), p.resolve()
    if r_p != r_base and r_base not in r_p.parents:
        raise ValueError(f"output path {p} would lie outside the output folder {base}; refused")
    return p
