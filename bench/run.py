"""``grimace bench``: teacher vs fused student on the same images in one run, per stage, per backend.

Steps (see :mod:`bench.pipelines` for what each stage contains):

1. synthetic images (``train.synth.generate_dataset``, written as JPEG) with their labelled unit boxes;
2. per model family (teacher, each student size): build with random weights, count FLOPs and
   parameters, export to ONNX, drop the PyTorch copy;
3. per pipeline (family x backend): build it, warm it up and record its peak memory;
4. timing: ``repeats`` rounds; in each round every pipeline scores all images in turn after one
   untimed call (rounds interleave the pipelines, so a change of machine load during the run hits all
   of them alike, while the untimed call keeps one runtime's still-spinning worker threads from
   slowing the next runtime's timed call); per-image medians per stage and end to end, and the ratio
   teacher / student per backend;
5. video scoring frames/s: the edge runtime (:func:`edge.runner.score_inputs`) on a synthetic video
   with each student's ONNX file;
6. optional post-processing micro-benchmark (:mod:`bench.bench_postprocess`) when present.

Peak memory is the process's resident-set high-water mark (Linux ``VmHWM``, reset through
``/proc/self/clear_refs``) while the pipeline is built and warmed up, minus the resident set before
(taken after garbage collection and glibc ``malloc_trim``): model weights, runtime buffers and
activations that pipeline added. Libraries already loaded (torch, onnxruntime) are not counted.
Where the mark cannot be reset it falls back to ``ru_maxrss`` (never reset; then only the first
pipeline's figure is meaningful), and says so in the output.
"""

from __future__ import annotations

import gc
import json
import os
import platform
import resource
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from bench.pipelines import STAGES, BenchImage


@dataclass
class Settings:
    """Benchmark settings (``grimace bench`` options).

    Attributes:
        imgsz: Detector / student input size (square letterbox).
        repeats: Timed passes over the images (median over ``images * repeats`` per pipeline).
        images: Number of synthetic images.
        warmup: Untimed runs per pipeline before timing.
        sizes: Fused student sizes (``n``, ``s``, ``m``).
        teacher_size: YOLOv5 size of the teacher's detector.
        teacher_vit: Grader architecture: ``vit-b16`` or ``tiny``.
        crops: Crops graded per image (the seed graded three to five).
        backends: ``torch`` and/or ``onnx``.
        device: ``cpu`` or ``cuda``.
        threads: Intra-op threads for PyTorch and ONNX Runtime (0 = all cores).
        video_seconds: Length of the synthetic video (0 = skip the video benchmark).
        video_fps: Its frame rate.
        postprocess_repeats: Runs of the post-processing micro-benchmark (0 = skip).
        scale: Scale name.
        seed: Synthetic data seed.
    """

    imgsz: int = 640
    repeats: int = 3
    images: int = 5
    warmup: int = 2
    sizes: tuple[str, ...] = ("n", "s")
    teacher_size: str = "s"
    teacher_vit: str = "vit-b16"
    crops: int = 5
    backends: tuple[str, ...] = ("onnx", "torch")
    device: str = "cpu"
    threads: int = 0
    video_seconds: float = 4.0
    video_fps: float = 15.0
    postprocess_repeats: int = 200
    scale: str = "rgs"
    seed: int = 0

    @classmethod
    def tiny(cls, **over: Any) -> Settings:
        """Settings for a run of seconds (tests): input 160, YOLOv5n detector, tiny ViT, 1 pass, 1 thread."""
        base = {
            "imgsz": 160, "repeats": 1, "images": 2, "warmup": 1, "sizes": ("n",), "teacher_vit": "tiny",
            "teacher_size": "n", "threads": 1,
            "video_seconds": 1.0, "video_fps": 4.0, "postprocess_repeats": 10,
        }
        return cls(**{**base, **over})


