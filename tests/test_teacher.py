"""Tests of the two-stage teacher: metrics, scoring rule, seed-weight import, tiny train + score."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from edge.records import table_row
from edge.results import Detections
from edge.scales import RGS
from edge.scoring import score_frame
from train.metrics import classification_report, confusion_matrix, weighted_accuracy
from train.teacher.data import frame_rgs, pain_label

# --------------------------------------------------------------------------------- metrics


def test_weighted_accuracy_hand_example() -> None:
    # y_true 0,0,0,1,1,2 / y_pred 0,0,1,1,2,2
    # class 0: TP2 FN1 FP0 TN3 -> 5/6 (N=3); class 1: TP1 FN1 FP1 TN3 -> 4/6 (N=2);
    # class 2: TP1 FN0 FP1 TN4 -> 5/6 (N=1); weighted = (3*5 + 2*4 + 1*5) / 6 / 6 = 28/36
    y_true = [0, 0, 0, 1, 1, 2]
    y_pred = [0, 0, 1, 1, 2, 2]
    assert weighted_accuracy(y_true, y_pred, labels=range(3)) == pytest.approx(28 / 36)
    rep = classification_report(y_true, y_pred, 3)
    assert rep.confusion.tolist() == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert rep.precision == pytest.approx((3 * 1 + 2 * 0.5 + 1 * 0.5) / 6)
    assert rep.recall == pytest.approx((3 * 2 / 3 + 2 * 0.5 + 1 * 1) / 6)
    # always predicting class 0: accuracies 3/6, 4/6, 5/6 -> (9 + 8 + 5) / 36
    assert rep.baseline_class == 0
    assert rep.baseline_weighted_accuracy == pytest.approx(22 / 36)
    assert rep.beats_baseline
    assert weighted_accuracy(y_true, y_true, labels=range(3)) == 1.0


def test_confusion_matrix_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="2 items but y_pred has 1"):
        confusion_matrix([0, 1], [0])
    with pytest.raises(ValueError, match=r"not among labels \[0, 1\]"):
        confusion_matrix([0, 2], [0, 1], labels=[0, 1])


def test_pain_label_thresholds() -> None:
    from train.data.format import LabelBox

    boxes = [LabelBox(0, 0.5, 0.5, 0.1, 0.1, 0), LabelBox(0, 0.5, 0.5, 0.1, 0.1, 1),
             LabelBox(2, 0.5, 0.5, 0.1, 0.1, 0)]
    assert frame_rgs(boxes, RGS) == pytest.approx(0.25)
    assert pain_label(0.25) == 0 and pain_label(0.33) == 0
    assert pain_label(0.5) is None and pain_label(1.0) == 1 and pain_label(None) is None


# ---------------------------------------------------------------------------- scoring rule


def _onehot(grades: list[int], ng: int = 3) -> np.ndarray:
    return np.eye(ng, dtype=np.float32)[grades]


def _dets(units: list[int], conf: list[float], grades: list[int]) -> Detections:
    n = len(units)
    xyxy = np.tile(np.array([[0, 0, 10, 10]], np.float32), (n, 1))
    return Detections(xyxy, units, conf, _onehot(grades) if n else np.zeros((0, 3), np.float32))


def _teacher_row(fr, name: str = "a.png") -> dict:
    from edge.sources import Frame
    from train.teacher.score import _record

    item = Frame(np.zeros((10, 10, 3), np.uint8), f"/d/{name}", meta={"kind": "image"})
    return table_row(_record(item, fr, RGS, None), RGS)


def test_score_rule_top2_eyes_of_three() -> None:
    # three eyes: the two most confident (grade 2) count, the weak one (grade 0) is ignored
    d = _dets([0, 0, 0, 1, 1, 2], [0.9, 0.3, 0.8, 0.7, 0.6, 0.9], [2, 0, 2, 1, 1, 0])
    row = _teacher_row(score_frame(d, RGS))
    assert row["eye_count"] == 2
    assert row["Orbital Tightening"] == 2.0 and row["Orbital Tightening argmax"] == 2.0
    assert row["Ear Changes"] == 1.0 and row["Nose Flattening"] == 0.0
    assert row["RGS"] == pytest.approx(1.0) and row["RGS argmax"] == pytest.approx(1.0)
    assert row["eye_confidence"] == pytest.approx(0.85)
    assert row["abstained"] is None and row["animal"] == "d"


def test_score_rule_expected_and_argmax_columns_differ_by_meaning() -> None:
    # soft grades: expected grade 0.6 per box, argmax grade 0 -> RGS 0.6, RGS argmax 0
    d = _dets([0, 0, 1, 1, 2], [0.9] * 5, [0] * 5)
    d.grade_probs[:] = [0.6, 0.2, 0.2]
    row = _teacher_row(score_frame(d, RGS))
    assert row["RGS"] == pytest.approx(0.6) and row["RGS argmax"] == 0.0
    assert row["Orbital Tightening"] == pytest.approx(0.6) and row["Orbital Tightening argmax"] == 0.0


def test_score_rule_missing_required_unit_abstains_with_reason() -> None:
    d = _dets([0, 0, 1], [0.9, 0.8, 0.7], [2, 1, 0])
    row = _teacher_row(score_frame(d, RGS), "b.png")
    assert row["RGS"] is None and row["RGS argmax"] is None  # the same rule as `grimace score`
    assert row["Orbital Tightening"] == pytest.approx(1.5)  # unit scores are kept
    assert row["Nose Flattening"] is None and row["nose_count"] == 0
    assert "nose" in row["abstained"]


def test_score_rule_no_face_and_min_units(tmp_path: Path) -> None:
    from edge.records import frame_columns
    from train.teacher.score import TeacherScoreRun, teacher_columns, write_outputs

    empty = _teacher_row(score_frame(Detections.empty(3), RGS), "c.png")
    assert empty["RGS"] is None and empty["abstained"]
    d = _dets([0, 1, 2], [0.9, 0.9, 0.9], [1, 1, 1])
    few = _teacher_row(score_frame(d, RGS, min_units=4), "d.png")
    assert few["RGS"] is None and "need 4" in few["abstained"]
    from edge.sources import Frame
    from train.teacher.score import _record

    frs = {"c.png": score_frame(Detections.empty(3), RGS), "d.png": score_frame(d, RGS, min_units=4)}
    blank = np.zeros((4, 4, 3), np.uint8)
    recs = [_record(Frame(blank, f"/d/{n}", meta={"kind": "image"}), fr, RGS, None) for n, fr in frs.items()]
    (out,) = write_outputs(TeacherScoreRun(records=recs), RGS, tmp_path / "t.csv")
    rows = list(csv.DictReader(out.open()))
    assert list(rows[0]) == frame_columns(RGS, extra=teacher_columns(RGS))
    assert rows[0]["RGS"] == "" and "nan" not in out.read_text().lower()


# ------------------------------------------------------------------- lowest-val-loss callback


def test_lowest_val_loss_keeps_that_epochs_weights() -> None:
    import torch

    from train.teacher.detector import LowestValLoss

    model = torch.nn.Linear(2, 1)
    model.yaml = {"nc": 1}
    cb = LowestValLoss()
    for epoch, loss in enumerate([3.0, 2.0, 2.5]):
        with torch.no_grad():
            model.weight.fill_(float(epoch))
        metrics = {"val/box_loss": loss / 2, "val/cls_loss": loss / 2, "metrics/mAP50(B)": 0.1 * epoch}
        cb(SimpleNamespace(metrics=metrics, epoch=epoch, ema=None, model=model))
    cb(SimpleNamespace(metrics={"metrics/mAP50(B)": 0.9}, epoch=3, ema=None, model=model))  # final eval
    assert cb.best_epoch == 2 and cb.best_loss == pytest.approx(2.0)
    assert float(cb.state_dict["weight"][0, 0]) == 1.0
    assert len(cb.history) == 3


# -------------------------------------------------------------------------- seed weights


def _legacy_keys(state: dict) -> dict:
    """Rename current transformers ViT keys to the transformers-4.x names the seed's files use."""
    rules = [
        (r"^vit\.layers\.(\d+)\.attention\.q_proj\.", r"vit.encoder.layer.\1.attention.attention.query."),
        (r"^vit\.layers\.(\d+)\.attention\.k_proj\.", r"vit.encoder.layer.\1.attention.attention.key."),
        (r"^vit\.layers\.(\d+)\.attention\.v_proj\.", r"vit.encoder.layer.\1.attention.attention.value."),
        (r"^vit\.layers\.(\d+)\.attention\.o_proj\.", r"vit.encoder.layer.\1.attention.output.dense."),
        (r"^vit\.layers\.(\d+)\.mlp\.fc1\.", r"vit.encoder.layer.\1.intermediate.dense."),
        (r"^vit\.layers\.(\d+)\.mlp\.fc2\.", r"vit.encoder.layer.\1.output.dense."),
        (r"^vit\.layers\.(\d+)\.layernorm_", r"vit.encoder.layer.\1.layernorm_"),
    ]
    out = {}
    for k, v in state.items():
        for pat, rep in rules:
            k = re.sub(pat, rep, k)
        out[k] = v
    return out


