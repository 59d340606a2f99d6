"""edge.sources: image decoding and conversion, bad inputs, video sampling, camera reconnects."""

from __future__ import annotations

import itertools
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.sources import (
    CameraSource,
    Frame,
    ItemError,
    SourceError,
    csi_pipeline,
    describe_camera,
    iter_inputs,
    iter_video,
    read_image,
    to_bgr8,
    video_info,
)


def _img(h: int = 40, w: int = 60) -> np.ndarray:
    img = np.zeros((h, w, 3), np.uint8)
    img[:10, :20] = (0, 0, 255)  # red block top-left
    img[30:, 50:] = (255, 0, 0)  # blue block bottom-right
    return img


def write_video(path: Path, n: int = 50, fps: float = 10.0, size: tuple[int, int] = (64, 48)) -> Path:
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    for i in range(n):
        vw.write(np.full((size[1], size[0], 3), (i * 5) % 256, np.uint8))
    vw.release()
    return path


def test_image_formats_are_converted_to_bgr8(tmp_path: Path) -> None:
    from PIL import Image

    img = _img()
    cv2.imwrite(str(tmp_path / "a.png"), img)
    cv2.imwrite(str(tmp_path / "a.bmp"), img)
    cv2.imwrite(str(tmp_path / "gray.png"), img[..., 2])
    cv2.imwrite(str(tmp_path / "g16.png"), img[..., 2].astype(np.uint16) * 257)
    cv2.imwrite(str(tmp_path / "g12.tiff"), (img[..., 2].astype(np.uint32) * 4095 // 255).astype(np.uint16))
    cv2.imwrite(str(tmp_path / "rgba.png"), np.dstack([img, np.full(img.shape[:2], 100, np.uint8)]))
    Image.fromarray(img[..., ::-1]).save(tmp_path / "a.webp", lossless=True)
    Image.fromarray(img[..., ::-1]).save(tmp_path / "a.tiff")
    for name in ("a.png", "a.bmp", "rgba.png", "a.webp", "a.tiff"):
        out = read_image(tmp_path / name)
        assert out.dtype == np.uint8 and out.shape == (40, 60, 3), name
        assert np.array_equal(out, img), name
    for name in ("gray.png", "g16.png", "g12.tiff"):
        out = read_image(tmp_path / name)
        assert out.shape == (40, 60, 3) and out.dtype == np.uint8, name
        assert tuple(out[0, 0]) == (255, 255, 255) and tuple(out[39, 59]) == (0, 0, 0), name


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    from PIL import Image

    img = _img()
    pim = Image.fromarray(img[..., ::-1])
    exif = pim.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    pim.save(tmp_path / "rot.jpg", exif=exif, quality=98)
    out = read_image(tmp_path / "rot.jpg")
    assert out.shape == (60, 40, 3)
    expected = cv2.rotate(img, cv2.ROTATE_90_CLOCKWISE)
    assert np.abs(out.astype(int) - expected.astype(int)).mean() < 8


def test_to_bgr8_float_and_errors() -> None:
    f = np.zeros((4, 4), np.float32)
    f[0, 0] = 1.0
    out = to_bgr8(f)
    assert out.shape == (4, 4, 3) and out[0, 0, 0] == 255 and out[1, 1, 0] == 0
    with pytest.raises(SourceError, match="unsupported image layout"):
        to_bgr8(np.zeros((4, 4, 2), np.uint8), "x.png")


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("zero.jpg", b"", "empty file"),
        ("text.png", b"this is a text file, not an image\n", "not a decodable image"),
        ("garbage.jpg", b"\xff\xd8\xff\xe0" + bytes(range(256)) * 3, "truncated or corrupt JPEG"),
    ],
)
def test_bad_image_files_are_reported_by_name(
    tmp_path: Path, name: str, content: bytes, message: str
) -> None:
    p = tmp_path / name
    p.write_bytes(content)
    with pytest.raises(SourceError, match=message) as e:
        read_image(p)
    assert str(p) in str(e.value)


