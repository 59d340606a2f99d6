"""``make station-demo``: the lab station on the bundled demo model with a synthetic video as a
chamber (``python -m edge.station.demo``).

It prepares ``demo_station/`` (a study ``demo`` with two animals in two groups and a ``baseline``
timepoint whose protocol fits the video, chamber ``c1`` = the video) and serves the station on
http://127.0.0.1:8080/. Open that address on this machine: the first visit asks for the admin
password (user ``admin``); then start a session in chamber ``c1``. The demo model and video are
synthetic and say nothing about real animals.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from edge.demo import DEMO_MODEL, DEMO_VIDEO, _synth_video


def main(argv: list[str] | None = None) -> int:
    """Prepare the demo data folder and run ``grimace station``; returns the exit status."""
    ap = argparse.ArgumentParser(prog="python -m edge.station.demo", description="grimace station demo")
    ap.add_argument(
        "--data", type=Path, default=Path("demo_station"), help="data folder (default demo_station)"
    )
    ap.add_argument("--model", type=Path, default=DEMO_MODEL, help="ONNX model (default: the demo model)")
    ap.add_argument("--video", type=Path, default=None, help="video standing in for a camera")
    ap.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    args = ap.parse_args(argv)
    if not args.model.is_file():
        print(f"error: model not found: {args.model} (see python -m edge.demo --help)", file=sys.stderr)
        return 2
    video = args.video or (DEMO_VIDEO if DEMO_VIDEO.is_file() else None)
    if video is None:
        existing = sorted((args.data / "synth" / "videos").glob("*.mp4"))
        if existing:
            video = existing[0]
        else:
            print("rendering a 30 s synthetic session video with `grimace synth` ...")
            try:
                video = _synth_video(args.data / "synth", 30.0, 10.0, 7)
            except RuntimeError as e:
                print(f"error: {e}", file=sys.stderr)
                return 2
    from edge.predictor import load_model
    from edge.sources import video_info
    from edge.station.study import Protocol, Study
    from edge.storage import Store

    with load_model(args.model) as m:
        scale = m.spec.name
    seconds = max(video_info(video)["duration_s"], 1.0)
    args.data.mkdir(parents=True, exist_ok=True)
    with Store(args.data / "grimace.sqlite") as store:
        st = Study(store)
        if not st.study("demo"):
            st.add_study("demo", Protocol(scale, seconds / 10, seconds, 2.0), title="demo (synthetic)")
            st.add_animal("demo", "R1", group="sham", notes="synthetic demo animal")
            st.add_animal("demo", "R2", group="surgery", notes="synthetic demo animal")
            st.add_timepoint("demo", "baseline")
            st.add_timepoint("demo", "day1")
    print(f"station demo: model {args.model}, chamber c1 = {video} ({seconds:.0f} s)")
    print(
        f"open http://127.0.0.1:{args.port}/ in a browser on this machine "
        "(first visit: set the admin password)"
    )
    cmd = [sys.executable, "-m", "edge.cli", "station", "--data", str(args.data), "--model", str(args.model)]
    cmd += ["--chamber", f"c1={video}", "--port", str(args.port)]
    try:
        return subprocess.call(cmd)
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
