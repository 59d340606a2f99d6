"""GStreamer video-file reader (edge.gst_video, ``GRIMACE_VIDEO_READER=gstreamer``).

The pipeline builder and the escaping of file names are tested everywhere. Real decoding needs an
OpenCV with GStreamer, which pip's opencv-python is not: those tests run the reader in a subprocess
with the system Python (``/usr/bin/python3`` with Debian's ``python3-opencv`` and the GStreamer
plugins ``gstreamer1.0-libav``, ``-plugins-good``, ``-plugins-bad``) and the software elements
(``avdec_h264``/``avdec_h265``, ``videoconvert``), and compare its frames with the PyAV reader's on
the same files. That interpreter has no PyAV: the reader then decodes every frame; the keyframe tests
lend it this environment's PyAV (only the ``av`` package, put on its path). The Jetson's
``nvv4l2decoder``/``nvvidconv`` are not tested here (no Jetson)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import urllib.parse
from pathlib import Path

import numpy as np
import pytest

from edge import gst_video, sources
from edge.gst_video import build_pipeline, codec_name, demuxer, element, file_uri
from edge.sources import Frame, ItemError, SourceError, iter_video, video_reader

REPO = Path(__file__).resolve().parents[1]
SYSTEM_PYTHON = "/usr/bin/python3"
SIZE = (320, 240)
NASTY = [
    'a b!"\\=x\n! fakesink name=x.mp4',
    "clip ! filesink location=out.mp4",
    "quote\"d 'single' (paren) {brace} [b] <a>;,.mp4",
    "back\\slash\\.mp4",
    "100%41 percent.mp4",
    "tab\there\rcr.mp4",
    "ünïcödé 視頻.mp4",
]


# ------------------------------------------------------------------- pipeline builder (everywhere)
@pytest.mark.parametrize("name", NASTY)
def test_file_uri_leaves_no_pipeline_syntax_in_any_name(name: str, tmp_path: Path) -> None:
    path = tmp_path / name
    uri = file_uri(path)
    assert uri.startswith("file:///")
    assert set(uri[len("file://") :]) <= set(
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~%/"
    )
    # GStreamer decodes the URI back to exactly the file's bytes
    assert urllib.parse.unquote_to_bytes(uri[len("file://") :]) == os.fsencode(path)


def test_file_uri_of_non_utf8_bytes_and_relative_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw = os.fsencode(tmp_path) + b"/bad\xff\xfe name.mp4"
    uri = file_uri(os.fsdecode(raw))
    assert urllib.parse.unquote_to_bytes(uri[len("file://") :]) == raw
    monkeypatch.chdir(tmp_path)
    assert file_uri("v.mp4") == file_uri(tmp_path / "v.mp4")  # made absolute


def _chain(pipeline: str) -> list[str]:
    head, _, rest = pipeline.partition(" file:///")
    assert head == "appsink name=opencvsink sync=false"
    return ("file:///" + rest).split(" ! ")


@pytest.mark.parametrize("name", ["plain.mp4", *NASTY])
def test_pipeline_has_the_same_elements_whatever_the_name(name: str, tmp_path: Path) -> None:
    p = build_pipeline(tmp_path / name, "qtdemux", "h264", "avdec_{codec}", "videoconvert")
    chain = _chain(p)
    assert chain[1:] == [
        "qtdemux",
        "h264parse",
        "avdec_h264",
        "videoconvert",
        "videoflip video-direction=auto",
        "video/x-raw,format=BGR",
        "opencvsink.",
    ]
    assert p.count("!") == 7 and "\n" not in p and '"' not in p and "\\" not in p


def test_pipeline_for_the_jetson_and_keyframes_only(tmp_path: Path) -> None:
    p = build_pipeline(tmp_path / "v.mkv", "matroskademux", "h265", keyframes_only=True)
    assert _chain(p)[1:] == [
        "matroskademux",
        "h265parse",
        "identity drop-buffer-flags=delta-unit",  # non-keyframes never reach the decoder
        "nvv4l2decoder",
        "nvvidconv",
        "video/x-raw,format=BGRx",
        "videoconvert",
        "videoflip video-direction=auto",
        "video/x-raw,format=BGR",
        "opencvsink.",
    ]


def test_decoder_and_converter_settings_are_one_element_each() -> None:
    assert element("avdec_{codec}", "X", "h265") == "avdec_h265"
    assert (
        element(" nvv4l2decoder  enable-max-performance=1 ", "X") == "nvv4l2decoder enable-max-performance=1"
    )
    for bad in (
        "avdec_h264 ! filesink location=/tmp/x",
        'nvv4l2decoder name="x"',
        "videoconvert\n! fakesink",
        "video/x-raw,format=BGR",
        "nvvidconv flip-method=1 ! fakesink",
        "",
    ):
        with pytest.raises(SourceError, match="GRIMACE_GST_DECODER"):
            element(bad, "GRIMACE_GST_DECODER")


def test_demuxer_and_codec_choice() -> None:
    assert demuxer("a.MP4") == demuxer("a.mov") == demuxer("a.m4v") == demuxer("a.3gp") == "qtdemux"
    assert demuxer("a.mkv") == demuxer("a.webm") == "matroskademux"
    assert demuxer("a.mkv", "mov,mp4,m4a,3gp,3g2,mj2") == "qtdemux"  # the container, not the name
    assert demuxer("a.mp4", "matroska,webm") == "matroskademux"
    for args in (("a.avi",), ("a.mp4", "avi"), ("noext",)):
        with pytest.raises(SourceError, match="MP4/MOV/M4V/3GP and MKV/WebM"):
            demuxer(*args)
    assert codec_name("h264") == codec_name("avc1") == "h264"
    assert codec_name("hevc") == codec_name("hvc1") == codec_name("hev1") == "h265"
    with pytest.raises(SourceError, match=r"H\.264 and HEVC.*vp9"):
        codec_name("vp9")


def test_reader_choice(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(gst_video, "gstreamer_available", lambda: False)
    with pytest.raises(SourceError, match="apt-get install python3-opencv"):
        video_reader("gstreamer")
    monkeypatch.setenv(sources.READER_ENV, "gstreamer")
    items = list(iter_video(tmp_path / "v.mp4", fps=1))
    assert len(items) == 1 and isinstance(items[0], ItemError) and "JetPack's OpenCV" in items[0].message
    monkeypatch.setattr(gst_video, "gstreamer_available", lambda: True)
    assert video_reader() == "gstreamer" and video_reader("GStreamer") == "gstreamer"
    monkeypatch.delenv(sources.READER_ENV)
    assert video_reader() in ("pyav", "opencv")  # auto never picks GStreamer
    for name, msg in (("missing.mp4", "no such file"), ("empty.mp4", "empty file")):
        if name == "empty.mp4":
            (tmp_path / name).write_bytes(b"")
        items = list(iter_video(tmp_path / name, fps=1, reader="gstreamer"))
        assert len(items) == 1 and isinstance(items[0], ItemError), items
        assert msg in items[0].message and items[0].source == str(tmp_path / name)


# ------------------------------------------------------- real decoding with the system's GStreamer
PROBE = r"""
import ctypes, ctypes.util, sys
import cv2
if not any("GStreamer" in l and "YES" in l for l in cv2.getBuildInformation().splitlines()):
    sys.exit("its cv2 " + cv2.__version__ + " has no GStreamer")
