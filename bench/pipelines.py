"""The pipelines ``grimace bench`` times: the two-stage teacher and the fused student, per backend.

Every pipeline maps one image file to a scored :class:`~edge.results.FrameResult` and reports the
seconds it spent in each stage:

* ``decode``: ``cv2.imread`` of the file (the same file for every pipeline);
* ``pre``: letterbox + normalise (:func:`edge.postprocess.preprocess`); for the teacher also cutting
  the unit crops and resizing/normalising them for the graders (``crop_pre``);
* ``infer``: the network forward passes (teacher: YOLO detector + one ViT forward per graded unit with
  that unit's crops, as :meth:`train.teacher.teacher.Teacher.predict` batches them);
* ``post``: teacher: ultralytics NMS + box scaling, assembling the detections; student:
  :func:`edge.postprocess.postprocess`; both then :func:`edge.scoring.score_frame`.

The models are built from their configs with **random weights** (the timing of a forward pass does
not depend on the weights). Random detector weights give meaningless boxes, so the teacher's grading
stage is fed the image's labelled unit boxes (synthetic labels; ``crops`` of them, the seed's
three-to-five action-unit crops), and the detector's NMS still runs on its real output.

Backends: PyTorch (``torch``; FP16 on CUDA) and ONNX Runtime (``onnx``; the CUDA provider on CUDA).
The fused student is exported with the project's exporter (:func:`convert.export.export_onnx`) and
run through the edge runtime's backend (:func:`edge.predictor.load_model`); the teacher's detector and
graders are exported with ``torch.onnx.export`` (the project has no exporter for them).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edge.postprocess import preprocess, scale_boxes
from edge.results import Detections, FrameResult
from edge.scales import ScaleSpec
from edge.scoring import score_frame

STAGES = ("decode", "pre", "infer", "post")

VIT_CONFIGS: dict[str, dict[str, Any]] = {
    # ViT-B/16 at 224: the seed's grader (google/vit-base-patch16-224-in21k architecture)
    "vit-b16": {
        "hidden_size": 768,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "intermediate_size": 3072,
        "image_size": 224,
        "patch_size": 16,
    },
}
"""ViT grader architectures by name; ``tiny`` comes from :data:`train.teacher.vit.TINY_VIT`."""


@dataclass
class BenchImage:
    """One benchmark image: its file and the boxes the teacher grades.

    Attributes:
        path: Image file (decoded by every pipeline).
        boxes: ``(K, 4)`` float32 ``x1 y1 x2 y2`` in image pixels (the labelled units to grade).
        units: ``(K,)`` int64 unit index of each box (scale order).
    """

    path: Path
    boxes: np.ndarray
    units: np.ndarray


@dataclass
class StageClock:
    """Seconds per stage of one call, with named sub-stages (``det_infer``...)."""

    stages: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))
    parts: dict[str, float] = field(default_factory=dict)

    def add(self, stage: str, part: str, dt: float) -> None:
        """Add ``dt`` seconds to ``stage`` and to the sub-stage ``part``."""
        self.stages[stage] += dt
        self.parts[part] = self.parts.get(part, 0.0) + dt

    @property
    def total(self) -> float:
        """End-to-end seconds (sum of the stages)."""
        return sum(self.stages.values())


def _sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def _decode(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError(f"{path}: cannot be decoded as an image")
    return img


def param_count(module: Any) -> int:
    """Number of parameters of a torch module."""
    return int(sum(p.numel() for p in module.parameters()))


def count_flops(module: Any, *inputs: Any, **kw: Any) -> float:
    """Forward FLOPs (a multiply-add counts 2) of ``module(*inputs, **kw)`` via torch's flop counter."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        module(*inputs, **kw)
    return float(counter.get_total_flops())


