"""Split schemes, the subject-leakage guarantee, and `grimace cv` end to end with the SVM baseline."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from edge.cli import app
from edge.scales import RGS
from train.data.format import LabelBox, Subject, write_data_yaml, write_labels, write_subjects
from train.evaluation import splits
from train.evaluation.cv import (
    Item,
    StudentTrainer,
    dataset_items,
    inner_validation_split,
    run_cv,
    summarise,
    write_fold_dataset,
)
from train.evaluation.splits import (
    SubjectLeakageError,
    check_no_subject_leakage,
    item_kfold,
    leave_one_subject_out,
    make_folds,
    subject_kfold,
)

SUBJECTS = [f"rat{i // 4}" for i in range(40)]  # 10 rats x 4 images
LABELS = ["pain" if int(s[3:]) % 2 else "no pain" for s in SUBJECTS]


def _subject_ignoring_split(subjects: list[str], k: int, seed: int = 0, labels: list | None = None) -> list:
    """What a careless subject-wise split would do: fold the images, not the animals."""
    return item_kfold(len(subjects), k, seed, labels)


SPLITTERS = {
    "subject-kfold": lambda: subject_kfold(SUBJECTS, 5, 0, LABELS),
    "loso": lambda: leave_one_subject_out(SUBJECTS),
    "subject-ignoring": lambda: _subject_ignoring_split(SUBJECTS, 5, 0, LABELS),
}


@pytest.mark.parametrize(
    ("name", "leaks"), [("subject-kfold", False), ("loso", False), ("subject-ignoring", True)]
)
def test_leakage_checker_passes_subject_splits_and_catches_subject_ignoring_one(
    name: str, leaks: bool
) -> None:
    folds = SPLITTERS[name]()
    if leaks:
        with pytest.raises(SubjectLeakageError, match="on both the training and the test side"):
            check_no_subject_leakage(folds, SUBJECTS)
    else:
        check_no_subject_leakage(folds, SUBJECTS)


def test_make_folds_fails_if_subject_kfold_is_changed_to_ignore_subjects(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The guarantee is enforced inside make_folds: breaking the splitter breaks the run."""
    make_folds("subject-kfold", SUBJECTS, LABELS, k=5)  # the real one passes
    monkeypatch.setattr(splits, "subject_kfold", _subject_ignoring_split)
    with pytest.raises(SubjectLeakageError):
        make_folds("subject-kfold", SUBJECTS, LABELS, k=5)


@settings(max_examples=40, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 6), min_size=2, max_size=12),
    k=st.integers(2, 6),
    seed=st.integers(0, 1000),
)
def test_subject_schemes_never_leak(sizes: list[int], k: int, seed: int) -> None:
    subjects = [f"s{i}" for i, n in enumerate(sizes) for _ in range(n)]
    labels = [i % 2 for i, n in enumerate(sizes) for _ in range(n)]
    for scheme in ("subject-kfold", "loso"):
        if scheme == "subject-kfold" and k > len(sizes):
            with pytest.raises(splits.SplitError):
                make_folds(scheme, subjects, labels, k=k, seed=seed)
            continue
        folds = make_folds(scheme, subjects, labels, k=k, seed=seed)
        tested = np.concatenate([f.test for f in folds])
        assert sorted(tested.tolist()) == list(range(len(subjects)))  # every item tested exactly once
        for f in folds:
            assert not {subjects[i] for i in f.train} & {subjects[i] for i in f.test}


def test_item_schemes_and_stratification() -> None:
    (f,) = make_folds("split", SUBJECTS, LABELS, test_fraction=0.2, seed=1)
    assert len(f.test) == 8 and len(f.train) == 32
    assert sum(LABELS[i] == "pain" for i in f.test) == 4  # stratified
    folds = make_folds("kfold", SUBJECTS, LABELS, k=5)
    assert [len(x.test) for x in folds] == [8] * 5
    folds = make_folds("subject-kfold", SUBJECTS, LABELS, k=5)
    for x in folds:  # 2 rats per fold, one of each class
        assert sorted({LABELS[i] for i in x.test}) == ["no pain", "pain"]
    with pytest.raises(splits.SplitError, match="only 10 subjects"):
        make_folds("subject-kfold", SUBJECTS, LABELS, k=11)
    with pytest.raises(splits.SplitError, match="unknown scheme"):
        make_folds("bogus", SUBJECTS)


