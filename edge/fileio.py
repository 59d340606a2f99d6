"""Crash-safe file writes shared by every writer (tables, images, sidecars).

A file is written to a temporary name in its own folder, flushed, fsynced and renamed over the target
(then the folder is fsynced): a reader, a crash or a power cut sees the old file or the complete new
one, never a torn one. New files get the usual ``0644`` permissions less the process umask (a
temporary file from :func:`tempfile.mkstemp` would otherwise stay ``0600``).
"""

from __future__ import annotations

import os
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
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
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
