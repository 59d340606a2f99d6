"""bench/bench_video.py and bench/bench_live.py helpers: the phone-like clip is real H.264 with a
keyframe every second, and looping it by remuxing keeps one continuous timeline."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.sources import Frame, iter_video, video_info

pytest.importorskip("av")


def test_phone_clip_and_loop(tmp_path: Path) -> None:
    from bench.bench_live import loop_clip
    from bench.bench_video import make_phone_clip

    clip = make_phone_clip(tmp_path / "c.mp4", 1.0, fps=30, size=(160, 96), bitrate=300_000)
    info = video_info(clip)
    assert info["fps"] == 30 and info["frames"] == 30
    looped = loop_clip(clip, tmp_path / "l.mp4", 2.5)
    assert video_info(looped)["frames"] == 90  # 3 copies: at least 2.5 s
    every = [f for f in iter_video(looped, reader="pyav") if isinstance(f, Frame)]
    assert [f.time_s for f in every] == pytest.approx([i / 30 for i in range(90)], abs=1e-6)
    keys = [f for f in iter_video(looped, fps=1, reader="pyav") if isinstance(f, Frame)]
    assert [f.index for f in keys] == [0, 30, 60] and all(f.meta["mode"] == "keyframes" for f in keys)


def test_decoder_thread_types_give_the_same_frames(tmp_path: Path) -> None:
    """The thread-type A/B measures speed only: every type decodes the same keyframes to the same pixels,
    and the benchmark puts the reader's setting back."""
    import edge.sources as sources
    from bench.bench_video import bench_threads, make_phone_clip

    clip = make_phone_clip(tmp_path / "c.mp4", 3.0, fps=30, size=(160, 96), bitrate=300_000)
    saved = sources.AV_THREAD_TYPE
    res = bench_threads(clip, fps=1.0, repeats=1)
    assert saved == sources.AV_THREAD_TYPE
    assert set(res) == {"AUTO", "FRAME", "SLICE", "NONE"}
    assert all(len(rows) == 1 and rows[0][0] > 0 for rows in res.values())
    frames = {}
    try:
        for kind in res:
            sources.AV_THREAD_TYPE = kind
            frames[kind] = [f for f in iter_video(clip, fps=1, reader="pyav") if isinstance(f, Frame)]
    finally:
        sources.AV_THREAD_TYPE = saved
    ref = frames["AUTO"]
    assert [f.index for f in ref] == [0, 30, 60]
    for got in frames.values():
        assert [f.index for f in got] == [f.index for f in ref]
        assert all((a.image == b.image).all() for a, b in zip(got, ref, strict=True))


def test_hevc_phone_clip_has_a_keyframe_every_second(tmp_path: Path) -> None:
    from bench.bench_video import make_phone_clip

    clip = make_phone_clip(tmp_path / "h.mp4", 3.0, fps=30, size=(160, 96), bitrate=300_000, codec="libx265")
    keys = [f for f in iter_video(clip, fps=1, reader="pyav") if isinstance(f, Frame)]
    assert [f.index for f in keys] == [0, 30, 60]
    assert all(f.meta["mode"] == "keyframes" and f.meta["keyframe"] for f in keys)