def test_truncated_jpeg_and_png(tmp_path: Path) -> None:
    _ok, buf = cv2.imencode(".jpg", np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8))
    (tmp_path / "t.jpg").write_bytes(buf.tobytes()[: len(buf) // 2])
    with pytest.raises(SourceError, match="truncated or corrupt JPEG"):
        read_image(tmp_path / "t.jpg")
    _ok, buf = cv2.imencode(".png", _img())
    (tmp_path / "t.png").write_bytes(buf.tobytes()[:-20])
    with pytest.raises(SourceError, match=r"t\.png"):
        read_image(tmp_path / "t.png")


def test_video_sampling_at_fps(tmp_path: Path) -> None:
    v = write_video(tmp_path / "v.mp4", n=50, fps=10)
    info = video_info(v)
    assert info["fps"] == 10 and info["frames"] == 50 and info["duration_s"] == 5
    every = [f for f in iter_video(v) if isinstance(f, Frame)]
    assert len(every) == 50 and [f.index for f in every[:3]] == [0, 1, 2]
    one = [f for f in iter_video(v, fps=1) if isinstance(f, Frame)]
    assert [f.index for f in one] == [0, 10, 20, 30, 40]
    assert [f.time_s for f in one] == [0, 1, 2, 3, 4]
    three = [f for f in iter_video(v, fps=3) if isinstance(f, Frame)]
    assert len(three) == 15  # 3 per second over 5 s
    assert all(0.25 <= b.time_s - a.time_s <= 0.45 for a, b in itertools.pairwise(three))
    resumed = [f.index for f in iter_video(v, fps=1, start_frame=23) if isinstance(f, Frame)]
    assert resumed == [30, 40]
    assert all(f.decode_s > 0 and f.image.shape == (48, 64, 3) for f in one)  # each decode timed


def test_truncated_and_missing_videos_are_item_errors(tmp_path: Path) -> None:
    v = write_video(tmp_path / "v.mp4")
    data = v.read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) // 2])
    (tmp_path / "empty.mp4").write_bytes(b"")
    for name, msg in (("cut.mp4", "cannot open as a video"), ("empty.mp4", "empty file")):
        items = list(iter_video(tmp_path / name))
        assert len(items) == 1 and isinstance(items[0], ItemError)
        assert msg in items[0].message and items[0].source.endswith(name)


def test_iter_inputs_expands_folders_and_reports_missing(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    cv2.imwrite(str(tmp_path / "sub" / "a.png"), _img())
    (tmp_path / "notes.txt").write_text("ignored inside folders")
    write_video(tmp_path / "v.mp4", n=20)
    items = list(iter_inputs([tmp_path, tmp_path / "nope.jpg", tmp_path / "notes.txt"], fps=5))
    errors = [i for i in items if isinstance(i, ItemError)]
    frames = [i for i in items if isinstance(i, Frame)]
    assert {Path(e.source).name for e in errors} == {"nope.jpg", "notes.txt"}
    assert any("unsupported file type" in e.message for e in errors)
    assert sum(f.meta["kind"] == "image" for f in frames) == 1
    assert sum(f.meta["kind"] == "video" for f in frames) == 10


def test_describe_camera_kinds() -> None:
    assert describe_camera("0")[:2] == ("usb", 0)
    assert describe_camera("/dev/video2")[0] == "usb"
    assert describe_camera("rtsp://10.0.0.2/stream")[0] == "stream"
    kind, arg, api = describe_camera("csi:1")
    assert kind == "csi" and "nvarguscamerasrc sensor-id=1" in arg and api == cv2.CAP_GSTREAMER
    assert describe_camera("videotestsrc ! appsink")[0] == "gstreamer"
    assert describe_camera("/data/session.mp4")[0] == "file"
    assert "appsink" in csi_pipeline()


class _FlakyCap:
    """A camera that delivers ``frames`` frames per connection, then fails reads."""

    def __init__(self, frames: int) -> None:
        self.left = frames
        self.open = True

    def isOpened(self) -> bool:
        return self.open

    def read(self) -> tuple[bool, np.ndarray | None]:
        if self.left <= 0:
            return False, None
        self.left -= 1
        return True, np.zeros((8, 8, 3), np.uint8)

    def release(self) -> None:
        self.open = False


def test_camera_loss_reconnects_with_backoff_and_never_raises() -> None:
    # opens: ok(3 frames), fail, fail, ok(2 frames), then fail forever
    plan = [3, None, None, 2]
    sleeps: list[float] = []

    def opener(arg: object, api: int) -> _FlakyCap | None:
        n = plan.pop(0) if plan else None
        if n is None:
            if len(sleeps) == 1:
                raise OSError("device busy")  # a driver that raises must not crash the loop
            return None
        return _FlakyCap(n)

    cam = CameraSource(
        "0", opener=opener, sleep=sleeps.append, backoff_s=0.5, max_backoff_s=2.0, max_retries=4
    )
    frames = list(cam)
    # read in a grabber thread, newest frame wins: every frame read is delivered or counted as dropped
    assert cam.frames_read == 5 and len(frames) + cam.frames_dropped == 5 and len(frames) >= 1
    kinds = [e.kind for e in cam.events]
    assert kinds[0] == "opened" and "lost" in kinds and "reconnected" in kinds and kinds[-1] == "gave_up"
    # backoff doubles and is capped; reset after a successful reconnect
    assert sleeps == [0.5, 1.0, 0.5, 1.0, 2.0]


def test_video_file_as_camera_resumes_and_ends(tmp_path: Path) -> None:
    v = write_video(tmp_path / "v.mp4", n=30, fps=10)
    cam = CameraSource(str(v), fps=2, start_frame=11)
    frames = list(cam)
    assert [f.index for f in frames] == [15, 20, 25]
    assert cam.events[-1].kind == "ended"


def test_gstreamer_camera_without_gstreamer_support_is_reported_not_raised() -> None:
    from edge.sources import gstreamer_available

    if gstreamer_available():
        pytest.skip("this OpenCV build has GStreamer")
    cam = CameraSource("videotestsrc ! videoconvert ! appsink", max_retries=2, sleep=lambda s: None)
    assert list(cam) == []
    assert any("no GStreamer support" in e.message for e in cam.events)
    assert cam.events[-1].kind == "gave_up"


def test_video_cut_mid_stream_keeps_frames_read_and_reports_the_cut(tmp_path: Path) -> None:
    vw = cv2.VideoWriter(str(tmp_path / "a.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    for i in range(50):
        vw.write(np.full((48, 64, 3), i * 5, np.uint8))
    vw.release()
    data = (tmp_path / "a.avi").read_bytes()
    (tmp_path / "cut.avi").write_bytes(data[: len(data) // 2])
    items = list(iter_video(tmp_path / "cut.avi"))
    frames = [i for i in items if isinstance(i, Frame)]
    assert 5 < len(frames) < 50
    assert isinstance(items[-1], ItemError) and "of 50 stated in its header" in items[-1].message
    assert items[-1].frames_read == len(frames)


def _vfr_video(path: Path, times: list[float]) -> Path:
    """An H.264 MP4 whose frames sit at the given times (variable frame rate, as phones record)."""
    av = pytest.importorskip("av")
    import fractions

    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264", rate=30)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        s.time_base = fractions.Fraction(1, 1000)
        for i, t in enumerate(times):
            f = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 20 * i, np.uint8), format="rgb24")
            f.pts, f.time_base = round(t * 1000), s.time_base
            for p in s.encode(f):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
    return path


def test_variable_frame_rate_video_keeps_container_times(tmp_path: Path) -> None:
    times = [0.0, 0.1, 0.3, 1.0, 1.1, 2.5, 2.6, 4.0]
    vid = _vfr_video(tmp_path / "phone.mp4", times)
    frames = [f for f in iter_video(vid) if not isinstance(f, ItemError)]
    assert [f.index for f in frames] == list(range(8))
    # the container's times, not index / nominal rate (8 frames over 4 s reads as ~2 fps)
    assert [f.time_s for f in frames] == pytest.approx(times, abs=0.04)
    sampled = [f for f in iter_video(vid, fps=1.0) if not isinstance(f, ItemError)]
    assert [f.time_s for f in sampled] == pytest.approx([0.0, 1.0, 2.5, 4.0], abs=0.04)
