"""`grimace eval grades` end to end on synthetic CSVs with two graders, and its input checks."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from edge.cli import app
from edge.scales import RGS
from train.evaluation.grades import evaluate_grades, load_inputs, round_half_up
from train.evaluation.io import GradeFileError, read_grade_csv

UNITS = ["Orbital Tightening", "Ear Changes", "Nose Flattening"]


def make_grade_csvs(out: Path, n_per: int = 5, seed: int = 0, model_noise: float = 0.3) -> dict[str, Path]:
    """Seed-style files: control, blast day1 and blast month1 (same 4 rats), two graders, a model.

    The model abstains on one image (empty cells), as ``grimace score`` does.
    """
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    design = (
        ("control", "", ["c1", "c2", "c3", "c4"], 0.3),
        ("blast", "day1", ["b1", "b2", "b3", "b4"], 1.4),
        ("blast", "month1", ["b1", "b2", "b3", "b4"], 0.5),
    )
    for group, tp, subjects, level in design:
        for s in subjects:
            for i in range(n_per):
                latent = np.clip(level + rng.normal(0, 0.5, 3), 0, 2)
                rows.append((f"{s}_{tp or 'base'}_{i}.png", s, group, tp, latent))
    with (out / "subjects.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "subject", "group", "timepoint"])
        w.writerows(r[:4] for r in rows)
    for g in (1, 2):
        with (out / f"grader{g}.csv").open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["Filename", "RGS", *UNITS])
            for r in rows:
                grades = np.clip(np.rint(r[4] + rng.normal(0, 0.35, 3)), 0, 2).astype(int)
                w.writerow([r[0], f"{grades.mean():.4f}", *grades])
    with (out / "pred.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["Filename", "RGS", *UNITS, "Abstained"])
        for k, r in enumerate(rows):
            if k == 3:
                w.writerow([r[0], "", "", "", "", "missing required unit(s): nose"])
                continue
            m = np.clip(r[4] + rng.normal(0, model_noise, 3), 0, 2)
            w.writerow([f"frames/{r[0]}", f"{m.mean():.4f}", *(f"{v:.3f}" for v in m), ""])
    return {k: out / f"{k}.csv" for k in ("pred", "grader1", "grader2", "subjects")}


def test_eval_grades_cli_end_to_end(tmp_path: Path) -> None:
    f = make_grade_csvs(tmp_path / "in")
    out = tmp_path / "report"
    res = CliRunner().invoke(
        app,
        [
            "eval",
            "grades",
            "--n-boot",
            "200",
            "--pred",
            str(f["pred"]),
            "--human",
            str(f["grader1"]),
            str(f["grader2"]),
            "--groups",
            str(f["subjects"]),
            "--scale",
            "rgs",
            "--out",
            str(out),
        ],
    )
    assert res.exit_code == 0, res.output
    rep = json.loads((out / "report.json").read_text())
    assert rep["inputs"]["n_graders"] == 2
    assert set(rep["units"]) == {"eye", "ear", "nose"}  # no whisker column: left out
    for block in [*rep["units"].values(), rep["total"]]:
        icc = block["icc_model_vs_human_mean"]
        assert icc["n"] == 59 and icc["n_excluded"] == 1  # the abstained image
        assert set(icc["forms"]) == {"ICC1", "ICC2", "ICC3", "ICC1k", "ICC2k", "ICC3k"}
        assert icc["forms"]["ICC1"]["icc"] > 0.5  # model noise is small: good agreement
        assert block["icc_graders"]["n"] == 60
        c = block["classification"]
        assert 0.0 <= c["weighted_accuracy"] <= 1.0 and c["n"] == 59
        assert np.asarray(c["confusion"]).sum() == 59
    groups = rep["groups"]
    assert list(groups["cells"]) == ["control", "blast/day1", "blast/month1"]
    assert groups["n_animals"] == 8 and groups["n_images"] == 59
    assert groups["pseudoreplication_warning"] and "59 images come from 8 animals" in rep["warnings"][-1]
    for who in ("model", "human"):
        assert groups["headline"][who]["unit"] == "animals"
        assert groups["headline"][who]["n"] == {"control": 4, "blast/day1": 4, "blast/month1": 4}
    for g in groups["cells"].values():
        assert g["wilcoxon_model_vs_human"]["n"] == 4 and g["wilcoxon_model_vs_human"]["unit"] == "animals"
    (rp,) = groups["repeated"]
    assert rp["timepoints"] == ["day1", "month1"] and "4 animal(s)" in rp["model"]["pairing"]
    assert rp["model"]["p"] == pytest.approx(0.125)  # 4 animals: the smallest two-sided Wilcoxon p
    assert groups["mixed_model"]["model"]["n_animals"] == 8
    assert rep["provenance"]["data_sha256"] and rep["provenance"]["software"]["statsmodels"]
    html = (out / "report.html").read_text()
    for needle in (
        "ICC(2,1)",
        "Koo &amp; Li",
        "leave one grader out",
        "Kruskal–Wallis on per-animal means",
        "Pseudoreplication",
        "Descriptive only",
        "Bland–Altman",
        "Confusion matrices",
        "blast/day1",
        "data:image/png;base64",
        "Provenance",
        "statsmodels",
    ):
        assert needle in html, needle
    assert html.count("<img") == 7  # 3 units + total confusion, Bland–Altman, scatter, group box plot
    for p in (
        "confusion_eye.png",
        "confusion_total.svg",
        "groups_per_animal.png",
        "groups_per_animal.svg",
        "bland_altman.png",
        "scatter_model_vs_human.svg",
    ):
        assert (out / p).stat().st_size > 1000
    import matplotlib.image

    _, w = matplotlib.image.imread(out / "groups_per_animal.png").shape[:2]
    assert w >= 300 * 4  # at least 4 inches wide at 300 dpi
    assert "Orbital Tightening" in res.output


def test_model_equal_to_graders_gives_perfect_agreement(tmp_path: Path) -> None:
    f = make_grade_csvs(tmp_path)
    g = read_grade_csv(f["grader1"], RGS, integer_grades=True)
    rep = evaluate_grades(g, [g, g], RGS, n_boot=100)
    for b in rep["units"].values():
        assert b["classification"]["weighted_accuracy"] == 1.0
        assert b["icc_model_vs_human_mean"]["forms"]["ICC1"]["icc"] == pytest.approx(1.0)


def test_missing_images_are_counted_not_fatal(tmp_path: Path) -> None:
    f = make_grade_csvs(tmp_path)
    lines = f["grader2"].read_text().splitlines()
    f["grader2"].write_text("\n".join(lines[:-10]) + "\n")  # grader 2 skipped the last 10 images
    pred, humans = load_inputs(f["pred"], [f["grader1"], f["grader2"]], RGS)
    rep = evaluate_grades(pred, humans, RGS, n_boot=100)
    assert rep["counts"]["prediction_images_missing_in_grader"] == [0, 10]
    # model vs mean uses whichever graders graded the image; inter-grader needs both
    assert rep["units"]["eye"]["icc_model_vs_human_mean"]["n"] == 59
    assert rep["units"]["eye"]["icc_graders"]["n"] == 50
    assert rep["units"]["eye"]["icc_graders"]["n_excluded"] == 10


def test_bad_files_name_file_and_line(tmp_path: Path) -> None:
    p = tmp_path / "g.csv"
    p.write_text(
        "Filename,RGS,Orbital Tightening,Ear Changes,Nose Flattening\na.png,1,1,1,1\nb.png,1,1,x,1\n"
    )
    with pytest.raises(GradeFileError, match=r"g\.csv:3: column 'Ear Changes'.*'x'"):
        read_grade_csv(p, RGS)
    p.write_text("Filename,Orbital Tightening\na.png,3\n")
    with pytest.raises(GradeFileError, match=r"g\.csv:2: .*outside 0\.\.2"):
        read_grade_csv(p, RGS)
    p.write_text("Filename,Orbital Tightening\na.png,1.5\n")
    with pytest.raises(GradeFileError, match=r"whole number"):
        read_grade_csv(p, RGS, integer_grades=True)
    assert read_grade_csv(p, RGS).units["eye"][0] == 1.5  # a model may give mean grades
    p.write_text("Filename,Orbital Tightening\na.png,1\na.png,2\n")
    with pytest.raises(GradeFileError, match=r"g\.csv:3: image 'a.png' listed twice"):
        read_grade_csv(p, RGS)
    p.write_text("Name,Grade\na.png,1\n")
    with pytest.raises(GradeFileError, match=r"g\.csv:1: no file-name column"):
        read_grade_csv(p, RGS)
    p.write_text("Filename,Foo\na.png,1\n")
    with pytest.raises(GradeFileError, match=r"g\.csv:1: none of the columns"):
        read_grade_csv(p, RGS)
    res = CliRunner().invoke(
        app, ["eval", "grades", "--pred", str(p), "--human", str(p), "--out", str(tmp_path / "o")]
    )
    assert res.exit_code == 2 and "g.csv:1" in res.output


def test_total_computed_from_units_when_no_score_column(tmp_path: Path) -> None:
    p = tmp_path / "g.csv"
    p.write_text(
        "filename,Orbital Tightening,Ear Changes,Nose Flattening,Whisker Change\n"
        "a.png,2,1,0,\nb.png,2,,0,1\nc.png,NA,NA,NA,NA\n"
    )
    t = read_grade_csv(p, RGS)
    assert not t.total_from_file
    assert t.total[0] == pytest.approx(1.0)
    assert np.isnan(t.total[1])  # ear is required: abstained
    assert np.isnan(t.total[2])


def test_round_half_up() -> None:
    assert round_half_up(np.array([0.5, 1.5, 1.49, np.nan])).tolist()[:3] == [1.0, 2.0, 1.0]


def test_prediction_json_lines_like_grimace_predict(tmp_path: Path) -> None:
    f = make_grade_csvs(tmp_path)
    g1 = read_grade_csv(f["grader1"], RGS, integer_grades=True)
    lines = []
    for i, name in enumerate(g1.images):
        units = {u: float(g1.units[u][i]) for u in ("eye", "ear", "nose")}
        rec = {
            "source": f"/data/{name}",
            "score": float(g1.total[i]),
            "abstained": None,
            "unit_scores": {**units, "whiskers": None},
            "boxes": [],
        }
        if i == 0:
            rec.update(score=None, abstained="missing required unit(s): eye", unit_scores={"eye": None})
        lines.append(json.dumps(rec))
    p = tmp_path / "pred.jsonl"
    p.write_text("\n".join(lines) + "\n")
    pred, humans = load_inputs(p, [f["grader1"]], RGS)
    assert set(pred.units) == {"eye", "ear", "nose", "whiskers"} and np.isnan(pred.total[0])
    rep = evaluate_grades(pred, humans, RGS, n_boot=100)
    assert rep["units"]["eye"]["classification"]["weighted_accuracy"] == 1.0
    assert rep["total"]["icc_model_vs_human_mean"]["n_excluded"] == 1
    assert "whiskers" not in rep["units"] or rep["units"]["whiskers"]["icc_model_vs_human_mean"]["n"] == 0
    p.write_text('{"source": "a.png", "unit_scores": {"eye": "high"}}\n')
    with pytest.raises(GradeFileError, match=r"pred\.jsonl:1: column 'Orbital Tightening'.*'high'"):
        load_inputs(p, [f["grader1"]], RGS)


def test_reads_the_synthetic_generators_grader_files(tmp_path: Path) -> None:
    """The CSVs of `grimace synth --graders 2` (ground truth as a stand-in model) go through end to end."""
    from train.synth.dataset import generate

    generate(tmp_path / "syn", "rgs", n=24, seed=3, imgsz=64, subjects=4, graders=2)
    g = tmp_path / "syn" / "graders"
    out = tmp_path / "rep"
    res = CliRunner().invoke(
        app,
        ["eval", "grades", "--n-boot", "100", "--pred", str(g / "ground_truth.csv"),
         "--human", str(g / "grader_1.csv"), "--human", str(g / "grader_2.csv"),
         "--groups", str(tmp_path / "syn" / "subjects.csv"), "--out", str(out)],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    rep = json.loads((out / "report.json").read_text())
    assert set(rep["units"]) == {"eye", "ear", "nose", "whiskers"}
    assert rep["total"]["icc_model_vs_human_mean"]["n"] == 24
    assert rep["total"]["icc_graders"]["forms"]["ICC1"]["icc"] is not None
    assert {k.split("/")[0] for k in rep["groups"]["cells"]} == {"control", "injured"}


def test_xlsx_prediction_like_teacher_score(tmp_path: Path) -> None:
    import openpyxl

    f = make_grade_csvs(tmp_path)
    wb = openpyxl.Workbook()
    ws = wb.active
    with f["pred"].open() as fh:
        for row in csv.reader(fh):
            ws.append([float(c) if c.replace(".", "", 1).isdigit() else (c or None) for c in row])
    ws.append(["bad.png", "x", 1, 1, 1])
    wb.save(tmp_path / "pred.xlsx")
    with pytest.raises(GradeFileError, match=r"pred\.xlsx:62: column 'RGS'"):
        read_grade_csv(tmp_path / "pred.xlsx", RGS)
    ws.delete_rows(62)
    wb.save(tmp_path / "pred.xlsx")
    xl = read_grade_csv(tmp_path / "pred.xlsx", RGS)
    cs = read_grade_csv(f["pred"], RGS)
    assert xl.images == cs.images
    np.testing.assert_allclose(xl.units["eye"], cs.units["eye"])


def test_no_overlap_and_constant_grades_never_crash(tmp_path: Path) -> None:
    pred = tmp_path / "pred.csv"
    pred.write_text("Filename,RGS,Orbital Tightening,Ear Changes,Nose Flattening\nx.png,1,1,1,1\ny.png,,,,\n")
    g = tmp_path / "g.csv"
    g.write_text("Filename,Orbital Tightening,Ear Changes,Nose Flattening\na.png,1,1,1\nb.png,1,1,1\n")
    out = tmp_path / "o"
    res = CliRunner().invoke(
        app,
        [
            "eval",
            "grades",
            "--n-boot",
            "100",
            "--pred",
            str(pred),
            "--human",
            str(g),
            str(g),
            "--out",
            str(out),
        ],
    )
    assert res.exit_code == 0, res.output
    assert "none of the 2 predicted images is in" in res.output
    rep = json.loads((out / "report.json").read_text())
    assert rep["units"]["eye"]["classification"]["error"]
    graders = rep["units"]["eye"]["icc_graders"]  # graded-only images count for the graders' own ICC
    assert graders["n"] == 2 and "identical" in graders["error"]


def test_only_the_record_schema_is_read_and_earlier_layouts_are_upgraded(tmp_path: Path) -> None:
    """Unit names or other spellings are not aliases of the schema's columns; the two earlier layouts
    (teacher score: RGS = argmax, `RGS expected`; score: `RGS_argmax`) are renamed on reading."""
    p = tmp_path / "g.csv"
    p.write_text("filename,eye,ear,nose\na.png,2,1,0\n")
    with pytest.raises(GradeFileError, match="none of the columns"):
        read_grade_csv(p, RGS)
    p.write_text("File,RGS\na.png,1\n")
    with pytest.raises(GradeFileError, match="expected 'Filename'"):
        read_grade_csv(p, RGS)
    old_teacher = tmp_path / "teacher_v1.csv"
    old_teacher.write_text(
        "Filename,RGS,Orbital Tightening,Ear Changes,Nose Flattening,RGS expected,"
        "Orbital Tightening expected,Ear Changes expected,Nose Flattening expected,Flag\n"
        "a.png,1.0,2,1,0,0.8,1.5,0.7,0.2,\n"
    )
    t = read_grade_csv(old_teacher, RGS)
    assert t.total[0] == pytest.approx(0.8) and t.units["eye"][0] == pytest.approx(1.5)  # expected grades
    assert "teacher-score layout" in t.note
    old_score = tmp_path / "score_v1.csv"
    old_score.write_text("Filename,RGS,Orbital Tightening,RGS_argmax,subject\na.png,0.9,1.2,1.0,r1\n")
    t = read_grade_csv(old_score, RGS)
    assert t.total[0] == pytest.approx(0.9) and "score layout" in t.note
    new = tmp_path / "new.csv"
    new.write_text("Filename,RGS\na.png,1\n")
    assert read_grade_csv(new, RGS).note is None


def test_escaped_file_names_read_back(tmp_path: Path) -> None:
    from edge.records import write_csv

    name = "=cmd|' -C calc'!A0.png"
    p = write_csv(tmp_path / "p.csv", [{"Filename": name, "RGS": 1.0}], ["Filename", "RGS"])
    assert p.read_text().splitlines()[1].startswith("'=cmd")  # inert in a spreadsheet
    assert read_grade_csv(p, RGS).images == [name]

# ------------------------------------------------------------------- animals, baselines, bootstrap
def _study(
    tmp_path: Path, n_animals: int = 4, per: int = 30, seed: int = 0, levels: tuple = (0.5, 0.8)
) -> dict[str, Path]:
    """Two groups × ``n_animals`` animals × ``per`` images; animals differ, images of one animal share it."""
    rng = np.random.default_rng(seed)
    rows = []
    for group, level in zip(("control", "injured"), levels, strict=True):
        for a in range(n_animals):
            animal_level = level + rng.normal(0, 0.25)
            for i in range(per):
                rows.append(
                    (
                        f"{group}{a}_{i}.png",
                        f"{group}{a}",
                        group,
                        np.clip(animal_level + rng.normal(0, 0.1, 3), 0, 2),
                    )
                )
    tmp_path.mkdir(parents=True, exist_ok=True)
    with (tmp_path / "subjects.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "subject", "group", "timepoint"])
        w.writerows([r[0], r[1], r[2], ""] for r in rows)
    for name, noise in (("grader1", 0.3), ("grader2", 0.3), ("pred", 0.2)):
        with (tmp_path / f"{name}.csv").open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["Filename", *UNITS])
            for r in rows:
                v = np.clip(r[3] + rng.normal(0, noise, 3), 0, 2)
                w.writerow([r[0], *(np.rint(v).astype(int) if name != "pred" else np.round(v, 3))])
    return {k: tmp_path / f"{k}.csv" for k in ("pred", "grader1", "grader2", "subjects")}


def test_headline_group_test_uses_animals_checked_by_hand(tmp_path: Path) -> None:
    """Images outnumber animals: the headline test is on per-animal means; a warning says so."""
    from scipy.stats import kruskal

    from train.data.format import read_subjects

    f = _study(tmp_path)
    pred, humans = load_inputs(f["pred"], [f["grader1"], f["grader2"]], RGS)
    subjects = read_subjects(f["subjects"])
    rep = evaluate_grades(pred, humans, RGS, subjects, n_boot=100)
    g = rep["groups"]
    # by hand: the model's total per image, averaged per animal, then Kruskal–Wallis over 4 + 4 animals
    per_animal: dict[str, list[float]] = {}
    for name, total in zip(pred.images, pred.total, strict=True):
        per_animal.setdefault(subjects[name].subject, []).append(total)
    means = {a: float(np.mean(v)) for a, v in per_animal.items()}
    by_hand = kruskal([means[f"control{i}"] for i in range(4)], [means[f"injured{i}"] for i in range(4)])
    assert g["headline"]["model"]["p"] == pytest.approx(by_hand.pvalue)
    assert g["headline"]["model"]["n"] == {"control": 4, "injured": 4}
    control = [a["model"] for a in g["cells"]["control"]["animals"]]
    assert control == pytest.approx([means[f"control{i}"] for i in range(4)])
    # the image-level test is kept, but only as descriptive, and is far more "significant"
    img = g["descriptive_image_level"]["kruskal_model"]
    assert "descriptive" in img["unit"] and sum(img["n"].values()) == 240
    assert img["p"] < g["headline"]["model"]["p"]
    assert "240 images come from 8 animals" in g["pseudoreplication_warning"]
    assert g["pseudoreplication_warning"] in rep["warnings"]
    assert g["mixed_model"]["model"]["formula"] == "score ~ group + (1 | animal)"
    assert g["mixed_model"]["model"]["n_animals"] == 8 and g["mixed_model"]["model"]["fixed_effects"]


def test_constant_predictor_scores_its_baseline_and_zero_kappa(tmp_path: Path) -> None:
    """A model that always answers grade 0 (the majority grade) gets WA = baseline WA and κ = 0."""
    f = _study(tmp_path, levels=(0.1, 0.3))  # grade 0 is the most frequent grade of every unit
    g1 = read_grade_csv(f["grader1"], RGS, integer_grades=True)
    const = tmp_path / "const.csv"
    with const.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["Filename", *UNITS])
        w.writerows([name, 0, 0, 0] for name in g1.images)
    pred, humans = load_inputs(const, [f["grader1"]], RGS)
    rep = evaluate_grades(pred, humans, RGS, n_boot=100)
    for unit, b in rep["units"].items():
        c = b["classification"]
        assert c["kappa_quadratic"] == pytest.approx(0.0, abs=1e-12), unit
        assert c["baseline"]["class"] == 0
        assert c["weighted_accuracy"] == pytest.approx(c["baseline"]["weighted_accuracy"])
        assert not c["beats_baseline"]
        assert c["baseline"]["kappa_quadratic"] == pytest.approx(0.0)
        assert c["baseline"]["balanced_accuracy"] == pytest.approx(
            1 / len([s for s in c["per_class"].values() if s["support"]])
        )
    assert any("does not beat the majority-class baseline" in w for w in rep["warnings"])


def test_bootstrap_covers_full_data_value_and_widens_with_fewer_animals(tmp_path: Path) -> None:
    from train.data.format import read_subjects

    def width_and_block(n_animals: int) -> tuple[float, dict]:
        f = _study(tmp_path / str(n_animals), n_animals=n_animals, per=10, seed=1)
        pred, humans = load_inputs(f["pred"], [f["grader1"], f["grader2"]], RGS)
        rep = evaluate_grades(pred, humans, RGS, read_subjects(f["subjects"]), n_boot=400)
        b = rep["total"]
        lo, hi = b["headline_icc"]["ci95_bootstrap"]
        return hi - lo, b

    wide, few = width_and_block(3)
    narrow, many = width_and_block(12)
    for b in (few, many):
        for name, fig in b["bootstrap"]["figures"].items():
            lo, hi = fig["ci95"]
            assert lo <= fig["estimate"] <= hi, name
        assert b["headline_icc"]["icc"] == pytest.approx(b["bootstrap"]["figures"]["icc2"]["estimate"])
        ba = b["bland_altman"]
        assert ba["ci95"]["bias"][0] <= ba["bias"] <= ba["ci95"]["bias"][1]
    assert few["bootstrap"]["n_clusters"] == 6 and many["bootstrap"]["n_clusters"] == 24
    assert wide > narrow * 1.3


def test_leave_one_grader_out_is_like_for_like(tmp_path: Path) -> None:
    """A model that *is* grader 1 matches grader 1's own leave-one-out figures."""
    f = _study(tmp_path)
    pred, humans = load_inputs(f["grader1"], [f["grader1"], f["grader2"]], RGS)
    rep = evaluate_grades(pred, humans, RGS, n_boot=100)
    lo = rep["units"]["eye"]["leave_one_grader_out"]
    r1, r2 = lo["rows"]
    assert r1["model_vs_rest"] == pytest.approx(r1["grader_vs_rest"])  # both against grader 2
    assert r2["model_vs_rest"]["kappa_quadratic"] == pytest.approx(1.0)  # model = the reference
    assert r2["grader_vs_rest"]["kappa_quadratic"] == pytest.approx(r1["grader_vs_rest"]["kappa_quadratic"])


def test_report_html_escapes_file_names(tmp_path: Path) -> None:
    from train.evaluation.report import jsonable, render_html

    f = make_grade_csvs(tmp_path)
    pred, humans = load_inputs(f["pred"], [f["grader1"]], RGS)
    rep = jsonable(evaluate_grades(pred, humans, RGS, n_boot=100))
    rep["inputs"]["prediction"] = "<script>alert(1)</script>.csv"
    page = render_html(rep, {})
    assert "&lt;script&gt;alert(1)&lt;/script&gt;.csv" in page and "<script>" not in page
    assert "No provenance recorded" in page and "Only one grader file" in page