def test_summarise_mean_sd() -> None:
    s = summarise(
        [
            {"accuracy": 0.5, "per_class": {"a": {"f1": 1.0}}},
            {"accuracy": 1.0, "per_class": {"a": {"f1": None}}},
        ]
    )
    assert s["accuracy"]["mean"] == 0.75 and s["accuracy"]["sd"] == pytest.approx(np.std([0.5, 1.0], ddof=1))
    assert s["per_class.a.f1"]["n_folds"] == 1 and s["per_class.a.f1"]["sd"] is None


# --------------------------------------------------------------------------- tiny dataset
def make_dataset(root: Path, n_subjects: int = 6, per_subject: int = 4, seed: int = 0) -> Path:
    """Grimace dataset: painful rats' images are reddish, the others bluish; graded boxes; subjects.csv."""
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(n_subjects):
        pain = s % 2 == 1
        grade = 2 if pain else 0
        for i in range(per_subject):
            name = f"r{s}_{i}.png"
            img = rng.integers(0, 60, (48, 48, 3), dtype=np.uint8)
            img[..., 2 if pain else 0] += 150  # BGR: red for pain, blue otherwise
            img[..., 1] += np.uint8(rng.integers(0, 40))
            split = "train" if i < per_subject - 1 else "val"
            (root / "images" / split).mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(root / "images" / split / name), img)
            boxes = [
                LabelBox(0, 0.3, 0.3, 0.2, 0.1, grade),
                LabelBox(0, 0.7, 0.3, 0.2, 0.1, grade),
                LabelBox(1, 0.2, 0.1, 0.2, 0.2, grade),
                LabelBox(2, 0.5, 0.6, 0.2, 0.2, grade),
            ]
            write_labels(root / "labels" / split / name.replace(".png", ".txt"), boxes)
            rows.append(Subject(name, f"rat{s}", "blast" if pain else "control", ""))
    write_subjects(root / "subjects.csv", rows)
    write_data_yaml(root, RGS, {"train": "images/train", "val": "images/val"})
    return root


def test_cv_subject_kfold_svm_end_to_end(tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "ds")
    out = tmp_path / "cv"
    res = CliRunner().invoke(
        app,
        [
            "cv",
            "--data",
            str(data),
            "--scheme",
            "subject-kfold",
            "--k",
            "3",
            "--model",
            "svm",
            "--backbone",
            "tiny",
            "--device",
            "cpu",
            "--out",
            str(out),
        ],
    )
    assert res.exit_code == 0, res.output
    rep = json.loads((out / "cv_report.json").read_text())
    assert rep["provenance"]["device"] == "cpu" and rep["trainer_info"]["device"] == "cpu"
    assert rep["splitter"] == "StratifiedGroupKFold" and rep["pooled"]["n_items"] == 24
    assert len(rep["oof"]) == 24 and rep["per_animal"]["summary"]["n_animals"] == 6
    assert rep["scheme"] == "subject-kfold" and rep["k"] == 3 and rep["subject_leakage_checked"]
    assert rep["n_items"] == 24 and rep["n_subjects"] == 6
    for fold in rep["folds"]:
        assert not set(fold["train_subjects"]) & set(fold["test_subjects"])
        assert fold["n_train"] + fold["n_test"] == 24
    acc = rep["summary"]["accuracy"]
    assert acc["n_folds"] == 3 and acc["sd"] is not None
    assert acc["mean"] >= 0.75  # colour separates the classes even for a random tiny CNN
    md = (out / "cv_report.md").read_text()
    assert "Mean ± SD over folds" in md and "| accuracy |" in md and "subject fold 3/3" in md
    assert "No subject is on both sides" in md
    assert rep["trainer_info"]["weights"].startswith("random (tiny") and "weights: random (tiny" in md


def test_cv_rejects_missing_subjects_and_bad_scheme(tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "ds", n_subjects=2, per_subject=2)
    (data / "subjects.csv").unlink()
    r = CliRunner().invoke(app, ["cv", "--data", str(data), "--scheme", "loso", "--backbone", "tiny"])
    assert r.exit_code == 2 and "subjects.csv" in r.output
    r = CliRunner().invoke(app, ["cv", "--data", str(data), "--scheme", "nope"])
    assert r.exit_code == 2 and "unknown scheme" in r.output


def test_dataset_items_pain_target(tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "ds", n_subjects=2, per_subject=2)
    items, info = dataset_items(data)
    assert {(it.subject, it.label) for it in items} == {("rat0", "no pain"), ("rat1", "pain")}
    assert info.spec.name == "rgs"


