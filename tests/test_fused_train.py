"""End to end at a tiny scale: distill from a (tiny, injected) teacher, train the student, predict."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from edge.scales import RGS
from tests.fused_tiny import TinyTeacher, make_tiny_dataset
from train.data.format import load_dataset, read_labels
from train.fused.data import image_to_soft_path, read_soft
from train.fused.distill import annotate


def test_distill_annotate_writes_soft_targets_and_pseudo_labels(tmp_path: Path) -> None:
    src = make_tiny_dataset(tmp_path / "src", n_train=3, n_val=2, unlabelled=2)
    rep = annotate(TinyTeacher(), src, tmp_path / "dist", unlabelled=[src / "unlabelled"], conf=0.5)
    assert rep.labelled_images == 6 and rep.unlabelled_frames == 2 and rep.pseudo_boxes == 8
    assert rep.soft_boxes == rep.labelled_boxes + rep.pseudo_boxes
    info = load_dataset(tmp_path / "dist", expect_scale=RGS)
    assert info.raw["distill"]["pseudo_boxes"] == 8
    imgs = info.images("train")
    assert len(imgs) == 6 and sum(p.name.startswith("unl_") for p in imgs) == 2
    for p in imgs:
        labels = read_labels(p.parent.parent.parent / "labels" / "train" / f"{p.stem}.txt", RGS)
        soft = read_soft(image_to_soft_path(p), RGS.ng, len(labels))
        assert np.allclose(soft.sum(1), 1, atol=1e-4)
        if p.name.startswith("unl_"):
            assert all(b.grade is None for b in labels) and len(labels) == 4
        elif labels:  # the teacher grades the labelled boxes correctly on this easy data
            graded = [
                (b.grade, int(np.argmax(s))) for b, s in zip(labels, soft, strict=True) if b.grade is not None
            ]
            assert graded and sum(g == t for g, t in graded) >= 0.75 * len(graded)
    with pytest.raises(ValueError, match="--out must differ"):
        annotate(TinyTeacher(), src, src)


def test_validator_fitness_grade_term(monkeypatch: pytest.MonkeyPatch) -> None:
    from ultralytics.models.yolo.detect import DetectionValidator

    from train.fused.trainer import GradeTrainer, GradeValidator

    monkeypatch.setattr(DetectionValidator, "get_stats", lambda self: {"fitness": 0.4})
    summary = {"grade_wacc": 0.6, "teacher_wacc": 0.7, "agree": 0.9, "exp_diff": 0.1, "icc": 0.8}
    v = GradeValidator.__new__(GradeValidator)  # no dataloader needed for the fitness arithmetic
    v.grade_metrics = lambda: dict(summary)
    v.select = "grades"
    assert v.get_stats()["fitness"] == pytest.approx(0.5 * 0.4 + 0.5 * 0.6)
    v.select = "agreement"
    stats = v.get_stats()
    assert stats["fitness"] == pytest.approx(0.5 * 0.4 + 0.5 * 0.9) and stats["metrics/agree"] == 0.9
    summary["agree"] = float("nan")  # no soft targets on the validation data: weighted accuracy
    assert v.get_stats()["fitness"] == pytest.approx(0.5 * 0.4 + 0.5 * 0.6)
    with pytest.raises(ValueError, match="select"):
        GradeTrainer(overrides={}, select="mAP")


def test_train_student_end_to_end(tmp_path: Path) -> None:
    from train.fused.checkpoint import load_checkpoint
    from train.fused.trainer import GradeTrainer

    src = make_tiny_dataset(tmp_path / "src", n_train=6, n_val=3, unlabelled=2)
    annotate(TinyTeacher(), src, tmp_path / "dist", unlabelled=[src / "unlabelled"], conf=0.5)
    run = tmp_path / "run"
    trainer = GradeTrainer(
        overrides={
            "data": str(tmp_path / "dist" / "data.yaml"),
            "epochs": 2,
            "imgsz": 64,
            "batch": 4,
            "workers": 0,
            "device": "cpu",
            "save_dir": str(run / "train"),
            "exist_ok": True,
            "amp": False,
            "close_mosaic": 1,
            "mixup": 0.5,
        },
        size="n",
        pretrained=None,
        out_dir=run,
        select="agreement",
        grade_channels=24,
    )
    trainer.train()
    names = trainer.loss_names
    assert names == ("box_loss", "cls_loss", "dfl_loss", "grade_ce", "grade_kd")
    assert float(trainer.tloss["grade_kd"]) > 0 and float(trainer.tloss["grade_ce"]) > 0
    g = trainer.validator.grade_summary
    assert not np.isnan(g["teacher_wacc"]) and g["teacher_wacc"] > 0.7  # teacher soft targets on val GT
    assert set(g["per_unit"]) == set(RGS.unit_names)
    assert (run / "train" / "weights" / "last.pt").exists()  # ultralytics resume state (trusted-local)
    _model, meta = load_checkpoint(run / "best", expect_scale=RGS)
    assert meta["size"] == "n" and meta["imgsz"] == 64 and "metrics/grade_wacc" in meta["metrics"]
    assert meta["grade_hyp"] == {"grade_ce": 1.0, "grade_kd": 1.0, "grade_T": 2.0, "grade_cls_pw": 0.5}
    assert meta["device"] == "cpu"
    assert meta["select"] == "agreement" and trainer.validator.select == "agreement"
    assert meta["grade_channels"] == 24 and _model.head.grade_channels == 24

    from edge.cli import app

    res = CliRunner().invoke(
        app,
        [
            "predict",
            str(src / "images" / "val"),
            "--model",
            str(run / "best"),
            "--conf",
            "0.01",
            "--out",
            str(tmp_path / "p.jsonl"),
        ],
    )
    assert res.exit_code == 0, res.output
    lines = [json.loads(x) for x in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert len(lines) == 3 and all(d["record_schema"] == 2 and "detections" in d for d in lines)
    assert all(len(d["detections"]) == d["n_boxes"] for d in lines)

    res = CliRunner().invoke(
        app,
        [
            "train",
            "evaluate",
            "--model",
            str(run / "best"),
            "--data",
            str(tmp_path / "dist"),
            "--split",
            "val",
            "--conf",
            "0.01",
            "--device",
            "cpu",
            "-o",
            str(tmp_path / "ev" / "ev.json"),
        ],
    )
    assert res.exit_code == 0, res.output
    ev = json.loads((tmp_path / "ev" / "ev.json").read_text())
    assert ev["images"] == 3 and ev["teacher_wacc"] > 0.7 and "grade weighted accuracy" in res.output
    assert ev["skipped"] == [] and ev["device"]["device"] == "cpu"


def test_cli_flops_prints_both() -> None:
    from edge.cli import app

    res = CliRunner().invoke(app, ["train", "flops", "--arch", "yolov5n", "--imgsz", "256"])
    assert res.exit_code == 0, res.output
    assert "plain yolov5n detector" in res.output and "fused yolov5n" in res.output and "OK" in res.output
    assert "deprecated" not in res.output


def test_cli_model_means_an_artifact_arch_the_architecture(tmp_path: Path) -> None:
    """``--model yolov5n`` still works for one release (with a note); ``--model PATH`` is not an arch."""
    from edge.cli import app

    res = CliRunner().invoke(app, ["train", "flops", "--model", "yolov5n", "--imgsz", "64"])
    assert res.exit_code == 0, res.output
    assert "--model yolov5n (the architecture) is deprecated" in res.output and "--arch yolov5n" in res.output
    assert "plain yolov5n detector" in res.output
    res = CliRunner().invoke(app, ["train", "flops", "--model", str(tmp_path / "run")])
    assert res.exit_code == 2 and "names a model artifact" in res.output
    res = CliRunner().invoke(app, ["train", "flops", "--arch", "yolov5x"])
    assert res.exit_code == 2 and "yolov5n, yolov5s, yolov5m" in res.output
    res = CliRunner().invoke(app, ["train", "flops", "--help"])
    assert "--arch" in res.output and "--model" not in res.output  # the alias is hidden


@pytest.mark.slow
def test_resume_continues_interrupted_run(tmp_path: Path) -> None:
    from train.fused.trainer import GradeTrainer

    src = make_tiny_dataset(tmp_path / "src", n_train=4, n_val=2)
    run = tmp_path / "run"
    over = {
        "data": str(src / "data.yaml"),
        "epochs": 2,
        "imgsz": 64,
        "batch": 4,
        "workers": 0,
        "device": "cpu",
        "save_dir": str(run / "train"),
        "exist_ok": True,
        "amp": False,
    }
    t1 = GradeTrainer(overrides=over, size="n", pretrained=None, out_dir=run)

    def stop_after_first(tr: GradeTrainer) -> None:
        tr.stop = True

    t1.add_callback("on_fit_epoch_end", stop_after_first)
    t1.train()
    assert t1.epoch == 0 and (run / "last").exists()
    from edge.cli import app

    res = CliRunner().invoke(
        app,
        [
            "train",
            "student",
            "--data",
            str(src),
            "--out",
            str(run),
            "--epochs",
            "2",
            "--imgsz",
            "64",
            "--batch",
            "4",
            "--workers",
            "0",
            "--device",
            "cpu",
            "--resume",
            "--trust-pickle",  # last.pt is an ultralytics pickle this test wrote itself
        ],
    )
    assert res.exit_code == 0, res.output
    meta = json.loads((run / "last" / "config.json").read_text())
    assert meta["epoch"] == 2


def test_cli_student_rejects_unknown_augment(tmp_path: Path) -> None:
    from edge.cli import app

    args = ["train", "student", "--data", str(tmp_path), "--out", str(tmp_path / "r"), "--augment", "heavy"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2 and "--augment must be 'standard' or 'consistent'" in res.output


def test_optimizer_overrides() -> None:
    from train.fused.trainer import optimizer_overrides

    assert optimizer_overrides() == {"optimizer": "auto", "warmup_epochs": 3.0}
    assert optimizer_overrides("AdamW", 3e-4, 0) == {"optimizer": "AdamW", "warmup_epochs": 0.0, "lr0": 3e-4}
    with pytest.raises(ValueError, match="optimizer must be one of"):
        optimizer_overrides("adamw")
    with pytest.raises(ValueError, match="needs a named optimizer"):
        optimizer_overrides("auto", 1e-3)
    with pytest.raises(ValueError, match="must be > 0"):
        optimizer_overrides("SGD", 0.0)


def test_cli_student_passes_optimizer_settings_to_ultralytics(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The trainer the CLI builds carries --optimizer/--lr0/--warmup-epochs in ultralytics' args (the
    ones ``args.yaml`` records); training itself is skipped here (it is covered by the slow tests)."""
    from edge.cli import app
    from train.fused.trainer import GradeTrainer

    src = make_tiny_dataset(tmp_path / "src", n_train=2, n_val=1)
    seen = {}

    def record(self: GradeTrainer) -> None:
        seen.update(optimizer=self.args.optimizer, lr0=self.args.lr0, warmup=self.args.warmup_epochs)
        seen.update(device=self.args.device, amp=self.args.amp)

    monkeypatch.setattr(GradeTrainer, "train", record)
    base = ["train", "student", "--data", str(src), "--out", str(tmp_path / "r"), "--imgsz", "64"]
    res = CliRunner().invoke(
        app, [*base, "--weights", "none", "--optimizer", "AdamW", "--lr0", "0.0003", "--warmup-epochs", "0"]
    )
    assert res.exit_code == 0, res.output
    from train.device import resolve_device, ultralytics_device

    auto = resolve_device("auto")  # the default --device: cuda:0 where torch sees a GPU, else the CPU
    assert seen == {
        "optimizer": "AdamW",
        "lr0": 0.0003,
        "warmup": 0.0,
        "device": ultralytics_device(auto),
        "amp": auto.type == "cuda",
    }
    assert f"device: {auto}" in res.output
    res = CliRunner().invoke(app, [*base, "--lr0", "0.001"])
    assert res.exit_code == 2 and "picks its own" in res.output