# ----------------------------------------------------------------------------------------- memory
def _status_kb(key: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def rss_mb() -> float:
    """Current resident set size in MiB (``VmRSS``; ``ru_maxrss`` where /proc is missing)."""
    kb = _status_kb("VmRSS")
    return (kb if kb is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) / 1024


def release_memory() -> None:
    """Garbage-collect and hand freed heap pages back to the OS (glibc ``malloc_trim``), so RSS drops."""
    gc.collect()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def reset_peak() -> bool:
    """Reset the RSS high-water mark (Linux >= 4.0); False where it cannot be reset."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return _status_kb("VmHWM") is not None
    except OSError:
        return False


def peak_mb() -> float:
    """RSS high-water mark in MiB since the last :func:`reset_peak` (``ru_maxrss`` as fallback)."""
    kb = _status_kb("VmHWM")
    return (kb if kb is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) / 1024


# ------------------------------------------------------------------------------------------ input
def prepare_images(workdir: Path, s: Settings) -> list[BenchImage]:
    """Synthetic images (JPEG, quality 95, like camera frames) and their labelled unit boxes."""
    import cv2

    from edge.scales import load_scale
    from train.data.format import list_images, read_labels
    from train.synth import generate_dataset

    spec = load_scale(s.scale)
    root = generate_dataset(workdir / "synth", s.scale, n=max(s.images, 2), seed=s.seed, imgsz=s.imgsz,
                            subjects=max(1, min(s.images, 4)), augment=False, overwrite=True)
    out: list[BenchImage] = []
    for src in list_images(root / "images")[: s.images]:
        img = cv2.imread(str(src))
        h, w = img.shape[:2]
        jpg = workdir / "images" / (src.stem + ".jpg")
        jpg.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(jpg), img, [cv2.IMWRITE_JPEG_QUALITY, 95])
        rel = src.relative_to(root / "images").with_suffix(".txt")
        labels = read_labels(root / "labels" / rel, spec)
        boxes = np.array(
            [[(b.cx - b.w / 2) * w, (b.cy - b.h / 2) * h, (b.cx + b.w / 2) * w, (b.cy + b.h / 2) * h]
             for b in labels], np.float32).reshape(-1, 4)
        out.append(BenchImage(jpg, boxes, np.array([b.unit for b in labels], np.int64)))
    if not out:
        raise RuntimeError(f"{root}: the synthetic generator wrote no images")
    return out


# ----------------------------------------------------------------------------------------- result
@dataclass
class PipelineResult:
    """Timings of one pipeline (ms per image, medians over ``n`` runs)."""

    name: str
    family: str
    backend: str
    n: int = 0
    total_ms: float = 0.0
    total_p90_ms: float = 0.0
    stage_ms: dict[str, float] = field(default_factory=dict)
    part_ms: dict[str, float] = field(default_factory=dict)
    peak_rss_added_mb: float = 0.0
    peak_cuda_mb: float | None = None
    build_s: float = 0.0
    note: str = ""


def _median(v: list[float]) -> float:
    return float(statistics.median(v)) if v else float("nan")


def _p90(v: list[float]) -> float:
    if not v:
        return float("nan")
    return float(np.percentile(v, 90))


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("grimace-edge", "torch", "onnxruntime", "onnx", "ultralytics", "transformers", "numpy",
                "opencv-python"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            continue
    return out


def machine_info(device: str) -> dict[str, Any]:
    """CPU model, logical cores, load average, GPU (if any)."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: dict[str, Any] = {
        "cpu": cpu, "logical_cores": os.cpu_count(), "affinity_cores": len(os.sched_getaffinity(0)),
        "system": f"{platform.system()} {platform.release()}", "loadavg_start": list(os.getloadavg()),
    }
    try:
        import torch

        info["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:
        info["gpu"] = None
    if device == "cpu" and info["gpu"] is None:
        info["gpu_note"] = "no CUDA GPU available (torch.cuda.is_available() is False); CPU figures only"
    return info


# ------------------------------------------------------------------------------------------- run
def run_benchmark(
    s: Settings, workdir: str | Path | None = None, log: Callable[[str], None] = print
) -> dict[str, Any]:
    """Run the whole benchmark; returns the JSON-ready result (see module docstring)."""
    import torch

    from bench import pipelines as P
    from edge.scales import load_scale

    if s.device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda: no CUDA GPU here (torch.cuda.is_available() is False)")
    for b in s.backends:
        if b not in ("torch", "onnx"):
            raise ValueError(f"unknown backend {b!r}; expected torch or onnx")
    prev_threads = torch.get_num_threads()
    if s.threads:
        torch.set_num_threads(s.threads)
    threads = s.threads or torch.get_num_threads()
    spec = load_scale(s.scale)
    t_start = time.perf_counter()
    outer_log = log

    def log(msg: str) -> None:
        outer_log(f"[{time.perf_counter() - t_start:6.1f} s] {msg}")

    own_tmp = workdir is None
    work = Path(tempfile.mkdtemp(prefix="grimace-bench-")) if own_tmp else Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "settings": {**asdict(s), "threads_used": threads},
        "machine": machine_info(s.device),
        "versions": _versions(),
        "weights": "random, built from configs (timing does not depend on weights)",
        "notes": [],
    }
    try:
        log(f"preparing {s.images} synthetic images at {s.imgsz} ...")
        images = prepare_images(work, s)

        # ---- model families: FLOPs, params, ONNX export, then drop the torch copy
        models: dict[str, Any] = {}
        log(f"teacher: YOLOv5{s.teacher_size} detector + {s.teacher_vit} graders: FLOPs, params, export ...")
        tparts = P.build_teacher(spec, s.teacher_size, s.teacher_vit, s.imgsz)
        tfl = tparts.flops(s.crops)
        models["teacher"] = {
            "description": f"YOLOv5{s.teacher_size} detector + {len(tparts.graders)} {s.teacher_vit} graders "
                           f"({', '.join(tparts.graders)}) at {tparts.prep.size}, {s.crops} crops/image",
            "params": tparts.params(), "flops": tfl, "gflops_per_image": tfl["total"] / 1e9,
        }
        if "onnx" in s.backends:
            tparts.export_onnx(work / "onnx")
        P.strip_weights(tparts)  # keeps spec, preprocessing, stride and the ONNX files
        students: dict[str, Any] = {}
        for size in s.sizes:
            log(f"student yolov5{size}: FLOPs, params, export ...")
            sp = P.build_student(spec, size, s.imgsz)
            fl = sp.flops()
            models[f"student-{size}"] = {
                "description": f"fused YOLOv5{size} GradeModel (one pass: boxes, units, grades)",
                "params": {"total": sp.params()}, "flops": {"total": fl}, "gflops_per_image": fl / 1e9,
            }
            if "onnx" in s.backends:
                sp.export_onnx(work / "onnx")
            P.strip_weights(sp)
            students[size] = sp
        for k, m in models.items():
            if k != "teacher":
                m["teacher_flops_ratio"] = models["teacher"]["flops"]["total"] / m["flops"]["total"]
        result["models"] = models
        gc.collect()

        # ---- pipelines: build, warm up, peak memory
        resettable = reset_peak()
        if not resettable:
            result["notes"].append("RSS high-water mark cannot be reset here: memory figures after the "
                                   "first pipeline are upper bounds (ru_maxrss)")
        pipes: dict[str, Any] = {}
        res: dict[str, PipelineResult] = {}
        fams = ["teacher"] + [f"student-{z}" for z in s.sizes]
        for fam in fams:
            for be in s.backends:
                name = f"{fam}/{be}"
                release_memory()
                base = rss_mb()
                reset_peak()
                if s.device == "cuda":
                    torch.cuda.reset_peak_memory_stats()
                t0 = time.perf_counter()
                if fam == "teacher":
                    if be == "torch":
                        parts = P.build_teacher(spec, s.teacher_size, s.teacher_vit, s.imgsz)
                    else:
                        parts = tparts
                    pipe = P.TeacherPipeline(parts, be, s.device, threads)
                else:
                    size = fam.split("-", 1)[1]
                    sp = P.build_student(spec, size, s.imgsz) if be == "torch" else students[size]
                    pipe = P.StudentPipeline(sp, be, s.device, threads)
                for k in range(s.warmup):
                    pipe(images[k % len(images)], s.crops)
                pr = PipelineResult(name, fam, be, build_s=time.perf_counter() - t0)
                pr.peak_rss_added_mb = max(0.0, peak_mb() - base)
                if s.device == "cuda":
                    pr.note = "torch FP16" if be == "torch" else "ORT CUDA provider"
                    if be == "torch":  # PyTorch's CUDA allocator only (ORT's arena is not visible here)
                        pr.peak_cuda_mb = torch.cuda.max_memory_allocated() / 2**20
                pipes[name], res[name] = pipe, pr
                log(f"  built {name} in {pr.build_s:.1f}s (peak RSS +{pr.peak_rss_added_mb:.0f} MiB)")

        # ---- timing, interleaved
        samples: dict[str, list[P.StageClock]] = {n: [] for n in pipes}
        det_boxes: list[int] = []
        over_conf: dict[str, list[int]] = {n: [] for n in pipes if not n.startswith("teacher")}
        scores: dict[str, list[float | None]] = {n: [] for n in pipes}
        try:
            from tqdm import tqdm

            bar = tqdm(total=s.repeats * len(images) * len(pipes), desc="timing", unit="run", leave=False)
        except ImportError:  # pragma: no cover
            bar = None
        for _r in range(s.repeats):
            for n, pipe in pipes.items():
                pipe(images[0], s.crops)  # untimed: lets the previous pipeline's idle threads settle
                for item in images:
                    fr, clk = pipe(item, s.crops)
                    samples[n].append(clk)
                    scores[n].append(fr.score)
                    if n.startswith("teacher"):
                        det_boxes.append(pipe.last_detector_boxes)
                    else:
                        over_conf[n].append(pipe.last_over_conf)
                    if bar is not None:
                        bar.update(1)
        if bar is not None:
            bar.close()
        for n, pr in res.items():
            cl = samples[n]
            pr.n = len(cl)
            tot = [c.total * 1000 for c in cl]
            pr.total_ms, pr.total_p90_ms = _median(tot), _p90(tot)
            pr.stage_ms = {st: _median([c.stages[st] * 1000 for c in cl]) for st in STAGES}
            parts_ = sorted({k for c in cl for k in c.parts})
            pr.part_ms = {k: _median([c.parts.get(k, 0.0) * 1000 for c in cl]) for k in parts_}
        result["pipelines"] = {n: asdict(pr) for n, pr in res.items()}
        ratios: dict[str, float] = {}
        for be in s.backends:
            t = res.get(f"teacher/{be}")
            for z in s.sizes:
                st = res.get(f"student-{z}/{be}")
                if t and st:
                    ratios[f"teacher/student-{z} ({be})"] = t.total_ms / st.total_ms
                    ratios[f"teacher/student-{z} ({be}, infer only)"] = (
                        t.stage_ms["infer"] / st.stage_ms["infer"]
                    )
        result["ratios"] = ratios
        result["observations"] = {
            "teacher_detector_boxes_median": _median([float(x) for x in det_boxes]),
            "student_candidates_over_conf_median": {n: _median([float(x) for x in v])
                                                    for n, v in over_conf.items()},
            "note": "random weights: the detector's boxes are meaningless, the teacher grades the labelled "
                    f"unit boxes ({s.crops} per image); post-processing cost depends on how many candidates "
                    "pass the confidence threshold (see the post-processing micro-benchmark)",
        }
        for n in list(pipes):
            if hasattr(pipes[n], "close"):
                pipes[n].close()
        pipes.clear()
        gc.collect()

        # ---- video scoring with the edge runtime
        if s.video_seconds > 0 and "onnx" in s.backends and s.device == "cpu":
            result["video"] = video_benchmark(work, s, {z: sp.onnx_path for z, sp in students.items()},
                                              threads, log)
        elif s.video_seconds > 0:
            result["notes"].append("video benchmark skipped (it runs the edge runtime's ONNX CPU path)")

        # ---- post-processing micro-benchmark
        if s.postprocess_repeats > 0:
            pp = postprocess_benchmark(spec, s.postprocess_repeats, s.imgsz)
            if pp is None:
                result["notes"].append("post-processing micro-benchmark (bench/bench_postprocess.py) absent")
            else:
                result["postprocess"] = pp
    finally:
        torch.set_num_threads(prev_threads)
        result["machine"]["loadavg_end"] = list(os.getloadavg())
        result["wall_s"] = round(time.perf_counter() - t_start, 1)
        if own_tmp:
            shutil.rmtree(work, ignore_errors=True)
    return result


