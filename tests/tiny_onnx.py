"""A tiny real ONNX graph that emits the fused raw output contract, for edge runtime tests.

It is a colour-blob "detector": the image is average-pooled on a ``cell`` grid; each cell is one
candidate with a fixed ``box`` x ``box`` box centred on it; unit ``i`` scores high where the cell has
unit ``i``'s colour (eye red, ear green, nose blue, whiskers yellow, ...); the grade distribution
rises with the cell's brightness. Built with ``onnx.helper`` (no torch), with the ``grimace``
metadata property, so :func:`edge.predictor.load_model` opens it like an exported model.

:func:`face_image` draws a matching synthetic "face" (coloured squares on grey).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge.artifact import ModelMetadata
from edge.scales import ScaleSpec

COLOURS_RGB = [(1, 0, 0), (0, 1, 0), (0, 0, 1), (1, 1, 0), (1, 0, 1), (0, 1, 1)]


def build_tiny_onnx(
    path: str | Path,
    spec: ScaleSpec,
    imgsz: int = 320,
    cell: int = 16,
    box: int = 48,
    batch: int | None = 1,
    meta_overrides: dict | None = None,
) -> Path:
    """Write the colour-blob model to ``path`` and return it.

    Args:
        path: Output ``.onnx``.
        spec: Scale (``nc`` <= 6 units).
        imgsz: Square input size.
        cell: Pooling grid step (pixels); candidates = ``(imgsz / cell) ** 2``.
        box: Box side in input pixels.
        batch: Fixed batch size or ``None`` for a dynamic batch axis.
        meta_overrides: Extra :class:`ModelMetadata` fields (e.g. a different ``scale``).
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nc, ng = spec.nc, spec.ng
    assert nc <= len(COLOURS_RGB)
    g = imgsz // cell
    protos = np.array([[1.0 if c else -1.0 for c in COLOURS_RGB[i]] for i in range(nc)], np.float32).T
    thr = -np.array([sum(COLOURS_RGB[i]) - 0.8 for i in range(nc)], np.float32)
    a = np.tile(np.array([0.0, 8.0, 16.0, 24.0, 32.0][:ng], np.float32), nc)[None]
    b = np.tile(np.array([0.0, -2.0, -6.0, -12.0, -20.0][:ng], np.float32), nc)
    b = np.where(spec.grade_mask.reshape(-1), b, -1e4).astype(np.float32)
    ys, xs = np.meshgrid(np.arange(g), np.arange(g), indexing="ij")
    cx, cy = (xs.ravel() + 0.5) * cell, (ys.ravel() + 0.5) * cell
    boxes = np.stack([cx - box / 2, cy - box / 2, cx + box / 2, cy + box / 2], 1)[None].astype(np.float32)
    inits = [
        numpy_helper.from_array(protos, "protos"),
        numpy_helper.from_array(thr, "thr"),
        numpy_helper.from_array(np.array(20.0, np.float32), "k"),
        numpy_helper.from_array(np.full((3, 1), 1 / 3, np.float32), "lum_w"),
        numpy_helper.from_array(a, "ga"),
        numpy_helper.from_array(b, "gb"),
        numpy_helper.from_array(np.zeros((1, 1, 4), np.float32), "zeros4"),
        numpy_helper.from_array(boxes, "boxes"),
        numpy_helper.from_array(np.array([0, 3, -1], np.int64), "shape_f"),
        numpy_helper.from_array(np.array([0, -1, nc, ng], np.int64), "shape_g"),
        numpy_helper.from_array(np.array([0, -1, nc * ng], np.int64), "shape_o"),
    ]
    nodes = [
        helper.make_node(
            "AveragePool", ["images"], ["pool"], kernel_shape=[cell, cell], strides=[cell, cell]
        ),
        helper.make_node("Reshape", ["pool", "shape_f"], ["flat"]),
        helper.make_node("Transpose", ["flat"], ["feat"], perm=[0, 2, 1]),
        helper.make_node("MatMul", ["feat", "protos"], ["dot"]),
        helper.make_node("Add", ["dot", "thr"], ["dot_t"]),
        helper.make_node("Mul", ["dot_t", "k"], ["logit"]),
        helper.make_node("Sigmoid", ["logit"], ["scores"]),
        helper.make_node("MatMul", ["feat", "lum_w"], ["lum"]),
        helper.make_node("Mul", ["lum", "ga"], ["gl0"]),
        helper.make_node("Add", ["gl0", "gb"], ["gl1"]),
        helper.make_node("Reshape", ["gl1", "shape_g"], ["gl2"]),
        helper.make_node("Softmax", ["gl2"], ["gp"], axis=-1),
        helper.make_node("Reshape", ["gp", "shape_o"], ["grades"]),
        helper.make_node("Mul", ["lum", "zeros4"], ["z4"]),
        helper.make_node("Add", ["z4", "boxes"], ["xyxy"]),
        helper.make_node("Concat", ["xyxy", "scores", "grades"], ["output0"], axis=2),
    ]
    bdim: int | str = batch if batch else "batch"
    graph = helper.make_graph(
        nodes,
        "tiny_colour_blob",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [bdim, 3, imgsz, imgsz])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [bdim, g * g, 4 + nc + nc * ng])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    fields = {
        "scale": spec.to_dict(),
        "imgsz": (imgsz, imgsz),
        "stride": 32,
        "batch": batch,
        "model_name": "tiny-colour-blob",
    }
    fields.update(meta_overrides or {})
    meta = ModelMetadata(**fields)
    onnx.helper.set_model_props(model, meta.to_onnx_props())
    onnx.checker.check_model(model)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def face_image(
    spec: ScaleSpec,
    h: int = 480,
    w: int = 640,
    size: int = 48,
    shift: tuple[int, int] = (0, 0),
    brightness: float = 1.0,
    drop: tuple[str, ...] = (),
    blur: int = 0,
    seed: int = 0,
) -> np.ndarray:
    """A BGR uint8 synthetic face: one coloured square per expected unit instance on grey.

    Units are laid out like a frontal rat face (eyes in a row, ears above, nose/whiskers below);
    ``drop`` removes units, ``blur`` applies a Gaussian blur of that kernel size.
    """
    import cv2

    rng = np.random.default_rng(seed)
    img = np.full((h, w, 3), 114, np.uint8)
    img = np.clip(img.astype(np.int16) + rng.integers(-6, 7, img.shape), 0, 255).astype(np.uint8)
    cx, cy = w // 2 + shift[0], h // 2 + shift[1]
    d = int(size * 1.6)
    layout = {
        "eye": [(cx - d, cy), (cx + d, cy)],
        "ear": [(cx - 2 * d, cy - 2 * d), (cx + 2 * d, cy - 2 * d)],
        "nose": [(cx, cy + d + size // 2)],
        "whiskers": [(cx, cy + 2 * d + size)],
        "cheek": [(cx - 2 * d, cy + d), (cx + 2 * d, cy + d)],
        "face": [(cx, cy)],
    }
    for i, unit in enumerate(spec.units):
        if unit.name in drop:
            continue
        rgb = np.array(COLOURS_RGB[i], np.float32) * 255 * brightness
        bgr = tuple(int(v) for v in rgb[::-1])
        side = size * 3 if unit.name == "face" else size
        for x, y in layout.get(unit.name, [(cx, cy)])[: unit.per_frame]:
            cv2.rectangle(img, (x - side // 2, y - side // 2), (x + side // 2, y + side // 2), bgr, -1)
    if blur:
        img = cv2.GaussianBlur(img, (blur | 1, blur | 1), 0)
    return img


def cage_video(
    path: str | Path, spec: ScaleSpec, seconds: int, fps: int = 10, blur: bool = True
) -> Path:
    """A 320×240 MPEG-4 clip of :func:`face_image` faces drifting sideways (and, with ``blur``,
    blurring every other frame, so frame quality differs): the stand-in camera of the watch tests."""
    import cv2

    path = Path(path)
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (320, 240))
    for i in range(fps * seconds):
        shift = (int(30 * np.sin(i / 7)), 0)
        vw.write(face_image(spec, 240, 320, size=24, shift=shift, blur=(i % 4) * 4 if blur else 0, seed=i))
    vw.release()
    return path
