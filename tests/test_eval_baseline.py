"""Goat seed baseline: frame extraction at 1/3 fps, features + linear SVM, CV schemes, seed tables."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from edge.cli import app
from train.evaluation.baseline import (
    FeatureExtractor,
    SVMTrainer,
    VideoLabelError,
    extract_frames,
    read_video_labels,
    video_items,
)
from train.evaluation.cv import run_cv


def make_video(path: Path, seconds: float, fps: int, pain: bool, seed: int) -> Path:
    """A tiny MJPG video: noisy frames tinted red (pain) or blue (no pain)."""
    rng = np.random.default_rng(seed)
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (64, 48))
    assert w.isOpened()
    for _ in range(round(seconds * fps)):
        img = rng.integers(0, 60, (48, 64, 3), dtype=np.uint8)
        img[..., 2 if pain else 0] += 150
        w.write(img)
    w.release()
    return path


def make_goats(root: Path, n_animals: int = 6, seconds: float = 3.0) -> tuple[Path, Path]:
    vids = root / "videos"
    vids.mkdir(parents=True)
    lines = ["video,animal,label"]
    for a in range(n_animals):
        pain = a % 2 == 1
        make_video(vids / f"goat{a}.avi", seconds, 10, pain, a)
        lines.append(f"goat{a}.avi,goat{a},{'pain' if pain else 'no pain'}")
    labels = root / "labels.csv"
    labels.write_text("\n".join(lines) + "\n")
    return vids, labels


def test_extract_frames_rates(tmp_path: Path) -> None:
    v = make_video(tmp_path / "v.avi", 3.0, 10, True, 0)
    assert len(extract_frames(v, 1, tmp_path / "f1")) == 3  # t = 0, 1, 2 s
    assert len(extract_frames(v, 3, tmp_path / "f3")) == 9  # t = 0, 1/3, ..., 8/3 s
    assert len(extract_frames(v, 3, tmp_path / "f3")) == 9  # reused, not duplicated
    with pytest.raises(VideoLabelError, match="no such file"):
        extract_frames(tmp_path / "missing.avi", 1, tmp_path / "x")


@pytest.mark.parametrize("fps", [1.0, 3.0, 4.0])
def test_frames_are_the_ones_grimace_score_reads(tmp_path: Path, fps: float) -> None:
    """The baseline samples through edge.sources: the same --fps gives the same frame indices and pixels."""
    from edge.sources import Frame, iter_inputs

    v = make_video(tmp_path / "v.avi", 3.0, 10, True, 0)
    runtime = [f for f in iter_inputs([v], fps=fps) if isinstance(f, Frame)]
    saved = extract_frames(v, fps, tmp_path / f"f{fps:g}")
    assert [int(p.stem.rsplit("_f", 1)[1]) for p in saved] == [f.index for f in runtime]
    assert np.array_equal(cv2.imread(str(saved[1])), runtime[1].image)  # lossless PNG of the same frame


def test_labels_csv_errors(tmp_path: Path) -> None:
    p = tmp_path / "l.csv"
    p.write_text("video,animal\na.mp4,g1\n")
    with pytest.raises(VideoLabelError, match=r"l\.csv:1: missing column 'label'"):
        read_video_labels(p)
    p.write_text("video,animal,label\na.mp4,g1,pain\na.mp4,g2,pain\n")
    with pytest.raises(VideoLabelError, match=r"l\.csv:3: video 'a.mp4' listed twice"):
        read_video_labels(p)
    p.write_text("video,animal,label\na.mp4,,pain\n")
    with pytest.raises(VideoLabelError, match=r"l\.csv:2: empty 'animal'"):
        read_video_labels(p)


def test_missing_video_is_skipped_with_warning(tmp_path: Path) -> None:
    vids, labels = make_goats(tmp_path, n_animals=2, seconds=1.0)
    labels.write_text(labels.read_text() + "gone.avi,goat9,pain\n")
    with pytest.warns(UserWarning, match="gone.avi not found"):
        items = video_items(vids, labels, 1, tmp_path / "work")
    assert {it.subject for it in items} == {"goat0", "goat1"}


def test_svm_loso_in_process(tmp_path: Path) -> None:
    vids, labels = make_goats(tmp_path, n_animals=4, seconds=2.0)
    items = video_items(vids, labels, 1, tmp_path / "work")
    trainer = SVMTrainer(FeatureExtractor(backbone="tiny", image_size=64))
    rep = run_cv(items, trainer, "loso")
    assert rep["k"] == 4 and rep["subject_leakage_checked"]
    assert rep["summary"]["accuracy"]["mean"] >= 0.75
    for fold in rep["folds"]:  # one animal held out: the other class has no support, so no recall
        present = {c for c, d in fold["metrics"]["per_class"].items() if d["support"]}
        assert len(present) == 1
        absent = ({"pain", "no pain"} - present).pop()
        assert fold["metrics"]["per_class"][absent]["recall"] is None


def test_baseline_svm_cli_seed_tables(tmp_path: Path) -> None:
    vids, labels = make_goats(tmp_path)
    out = tmp_path / "out"
    res = CliRunner().invoke(
        app,
        [
            "baseline",
            "svm",
            "--videos",
            str(vids),
            "--labels",
            str(labels),
            "--fps",
            "1",
            "--fps",
            "3",
            "--scheme",
            "subject-kfold",
            "--scheme",
            "kfold",
            "--k",
            "3",
            "--backbone",
            "tiny",
            "--out",
            str(out),
        ],
    )
    assert res.exit_code == 0, res.output
    rep = json.loads((out / "baseline_report.json").read_text())
    got = [(r["scheme"], r["fps"], r["k"], r["n_items"]) for r in rep["results"]]
    assert got == [
        ("subject-kfold", 1.0, 3, 18),
        ("kfold", 1.0, 3, 18),
        ("subject-kfold", 3.0, 3, 54),
        ("kfold", 3.0, 3, 54),
    ]
    for r in rep["results"]:
        for key in (
            "accuracy",
            "precision",
            "recall",
            "f1",
            "per_class.pain.f1",
            "per_class.no pain.precision",
        ):
            assert r["summary"][key]["mean"] is not None
        assert "random" in r["features"]["weights"]
    md = (out / "baseline_report.md").read_text()
    assert "goat seed Table 3 layout" in md and "Tables 4–6" in md
    assert "| subject-kfold | 3 | pain |" in md
    assert (out / "cv_subject-kfold_1fps.json").exists()


@pytest.mark.slow
def test_vgg16_features_shape_and_offline_fallback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Real VGG-16 conv base: 512-d pooled features; offline ImageNet weights fall back with a warning."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # empty cache: must try to download
    v = make_video(tmp_path / "v.avi", 1.0, 10, True, 0)
    frames = extract_frames(v, 2, tmp_path / "f")
    fx = FeatureExtractor(backbone="vgg16", pretrained=True, batch_size=2)
    with pytest.warns(UserWarning, match="RANDOM weights"):
        feats = fx(frames)
    assert feats.shape == (2, 512) and np.isfinite(feats).all()
    assert fx.weights_used.startswith("random")


def test_saved_svm_scores_new_videos_like_the_trained_pipeline(tmp_path: Path) -> None:
    """`baseline svm` saves the SVM as npz + json (no pickle); `baseline score` reuses it on new videos."""
    from train.evaluation.baseline import load_svm

    vids, labels = make_goats(tmp_path / "train", n_animals=4, seconds=2.0)
    out = tmp_path / "out"
    res = CliRunner().invoke(
        app,
        ["baseline", "svm", "--videos", str(vids), "--labels", str(labels), "--fps", "2", "--scheme", "loso",
         "--backbone", "tiny", "--device", "cpu", "--min-frames", "3", "--out", str(out)],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    rep = json.loads((out / "baseline_report.json").read_text())
    assert rep["provenance"]["device"] == "cpu" and rep["provenance"]["device_requested"] == "cpu"
    assert rep["provenance"]["data_sha256"] and rep["provenance"]["command"].endswith("baseline svm")
    assert (
        rep["provenance"]["parameters"]["fps"] == [2.0] and rep["provenance"]["parameters"]["device"] == "cpu"
    )
    (r,) = rep["results"]
    assert r["pooled"]["n_items"] == 16 and r["per_animal"]["summary"]["n_animals"] == 4
    assert r["trainer_info"]["device"] == "cpu"
    saved = load_svm(out / "model")
    assert saved.config["fps"] == 2.0 and saved.config["rule"]["min_frames"] == 3
    assert saved.classes == ["no pain", "pain"] and saved.coef.shape == (1, 32)
    assert not list((out / "model").glob("*.pkl"))

    # round trip: the numpy scorer of a saved pipeline equals scikit-learn's on the same features
    from train.evaluation.baseline import FeatureExtractor, SVMTrainer, save_svm, video_items

    items = video_items(vids, labels, 2, tmp_path / "w")
    tr = SVMTrainer(FeatureExtractor(backbone="tiny"))
    pipe = tr.fit(items)
    x = tr.features([it.path for it in items])
    again = load_svm(save_svm(tmp_path / "m2", pipe, tr, 2.0, "pain").parent)
    np.testing.assert_allclose(again.decision(x), pipe.decision_function(x), rtol=1e-6)  # float32 features
    assert again.predict(x) == pipe.predict(x).tolist() == saved.predict(x)

    # new animals' videos (one too short for a verdict)
    new = tmp_path / "new"
    new.mkdir()
    make_video(new / "newpain.avi", 3.0, 10, True, 11)
    make_video(new / "newcalm.avi", 3.0, 10, False, 12)
    make_video(new / "brief.avi", 0.5, 10, True, 13)
    res = CliRunner().invoke(
        app, ["baseline", "score", str(new), "--model", str(out / "model"), "--out", str(tmp_path / "s")]
    )
    assert res.exit_code == 0, res.output
    animals = {
        a["animal"]: a
        for a in json.loads((tmp_path / "s" / "svm_scores.json").read_text())["per_animal"]["rows"]
    }
    assert animals["newpain"]["verdict"] == "painful" and animals["newpain"]["n_scored"] == 6  # 3 s at 2 fps
    assert animals["newcalm"]["verdict"] == "not painful"
    assert animals["brief"]["verdict"] == "insufficient frames" and animals["brief"]["n_scored"] == 1
    assert "insufficient frames" in (tmp_path / "s" / "animals.csv").read_text()

    # a tampered array file is refused, naming the file
    npz = out / "model" / "svm_model.npz"
    npz.write_bytes(npz.read_bytes()[:-8] + b"\0" * 8)
    res = CliRunner().invoke(app, ["baseline", "score", str(new), "--model", str(out / "model")])
    assert res.exit_code == 2 and "SHA-256 differs" in res.output


def test_synth_goat_video_labels_feed_the_baseline(tmp_path: Path) -> None:
    res = CliRunner().invoke(
        app,
        ["synth", "--scale", "goat", "--out", str(tmp_path / "g"), "--n", "2", "--imgsz", "96",
         "--subjects", "4", "--video", "4", "--video-seconds", "2", "--fps", "4"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    rows = read_video_labels(tmp_path / "g" / "videos" / "labels.csv")
    assert [r.video for r in rows] == sorted(p.name for p in (tmp_path / "g" / "videos").glob("*.mp4"))
    for r in rows:
        info = json.loads((tmp_path / "g" / "videos" / r.video).with_suffix(".json").read_text())
        assert r.animal == info["subject"]
        assert r.label == ("pain" if info["grades"]["face"][0] == 1 else "no pain")
    assert {r.label for r in rows} == {"pain", "no pain"}
    items = video_items(
        tmp_path / "g" / "videos", tmp_path / "g" / "videos" / "labels.csv", 1, tmp_path / "w"
    )
    assert len(items) == 8 and {it.subject for it in items} == {r.animal for r in rows}


def test_video_name_may_not_leave_the_folder(tmp_path: Path) -> None:
    vids, labels = make_goats(tmp_path, n_animals=2, seconds=1.0)
    labels.write_text("video,animal,label\n../labels.csv,g0,pain\n")
    with (
        pytest.raises(VideoLabelError, match=r"labels\.csv:2: .*points outside"),
        pytest.warns(UserWarning, match="not in .* are not used"),
    ):
        video_items(vids, labels, 1, tmp_path / "w")


def test_device_auto_resolves_and_bad_cuda_is_a_clear_error() -> None:
    import torch

    from train.evaluation.baseline import resolve_device

    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU"):
            resolve_device("cuda")
