"""`grimace eval detect`: matching at IoU 0.5, precision/recall vs confidence, input formats."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from edge.boxes import box_iou
from edge.cli import app
from edge.scales import RGS
from train.data.format import LabelBox, write_data_yaml, write_labels
from train.evaluation.detect import (
    DetectFileError,
    evaluate_detections,
    match_image,
    read_predictions,
)


def _dataset(root: Path) -> Path:
    """Two 100x100 images; a.png: eye box (20..40, 20..40) + nose (40..60, 50..70); b.png: one ear."""
    for name in ("a.png", "b.png"):
        (root / "images/val").mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / "images/val" / name), np.zeros((100, 100, 3), np.uint8))
    write_labels(
        root / "labels/val/a.txt", [LabelBox(0, 0.3, 0.3, 0.2, 0.2, 1), LabelBox(2, 0.5, 0.6, 0.2, 0.2, 0)]
    )
    write_labels(root / "labels/val/b.txt", [LabelBox(1, 0.5, 0.5, 0.4, 0.4, 2)])
    write_data_yaml(root, RGS, {"val": "images/val"})
    return root


def _det(xyxy: list[float], unit: int | str, conf: float) -> dict:
    return {"xyxy": xyxy, "unit": unit, "confidence": conf}


def _write_preds(path: Path) -> None:
    recs = [
        # exact eye (TP, 0.9), duplicate eye (FP, 0.8), nose by name, shifted (IoU 1/7 < 0.5: FP, 0.6)
        {
            "record_schema": 2,
            "Filename": "a.png",
            "source": "dir/a.png",
            "detections": [_det([20, 20, 40, 40], 0, 0.9), _det([21, 21, 41, 41], 0, 0.8),
                           _det([50, 50, 70, 70], "nose", 0.6)],
        },
        # record schema 1 (grimace predict --json before schema 2): ear at 0.4 (TP), a stray nose at 0.2 (FP)
        {
            "source": "b.png",
            "width": 100,
            "height": 100,
            "boxes": [_det([30, 30, 70, 70], 1, 0.4), _det([0, 0, 10, 10], 2, 0.2)],
        },
        # schema 1 frames.jsonl of grimace score, empty: merges into b.png without adding anything
        {"name": "b.png", "source": "/x/b.png", "detections": []},
    ]
    lines = [json.dumps(r) for r in recs] + [
        "{not json",
        json.dumps({"Filename": "c.png", "detections": [{"xyxy": [0, 0, 1, 1]}]}),
    ]
    path.write_text("\n".join(lines) + "\n")


def test_precision_recall_vs_confidence(tmp_path: Path) -> None:
    data = _dataset(tmp_path / "ds")
    pred = tmp_path / "pred.jsonl"
    _write_preds(pred)
    with pytest.warns(UserWarning, match="bad prediction line"):
        rep = evaluate_detections(pred, data)
    assert rep["n_images"] == 2 and len(rep["skipped_lines"]) == 2
    assert "pred.jsonl:4: invalid JSON" in rep["skipped_lines"][0]
    assert "pred.jsonl:5:" in rep["skipped_lines"][1]
    t = rep["thresholds"]
    allc = rep["curves"]["all"]
    assert allc["n_gt"] == 3 and allc["n_pred"] == 5 and allc["n_tp"] == 2
    at = {x: t.index(x) for x in (0.0, 0.3, 0.5, 0.85, 0.95)}
    assert allc["precision"][at[0.0]] == pytest.approx(2 / 5) and allc["recall"][at[0.0]] == pytest.approx(
        2 / 3
    )
    assert allc["precision"][at[0.3]] == pytest.approx(2 / 4)
    assert allc["precision"][at[0.5]] == pytest.approx(1 / 3) and allc["recall"][at[0.5]] == pytest.approx(
        1 / 3
    )
    assert allc["precision"][at[0.85]] == 1.0 and allc["recall"][at[0.85]] == pytest.approx(1 / 3)
    assert np.isnan(allc["precision"][at[0.95]]) and allc["recall"][at[0.95]] == 0.0
    eye = rep["curves"]["eye"]
    assert eye["n_gt"] == 1 and eye["precision"][at[0.0]] == 0.5 and eye["recall"][at[0.0]] == 1.0
    assert rep["curves"]["nose"]["n_tp"] == 0 and rep["curves"]["ear"]["recall"][at[0.3]] == 1.0
    assert rep["curves"]["whiskers"]["n_gt"] == 0


def test_eval_detect_cli_writes_json_and_plots(tmp_path: Path) -> None:
    data = _dataset(tmp_path / "ds")
    pred = tmp_path / "pred.jsonl"
    _write_preds(pred)
    out = tmp_path / "out"
    res = CliRunner().invoke(
        app, ["eval", "detect", "--pred", str(pred), "--data", str(data), "--out", str(out)]
    )
    assert res.exit_code == 0, res.output
    rep = json.loads((out / "detect_report.json").read_text())  # strict JSON: NaN became null
    assert rep["curves"]["all"]["precision"][-1] is None
    assert (out / "precision_confidence.png").stat().st_size > 1000
    assert (out / "recall_confidence.png").stat().st_size > 1000
    assert "| eye |" in (out / "detect_report.md").read_text()


def test_detect_errors(tmp_path: Path) -> None:
    data = _dataset(tmp_path / "ds")
    p = tmp_path / "p.jsonl"
    p.write_text(json.dumps({"Filename": "zzz.png", "detections": []}) + "\n")
    with pytest.raises(DetectFileError, match="none of its 1 images"):
        evaluate_detections(p, data)
    p.write_text("garbage\n")
    with pytest.raises(
        DetectFileError, match=r"p\.jsonl: no valid prediction record; first problem: .*p\.jsonl:1"
    ):
        read_predictions(p, RGS)
    p.write_text(
        json.dumps({"Filename": "a.png", "detections": [_det([0, 0, 1, 1], 7, 0.5)]}) + "\n"
    )
    with pytest.raises(DetectFileError, match="unit index 7"):
        read_predictions(p, RGS)


def test_iou_and_greedy_matching() -> None:
    a = np.array([[0, 0, 10, 10]], float)
    b = np.array([[5, 0, 15, 10], [0, 0, 10, 10]], float)
    assert box_iou(a, b)[0].tolist() == pytest.approx([1 / 3, 1.0])
    # two predictions on one ground truth: only the more confident one is a TP
    tp = match_image(
        np.array([[0, 0, 10, 10], [0, 0, 10, 10]], float),
        np.array([0, 0]),
        np.array([0.3, 0.9]),
        np.array([[0, 0, 10, 10]], float),
        np.array([0]),
    )
    assert tp.tolist() == [False, True]
    # wrong unit never matches
    assert not match_image(a, np.array([1]), np.array([0.9]), a, np.array([0])).any()