# ------------------------------------------------------------------ student trainer wiring
STAND_IN_TRAIN = """
import sys, pathlib, yaml
args = dict(zip(sys.argv[1::2], sys.argv[2::2]))
data = pathlib.Path(args["--data"]); out = pathlib.Path(args["--out"])
assert yaml.safe_load((data / "data.yaml").read_text())["scale"]["name"] == "rgs"
assert args.get("--epochs") == "1"  # options after -- reach the trainer
out.mkdir(parents=True)
val = [p.name for p in (data / "images/val").iterdir()]
assert val, "an inner validation split is written"
names = [p.name for p in (data / "images/train").iterdir()] + val
(out / "best.pt").write_text("\\n".join(names))
"""

STAND_IN_PREDICT = """
import sys, pathlib, csv
args = dict(zip(sys.argv[1::2], sys.argv[2::2]))
rows = []
for img in sorted(pathlib.Path(args["--source"]).iterdir()):
    lbl = pathlib.Path(str(img.resolve()).replace("/images/", "/labels/")).with_suffix(".txt")
    g = {}
    for line in lbl.read_text().split("\\n"):
        if line.strip():
            u, *_, gr = line.split(); g.setdefault(int(u), []).append(float(gr))
    means = [sum(v) / len(v) for _, v in sorted(g.items())]
    rows.append([img.name, sum(means) / len(means), *means])
with open(args["--out"], "w", newline="") as f:
    w = csv.writer(f); w.writerow(["Filename", "RGS", "Orbital Tightening", "Ear Changes", "Nose Flattening"])
    w.writerows(rows)
"""


def test_student_trainer_wiring_with_stand_in_commands(tmp_path: Path) -> None:
    """The subprocess wiring, with stand-in scripts in place of `grimace train student`/`predict`.

    The stand-in predictor returns the labelled grades, so the fold metrics must be perfect; the
    stand-in trainer records which images it was given, so the test can check the fold dataset.
    """
    data = make_dataset(tmp_path / "ds", n_subjects=4, per_subject=3)
    items, info = dataset_items(data)
    (tmp_path / "train.py").write_text(textwrap.dedent(STAND_IN_TRAIN))
    (tmp_path / "predict.py").write_text(textwrap.dedent(STAND_IN_PREDICT))
    trainer = StudentTrainer(
        spec=info.spec,
        work=tmp_path / "work",
        extra_args=["--epochs", "1"],
        train_cmd=f"{sys.executable} {tmp_path / 'train.py'} --data {{data}} --out {{out}}",
        predict_cmd=(
            f"{sys.executable} {tmp_path / 'predict.py'} --weights {{weights}} "
            "--source {source} --out {csv}"
        ),
        weights_glob="best.pt",
        pred_file="pred.csv",
    )
    rep = run_cv(items, trainer, "loso")
    assert rep["k"] == 4
    for i, fold in enumerate(rep["folds"], start=1):
        trained_on = (tmp_path / "work" / f"fold{i:02d}" / "run" / "best.pt").read_text().split()
        held_out = fold["test_subjects"][0]
        assert trained_on and not any(n.startswith(f"r{held_out[3:]}_") for n in trained_on)
        m = fold["metrics"]
        assert m["eye"]["weighted_accuracy"] == 1.0 and m["n_abstained"] == 0


def test_inner_validation_split_is_subject_wise() -> None:
    items = [
        Item(f"{s}_{i}.png", Path(f"{s}_{i}.png"), s) for s in ("a", "b", "c", "d", "e") for i in range(3)
    ]
    tr, va = inner_validation_split(items, 0.2, seed=1)
    assert len({it.subject for it in va}) == 1 and not {it.subject for it in tr} & {it.subject for it in va}
    tr, va = inner_validation_split(items[:3], 0.34)
    assert len(tr) == 2 and len(va) == 1


def test_write_fold_dataset_symlinks_and_subjects(tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "ds", n_subjects=2, per_subject=2)
    items, info = dataset_items(data)
    tr = [it for it in items if it.subject == "rat0"]
    te = [it for it in items if it.subject == "rat1"]
    root = write_fold_dataset(tmp_path / "fold", info.spec, tr, te)
    assert sorted(p.name for p in (root / "images/train").iterdir()) == sorted(it.key for it in tr)
    assert all(p.is_symlink() for p in (root / "labels/val").iterdir())
    assert "rat1" in (root / "subjects.csv").read_text()
    assert isinstance(items[0], Item)


