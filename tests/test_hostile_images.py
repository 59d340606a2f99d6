"""Hostile image files (issue 16): header size limits before decoding, corrupt JPEG scans, all-NaN
float images, FIFOs and over-long names. Each case crashed, hung or was scored silently before."""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.sources import (
    ImageLimits,
    ItemError,
    SourceError,
    check_image_header,
    expand_inputs,
    image_header,
    iter_inputs,
    read_image,
    to_bgr8,
)


def png_claiming(w: int, h: int) -> bytes:
    """A small, well-formed PNG whose IHDR states ``w`` x ``h`` (the data is a few bytes)."""
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    chunk = lambda t, d: struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))  # noqa: E731
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def jpeg_claiming(w: int, h: int) -> bytes:
    """A real JPEG with its SOF0 width/height rewritten."""
    _ok, buf = cv2.imencode(".jpg", np.zeros((16, 16, 3), np.uint8))
    b = bytearray(buf.tobytes())
    i = b.find(b"\xff\xc0")
    b[i + 5 : i + 9] = struct.pack(">HH", h, w)
    return bytes(b)


@pytest.mark.parametrize(("w", "h"), [(100000, 100000), (65500, 65500)])
def test_header_claiming_huge_size_is_refused_before_decoding(tmp_path: Path, w: int, h: int) -> None:
    # before: cv2.error (libpng/libjpeg limit) escaped from read_image and ended `grimace score`
    for name, data in (
        ("big.png", png_claiming(w, h)),
        ("big.jpg", jpeg_claiming(min(w, 65535), min(h, 65535))),
    ):
        p = tmp_path / name
        p.write_bytes(data)
        with pytest.raises(SourceError, match=r"over the limit of 100,000,000 \(GRIMACE_MAX_PIXELS") as e:
            read_image(p)
        assert str(p) in str(e.value)


def test_pixel_limit_is_configurable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((40, 60, 3), np.uint8))
    assert read_image(tmp_path / "a.png").shape == (40, 60, 3)
    with pytest.raises(SourceError, match=r"60 x 40 = 2,400 pixels, over the limit of 1,000"):
        read_image(tmp_path / "a.png", ImageLimits(max_pixels=1000))
    monkeypatch.setenv("GRIMACE_MAX_PIXELS", "2000")
    with pytest.raises(SourceError, match="limit of 2,000"):
        read_image(tmp_path / "a.png")
    monkeypatch.setenv("GRIMACE_MAX_PIXELS", "lots")
    with pytest.raises(ValueError, match="GRIMACE_MAX_PIXELS"):
        ImageLimits.from_env()


def test_header_parser_agrees_with_the_decoder(tmp_path: Path) -> None:
    from PIL import Image

    img = np.random.default_rng(1).integers(0, 255, (37, 53, 3), np.uint8)
    for ext in (".jpg", ".png", ".bmp", ".tiff", ".webp"):
        ok, buf = cv2.imencode(ext, img)
        assert ok
        assert image_header(buf.tobytes())[1:] == (53, 37), ext
    Image.fromarray(img).save(tmp_path / "l.webp", lossless=True)
    Image.fromarray(img).save(tmp_path / "x.tiff", compression="tiff_lzw")
    Image.fromarray(img).save(tmp_path / "p.jpg", progressive=True)
    for name in ("l.webp", "x.tiff", "p.jpg"):
        assert image_header((tmp_path / name).read_bytes())[1:] == (53, 37), name
    assert image_header(b"hello world") is None
    with pytest.raises(SourceError, match="not JPEG, PNG"):
        check_image_header(b"hello world", "x.png")