def video_benchmark(
    work: Path, s: Settings, onnx_files: dict[str, Path | None], threads: int, log: Callable[[str], None]
) -> dict[str, Any]:
    """Frames/s of :func:`edge.runner.score_inputs` on a synthetic video, per student ONNX file."""
    from edge.runner import score_inputs
    from train.synth.video import generate_video

    video = generate_video(work / "video" / "session.mp4", s.scale, seconds=s.video_seconds, fps=s.video_fps,
                           seed=s.seed, imgsz=s.imgsz)
    out: dict[str, Any] = {"video": f"synthetic {s.video_seconds:g} s at {s.video_fps:g} fps, "
                                    f"{s.imgsz}x{s.imgsz * 3 // 4}, every frame scored"}
    for size, path in onnx_files.items():
        if path is None:
            continue
        log(f"video scoring with student-{size} (ONNX Runtime, edge runtime) ...")
        run = score_inputs([video], path, work / f"score_{size}", progress=False, annotate_images=False,
                           threads=threads, log=lambda _m: None)
        out[f"student-{size}"] = {
            "frames": len(run.records), "wall_s": run.wall_s, "frames_per_s": run.frames_per_s,
            "stage_ms_per_frame": run.times.per_frame_ms(),
        }
    return out


def postprocess_benchmark(spec: Any, repeats: int, imgsz: int) -> dict[str, Any] | None:
    """Median ms of :func:`edge.postprocess.postprocess`, 8,400 synthetic candidates at 640, one thread.

    Uses ``make_raw``/``timeit`` of :mod:`bench.bench_postprocess` (the edge engineer's micro-benchmark);
    ``None`` when that module is not present.
    """
    try:
        from bench.bench_postprocess import make_raw, timeit
    except ImportError:
        return None
    import cv2

    from edge.postprocess import letterbox_params, postprocess

    prev = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        info, _, _ = letterbox_params((480, 640), 640)
        out: dict[str, Any] = {"candidates": 8400, "threads": 1, "repeats": repeats, "scenarios": {}}
        for label, frac in (("typical (0.5% over conf)", 0.005), ("busy (3% over conf)", 0.03),
                            ("worst case (all over conf)", 1.0)):
            raw = make_raw(spec, 8400, frac)
            med, p90 = timeit(lambda raw=raw: postprocess(raw, spec, 0.25, 0.45, 300, letterbox_info=info),
                              repeats)
            out["scenarios"][label] = {"median_ms": med, "p90_ms": p90}
    finally:
        cv2.setNumThreads(prev)
    return out


