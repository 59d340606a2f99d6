"""`grimace score --scale goat`: one verdict per animal by the rule of edge.verdict (issue 18, item 5)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import pytest
from typer.testing import CliRunner

from edge.cli import app
from edge.scales import GOAT
from tests.tiny_onnx import build_tiny_onnx, face_image

pytest.importorskip("onnxruntime")


def test_goat_summary_has_a_verdict_per_animal_with_the_rule(tmp_path: Path) -> None:
    model = build_tiny_onnx(tmp_path / "goat.onnx", GOAT, imgsz=160, cell=8, box=48)
    for animal, n in (("goatA", 12), ("goatB", 3)):  # goatB has too few frames for a verdict
        d = tmp_path / "frames" / animal
        d.mkdir(parents=True)
        for i in range(n):
            cv2.imwrite(str(d / f"f{i:02d}.png"), face_image(GOAT, 160, 160, size=16, seed=i))
    out = tmp_path / "out"
    r = CliRunner().invoke(
        app,
        [
            "score",
            str(tmp_path / "frames"),
            "--model",
            str(model),
            "--out",
            str(out),
            "--scale",
            "goat",
            "--min-frames",
            "10",
            "--no-annotate",
            "--no-progress",
        ],
    )
    assert r.exit_code == 0, r.output
    with (out / "summary_by_animal.csv").open(newline="", encoding="utf-8") as f:
        rows = {row["animal"]: row for row in csv.DictReader(f)}
    assert int(rows["goatA"]["n_scored"]) == 12 and int(rows["goatB"]["n_scored"]) == 3
    mean_a = float(rows["goatA"]["mean_pain_prob"])
    assert rows["goatA"]["verdict"] == ("painful" if mean_a >= GOAT.pain_threshold else "not painful")
    assert rows["goatB"]["verdict"] == "insufficient frames" and rows["goatB"]["min_frames"] == "10"
    rule = json.loads((out / "run.json").read_text())["verdict_rule"]
    assert rule["min_frames"] == 10 and rule["threshold"] == GOAT.pain_threshold
    assert "at least 10 scored frames" in rule["rule"]
