"""GStreamer video-file reader (``GRIMACE_VIDEO_READER=gstreamer``): hardware decoding on a Jetson.

On a Jetson the H.264/HEVC decoder is a hardware block reached through GStreamer (``nvv4l2decoder``;
``nvvidconv`` converts on the VIC). This reader builds one pipeline per file and reads it with
OpenCV's GStreamer backend (JetPack's OpenCV has it; pip's ``opencv-python`` does not)::

    appsink name=opencvsink sync=false  file:///percent/encoded/path.mp4 ! qtdemux ! h264parse
        [! identity drop-buffer-flags=delta-unit] ! nvv4l2decoder ! nvvidconv
        ! video/x-raw,format=BGRx ! videoconvert ! videoflip video-direction=auto
        ! video/x-raw,format=BGR ! opencvsink.

* The file enters as a ``file://`` URI with every byte outside ``A-Z a-z 0-9 - . _ ~ /``
  percent-encoded, so no file name (``!``, quotes, backslashes, spaces, ``=``, newlines) can reach
  the pipeline syntax; GStreamer decodes the URI back to the same bytes. The sink comes first
  because OpenCV takes a description that starts like a URI for a URI and plays it with
  ``uridecodebin`` instead.
* Demuxer from the container (MP4/MOV/M4V/3GP: ``qtdemux``; MKV/WebM: ``matroskademux``; others
  refused), parser from the codec (H.264, HEVC; others refused). Decoder and converter come from
  ``GRIMACE_GST_DECODER`` (default ``nvv4l2decoder``; ``{codec}`` is replaced by ``h264``/``h265``,
  so ``avdec_{codec}`` names GStreamer's software decoders) and ``GRIMACE_GST_CONVERTER`` (default
  ``nvvidconv``; ``videoconvert`` on a PC).
* Keyframes only: with PyAV installed its demux-only index (:func:`edge.sources._av_index`) decides
  as for the PyAV reader (:func:`edge.sources.keyframe_mode`, :func:`edge.sources._plan_packets`).
  When every frame the plan keeps is a keyframe, ``identity drop-buffer-flags=delta-unit`` drops all
  other packets before the decoder, which then decodes keyframes only — whatever the decoder (the
  software decoders have no keyframes-only setting). Otherwise every frame is decoded and the
  plan's frames are kept: the selection is always the PyAV reader's.
* Frame times come from PyAV's index (the stream's timestamps, variable frame rate kept): the
  decoder delivers frames in presentation order, the k-th delivered frame is the k-th frame (or
  keyframe) of the index, and a count that differs from the index is reported. OpenCV's
  ``CAP_PROP_POS_MSEC`` is not used: with GStreamer it is a position query on the running pipeline,
  not the frame's timestamp (OpenCV warns so itself, opencv/opencv#19025); measured here it ran one
  or two frames ahead depending on thread timing, and after dropped packets it named unrelated
  times. Without PyAV, every frame is decoded and frame ``i`` is at ``i / fps`` of the file's stated
  rate (from OpenCV's FFmpeg backend), so variable-frame-rate video is timed approximately; install
  the ``video`` extra.
* ``videoflip video-direction=auto`` turns portrait phone video upright from the file's orientation
  tag (a pass-through when there is none), as the other readers do.
"""

from __future__ import annotations

import math
import os
import re
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from edge.sources import (
    Frame,
    ItemError,
    SourceError,
    _av_index,
    _av_open,
    _decoder_messages,
    _open_video_file,
    _plan_packets,
    _pyav,
    _sample_plan,
    _StreamIndex,
    gstreamer_available,
    keyframe_mode,
    pace,
)

DECODER_ENV = "GRIMACE_GST_DECODER"
"""Environment variable naming the decoder element (``{codec}`` -> ``h264``/``h265``), optionally
with ``property=value`` settings: ``nvv4l2decoder`` (default, Jetson), ``avdec_{codec}`` (software)."""
DEFAULT_DECODER = "nvv4l2decoder"
CONVERTER_ENV = "GRIMACE_GST_CONVERTER"
"""Environment variable naming the element that converts decoded frames: ``nvvidconv`` (default,
Jetson) or ``videoconvert`` (software)."""
DEFAULT_CONVERTER = "nvvidconv"
SINK = "opencvsink"
"""Name of the appsink: OpenCV finds the sink of a pipeline by this name."""

