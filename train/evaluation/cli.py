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


def _invocation(ctx: typer.Context | None) -> dict:
    """The command as parsed (command path and every option's value), for the provenance block;
    ``command_line`` (``sys.argv``) is recorded beside it."""
    if ctx is None:
        return {}

    def plain(v: object) -> object:
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        return str(v) if isinstance(v, Path) else v

    return {"command": ctx.command_path, "parameters": {k: plain(v) for k, v in ctx.params.items()}}


def _need_eval(what: str) -> None:
    try:
        for mod in ("numpy", "scipy", "pandas", "pingouin", "matplotlib", "sklearn", "statsmodels", "jinja2"):
            require(mod, what)
    except MissingDependencyError as e:
        _fail(str(e))


@eval_app.command("grades", context_settings={"allow_extra_args": True})
def eval_grades(
    ctx: typer.Context,
    pred: Path = typer.Option(
        ..., "--pred", help="Model grades: CSV or XLSX, or JSON lines (predict --json)."
    ),
    human: list[Path] = typer.Option(
        ..., "--human", help="Grader CSV or XLSX; repeat, or list several after it."
    ),
    groups: Path | None = typer.Option(
        None, "--groups", help="subjects.csv (image,subject,group,timepoint)."
    ),
    scale: str = typer.Option("rgs", "--scale", help="Scale name or YAML file naming the unit columns."),
    out: Path = typer.Option(..., "--out", help="Report folder (report.html, report.json, PNG + SVG)."),
    model: Path | None = typer.Option(
        None, "--model", help="The model artifact that wrote --pred (its SHA-256 goes into the provenance)."
    ),
    n_boot: int = typer.Option(2000, "--n-boot", help="Bootstrap resamples of animals (95% intervals)."),
    seed: int = typer.Option(0, "--seed", help="Bootstrap seed."),
    min_mixed_animals: int = typer.Option(
        6, "--min-mixed-animals", help="Fewest animals for which the mixed model is fitted."
    ),
) -> None:
    """Validate model grades against human graders, with animals as the unit of inference.

    Extra grader files may follow a single --human: `--human g1.csv g2.csv` is read as two graders.
    """
    _need_eval("grimace eval grades")
    from edge.scales import ScaleError, load_scale
    from train.data.format import LabelError, read_subjects
    from train.evaluation.grades import evaluate_grades, load_inputs
    from train.evaluation.io import GradeFileError
    from train.evaluation.provenance import provenance
    from train.evaluation.report import write_grades_report

    extra = [Path(a) for a in ctx.args]
    bad = [str(a) for a in extra if a.suffix.lower() not in (".csv", ".xlsx", ".xlsm")]
    if bad:
        _fail(f"unexpected arguments {bad}; grader files after --human must be .csv or .xlsx files")
    if n_boot < 100:
        _fail(f"--n-boot must be at least 100, got {n_boot}")
    if model is not None and not model.exists():
        _fail(f"{model}: no such model file or folder")
    try:
        spec = load_scale(scale)
        p, hs = load_inputs(pred, [*human, *extra], spec)
        subjects = read_subjects(groups) if groups else None
    except (GradeFileError, LabelError, ScaleError, OSError) as e:
        _fail(str(e))
    report = evaluate_grades(
        p, hs, spec, subjects, n_boot=n_boot, seed=seed, min_mixed_animals=min_mixed_animals
    )
    report["provenance"] = provenance(
        model=model, data=[pred, *human, *extra, *([groups] if groups else [])], extra=_invocation(ctx)
    )
    cnt = report["counts"]
    n_pred = cnt["images_in_prediction"]
    for h, missing in zip(hs, cnt["prediction_images_missing_in_grader"], strict=True):
        if missing == n_pred:
            msg = (
                f"none of the {n_pred} predicted images is in {h.path} (rows are matched by file name, "
                f"e.g. {p.images[0]!r} vs {h.images[0]!r})"
            )
        elif missing:
            msg = f"{missing} predicted image(s) have no row in {h.path}; left out of its comparisons"
        else:
            continue
        typer.secho(f"warning: {msg}", fg=typer.colors.YELLOW, err=True)
    for w in report["warnings"]:
        typer.secho(f"warning: {w}", fg=typer.colors.YELLOW, err=True)
    files = write_grades_report(report, out)
    _print_grade_summary(report)
    typer.echo(f"report: {files['html']}\njson:   {files['json']}")


