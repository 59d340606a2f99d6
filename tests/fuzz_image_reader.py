"""Mutation fuzzer for the image reader (``edge.sources.decode_image``), issue 16.

Run for two minutes and print how many cases ran (a crash, hang or unexpected exception stops it
with the input saved under ``--crashes``)::

    python -m tests.fuzz_image_reader --seconds 120

Cases: the seed corpus (every format of ``IMAGE_EXTS`` in 8/16-bit, gray/colour/alpha, float TIFF
with NaN, progressive JPEG, 1 x 1) mutated by bit flips, random bytes, cuts, repeated or deleted
slices and rewritten width/height fields. The reader must return uint8 ``(H, W, 3)`` or raise
:class:`~edge.sources.SourceError`. ``tests/test_fuzz_images.py`` runs the same checks briefly
under Hypothesis.
"""

from __future__ import annotations

import argparse
import random
import struct
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from edge.sources import ImageLimits, SourceError, decode_image

SEED_FORMATS = [".jpg", ".png", ".bmp", ".tiff", ".webp"]
LIMITS = ImageLimits(max_pixels=4_000_000, max_bytes=1 << 24)
"""Small limits keep each case fast (a header may claim up to 4 Mpx)."""


def seed_corpus() -> list[bytes]:
    """Valid files of every format, depth and layout the reader supports."""
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (23, 31, 3), np.uint8)
    arrays = [
        base,
        base[..., 0],
        np.dstack([base, base[..., :1]]),
        (base.astype(np.uint16) * 257),
        base[:1, :1],
    ]
    out = []
    for ext in SEED_FORMATS:
        for a in arrays:
            try:
                ok, buf = cv2.imencode(ext, a)
            except cv2.error:
                continue
            if ok:
                out.append(buf.tobytes())
    f = rng.random((9, 11)).astype(np.float32)
    f[0, :3] = np.nan
    ok, buf = cv2.imencode(".tiff", f)
    if ok:
        out.append(buf.tobytes())
    ok, buf = cv2.imencode(".jpg", base, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])
    out.append(buf.tobytes())
    ok, buf = cv2.imencode(".jpg", base, [cv2.IMWRITE_JPEG_RST_INTERVAL, 2])
    out.append(buf.tobytes())
    return out


def _rewrite_size(b: bytearray, rnd: random.Random) -> None:
    """Rewrite a width/height field where the format keeps it (the lie a hostile header tells)."""
    w, h = rnd.choice([0, 1, 65535, 100000, 2**31 - 1, rnd.randrange(1, 5000)]), rnd.randrange(0, 70000)
    if b[:8] == b"\x89PNG\r\n\x1a\n" and len(b) >= 24:
        b[16:24] = struct.pack(">II", w & 0xFFFFFFFF, h)
    elif b[:2] == b"\xff\xd8":
        i = b.find(b"\xff\xc0")
        i = i if i >= 0 else b.find(b"\xff\xc2")
        if i >= 0 and i + 9 <= len(b):
            b[i + 5 : i + 9] = struct.pack(">HH", h & 0xFFFF, w & 0xFFFF)
    elif b[:2] == b"BM" and len(b) >= 26:
        b[18:26] = struct.pack("<ii", w & 0x7FFFFFFF, -h if rnd.random() < 0.5 else h)


def mutate(data: bytes, rnd: random.Random) -> bytes:
    """One to four random mutations of ``data``."""
    b = bytearray(data)
    for _ in range(rnd.randint(1, 4)):
        if not b:
            break
        op = rnd.randrange(7)
        i = rnd.randrange(len(b))
        if op == 0:  # flip bits
            b[i] ^= 1 << rnd.randrange(8)
        elif op == 1:  # random bytes
            n = rnd.randint(1, 64)
            b[i : i + n] = bytes(rnd.randrange(256) for _ in range(n))
        elif op == 2:  # cut
            del b[i:]
        elif op == 3:  # delete a slice
            del b[i : i + rnd.randint(1, 256)]
        elif op == 4:  # repeat a slice
            j = min(len(b), i + rnd.randint(1, 256))
            b[i:i] = b[i:j] * rnd.randint(1, 3)
        elif op == 5:
            _rewrite_size(b, rnd)
        else:  # interesting values
            b[i] = rnd.choice([0x00, 0xFF, 0x7F, 0x80, 0xD9, 0xDA])
    return bytes(b)


def check_decode(data: bytes) -> bool:
    """The property: uint8 ``(H, W, 3)`` or :class:`SourceError`; anything else propagates.

    Returns:
        Whether an image came out.
    """
    try:
        out = decode_image(data, "fuzz", LIMITS)
    except SourceError:
        return False
    assert isinstance(out, np.ndarray) and out.dtype == np.uint8, out.dtype
    assert out.ndim == 3 and out.shape[2] == 3 and out.shape[0] > 0 and out.shape[1] > 0, out.shape
    return True


def fuzz(seconds: float, seed: int = 0, crashes: Path | None = None) -> tuple[int, int]:
    """Fuzz for ``seconds``; returns ``(cases, decoded)`` (cases that gave an image)."""
    rnd = random.Random(seed)
    corpus = seed_corpus()
    n = decoded = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        data = mutate(rnd.choice(corpus), rnd) if rnd.random() < 0.95 else rnd.randbytes(rnd.randint(0, 512))
        try:
            decoded += check_decode(data)
        except BaseException:
            if crashes is not None:
                crashes.mkdir(parents=True, exist_ok=True)
                (crashes / f"crash-{seed}-{n}.bin").write_bytes(data)
            raise
        n += 1
    return n, decoded


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m tests.fuzz_image_reader", description=__doc__.splitlines()[0]
    )
    ap.add_argument("--seconds", type=float, default=120.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--crashes", type=Path, default=Path("fuzz-crashes"))
    args = ap.parse_args(argv)
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)  # the codecs' chatter, as in the CLI
    t0 = time.monotonic()
    n, decoded = fuzz(args.seconds, args.seed, args.crashes)
    dt = time.monotonic() - t0
    print(
        f"fuzzed edge.sources.decode_image for {dt:.0f}s: {n} cases, {decoded} decoded to an image, "
        f"{n - decoded} refused with SourceError, 0 crashes ({n / dt:.0f} cases/s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
