"""CLI commands: grimace eval / cv / baseline (imports nothing heavy at module level).

* ``grimace eval grades``  — model grades vs human graders (weighted accuracy, ICC, Wilcoxon, KW).
* ``grimace eval detect``  — detection precision/recall per unit vs confidence threshold.
* ``grimace cv``           — single split, k-fold, subject-wise k-fold, leave-one-subject-out.
* ``grimace baseline svm`` — the goat seed baseline: video frames, VGG-16 features, linear SVM.
"""

from __future__ import annotations

from pathlib import Path

import typer

from edge.deps import MissingDependencyError, require

eval_app = typer.Typer(no_args_is_help=True)
cv_app = typer.Typer(no_args_is_help=True)
baseline_app = typer.Typer(no_args_is_help=True)

SCHEMES_HELP = "split (one random train/test split), kfold, subject-kfold, loso (leave one subject out)"


def _fail(msg: str, code: int = 2) -> None:
    typer.secho(f"error: {msg}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def _need_eval(what: str) -> None:
    try:
        for mod in ("numpy", "scipy", "pandas", "pingouin", "matplotlib"):
            require(mod, what)
    except MissingDependencyError as e:
        _fail(str(e))


@eval_app.command("grades", context_settings={"allow_extra_args": True})
def eval_grades(
    ctx: typer.Context,
    pred: Path = typer.Option(..., "--pred", help="Model grades CSV (grimace score/predict/teacher score)."),
    human: list[Path] = typer.Option(..., "--human", help="Grader CSV; give once per grader."),
    groups: Path | None = typer.Option(
        None, "--groups", help="subjects.csv (image,subject,group,timepoint)."
    ),
    scale: str = typer.Option("rgs", "--scale", help="Scale name or YAML file naming the unit columns."),
    out: Path = typer.Option(..., "--out", help="Report folder (report.html, report.json, PNGs)."),
) -> None:
    """Validate model grades against human graders with the rat seed's statistics.

    Extra grader files may follow a single --human: `--human g1.csv g2.csv` is read as two graders.
    """
    _need_eval("grimace eval grades")
    from edge.scales import ScaleError, load_scale
    from train.data.format import LabelError, read_subjects
    from train.evaluation.grades import evaluate_grades, load_inputs
    from train.evaluation.io import GradeFileError
    from train.evaluation.report import write_grades_report

    extra = [Path(a) for a in ctx.args]
    bad = [str(a) for a in extra if a.suffix.lower() != ".csv"]
    if bad:
        _fail(f"unexpected arguments {bad}; grader files after --human must be .csv files")
    try:
        spec = load_scale(scale)
        p, hs = load_inputs(pred, [*human, *extra], spec)
        subjects = read_subjects(groups) if groups else None
    except (GradeFileError, LabelError, ScaleError, OSError) as e:
        _fail(str(e))
    report = evaluate_grades(p, hs, spec, subjects)
    files = write_grades_report(report, out)
    _print_grade_summary(report)
    typer.echo(f"report: {files['html']}\njson:   {files['json']}")


def _print_grade_summary(report: dict) -> None:
    blocks = [(b["label"], b) for b in report["units"].values()] + [
        (report["total"]["label"], report["total"])
    ]
    typer.echo(f"{'unit':<22}{'n':>5}{'WA':>8}{'ICC(1,1)':>10}  {'label':<10}{'graders ICC(1,1)':>18}")
    for label, b in blocks:
        r = b["icc_model_vs_human_mean"]
        f = r["forms"]["ICC1"]
        g = b["icc_graders"]["forms"]["ICC1"] if b["icc_graders"] else None
        wa = b["classification"].get("weighted_accuracy")
        wa_s = "—" if wa is None else f"{wa:.3f}"
        icc_s = "—" if not f or f["icc"] is None else f"{f['icc']:.3f}"
        lab = f["label"] if f else "undefined"
        g_s = "—" if not g or g["icc"] is None else f"{g['icc']:.3f}"
        typer.echo(f"{label:<22}{r['n']:>5}{wa_s:>8}{icc_s:>10}  {lab:<10}{g_s:>18}")
