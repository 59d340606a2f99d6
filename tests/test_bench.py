"""grimace bench: the tiny run end to end (CLI, table, JSON) and the staged teacher against Teacher."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")
pytest.importorskip("transformers")
for _mod in ("train.teacher.vit", "train.fused.model", "convert.export"):  # the parts the bench times
    pytest.importorskip(_mod)


def test_bench_tiny_cli_table_and_json(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from edge.cli import app

    out = tmp_path / "bench.json"
    res = CliRunner().invoke(app, ["bench", "--tiny", "--json", str(out), "--workdir", str(tmp_path / "w")])
    assert res.exit_code == 0, res.output
    text = res.output
    for needle in ("teacher/onnx", "teacher/torch", "student-n/onnx", "student-n/torch",
                   "ratio teacher / student", "GFLOPs/image", "video scoring", "GPU: none"):
        assert needle in text, needle
    r = json.loads(out.read_text())
    assert r["settings"]["imgsz"] == 160 and r["settings"]["teacher_vit"] == "tiny"
    assert set(r["pipelines"]) == {"teacher/onnx", "teacher/torch", "student-n/onnx", "student-n/torch"}
    for name, p in r["pipelines"].items():
        # 2 images x 1 repeat, each a full decode -> score run
        assert p["n"] == 2, name
        assert set(p["stage_ms"]) == {"decode", "pre", "infer", "post"}
        assert all(v > 0 for v in p["stage_ms"].values()), (name, p["stage_ms"])  # every stage timed
        assert p["total_ms"] == pytest.approx(sum(p["stage_ms"].values()), rel=0.05, abs=0.05), name
        assert p["peak_rss_added_mb"] > 0, name  # building a model adds weights and buffers
    teacher = r["pipelines"]["teacher/onnx"]["part_ms"]
    assert {"det_pre", "det_infer", "det_post", "crop_pre", "grade_infer", "score"} <= set(teacher)
    for be in ("onnx", "torch"):
        ratio = r["ratios"][f"teacher/student-n ({be})"]
        t = r["pipelines"][f"teacher/{be}"]["total_ms"]
        s = r["pipelines"][f"student-n/{be}"]["total_ms"]
        assert math.isclose(ratio, t / s, rel_tol=1e-9)
    m = r["models"]
    # tiny: YOLOv5n detector + 3 tiny graders (aRGS: ear, eye, nose) vs one fused YOLOv5n
    assert "YOLOv5n detector + 3 tiny graders" in m["teacher"]["description"]
    tp = m["teacher"]["params"]
    assert tp["total"] == tp["detector"] + tp["graders"] and tp["graders"] > 0
    assert m["student-n"]["params"]["total"] > tp["detector"]  # the grade head adds parameters
    assert m["teacher"]["flops"]["total"] == pytest.approx(
        m["teacher"]["flops"]["detector"] + 5 * m["teacher"]["flops"]["grader_per_crop"]
    )
    assert m["student-n"]["teacher_flops_ratio"] == pytest.approx(
        m["teacher"]["flops"]["total"] / m["student-n"]["flops"]["total"]
    )
    v = r["video"]["student-n"]
    assert v["frames"] == 4 and v["frames_per_s"] > 0  # 1 s at 4 fps, every frame scored
    assert r["machine"]["gpu"] is None and "no CUDA GPU" in r["machine"]["gpu_note"]
    assert (tmp_path / "w" / "onnx" / "student_n.onnx").is_file()


def test_staged_teacher_matches_teacher_predict_grades() -> None:
    """The benchmark's staged teacher grades crops exactly as train.teacher's Teacher.grade_boxes."""
    import cv2

    from bench.pipelines import BenchImage, TeacherPipeline, build_teacher
    from edge.scales import load_scale
    from train.teacher.detector import Detector
    from train.teacher.teacher import Teacher
    from train.teacher.vit import ImageClassifier

    spec = load_scale("rgs")
    parts = build_teacher(spec, "n", "tiny", 64)
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (96, 128, 3), np.uint8)
    path = Path(__file__).parent / "_bench_tmp.png"
    try:
        cv2.imwrite(str(path), img)
        boxes = np.array([[10, 10, 40, 30], [60, 12, 90, 40], [20, 50, 50, 80], [70, 50, 100, 90],
                          [40, 30, 80, 60], [5, 5, 120, 90]], np.float32)
        units = np.array([spec.unit_index(n) for n in ("eye", "eye", "ear", "ear", "nose", "whiskers")])
        pipe = TeacherPipeline(parts, "torch")
        res, clk = pipe(BenchImage(path, boxes, units), crops=5)
    finally:
        path.unlink(missing_ok=True)
    with pytest.warns(UserWarning, match="whiskers"):  # the aRGS teacher has no whiskers grader
        teacher = Teacher(
            spec,
            Detector(parts.detector, [u.name for u in spec.units], 64),
            {u: ImageClassifier(g, parts.prep) for u, g in parts.graders.items()},
        )
    ref = teacher.grade_boxes(img, boxes[:5], units[:5])
    assert res.detections is not None
    np.testing.assert_allclose(res.detections.grade_probs, ref, atol=1e-5)
    assert clk.total == pytest.approx(sum(clk.stages.values()))
    assert clk.parts["grade_infer"] > 0
