"""A folder of hostile inputs mixed with good ones, for ``grimace score`` (issue 16).

Build it, score it and tally the outcome::

    python -m tests.hostile_corpus /tmp/hostile --model edge/assets/demo_model.onnx

prints: good inputs scored, bad inputs named (in ``errors.csv`` and on stderr), tracebacks seen, and
the tables written. ``tests/test_hostile_corpus.py`` runs it on the tiny test model.
"""

from __future__ import annotations

import argparse
import csv
import os
import struct
import subprocess
import sys
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
"""The command runs here, with this checkout's code first on the path."""

TABLES = (
    "frames.csv",
    "frames.xlsx",
    "frames.jsonl",
    "summary_by_animal.csv",
    "summary_by_session.csv",
    "errors.csv",
    "run.json",
)


@dataclass
class Corpus:
    """What was built: inputs to pass on the command line, and which should score or be named."""

    root: Path
    args: list[str] = field(default_factory=list)
    good: dict[str, str] = field(default_factory=dict)
    """Source path -> kind, for inputs that must be scored (one row each, or rows for a video)."""
    bad: dict[str, str] = field(default_factory=dict)
    """Source path -> kind, for inputs that must be reported by name."""


def _png_chunk(t: bytes, d: bytes) -> bytes:
    return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))


def _png_claiming(w: int, h: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + _png_chunk(b"IEND", b"")
    )


def _jpeg_claiming(jpg: bytes, w: int, h: int) -> bytes:
    b = bytearray(jpg)
    i = b.find(b"\xff\xc0")
    b[i + 5 : i + 9] = struct.pack(">HH", h, w)
    return bytes(b)


