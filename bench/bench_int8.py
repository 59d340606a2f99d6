"""Benchmark: INT8 (``grimace convert onnx --int8``) against FP32 on the CPU: speed and agreement.

Quantizes an FP32 model with :func:`convert.quantize.quantize_model` (the product path) in each asked
variant (INT8 format, calibration method, parts kept FP32), then prints one table: median
milliseconds of one ONNX Runtime CPU inference at 1 and 2 intra-op threads, the speed-up over FP32
measured in the same run (all sessions timed in interleaved rounds, so a change of machine load hits
every row alike), and the agreement with FP32 on held-out frames (box match, unit and argmax-grade
agreement, frame-score ICC(2,1)). Run::

    python -m bench.bench_int8 [--model edge/assets/demo_model.onnx] [--calib DIR --holdout DIR]
        [--variants s8:minmax:outputs u8:minmax:outputs ...] [--rounds 15]

Without ``--calib``/``--holdout`` it renders a synthetic RGS study with ``grimace synth`` (needs the
``train`` package): its train split calibrates, its test split (other animals) is held out.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DEFAULT_VARIANTS = ("s8:minmax:outputs", "u8:minmax:outputs")


def synth_frames(folder: Path, n: int = 320, imgsz: int = 320, seed: int = 11) -> tuple[Path, Path]:
    """A synthetic study (``grimace synth``); returns its train and test image folders."""
    cmd = [sys.executable, "-m", "edge.cli", "synth", "--out", str(folder), "--scale", "rgs", "--n", str(n),
           "--seed", str(seed), "--imgsz", str(imgsz), "--subjects", "16", "--val-frac", "0.2",
           "--test-frac", "0.2"]  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True)
    return folder / "images" / "train", folder / "images" / "test"


def _session(path: Path, threads: int):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def interleaved_medians(models: dict[str, Path], threads: tuple[int, ...], rounds: int, per_round: int):
    """Median ms per (model, threads), all sessions timed round-robin on the same input."""
    sessions = {(name, t): _session(p, t) for name, p in models.items() for t in threads}
    first = next(iter(sessions.values())).get_inputs()[0]
    shape = [d if isinstance(d, int) else 1 for d in first.shape]
    x = np.random.default_rng(0).uniform(0, 1, shape).astype(np.float32)
    times: dict[tuple[str, int], list[float]] = {k: [] for k in sessions}
    for s in sessions.values():  # warm-up
        for _ in range(3):
            s.run(None, {first.name: x})
    for _ in range(rounds):
        for k, s in sessions.items():
            for _ in range(per_round):
                t0 = time.perf_counter()
                s.run(None, {first.name: x})
                times[k].append((time.perf_counter() - t0) * 1000)
    return {k: statistics.median(v) for k, v in times.items()}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=Path("edge/assets/demo_model.onnx"))
    ap.add_argument("--calib", type=Path)
    ap.add_argument("--holdout", type=Path)
    ap.add_argument("--calib-n", type=int, default=200)
    ap.add_argument("--holdout-n", type=int, default=60)
    ap.add_argument("--variants", nargs="+", default=list(DEFAULT_VARIANTS),
                    help="FORMAT:METHOD:KEEP_FP32, e.g. s8:minmax:outputs")  # fmt: skip
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--per-round", type=int, default=4)
    args = ap.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")

    import onnxruntime as ort

    from convert import quantize as q

    with tempfile.TemporaryDirectory(prefix="grimace-bench-int8-") as tmp:
        tmpd = Path(tmp)
        calib_dir, hold_dir = args.calib, args.holdout
        if calib_dir is None or hold_dir is None:
            calib_dir, hold_dir = synth_frames(tmpd / "synth")
            source = "synthetic RGS study, grimace synth --n 320 --imgsz 320 --seed 11: train / test split"
        else:
            source = "given folders"
        calib, _ = q.read_frames([calib_dir], args.calib_n)
        hold, _ = q.read_frames([hold_dir], args.holdout_n)
        models = {"FP32": args.model}
        rows: dict[str, tuple[q.Int8Agreement | None, str]] = {"FP32": (None, "")}
        for v in args.variants:
            fmt, method, keep = v.split(":")
            out = tmpd / f"{fmt}_{method}_{keep}.onnx"
            t0 = time.perf_counter()
            try:
                opts = q.QuantOptions(method=method, keep_fp32=keep, format=fmt)
                res = q.quantize_model(args.model, out, calib, hold, opts)
            except q.QuantizationRefused as e:
                rows[v] = (e.agreement, "REFUSED")
                continue
            rows[v] = (res.agreement, f"{time.perf_counter() - t0:.0f} s")
            models[v] = out
        med = interleaved_medians(models, (1, 2), args.rounds, args.per_round)

    print(f"INT8 vs FP32: {args.model.name}, ONNX Runtime {ort.__version__} CPU, {len(calib)} calibration / "
          f"{len(hold)} held-out frames ({source}); {args.rounds} interleaved rounds x {args.per_round} runs")
    header = (f"{'variant (format:calibration:kept FP32)':<40}{'1 thr ms':>9}{'x':>6}{'2 thr ms':>9}{'x':>6}"
              f"{'box':>8}{'unit':>8}{'grade':>8}{'ICC':>8}{'quantize':>10}")  # fmt: skip
    print(header)
    print("-" * len(header))
    for name, (ag, note) in rows.items():
        if name in models:
            m1, m2 = med[(name, 1)], med[(name, 2)]
            speed = f"{m1:>9.2f}{med[('FP32', 1)] / m1:>5.2f}x{m2:>9.2f}{med[('FP32', 2)] / m2:>5.2f}x"
        else:
            speed = f"{'-':>9}{'':>6}{'-':>9}{'':>6}"
        agree = (f"{ag.box_match:>8.1%}{ag.unit_agreement:>8.1%}{ag.grade_agreement:>8.1%}{ag.icc:>8.4f}"
                 if ag is not None else f"{'(reference)':>32}")  # fmt: skip
        print(f"{name:<40}{speed}{agree}{note:>10}", flush=True)


if __name__ == "__main__":
    main()
