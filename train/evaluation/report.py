"""Figures (matplotlib, Agg) and the self-contained HTML report of ``grimace eval grades``.

Every figure is written as a PNG next to the report and embedded in ``report.html`` (base64), so the
HTML file can be mailed on its own. All numbers shown are also in ``report.json``.
"""

from __future__ import annotations

import base64
import html
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from train.evaluation import stats


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def fmt(x: Any, nd: int = 3) -> str:
    """Number for a table cell; ``—`` for missing."""
    if x is None:
        return "—"
    if isinstance(x, float):
        if not math.isfinite(x):
            return "—"
        return f"{x:.{nd}f}"
    return html.escape(str(x))


def fmt_p(p: float | None) -> str:
    """p-value with the seed's significance marks."""
    if p is None:
        return "—"
    s = "<0.0001" if p < 0.0001 else f"{p:.4f}"
    return f"{s} ({stats.stars(p)})"


def plot_confusion(cm: list[list[int]], names: list[str], title: str, path: Path) -> Path:
    """Confusion matrix heat map with counts (rows true, columns predicted)."""
    plt = _plt()
    a = np.asarray(cm)
    fig, ax = plt.subplots(figsize=(3.4 + 0.3 * len(names), 3.0 + 0.3 * len(names)), dpi=100)
    ax.imshow(a, cmap="Blues")
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("model")
    ax.set_ylabel("graders (consensus)")
    ax.set_title(title, fontsize=10)
    vmax = a.max() if a.size else 0
    for i in range(a.shape[0]):
        for j in range(a.shape[1]):
            ax.text(
                j, i, str(a[i, j]), ha="center", va="center", color="white" if a[i, j] > vmax / 2 else "black"
            )
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_groups(groups: dict[str, Any], score_name: str, out_dir: Path) -> list[Path]:
    """The seed's Fig. 4 (group means per analysis) and Fig. 5 (model vs human per group), ± SEM."""
    plt = _plt()
    names = list(groups["groups"])
    if not names:
        return []
    paths = []
    # Fig. 4 style: one panel per analysis, bars per group, Kruskal–Wallis p in the title
    fig, axes = plt.subplots(1, 2, figsize=(4 + 1.2 * len(names), 3.6), dpi=100, sharey=True)
    for ax, who, kw in ((axes[0], "model", "kruskal_model"), (axes[1], "human", "kruskal_human")):
        means = [groups["groups"][g][who]["mean"] or 0.0 for g in names]
        errs = [groups["groups"][g][who]["sem"] or 0.0 for g in names]
        ax.bar(
            range(len(names)), means, yerr=errs, capsize=4, color="#4C72B0" if who == "model" else "#DD8452"
        )
        ax.set_xticks(range(len(names)), names, rotation=20, ha="right")
        p = groups[kw]["p"] if groups[kw] else None
        ptxt = fmt_p(p)
        ptxt = f"p {ptxt}" if ptxt.startswith("<") else f"p={ptxt}"
        ax.set_title(f"{'model' if who == 'model' else 'graders'}: Kruskal–Wallis {ptxt}", fontsize=9)
    axes[0].set_ylabel(f"mean {score_name} ± SEM")
    fig.tight_layout()
    p4 = out_dir / "groups_by_analysis.png"
    fig.savefig(p4)
    plt.close(fig)
    paths.append(p4)
    # Fig. 5 style: model vs human side by side per group, Wilcoxon marks
    fig, ax = plt.subplots(figsize=(3 + 1.3 * len(names), 3.6), dpi=100)
    x = np.arange(len(names))
    w = 0.38
    for off, who, color in ((-w / 2, "model", "#4C72B0"), (w / 2, "human", "#DD8452")):
        means = [groups["groups"][g][who]["mean"] or 0.0 for g in names]
        errs = [groups["groups"][g][who]["sem"] or 0.0 for g in names]
        ax.bar(
            x + off,
            means,
            w,
            yerr=errs,
            capsize=4,
            color=color,
            label="model" if who == "model" else "graders' mean",
        )
    top = max(
        (groups["groups"][g][who]["mean"] or 0.0) + (groups["groups"][g][who]["sem"] or 0.0)
        for g in names
        for who in ("model", "human")
    )
    for i, g in enumerate(names):
        mark = stats.stars(groups["groups"][g]["wilcoxon_model_vs_human"]["p"])
        ax.text(i, top * 1.05 + 0.02, mark, ha="center", fontsize=9)
    ax.set_ylim(0, top * 1.4 + 0.1)
    ax.set_xticks(x, names, rotation=20, ha="right")
    ax.set_ylabel(f"mean {score_name} ± SEM")
    ax.set_title("model vs graders per group (Wilcoxon signed-rank)", fontsize=9)
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    p5 = out_dir / "groups_model_vs_human.png"
    fig.savefig(p5)
    plt.close(fig)
    paths.append(p5)
    return paths


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(path.name)}" src="data:image/png;base64,{data}">'