# ------------------------------------------------------------------------------------------ table
def format_report(r: dict[str, Any]) -> str:
    """The printed tables."""
    s = r["settings"]
    m = r["machine"]
    lines = [
        f"grimace bench  {r['date']}  ({r['wall_s']} s)",
        f"machine: {m['cpu']}, {m['logical_cores']} logical cores ({m['affinity_cores']} usable), "
        f"{s['threads_used']} threads; load avg {m['loadavg_start'][0]:.2f} at start, "
        f"{m.get('loadavg_end', [float('nan')])[0]:.2f} at end",
        f"GPU: {m['gpu'] or 'none'}" + (f" - {m['gpu_note']}" if m.get("gpu_note") else ""),
        f"device {s['device']}, input {s['imgsz']}, {s['images']} images x {s['repeats']} repeats "
        f"(+{s['warmup']} warm-up), {s['crops']} crops/image for the teacher; weights: {r['weights']}",
        "versions: " + ", ".join(f"{k} {v}" for k, v in r["versions"].items()),
        "",
        "per-image latency, ms (median; end to end = decode + pre + infer + post)",
    ]
    hdr = f"{'pipeline':<22}{'decode':>8}{'pre':>8}{'infer':>10}{'post':>8}{'end-to-end':>12}{'p90':>10}" \
          f"{'peak RSS +MiB':>15}"
    lines += [hdr, "-" * len(hdr)]
    for n, p in r["pipelines"].items():
        st = p["stage_ms"]
        lines.append(f"{n:<22}{st['decode']:>8.1f}{st['pre']:>8.1f}{st['infer']:>10.1f}{st['post']:>8.1f}"
                     f"{p['total_ms']:>12.1f}{p['total_p90_ms']:>10.1f}{p['peak_rss_added_mb']:>15.0f}")
    cuda = {n: p["peak_cuda_mb"] for n, p in r["pipelines"].items() if p.get("peak_cuda_mb") is not None}
    if cuda:
        lines.append("PyTorch CUDA peak allocated, MiB: "
                     + ", ".join(f"{n} {v:.0f}" for n, v in cuda.items()))
    lines += ["", "teacher sub-stages, ms (median)"]
    for n, p in r["pipelines"].items():
        if p["family"] == "teacher":
            lines.append(f"  {n:<20}" + "  ".join(f"{k} {v:.1f}" for k, v in p["part_ms"].items()))
    lines += ["", "ratio teacher / student (same images, same run)"]
    for k, v in r["ratios"].items():
        lines.append(f"  {k:<42}{v:>8.1f}x")
    lines += ["", f"{'model':<14}{'params (M)':>12}{'GFLOPs/image':>14}{'teacher/model FLOPs':>21}"]
    for k, mm in r["models"].items():
        ratio = mm.get("teacher_flops_ratio")
        lines.append(f"{k:<14}{mm['params']['total'] / 1e6:>12.2f}{mm['gflops_per_image']:>14.2f}"
                     + (f"{ratio:>20.1f}x" if ratio else f"{'':>21}"))
    if "teacher" in r["models"]:
        t = r["models"]["teacher"]
        lines.append(f"  teacher: {t['description']}; detector {t['flops']['detector'] / 1e9:.2f} GFLOPs, "
                     f"grader {t['flops']['grader_per_crop'] / 1e9:.3g} GFLOPs per crop")
    ob = r.get("observations", {})
    if ob:
        lines.append(f"  teacher detector boxes kept (median): {ob['teacher_detector_boxes_median']:.0f}; "
                     "student candidates over conf (median): "
                     + ", ".join(f"{k} {v:.0f}"
                                 for k, v in ob["student_candidates_over_conf_median"].items()))
    if "video" in r:
        v = r["video"]
        lines += ["", f"video scoring, edge runtime (grimace score), ONNX Runtime: {v['video']}"]
        for k, x in v.items():
            if k == "video":
                continue
            lines.append(f"  {k:<12}{x['frames']:>5} frames {x['frames_per_s']:>8.1f} frames/s   "
                         + " | ".join(f"{a} {b:.1f} ms" for a, b in x["stage_ms_per_frame"].items()))
    if "postprocess" in r:
        pp = r["postprocess"]
        lines += ["", f"post-processing alone: {pp['candidates']} candidates at 640, 1 thread, "
                      f"{pp['repeats']} runs (edge.postprocess.postprocess)"]
        for k, x in pp["scenarios"].items():
            lines.append(f"  {k:<30}median {x['median_ms']:.3f} ms  p90 {x['p90_ms']:.3f} ms")
    for note in r.get("notes", []):
        lines.append(f"note: {note}")
    return "\n".join(lines)


def write_json(r: dict[str, Any], path: str | Path) -> Path:
    """Write the result as JSON."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(r, indent=1, default=float))
    return p