def _ci(ci: list | None) -> str:
    return "" if not ci or ci[0] is None else f"[{ci[0]:.2f},{ci[1]:.2f}]"


def _print_grade_summary(report: dict) -> None:
    blocks = [(b["label"], b) for b in report["units"].values()] + [
        (report["total"]["label"], report["total"])
    ]
    typer.echo(
        f"{'unit':<22}{'n':>5}{'ICC(2,1) [95% CI]':>24}  {'Koo & Li':<20}"
        f"{'kappa':>7}{'WA':>8}{'baseline':>10}"
    )
    for label, b in blocks:
        h = b.get("headline_icc") or {}
        c = b["classification"]
        icc_s = "—" if h.get("icc") is None else f"{h['icc']:.3f} {_ci(h['ci95_bootstrap'])}"
        k = c.get("kappa_quadratic")
        wa = c.get("weighted_accuracy")
        base = (c.get("baseline") or {}).get("weighted_accuracy")
        typer.echo(
            f"{label:<22}{c.get('n', 0):>5}{icc_s:>24}  {h.get('koo_li', 'undefined'):<20}"
            f"{'—' if k is None else f'{k:.3f}':>7}{'—' if wa is None else f'{wa:.3f}':>8}"
            f"{'—' if base is None else f'{base:.3f}':>10}"
        )
    g = report.get("groups")
    if g:
        for who, name in (("model", "model"), ("human", "graders")):
            kw = g["headline"][who]
            p = kw["p"]
            typer.echo(
                f"groups ({name}): Kruskal–Wallis on {sum(kw['n'].values())} per-animal cell means, "
                f"p = {'—' if p is None else f'{p:.4g}'}"
            )


@eval_app.command("detect")
def eval_detect(
    pred: Path = typer.Option(..., "--pred", help="Predictions, JSON lines (one record per image)."),
    data: Path = typer.Option(..., "--data", help="Dataset folder with data.yaml and label files."),
    iou: float = typer.Option(0.5, "--iou", help="IoU needed for a true positive."),
    split: list[str] = typer.Option([], "--split", help="Dataset split(s) for ground truth (default all)."),
    out: Path = typer.Option(Path("eval_detect"), "--out", help="Output folder (JSON, Markdown, PNGs)."),
) -> None:
    """Detection precision and recall per unit vs confidence threshold (the rat seed's Fig. 1)."""
    _need_eval("grimace eval detect")
    import warnings

    from train.data.format import LabelError
    from train.evaluation.detect import (
        DetectFileError,
        detection_markdown,
        evaluate_detections,
        plot_detection,
    )
    from train.evaluation.report import write_json

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            report = evaluate_detections(pred, data, iou=iou, splits=list(split) or None)
    except (DetectFileError, LabelError, OSError) as e:
        _fail(str(e))
    for msg in report["skipped_lines"][:10] + report["label_problems"][:10]:
        typer.secho(f"skipped: {msg}", fg=typer.colors.YELLOW, err=True)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "detect_report.json", report)
    md = detection_markdown(report)
    (out / "detect_report.md").write_text(md)
    plot_detection(report, out)
    typer.echo(md)
    typer.echo(f"written: {out}/detect_report.json, detect_report.md, precision/recall_confidence.png")


DEVICE_HELP = "Torch device for the VGG features: auto (cuda if available, else cpu), cpu, cuda, cuda:1."


def _svm_trainer(
    backbone: str,
    pretrained: bool,
    c: float,
    batch: int,
    device: str = "auto",
    min_frames: int = 10,
    threshold: float = 0.5,
) -> object:
    require("torch", "the SVM baseline")
    require("sklearn", "the SVM baseline")
    from edge.verdict import VerdictRule
    from train.evaluation.baseline import BACKBONES, FeatureExtractor, SVMTrainer, resolve_device

    if backbone not in BACKBONES:
        _fail(f"unknown backbone {backbone!r}; expected one of {', '.join(BACKBONES)}")
    try:
        resolve_device(device)
        rule = VerdictRule(min_frames=min_frames, threshold=threshold)
    except (ValueError, RuntimeError) as e:
        _fail(str(e))
    fx = FeatureExtractor(backbone=backbone, pretrained=pretrained, batch_size=batch, device=device)
    return SVMTrainer(fx, C=c, rule=rule)