def _table(header: list[str], rows: list[list[str]]) -> str:
    h = "".join(f"<th>{c}</th>" for c in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{h}</tr></thead><tbody>{body}</tbody></table>"


def _icc_cell(res: dict[str, Any] | None, form: str) -> str:
    if not res:
        return "—"
    f = res["forms"].get(form)
    if not f or f["icc"] is None:
        return html.escape(res.get("error") or "—")
    lo, hi = f["ci95"]
    return f"{f['icc']:.3f} [{fmt(lo, 2)}, {fmt(hi, 2)}] <i>{f['label']}</i>"


def _blocks(report: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    out = [(b["label"], b) for b in report["units"].values()]
    out.append((report["total"]["label"], report["total"]))
    return out


CSS = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}
table{border-collapse:collapse;margin:0.6em 0 1.4em}
th,td{border:1px solid #bbb;padding:3px 8px;font-size:0.9em;text-align:left}
th{background:#eee} img{max-width:100%;margin:4px} .note{color:#555;font-size:0.88em}
.figs{display:flex;flex-wrap:wrap;align-items:flex-start}
"""


def write_grades_report(report: dict[str, Any], out_dir: str | Path) -> dict[str, Path]:
    """Write ``report.json``, the PNG figures and ``report.html`` into ``out_dir``.

    Returns:
        Name -> path of every file written.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    score_name = report["total"]["label"]

    figs: list[tuple[str, Path]] = []
    for key, block in [*report["units"].items(), ("total", report["total"])]:
        c = block.get("classification", {})
        if "confusion" in c:
            p = plot_confusion(
                c["confusion"],
                c["label_names"],
                f"{block['label']} (n={c['n']})",
                out / f"confusion_{key}.png",
            )
            figs.append((block["label"], p))
            files[f"confusion_{key}"] = p
    group_figs = plot_groups(report["groups"], score_name, out) if report.get("groups") else []
    for p in group_figs:
        files[p.stem] = p

    json_path = out / "report.json"
    write_json(json_path, report)
    files["json"] = json_path

    inp = report["inputs"]
    cnt = report["counts"]
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>grimace validation: {html.escape(report['scale']['name'])}</title>",
        f"<style>{CSS}</style></head><body>",
        f"<h1>Validation of model grades against {inp['n_graders']} human grader(s)</h1>",
        "<p>Scale <b>"
        + html.escape(report["scale"]["name"])
        + "</b>. Model file <code>"
        + html.escape(inp["prediction"])
        + "</code>; graders: "
        + ", ".join(f"<code>{html.escape(g)}</code>" for g in inp["graders"])
        + ".</p>",
        _table(
            ["", "count"],
            [["images in the prediction file", str(cnt["images_in_prediction"])]]
            + [
                [
                    f"grader {i + 1}: images / prediction images it lacks / its images not predicted",
                    f"{a} / {b} / {c}",
                ]
                for i, (a, b, c) in enumerate(
                    zip(
                        cnt["images_in_graders"],
                        cnt["prediction_images_missing_in_grader"],
                        cnt["grader_images_missing_in_prediction"],
                        strict=True,
                    )
                )
            ],
        ),
        "<h2>1. Agreement of the model with the graders' mean (ICC)</h2>",
        "<p class='note'>ICC(1,1) — one-way random effects, absolute agreement, single rater — is the "
        "form the rat seed reports (its Table 3). 95% confidence intervals in brackets; labels after "
        "Landis &amp; Koch: &gt;0.80 very good, 0.61–0.80 good, 0.41–0.60 moderate, 0.21–0.40 fair, "
        "≤0.20 poor. Pairs where either side is missing are excluded (column 'excluded').</p>",
    ]
    forms = list(stats.ICC_FORMS)
    rows = []
    for label, b in _blocks(report):
        r = b["icc_model_vs_human_mean"]
        rows.append(
            [html.escape(label), str(r["n"]), str(r["n_excluded"])] + [_icc_cell(r, f) for f in forms]
        )
    parts.append(_table(["unit", "n", "excluded", *[stats.ICC_FORMS[f].split(" ")[0] for f in forms]], rows))
    parts.append("<h2>2. Agreement between the human graders (inter-grader ICC)</h2>")
    if inp["n_graders"] < 2:
        parts.append("<p>Only one grader file: no inter-grader ICC.</p>")
    else:
        parts.append(
            "<p class='note'>The seed's Table 2: the graders alone, rows complete for all graders only.</p>"
        )
        rows = []
        for label, b in _blocks(report):
            r = b["icc_graders"]
            rows.append(
                [html.escape(label), str(r["n"]), str(r["n_excluded"])] + [_icc_cell(r, f) for f in forms]
            )
        parts.append(
            _table(["unit", "n", "excluded", *[stats.ICC_FORMS[f].split(" ")[0] for f in forms]], rows)
        )

    parts.append("<h2>3. Classification against the graders' consensus</h2>")
    parts.append(
        "<p class='note'>Reference grade = graders' mean rounded half up; model grade = model value "
        "rounded half up. Weighted accuracy is the seed's equation 3 (class-frequency-weighted "
        "one-vs-rest accuracy). The total score is classified pain / no pain at the scale's threshold ("
        + fmt(report["total"].get("pain_threshold"), 2)
        + ").</p>"
    )
    rows = []
    for label, b in _blocks(report):
        c = b["classification"]
        per_g = ", ".join(fmt(g.get("weighted_accuracy")) for g in b["classification_per_grader"])
        rows.append(
            [
                html.escape(label),
                str(c.get("n", "—")),
                str(c.get("n_excluded", "—")),
                fmt(c.get("weighted_accuracy")),
                fmt(c.get("accuracy")),
                fmt(c.get("precision_weighted")),
                fmt(c.get("recall_weighted")),
                fmt(c.get("precision_macro")),
                fmt(c.get("recall_macro")),
                per_g,
            ]
        )
    parts.append(
        _table(
            [
                "unit",
                "n",
                "excluded",
                "weighted accuracy",
                "accuracy",
                "precision (weighted)",
                "recall (weighted)",
                "precision (macro)",
                "recall (macro)",
                "weighted accuracy vs each grader",
            ],
            rows,
        )
    )
    parts.append("<h3>Per class</h3>")
    rows = []
    for label, b in _blocks(report):
        c = b["classification"]
        for name, lab in zip(c.get("label_names", []), c.get("labels", []), strict=False):
            pc = c.get("per_class", {}).get(str(lab))
            if pc:
                rows.append(
                    [
                        html.escape(label),
                        html.escape(name),
                        fmt(pc["precision"]),
                        fmt(pc["recall"]),
                        fmt(pc["f1"]),
                        str(pc["support"]),
                    ]
                )
    parts.append(_table(["unit", "class", "precision", "recall", "F1", "support"], rows))
    parts.append("<h3>Confusion matrices</h3><div class='figs'>")
    parts.extend(_img(p) for _, p in figs)
    parts.append("</div>")

    groups = report.get("groups")
    parts.append("<h2>4. Group comparisons (" + html.escape(score_name) + ")</h2>")
    if not groups:
        parts.append("<p>No <code>--groups subjects.csv</code> given.</p>")
    else:
        parts.append(
            "<p class='note'>As in the seed's Figs. 4–5: mean ± SEM per group; Wilcoxon signed-rank of "
            f"model vs graders' mean per group; Kruskal–Wallis across groups. "
            f"{groups['n_without_subject']} predicted image(s) had no row in subjects.csv.</p>"
        )
        rows = []
        for g, d in groups["groups"].items():
            w = d["wilcoxon_model_vs_human"]
            rows.append(
                [
                    html.escape(g),
                    str(d["model"]["n"]),
                    f"{fmt(d['model']['mean'])} ± {fmt(d['model']['sem'])}",
                    f"{fmt(d['human']['mean'])} ± {fmt(d['human']['sem'])}",
                    str(w["n"]),
                    fmt(w["statistic"], 1),
                    fmt_p(w["p"]) + (f" <i>{html.escape(w['error'])}</i>" if w["error"] else ""),
                ]
            )
        parts.append(
            _table(
                ["group", "n model", "model mean ± SEM", "graders mean ± SEM", "pairs", "Wilcoxon W", "p"],
                rows,
            )
        )
        rows = []
        for who, key in (("model", "kruskal_model"), ("graders' mean", "kruskal_human")):
            k = groups[key]
            rows.append(
                [
                    who,
                    ", ".join(f"{html.escape(g)}: {n}" for g, n in k["n"].items()),
                    fmt(k["statistic"], 3),
                    fmt_p(k["p"]) + (f" <i>{html.escape(k['error'])}</i>" if k["error"] else ""),
                ]
            )
        parts.append(_table(["analysis", "groups (n)", "Kruskal–Wallis H", "p"], rows))
        if groups["timepoints"]:
            rows = []
            for t in groups["timepoints"]:
                for who in ("model", "human"):
                    r = t[who]
                    rows.append(
                        [
                            html.escape(t["group"]),
                            " vs ".join(html.escape(x) for x in t["timepoints"]),
                            "model" if who == "model" else "graders' mean",
                            f"{fmt(r['mean'][0])} vs {fmt(r['mean'][1])}",
                            html.escape(r["test"]),
                            html.escape(r["pairing"]),
                            fmt(r["statistic"], 2),
                            fmt_p(r["p"]),
                        ]
                    )
            parts.append("<h3>Timepoints within a group (the seed's day-1 vs month-1)</h3>")
            parts.append(
                _table(
                    ["group", "timepoints", "analysis", "means", "test", "pairing", "statistic", "p"], rows
                )
            )
        parts.append("<div class='figs'>" + "".join(_img(p) for p in group_figs) + "</div>")
    parts.append("<p class='note'>Every number above is in <code>report.json</code>.</p></body></html>")
    html_path = out / "report.html"
    html_path.write_text("\n".join(parts), encoding="utf-8")
    files["html"] = html_path
    return files


def jsonable(o: Any) -> Any:
    """``o`` with numpy scalars/arrays made plain and non-finite floats made ``None`` (strict JSON)."""
    if isinstance(o, dict):
        return {str(k): jsonable(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [jsonable(v) for v in o]
    if isinstance(o, np.ndarray):
        return jsonable(o.tolist())
    if isinstance(o, (bool, np.bool_)):
        return bool(o)
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, (float, np.floating)):
        return float(o) if math.isfinite(float(o)) else None
    if isinstance(o, Path):
        return str(o)
    return o


def write_json(path: str | Path, data: Any) -> Path:
    """Write strict JSON (no NaN) with :func:`jsonable`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(jsonable(data), indent=2, allow_nan=False, default=_json_default))
    return path


def _json_default(o: Any) -> Any:
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