gst = ctypes.CDLL(ctypes.util.find_library("gstreamer-1.0") or "libgstreamer-1.0.so.0")
gst.gst_init(None, None)
gst.gst_element_factory_find.restype = ctypes.c_void_p
missing = [e for e in sys.argv[1:] if not gst.gst_element_factory_find(e.encode())]
if missing:
    sys.exit("GStreamer elements missing: " + ", ".join(missing))
"""

RUN = r"""
import json, sys
import numpy as np
from edge.sources import Frame, iter_video
path, fps, start, images = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
fps = None if fps == "none" else float(fps)
out, pics = [], []
for item in iter_video(path, fps=fps, start_frame=start, reader="gstreamer"):
    if isinstance(item, Frame):
        out.append({"index": item.index, "time_s": item.time_s, "decode_s": item.decode_s,
                    "meta": item.meta, "shape": list(item.image.shape)})
        pics.append(item.image)
    else:
        out.append({"error": item.message, "source": item.source, "frames_read": item.frames_read})
if images != "-" and pics:
    np.save(images, np.stack(pics))
print(json.dumps(out))
"""

ELEMENTS = [
    "qtdemux",
    "matroskademux",
    "h264parse",
    "h265parse",
    "avdec_h264",
    "avdec_h265",
    "identity",
    "videoconvert",
    "videoflip",
    "appsink",
]


@pytest.fixture(scope="module")
def system_python() -> str:
    """The system Python with a GStreamer OpenCV and the software elements, else skip."""
    if not Path(SYSTEM_PYTHON).is_file():
        pytest.skip(f"{SYSTEM_PYTHON} not found (the GStreamer tests use the system's python3-opencv)")
    r = subprocess.run(
        [SYSTEM_PYTHON, "-c", PROBE, *ELEMENTS], capture_output=True, text=True, timeout=120, env=_env()
    )
    if r.returncode:
        why = (r.stderr.strip().splitlines() or ["?"])[-1]
        pytest.skip(
            f"{SYSTEM_PYTHON} cannot run the GStreamer reader ({why}); install: apt-get install "
            "python3-opencv gstreamer1.0-libav gstreamer1.0-plugins-good gstreamer1.0-plugins-bad"
        )
    return SYSTEM_PYTHON


@pytest.fixture(scope="module")
def av_only(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A folder holding only this environment's PyAV (``av`` and its bundled libraries), to lend it to
    the system Python without installing anything there."""
    av = pytest.importorskip("av")
    site = Path(av.__file__).resolve().parent.parent
    d = tmp_path_factory.mktemp("av-only")
    for name in ("av", "av.libs"):
        if (site / name).exists():
            (d / name).symlink_to(site / name)
    return str(d)