def build(root: Path, face: np.ndarray | None = None, video_frames: int = 20) -> Corpus:
    """Write the corpus under ``root`` (``root/inputs`` plus a few paths named on the command line)."""
    if face is None:
        from edge.scales import RGS
        from tests.tiny_onnx import face_image

        face = face_image(RGS)
    c = Corpus(root)
    d = root / "inputs"
    d.mkdir(parents=True, exist_ok=True)
    h, w = face.shape[:2]

    def good(name: str, data: bytes | None, kind: str, arr: np.ndarray | None = None) -> Path:
        p = d / name
        p.parent.mkdir(parents=True, exist_ok=True)
        if arr is not None:
            assert cv2.imwrite(str(p), arr), name
        else:
            p.write_bytes(data or b"")
        c.good[str(p)] = kind
        return p

    def bad(name: str, data: bytes, kind: str) -> Path:
        p = d / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        c.bad[str(p)] = kind
        return p

    jpg = cv2.imencode(".jpg", face)[1].tobytes()
    png = cv2.imencode(".png", face)[1].tobytes()
    # ---- good, some of them odd
    good("rat1/a.jpg", jpg, "jpeg")
    good("rat1/b.png", png, "png")
    good("rat2/gray.png", None, "grayscale", cv2.cvtColor(face, cv2.COLOR_BGR2GRAY))
    good("rat2/deep16.png", None, "16-bit", face.astype(np.uint16) * 257)
    good("rat2/rgba.png", None, "alpha", np.dstack([face, np.full((h, w), 200, np.uint8)]))
    good("rat3/float.tiff", None, "float32 TIFF", face.astype(np.float32) / 255.0)
    good("rat3/one_pixel.png", None, "1x1", face[:1, :1])
    good("rat3/c.bmp", None, "bmp", face)
    good("rat3/d.webp", None, "webp", face)
    good("rat3/=cmd|' -C calc'!A0.jpg", jpg, "formula-like name")
    good("rat3/+SUM(1;1).jpg", jpg, "formula-like name (+)")
    good("rat3/@name.jpg", jpg, "formula-like name (@)")
    good("rat3/-rf.jpg", jpg, "name like an option")
    good("rat3/new\nline.jpg", jpg, "newline in the name")
    good("rat3/ünïcødé 名前.jpg", jpg, "unicode name")
    good("rat3/" + "L" * 200 + ".jpg", jpg, "200-character name")
    part_nan = face[..., 0].astype(np.float32) / 255.0
    part_nan[:5, :5] = np.nan
    good("rat3/some_nan.tiff", None, "float with some NaN", part_nan)
    vw = cv2.VideoWriter(str(d / "rat4.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (w, h))
    for _ in range(video_frames):
        vw.write(face)
    vw.release()
    c.good[str(d / "rat4.mp4")] = "video"

    # ---- bad files inside the folder
    rng = np.random.default_rng(0)
    bad("bad/empty.jpg", b"", "zero bytes")
    bad("bad/text.jpg", b"this is a text file, not an image\n", "text named .jpg")
    bad("bad/random.png", rng.integers(0, 256, 3000, dtype=np.uint8).tobytes(), "random bytes")
    bad("bad/truncated.jpg", jpg[: len(jpg) // 3], "truncated JPEG")
    bad("bad/truncated.png", png[: len(png) // 2], "truncated PNG")
    bad("bad/header_only.jpg", jpg[:200], "JPEG header only")
    bad("bad/soi_eoi.jpg", b"\xff\xd8\xff\xd9", "JPEG with no frame")
    bad("bad/huge_100k.png", _png_claiming(100000, 100000), "PNG header claims 100000x100000")
    bad("bad/huge_65500.jpg", _jpeg_claiming(jpg, 65500, 65500), "JPEG header claims 65500x65500")
    bad(
        "bad/huge.bmp",
        b"BM" + bytes(12) + struct.pack("<Iii", 40, 60000, 60000) + bytes(64),
        "BMP claims 60000^2",
    )
    tif = bytearray(cv2.imencode(".tiff", face)[1].tobytes())
    bad("bad/huge.tiff", _tiff_claiming(bytes(tif), 70000, 70000), "TIFF claims 70000^2")
    b = bytearray(jpg)
    sos = b.find(b"\xff\xda")
    b[sos + 200 : sos + 400] = rng.integers(0, 255, 200, dtype=np.uint8).tobytes()
    bad("bad/corrupt_scan.jpg", bytes(b), "corrupt JPEG scan")
    nan = np.full((h, w), np.nan, np.float32)
    bad("bad/all_nan.tiff", cv2.imencode(".tiff", nan)[1].tobytes(), "all-NaN float TIFF")
    bad(
        "bad/all_inf.tiff",
        cv2.imencode(".tiff", np.full((h, w), np.inf, np.float32))[1].tobytes(),
        "all-inf TIFF",
    )
    bad("bad/gif_as.jpg", b"GIF89a" + bytes(100), "GIF named .jpg")
    bad("bad/cut_header.webp", b"RIFF\x10\x00\x00\x00WEBPVP8 ", "WebP header cut off")
    bad("bad/cut.tiff", b"II*\x00\xff\xff\x00\x00", "TIFF directory past the end")
    bad("bad/empty.mp4", b"", "zero-byte video")
    bad("bad/text.mp4", b"not a video at all\n" * 10, "text named .mp4")
    full = (d / "rat4.mp4").read_bytes()
    bad("bad/truncated.mp4", full[: len(full) // 2], "truncated video")
    # ---- entries that are not regular files, named in the folder (skipped) or on the command line
    os.mkfifo(d / "bad" / "fifo.jpg")
    (d / "bad" / "dangling.jpg").symlink_to(d / "nowhere.jpg")
    (d / "bad" / "loop.jpg").symlink_to(d / "bad" / "loop.jpg")
    for name, kind in (
        ("fifo.jpg", "FIFO in the folder"),
        ("dangling.jpg", "dangling symlink"),
        ("loop.jpg", "symlink loop"),
    ):
        c.bad[str(d / "bad" / name)] = kind
    (d / "bad" / "folder.jpg").mkdir()  # a folder named like an image: traversed, nothing to report
    outside = root / "named"
    outside.mkdir(exist_ok=True)
    os.mkfifo(outside / "cam.jpg")
    (outside / "notes.txt").write_text("not an image\n")
    c.args = [
        str(d),
        str(d / "rat1"),
        str(d / "rat1" / "a.jpg"),
        "./" + os.path.relpath(d / "rat1" / "a.jpg"),
    ]
    for p, kind in (
        (outside / "cam.jpg", "FIFO named on the command line"),
        (outside / "notes.txt", "unsupported extension"),
        (outside / ("n" * 300 + ".jpg"), "name over NAME_MAX"),
        (outside / "missing.jpg", "missing file"),
        (outside / "/".join(["d" * 200] * 25) / "x.jpg", "path over PATH_MAX"),
    ):
        c.args.append(str(p))
        c.bad[str(p)] = kind
    return c


def synth_face(seed: int = 0) -> np.ndarray:
    """A synthetic frontal rat face (``train.synth``, needs the train extra), 320 x 320 BGR."""
    from edge.scales import RGS
    from train.synth.faces import sample_morphology
    from train.synth.render import render_frontal

    rng = np.random.default_rng(seed)
    sev = {u.name: [0.5] * 4 for u in RGS.units}
    return render_frontal(RGS, sample_morphology("rat", rng), sev, rng, (320, 320)).image


def _tiff_claiming(data: bytes, w: int, h: int) -> bytes:
    b = bytearray(data)
    big = b[:2] == b"MM"
    e = "big" if big else "little"
    off = int.from_bytes(b[4:8], e)
    n = int.from_bytes(b[off : off + 2], e)
    for k in range(n):
        p = off + 2 + 12 * k
        tag = int.from_bytes(b[p : p + 2], e)
        if tag in (256, 257):
            b[p + 2 : p + 4] = (4).to_bytes(2, e)
            b[p + 4 : p + 8] = (1).to_bytes(4, e)
            b[p + 8 : p + 12] = (w if tag == 256 else h).to_bytes(4, e)
    return bytes(b)


@dataclass
class Tally:
    """Outcome of one scoring run over the corpus."""

    returncode: int
    good_scored: list[str]
    good_missing: list[str]
    bad_named: list[str]
    bad_unnamed: list[str]
    tracebacks: int
    tables: list[str]
    rows: int
    duplicates: int
    stderr: str

    def summary(self) -> str:
        return (
            f"exit {self.returncode}; good inputs scored {len(self.good_scored)} of "
            f"{len(self.good_scored) + len(self.good_missing)} ({self.rows} frame rows, {self.duplicates} "
            f"duplicate rows); bad inputs named {len(self.bad_named)} of "
            f"{len(self.bad_named) + len(self.bad_unnamed)}; tracebacks {self.tracebacks}; "
            f"tables written: {', '.join(self.tables)}"
        )


def score(c: Corpus, model: Path, out: Path, *extra: str) -> Tally:
    """Run ``python -m edge.cli score`` over the corpus and tally what happened."""
    cmd = [sys.executable, "-m", "edge.cli", "score", *c.args, "--model", str(model), "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    r = subprocess.run(
        [*cmd, "--no-progress", *extra], capture_output=True, text=True, timeout=1800, cwd=REPO, env=env
    )
    rows = (
        list(csv.DictReader((out / "frames.csv").open(newline=""))) if (out / "frames.csv").exists() else []
    )
    errors = (
        list(csv.DictReader((out / "errors.csv").open(newline=""))) if (out / "errors.csv").exists() else []
    )
    scored = {row["source"] for row in rows}
    named = {e["source"] for e in errors}
    stderr = r.stderr
    return Tally(
        returncode=r.returncode,
        good_scored=[s for s in c.good if s in scored],
        good_missing=[s for s in c.good if s not in scored],
        bad_named=[s for s in c.bad if s in named and Path(s).name[:40] in stderr],
        bad_unnamed=[s for s in c.bad if not (s in named and Path(s).name[:40] in stderr)],
        tracebacks=(r.stdout + r.stderr).count("Traceback"),
        tables=[t for t in TABLES if (out / t).is_file()],
        rows=len(rows),
        duplicates=len(rows) - len({(row["source"], row["frame_index"]) for row in rows}),
        stderr=stderr,
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.hostile_corpus", description=__doc__.splitlines()[0])
    ap.add_argument("root", type=Path, help="new folder for the corpus and the results")
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--fps", default="2")
    ap.add_argument(
        "--face",
        choices=("synth", "blob"),
        default="synth",
        help="good images: a synthetic rat (train.synth; known to the demo model) or colour blobs",
    )
    args = ap.parse_args(argv)
    c = build(args.root, synth_face() if args.face == "synth" else None)
    t = score(c, args.model, args.root / "out", "--fps", args.fps)
    print(t.summary())
    for s in t.good_missing:
        print(f"  NOT SCORED: {s!r} ({c.good[s]})")
    for s in t.bad_unnamed:
        print(f"  NOT NAMED: {s!r} ({c.bad[s]})")
    print("bad inputs and what grimace said:")
    errors = {
        e["source"]: e["error"] for e in csv.DictReader((args.root / "out" / "errors.csv").open(newline=""))
    }
    for s, kind in c.bad.items():
        print(f"  {kind:36s} -> {errors.get(s, '(not in errors.csv)')[:110]}")
    return 0 if not t.tracebacks and not t.bad_unnamed and not t.good_missing else 1


if __name__ == "__main__":
    sys.exit(main())