def test_import_seed_weights(tmp_path: Path) -> None:
    import torch
    from transformers import ViTConfig, ViTForImageClassification
    from typer.testing import CliRunner
    from ultralytics.nn.tasks import DetectionModel

    from edge.cli import app
    from train.teacher import load_teacher
    from train.teacher.vit import TINY_VIT

    wdir = tmp_path / "seed"
    wdir.mkdir()
    originals = {}
    for i, unit in enumerate(("eye", "ear", "nose")):
        torch.manual_seed(i)
        m = ViTForImageClassification(ViTConfig(**TINY_VIT, num_labels=3)).eval()
        originals[unit] = m
        legacy = _legacy_keys(m.state_dict())
        assert "vit.encoder.layer.0.attention.attention.query.weight" in legacy
        torch.save(legacy, wdir / f"{unit}_weights.bin")
    det = DetectionModel("yolov5n.yaml", nc=3, verbose=False)
    det.names = {0: "ear", 1: "eye", 2: "nose"}
    torch.save({"model": det, "train_args": {"imgsz": 64}}, tmp_path / "best.pt")

    res = CliRunner().invoke(app, ["teacher", "import-seed", "--weights", str(wdir), "--detector",
                                   str(tmp_path / "best.pt"), "--out", str(tmp_path / "run"),
                                   "--heads", "2"])
    assert res.exit_code == 0, res.output
    t = load_teacher(tmp_path / "run", expect_scale="rgs")
    assert t.spec.unit_names == ["eye", "ear", "nose", "whiskers"]
    assert t.det_to_unit.tolist() == [1, 0, 2]  # detector ear, eye, nose -> RGS indices
    assert t.detector.imgsz == 64
    # the loaded graders compute exactly what the seed-format models compute
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (80, 90, 3), dtype=np.uint8)
    boxes = np.array([[5, 5, 40, 40], [30, 20, 80, 70], [10, 40, 60, 79]], np.float32)
    probs = t.grade_boxes(img, boxes, ["eye", "ear", "nose"])
    assert probs.shape == (3, 3)
    for k, unit in enumerate(("eye", "ear", "nose")):
        crop = img[int(boxes[k, 1]):int(boxes[k, 3]), int(boxes[k, 0]):int(boxes[k, 2])]
        x = cv2.resize(crop, (32, 32), interpolation=cv2.INTER_AREA)[:, :, ::-1] / 255.0
        x = torch.tensor(((x - 0.5) / 0.5).transpose(2, 0, 1)[None].copy(), dtype=torch.float32)
        with torch.no_grad():
            ref = torch.softmax(originals[unit](pixel_values=x).logits, -1)[0].numpy()
        np.testing.assert_allclose(probs[k], ref, atol=1e-5)
    # a wrong class order is refused
    with pytest.raises(Exception, match="class names"):
        from train.teacher.seed import import_seed

        import_seed(wdir, tmp_path / "best.pt", tmp_path / "run2", classes=["eye", "ear", "nose"], heads=2)


