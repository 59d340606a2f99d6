"""Grades and soft targets survive ultralytics' augmentation paired with their own boxes."""

from __future__ import annotations

import itertools
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.scales import RGS
from train.data.format import LabelBox, LabelError, write_data_yaml, write_labels
from train.fused.data import grade_dataset_class, image_to_soft_path, read_soft, write_soft

# a distinct solid colour per (unit, grade)
COLORS = {
    ug: (30 + 70 * (i % 4), 40 + 100 * ((i // 4) % 3), 230 - 60 * (i % 3))
    for i, ug in enumerate(itertools.product(range(4), range(3)))
}


def _soft_code(u: int, g: int) -> list[float]:
    a, b = 0.05 * u + 0.01, 0.05 * g + 0.02
    return [a, b, 1 - a - b]


def _decode_soft(row: np.ndarray) -> tuple[int, int]:
    return round((row[0] - 0.01) / 0.05), round((row[1] - 0.02) / 0.05)


def _make(root: Path, n: int = 6, size: int = 128) -> Path:
    rng = np.random.default_rng(1)
    for k in range(n):
        img = np.full((size, size, 3), 0, np.uint8)
        boxes, soft = [], []
        for slot in range(4):
            u, g = int(rng.integers(0, 4)), int(rng.integers(0, 3))
            w, h = rng.integers(24, 40, 2)
            x0 = 8 + (slot % 2) * 64 + int(rng.integers(0, 8))
            y0 = 8 + (slot // 2) * 64 + int(rng.integers(0, 8))
            cv2.rectangle(img, (x0, y0), (x0 + w - 1, y0 + h - 1), COLORS[(u, g)], -1)
            boxes.append(LabelBox(u, (x0 + w / 2) / size, (y0 + h / 2) / size, w / size, h / size, grade=g))
            soft.append(np.array(_soft_code(u, g)))
        ip = root / "images" / "train" / f"im{k}.png"
        ip.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(ip), img)
        write_labels(root / "labels" / "train" / f"im{k}.txt", boxes)
        write_soft(image_to_soft_path(ip), soft)
    write_data_yaml(root, RGS, {"train": "images/train", "val": "images/train"})
    return root


def _dataset(root: Path, **hyp_over: float):
    from ultralytics.cfg import get_cfg

    hyp = get_cfg(
        overrides={
            "hsv_h": 0.0,
            "hsv_s": 0.0,
            "hsv_v": 0.0,
            "degrees": 0.0,
            "shear": 0.0,
            "perspective": 0.0,
            **hyp_over,
        }
    )
    cls = grade_dataset_class()
    return cls(
        img_path=str(root / "images" / "train"),
        imgsz=128,
        augment=True,
        hyp=hyp,
        rect=False,
        stride=32,
        pad=0.0,
        data={"names": dict(enumerate(RGS.unit_names)), "nc": RGS.nc, "channels": 3},
        task="detect",
        spec=RGS,
    )


def _nearest(pixel_bgr: np.ndarray) -> tuple[int, int]:
    keys = list(COLORS)
    d = [np.abs(pixel_bgr - np.array(COLORS[k])).sum() for k in keys]
    return keys[int(np.argmin(d))]


@pytest.mark.parametrize(
    "hyp",
    [
        {"mosaic": 1.0, "fliplr": 0.5, "flipud": 0.5, "translate": 0.2, "scale": 0.4},
        {"mosaic": 0.0, "fliplr": 1.0, "flipud": 1.0, "translate": 0.1, "scale": 0.3},
    ],
    ids=["mosaic-affine-flips", "affine-flips"],
)
def test_transformed_sample_pairs_each_box_with_its_grade(tmp_path: Path, hyp: dict) -> None:
    ds = _dataset(_make(tmp_path), **hyp)
    checked = 0
    for rep in range(3):
        for i in range(len(ds)):
            s = ds[i]
            img = s["img"].numpy().transpose(1, 2, 0)  # CHW (RGB) -> HWC
            img = np.ascontiguousarray(img[..., ::-1])  # -> BGR like the colour table
            h, w = img.shape[:2]
            assert s["cls"].shape[1] == 1 and s["grade"].shape == (len(s["cls"]),)
            assert s["soft"].shape == (len(s["cls"]), RGS.ng)
            for b, c, g, so in zip(
                s["bboxes"].numpy(), s["cls"].numpy(), s["grade"].numpy(), s["soft"].numpy(), strict=False
            ):
                assert _decode_soft(so) == (int(c[0]), int(g))  # fields of one row stayed together
                cx, cy = int(b[0] * w), int(b[1] * h)
                assert _nearest(img[cy, cx].astype(float)) == (int(c[0]), int(g)), (rep, i, b)
                checked += 1
    assert checked > 30


def test_mixup_keeps_rows_together(tmp_path: Path) -> None:
    ds = _dataset(_make(tmp_path), mosaic=1.0, mixup=1.0)
    for i in range(len(ds)):
        s = ds[i]
        assert len(s["cls"]) == len(s["grade"]) == len(s["soft"]) == len(s["bboxes"])
        for c, g, so in zip(s["cls"].numpy(), s["grade"].numpy(), s["soft"].numpy(), strict=False):
            assert _decode_soft(so) == (int(c[0]), int(g))


def test_collate_and_bad_soft_file(tmp_path: Path) -> None:
    root = _make(tmp_path)
    ds = _dataset(root, mosaic=0.0)
    batch = ds.collate_fn([ds[0], ds[1]])
    n = len(batch["cls"])
    assert (
        batch["grade"].shape == (n,)
        and batch["soft"].shape == (n, RGS.ng)
        and batch["batch_idx"].shape == (n,)
    )
    sp = image_to_soft_path(root / "images" / "train" / "im0.png")
    sp.write_text("0.5 0.5 0\n-\n")
    with pytest.raises(LabelError, match=r"im0\.txt: 2 soft-target lines"):
        read_soft(sp, RGS.ng, 4)
    sp.write_text("0.5 0.6 0\n-\n-\n-\n")
    with pytest.raises(LabelError, match=r"im0.txt:1"):
        read_soft(sp, RGS.ng, 4)


def test_consistent_augmentation_shows_the_teacher_view(tmp_path: Path) -> None:
    """``--augment consistent``: every training sample is the image and boxes the teacher graded."""
    from ultralytics.cfg import get_cfg

    from train.fused.trainer import augmentation_overrides

    with pytest.raises(ValueError, match="augment must be one of"):
        augmentation_overrides("heavy")
    assert augmentation_overrides("standard") == {}
    over = augmentation_overrides("consistent")
    get_cfg(overrides=over)  # every key is an ultralytics setting
    root = _make(tmp_path)
    ds = _dataset(root, **over)
    for rep in range(2):
        for i in range(len(ds)):
            s = ds[i]
            name = Path(s["im_file"]).stem
            src = cv2.imread(str(root / "images" / "train" / f"{name}.png"))
            img = np.ascontiguousarray(s["img"].numpy().transpose(1, 2, 0)[..., ::-1])
            assert np.array_equal(img, src), (rep, name)  # same pixels: no flip, colour or geometry change
            lines = (root / "labels" / "train" / f"{name}.txt").read_text().split("\n")
            ref = np.array([[float(v) for v in ln.split()[1:5]] for ln in lines if ln.strip()])
            assert np.allclose(s["bboxes"].numpy(), ref, atol=1e-5)
