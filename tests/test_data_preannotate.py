"""Pre-annotation export: a real (tiny) ONNX model over new frames -> CVAT / Label Studio imports whose
re-import gives the same boxes and grades; least-certain-first selection."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from edge.cli import app
from edge.predictor import Predictor, load_model
from edge.results import Detections
from edge.scales import RGS
from tests.tiny_onnx import build_tiny_onnx, face_image
from train.data.annotations import import_annotations
from train.data.check import check_dataset
from train.data.format import load_dataset, read_labels
from train.data.importers import DatasetImportError
from train.data.preannotate import export_preannotations, frame_uncertainty, suggestions


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_onnx(tmp_path_factory.mktemp("m") / "rgs.onnx", RGS, imgsz=320)


def _frames(root: Path) -> list[Path]:
    root.mkdir(parents=True)
    paths = []
    for i, (b, drop) in enumerate([(1.0, ()), (0.6, ()), (0.8, ("nose",)), (0.3, ())]):
        p = root / f"cage{i}.png"
        cv2.imwrite(str(p), face_image(RGS, 240, 320, size=24, brightness=b, drop=drop, seed=i))
        paths.append(p)
    cv2.imwrite(str(root / "empty.png"), np.full((240, 320, 3), 114, np.uint8))  # nothing to detect
    (root / "broken.png").write_bytes(b"not an image")
    return paths


def _labels(root: Path) -> dict[str, list[tuple[int, int | None, tuple[float, ...]]]]:
    info = load_dataset(root)
    return {
        img.stem: [(b.unit, b.grade, (b.cx, b.cy, b.w, b.h))
                   for b in read_labels(root / "labels" / s / f"{img.stem}.txt", RGS)]
        for s in info.splits for img in info.images(s)
    }  # fmt: skip


def _expected(model: Path, frames: list[Path]) -> dict[str, list[tuple[int, int | None, tuple[float, ...]]]]:
    pred = Predictor(load_model(model))
    out = {}
    for p in frames:
        img = cv2.imread(str(p))
        h, w = img.shape[:2]
        sug = suggestions(pred.detect([img])[0], RGS)
        out[p.stem] = [(s.unit, s.grade, ((s.xyxy[0] + s.xyxy[2]) / 2 / w, (s.xyxy[1] + s.xyxy[3]) / 2 / h,
                                          (s.xyxy[2] - s.xyxy[0]) / w, (s.xyxy[3] - s.xyxy[1]) / h))
                       for s in sug]  # fmt: skip
    return out


def _same(got: dict, want: dict, tol: float) -> None:
    assert set(got) == set(want)
    for k in want:
        g = sorted(got[k], key=lambda t: (t[0], t[2]))
        w = sorted(want[k], key=lambda t: (t[0], t[2]))
        assert [(u, gr) for u, gr, _ in g] == [(u, gr) for u, gr, _ in w], k
        for (_, _, bg), (_, _, bw) in zip(g, w, strict=True):
            assert bg == pytest.approx(bw, abs=tol), k


def test_export_reimports_to_the_same_boxes_and_grades(tmp_path: Path, model_path: Path) -> None:
    frames = _frames(tmp_path / "new")
    pred = Predictor(load_model(model_path))
    detect = pred.detect
    pre = tmp_path / "pre"
    rep = export_preannotations([tmp_path / "new"], detect, RGS, pre, select="all")
    assert rep.frames == 5 and rep.written == 5 and any("broken.png" in s for s in rep.skipped)
    want = _expected(model_path, frames)
    assert sum(len(v) for v in want.values()) == rep.boxes > 10
    assert any(g is not None and g > 0 for v in want.values() for _, g, _ in v)  # grades vary
    want["empty"] = []
    # CVAT: the file CVAT would import, re-imported as the annotator would export it unchanged
    cvat = import_annotations("cvat", pre / "cvat_annotations.xml", pre / "images", "rgs", tmp_path / "c",
                              val_frac=0.0)  # fmt: skip
    assert cvat.skipped == []
    _same(_labels(tmp_path / "c"), want, tol=0.01 / 240)  # CVAT stores pixels with 2 decimals
    # Label Studio: the tasks' predictions, re-imported (as if accepted without edits)
    ls = import_annotations("label-studio", pre / "label_studio_tasks.json", pre / "images", "rgs",
                            tmp_path / "l", val_frac=0.0, use_predictions=True)  # fmt: skip
    assert ls.skipped == []
    _same(_labels(tmp_path / "l"), want, tol=1e-5)
    for ds in ("c", "l"):
        assert [p for p in check_dataset(tmp_path / ds) if p.severity == "error"] == []
    config = (pre / "label_studio_config.xml").read_text()
    assert '<RectangleLabels name="unit"' in config and 'perRegion="true"' in config
    # without --predictions, an untouched task is unlabelled (a background image), not a silent accept
    ls2 = import_annotations("label-studio", pre / "label_studio_tasks.json", pre / "images", "rgs",
                             tmp_path / "l2", val_frac=0.0)  # fmt: skip
    assert ls2.boxes == 0


def test_least_certain_first_and_limit(tmp_path: Path, model_path: Path) -> None:
    _frames(tmp_path / "new")
    detect = Predictor(load_model(model_path)).detect
    pre = tmp_path / "pre"
    rep = export_preannotations([tmp_path / "new"], detect, RGS, pre, select="uncertain", limit=3,
                                formats=["cvat"])  # fmt: skip
    assert rep.written == 3 and [p.name for p in rep.files] == ["cvat_annotations.xml", "uncertainty.csv"]
    with (pre / "uncertainty.csv").open() as f:
        rows = list(csv.DictReader(f))
    u = [float(r["uncertainty"]) for r in rows]
    assert u == sorted(u, reverse=True) and len(rows) == 5
    assert rows[0]["image"] == "empty.png" and rows[0]["missing"] == "1.0000"  # nothing found: first
    assert sorted(p.name for p in (pre / "images").iterdir()) == sorted(r["image"] for r in rows[:3])
    assert [r["selected"] for r in rows] == ["1", "1", "1", "0", "0"]
    # the frame with the nose dropped has a missing required unit
    nose = next(r for r in rows if r["image"] == "cage2.png")
    assert float(nose["missing"]) == pytest.approx(1 / 3, abs=1e-3)


def test_frame_uncertainty_parts() -> None:
    sure = Detections([[0, 0, 10, 10]], [0], [0.95], [[0.0, 0.0, 1.0]])
    torn = Detections([[0, 0, 10, 10], [20, 0, 30, 10]], [0, 1], [0.9, 0.4],
                      [[1 / 3, 1 / 3, 1 / 3], [1.0, 0.0, 0.0]])  # fmt: skip
    a, b = frame_uncertainty(sure, RGS), frame_uncertainty(torn, RGS)
    assert a.grade_entropy == pytest.approx(0.0) and a.low_confidence == pytest.approx(0.05)
    assert b.grade_entropy == pytest.approx(1.0) and b.low_confidence == pytest.approx(0.6)
    assert a.missing == pytest.approx(2 / 3) and b.missing == pytest.approx(
        1 / 3
    )  # RGS requires eye/ear/nose
    assert frame_uncertainty(Detections.empty(3), RGS).value == 1.0


def test_cli_export_preannotations(tmp_path: Path, model_path: Path) -> None:
    _frames(tmp_path / "new")
    cmd = ["data", "export-preannotations", str(tmp_path / "new")]
    res = CliRunner().invoke(
        app, [*cmd, "--model", str(model_path), "--out", str(tmp_path / "pre"), "--limit", "2"]
    )
    assert res.exit_code == 0, res.output
    assert "2 of 5 frames" in res.output and "skipped: " in res.output
    tasks = json.loads((tmp_path / "pre" / "label_studio_tasks.json").read_text())
    assert len(tasks) == 2 and tasks[0]["data"]["image"].startswith("/data/local-files/?d=")
    res = CliRunner().invoke(app, [*cmd, "--out", str(tmp_path / "p2")])
    assert res.exit_code == 2 and "exactly one of --model" in res.output
    with pytest.raises(DatasetImportError, match="unknown format"):
        export_preannotations([tmp_path / "new"], lambda x: [], RGS, tmp_path / "p3", formats=["yolo"])