INSTALL_HINT = (
    "the GStreamer video reader needs an OpenCV built with GStreamer (pip's opencv-python is not): on "
    "a Jetson use JetPack's OpenCV (jetson/install.sh removes the pip wheel from the environment); on "
    "Debian/Ubuntu: apt-get install python3-opencv gstreamer1.0-plugins-good gstreamer1.0-plugins-bad "
    "gstreamer1.0-libav"
)

DEMUXERS = {
    ".mp4": "qtdemux",
    ".mov": "qtdemux",
    ".m4v": "qtdemux",
    ".3gp": "qtdemux",
    ".mkv": "matroskademux",
    ".webm": "matroskademux",
}
"""Demuxer by file extension (used when PyAV cannot name the container)."""
_FORMAT_DEMUXERS = {"mov": "qtdemux", "mp4": "qtdemux", "matroska": "matroskademux", "webm": "matroskademux"}
"""Demuxer by FFmpeg container name (PyAV's ``container.format.name``, e.g. ``mov,mp4,m4a,3gp``)."""
PARSERS = {"h264": "h264parse", "h265": "h265parse"}
_CODEC_NAMES = {
    "h264": "h264",
    "avc": "h264",
    "avc1": "h264",
    "avc3": "h264",
    "x264": "h264",
    "hevc": "h265",
    "h265": "h265",
    "hvc1": "h265",
    "hev1": "h265",
    "x265": "h265",
}
"""FFmpeg codec names and container FourCCs -> the codec short name of the pipeline."""

_URI_SAFE = re.compile(r"file:///[A-Za-z0-9._~%/-]*\Z")
_ELEMENT = re.compile(r"[A-Za-z][A-Za-z0-9_-]*(\s+[A-Za-z][A-Za-z0-9_-]*=[A-Za-z0-9_.+-]+)*\Z")
"""An element with optional ``property=value`` settings, nothing else (no ``!``, caps, quotes)."""


def require_gstreamer() -> None:
    """Raise :class:`SourceError` naming what to install when this OpenCV has no GStreamer."""
    if not gstreamer_available():
        raise SourceError(INSTALL_HINT)


def file_uri(path: str | Path) -> str:
    """The ``file://`` URI of ``path`` (made absolute) with every byte that could mean something to
    GStreamer's pipeline syntax percent-encoded.

    Raises:
        SourceError: A name that cannot be written safely (not expected on POSIX; refused rather than
            guessed).
    """
    raw = os.fsencode(os.path.abspath(os.fspath(path)))
    uri = "file://" + urllib.parse.quote(raw, safe="/")
    if not _URI_SAFE.match(uri) or not raw.startswith(b"/"):
        raise SourceError(f"{path}: this file name cannot be passed to GStreamer safely")
    return uri


def element(spec: str, env: str, codec: str = "") -> str:
    """Validate a decoder/converter setting: one element name, optionally with ``prop=value`` pairs.

    Raises:
        SourceError: Anything else (a ``!``, caps, quotes...), naming the environment variable.
    """
    text = " ".join(spec.replace("{codec}", codec).split())
    if not _ELEMENT.match(text):
        raise SourceError(
            f"{env}={spec!r} is not one GStreamer element (a name, optionally with property=value "
            "settings of letters, digits, '_', '.', '+' or '-')"
        )
    return text


def codec_name(name: str) -> str:
    """``h264`` or ``h265`` from an FFmpeg codec name or a FourCC; raises :class:`SourceError`."""
    short = _CODEC_NAMES.get(name.strip().strip("\x00").lower())
    if short is None:
        raise SourceError(f"the GStreamer reader decodes H.264 and HEVC; this video is {name.strip()!r}")
    return short


