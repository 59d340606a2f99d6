"""edge.postprocess (numpy + OpenCV) against the PyTorch references: ultralytics LetterBox and
scale_boxes, torchvision batched_nms and ultralytics non_max_suppression, on the same raw tensors."""

from __future__ import annotations

import numpy as np
import pytest

from edge.artifact import ModelMetadata
from edge.postprocess import (
    MAX_NMS,
    LetterboxInfo,
    batched_nms,
    letterbox,
    letterbox_params,
    postprocess,
    preprocess,
    scale_boxes,
    top_k_stable,
)
from edge.scales import GOAT, MGS, RGS, ScaleSpec

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")
augment = pytest.importorskip("ultralytics.data.augment")
uops = pytest.importorskip("ultralytics.utils.ops")

SHAPES = [(480, 640), (640, 480), (333, 517), (1080, 1920), (17, 3001), (640, 640), (101, 99), (720, 1280)]


def _image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("new_shape", [640, (384, 640), (320, 256)])
@pytest.mark.parametrize("auto", [False, True])
def test_letterbox_matches_ultralytics(shape: tuple[int, int], new_shape, auto: bool) -> None:
    img = _image(*shape)
    ref = augment.LetterBox(new_shape=new_shape, auto=auto, stride=32)(image=img)
    out, info = letterbox(img, new_shape, stride=32, auto=auto)
    assert out.shape == ref.shape
    assert np.array_equal(out, ref)
    assert info.new_shape == out.shape[:2]
    assert info.orig_shape == shape


def _ref_preprocess(images: list[np.ndarray], imgsz: int) -> np.ndarray:
    lb = augment.LetterBox(new_shape=imgsz, auto=False, stride=32)
    im = np.stack([lb(image=x) for x in images])[..., ::-1].transpose((0, 3, 1, 2))
    t = torch.from_numpy(np.ascontiguousarray(im)).float()
    t /= 255
    return t.numpy()


def test_preprocess_matches_ultralytics_and_normalises() -> None:
    imgs = [_image(480, 640, 1), _image(500, 300, 2)]
    x = preprocess(imgs, 320)
    assert x.dtype == np.float32 and x.shape == (2, 3, 320, 320) and x.flags.c_contiguous
    assert np.array_equal(x, _ref_preprocess(imgs, 320))
    meta = ModelMetadata(scale=RGS.to_dict(), imgsz=(256, 320), mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.5))
    y, infos = preprocess(imgs, meta, return_info=True)
    assert y.shape == (2, 3, 256, 320) and len(infos) == 2
    base = preprocess(imgs, (256, 320))
    m = np.array(meta.mean, np.float32).reshape(1, 3, 1, 1)
    s = np.array(meta.std, np.float32).reshape(1, 3, 1, 1)
    np.testing.assert_allclose(y, (base - m) / s, rtol=1e-6, atol=1e-6)
    # channel order: a pure-blue BGR image becomes R=0, B=1
    blue = np.zeros((64, 64, 3), np.uint8)
    blue[..., 0] = 255
    z = preprocess(blue, 64)
    assert z[0, 2].min() == 1.0 and z[0, 0].max() == 0.0
    with pytest.raises(ValueError, match=r"expected a BGR array \(H, W, 3\)"):
        preprocess([np.zeros((10, 10), np.uint8)], 64)