def _env(extra_path: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + ([extra_path] if extra_path else []))
    env["GRIMACE_GST_DECODER"] = "avdec_{codec}"
    env["GRIMACE_GST_CONVERTER"] = "videoconvert"
    return env


def gst(
    python: str, path: Path, fps: float | None = None, start: int = 0, pyav: str | None = None
) -> tuple[list[dict], np.ndarray | None]:
    """Run the GStreamer reader on ``path`` in the system Python: ``(items, images)``."""
    with tempfile.TemporaryDirectory() as d:
        pics = Path(d) / "frames.npy"
        r = subprocess.run(
            [python, "-c", RUN, str(path), "none" if fps is None else str(fps), str(start), str(pics)],
            capture_output=True,
            text=True,
            timeout=300,
            env=_env(pyav),
        )
        assert r.returncode == 0, r.stderr
        images = np.load(pics) if pics.exists() else None
    return json.loads(r.stdout.strip().splitlines()[-1]), images


def pyav_frames(path: Path, **kw: object) -> list[Frame]:
    items = list(iter_video(path, reader="pyav", **kw))
    assert not [i for i in items if isinstance(i, ItemError)], items
    return items  # type: ignore[return-value]


def _no_errors(items: list[dict]) -> list[dict]:
    assert not [i for i in items if "error" in i], items
    return items


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    pytest.importorskip("av")
    from tests.test_video_reader import encode

    d = tmp_path_factory.mktemp("gst")
    vfr_times = [0.0, 0.05, 0.12, 0.4, 0.43, 0.9, 1.0, 1.35, 1.4, 1.9, 2.02, 2.1]
    return {
        # 3 s of 60 fps H.264, a keyframe every 30 frames (0.5 s), B-frames on
        "h264": encode(d / "phone.mp4", 180, gop=30, size=SIZE),
        "vfr": encode(
            d / "vfr.mp4",
            len(vfr_times),
            times=vfr_times,
            keys={0, 3, 6, 9},
            gop=250,
            preset="veryfast",
            size=SIZE,
        ),
        "hevc": encode(d / "phone_hevc.mkv", 60, codec="libx265", gop=15, size=SIZE),
        "decoy": encode(d / "decoy.mp4", 7, gop=7, size=SIZE),
    }


