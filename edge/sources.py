"""Frame sources: image files and folders, video files, live cameras (USB/V4L2, GStreamer, RTSP).

Everything yields :class:`Frame` objects holding an 8-bit BGR image, whatever the file held:

* images (jpg/png/bmp/tiff/webp) are decoded with their EXIF orientation applied; grayscale is
  expanded to BGR, alpha is dropped, 16-bit is scaled to 8-bit (full 16-bit range, or the 12-bit range
  when no value exceeds 4095, as machine-vision cameras store it), float images are scaled from
  ``[0, 1]``.
* videos are sampled at ``fps`` frames per second of video time (``None`` = every frame): the first
  frame at or after each multiple of ``1/fps`` seconds. Frame times are the stream's timestamps, so
  variable-frame-rate phone video does not drift. With PyAV installed (the ``video`` extra) the
  reader decodes only what it keeps: a demux-only pass reads every packet's timestamp and keyframe
  flag; when ``fps`` is at or below the stream's keyframe rate only keyframes are decoded, each the
  nearest keyframe at or before the frame the rule asks for (less than one sampling period earlier;
  its own time and index are reported, the asked time is in ``meta["asked_s"]``); otherwise every
  frame is decoded with FFmpeg's threads and only the kept ones are converted to BGR. Portrait phone
  video (a display rotation in the file) is turned upright, as OpenCV's reader does. Without PyAV
  (or with ``GRIMACE_VIDEO_READER=opencv``) OpenCV grabs every frame and decodes the kept ones.
  ``GRIMACE_VIDEO_READER=gstreamer`` decodes files through a GStreamer pipeline (a Jetson's hardware
  decoder): :mod:`edge.gst_video`.
* cameras are read live; when the camera is lost the source reconnects with exponential backoff,
  reports each attempt through a callback and never raises.

A bad input (zero-byte, undecodable, truncated JPEG, unopenable or truncated video) becomes an
:class:`ItemError` naming the file; iteration continues with the next input.
"""

from __future__ import annotations

import bisect
import collections
import contextlib
import math
import os
import re
import stat
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

IMAGE_EXTS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})
VIDEO_EXTS = frozenset({".mp4", ".avi", ".mov", ".mkv", ".m4v", ".webm", ".mpg", ".mpeg", ".wmv"})


class SourceError(RuntimeError):
    """An input cannot be read; the message names it."""


@dataclass
class Frame:
    """One decoded frame.

    Attributes:
        image: BGR uint8 ``(H, W, 3)``.
        source: File path, video path or camera description.
        index: Frame index within its video/stream (0 for a still image).
        time_s: Video time (files) or seconds since the stream started (cameras).
        decode_s: Seconds spent reading and decoding this frame.
        meta: Extra fields (original dtype/channels, wall-clock time...).
    """

    image: np.ndarray
    source: str
    index: int = 0
    time_s: float = 0.0
    decode_s: float = 0.0
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """Display name: the file name, plus ``@frame`` for video frames."""
        base = Path(self.source).name if self.source else "frame"
        return base if self.meta.get("kind") == "image" else f"{base}@{self.index:06d}"


@dataclass
class ItemError:
    """A bad input that was skipped.

    Attributes:
        source: The file (or camera).
        message: What went wrong.
        frames_read: Frames already yielded from it before the error (videos).
    """

    source: str
    message: str
    frames_read: int = 0

    def __str__(self) -> str:
        return f"{self.source}: {self.message}"


# ---------------------------------------------------------------------------------------- images
DEFAULT_MAX_PIXELS = 100_000_000
"""Largest image (width × height, from the file's header) that is decoded: 100 megapixels, more than
any camera used beside a cage (a 12k × 8k frame is 96 Mpx); ``GRIMACE_MAX_PIXELS`` changes it."""
DEFAULT_MAX_IMAGE_BYTES = 1 << 30
"""Largest image file that is read into memory (1 GiB); ``GRIMACE_MAX_IMAGE_BYTES`` changes it."""


@dataclass(frozen=True)
class ImageLimits:
    """Limits checked before an image is decoded (a header that claims 100000 × 100000 pixels would
    otherwise allocate tens of gigabytes, or crash the decoder).

    Attributes:
        max_pixels: Largest width × height stated in the header.
        max_bytes: Largest file size.
    """

    max_pixels: int = DEFAULT_MAX_PIXELS
    max_bytes: int = DEFAULT_MAX_IMAGE_BYTES

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> ImageLimits:
        """Defaults, overridden by ``GRIMACE_MAX_PIXELS`` / ``GRIMACE_MAX_IMAGE_BYTES`` (integers).

        Raises:
            ValueError: A variable that is not a positive integer.
        """
        env = os.environ if environ is None else environ
        vals = {}
        for key, var, default in (
            ("max_pixels", "GRIMACE_MAX_PIXELS", DEFAULT_MAX_PIXELS),
            ("max_bytes", "GRIMACE_MAX_IMAGE_BYTES", DEFAULT_MAX_IMAGE_BYTES),
        ):
            raw = env.get(var, "").strip().replace("_", "")
            try:
                vals[key] = int(float(raw)) if raw else default
            except ValueError:
                raise ValueError(f"{var}={env.get(var)!r} is not a number") from None
            if vals[key] <= 0:
                raise ValueError(f"{var}={env.get(var)!r} must be > 0")
        return cls(**vals)


def _u16(b: bytes, o: int, big: bool) -> int:
    return int.from_bytes(b[o : o + 2], "big" if big else "little")


def _u32(b: bytes, o: int, big: bool) -> int:
    return int.from_bytes(b[o : o + 4], "big" if big else "little")