@pytest.mark.parametrize("shape", SHAPES)
def test_scale_boxes_matches_ultralytics(shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(3)
    info, _, _ = letterbox_params(shape, 640)
    boxes = rng.uniform(-20, 660, (50, 4)).astype(np.float32)
    boxes[:, 2:] = boxes[:, :2] + rng.uniform(1, 200, (50, 2)).astype(np.float32)
    ref = uops.scale_boxes((640, 640), torch.from_numpy(boxes.copy()), shape).numpy()
    assert np.array_equal(scale_boxes(boxes, info), ref)


def _raw(spec: ScaleSpec, n: int, imgsz: int = 640, seed: int = 0, clusters: int = 12) -> np.ndarray:
    """Random fused output with clustered boxes (so NMS has work) and valid grade distributions."""
    rng = np.random.default_rng(seed)
    nc, ng = spec.nc, spec.ng
    centres = rng.uniform(40, imgsz - 40, (clusters, 2))
    c = centres[rng.integers(0, clusters, n)] + rng.normal(0, 6, (n, 2))
    wh = rng.uniform(10, 90, (n, 2))
    xyxy = np.concatenate([c - wh / 2, c + wh / 2], 1)
    scores = rng.uniform(0, 1, (n, nc)) ** 3
    logits = rng.normal(0, 2, (n, nc, ng))
    logits[:, ~spec.grade_mask] = -np.inf
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    return np.concatenate([xyxy, scores, p.reshape(n, nc * ng)], 1).astype(np.float32)


def _torch_reference(
    raw: np.ndarray,
    spec: ScaleSpec,
    conf: float,
    iou: float,
    max_det: int,
    orig,
    imgsz,
    max_nms: int = MAX_NMS,
):
    t = torch.from_numpy(raw)
    nc, ng = spec.nc, spec.ng
    best, unit = t[:, 4 : 4 + nc].max(1)
    m = best > conf
    idx = torch.nonzero(m).squeeze(1)
    idx = idx[torch.argsort(best[idx], descending=True, stable=True)[:max_nms]]  # ultralytics' max_nms
    keep = torchvision.ops.batched_nms(t[idx, :4], best[idx], unit[idx], iou)[:max_det]
    rows = idx[keep]
    u = unit[rows]
    boxes = uops.scale_boxes(imgsz, t[rows, :4].clone(), orig)
    cols = [t[r, 4 + nc + k * ng : 4 + nc + (k + 1) * ng] for r, k in zip(rows, u, strict=True)]
    gp = torch.stack(cols) if cols else torch.zeros((0, ng))
    return boxes.numpy(), u.numpy(), best[rows].numpy(), gp.numpy()


@pytest.mark.parametrize("spec", [RGS, MGS, GOAT], ids=lambda s: s.name)
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("orig", [(480, 640), (1080, 1920), (700, 500)])
def test_postprocess_equals_torch_reference(spec: ScaleSpec, seed: int, orig) -> None:
    imgsz = (640, 640)
    raw = _raw(spec, 8400, seed=seed)
    info, _, _ = letterbox_params(orig, imgsz)
    dets = postprocess(raw, spec, conf=0.25, iou=0.45, max_det=300, letterbox_info=info)
    boxes, unit, conf, gp = _torch_reference(raw, spec, 0.25, 0.45, 300, orig, imgsz)
    assert len(dets) == len(unit) > 10
    assert np.array_equal(dets.unit, unit)
    assert np.array_equal(dets.confidence, conf)
    assert np.array_equal(dets.xyxy, boxes)
    assert np.array_equal(dets.grade_probs, gp)
    assert dets.grade_probs.shape == (len(dets), spec.ng)
    np.testing.assert_allclose(dets.grade_probs.sum(1), 1, atol=1e-5)
    # recomputing the letterbox from shapes gives the same
    again = postprocess(raw, spec, letterbox_info=None, orig_shape=orig, input_shape=imgsz)
    assert np.array_equal(again.xyxy, dets.xyxy)


def test_postprocess_matches_ultralytics_non_max_suppression() -> None:
    """ultralytics' own NMS (grade columns riding along as 'mask' channels) keeps the same boxes."""
    from ultralytics.utils.nms import non_max_suppression

    spec = RGS
    raw = _raw(spec, 8400, seed=7)
    t = torch.from_numpy(raw.copy())
    xywh = t[:, :4].clone()
    xywh[:, :2] = (t[:, :2] + t[:, 2:4]) / 2
    xywh[:, 2:] = t[:, 2:4] - t[:, :2]
    pred = torch.cat([xywh, t[:, 4:]], 1).T[None]
    out = non_max_suppression(pred, 0.25, 0.45, nc=spec.nc, max_det=300, max_nms=MAX_NMS)[0].numpy()
    dets = postprocess(raw, spec, conf=0.25, iou=0.45, max_det=300)
    assert len(dets) == len(out)
    assert np.array_equal(dets.unit, out[:, 5].astype(np.int64))
    assert np.array_equal(dets.confidence, out[:, 4])
    np.testing.assert_allclose(dets.xyxy, out[:, :4], atol=1e-3)


@pytest.mark.parametrize("per_class_from", [1, 10**9], ids=["per-unit NMSBoxes", "NMSBoxesBatched"])
def test_batched_nms_matches_torchvision_with_ties_and_nesting(per_class_from: int) -> None:
    rng = np.random.default_rng(11)
    for _ in range(20):
        n = int(rng.integers(1, 400))
        xy = rng.uniform(0, 200, (n, 2)).astype(np.float32)
        wh = rng.uniform(1, 60, (n, 2)).astype(np.float32)
        b = np.concatenate([xy, xy + wh], 1)
        s = np.round(rng.uniform(0, 1, n), 1).astype(np.float32)  # many ties
        c = rng.integers(0, 4, n)
        s[s == 0] = 0.05  # the per-unit path keeps scores > 0 (post-processing passes only scores > conf)
        ref = torchvision.ops.batched_nms(torch.from_numpy(b), torch.from_numpy(s), torch.from_numpy(c), 0.5)
        assert np.array_equal(batched_nms(b, s, c, 0.5, per_class_from=per_class_from), ref.numpy())


def test_postprocess_edge_cases() -> None:
    spec = RGS
    raw = _raw(spec, 100)
    raw[:, 4 : 4 + spec.nc] = 0.1
    empty = postprocess(raw, spec, conf=0.25)
    assert len(empty) == 0 and empty.grade_probs.shape == (0, spec.ng)
    one = postprocess(_raw(spec, 8400)[None], spec, max_det=5)  # leading batch axis of 1
    assert len(one) == 5 and np.all(np.diff(one.confidence) <= 0)
    with pytest.raises(ValueError, match=r"expects raw output \(N, 20\).*got shape \(10, 7\)"):
        postprocess(np.zeros((10, 7), np.float32), spec)
    # unmapped boxes stay in input pixels; with only orig_shape they are clipped
    clip = postprocess(_raw(spec, 500), spec, orig_shape=(100, 120))
    assert clip.xyxy[:, [0, 2]].max() <= 120 and clip.xyxy[:, [1, 3]].max() <= 100


def test_postprocess_in_graph_nms_layout() -> None:
    spec = RGS
    ng = spec.ng
    rows = np.zeros((300, 6 + ng), np.float32)  # zero-padded like an in-graph NMS export
    rows[0] = [100, 120, 200, 220, 0.9, 1, 0.1, 0.2, 0.7]
    rows[1] = [300, 320, 340, 360, 0.6, 2, 0.5, 0.5, 0.0]
    rows[2] = [10, 10, 50, 50, 0.2, 0, 1.0, 0.0, 0.0]  # below conf
    info, _, _ = letterbox_params((480, 640), 640)
    dets = postprocess(rows, spec, conf=0.25, letterbox_info=info)
    assert len(dets) == 2
    assert dets.unit.tolist() == [1, 2]
    np.testing.assert_allclose(dets.confidence, [0.9, 0.6])
    np.testing.assert_allclose(dets.grade_probs, rows[:2, 6:])
    ref = uops.scale_boxes((640, 640), torch.from_numpy(rows[:2, :4].copy()), (480, 640)).numpy()
    assert np.array_equal(dets.xyxy, ref)
    bad = rows.copy()
    bad[0, 5] = 9
    with pytest.raises(ValueError, match=r"outside 0\.\.3"):
        postprocess(bad, spec)


def test_letterbox_info_roundtrip_of_box_corners() -> None:
    """A box drawn on the original maps into the letterbox and back to itself (within 1 px)."""
    img = np.zeros((300, 500, 3), np.uint8)
    img[100:150, 200:260] = 255
    lb, info = letterbox(img, 640)
    ys, xs = np.nonzero(lb[..., 0] > 128)
    box = np.array([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], np.float32)
    back = scale_boxes(box, info)
    np.testing.assert_allclose(back[0], [200, 100, 260, 150], atol=1.0)
    assert isinstance(info, LetterboxInfo) and info.pad == (0, 128)


def _realistic_raw(spec: ScaleSpec, n: int, n_over: int, seed: int) -> np.ndarray:
    """Mostly background (scores < conf) with ``n_over`` candidates over conf 0.25 in a few clusters,
    as a trained detector outputs on a frame with one face."""
    raw = _raw(spec, n, seed=seed)
    rng = np.random.default_rng(seed + 100)
    raw[:, 4 : 4 + spec.nc] *= 0.2  # everything under 0.25
    hot = rng.choice(n, n_over, replace=False)
    raw[hot, 4 + rng.integers(0, spec.nc, n_over)] = rng.uniform(0.26, 0.99, n_over)
    return raw


def _same(a, b) -> bool:
    return (
        np.array_equal(a.xyxy, b.xyxy)
        and np.array_equal(a.unit, b.unit)
        and np.array_equal(a.confidence, b.confidence)
        and np.array_equal(a.grade_probs, b.grade_probs)
    )


@pytest.mark.parametrize("n_over", [5, 40, 120, MAX_NMS])
@pytest.mark.parametrize("seed", [0, 1])
def test_max_nms_cap_changes_nothing_on_realistic_counts(n_over: int, seed: int) -> None:
    """Up to MAX_NMS candidates over conf (a trained detector passes a few dozen to a few hundred of
    8,400), the capped post-processing gives exactly the uncapped (pre-cap) result."""
    spec = RGS
    raw = _realistic_raw(spec, 8400, n_over, seed)
    info, _, _ = letterbox_params((480, 640), 640)
    capped = postprocess(raw, spec, 0.25, 0.45, 300, letterbox_info=info)
    uncapped = postprocess(raw, spec, 0.25, 0.45, 300, letterbox_info=info, max_nms=len(raw))
    assert len(capped) > 0 and _same(capped, uncapped)


@pytest.mark.parametrize("units", ["one unit", "all units"])
def test_max_nms_cap_worst_case_is_a_prefix_of_the_uncapped_result(units: str) -> None:
    """Every candidate over conf: the capped result is the uncapped one cut short (NMS kept the same
    boxes among the top ``max_nms``; only boxes ranked below the cap are lost), and it is exact when
    NMS already keeps ``max_det`` boxes among the capped candidates."""
    spec = RGS
    rng = np.random.default_rng(5)
    n = 2000
    raw = _raw(spec, n, seed=5, clusters=40)
    raw[:, 4 : 4 + spec.nc] = rng.uniform(0.0, 0.2, (n, spec.nc))
    unit = np.zeros(n, np.int64) if units == "one unit" else rng.integers(0, spec.nc, n)
    raw[np.arange(n), 4 + unit] = rng.uniform(0.26, 0.99, n)
    for max_det, cap in ((300, 64), (300, MAX_NMS), (300, 1000), (10, 200)):
        capped = postprocess(raw, spec, 0.25, 0.45, max_det, max_nms=cap)
        full = postprocess(raw, spec, 0.25, 0.45, max_det, max_nms=n)
        k = len(capped)
        assert 0 < k <= len(full)
        assert np.array_equal(capped.xyxy, full.xyxy[:k]) and np.array_equal(capped.unit, full.unit[:k])
        assert np.array_equal(capped.confidence, full.confidence[:k])
        assert np.array_equal(capped.grade_probs, full.grade_probs[:k])
        if k == max_det:
            assert k == len(full)  # NMS filled max_det from the capped candidates: exact
        # k is what NMS keeps among the cap's candidates (nothing lower can enter)
        score = raw[:, 4 : 4 + spec.nc].max(1)
        top = np.argsort(-score, kind="stable")[:cap]
        kept = batched_nms(raw[top, :4], score[top], raw[top, 4 : 4 + spec.nc].argmax(1), 0.45)
        assert k == min(max_det, len(kept))
    with pytest.raises(ValueError, match="max_nms must be >= 1"):
        postprocess(raw, spec, max_nms=0)


def test_top_k_stable_is_the_stable_sort_prefix() -> None:
    rng = np.random.default_rng(2)
    for _ in range(50):
        n = int(rng.integers(1, 300))
        s = np.round(rng.uniform(0, 1, n), 1).astype(np.float32)  # many ties at the cut
        k = int(rng.integers(1, n + 5))
        got = top_k_stable(s, k)
        want = np.sort(np.argsort(-s, kind="stable")[:k])
        assert np.array_equal(got, want)


def test_predictor_carries_max_nms(tmp_path) -> None:
    """The cap is a Predictor setting next to conf/iou/max_det: a cap of 1 leaves one box."""
    from edge.predictor import Predictor, load_model
    from tests.tiny_onnx import build_tiny_onnx, face_image

    path = build_tiny_onnx(tmp_path / "tiny.onnx", RGS, imgsz=320)
    img = face_image(RGS)
    with load_model(path) as m:
        full = Predictor(m).detect([img])[0]
        one = Predictor(m, max_nms=1).detect([img])[0]
    assert len(full) > 1 and len(one) == 1
    assert one.confidence[0] == full.confidence.max()