def _same_as_pyav(got: list[dict], ref: list[Frame], images: np.ndarray | None = None) -> None:
    assert [g["index"] for g in got] == [f.index for f in ref]
    assert [g["time_s"] for g in got] == pytest.approx([f.time_s for f in ref], abs=1e-6)
    assert [g["meta"]["asked_s"] for g in got] == pytest.approx([f.meta["asked_s"] for f in ref], abs=1e-6)
    assert all(g["meta"]["reader"] == "gstreamer" and g["shape"] == [SIZE[1], SIZE[0], 3] for g in got)
    if images is not None:
        assert len(images) == len(ref)
        for img, f in zip(images, ref, strict=True):  # the same pictures (two decoders, one stream)
            assert np.abs(img.astype(int) - f.image.astype(int)).mean() < 2.0


def test_decode_all_without_pyav_matches_the_pyav_reader(system_python: str, clips: dict[str, Path]) -> None:
    vid = clips["h264"]
    for fps in (1.0, 7.0, None):
        got, images = gst(system_python, vid, fps)
        _no_errors(got)
        ref = pyav_frames(vid, fps=fps)
        # without PyAV there is no keyframe plan: the keyframe reader's picks are today's rule's
        ref_all = [f for f in iter_video(vid, fps=fps, reader="opencv") if isinstance(f, Frame)]
        assert [g["index"] for g in got] == [f.index for f in ref_all]
        assert [g["time_s"] for g in got] == pytest.approx([f.time_s for f in ref_all], abs=1e-6)
        assert all(g["meta"]["mode"] == "all" and g["meta"]["keyframe"] is None for g in got)
        if fps in (1.0, None):  # at 1 fps both rules pick the keyframes 0, 60, 120
            _same_as_pyav(got, ref, images)
    assert got[-1]["meta"]["decoded"] == 180 and len(got) == 180
    resumed, _ = gst(system_python, vid, 1.0, start=61)
    assert [g["index"] for g in resumed] == [120]


def test_keyframes_only_with_pyav_matches_the_pyav_reader(
    system_python: str, clips: dict[str, Path], av_only: str
) -> None:
    vid = clips["h264"]
    got, images = gst(system_python, vid, 1.0, pyav=av_only)
    ref = pyav_frames(vid, fps=1.0)
    _same_as_pyav(_no_errors(got), ref, images)
    assert [g["index"] for g in got] == [0, 60, 120]
    assert all(g["meta"]["mode"] == "keyframes" and g["meta"]["keyframes_only"] for g in got)
    assert all(g["meta"]["keyframe"] is True for g in got)
    assert [g["meta"]["decoded"] for g in got] == [1, 3, 5]  # the decoder saw the 6 keyframes only
    # 1.5 fps asks for 0, 0.667, 1.333, 2, 2.667 s: the keyframes at or before them are used
    got, _ = gst(system_python, vid, 1.5, pyav=av_only)
    _same_as_pyav(_no_errors(got), pyav_frames(vid, fps=1.5))
    # above the keyframe rate every frame is decoded, the selection is the PyAV reader's
    got, images = gst(system_python, vid, 7.0, pyav=av_only)
    _same_as_pyav(_no_errors(got), pyav_frames(vid, fps=7.0), images)
    assert all(g["meta"]["mode"] == "all" and not g["meta"]["keyframes_only"] for g in got)
    got, _ = gst(system_python, vid, None, pyav=av_only)
    _same_as_pyav(_no_errors(got), pyav_frames(vid))
    resumed, _ = gst(system_python, vid, 1.0, start=61, pyav=av_only)
    assert [g["index"] for g in resumed] == [f.index for f in pyav_frames(vid, fps=1.0, start_frame=61)]


def test_variable_frame_rate_and_hevc_mkv_with_pyav(
    system_python: str, clips: dict[str, Path], av_only: str
) -> None:
    for key, fps in (("vfr", 1.0), ("vfr", None), ("hevc", 4.0), ("hevc", None)):
        got, images = gst(system_python, clips[key], fps, pyav=av_only)
        _same_as_pyav(_no_errors(got), pyav_frames(clips[key], fps=fps), images)
    got, _ = gst(system_python, clips["vfr"], 1.0, pyav=av_only)
    assert [g["index"] for g in got] == [0, 6, 9]  # the keyframes at or before 0, 1, 2 s
    assert [g["time_s"] for g in got] == pytest.approx([0.0, 1.0, 1.9], abs=1e-3)
    assert all(g["meta"]["keyframes_only"] for g in got)