# ------------------------------------------------------------------ tiny end-to-end train+score


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from _teacher_helpers import make_dataset
    from typer.testing import CliRunner

    from edge.cli import app

    root = tmp_path_factory.mktemp("teacher")
    data = make_dataset(root / "data", {"train": 12, "val": 4, "test": 4}, size=96, seed=1)
    run = root / "run"
    res = CliRunner().invoke(app, [
        "teacher", "train", "--data", str(data), "--out", str(run), "--detector", "n", "--vit", "tiny",
        "--epochs-det", "1", "--epochs-vit", "2", "--shared-epochs", "2", "--imgsz", "64",
        "--det-batch", "4", "--quiet",
    ])
    assert res.exit_code == 0, res.output
    assert "majority baseline" in res.output
    assert "shared backbone: kept epoch" in res.output
    return data, run


def test_tiny_train_writes_run_folder(tiny_run: tuple[Path, Path]) -> None:
    _data, run = tiny_run
    for f in ("manifest.json", "scale.json", "detector.safetensors", "detector.json",
              "graders/eye/model.safetensors", "graders/eye/preprocess.json"):
        assert (run / f).exists(), f
    man = json.loads((run / "manifest.json").read_text())
    assert man["graders"] == ["ear", "eye", "nose"]
    assert man["versions"]["torch"] and len(man["data"]["hash"]) == 16
    held = man["metrics"]["graders"]["eye"]["held_out"]
    assert held["n"] == 8 and 0 <= held["weighted_accuracy"] <= 1
    assert man["metrics"]["detector"]["best_epoch"] == 1
    assert man["metrics"]["detector"]["init"].endswith(".yaml")  # offline: random init from yaml
    assert man["has_pain"] and (run / "pain" / "model.safetensors").exists()
    assert man["metrics"]["pain"]["train_class_counts"][0] > 0
    shared = man["metrics"]["shared_backbone"]
    assert shared["units"] == ["eye", "ear", "nose"] and shared["classes"] == 9
    assert man["settings"]["shared_epochs"] == 2
    assert json.loads((run / "pain" / "preprocess.json").read_text())["region"] == "face"


def test_teacher_predict_and_grade_boxes(tiny_run: tuple[Path, Path]) -> None:
    from train.teacher import load_teacher

    data, run = tiny_run
    t = load_teacher(run)
    imgs = [cv2.imread(str(p)) for p in sorted((data / "images" / "test").glob("*.png"))]
    dets = t.predict(imgs, conf=0.0001)
    assert len(dets) == len(imgs)
    for d, img in zip(dets, imgs, strict=True):
        assert d.grade_probs.shape == (len(d), t.spec.ng)
        if len(d):
            np.testing.assert_allclose(d.grade_probs.sum(1), 1.0, atol=1e-5)
            assert np.isin(d.unit, [0, 1, 2]).all()  # whiskers has no grader
            assert (d.xyxy[:, 2] <= img.shape[1]).all() and (d.xyxy[:, 3] <= img.shape[0]).all()
    g = t.grade_boxes(imgs[0], np.array([[10, 10, 40, 40], [50, 10, 90, 40]]), [0, 3])
    assert g.shape == (2, t.spec.ng)
    assert np.isfinite(g[0]).all() and np.isnan(g[1]).all()  # whiskers: no grader -> NaN row


