"""PyAV video reader (edge.sources): keyframe sampling decodes only what it keeps, threaded decoding
keeps today's ``--fps`` selection, true stream times (variable frame rate), HEVC, resume, fallback.

The videos are real H.264/HEVC made by PyAV's encoders (libx264/libx265) at phone size, 1920x1080 at
60 frames/s, one second or so each so the tests stay fast."""

from __future__ import annotations

import fractions
from pathlib import Path

import numpy as np
import pytest

from edge.sources import Frame, ItemError, SourceError, iter_video, video_info, video_reader

av = pytest.importorskip("av")
from av.video.frame import PictureType  # noqa: E402

W, H, RATE = 1920, 1080, 60


def _frame(i: int, w: int = W, h: int = H) -> np.ndarray:
    """A textured frame (1080p unless told) that moves 8 px per frame (cheap to encode, not flat)."""
    x = (np.arange(w, dtype=np.int32) + 8 * i) % 256
    y = np.arange(h, dtype=np.int32)[:, None] % 256
    img = np.empty((h, w, 3), np.uint8)
    img[..., 0] = x[None, :]
    img[..., 1] = y
    img[..., 2] = (x[None, :] // 2 + y // 2 + 3 * i) % 256
    return img


def encode(
    path: Path,
    n: int,
    codec: str = "libx264",
    gop: int = 30,
    times: list[float] | None = None,
    keys: set[int] | None = None,
    bframes: int = 2,
    preset: str = "ultrafast",
    size: tuple[int, int] = (W, H),
) -> Path:
    """Encode ``n`` frames at 60 fps (or at ``times``; ``keys`` forces keyframes there) with B-frames,
    1920x1080 unless ``size`` says otherwise.

    (x264's ``ultrafast`` cannot mux the millisecond timestamps of a variable-rate stream: those use
    ``veryfast``.)"""
    if codec not in av.codecs_available:
        pytest.skip(f"this PyAV build has no {codec} encoder")
    if codec == "libx264":
        opts = {
            "preset": preset,
            "g": str(gop),
            "keyint_min": str(gop),
            "sc_threshold": "0",
            "bf": str(bframes),
        }
    else:
        opts = {
            "preset": "ultrafast",
            "x265-params": f"keyint={gop}:min-keyint={gop}:scenecut=0:log-level=error",
        }
    with av.open(str(path), "w") as out:
        s = out.add_stream(codec, rate=RATE, options=opts)
        s.width, s.height, s.pix_fmt = size[0], size[1], "yuv420p"
        if times is not None:
            s.time_base = fractions.Fraction(1, 1000)
        for i in range(n):
            f = av.VideoFrame.from_ndarray(_frame(i, *size), format="bgr24")
            if times is not None:
                f.pts, f.time_base = round(times[i] * 1000), s.time_base
            if keys is not None and i in keys:
                f.pict_type = PictureType.I
            for p in s.encode(f):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
    return path


@pytest.fixture(scope="module")
def h264(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """1.5 s of 1080p60 H.264, a keyframe every 30 frames (0.5 s) like a phone, B-frames on."""
    return encode(tmp_path_factory.mktemp("v") / "phone.mp4", 90, gop=30)


def frames(path: Path, **kw: object) -> list[Frame]:
    items = list(iter_video(path, **kw))
    assert not [i for i in items if isinstance(i, ItemError)], items
    return items  # type: ignore[return-value]


def test_sampling_at_or_below_the_keyframe_rate_decodes_only_keyframes(h264: Path) -> None:
    old = frames(h264, fps=2, reader="opencv")
    new = frames(h264, fps=2, reader="pyav")
    assert [f.index for f in new] == [f.index for f in old] == [0, 30, 60]
    assert [f.time_s for f in new] == pytest.approx([0.0, 0.5, 1.0], abs=1e-6)
    assert all(f.meta["mode"] == "keyframes" and f.meta["keyframe"] for f in new)
    assert [f.meta["decoded"] for f in new] == [1, 2, 3]  # nothing thrown away was decoded
    for a, b in zip(old, new, strict=True):  # the same picture as the old reader's
        assert a.image.shape == b.image.shape == (H, W, 3)
        assert np.abs(a.image.astype(int) - b.image.astype(int)).mean() < 2.0
    assert np.abs(new[1].image.astype(int) - _frame(30).astype(int)).mean() < 12  # lossy, but frame 30


def test_keyframe_sampling_reports_the_keyframe_actually_used(h264: Path) -> None:
    # 1.5 fps asks for 0, 0.667 and 1.333 s; the keyframes at or before them are 0, 0.5 and 1.0 s
    new = frames(h264, fps=1.5, reader="pyav")
    assert [f.index for f in new] == [0, 30, 60]
    assert [f.time_s for f in new] == pytest.approx([0.0, 0.5, 1.0], abs=1e-6)
    assert [f.meta["asked_s"] for f in new] == pytest.approx([0.0, 40 / 60, 80 / 60], abs=1e-6)
    assert all(0 <= f.meta["asked_s"] - f.time_s < 1 / 1.5 for f in new)


def test_sampling_above_the_keyframe_rate_keeps_todays_selection(h264: Path) -> None:
    for fps in (7.0,):
        old = frames(h264, fps=fps, reader="opencv")
        new = frames(h264, fps=fps, reader="pyav")
        assert [f.index for f in new] == [f.index for f in old], fps
        assert [f.time_s for f in new] == pytest.approx([f.time_s for f in old], abs=1e-3), fps
        assert all(f.meta["mode"] == "all" for f in new)
    every = frames(h264, reader="pyav")
    assert [f.index for f in every] == list(range(90)) and every[-1].meta["decoded"] == 90
    assert [f.time_s for f in every] == pytest.approx([i / RATE for i in range(90)], abs=1e-6)


def test_resume_in_keyframe_mode(h264: Path) -> None:
    assert [f.index for f in frames(h264, fps=2, start_frame=31, reader="pyav")] == [60]
    assert [f.index for f in frames(h264, fps=2, start_frame=30, reader="pyav")] == [30, 60]
    assert [f.index for f in frames(h264, fps=None, start_frame=85, reader="pyav")] == [85, 86, 87, 88, 89]


def test_variable_frame_rate_keyframes_keep_the_stream_times(tmp_path: Path) -> None:
    # a phone that slowed down: irregular times, keyframes where the encoder put them
    times = [0.0, 0.05, 0.12, 0.4, 0.43, 0.9, 1.0, 1.35, 1.4, 1.9, 2.02, 2.1]
    vid = encode(tmp_path / "vfr.mp4", len(times), times=times, keys={0, 3, 6, 9}, gop=250, preset="veryfast")
    got = frames(vid, fps=1.0, reader="pyav")
    assert all(f.meta["mode"] == "keyframes" for f in got)
    # asked 0, 1, 2 s: used the keyframes at or before them (0, 1.0, 1.9), reported at their own times
    assert [f.index for f in got] == [0, 6, 9]
    assert [f.time_s for f in got] == pytest.approx([0.0, 1.0, 1.9], abs=1e-3)
    every = frames(vid, reader="pyav")
    # the encoder's clock is 1/60 s: the times it wrote are within half a tick of the asked ones
    assert [f.time_s for f in every] == pytest.approx(times, abs=1 / 120)
    assert [f.index for f in every] == list(range(len(times)))


def test_hevc_keyframe_sampling(tmp_path: Path) -> None:
    vid = encode(tmp_path / "phone_hevc.mp4", 30, codec="libx265", gop=15)
    got = frames(vid, fps=4, reader="pyav")
    assert [f.index for f in got] == [0, 15] and [f.meta["decoded"] for f in got] == [1, 2]
    assert [f.index for f in frames(vid, fps=4, reader="opencv")] == [0, 15]
    info = video_info(vid)
    assert info["fps"] == RATE and info["frames"] == 30


def test_reader_choice_and_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert video_reader() == "pyav" and video_reader("opencv") == "opencv"
    monkeypatch.setenv("GRIMACE_VIDEO_READER", "opencv")
    assert video_reader() == "opencv"
    monkeypatch.setenv("GRIMACE_VIDEO_READER", "ffmpeg")
    with pytest.raises(SourceError, match="unknown video reader"):
        video_reader()
    bad = tmp_path / "notes.mp4"
    bad.write_text("not a video")
    items = list(iter_video(bad, fps=1, reader="pyav"))
    assert len(items) == 1 and isinstance(items[0], ItemError)
    assert "cannot open as a video" in items[0].message and items[0].source == str(bad)
    items = list(iter_video(bad, reader="nonsense"))
    assert isinstance(items[0], ItemError) and "unknown video reader" in items[0].message


@pytest.mark.parametrize("degrees", [90, 180, -90])
def test_portrait_phone_video_is_turned_upright_like_opencv(tmp_path: Path, degrees: int) -> None:
    vid = tmp_path / f"portrait{degrees}.mp4"
    img = np.zeros((48, 64, 3), np.uint8)
    img[:10, :20] = (0, 0, 255)  # a red block top-left
    with av.open(str(vid), "w") as out:
        s = out.add_stream("libx264", rate=30, options={"preset": "ultrafast"})
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        s.set_display_rotation(degrees)  # what a phone held upright writes
        for _ in range(5):
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="bgr24")):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
    old = frames(vid, reader="opencv")
    new = frames(vid, reader="pyav")
    assert new[0].image.shape == old[0].image.shape == ((48, 64, 3) if degrees == 180 else (64, 48, 3))
    assert np.abs(new[0].image.astype(int) - old[0].image.astype(int)).mean() < 2
