"""Benchmark: numpy/OpenCV post-processing of one image's fused output (8,400 candidates at 640).

Prints a table of median / p90 milliseconds over repeated runs on ONE CPU thread for several candidate
score distributions, and (when torch + ultralytics are installed) ultralytics' own
``non_max_suppression`` on the same tensor for comparison. Run::

    python -m bench.bench_postprocess [--repeats 300] [--scale rgs]

Target (issue 6): ``<= 1 ms`` median for 8,400 candidates at 640 on one CPU core with a realistic
output (a trained detector passes a few dozen to a few hundred candidates over the 0.25 threshold).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np

os.environ.setdefault("OMP_NUM_THREADS", "1")


def make_raw(
    spec, n: int, pass_frac: float, seed: int = 0, imgsz: int = 640, clusters: int = 10
) -> np.ndarray:
    """Synthetic raw output ``(n, 4 + nc + nc*ng)`` where about ``pass_frac`` of rows pass conf 0.25."""
    rng = np.random.default_rng(seed)
    nc, ng = spec.nc, spec.ng
    centres = rng.uniform(40, imgsz - 40, (clusters, 2))
    c = centres[rng.integers(0, clusters, n)] + rng.normal(0, 8, (n, 2))
    wh = rng.uniform(12, 90, (n, 2))
    xyxy = np.concatenate([c - wh / 2, c + wh / 2], 1)
    scores = rng.uniform(0.0, 0.2, (n, nc))
    hot = rng.random(n) < pass_frac
    scores[hot, rng.integers(0, nc, hot.sum())] = rng.uniform(0.26, 0.99, hot.sum())
    logits = rng.normal(0, 2, (n, nc, ng))
    logits[:, ~spec.grade_mask] = -np.inf
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    return np.concatenate([xyxy, scores, p.reshape(n, nc * ng)], 1).astype(np.float32)


def timeit(fn, repeats: int) -> tuple[float, float]:
    """Median and 90th percentile milliseconds of ``fn()`` after warm-up."""
    for _ in range(10):
        fn()
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append((time.perf_counter() - t0) * 1000)
    ts.sort()
    return statistics.median(ts), ts[int(0.9 * (len(ts) - 1))]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=300)
    ap.add_argument("--scale", default="rgs")
    ap.add_argument("--candidates", type=int, default=8400)
    args = ap.parse_args(argv)

    import cv2

    from edge.postprocess import letterbox_params, postprocess
    from edge.scales import load_scale

    cv2.setNumThreads(1)
    spec = load_scale(args.scale)
    info, _, _ = letterbox_params((480, 640), 640)
    ref = None
    try:
        import torch

        torch.set_num_threads(1)
        from ultralytics.utils.nms import non_max_suppression

        def ref(raw: np.ndarray) -> None:
            t = torch.from_numpy(raw)
            xywh = torch.cat([(t[:, :2] + t[:, 2:4]) / 2, t[:, 2:4] - t[:, :2], t[:, 4:]], 1).T[None]
            non_max_suppression(xywh, 0.25, 0.45, nc=spec.nc, max_det=300)
    except ImportError:
        pass

    print(
        f"post-processing {args.candidates} candidates, scale {spec.name} ({4 + spec.nc + spec.nc * spec.ng} "
        f"columns), conf 0.25, iou 0.45, 1 thread, {args.repeats} runs"
    )
    header = f"{'scenario':<34}{'over conf':>10}{'kept':>6}{'median ms':>11}{'p90 ms':>9}"
    if ref is not None:
        header += f"{'ultralytics+torch ms':>22}"
    print(header)
    print("-" * len(header))
    for label, frac in (
        ("typical (0.5% over conf)", 0.005),
        ("busy (3% over conf)", 0.03),
        ("crowded (15% over conf)", 0.15),
        ("worst case (all over conf)", 1.0),
    ):
        raw = make_raw(spec, args.candidates, frac)
        over = int((raw[:, 4 : 4 + spec.nc].max(1) > 0.25).sum())
        kept = len(postprocess(raw, spec, 0.25, 0.45, 300, letterbox_info=info))
        med, p90 = timeit(
            lambda raw=raw: postprocess(raw, spec, 0.25, 0.45, 300, letterbox_info=info), args.repeats
        )
        line = f"{label:<34}{over:>10}{kept:>6}{med:>11.3f}{p90:>9.3f}"
        if ref is not None:
            rmed, _ = timeit(lambda raw=raw: ref(raw), max(20, args.repeats // 5))
            line += f"{rmed:>22.3f}"
        print(line)


if __name__ == "__main__":
    main()