# --------------------------------------------------------------------------------------- teacher
@dataclass
class TeacherParts:
    """The teacher's networks (PyTorch, eval mode, on the CPU, FP32).

    Attributes:
        spec: The scale.
        detector: ultralytics ``DetectionModel`` (YOLOv5 of the given size, ``nc`` unit classes), fused.
        graders: One ``ViTForImageClassification`` per graded unit name.
        vit: The grader architecture name.
        detector_size: YOLOv5 size letter.
        imgsz: Detector input size.
        init: How the weights were initialised (always random here).
    """

    spec: ScaleSpec
    detector: Any
    graders: dict[str, Any]
    prep: Any
    vit: str
    detector_size: str
    imgsz: int
    init: str = "random (built from config; timing only)"
    stride: int = 32
    onnx_files: dict[str, Path] = field(default_factory=dict)

    def export_onnx(self, workdir: Path) -> dict[str, Path]:
        """Export the detector and one file per grader class count; sets :attr:`onnx_files`."""
        det = export_detector_onnx(self.detector, self.imgsz, workdir / "teacher_detector.onnx")
        files = {"detector": det}
        for u, g in self.graders.items():
            n = int(g.config.num_labels)
            key = f"grader_{n}"
            if key not in files:
                files[key] = export_vit_onnx(g, self.prep.size, workdir / f"teacher_{key}.onnx")
            files[u] = files[key]
        self.onnx_files = files
        return files

    def flops(self, crops: int) -> dict[str, float]:
        """FLOPs per image: detector at ``imgsz`` plus ``crops`` grader forwards at the grader's size."""
        import torch

        det = count_flops(self.detector, torch.zeros(1, 3, self.imgsz, self.imgsz))
        g = next(iter(self.graders.values()))
        s = self.prep.size
        per_crop = count_flops(g, pixel_values=torch.zeros(1, 3, s, s))
        return {"detector": det, "grader_per_crop": per_crop, "total": det + crops * per_crop}

    def params(self) -> dict[str, int]:
        """Parameter counts: detector, all graders, total."""
        det = param_count(self.detector)
        gr = sum(param_count(g) for g in self.graders.values())
        return {"detector": det, "graders": gr, "total": det + gr}


def build_teacher(spec: ScaleSpec, size: str = "s", vit: str = "vit-b16", imgsz: int = 640) -> TeacherParts:
    """Build the two-stage teacher's networks with random weights.

    Args:
        spec: The scale (graders are built for the units the seed grades: every unit with more than
            one grade level, except ``whiskers`` for RGS, which the seed's aRGS leaves out).
        size: YOLOv5 size of the detector (the seed used ``s``).
        vit: ``vit-b16`` (the seed's ViT-B/16 at 224) or ``tiny`` (tests).
        imgsz: Detector input size.

    Returns:
        The :class:`TeacherParts`.
    """
    import tempfile
    from copy import deepcopy

    import torch
    from ultralytics.nn.tasks import DetectionModel, yaml_model_load

    from train.teacher.vit import TINY_VIT, Preprocess, build_vit

    torch.manual_seed(0)
    det = DetectionModel(deepcopy(yaml_model_load(f"yolov5{size}.yaml")), nc=spec.nc, verbose=False)
    det = det.float().eval().fuse(verbose=False)
    cfg = dict(TINY_VIT) if vit == "tiny" else dict(VIT_CONFIGS[vit])
    graders = {}
    with tempfile.TemporaryDirectory(prefix="grimace-bench-vit-") as tmp:
        cfg_path = Path(tmp) / "config.json"
        cfg_path.write_text(json.dumps({**cfg, "model_type": "vit"}))
        for u in graded_units(spec):
            model, _init = build_vit(str(cfg_path), spec.unit(u).grades)
            graders[u] = model.float().eval()
    prep = Preprocess(int(cfg["image_size"]))
    return TeacherParts(spec, det, graders, prep, vit, size, imgsz, stride=int(max(det.stride)))


def graded_units(spec: ScaleSpec) -> list[str]:
    """Units the teacher grades: the seed's aRGS (ear, eye, nose) for RGS, else every graded unit."""
    names = [u.name for u in spec.units if u.grades > 1]
    if spec.name.lower().startswith("rgs"):
        names = [n for n in names if n != "whiskers"]
    return names