def test_an_injection_like_file_name_decodes_that_file(system_python: str, clips: dict[str, Path]) -> None:
    d = clips["h264"].parent / "names"
    d.mkdir(exist_ok=True)
    # decoys where a name cut at a space or a percent decoded twice would land
    shutil.copy(clips["decoy"], d / "a")
    shutil.copy(clips["decoy"], d / "100A percent.mp4")
    for name in (NASTY[0], NASTY[1], NASTY[4], NASTY[6]):
        target = d / name
        shutil.copy(clips["h264"], target)
        got, images = gst(system_python, target, 1.0)
        assert [g["index"] for g in _no_errors(got)] == [0, 60, 120], name
        assert images is not None
        ref = pyav_frames(clips["h264"], fps=1.0)
        assert np.abs(images[1].astype(int) - ref[1].image.astype(int)).mean() < 2.0, name
    assert sorted(p.name for p in d.iterdir()) == sorted(
        ["a", "100A percent.mp4", NASTY[0], NASTY[1], NASTY[4], NASTY[6]]
    )


def test_missing_empty_cut_and_truncated_files(
    system_python: str, clips: dict[str, Path], av_only: str, tmp_path: Path
) -> None:
    import av

    data = clips["h264"].read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) // 2])  # moov at the end: cut before the index
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "notes.mp4").write_text("not a video")
    # a faststart MP4 (index first) cut in its data: opens, then ends early
    fast = tmp_path / "fast.mp4"
    with (
        av.open(str(clips["h264"])) as src,
        av.open(str(fast), "w", options={"movflags": "faststart"}) as out,
    ):
        s = out.add_stream_from_template(src.streams.video[0])
        for p in src.demux(src.streams.video[0]):
            if p.dts is not None:
                p.stream = s
                out.mux(p)
    raw = fast.read_bytes()
    (tmp_path / "fast_cut.mp4").write_bytes(raw[: len(raw) * 2 // 3])
    cases = [
        ("missing.mp4", "no such file"),
        ("empty.mp4", "empty file"),
        ("cut.mp4", "cannot open as a video"),
        ("notes.mp4", "cannot open as a video"),
    ]
    for pyav in (None, av_only):
        for name, msg in cases:
            got, _ = gst(system_python, tmp_path / name, 1.0, pyav=pyav)
            assert len(got) == 1 and msg in got[0].get("error", ""), (name, pyav, got)
            assert got[0]["source"] == str(tmp_path / name)
        got, _ = gst(system_python, tmp_path / "fast_cut.mp4", None, pyav=pyav)
        frames = [g for g in got if "error" not in g]
        assert "error" in got[-1] and got[-1]["frames_read"] == len(frames) < 180, (pyav, got[-1])
        assert "truncated" in got[-1]["error"] or "corrupt" in got[-1]["error"], got[-1]


def test_portrait_video_and_an_audio_track(system_python: str, tmp_path: Path, av_only: str) -> None:
    av = pytest.importorskip("av")
    img = np.zeros((48, 64, 3), np.uint8)
    img[:10, :20] = (0, 0, 255)  # a red block top-left
    for degrees in (90, 180):
        vid = tmp_path / f"portrait{degrees}.mp4"
        with av.open(str(vid), "w") as out:
            s = out.add_stream("libx264", rate=30, options={"preset": "ultrafast"})
            s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
            s.set_display_rotation(degrees)
            a = out.add_stream("aac", rate=48000)  # phones record sound: the demuxer's other pad
            for i in range(5):
                for p in s.encode(av.VideoFrame.from_ndarray(img, format="bgr24")):
                    out.mux(p)
                af = av.AudioFrame.from_ndarray(np.zeros((1, 1600), np.float32), format="fltp", layout="mono")
                af.sample_rate, af.pts = 48000, i * 1600
                for p in a.encode(af):
                    out.mux(p)
            for st in (s, a):
                for p in st.encode():
                    out.mux(p)
        ref = pyav_frames(vid)
        for pyav in (None, av_only):
            got, images = gst(system_python, vid, None, pyav=pyav)
            assert len(_no_errors(got)) == 5 and images is not None
            assert images[0].shape == ref[0].image.shape == ((48, 64, 3) if degrees == 180 else (64, 48, 3))
            assert np.abs(images[0].astype(int) - ref[0].image.astype(int)).mean() < 2