def _manifest(trainer: object, data: list[Path], device: str, ctx: typer.Context | None = None) -> dict:
    from train.evaluation.provenance import provenance

    fx = getattr(trainer, "features", None)
    extra = {"device_requested": device, **_invocation(ctx)}
    if fx is not None:
        extra.update(
            device=fx.device_used or device, backbone=fx.backbone, weights=fx.weights_used or "not built"
        )
    return provenance(data=data, extra=extra)


@cv_app.command("cv", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def cv_cmd(
    ctx: typer.Context,
    data: Path = typer.Option(..., "--data", help="Dataset folder (data.yaml, labels, subjects.csv)."),
    scheme: str = typer.Option("subject-kfold", "--scheme", help=SCHEMES_HELP),
    k: int = typer.Option(5, "--k", help="Folds for kfold / subject-kfold."),
    model: str = typer.Option("svm", "--model", help="student (fused model, by subprocess) or svm."),
    target: str = typer.Option("pain", "--target", help="svm class: pain (from graded labels) or group."),
    seed: int = typer.Option(0, "--seed", help="Split seed."),
    test_fraction: float = typer.Option(0.2, "--test-fraction", help="Test share for --scheme split."),
    backbone: str = typer.Option("vgg16", "--backbone", help="svm features: vgg16, or tiny (TEST OPTION)."),
    pretrained: bool = typer.Option(True, "--pretrained/--no-pretrained", help="ImageNet weights for vgg16."),
    c: float = typer.Option(1.0, "--C", help="SVM regularisation."),
    batch: int = typer.Option(16, "--batch", help="Feature extraction batch size."),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
    min_frames: int = typer.Option(
        1, "--min-frames", help="svm: fewest scored images for a per-animal verdict."
    ),
    threshold: float = typer.Option(
        0.5, "--threshold", help="svm: share of images called painful for 'painful'."
    ),
    out: Path = typer.Option(Path("cv_report"), "--out", help="Output folder (cv_report.json / .md)."),
    train_cmd: str | None = typer.Option(None, "--train-cmd", help="student: training command template."),
    predict_cmd: str | None = typer.Option(
        None, "--predict-cmd", help="student: prediction command template."
    ),
) -> None:
    """Cross-validate on a dataset: split | kfold | subject-kfold | loso.

    Metrics are computed on the pooled out-of-fold predictions, with the per-animal and per-fold
    tables beside them. Options after `--` go to the student's training command, e.g.
    `grimace cv --data D --scheme loso --model student -- --epochs 5 --imgsz 320`.
    Subject-wise schemes are checked: no subject is on both sides of any fold.
    """
    from train.data.format import LabelError
    from train.evaluation.cv import StudentTrainer, cv_markdown, dataset_items, run_cv
    from train.evaluation.report import write_json
    from train.evaluation.splits import SCHEMES, SUBJECT_SCHEMES, SplitError

    if scheme not in SCHEMES:
        _fail(f"unknown scheme {scheme!r}; expected one of {', '.join(SCHEMES)}")
    try:
        items, info = dataset_items(
            data, target="none" if model == "student" else target, require_subjects=scheme in SUBJECT_SCHEMES
        )
    except (LabelError, ValueError, OSError) as e:
        _fail(str(e))
    for msg in info.raw.get("_skipped", [])[:5]:
        typer.secho(f"skipped: {msg}", fg=typer.colors.YELLOW, err=True)
    out.mkdir(parents=True, exist_ok=True)
    if model == "svm":
        if ctx.args:
            _fail(f"options after -- are for --model student; got {ctx.args}")
        trainer = _svm_trainer(backbone, pretrained, c, batch, device, min_frames, threshold)
    elif model == "student":
        trainer = StudentTrainer(spec=info.spec, work=out / "folds", extra_args=list(ctx.args))
        if train_cmd:
            trainer.train_cmd = train_cmd
        if predict_cmd:
            trainer.predict_cmd = predict_cmd
    else:
        _fail(f"unknown model {model!r}; expected student or svm")
    try:
        result = run_cv(
            items, trainer, scheme, k=k, seed=seed, test_fraction=test_fraction, progress=typer.echo
        )
    except (SplitError, RuntimeError, ValueError) as e:
        _fail(str(e))
    result["data"] = str(data)
    sub = info.subjects_csv if info.subjects_csv.exists() else None
    result["provenance"] = _manifest(trainer, [data / "data.yaml", *([sub] if sub else [])], device, ctx)
    write_json(out / "cv_report.json", result)
    md = cv_markdown(result)
    (out / "cv_report.md").write_text(md)
    typer.echo(md)
    typer.echo(f"written: {out / 'cv_report.json'}, {out / 'cv_report.md'}")


@baseline_app.command("svm")
def baseline_svm(
    ctx: typer.Context,
    videos: Path = typer.Option(..., "--videos", help="Folder with the videos."),
    labels: Path = typer.Option(..., "--labels", help="CSV with columns video,animal,label."),
    fps: list[float] = typer.Option(
        [1.0], "--fps", help="Frames per second to extract (repeat: --fps 1 --fps 3)."
    ),
    scheme: list[str] = typer.Option(["subject-kfold"], "--scheme", help=SCHEMES_HELP + "; repeatable."),
    k: int = typer.Option(10, "--k", help="Folds for kfold / subject-kfold."),
    seed: int = typer.Option(0, "--seed", help="Split seed."),
    test_fraction: float = typer.Option(0.2, "--test-fraction", help="Test share for --scheme split."),
    backbone: str = typer.Option(
        "vgg16", "--backbone", help="vgg16, or tiny (a TEST OPTION: random 3-layer CNN)."
    ),
    pretrained: bool = typer.Option(True, "--pretrained/--no-pretrained", help="ImageNet weights for vgg16."),
    c: float = typer.Option(1.0, "--C", help="SVM regularisation."),
    batch: int = typer.Option(16, "--batch", help="Feature extraction batch size."),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
    min_frames: int = typer.Option(10, "--min-frames", help="Fewest scored frames for a per-animal verdict."),
    threshold: float = typer.Option(
        0.5, "--threshold", help="Share of an animal's frames called painful at which it is 'painful'."
    ),
    save_model: bool = typer.Option(
        True, "--save-model/--no-save-model", help="Train on all videos at the first --fps and save the SVM."
    ),
    out: Path = typer.Option(
        Path("baseline_svm"), "--out", help="Output folder (frames, JSON, Markdown, model)."
    ),
) -> None:
    """The goat seed baseline: frames at 1/3 fps, VGG-16 pooled features, linear SVM, CV schemes.

    Reports pooled out-of-fold metrics, the per-fold table, and one verdict per animal (painful / not
    painful / insufficient frames). With --save-model the SVM trained on every video is written to
    OUT/model (npz + json, no pickle) for `grimace baseline score`.
    """
    from train.evaluation.baseline import VideoLabelError, save_svm, seed_tables, video_items
    from train.evaluation.cv import cv_markdown, positive_class, run_cv
    from train.evaluation.report import write_json
    from train.evaluation.splits import SCHEMES, SplitError

    for s in scheme:
        if s not in SCHEMES:
            _fail(f"unknown scheme {s!r}; expected one of {', '.join(SCHEMES)}")
    trainer = _svm_trainer(backbone, pretrained, c, batch, device, min_frames, threshold)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    first_items = None
    for rate in fps:
        try:
            items = video_items(videos, labels, rate, out)
        except (VideoLabelError, OSError) as e:
            _fail(str(e))
        first_items = first_items or items
        typer.echo(f"{rate:g} fps: {len(items)} frames from {len({it.subject for it in items})} animals")
        for s in scheme:
            try:
                r = run_cv(
                    items, trainer, s, k=k, seed=seed, test_fraction=test_fraction, progress=typer.echo
                )
            except (SplitError, ValueError) as e:
                _fail(f"{s} @ {rate:g} fps: {e}")
            r["fps"] = rate
            r["features"] = {"backbone": backbone, "weights": trainer.features.weights_used}
            results.append(r)
            tag = f"{s}_{rate:g}fps"
            write_json(out / f"cv_{tag}.json", r)
            (out / f"cv_{tag}.md").write_text(cv_markdown(r))
    videos_used = sorted({Path(it.meta["video"]) for it in first_items})
    manifest = _manifest(trainer, [labels, *videos_used], device, ctx)
    report = {"videos": str(videos), "labels": str(labels), "results": results, "provenance": manifest}
    if save_model and first_items:
        try:
            model = trainer.fit(first_items)
        except ValueError as e:
            _fail(f"cannot train the final SVM: {e}")
        pos = positive_class([str(it.label) for it in first_items])
        path = save_svm(out / "model", model, trainer, fps[0], pos, extra={"provenance": manifest})
        report["model"] = str(path.parent)
        typer.echo(f"model: {path.parent} (trained on all {len(first_items)} frames at {fps[0]:g} fps)")
    write_json(out / "baseline_report.json", report)
    md = (
        f"# Goat baseline: {backbone} features ({trainer.features.weights_used}) + linear SVM\n\n"
        f"Device {trainer.features.device_used}. Verdict rule: {trainer.rule.describe()}.\n\n"
        + seed_tables(results)
    )
    (out / "baseline_report.md").write_text(md)
    typer.echo(md)
    typer.echo(f"written: {out / 'baseline_report.json'}, {out / 'baseline_report.md'}")


@baseline_app.command("score")
def baseline_score(
    ctx: typer.Context,
    inputs: list[Path] = typer.Argument(..., help="Videos, frame images or folders."),
    model: Path = typer.Option(..., "--model", help="Saved SVM folder (svm_model.json + svm_model.npz)."),
    labels: Path | None = typer.Option(
        None,
        "--labels",
        help="CSV video,animal[,label]: animal ids (and truth); default animal = video stem.",
    ),
    fps: float | None = typer.Option(None, "--fps", help="Frames per second (default: the model's)."),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
    min_frames: int | None = typer.Option(None, "--min-frames", help="Override the saved rule's N."),
    threshold: float | None = typer.Option(None, "--threshold", help="Override the saved rule's threshold."),
    batch: int = typer.Option(16, "--batch", help="Feature extraction batch size."),
    out: Path = typer.Option(
        Path("svm_scores"), "--out", help="Output folder (frames.csv, animals.csv, JSON)."
    ),
) -> None:
    """Score new videos with a saved SVM baseline: per-frame calls and one verdict per animal."""
    require("torch", "the SVM baseline")
    import csv as _csv

    from edge.verdict import VerdictRule
    from train.evaluation.baseline import VideoLabelError, load_svm, read_video_labels, score_videos
    from train.evaluation.provenance import provenance
    from train.evaluation.report import write_json

    try:
        saved = load_svm(model)
        r = saved.rule
        rule = VerdictRule(
            min_frames=r.min_frames if min_frames is None else min_frames,
            threshold=r.threshold if threshold is None else threshold,
        )
        rows = read_video_labels(labels) if labels else []
        animals = {Path(x.video).name: x.animal for x in rows} or None
        truth = {x.animal: x.label for x in rows} or None
        res = score_videos(
            saved, inputs, fps=fps, animals=animals, truth=truth, device=device, rule=rule, batch_size=batch
        )
    except (VideoLabelError, ValueError, OSError) as e:
        _fail(str(e))
    for e in res["errors"]:
        typer.secho(f"skipped: {e}", fg=typer.colors.YELLOW, err=True)
    if not res["frames"]:
        _fail("no frame could be read from the inputs")
    out.mkdir(parents=True, exist_ok=True)
    with (out / "frames.csv").open("w", newline="") as f:
        w = _csv.writer(f)
        w.writerow(["source", "frame", "time_s", "animal", "pred", "decision"])
        for fr in res["frames"]:
            w.writerow(
                [fr["source"], fr["frame"], f"{fr['time_s']:.3f}", fr["animal"], fr["pred"], fr["decision"]]
            )
    with (out / "animals.csv").open("w", newline="") as f:
        w = _csv.writer(f)
        w.writerow(["animal", "n_frames", "n_scored", "share_painful", "verdict", "truth", "correct"])
        for a in res["per_animal"]["rows"]:
            share = "" if a["mean_pain"] is None else f"{a['mean_pain']:.3f}"
            ok = a.get("correct")
            w.writerow([a["animal"], a["n_frames"], a["n_scored"], share, a["verdict"], a.get("truth") or "",
                        "" if ok is None else ok])  # fmt: skip
    res["provenance"] = provenance(
        model=model,
        data=list(inputs),
        extra={"device": res["device"], "weights": res["weights"], **_invocation(ctx)},
    )
    write_json(out / "svm_scores.json", res)
    typer.echo(f"rule: {rule.describe()}")
    for a in res["per_animal"]["rows"]:
        share = "—" if a["mean_pain"] is None else f"{a['mean_pain']:.2f}"
        typer.echo(f"{a['animal']:<20} {a['n_scored']:>5} frames  share painful {share:>5}  {a['verdict']}")
    summ = res["per_animal"]["summary"]
    if "animal_accuracy" in summ:
        typer.echo(
            f"per-animal accuracy {summ['animal_accuracy']:.3f} "
            f"over {summ['n_judged']} animals with a verdict"
        )
    typer.echo(f"written: {out / 'frames.csv'}, {out / 'animals.csv'}, {out / 'svm_scores.json'}")