class TeacherPipeline:
    """Two-stage teacher: detect units, crop, grade each crop with its unit's ViT, score.

    Args:
        parts: The networks.
        backend: ``torch`` or ``onnx``.
        device: ``cpu`` or ``cuda``.
        threads: Intra-op threads (0 = library default).
        conf: Detector confidence threshold.
        iou: NMS IoU.
    """

    def __init__(
        self,
        parts: TeacherParts,
        backend: str,
        device: str = "cpu",
        threads: int = 0,
        conf: float = 0.25,
        iou: float = 0.45,
    ) -> None:
        import torch

        self.parts, self.backend, self.device = parts, backend, device
        self.spec = parts.spec
        self.conf, self.iou = conf, iou
        self.stride = parts.stride
        self.units = list(parts.onnx_files if backend == "onnx" else parts.graders)
        self.last_detector_boxes = 0
        if backend == "torch":
            half = device == "cuda"
            self._dtype = torch.float16 if half else torch.float32
            self._det = _to_device(parts.detector, device, half)
            self._graders = {u: _to_device(g, device, half) for u, g in parts.graders.items()}
            self._run_det = self._torch_det
            self._run_grader = self._torch_grader
        elif backend == "onnx":
            if not parts.onnx_files:
                raise ValueError("export the teacher first (TeacherParts.export_onnx)")
            files = parts.onnx_files
            self.units = [u for u in files if u != "detector" and not u.startswith("grader_")]
            self._det_sess = ort_backend(files["detector"], device, threads)
            # one session per unit (each holds its own weights, like the seed's separate graders)
            self._grader_sess = {u: ort_backend(files[u], device, threads) for u in self.units}
            self._run_det = self._ort_det
            self._run_grader = self._ort_grader
        else:
            raise ValueError(f"unknown backend {backend!r}; expected torch or onnx")

    # ---- backend-specific forward passes
    def _torch_det(self, x: np.ndarray) -> Any:
        import torch

        with torch.inference_mode():
            y = self._det(torch.from_numpy(x).to(self.device, self._dtype))
        y = y[0] if isinstance(y, (list, tuple)) else y
        _sync(self.device)
        return y

    def _ort_det(self, x: np.ndarray) -> Any:
        import torch

        return torch.from_numpy(self._det_sess.infer(x))

    def _torch_grader(self, unit: str, x: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            logits = self._graders[unit](pixel_values=torch.from_numpy(x).to(self.device, self._dtype)).logits
            p = torch.softmax(logits.float(), -1).cpu().numpy()
        return p

    def _ort_grader(self, unit: str, x: np.ndarray) -> np.ndarray:
        logits = self._grader_sess[unit].infer(x)
        e = np.exp(logits - logits.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)

    def __call__(self, item: BenchImage, crops: int) -> tuple[FrameResult, StageClock]:
        """Score one image; returns the result and its stage times."""
        from ultralytics.utils.nms import non_max_suppression

        from train.teacher.vit import crop_box

        clk = StageClock()
        t = time.perf_counter()
        img = _decode(item.path)
        t, dt = time.perf_counter(), time.perf_counter() - t
        clk.add("decode", "decode", dt)

        x, infos = preprocess([img], self.parts.imgsz, stride=self.stride, return_info=True)
        t, dt = time.perf_counter(), time.perf_counter() - t
        clk.add("pre", "det_pre", dt)

        pred = self._run_det(x)
        t, dt = time.perf_counter(), time.perf_counter() - t
        clk.add("infer", "det_infer", dt)

        det = non_max_suppression(pred.float(), conf_thres=self.conf, iou_thres=self.iou, max_det=100)[0]
        d = det.cpu().numpy()
        _ = scale_boxes(d[:, :4], infos[0])
        self.last_detector_boxes = len(d)
        t, dt = time.perf_counter(), time.perf_counter() - t
        clk.add("post", "det_post", dt)

        graded = set(self.units)
        names = [self.spec.units[int(k)].name for k in item.units]
        sel = [k for k, n in enumerate(names) if n in graded][:crops]
        boxes, units = item.boxes[sel], item.units[sel]
        prep = self.parts.prep
        mean = np.asarray(prep.mean, np.float32).reshape(1, 3, 1, 1)
        std = np.asarray(prep.std, np.float32).reshape(1, 3, 1, 1)
        batches: dict[str, tuple[list[int], np.ndarray]] = {}
        for u in dict.fromkeys(int(k) for k in units):
            idx = [i for i, k in enumerate(units) if int(k) == u]
            rgb = np.stack([prep.resize(crop_box(img, boxes[i], prep.margin)) for i in idx])
            xb = (rgb.transpose(0, 3, 1, 2).astype(np.float32) / np.float32(255.0) - mean) / std
            batches[self.spec.units[u].name] = (idx, np.ascontiguousarray(xb, np.float32))
        t, dt = time.perf_counter(), time.perf_counter() - t
        clk.add("pre", "crop_pre", dt)

        probs = np.zeros((len(units), self.spec.ng), np.float32)
        for name, (idx, xb) in batches.items():
            p = self._run_grader(name, xb)
            probs[idx, : p.shape[1]] = p
        t, dt = time.perf_counter(), time.perf_counter() - t
        clk.add("infer", "grade_infer", dt)

        dets = Detections(
            boxes.astype(np.float32), units.astype(np.int64), np.ones(len(units), np.float32), probs
        )
        res = score_frame(dets, self.spec, source=item.path.name)
        _t, dt = time.perf_counter(), time.perf_counter() - t
        clk.add("post", "score", dt)
        return res, clk


def _to_device(model: Any, device: str, half: bool) -> Any:
    import copy

    m = copy.deepcopy(model) if device != "cpu" or half else model
    m = m.to(device)
    return (m.half() if half else m).eval()


def export_detector_onnx(detector: Any, imgsz: int, path: Path) -> Path:
    """Export an ultralytics detector to ONNX (output ``(1, 4 + nc, N)``, xywh + class scores)."""
    import copy

    import torch

    m = copy.deepcopy(detector).float().eval()
    for mod in m.modules():
        if hasattr(mod, "export") and hasattr(mod, "format"):
            mod.export, mod.format = True, "onnx"
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        torch.onnx.export(
            m,
            (torch.zeros(1, 3, imgsz, imgsz),),
            str(path),
            input_names=["images"],
            output_names=["output0"],
            opset_version=17,
            dynamo=False,
        )
    return path


def export_vit_onnx(vit: Any, size: int, path: Path) -> Path:
    """Export a ViT classifier to ONNX (input ``pixel_values (B, 3, S, S)``, output logits)."""
    import torch

    class _Logits(torch.nn.Module):
        def __init__(self, m: Any) -> None:
            super().__init__()
            self.m = m

        def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
            return self.m(pixel_values=pixel_values).logits

    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        torch.onnx.export(
            _Logits(vit.float().eval()),
            (torch.zeros(2, 3, size, size),),
            str(path),
            input_names=["pixel_values"],
            output_names=["logits"],
            opset_version=17,
            dynamic_axes={"pixel_values": {0: "batch"}, "logits": {0: "batch"}},
            dynamo=False,
        )
    return path


def ort_backend(path: Path, device: str, threads: int) -> Any:
    """The edge runtime's ONNX Runtime backend (:class:`edge.backends.OnnxRuntimeBackend`), with the CUDA
    provider first on ``cuda`` (refused with a clear message when onnxruntime has none)."""
    from edge.backends import OnnxRuntimeBackend

    providers = (
        ["CUDAExecutionProvider", "CPUExecutionProvider"] if device == "cuda" else ["CPUExecutionProvider"]
    )
    return OnnxRuntimeBackend(path, providers=providers, threads=threads)


# --------------------------------------------------------------------------------------- student
@dataclass
class StudentParts:
    """A fused student model (PyTorch, eval, export mode, Conv+BN fused) and its metadata."""

    size: str
    model: Any
    meta: Any
    imgsz: int
    init: str = "random (built from config; timing only)"
    onnx_path: Path | None = None

    def export_onnx(self, workdir: Path) -> Path:
        """Export with the project's exporter (:func:`convert.export.export_onnx`); sets :attr:`onnx_path`."""
        import copy

        from convert.export import export_onnx

        dst = workdir / f"student_{self.size}.onnx"
        out, _md, _raw = export_onnx(copy.deepcopy(self.model), self.meta, dst)
        self.onnx_path = out
        return out

    def flops(self) -> float:
        """FLOPs of one ``imgsz`` image."""
        import torch

        return count_flops(self.model, torch.zeros(1, 3, self.imgsz, self.imgsz))

    def params(self) -> int:
        """Parameter count."""
        return param_count(self.model)


def build_student(spec: ScaleSpec, size: str, imgsz: int) -> StudentParts:
    """Build the fused student (``train.fused.model.build_fused_model``) with random weights."""
    import torch

    from edge.artifact import ModelMetadata
    from train.fused.model import build_fused_model

    torch.manual_seed(0)
    model = build_fused_model(spec, size, imgsz).float().eval()
    model.head.export = True
    model = model.fuse(verbose=False)
    meta = ModelMetadata(scale=spec.to_dict(), imgsz=(imgsz, imgsz), model_name=f"yolov5{size}-grade-random")
    return StudentParts(size, model, meta, imgsz)


class StudentPipeline:
    """Fused student through the edge runtime's one :class:`edge.predictor.Predictor`: pre-process, one
    forward pass, post-process, score; each stage timed on its own.

    Args:
        parts: The model.
        backend: ``torch`` (:class:`train.fused.backend.TorchBackend`, FP16 on CUDA) or ``onnx``
            (exported with :func:`convert.export.export_onnx`, run by :func:`edge.predictor.load_model`).
        device: ``cpu`` or ``cuda``.
        threads: Intra-op threads.
        conf: Unit-score threshold.
        iou: NMS IoU.
    """

    def __init__(
        self,
        parts: StudentParts,
        backend: str,
        device: str = "cpu",
        threads: int = 0,
        conf: float = 0.25,
        iou: float = 0.45,
    ) -> None:
        from edge.predictor import Model, Predictor, load_model

        self.parts, self.backend, self.device = parts, backend, device
        self.spec = parts.meta.spec
        self.conf, self.iou = conf, iou
        self.last_over_conf = 0
        if backend == "torch":
            import copy

            from train.fused.backend import TorchBackend

            module = copy.deepcopy(parts.model) if device != "cpu" else parts.model
            tb = TorchBackend(module, parts.meta, device, half=device == "cuda")
            model = Model(Path(f"<{parts.size} torch>"), parts.meta, tb)
        elif backend == "onnx":
            if parts.onnx_path is None:
                raise ValueError("export the student first (StudentParts.export_onnx)")
            model = load_model(parts.onnx_path, threads=threads)
            if device == "cuda":
                model.backend.close()
                model = Model(model.path, model.meta, ort_backend(parts.onnx_path, device, threads))
        else:
            raise ValueError(f"unknown backend {backend!r}; expected torch or onnx")
        self._model = model
        self.predictor = Predictor(model, conf=conf, iou=iou, batch=1)

    def __call__(self, item: BenchImage, crops: int = 0) -> tuple[FrameResult, StageClock]:
        """Score one image; returns the result and its stage times (``crops`` is ignored)."""
        p = self.predictor
        clk = StageClock()
        t = time.perf_counter()
        img = _decode(item.path)
        t, dt = time.perf_counter(), time.perf_counter() - t
        clk.add("decode", "decode", dt)
        x, infos = p.prepare([img])
        t, dt = time.perf_counter(), time.perf_counter() - t
        clk.add("pre", "pre", dt)
        raw = p.infer(x)
        _sync(self.device)
        t, dt = time.perf_counter(), time.perf_counter() - t
        clk.add("infer", "infer", dt)
        nc = self.spec.nc
        self.last_over_conf = int((raw[0, :, 4 : 4 + nc].max(1) > self.conf).sum())
        res = p.score([img], p.decode(raw, infos), [item.path.name])[0]
        _t, dt = time.perf_counter(), time.perf_counter() - t
        clk.add("post", "post", dt)
        return res, clk

    def close(self) -> None:
        """Release the backend."""
        self._model.close()


def strip_weights(parts: TeacherParts | StudentParts) -> None:
    """Drop the PyTorch networks (after FLOPs counting and export) so only the ONNX files remain."""
    if isinstance(parts, TeacherParts):
        parts.detector, parts.graders = None, {}
    else:
        parts.model = None