def test_score_cli_writes_spreadsheet_and_flags_no_face(tiny_run: tuple[Path, Path], tmp_path: Path) -> None:
    from openpyxl import load_workbook
    from typer.testing import CliRunner

    from edge.cli import app

    data, run = tiny_run
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not an image")
    out = tmp_path / "res.xlsx"
    heat = tmp_path / "heat"
    res = CliRunner().invoke(app, ["teacher", "score", str(data / "images" / "test"), str(bad),
                                   "--teacher", str(run), "--out", str(out), "--heatmaps", str(heat)])
    assert res.exit_code == 1, res.output  # one input failed: named, the rest written
    only_bad = CliRunner().invoke(app, ["teacher", "score", str(bad), "--teacher", str(run),
                                        "--out", str(tmp_path / "none.csv")])
    assert only_bad.exit_code == 2 and "no frame could be read" in only_bad.output  # as `grimace score`
    assert not (tmp_path / "none.csv").exists()
    assert "s/frame" in res.output and "broken.png" in res.output
    wb = load_workbook(out)
    rows = list(wb["RGS"].iter_rows(values_only=True))
    header = rows[0]
    assert header[:5] == ("Filename", "RGS", "Orbital Tightening", "Ear Changes", "Nose Flattening")
    for col in ("RGS argmax", "eye_count", "eye_confidence", "abstained", "pain_probability"):
        assert col in header
    by_name = {r[0]: dict(zip(header, r, strict=True)) for r in rows[1:]}
    assert len(by_name) == 5
    assert by_name["blank_0.png"]["abstained"]  # the faceless image abstains with its reason, no crash
    errors = list(wb["errors"].iter_rows(values_only=True))
    assert len(errors) == 2 and "broken.png" in errors[1][0]
    for r in by_name.values():
        assert r["RGS"] is None or np.isfinite(r["RGS"])
    # the pain ViT (trained on face squares) gives no probability where no face was found, one
    # for every frame with units, and one overlay per readable image
    assert by_name["blank_0.png"]["pain_probability"] is None
    for r in by_name.values():
        if r["n_boxes"]:
            assert 0.0 <= r["pain_probability"] <= 1.0
    assert len(list(heat.glob("*_attention.png"))) == 5


def test_pain_probability_grades_the_face_square(tiny_run: tuple[Path, Path], tmp_path: Path) -> None:
    from train.data.format import image_to_label_path, read_labels
    from train.teacher import load_teacher
    from train.teacher.pain import crop_square, face_square, write_heatmap

    data, run = tiny_run
    t = load_teacher(run)
    assert t.pain is not None and t.pain.prep.region == "face"
    imgs, boxes = [], []
    for p in sorted((data / "images" / "test").glob("*.png")):
        im = cv2.imread(str(p))
        h, w = im.shape[:2]
        b = np.array([b.xyxy(w, h) for b in read_labels(image_to_label_path(p), t.spec)])
        if len(b) and len(imgs) < 2:
            imgs.append(im)
            boxes.append(b)
    assert len(imgs) == 2
    boxes[1] = np.zeros((0, 4))  # no unit found -> no face -> NaN
    prob = t.pain_probability(imgs, boxes)
    assert prob.shape == (2,) and 0.0 <= prob[0] <= 1.0 and np.isnan(prob[1])
    square = face_square(boxes[0], t.pain.prep.margin)
    assert prob[0] == pytest.approx(t.pain.probs([crop_square(imgs[0], square)])[0, 1], abs=1e-6)
    png, p_pain = write_heatmap(t.pain, imgs[0], tmp_path / "h.png", boxes[0])
    assert p_pain == pytest.approx(prob[0], abs=1e-6) and cv2.imread(str(png)).shape == imgs[0].shape
    _png, p_none = write_heatmap(t.pain, imgs[1], tmp_path / "n.png", boxes[1])
    assert np.isnan(p_none)
    with pytest.raises(ValueError, match="unit boxes"):
        write_heatmap(t.pain, imgs[0], tmp_path / "x.png", None)


def test_pain_heatmap(tmp_path: Path) -> None:
    from train.teacher.pain import attention_rollout, write_heatmap
    from train.teacher.vit import ImageClassifier, Preprocess, build_vit

    model, init = build_vit("tiny", 2, {0: "no pain", 1: "pain"})
    assert "tiny" in init
    clf = ImageClassifier(model, Preprocess(32))
    img = np.random.default_rng(0).integers(0, 255, (60, 80, 3), dtype=np.uint8)
    amap = attention_rollout(clf, img)
    assert amap.shape == (4, 4) and amap.min() == 0.0 and amap.max() == pytest.approx(1.0)
    png, p = write_heatmap(clf, img, tmp_path / "h.png")
    assert cv2.imread(str(png)).shape == img.shape and 0 <= p <= 1


def test_train_classifier_keeps_lowest_val_loss_and_learns() -> None:
    from train.teacher.vit import ImageClassifier, Preprocess, build_vit, train_classifier

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 64)
    x = np.zeros((64, 32, 32, 3), np.uint8)
    x[y == 1, :16] = 255  # class 1: bright top half
    x = (x + rng.integers(0, 30, x.shape)).clip(0, 255).astype(np.uint8)
    model, _ = build_vit("tiny", 2)
    prep = Preprocess(32)
    hist = train_classifier(model, prep, x[:48], y[:48], x[48:], y[48:], epochs=6, lr=0.05, flip=False)
    vals = [h[2] for h in hist["history"]]
    assert hist["best_epoch"] == int(np.argmin(vals)) + 1
    pred = ImageClassifier(model, prep).probs_rgb(x[48:]).argmax(1)
    assert weighted_accuracy(y[48:], pred, labels=range(2)) > 0.8