def image_header(data: bytes) -> tuple[str, int, int] | None:
    """Format and pixel size stated in an image file's header, read without decoding any pixel.

    Parses the containers of :data:`IMAGE_EXTS`: JPEG (the first SOFn segment), PNG (IHDR), BMP
    (BITMAPINFOHEADER or OS/2 core header), TIFF and BigTIFF (tags 256/257 of the first IFD) and WebP
    (VP8, VP8L, VP8X).

    Args:
        data: The file's bytes (only the header is looked at).

    Returns:
        ``(format, width, height)``; ``None`` when the bytes are none of these formats.

    Raises:
        SourceError: The format is recognised but its header is cut off or malformed (message without
            the file name).
    """
    n = len(data)
    if data[:3] == b"\xff\xd8\xff":
        i = 2
        while i + 4 <= n:
            if data[i] != 0xFF:
                raise SourceError("truncated or corrupt JPEG (no marker where a header segment should start)")
            marker = data[i + 1]
            if marker == 0xFF:  # fill byte
                i += 1
                continue
            if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # no length
                i += 2
                continue
            seg = _u16(data, i + 2, True)
            if seg < 2:
                raise SourceError("truncated or corrupt JPEG (header segment length < 2)")
            if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
                if i + 9 > n:
                    break
                return "jpeg", _u16(data, i + 7, True), _u16(data, i + 5, True)
            if marker in (0xDA, 0xD9):
                raise SourceError("truncated or corrupt JPEG (image data before any frame header)")
            i += 2 + seg
        raise SourceError("truncated or corrupt JPEG (header cut off before the frame header)")
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        if n < 24 or data[12:16] != b"IHDR":
            raise SourceError("PNG header is cut off or has no IHDR chunk first")
        return "png", _u32(data, 16, True), _u32(data, 20, True)
    if data[:2] == b"BM":
        if n < 26:
            raise SourceError("BMP header is cut off")
        dib = _u32(data, 14, False)
        if dib == 12:
            return "bmp", _u16(data, 18, False), _u16(data, 20, False)
        w = int.from_bytes(data[18:22], "little", signed=True)
        h = int.from_bytes(data[22:26], "little", signed=True)
        return "bmp", abs(w), abs(h)
    if data[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return ("tiff", *_tiff_size(data))
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        chunk = data[12:16]
        if chunk == b"VP8 " and n >= 30:
            return "webp", _u16(data, 26, False) & 0x3FFF, _u16(data, 28, False) & 0x3FFF
        if chunk == b"VP8L" and n >= 25:
            bits = _u32(data, 21, False)
            return "webp", (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
        if chunk == b"VP8X" and n >= 30:
            return (
                "webp",
                int.from_bytes(data[24:27], "little") + 1,
                int.from_bytes(data[27:30], "little") + 1,
            )
        raise SourceError("WebP header is cut off or of an unknown kind")
    return None


def _tiff_size(data: bytes) -> tuple[int, int]:
    big = data[:2] == b"MM"
    bigtiff = data[2:4] in (b"+\x00", b"\x00+")
    n = len(data)
    off = int.from_bytes(data[8:16], "big" if big else "little") if bigtiff else _u32(data, 4, big)
    cnt_size, entry, val_off = (8, 20, 12) if bigtiff else (2, 12, 8)
    if off + cnt_size > n:
        raise SourceError("TIFF header is cut off (first directory lies past the end of the file)")
    count = int.from_bytes(data[off : off + cnt_size], "big" if big else "little")
    dims: dict[int, int] = {}
    for k in range(min(count, 4096)):
        e = off + cnt_size + k * entry
        if e + entry > n:
            break
        tag, typ = _u16(data, e, big), _u16(data, e + 2, big)
        if tag in (256, 257):
            if typ == 3:
                dims[tag] = _u16(data, e + val_off, big)
            elif typ == 4:
                dims[tag] = _u32(data, e + val_off, big)
            elif typ == 16:  # BigTIFF LONG8
                dims[tag] = int.from_bytes(data[e + val_off : e + val_off + 8], "big" if big else "little")
    if 256 not in dims or 257 not in dims:
        raise SourceError("TIFF header has no image width/height (tags 256/257)")
    return dims[256], dims[257]


_STDERR_LOCK = threading.Lock()


@contextlib.contextmanager
def _decoder_messages() -> Iterator[list[str]]:
    """Collect what the C image decoders print on file descriptor 2 while the block runs.

    libjpeg reports a corrupt scan only as a warning on stderr ("Corrupt JPEG data: 4819 extraneous
    bytes before marker 0xd9", "Premature end of JPEG file") and still returns an image; catching
    those lines is the only way to know. The codecs' own chatter about a bad file is dropped (the
    file is reported by name instead); anything else is passed on to stderr.
    """
    lines: list[str] = []
    with _STDERR_LOCK:
        try:
            sys.stderr.flush()
            saved = os.dup(2)
        except (OSError, ValueError, AttributeError):  # no usable fd 2: decode without listening
            yield lines
            return
        with tempfile.TemporaryFile() as tmp:
            os.dup2(tmp.fileno(), 2)
            try:
                yield lines
            finally:
                os.dup2(saved, 2)
                os.close(saved)
                tmp.seek(0)
                text = tmp.read(1 << 16).decode("utf-8", "replace")
        other = []
        for line in text.splitlines():
            if _JPEG_WARNING.search(line):
                lines.append(line.strip())
            elif line.strip() and not _DECODER_NOISE.search(line):
                other.append(line)
        if other:  # not the decoders' (another thread wrote while we listened): pass it on
            sys.stderr.write("\n".join(other) + "\n")


_JPEG_WARNING = re.compile(r"Corrupt JPEG data|Premature end of JPEG|JPEG datastream|Invalid SOS")
"""libjpeg's warnings about the data of the file being decoded."""
_DECODER_NOISE = re.compile(r"^\s*(\[ ?(WARN|ERROR|INFO|DEBUG)[^\]]*\]|libpng |>|OpenCV\(|TIFF)|Warning")
"""What OpenCV's codecs print while failing on a bad file (the failure itself is reported by name)."""


def to_bgr8(img: np.ndarray, source: str = "<image>") -> np.ndarray:
    """Convert any decoded image to 8-bit 3-channel BGR.

    Args:
        img: ``(H, W)``, ``(H, W, 1)``, ``(H, W, 3)`` or ``(H, W, 4)`` of bool, any integer type or
            float. uint16 is scaled by its 12-bit or 16-bit range, wider unsigned types by their own
            range, signed types are clipped to ``[0, 255]``, float is scaled from ``[0, 1]`` when no
            finite value exceeds 1 (non-finite pixels become 0).
        source: For error messages.

    Returns:
        uint8 ``(H, W, 3)`` BGR.

    Raises:
        SourceError: Empty image, unsupported layout or pixel type, or a float image with no finite
            pixel (all NaN/inf: there is nothing to score).
    """
    if not isinstance(img, np.ndarray) or img.ndim not in (2, 3) or img.size == 0:
        shape = getattr(img, "shape", None)
        raise SourceError(f"{source}: unsupported image layout {shape}")
    if img.ndim == 3 and img.shape[2] not in (1, 3, 4):
        raise SourceError(f"{source}: unsupported image layout {img.shape} ({img.shape[2]} channels)")
    if img.dtype == np.bool_:
        img = img.astype(np.uint8) * 255
    elif img.dtype == np.uint16:
        peak = 4095.0 if int(img.max()) <= 4095 else 65535.0
        img = np.clip(np.rint(img.astype(np.float32) * (255.0 / peak)), 0, 255).astype(np.uint8)
    elif np.issubdtype(img.dtype, np.unsignedinteger) and img.dtype != np.uint8:
        peak = float(np.iinfo(img.dtype).max)
        img = np.clip(np.rint(img.astype(np.float64) * (255.0 / peak)), 0, 255).astype(np.uint8)
    elif np.issubdtype(img.dtype, np.floating):
        f = img.astype(np.float32, copy=False) if img.dtype != np.float64 else img
        finite = np.isfinite(f)
        if not finite.any():
            raise SourceError(f"{source}: every pixel is NaN or infinite (a float image with no data)")
        top = float(f[finite].max())
        scale = 255.0 if top <= 1.0 else 1.0
        with np.errstate(invalid="ignore", over="ignore"):
            img = np.clip(np.where(finite, f, 0.0) * scale, 0, 255).round().astype(np.uint8)
    elif np.issubdtype(img.dtype, np.signedinteger):
        img = np.clip(img, 0, 255).astype(np.uint8)
    elif img.dtype != np.uint8:
        raise SourceError(f"{source}: unsupported pixel type {img.dtype}")
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    c = img.shape[2]
    if c == 1:
        return cv2.cvtColor(np.ascontiguousarray(img[..., 0]), cv2.COLOR_GRAY2BGR)
    if c == 3:
        return np.ascontiguousarray(img)
    return cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_BGRA2BGR)


def _check_jpeg_complete(data: bytes, source: str) -> None:
    """A JPEG must end its last scan with an end-of-image marker (else it is truncated)."""
    last_sos = data.rfind(b"\xff\xda")
    if last_sos < 0 or data.rfind(b"\xff\xd9") < last_sos:
        raise SourceError(
            f"{source}: truncated or corrupt JPEG (no end-of-image marker after the image data)"
        )


def check_image_header(data: bytes, source: str, limits: ImageLimits | None = None) -> tuple[str, int, int]:
    """Check an image's header against the limits before anything is decoded.

    Returns:
        ``(format, width, height)`` from the header.

    Raises:
        SourceError: Unknown format, a malformed header, zero size, or more pixels than
            ``limits.max_pixels`` (the limit and its variable are named).
    """
    lim = limits or ImageLimits.from_env()
    try:
        head = image_header(data)
    except SourceError as e:
        raise SourceError(f"{source}: {e}") from None
    if head is None:
        raise SourceError(
            f"{source}: not a decodable image: not JPEG, PNG, BMP, TIFF or WebP (first bytes "
            f"{data[:8].hex()}); is it really {Path(source).suffix or 'an image'}?"
        )
    fmt, w, h = head
    if w <= 0 or h <= 0:
        raise SourceError(f"{source}: {fmt.upper()} header states an empty image ({w} x {h} pixels)")
    if w * h > lim.max_pixels:
        raise SourceError(
            f"{source}: {fmt.upper()} header states {w} x {h} = {w * h:,} pixels, over the limit of "
            f"{lim.max_pixels:,} (GRIMACE_MAX_PIXELS); not decoded"
        )
    return head


def read_image(path: str | Path, limits: ImageLimits | None = None) -> np.ndarray:
    """Read one image file as 8-bit BGR with EXIF orientation applied.

    The header is checked first (:func:`check_image_header`): a file over ``limits`` (default
    :meth:`ImageLimits.from_env`) is refused without decoding. A JPEG whose scan data the decoder
    reports as corrupt is refused, not scored from a half-grey picture.

    Raises:
        SourceError: Missing, not a regular file, empty, too large, undecodable, truncated or corrupt
            file (the message names it and says what is wrong).
    """
    p = Path(path)
    lim = limits or ImageLimits.from_env()
    try:
        st = p.stat()
        if not stat.S_ISREG(st.st_mode):
            raise SourceError(f"{p}: not a regular file (a folder, FIFO or device); not read")
        if st.st_size > lim.max_bytes:
            raise SourceError(
                f"{p}: file is {st.st_size:,} bytes, over the limit of {lim.max_bytes:,} "
                "(GRIMACE_MAX_IMAGE_BYTES); not read"
            )
        data = p.read_bytes()
    except OSError as e:
        raise SourceError(f"{p}: cannot read file: {e.strerror or e}") from None
    if not data:
        raise SourceError(f"{p}: empty file (0 bytes)")
    return decode_image(data, str(p), lim)


def decode_image(data: bytes, source: str = "<image>", limits: ImageLimits | None = None) -> np.ndarray:
    """:func:`read_image` of bytes already in memory (``source`` names them in messages)."""
    fmt, w, h = check_image_header(data, source, limits)
    if fmt == "jpeg":
        _check_jpeg_complete(data, source)
    buf = np.frombuffer(data, np.uint8)
    try:
        # ANYDEPTH keeps 16-bit, ANYCOLOR keeps grayscale; EXIF orientation is applied (not IMREAD_UNCHANGED)
        # libjpeg reports bad data only as a warning on stderr, libpng prints its errors there too;
        # the other decoders fail through OpenCV's logger (and are not serialised by the listening)
        listen = _decoder_messages() if fmt in ("jpeg", "png") else contextlib.nullcontext([])
        with listen as warnings:
            img = cv2.imdecode(buf, cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR)
    except cv2.error as e:
        msg = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        raise SourceError(f"{source}: the {fmt.upper()} decoder failed ({w} x {h} stated): {msg}") from None
    except MemoryError:
        raise SourceError(f"{source}: not enough memory to decode {w} x {h} pixels") from None
    if img is None or img.size == 0:
        raise SourceError(
            f"{source}: not a decodable image (first bytes {data[:8].hex()}, {fmt.upper()} header "
            f"{w} x {h}); corrupt, or not really {Path(source).suffix or fmt}?"
        )
    if fmt == "jpeg" and warnings:
        raise SourceError(f"{source}: corrupt JPEG data ({'; '.join(warnings)[:200]})")
    if fmt == "png" and b"IEND" not in data[-32:]:
        raise SourceError(f"{source}: truncated PNG (no IEND chunk)")
    return to_bgr8(img, source)


def iter_images(paths: Iterable[str | Path]) -> Iterator[Frame | ItemError]:
    """Frames of still images; bad files become :class:`ItemError`."""
    for path in paths:
        t0 = time.perf_counter()
        try:
            img = read_image(path)
        except SourceError as e:
            yield ItemError(str(path), str(e).removeprefix(f"{path}: "))
            continue
        yield Frame(img, str(path), 0, 0.0, time.perf_counter() - t0, {"kind": "image"})


# ---------------------------------------------------------------------------------------- videos
def video_info(path: str | Path) -> dict[str, float]:
    """``fps``, ``frames`` and ``duration_s`` of a video (``fps`` 0 when unknown).

    Raises:
        SourceError: When the file cannot be opened as a video.
    """
    if video_reader() == "pyav":
        container, stream = _av_open(path)
        try:
            rate = stream.average_rate or stream.guessed_rate
            fps = float(rate) if rate else 0.0
            n = float(stream.frames or 0)
        finally:
            container.close()
    else:
        cap = _open_video_file(path)
        try:
            fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
            n = float(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0.0)
        finally:
            cap.release()
    fps = fps if math.isfinite(fps) and fps > 0 else 0.0
    return {"fps": fps, "frames": n, "duration_s": n / fps if fps else 0.0}


def _open_video_file(path: str | Path) -> cv2.VideoCapture:
    p = Path(path)
    if not p.is_file():
        raise SourceError(f"{p}: no such file")
    if p.stat().st_size == 0:
        raise SourceError(f"{p}: empty file (0 bytes)")
    cap = cv2.VideoCapture(str(p), cv2.CAP_FFMPEG)
    if not cap.isOpened():
        cap.release()
        raise SourceError(f"{p}: cannot open as a video (corrupt, truncated or unsupported container/codec)")
    return cap


def _frame_time(cap: cv2.VideoCapture, index: int, vfps: float, last_t: float) -> float:
    """Time of the frame just grabbed, from the container's timestamps (variable-frame-rate phone
    video keeps its real times); the index over the nominal rate only where the container gives none
    (a timestamp that is missing or goes backwards)."""
    ms = cap.get(cv2.CAP_PROP_POS_MSEC)
    t = float(ms) / 1000.0 if ms is not None and math.isfinite(ms) else -1.0
    if t < 0 or t < last_t or (index > 0 and t == 0.0):
        t = index / vfps if vfps else max(last_t, 0.0)
    return t


def pace(video_s: float, realtime: float, wall0: float) -> float:
    """Sleep until ``video_s`` seconds of video (from the first frame) are due at ``realtime`` × the
    video's speed, counting from ``wall0`` (``time.perf_counter()`` at the first frame); returns the
    seconds slept (0 when ``realtime`` is 0 or the reader is late)."""
    if realtime <= 0:
        return 0.0
    lag = video_s / realtime - (time.perf_counter() - wall0)
    if lag <= 0:
        return 0.0
    time.sleep(lag)
    return lag


def sample_indices_due(t: float, next_t: float) -> bool:
    """Whether a frame at time ``t`` is due for sampling (small tolerance for float rounding)."""
    return t + 1e-6 >= next_t


# ------------------------------------------------------------------------ videos: reader choice
READER_ENV = "GRIMACE_VIDEO_READER"
"""Environment variable choosing the video reader: ``auto`` (PyAV when installed, else OpenCV),
``pyav``, ``opencv`` or ``gstreamer`` (files through a GStreamer pipeline, the Jetson's hardware
decoder by default: :mod:`edge.gst_video`; never chosen by ``auto``)."""


def _pyav() -> Any:
    """The ``av`` module (PyAV, the ``video`` extra), or ``None`` when it is not installed.

    Imported lazily so that ``grimace --help`` and image-only work never load FFmpeg twice.
    """
    try:
        import av
    except ImportError:
        return None
    return av


def video_reader(reader: str | None = None) -> str:
    """The video reader to use: ``"pyav"``, ``"opencv"`` or ``"gstreamer"``.

    Args:
        reader: ``"auto"``/``None`` (PyAV when installed, else OpenCV; the ``GRIMACE_VIDEO_READER``
            environment variable may force one), ``"pyav"``, ``"opencv"`` or ``"gstreamer"``.

    Raises:
        SourceError: ``"pyav"`` asked for but PyAV is not installed, ``"gstreamer"`` but this OpenCV
            has no GStreamer, or an unknown reader name.
    """
    import os

    choice = (reader or os.environ.get(READER_ENV) or "auto").strip().lower()
    if choice not in ("auto", "pyav", "opencv", "gstreamer"):
        raise SourceError(
            f"unknown video reader {choice!r} ({READER_ENV}); use auto, pyav, opencv or gstreamer"
        )
    if choice == "opencv":
        return "opencv"
    if choice == "gstreamer":
        from edge.gst_video import require_gstreamer

        require_gstreamer()
        return "gstreamer"
    if _pyav() is None:
        if choice == "pyav":
            raise SourceError(
                "the PyAV video reader needs the 'video' extra: pip install 'grimace-edge[video]'"
            )
        return "opencv"
    return "pyav"


# ------------------------------------------------------------------------------ videos: PyAV
@dataclass
class _StreamIndex:
    """What a demux-only pass over a video stream learns (no frame is decoded).

    Attributes:
        pts: Packet timestamps in decode order.
        key: Whether each packet (decode order) holds a keyframe.
        times: Presentation times in seconds, sorted (frame ``i`` is at ``times[i]``).
        rank: Packet timestamp -> frame index in presentation order.
        complete: Whether the demuxer reached the end without an error.
    """

    pts: list[int]
    key: list[bool]
    times: list[float]
    rank: dict[int, int]
    complete: bool

    @property
    def key_frames(self) -> list[int]:
        """Frame indices (presentation order) of the keyframes, sorted."""
        return sorted(self.rank[p] for p, k in zip(self.pts, self.key, strict=True) if k)

    @property
    def key_times(self) -> list[float]:
        return [self.times[i] for i in self.key_frames]


#: FFmpeg decoder threading for PyAV (``"AUTO"``: frame + slice threads). Measured on 1080p60 H.264
#: keyframes at ``--fps 1`` (``bench.bench_video --threads``): frame threads decode consecutive
#: keyframes side by side, so one thread is about 1.8x slower in wall time for the same CPU time.
AV_THREAD_TYPE = "AUTO"


def _av_open(path: str | Path) -> tuple[Any, Any]:
    """Open a video with PyAV: ``(container, video stream)``; raises :class:`SourceError`."""
    av = _pyav()
    p = Path(path)
    if not p.is_file():
        raise SourceError(f"{p}: no such file")
    if p.stat().st_size == 0:
        raise SourceError(f"{p}: empty file (0 bytes)")
    try:
        container = av.open(str(p), "r")
    except (av.FFmpegError, OSError, ValueError) as e:
        raise SourceError(
            f"{p}: cannot open as a video (corrupt, truncated or unsupported container/codec: {e})"
        ) from None
    if not container.streams.video:
        container.close()
        raise SourceError(f"{p}: cannot open as a video (the file holds no video stream)")
    stream = container.streams.video[0]
    stream.thread_type = AV_THREAD_TYPE  # FFmpeg releases the GIL while decoding
    return container, stream


def _av_index(path: str | Path) -> _StreamIndex | None:
    """Demux every packet of the video stream (reading, not decoding); ``None`` when the packets have
    no usable timestamps (then frames are counted while decoding)."""
    av = _pyav()
    container, stream = _av_open(path)
    pts: list[int] = []
    key: list[bool] = []
    complete = True
    tb = float(stream.time_base) if stream.time_base else 0.0
    start = stream.start_time
    try:
        for packet in container.demux(stream):
            if packet.size == 0:  # the flush packet at the end
                continue
            if packet.pts is None:
                return None
            pts.append(int(packet.pts))
            key.append(bool(packet.is_keyframe))
    except av.FFmpegError:
        complete = False  # a truncated or corrupt tail: keep what was read
    finally:
        container.close()
    if not pts or len(set(pts)) != len(pts) or not tb:
        return None
    origin = min(pts) if start is None else min(int(start), min(pts))
    order = sorted(pts)
    return _StreamIndex(
        pts, key, [(p - origin) * tb for p in order], {p: i for i, p in enumerate(order)}, complete
    )


def _sample_plan(times: list[float], step: float, start_frame: int) -> list[int]:
    """Frame indices today's ``--fps`` rule keeps: from ``start_frame`` on, the first frame at or after
    each multiple of ``step`` seconds (:func:`sample_indices_due`)."""
    if start_frame >= len(times):
        return []
    if not step:
        return list(range(start_frame, len(times)))
    next_t = math.ceil(times[start_frame] / step - 1e-9) * step if start_frame else 0.0
    keep = []
    for i in range(start_frame, len(times)):
        t = times[i]
        if sample_indices_due(t, next_t):
            keep.append(i)
            next_t += step * max(1, math.floor((t - next_t) / step + 1e-9) + 1)
    return keep


def keyframe_mode(index: _StreamIndex, fps: float | None) -> bool:
    """Whether sampling at ``fps`` may use keyframes: the rate is at or below the stream's keyframe rate
    (keyframes per second of video)."""
    if not fps or fps <= 0 or len(index.times) < 2:
        return False
    kt = index.key_times
    span = index.times[-1] - index.times[0]
    if len(kt) < 2 or span <= 0:
        return False
    per_frame = span / (len(index.times) - 1)
    return len(kt) / (span + per_frame) + 1e-9 >= fps


def _plan_packets(
    index: _StreamIndex, fps: float | None, start_frame: int, use_keyframes: bool
) -> tuple[dict[int, tuple[int, float]], list[bool]]:
    """Which frames to keep and which packets to send to the decoder.

    Returns:
        ``(wanted, send)``: presentation timestamp -> ``(frame index, time today's rule asked for)`` of
        every frame to yield, and per packet (decode order) whether it is decoded.
    """
    step = 1.0 / fps if fps and fps > 0 else 0.0
    targets = _sample_plan(index.times, step, start_frame)
    by_index = {i: p for p, i in index.rank.items()}
    pos = {p: k for k, p in enumerate(index.pts)}  # decode position of each packet
    key_pos = [k for k, is_key in enumerate(index.key) if is_key]
    wanted: dict[int, tuple[int, float]] = {}
    send = [False] * len(index.pts)

    def keyframe_before(k: int) -> int:
        """Decode position of the last keyframe at or before decode position ``k``."""
        j = bisect.bisect_right(key_pos, k) - 1
        return key_pos[j] if j >= 0 else 0

    if not use_keyframes:  # every packet from the keyframe before the first wanted frame
        if targets:
            first = keyframe_before(pos[by_index[targets[0]]])
            send[first:] = [True] * (len(send) - first)
        wanted = {by_index[i]: (i, index.times[i]) for i in targets}
        return wanted, send
    key_frames = index.key_frames
    used = -1
    for i in targets:
        j = bisect.bisect_right(key_frames, i) - 1
        kf = key_frames[j] if j >= 0 else -1
        if kf > used and kf >= 0 and index.times[i] - index.times[kf] < step - 1e-9:
            use = kf  # the nearest keyframe at or before the target: decode that packet alone
            send[pos[by_index[kf]]] = True
        else:  # no fresh keyframe close enough: decode from the keyframe before up to the target
            use = i
            k = pos[by_index[i]]
            lo = keyframe_before(k)
            send[lo : k + 1] = [True] * (k + 1 - lo)
        wanted[by_index[use]] = (use, index.times[i])
        used = use
    return wanted, send


def _upright(img: np.ndarray, rotation: float | None) -> np.ndarray:
    """Apply a video's display rotation (degrees counter-clockwise, as phones store portrait video),
    as OpenCV's reader does."""
    turn = {90: cv2.ROTATE_90_COUNTERCLOCKWISE, 180: cv2.ROTATE_180, 270: cv2.ROTATE_90_CLOCKWISE}.get(
        round(rotation or 0) % 360
    )
    return img if turn is None else cv2.rotate(img, turn)


def _iter_video_pyav(
    path: str | Path, fps: float | None, start_frame: int, realtime: float
) -> Iterator[Frame | ItemError]:
    """:func:`iter_video` with PyAV: only the packets needed are decoded (see the module docstring)."""
    av = _pyav()
    src = str(path)
    t_open = time.perf_counter()  # the demux-only pass counts as decoding time of the first frame
    try:
        index = _av_index(path) if (fps and fps > 0) or start_frame > 0 else None
        container, stream = _av_open(path)
    except SourceError as e:
        yield ItemError(src, str(e).removeprefix(f"{path}: "))
        return
    try:
        rate = stream.average_rate or stream.guessed_rate
        vfps = float(rate) if rate else 0.0
        vfps = vfps if math.isfinite(vfps) and vfps > 0 else 0.0
        total = int(stream.frames or 0)
        step = 1.0 / fps if fps and fps > 0 else 0.0
        tb = float(stream.time_base) if stream.time_base else 0.0
        use_keys = index is not None and keyframe_mode(index, fps)
        if index is not None:
            wanted, send = _plan_packets(index, fps, start_frame, use_keys)
            t_of = {p: index.times[i] for p, i in index.rank.items()}
        else:
            wanted, send, t_of = {}, [], {}
        codec = stream.codec_context
        meta = {
            "kind": "video",
            "video_fps": vfps,
            "reader": "pyav",
            "mode": "keyframes" if use_keys else "all",
        }
        yielded = bad = 0
        count = 0  # frames decoded (index when there is no packet index)
        next_t = 0.0
        last_t = -math.inf
        first_pts: int | None = None
        wall0 = time.perf_counter()
        t_ref: float | None = None
        t0 = t_open

        def frames_of(packet: Any) -> list[Any]:
            nonlocal bad
            try:
                return list(codec.decode(packet))
            except av.FFmpegError:
                bad += 1
                return []

        def packets() -> Iterator[Any]:
            try:
                for k, packet in enumerate(container.demux(stream)):
                    if packet.size == 0:
                        continue
                    if index is None or (k < len(send) and send[k]):
                        yield packet
            except av.FFmpegError:
                pass  # truncated or corrupt tail: what was read is kept, the end is reported below
            yield None  # flush the decoder

        for packet in packets():
            for f in frames_of(packet):
                count += 1
                if index is not None:
                    if f.pts is None or f.pts not in wanted:
                        continue
                    i, asked = wanted[f.pts]
                    t = t_of[f.pts]
                else:  # no packet index: count frames, times from the frame timestamps
                    i = count - 1
                    if f.pts is not None and tb:
                        if first_pts is None:
                            first_pts = min(int(f.pts), int(stream.start_time or f.pts))
                        t = (int(f.pts) - first_pts) * tb
                    else:
                        t = -1.0
                    if t < 0 or t < last_t:
                        t = i / vfps if vfps else max(last_t, 0.0)
                    last_t = t
                    asked = t
                    if i < start_frame or (step and not sample_indices_due(t, next_t)):
                        continue
                    if step:
                        next_t += step * max(1, math.floor((t - next_t) / step + 1e-9) + 1)
                img = _upright(f.to_ndarray(format="bgr24"), f.rotation)
                if t_ref is None:
                    t_ref = t
                t0 += pace(t - t_ref, realtime, wall0)  # pacing is not decoding
                yielded += 1
                m = dict(meta)
                m["keyframe"] = bool(f.key_frame)
                m["asked_s"] = asked
                m["decoded"] = count
                yield Frame(np.ascontiguousarray(img), src, i, t, time.perf_counter() - t0, m)
                t0 = time.perf_counter()
        read = len(index.pts) if index is not None else count
        if total > 0 and read < total - 1:
            yield ItemError(
                src, f"video ended at frame {read} of {total} stated in its header (truncated file?)", yielded
            )
        elif index is not None and not index.complete:
            yield ItemError(src, f"video data is corrupt or truncated after frame {read}", yielded)
        elif bad:
            yield ItemError(src, f"{bad} packet(s) could not be decoded (corrupt data?)", yielded)
        elif index is not None and yielded < len(wanted):
            yield ItemError(
                src, f"{len(wanted) - yielded} sampled frame(s) were not decoded (corrupt data?)", yielded
            )
        elif read == 0:
            yield ItemError(src, "video has no decodable frames", 0)
    finally:
        container.close()


def iter_video(
    path: str | Path,
    fps: float | None = None,
    start_frame: int = 0,
    realtime: float = 0.0,
    reader: str | None = None,
) -> Iterator[Frame | ItemError]:
    """Frames of a video file, sampled at ``fps`` per second of video time.

    Args:
        path: Video file.
        fps: Frames per second to keep (the goat seed used 1 and 3); ``None`` or ``<= 0`` keeps all.
        start_frame: Skip to this frame index first (resuming).
        realtime: Pace reading at ``realtime`` × the video's speed (0 = as fast as possible); used
            when a file stands in for a camera.
        reader: ``"auto"`` (PyAV when installed, else OpenCV), ``"pyav"``, ``"opencv"`` or
            ``"gstreamer"``; see :func:`video_reader`.

    Yields:
        :class:`Frame` objects, then an :class:`ItemError` if the file cannot be opened or ends
        before its stated frame count (truncated).
    """
    try:
        which = video_reader(reader)
    except SourceError as e:
        yield ItemError(str(path), str(e))
        return
    if which == "pyav":
        yield from _iter_video_pyav(path, fps, start_frame, realtime)
    elif which == "gstreamer":
        from edge.gst_video import iter_video_gstreamer

        yield from iter_video_gstreamer(path, fps, start_frame, realtime)
    else:
        yield from _iter_video_opencv(path, fps, start_frame, realtime)


def _iter_video_opencv(
    path: str | Path, fps: float | None, start_frame: int, realtime: float
) -> Iterator[Frame | ItemError]:
    """:func:`iter_video` with OpenCV (the fallback): every frame is grabbed, kept ones are decoded."""
    src = str(path)
    try:
        cap = _open_video_file(path)
    except SourceError as e:
        yield ItemError(src, str(e).removeprefix(f"{path}: "))
        return
    try:
        vfps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        if not (math.isfinite(vfps) and vfps > 0):
            vfps = 0.0
        total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        step = 1.0 / fps if fps and fps > 0 else 0.0
        i = 0
        if start_frame > 0:
            cap.set(cv2.CAP_PROP_POS_FRAMES, start_frame)
            i = int(cap.get(cv2.CAP_PROP_POS_FRAMES))
            if i != start_frame:  # seeking unsupported: grab forward
                cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
                i = 0
                while i < start_frame and cap.grab():
                    i += 1
        next_t = math.ceil((i / vfps) / step - 1e-9) * step if (step and vfps and i) else 0.0
        yielded = 0
        wall0 = time.perf_counter()
        t_ref: float | None = None
        last_t = -math.inf
        t0 = time.perf_counter()  # decode time of a kept frame includes grabbing the skipped ones
        while True:
            if not cap.grab():
                break
            t = _frame_time(cap, i, vfps, last_t)
            last_t = t
            if t_ref is None:
                t_ref = t
            if not step or sample_indices_due(t, next_t):
                ok, img = cap.retrieve()
                if not ok or img is None:
                    yield ItemError(src, f"frame {i} could not be decoded (corrupt data?)", yielded)
                    return
                t0 += pace(t - t_ref, realtime, wall0)  # pacing is not decoding
                if step:
                    next_t += step * max(1, math.floor((t - next_t) / step + 1e-9) + 1)
                yielded += 1
                frame = Frame(
                    to_bgr8(img, src),
                    src,
                    i,
                    t,
                    time.perf_counter() - t0,
                    {"kind": "video", "video_fps": vfps, "reader": "opencv"},
                )
                yield frame
                t0 = time.perf_counter()
            i += 1
        if total > 0 and i < total - 1:
            yield ItemError(
                src, f"video ended at frame {i} of {total} stated in its header (truncated file?)", yielded
            )
        elif i == start_frame == 0:
            yield ItemError(src, "video has no decodable frames", 0)
    finally:
        cap.release()


# ------------------------------------------------------------------------------------- file lists
def expand_inputs(paths: Iterable[str | Path]) -> tuple[list[Path], list[ItemError]]:
    """Expand folders (recursively, sorted) into image/video files.

    Files named explicitly are kept whatever their extension (they are then reported when they turn
    out unreadable); inside folders only known image/video extensions are taken. A file reached twice
    (``dir``, ``dir/a.jpg``, ``./dir/a.jpg``, a symlink to it) is kept once, where it first appears:
    scoring it twice would count one frame as two and shrink the standard errors.

    Returns:
        ``(files, errors)``; errors for paths that do not exist or folders with no inputs.
    """
    files: list[Path] = []
    errors: list[ItemError] = []
    seen: set[Path] = set()

    def add(f: Path) -> None:
        try:
            key = f.resolve()
        except (OSError, RuntimeError):  # a symlink loop or an unreadable path: keep it to be reported
            key = f.absolute()
        if key not in seen:
            seen.add(key)
            files.append(f)

    for raw in paths:
        p = Path(raw)
        try:
            st = p.stat()
        except OSError as e:  # missing, a name over the system's limits, a symlink loop, no permission
            why = "no such file or folder" if isinstance(e, FileNotFoundError) else (e.strerror or str(e))
            errors.append(ItemError(str(p), why))
            continue
        if stat.S_ISDIR(st.st_mode):
            found: list[Path] = []
            bad: list[ItemError] = []
            try:
                for f in sorted(p.rglob("*")):
                    if f.suffix.lower() not in IMAGE_EXTS | VIDEO_EXTS:
                        continue
                    why = _not_regular(f)
                    if why is None:
                        found.append(f)
                    elif why:  # a FIFO, a device, a broken link named like an input: say so
                        bad.append(ItemError(str(f), why))
            except OSError as e:
                errors.append(ItemError(str(p), f"cannot list folder: {e.strerror or e}"))
                continue
            errors.extend(bad)
            if not found and not bad:
                errors.append(ItemError(str(p), "folder holds no image or video files"))
            for f in found:
                add(f)
        elif stat.S_ISREG(st.st_mode):
            add(p)
        else:
            errors.append(ItemError(str(p), "not a regular file (a FIFO, socket or device); not read"))
    return files, errors


def _not_regular(path: Path) -> str | None:
    """``None`` for a regular file (following symlinks); ``""`` for a folder (its files are listed
    on their own); else why the entry cannot be read as an input."""
    try:
        mode = path.stat().st_mode
    except OSError as e:
        if path.is_symlink():
            return f"broken symbolic link ({e.strerror or e})"
        return f"cannot read: {e.strerror or e}"
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return ""
    return "not a regular file (a FIFO, socket or device); not read"


def is_video(path: str | Path) -> bool:
    """Whether a path names a video file (by extension)."""
    return Path(path).suffix.lower() in VIDEO_EXTS


def iter_inputs(paths: Iterable[str | Path], fps: float | None = None) -> Iterator[Frame | ItemError]:
    """Frames of every image and video under ``paths``; bad items become :class:`ItemError`."""
    files, errors = expand_inputs(paths)
    yield from errors
    for f in files:
        yield from iter_file(f, fps=fps)


def iter_file(path: Path, fps: float | None = None) -> Iterator[Frame | ItemError]:
    """Frames of one image or video file. Whatever goes wrong reading it ends as an
    :class:`ItemError` naming it (``GRIMACE_DEBUG=1`` lets unexpected exceptions through), so one bad
    file never ends a batch."""
    n = 0
    try:
        if is_video(path):
            for item in iter_video(path, fps=fps):
                n += isinstance(item, Frame)
                yield item
        elif path.suffix.lower() in IMAGE_EXTS:
            yield from iter_images([path])
        else:
            yield ItemError(
                str(path), f"unsupported file type {path.suffix or '(none)'}; expected an image or a video"
            )
    except Exception as e:  # a decoder or container failure we did not foresee: report, go on
        if os.environ.get("GRIMACE_DEBUG"):
            raise
        yield ItemError(str(path), f"cannot be read ({type(e).__name__}: {e})", n)


# ---------------------------------------------------------------------------------------- cameras
def csi_pipeline(
    sensor_id: int = 0, width: int = 1920, height: int = 1080, fps: int = 30, flip: int = 0
) -> str:
    """GStreamer pipeline for a Jetson CSI camera (``nvarguscamerasrc``) delivering BGR to OpenCV."""
    return (
        f"nvarguscamerasrc sensor-id={sensor_id} ! video/x-raw(memory:NVMM), width={width}, height={height}, "
        f"framerate={fps}/1, format=NV12 ! nvvidconv flip-method={flip} ! video/x-raw, format=BGRx ! "
        "videoconvert ! video/x-raw, format=BGR ! appsink drop=true max-buffers=1"
    )


def describe_camera(src: str) -> tuple[str, Any, int]:
    """Classify a camera spec: ``(kind, cv2 argument, api preference)``.

    Kinds: ``"usb"`` (integer index or ``/dev/videoN``), ``"gstreamer"`` (a pipeline with ``!``),
    ``"csi"`` (``csi`` or ``csi:N``: a Jetson CSI sensor via ``nvarguscamerasrc``), ``"stream"``
    (``rtsp://``, ``http(s)://``...), ``"file"`` (a video file standing in for a camera).
    """
    s = str(src).strip()
    if s.isdigit():
        return "usb", int(s), getattr(cv2, "CAP_V4L2", cv2.CAP_ANY)
    if s.startswith("/dev/video"):
        return "usb", s, getattr(cv2, "CAP_V4L2", cv2.CAP_ANY)
    if s == "csi" or s.startswith("csi:"):
        sensor = int(s.split(":", 1)[1]) if ":" in s else 0
        return "csi", csi_pipeline(sensor), cv2.CAP_GSTREAMER
    if "!" in s:
        return "gstreamer", s, cv2.CAP_GSTREAMER
    if "://" in s:
        return "stream", s, cv2.CAP_FFMPEG
    return "file", s, cv2.CAP_FFMPEG


def gstreamer_available() -> bool:
    """Whether this OpenCV build can open GStreamer pipelines."""
    for line in cv2.getBuildInformation().splitlines():
        if "GStreamer" in line:
            return "YES" in line
    return False


@dataclass
class CameraEvent:
    """Something that happened to a camera: ``opened``, ``lost``, ``retry``, ``reconnected``,
    ``ended`` (a file reached its end) or ``gave_up``."""

    kind: str
    message: str
    time_s: float
    attempt: int = 0
    wait_s: float = 0.0


class CameraSource:
    """A live camera (or a video file standing in for one) that survives camera loss.

    Iterating yields :class:`Frame` objects. When a read fails the camera is released and reopened
    with exponential backoff (``backoff_s``, doubling, at most ``max_backoff_s``); every event goes to
    ``on_event`` and is kept in :attr:`events`. Nothing raises during iteration; after
    ``max_retries`` failed attempts in a row (``None`` = forever) the iteration ends with a
    ``gave_up`` event. A file source ends at its last frame (``ended``).

    A live camera is read in a grabber thread
    (:class:`edge.pipeline.NewestWins`) as fast as it delivers; the frames due at ``fps`` wait in a
    one-frame slot and the newest wins: a due frame that a newer one replaces before the caller took
    it is counted in :attr:`frames_dropped`, so a slow model never builds a backlog. Frames carry
    ``meta["captured"]`` (``time.monotonic()`` when read) for latency figures; events raised in the
    grabber thread reach ``on_event`` in the caller's thread.

    Args:
        src: Camera index, ``/dev/videoN``, ``csi[:N]``, GStreamer pipeline, RTSP/HTTP URL or video file.
        fps: Frames per second to deliver (``None`` = every frame read).
        realtime: For a file: pace at this multiple of its speed (0 = as fast as possible).
        start_frame: For a file: start at this frame (resuming).
        time_offset_s: Added to frame times (a resumed session continues its clock).
        backoff_s: First reconnect wait.
        max_backoff_s: Longest reconnect wait.
        max_retries: Attempts in a row before giving up; ``None`` retries forever.
        on_event: Callback for :class:`CameraEvent`.
        opener: ``f(arg, api) -> cv2.VideoCapture``-like object (tests inject a flaky camera).
        sleep: Sleep function for the backoff (default: a sleep that :meth:`close` interrupts).
        drop_late: Newest frame wins (a grabber thread; frames the caller was too slow for are
            dropped and counted). ``None``: for live cameras, not for files: every due frame of a
            recording is kept however slow scoring is. ``True`` with a file and ``realtime > 0``
            makes the file behave exactly like a camera (latency benchmarks).
    """

    def __init__(
        self,
        src: str | int,
        fps: float | None = None,
        realtime: float = 0.0,
        start_frame: int = 0,
        time_offset_s: float = 0.0,
        backoff_s: float = 0.5,
        max_backoff_s: float = 30.0,
        max_retries: int | None = None,
        on_event: Callable[[CameraEvent], None] | None = None,
        opener: Callable[[Any, int], Any] | None = None,
        sleep: Callable[[float], None] | None = None,
        drop_late: bool | None = None,
    ) -> None:
        self.src = str(src)
        self.drop_late = drop_late
        self.kind, self._arg, self._api = describe_camera(self.src)
        self.fps = fps
        self.realtime = realtime
        self.start_frame = start_frame
        self.time_offset_s = time_offset_s
        self.backoff_s, self.max_backoff_s, self.max_retries = backoff_s, max_backoff_s, max_retries
        self.on_event = on_event
        self._opener = opener or (lambda arg, api: cv2.VideoCapture(arg, api))
        self._sleep = sleep or self._nap
        self.events: list[CameraEvent] = []
        self._cap: Any = None
        self._t0 = time.monotonic()
        self.frames_read = 0
        self.closed = False
        self._grabber: Any = None  # edge.pipeline.NewestWins while a grabber thread reads
        self._consumer = 0
        self._pending: collections.deque[CameraEvent] = collections.deque()

    # -- events
    def _emit(self, kind: str, message: str, attempt: int = 0, wait_s: float = 0.0) -> None:
        ev = CameraEvent(kind, message, self._now(), attempt, wait_s)
        if self._grabber is not None and threading.get_ident() != self._consumer:
            self._pending.append(ev)  # delivered by the consumer (:meth:`_deliver_events`)
            return
        self.events.append(ev)
        if self.on_event is not None:
            self.on_event(ev)

    def _now(self) -> float:
        return self.time_offset_s + (time.monotonic() - self._t0)

    # -- open / reconnect
    def _open(self) -> bool:
        if self.kind in ("gstreamer", "csi") and not gstreamer_available():
            self._emit("retry", "this OpenCV build has no GStreamer support; install OpenCV with GStreamer")
            return False
        try:
            cap = self._opener(self._arg, self._api)
        except Exception as e:  # a camera driver may raise anything
            self._emit("retry", f"opening {self.src} raised {type(e).__name__}: {e}")
            return False
        if cap is None or not cap.isOpened():
            if cap is not None:
                cap.release()
            return False
        self._cap = cap
        return True

    def _reconnect(self) -> bool:
        wait = self.backoff_s
        attempt = 0
        while not self.closed:
            attempt += 1
            if self._open():
                self._emit("reconnected" if self.frames_read else "opened", f"{self.src} open", attempt)
                return True
            if self.max_retries is not None and attempt >= self.max_retries:
                self._emit("gave_up", f"{self.src}: no frames after {attempt} attempts", attempt)
                return False
            self._emit("retry", f"{self.src} unavailable; retry {attempt} in {wait:.1f}s", attempt, wait)
            self._sleep(wait)
            wait = min(wait * 2, self.max_backoff_s)
        return False

    def _nap(self, seconds: float) -> None:
        """Sleep, waking early when :meth:`close` is called (e.g. from a signal handler)."""
        end = time.monotonic() + seconds
        while not self.closed and time.monotonic() < end:
            time.sleep(min(0.1, max(0.0, end - time.monotonic())))

    def close(self) -> None:
        """Stop iterating and release the camera (after the grabber thread, if any, has ended)."""
        self.closed = True
        grabber = self._grabber
        if grabber is not None:
            grabber.close()
            if grabber.alive:  # stuck in a driver read: the thread releases the camera when it returns
                return
        if self._cap is not None:
            self._cap.release()
            self._cap = None

    def __enter__(self) -> CameraSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def newest_wins(self) -> bool:
        """Whether frames are grabbed in a thread that keeps only the newest (``drop_late``; by default
        live cameras do, files are read in the caller's thread and lose no frame)."""
        return self.kind != "file" if self.drop_late is None else self.drop_late

    @property
    def frames_dropped(self) -> int:
        """Frames due at ``fps`` that a newer frame replaced before they were taken (scoring slower
        than the camera delivers)."""
        return self._grabber.dropped if self._grabber is not None else 0

    def __iter__(self) -> Iterator[Frame]:
        inner = self._iter_file() if self.kind == "file" else self._iter_live()
        if not self.newest_wins:
            yield from inner
            return
        from edge.pipeline import NewestWins

        self._consumer = threading.get_ident()
        self._grabber = NewestWins(
            inner, stopped=lambda: self.closed, name=f"grabber {self.src}", idle=self._deliver_events
        )
        try:
            for frame in self._grabber:
                self._deliver_events()
                yield frame
        finally:
            self._grabber.close()
            self._deliver_events()

    def _deliver_events(self) -> None:
        """Hand events the grabber thread raised to ``on_event`` in the consumer's thread (a callback
        may write to a database connection that belongs to that thread)."""
        while self._pending:
            ev = self._pending.popleft()
            self.events.append(ev)
            if self.on_event is not None:
                self.on_event(ev)

    def _iter_live(self) -> Iterator[Frame]:
        step = 1.0 / self.fps if self.fps else 0.0
        next_t = 0.0
        index = 0
        if not self._reconnect():
            return
        try:
            while not self.closed:
                t0 = time.perf_counter()
                ok, img = self._cap.read() if self._cap is not None else (False, None)
                if not ok or img is None:
                    self._emit(
                        "lost", f"{self.src}: camera read failed (unplugged, network loss or driver error)"
                    )
                    if self._cap is not None:
                        self._cap.release()
                        self._cap = None
                    if not self._reconnect():
                        return
                    continue
                t = self._now()
                index += 1
                if step and t + 1e-6 < next_t:
                    continue
                next_t = t + step if step else 0.0
                self.frames_read += 1
                yield Frame(
                    to_bgr8(img, self.src),
                    self.src,
                    index,
                    t,
                    time.perf_counter() - t0,
                    {
                        "kind": "camera",
                        "camera": self.kind,
                        "wall_time": time.time(),
                        "captured": time.monotonic(),
                    },
                )
        finally:
            if self._grabber is not None and self._cap is not None:  # released in the thread that reads
                self._cap.release()
                self._cap = None

    def _iter_file(self) -> Iterator[Frame]:
        for item in iter_video(self.src, fps=self.fps, start_frame=self.start_frame, realtime=self.realtime):
            if isinstance(item, ItemError):
                self._emit("lost" if item.frames_read else "gave_up", str(item))
                break
            self.frames_read += 1
            item.meta["kind"] = "camera"
            item.meta["camera"] = "file"
            item.meta["wall_time"] = time.time()
            item.meta["captured"] = time.monotonic()
            yield item
            if self.closed:
                return
        self._emit("ended", f"{self.src}: end of file after {self.frames_read} frame(s)")