def demuxer(path: str | Path, format_name: str | None = None) -> str:
    """The demuxer for a file: from FFmpeg's container name when known, else from the extension."""
    for part in (format_name or "").split(","):
        if part in _FORMAT_DEMUXERS:
            return _FORMAT_DEMUXERS[part]
    ext = Path(path).suffix.lower()
    if format_name is None and ext in DEMUXERS:
        return DEMUXERS[ext]
    what = f"container {format_name!r}" if format_name else f"extension {ext or '(none)'}"
    raise SourceError(
        f"the GStreamer reader reads MP4/MOV/M4V/3GP and MKV/WebM files, not {what}; "
        "use GRIMACE_VIDEO_READER=pyav or opencv for it"
    )


def build_pipeline(
    path: str | Path,
    demux: str,
    codec: str,
    decoder: str = DEFAULT_DECODER,
    converter: str = DEFAULT_CONVERTER,
    keyframes_only: bool = False,
) -> str:
    """The pipeline description that decodes ``path`` to BGR frames for OpenCV (see the module
    docstring). ``decoder`` and ``converter`` are validated with :func:`element`."""
    if codec not in PARSERS:
        raise SourceError(f"no parser for codec {codec!r}; expected one of {sorted(PARSERS)}")
    if demux not in set(DEMUXERS.values()):
        raise SourceError(f"unknown demuxer {demux!r}")
    chain = [file_uri(path), demux, PARSERS[codec]]
    if keyframes_only:
        chain.append("identity drop-buffer-flags=delta-unit")
    chain.append(element(decoder, DECODER_ENV, codec))
    conv = element(converter, CONVERTER_ENV, codec)
    if conv.split()[0] == "videoconvert":  # software: one conversion straight to BGR
        chain.append(conv)
    else:  # a hardware converter delivers BGRx to system memory; videoconvert drops the x
        chain += [conv, "video/x-raw,format=BGRx", "videoconvert"]
    chain += ["videoflip video-direction=auto", "video/x-raw,format=BGR"]
    return f"appsink name={SINK} sync=false " + " ! ".join(chain) + f" ! {SINK}."


@dataclass
class _Probe:
    """What is known of a file before decoding: codec, demuxer, rate, stated count, PyAV index."""

    codec: str
    demux: str
    vfps: float
    total: int
    index: _StreamIndex | None


def _probe(path: str | Path) -> _Probe:
    """Codec and container from PyAV when installed (plus its demux-only index), else from a plain
    OpenCV open (FourCC, stated rate and frame count); raises :class:`SourceError`."""
    if _pyav() is not None:
        container, stream = _av_open(path)
        try:
            fmt = str(container.format.name or "")
            codec = codec_name(str(stream.codec_context.name or ""))
            rate = stream.average_rate or stream.guessed_rate
            vfps = float(rate) if rate else 0.0
            total = int(stream.frames or 0)
        finally:
            container.close()
        index = _av_index(path)
        demux = demuxer(path, fmt)
    else:
        cap = _open_video_file(path)
        try:
            cc = int(cap.get(cv2.CAP_PROP_FOURCC) or 0)
            fourcc = "".join(chr((cc >> (8 * k)) & 0xFF) for k in range(4))
            vfps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
            total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        finally:
            cap.release()
        codec = codec_name(fourcc)
        index = None
        demux = demuxer(path)
    return _Probe(codec, demux, vfps if math.isfinite(vfps) and vfps > 0 else 0.0, total, index)