def test_reuse_detector_trains_only_graders(tiny_run: tuple[Path, Path], tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from edge.cli import app

    data, run = tiny_run
    out = tmp_path / "run2"
    res = CliRunner().invoke(app, [
        "teacher", "train", "--data", str(data), "--out", str(out), "--reuse-detector", str(run),
        "--vit", "tiny", "--epochs-vit", "1", "--no-pain", "--vit-optimizer", "adamw", "--lr", "0.002",
        "--grey", "--standardize", "--class-weighting", "sqrt",
    ])
    assert res.exit_code == 0, res.output
    assert (out / "detector.safetensors").read_bytes() == (run / "detector.safetensors").read_bytes()
    man = json.loads((out / "manifest.json").read_text())
    assert man["metrics"]["detector"]["reused_from"] == str(run.resolve())
    assert man["settings"]["detector"] == "n" and man["settings"]["imgsz"] == 64  # the source's
    assert not man["has_pain"]
    prep = json.loads((out / "graders" / "eye" / "preprocess.json").read_text())
    assert prep["grey"] and prep["standardize"]


def test_class_weights_and_preprocess_options() -> None:
    from train.teacher.vit import Preprocess, augment, class_weights

    y = np.array([0, 0, 0, 1])
    np.testing.assert_allclose(class_weights(y, 3), [4 / 6, 2.0, 0.0])
    np.testing.assert_allclose(class_weights(y, 3, "sqrt"), [np.sqrt(4 / 6), np.sqrt(2.0), 0.0])
    np.testing.assert_allclose(class_weights(y, 3, "none"), [1.0, 1.0, 0.0])
    with pytest.raises(ValueError, match="class weighting"):
        class_weights(y, 3, "bogus")
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)
    p = Preprocess(16, grey=True, standardize=True)
    assert Preprocess.from_dict(p.to_dict()) == p
    rgb = p.resize(img)
    assert rgb.shape == (16, 16, 3) and (rgb[..., 0] == rgb[..., 2]).all()
    x = p.to_tensor(rgb[None]).numpy()
    assert abs(float(x.mean())) < 1e-4 and abs(float(x.std()) - 1) < 0.05
    batch = np.stack([rgb] * 4)
    aug = augment(batch, rng)
    assert aug.shape == batch.shape and aug.dtype == np.uint8
    assert (augment(batch, rng, flip=False, strength=0.0) == batch).all()


def test_train_classifier_select_by_val_wacc_and_balanced_sampler() -> None:
    from train.teacher.vit import Preprocess, build_vit, train_classifier

    rng = np.random.default_rng(1)
    y = (rng.random(80) < 0.25).astype(np.int64)  # imbalanced: ~25 % class 1
    x = np.zeros((80, 32, 32, 3), np.uint8)
    x[y == 1, :16] = 255
    x = (x + rng.integers(0, 30, x.shape)).clip(0, 255).astype(np.uint8)
    model, _ = build_vit("tiny", 2)
    hist = train_classifier(
        model, Preprocess(32), x[:60], y[:60], x[60:], y[60:], epochs=5, lr=0.01, flip=False,
        optimizer="adamw", sampler="balanced", class_weighting="none", label_smoothing=0.1,
        select="val_wacc",
    )
    hs = hist["history"]
    assert len(hs) == 5 and all(len(h) == 4 for h in hs)
    # kept epoch: highest validation weighted accuracy, ties broken by the lower validation loss
    best = max(hs, key=lambda h: (h[3], -h[2]))
    assert hist["best_epoch"] == best[0] and hist["best_val_wacc"] == best[3]
    assert hist["select"] == "val_wacc"
    with pytest.raises(ValueError, match="sampler"):
        train_classifier(model, Preprocess(32), x, y, x, y, epochs=1, sampler="nope")
    with pytest.raises(ValueError, match="select"):
        train_classifier(model, Preprocess(32), x, y, x, y, epochs=1, select="nope")


def test_recipes_resolve_with_overrides() -> None:
    from train.teacher.training import RECIPES, resolve_recipe

    seed = resolve_recipe("seed")
    assert seed["vit_optimizer"] == "sgd" and seed["class_weighting"] == "inverse"
    assert seed["select"] == "val_loss" and seed["vit"] == "google/vit-base-patch16-224-in21k"
    scratch = resolve_recipe("scratch", lr=0.01, grey=None)
    assert scratch["lr"] == 0.01 and scratch["grey"] == RECIPES["scratch"]["grey"]
    with pytest.raises(ValueError, match="recipe"):
        resolve_recipe("fast")
    with pytest.raises(ValueError, match="setting"):
        resolve_recipe("seed", colour=True)