def test_corrupt_jpeg_scan_is_reported_not_scored(tmp_path: Path) -> None:
    # before: libjpeg printed "Corrupt JPEG data" and the half-grey image was scored
    rng = np.random.default_rng(0)
    _ok, buf = cv2.imencode(".jpg", (rng.random((240, 320, 3)) * 255).astype(np.uint8))
    b = bytearray(buf.tobytes())
    sos = b.find(b"\xff\xda")
    b[sos + 200 : sos + 400] = rng.integers(0, 255, 200, dtype=np.uint8).tobytes()
    (tmp_path / "scan.jpg").write_bytes(bytes(b))
    with pytest.raises(SourceError, match=r"scan\.jpg: corrupt JPEG data \(Corrupt JPEG data"):
        read_image(tmp_path / "scan.jpg")
    (tmp_path / "good.jpg").write_bytes(buf.tobytes())
    assert read_image(tmp_path / "good.jpg").shape == (240, 320, 3)


def test_all_nan_float_image_is_reported(tmp_path: Path) -> None:
    # before: nan_to_num turned it into a black frame that was scored
    nan = np.full((20, 30), np.nan, np.float32)
    assert cv2.imwrite(str(tmp_path / "nan.tiff"), nan)
    with pytest.raises(SourceError, match="every pixel is NaN or infinite"):
        read_image(tmp_path / "nan.tiff")
    with pytest.raises(SourceError, match="NaN or infinite"):
        to_bgr8(np.full((4, 4, 3), np.inf))
    part = np.full((4, 4), 0.5, np.float32)
    part[0, 0] = np.nan
    out = to_bgr8(part)
    assert out[0, 0, 0] == 0 and out[1, 1, 0] == 128


def test_odd_dtypes_and_layouts() -> None:
    assert to_bgr8(np.ones((3, 3), bool))[0, 0, 0] == 255
    assert to_bgr8(np.full((3, 3), 2**32 - 1, np.uint32))[0, 0, 0] == 255
    assert to_bgr8(np.full((3, 3), 0.5, np.float16))[0, 0, 0] == 128
    assert to_bgr8(np.zeros((1, 1, 1), np.uint8)).shape == (1, 1, 3)
    for bad in (np.zeros((3, 3, 2), np.uint8), np.zeros((0, 3), np.uint8), np.zeros(5, np.uint8)):
        with pytest.raises(SourceError, match="unsupported image layout"):
            to_bgr8(bad)
    with pytest.raises(SourceError, match="unsupported pixel type"):
        to_bgr8(np.zeros((3, 3), np.complex64))


def test_fifo_and_long_names_are_reported_not_hung(tmp_path: Path) -> None:
    # before: a FIFO named on the command line blocked read_bytes forever; a name over NAME_MAX
    # raised OSError(ENAMETOOLONG) out of expand_inputs
    fifo = tmp_path / "cam.jpg"
    os.mkfifo(fifo)
    long = tmp_path / ("x" * 300 + ".jpg")
    deep = tmp_path / "/".join(["d" * 250] * 20) / "a.jpg"
    files, errors = expand_inputs([fifo, long, deep])
    assert files == []
    msgs = {Path(e.source).name[:5]: e.message for e in errors}
    assert "FIFO" in msgs["cam.j"]
    assert "too long" in msgs["xxxxx"].lower()
    with pytest.raises(SourceError, match="not a regular file"):
        read_image(fifo)
    # inside a folder: a FIFO or a broken link named like an image is reported, the images are read
    d = tmp_path / "d"
    d.mkdir()
    os.mkfifo(d / "pipe.png")
    (d / "gone.jpg").symlink_to(d / "nowhere.jpg")
    (d / "sub.jpg").mkdir()  # a folder named like an image: its own files are listed
    cv2.imwrite(str(d / "a.png"), np.zeros((8, 8, 3), np.uint8))
    cv2.imwrite(str(d / "sub.jpg" / "b.png"), np.zeros((8, 8, 3), np.uint8))
    items = list(iter_inputs([d]))
    frames = sorted(Path(i.source).name for i in items if not isinstance(i, ItemError))
    errors = {Path(i.source).name: i.message for i in items if isinstance(i, ItemError)}
    assert frames == ["a.png", "b.png"]
    assert set(errors) == {"pipe.png", "gone.jpg"}
    assert "FIFO" in errors["pipe.png"] and "broken symbolic link" in errors["gone.jpg"]