def iter_video_gstreamer(
    path: str | Path, fps: float | None, start_frame: int, realtime: float
) -> Iterator[Frame | ItemError]:
    """:func:`edge.sources.iter_video` with a GStreamer pipeline (see the module docstring).

    Yields the same :class:`Frame` fields as the PyAV reader (``meta``: ``reader`` ``"gstreamer"``,
    ``mode``, ``keyframe`` (``None`` without PyAV), ``asked_s``, ``decoded``; plus ``keyframes_only``,
    whether the pipeline dropped all other packets, and ``decoder``), then an :class:`ItemError` for
    a file that cannot be opened, is truncated or corrupt.
    """
    src = str(path)
    t_open = time.perf_counter()  # probing, the index pass and starting the pipeline count as decoding
    step = 1.0 / fps if fps and fps > 0 else 0.0
    try:
        require_gstreamer()
        probe = _probe(path)
        index = probe.index
        key_frames: list[int] = []
        if index is not None:
            key_frames = index.key_frames
            use_keys = keyframe_mode(index, fps)
            planned, _ = _plan_packets(index, fps, start_frame, use_keys)
            wanted = dict(planned.values())  # frame index -> time the rule asked for
            keys_only = use_keys and set(wanted) <= set(key_frames)
            order: list[int] | None = key_frames if keys_only else list(range(len(index.times)))
        else:
            if step and not probe.vfps:
                raise SourceError("cannot time its frames: no frame rate in the file and PyAV not installed")
            use_keys = keys_only = False
            wanted, order = {}, None
        decoder = os.environ.get(DECODER_ENV) or DEFAULT_DECODER
        converter = os.environ.get(CONVERTER_ENV) or DEFAULT_CONVERTER
        pipeline = build_pipeline(path, probe.demux, probe.codec, decoder, converter, keys_only)
    except SourceError as e:
        yield ItemError(src, str(e).removeprefix(f"{path}: "))
        return
    with _decoder_messages():  # OpenCV's warnings while the pipeline starts (no duration query...)
        cap = cv2.VideoCapture(pipeline, cv2.CAP_GSTREAMER)
    try:
        if not cap.isOpened():
            yield ItemError(
                src,
                f"the GStreamer pipeline did not start: {pipeline} (is every element installed? "
                f"gst-inspect-1.0 NAME; off a Jetson set {DECODER_ENV}='avdec_{{codec}}' "
                f"{CONVERTER_ENV}=videoconvert; GST_DEBUG=3 shows GStreamer's reason)",
            )
            return
        meta = {
            "kind": "video",
            "video_fps": probe.vfps,
            "reader": "gstreamer",
            "mode": "keyframes" if use_keys else "all",
            "keyframes_only": keys_only,
            "decoder": decoder.replace("{codec}", probe.codec).split()[0],
        }
        key_set = set(key_frames)
        yielded = delivered = 0
        plan: set[int] = set()  # without an index: the frames the rule keeps among times i / fps
        covered = 0  # ... for the first `covered` frames
        wall0 = time.perf_counter()
        t_ref: float | None = None
        t0 = t_open
        while cap.grab():
            delivered += 1
            if order is not None and index is not None:
                if delivered > len(order):
                    continue  # more frames than the index: reported below
                i = order[delivered - 1]
                t = index.times[i]
                if i not in wanted:
                    continue
                asked = wanted[i]
            else:
                i = delivered - 1
                t = i / probe.vfps if probe.vfps else 0.0
                if i >= covered:  # the rule is greedy forward: a longer plan extends a shorter one
                    covered = max(probe.total, 2 * (i + 1))
                    times = [k / probe.vfps if probe.vfps else 0.0 for k in range(covered)]
                    plan = set(_sample_plan(times, step, start_frame))
                if i not in plan:
                    continue
                asked = t
            ok, img = cap.retrieve()
            if not ok or img is None or img.ndim != 3 or img.shape[2] != 3:
                yield ItemError(src, f"frame {i} could not be decoded (corrupt data?)", yielded)
                return
            if t_ref is None:
                t_ref = t
            t0 += pace(t - t_ref, realtime, wall0)  # pacing is not decoding
            yielded += 1
            m = dict(meta)
            m["keyframe"] = (i in key_set) if index is not None else None
            m["asked_s"] = asked
            m["decoded"] = delivered
            yield Frame(np.ascontiguousarray(img), src, i, t, time.perf_counter() - t0, m)
            t0 = time.perf_counter()
        read = len(index.pts) if index is not None else delivered
        if probe.total > 0 and read < probe.total - 1:
            yield ItemError(
                src,
                f"video ended at frame {read} of {probe.total} stated in its header (truncated file?)",
                yielded,
            )
        elif index is not None and not index.complete:
            yield ItemError(src, f"video data is corrupt or truncated after frame {read}", yielded)
        elif order is not None and delivered != len(order):
            what = "keyframes" if keys_only else "frames"
            yield ItemError(
                src,
                f"the GStreamer decoder delivered {delivered} {what} where the file's index has "
                f"{len(order)} (corrupt data?)",
                yielded,
            )
        elif delivered == 0:
            yield ItemError(src, "video has no decodable frames", 0)
    finally:
        cap.release()