def test_seed_recipe_via_cli_records_its_settings(tiny_run: tuple[Path, Path], tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from edge.cli import app

    data, run = tiny_run
    out = tmp_path / "seedrun"
    res = CliRunner().invoke(app, [
        "teacher", "train", "--data", str(data), "--out", str(out), "--reuse-detector", str(run),
        "--recipe", "seed", "--vit", "tiny", "--epochs-vit", "1", "--no-pain",
    ])
    assert res.exit_code == 0, res.output
    st = json.loads((out / "manifest.json").read_text())["settings"]
    assert (st["recipe"], st["vit_optimizer"], st["class_weighting"], st["select"]) == (
        "seed", "sgd", "inverse", "val_loss"
    )
    assert st["epochs_vit"] == 1 and st["vit"] == "tiny" and not st["grey"]
    bad = CliRunner().invoke(app, [
        "teacher", "train", "--data", str(data), "--out", str(tmp_path / "x"), "--reuse-detector",
        str(run), "--recipe", "fast", "--no-pain",
    ])
    assert bad.exit_code == 2 and "recipe" in bad.output


@pytest.mark.parametrize("steps", [1, 2, 3, 10, 11, 100])
def test_warmup_cosine_schedule_is_valid_for_any_step_count(steps: int) -> None:
    from train.teacher.vit import warmup_cosine

    f = warmup_cosine(steps, 0.1)
    values = [f(i) for i in range(steps)]
    assert all(0.0 <= v <= 1.0 for v in values)
    assert max(values) == pytest.approx(1.0)
    if steps > 2:
        assert values[-1] < values[len(values) // 2] <= 1.0  # decays after the warm-up


# ------------------------------------------------------- face region and shared backbone


def test_face_square_and_crop_square_pad_outside_the_image() -> None:
    from train.teacher.pain import crop_square, face_square

    assert face_square(np.zeros((0, 4))) is None
    # union 10..50 x 20..40 -> longer side 40, margin 0.25 -> side 60 around centre (30, 30)
    sq = face_square(np.array([[10, 20, 30, 40], [40, 25, 50, 30]]), margin=0.25)
    np.testing.assert_allclose(sq, [0, 0, 60, 60])
    img = np.arange(50 * 40 * 3, dtype=np.uint8).reshape(50, 40, 3)
    inside = crop_square(img, np.array([5, 6, 15, 26]))
    assert inside.shape == (20, 10, 3) and (inside == img[6:26, 5:15]).all()
    out = crop_square(img, np.array([-5, 40, 10, 60]))  # left of and below the image
    assert out.shape == (20, 15, 3)
    assert (out[:10, 5:] == img[40:50, 0:10]).all()  # the part inside is the image itself
    assert (out[:10, :5] == img[40:50, :1]).all()  # left pad replicates the first column
    assert (out[10:, 5:] == img[49:50, 0:10]).all()  # bottom pad replicates the last row


def test_collect_frames_cuts_the_face_square(tmp_path: Path) -> None:
    from _teacher_helpers import make_dataset

    from train.data.format import image_to_label_path, load_dataset, read_labels
    from train.teacher.data import collect_frames
    from train.teacher.pain import crop_square, face_square
    from train.teacher.vit import Preprocess

    data = make_dataset(tmp_path / "d", {"train": 6}, size=96, seed=3)
    ds = load_dataset(data)
    imgs = ds.images("train")
    face = Preprocess(24, margin=0.2, region="face")
    whole = Preprocess(24, margin=0.2, region="image")
    f, errs = collect_frames(imgs, ds.spec, face)
    w, _ = collect_frames(imgs, ds.spec, whole)
    assert not errs and len(f) == len(w) > 0
    p = Path(f.sources[0])
    img = cv2.imread(str(p))
    boxes = read_labels(image_to_label_path(p), ds.spec)
    expect = face.resize(crop_square(img, face_square(np.array([b.xyxy(96, 96) for b in boxes]), 0.2)))
    assert (f.images[0] == expect).all()
    assert (w.images[0] == whole.resize(img)).all() and not (w.images[0] == f.images[0]).all()
    with pytest.raises(ValueError, match="region"):
        Preprocess(24, region="cheek")


def test_shared_backbone_initialises_graders() -> None:
    from train.teacher.data import CropSet
    from train.teacher.training import _load_backbone, train_shared_backbone
    from train.teacher.vit import Preprocess, build_vit

    rng = np.random.default_rng(0)
    spec = RGS

    def crops(n: int) -> CropSet:
        return CropSet(rng.integers(0, 255, (n, 32, 32, 3), dtype=np.uint8), rng.integers(0, 3, n))

    tr = {"eye": crops(12), "nose": crops(8)}
    sel = {"eye": crops(4)}  # a unit may lack selection crops
    prep = Preprocess(32, grey=True, standardize=True)
    kw = {"epochs": 2, "batch": 8, "lr": 1e-3, "optimizer": "adamw", "class_weighting": "none"}
    state, m = train_shared_backbone("tiny", None, prep, spec, tr, sel, kw)
    assert m["units"] == ["eye", "nose"] and m["classes"] == 6
    assert m["n_train"] == 20 and m["n_select"] == 4 and 1 <= m["best_epoch"] <= 2
    assert state and not any(k.startswith("classifier.") for k in state)
    grader, _ = build_vit("tiny", 3)
    _load_backbone(grader, state, "grader eye")
    for k, v in state.items():  # the encoder is the shared one; only the head is new
        assert (grader.state_dict()[k] == v).all(), k
    other, _ = build_vit("small", 3)
    with pytest.raises(RuntimeError, match="does not fit"):
        _load_backbone(other, state, "grader x")


# ---------------------------------------------------------------------------- --device plumbing
def test_device_recorded_and_models_placed_on_cpu(tiny_run: tuple[Path, Path]) -> None:
    import torch

    from train.teacher import load_teacher

    _data, run = tiny_run
    man = json.loads((run / "manifest.json").read_text())
    want = "cuda:0" if torch.cuda.is_available() else "cpu"  # the fixture trains with --device auto
    assert man["device"]["device"] == want and man["device"]["torch"] == torch.__version__
    assert man["metrics"]["detector"]["device"] == want
    assert {m["device"] for m in man["metrics"]["graders"].values()} == {want}
    t = load_teacher(run, device="cpu")
    assert t.device == torch.device("cpu")
    assert all(g.device == torch.device("cpu") for g in t.graders.values())
    assert t.pain is not None and t.pain.device == torch.device("cpu")


def test_unavailable_device_is_a_clear_error(tiny_run: tuple[Path, Path], tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    import torch
    from typer.testing import CliRunner

    from edge.cli import app

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    data, run = tiny_run
    runner = CliRunner()
    res = runner.invoke(app, ["teacher", "train", "--data", str(data), "--out", str(tmp_path / "r"),
                              "--device", "cuda:0"])  # fmt: skip
    assert res.exit_code == 2 and "torch sees no CUDA GPU" in res.output, res.output
    assert not (tmp_path / "r").exists()  # refused before anything was written
    for cmd in (["score", str(data / "images" / "test"), "--out", str(tmp_path / "s.csv")],
                ["heatmap", str(data / "images" / "test"), "--out", str(tmp_path / "h")]):  # fmt: skip
        res = runner.invoke(app, ["teacher", *cmd, "--teacher", str(run), "--device", "cuda"])
        assert res.exit_code == 2 and "error: --device cuda: torch sees no CUDA GPU" in res.output, res.output
    res = runner.invoke(app, ["teacher", "score", str(data / "images" / "test"), "--teacher", str(run),
                              "--out", str(tmp_path / "s.csv"), "--device", "tpu"])  # fmt: skip
    assert res.exit_code == 2 and "expected auto, cpu, cuda, cuda:N, N or mps" in res.output


def test_train_classifier_reports_device_and_amp_off_on_cpu() -> None:
    from train.teacher.vit import Preprocess, build_vit, train_classifier

    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (6, 32, 32, 3), dtype=np.uint8)
    y = np.arange(6) % 2
    model, _ = build_vit("tiny", 2)
    h = train_classifier(model, Preprocess(32), x, y, x, y, epochs=1, batch=4, device="cpu")
    assert h["device"] == "cpu" and h["amp"] is False


def test_graders_from_a_seed_run_for_boxes_only_data(tiny_run: tuple[Path, Path], tmp_path: Path) -> None:
    """The boxes-only path: the detector trains on boxes without grades; the graders are copied."""
    import shutil

    from typer.testing import CliRunner

    from edge.cli import app
    from train.data.format import read_labels, write_labels
    from train.teacher import load_teacher

    data, run = tiny_run
    boxes_only = tmp_path / "boxes"
    shutil.copytree(data, boxes_only)
    for lbl in (boxes_only / "labels").rglob("*.txt"):
        write_labels(lbl, [b.__class__(b.unit, b.cx, b.cy, b.w, b.h, None) for b in read_labels(lbl)])
    out = tmp_path / "teacher"
    res = CliRunner().invoke(app, [
        "teacher", "train", "--data", str(boxes_only), "--out", str(out), "--detector", "n",
        "--epochs-det", "1", "--imgsz", "64", "--det-batch", "4", "--graders-from", str(run), "--quiet",
        "--device", "cpu",
    ])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "copied ['ear', 'eye', 'nose']" in res.output and "no graded held-out boxes" in res.output
    man = json.loads((out / "manifest.json").read_text())
    assert man["settings"]["graders_from"] == str(run.resolve()) and not man["has_pain"]
    t, src = load_teacher(out, device="cpu"), load_teacher(run, device="cpu")
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (96, 96, 3), dtype=np.uint8)
    boxes = np.array([[10, 10, 40, 40], [40, 20, 90, 70]], np.float32)
    np.testing.assert_allclose(t.grade_boxes(img, boxes, [0, 2]), src.grade_boxes(img, boxes, [0, 2]))
    bad = ["--data", str(boxes_only), "--out", str(tmp_path / "x"), "--graders-from", str(tmp_path)]
    res = CliRunner().invoke(app, ["teacher", "train", *bad])
    assert res.exit_code == 2 and "--graders-from needs a teacher run folder" in res.output


# ------------------------------------------------------------------------------ GPU (device tool)
@pytest.mark.gpu
def test_tiny_teacher_trains_and_scores_on_cuda(tmp_path: Path) -> None:
    """On a CUDA machine: every model of a tiny teacher trains on the GPU with AMP, and the GPU
    teacher grades like the same teacher on the CPU."""
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    from _teacher_helpers import make_dataset

    from train.teacher import load_teacher
    from train.teacher.training import train_teacher

    data = make_dataset(tmp_path / "data", {"train": 12, "val": 4, "test": 4}, size=96, seed=1)
    man = train_teacher(data, tmp_path / "run", detector="n", vit="tiny", epochs_det=1, epochs_vit=2,
                        shared_epochs=2, imgsz=64, det_batch=4, device="auto", verbose=False,
                        echo=lambda s: None)  # fmt: skip
    assert man["device"]["type"] == "cuda" and man["device"]["amp"] is True
    assert man["metrics"]["detector"]["device"].startswith("cuda") and man["metrics"]["detector"]["amp"]
    assert all(m["device"].startswith("cuda") and m["amp"] for m in man["metrics"]["graders"].values())
    assert man["metrics"]["shared_backbone"]["device"].startswith("cuda")
    assert man["metrics"]["pain"]["device"].startswith("cuda")
    gpu, cpu = load_teacher(tmp_path / "run", device="cuda"), load_teacher(tmp_path / "run", device="cpu")
    assert gpu.device.type == "cuda" and all(g.device.type == "cuda" for g in gpu.graders.values())
    img = cv2.imread(str(sorted((data / "images" / "test").glob("*.png"))[0]))
    boxes = np.array([[10, 10, 40, 40], [40, 20, 90, 70]], np.float32)
    np.testing.assert_allclose(gpu.grade_boxes(img, boxes, [0, 2]), cpu.grade_boxes(img, boxes, [0, 2]),
                               atol=2e-2)  # fp16 autocast on the GPU  # fmt: skip


def test_score_and_teacher_score_columns_mean_the_same(tiny_run: tuple[Path, Path], tmp_path: Path) -> None:
    """`grimace score` (fused ONNX) and `grimace teacher score` on the same images write one vocabulary:
    the same seed columns in the same order, ``S`` = expected-grade frame score and ``S argmax`` =
    argmax-grade frame score in both (each recomputed here from that file's own unit columns), and
    `eval grades`' reader takes both files as they are (no legacy mapping)."""
    import csv
    import shutil

    from typer.testing import CliRunner

    from edge.cli import app
    from edge.records import frame_columns
    from tests.tiny_onnx import build_tiny_onnx, face_image
    from train.evaluation.io import read_grade_csv, total_from_units
    from train.teacher import load_teacher

    data, run = tiny_run
    spec = load_teacher(run).spec
    images = tmp_path / "images"  # faces both models find: the blob model's colours, any box for the
    images.mkdir()  # barely trained teacher at a low --conf
    for i in range(4):
        cv2.imwrite(str(images / f"face_{i}.png"), face_image(spec, 96, 96, size=12, seed=i))
    for p in sorted((data / "images" / "test").glob("test_*.png")):
        shutil.copy(p, images / p.name)
    model = build_tiny_onnx(tmp_path / "student.onnx", spec, imgsz=96, cell=4, box=12)
    r1 = CliRunner().invoke(app, ["score", str(images), "--model", str(model), "--out", str(tmp_path / "s"),
                                  "--no-annotate", "--no-progress"])
    assert r1.exit_code == 0, r1.output
    r2 = CliRunner().invoke(app, ["teacher", "score", str(images), "--teacher", str(run),
                                  "--out", str(tmp_path / "t.csv"), "--conf", "0.0001", "--min-units", "1"])
    assert r2.exit_code == 0, r2.output
    files = {"score": tmp_path / "s" / "frames.csv", "teacher": tmp_path / "t.csv"}
    s = spec.score_name
    seed = [c for c in frame_columns(spec)][: 2 + len(spec.units)]
    assert seed == ["Filename", s, *[u.label for u in spec.units]]
    n_scored, n_units = {}, {}
    for who, path in files.items():
        with path.open(newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        header = list(rows[0])
        assert header[: len(seed)] == seed, who
        assert f"{s} argmax" in header and all(f"{u.label} argmax" in header for u in spec.units), who
        assert sorted(r["Filename"] for r in rows) == sorted(p.name for p in images.iterdir()), who

        def col(name: str, rows: list[dict] = rows) -> np.ndarray:
            return np.array([float(r[name]) if r[name] != "" else np.nan for r in rows])

        for suffix in ("", " argmax"):
            units = {u.name: col(f"{u.label}{suffix}") for u in spec.units}
            total = col(f"{s}{suffix}")
            scored = np.isfinite(total)
            np.testing.assert_allclose(total[scored], total_from_units(spec, units, len(rows))[scored],
                                       atol=1e-3, err_msg=f"{who}: {s}{suffix}")
        n_scored[who] = int(np.isfinite(col(s)).sum())
        n_units[who] = int(sum(np.isfinite(col(u.label)).sum() for u in spec.units))
        abstained = np.array([bool(r["abstained"]) for r in rows])
        assert (abstained == ~np.isfinite(col(s))).all(), who  # a score exactly where not abstained
        table = read_grade_csv(path, spec)
        assert table.note is None and table.total_from_file, who  # the schema itself, no legacy mapping
        assert sorted(table.unit_columns.values()) == sorted(u.label for u in spec.units), who
    # the fused model scores every face; the barely trained teacher finds some units but never an ear
    # (a required unit), so its frames abstain with that reason and keep their unit columns
    assert n_scored["score"] == 4 and n_units["teacher"] > 0