# ------------------------------------------------------------------- pooled out-of-fold metrics
class _ThresholdTrainer:
    """A real (if tiny) classifier for the runner: learns the midpoint between the class means of a
    1-D feature carried in ``meta["x"]``; predicts ``pain`` above it."""

    name = "threshold"

    def fit(self, train_items: list[Item]) -> float:
        xs = {lab: [it.meta["x"] for it in train_items if it.label == lab] for lab in ("pain", "no pain")}
        return (np.mean(xs["pain"]) + np.mean(xs["no pain"])) / 2

    def predict(self, model: float, items: list[Item]) -> list[dict]:
        return [{"pred": "pain" if it.meta["x"] > model else "no pain"} for it in items]

    def metrics(self, items: list[Item], recs: list[dict]) -> dict:
        from train.evaluation.cv import classification_metrics

        return classification_metrics(
            [it.label for it in items], [r["pred"] for r in recs], ["no pain", "pain"]
        )

    def per_animal(self, items: list[Item], recs: list[dict]) -> dict:
        from edge.verdict import VerdictRule
        from train.evaluation.cv import per_animal_classification

        return per_animal_classification(items, [r["pred"] for r in recs], "pain", VerdictRule(min_frames=2))

    def evaluate(self, model: float, items: list[Item]) -> dict:
        return self.metrics(items, self.predict(model, items))


def test_loso_with_single_class_animals_reports_pooled_metrics_by_hand() -> None:
    """Every LOSO fold holds one animal, hence one class: per-fold macro precision is degenerate
    (1.0 or 0.0); the headline is computed once on the pooled out-of-fold predictions."""
    from sklearn.metrics import precision_score, recall_score

    x = {"a": [0.1, 0.2, 0.3], "b": [0.2, 0.9, 0.8], "c": [0.7, 0.8, 0.9], "d": [0.1, 0.6, 0.95]}
    lab = {"a": "no pain", "b": "no pain", "c": "pain", "d": "pain"}
    items = [Item(f"{s}{i}", Path(f"{s}{i}.png"), s, lab[s], {"x": v}) for s in x for i, v in enumerate(x[s])]
    trainer = _ThresholdTrainer()
    rep = run_cv(items, trainer, "loso")
    assert rep["splitter"] == "LeaveOneGroupOut" and rep["subject_leakage_checked"]
    # by hand: the threshold each fold learns, then every held-out item's call
    y_true, y_pred = [], []
    for s in x:
        train = [it for it in items if it.subject != s]
        thr = trainer.fit(train)
        for it in items:
            if it.subject == s:
                y_true.append(it.label)
                y_pred.append("pain" if it.meta["x"] > thr else "no pain")
    pooled = rep["pooled"]
    assert [r["pred"] for r in rep["oof"]] == y_pred and pooled["n_items"] == 12
    assert pooled["precision"] == pytest.approx(precision_score(y_true, y_pred, average="macro"))
    assert pooled["recall"] == pytest.approx(recall_score(y_true, y_pred, average="macro"))
    assert pooled["accuracy"] == pytest.approx(np.mean(np.array(y_true) == np.array(y_pred)))
    assert np.asarray(pooled["confusion"]["matrix"]).sum() == 12
    # the per-fold mean averages single-class folds: a different (inflated) number
    assert rep["summary"]["precision"]["mean"] != pytest.approx(pooled["precision"])
    for f in rep["folds"]:
        assert sum(d["support"] > 0 for d in f["metrics"]["per_class"].values()) == 1
    # per animal: share of an animal's frames called painful -> verdict, against its class
    rows = {r["animal"]: r for r in rep["per_animal"]["rows"]}
    for s in x:
        calls = [p for p, it in zip(y_pred, [it for s2 in x for it in items if it.subject == s2], strict=True)
                 if it.subject == s]  # fmt: skip
        share = np.mean([c == "pain" for c in calls])
        assert rows[s]["mean_pain"] == pytest.approx(share)
        assert rows[s]["verdict"] == ("painful" if share >= 0.5 else "not painful")
        assert rows[s]["correct"] == ((share >= 0.5) == (lab[s] == "pain"))
    md = __import__("train.evaluation.cv", fromlist=["cv_markdown"]).cv_markdown(rep)
    assert md.index("Pooled out-of-fold") < md.index("Mean ± SD over folds") and "## Per animal" in md


def test_sklearn_splitters_named_and_leakage_still_enforced() -> None:
    assert {f.splitter for f in make_folds("subject-kfold", SUBJECTS, LABELS, k=5)} == {
        "StratifiedGroupKFold"
    }
    assert {f.splitter for f in make_folds("subject-kfold", SUBJECTS, None, k=5)} == {"GroupKFold"}
    assert {f.splitter for f in make_folds("kfold", SUBJECTS, LABELS, k=5)} == {"StratifiedKFold"}
    assert make_folds("split", SUBJECTS, LABELS)[0].splitter == "train_test_split (stratified)"
