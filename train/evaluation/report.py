"""Figures (matplotlib, Agg) and the HTML report of ``grimace eval grades``, built from a Jinja2 template.

Figures are written at 300 dpi as PNG and as SVG next to the report; the PNGs are also embedded in
``report.html`` (base64) so the HTML file can be mailed on its own. Group figures are box plots of
per-animal means with every animal drawn as a point (not bars ± SEM); the total score also gets a
Bland–Altman plot and a model-vs-graders scatter with per-animal points. All numbers shown are in
``report.json``, with the same provenance block (software versions, model and data hashes, date,
command line). The template is ``templates/grades_report.html.j2`` (autoescaped).
"""

from __future__ import annotations

import base64
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from train.evaluation import stats

DPI = 300
"""Resolution of every PNG figure (journals ask for at least 300 dpi)."""
MODEL_COLOR = "#4C72B0"
HUMAN_COLOR = "#DD8452"
EDGE = {"edgecolor": "k", "lw": 0.4}


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def fmt(x: Any, nd: int = 3) -> str:
    """Number for a table cell; ``—`` for missing."""
    if x is None:
        return "—"
    if isinstance(x, (float, np.floating)):
        if not math.isfinite(float(x)):
            return "—"
        return f"{float(x):.{nd}f}"
    return str(x)


def fmt_ci(ci: list[float | None] | None, nd: int = 2) -> str:
    """``[lo, hi]`` for a table cell; empty for missing."""
    if not ci or ci[0] is None or ci[1] is None:
        return ""
    return f"[{ci[0]:.{nd}f}, {ci[1]:.{nd}f}]"


def fmt_p(p: float | None) -> str:
    """p-value with the seed's significance marks."""
    if p is None:
        return "—"
    s = "<0.0001" if p < 0.0001 else f"{p:.4f}"
    return f"{s} ({stats.stars(p)})"


def save_figure(fig: Any, path_png: Path) -> dict[str, Path]:
    """Save ``fig`` as ``path_png`` (300 dpi) and the same name ``.svg``; close it."""
    plt = _plt()
    fig.savefig(path_png, dpi=DPI)
    svg = path_png.with_suffix(".svg")
    fig.savefig(svg)
    plt.close(fig)
    return {"png": path_png, "svg": svg}


def plot_confusion(cm: list[list[int]], names: list[str], title: str, path: Path) -> dict[str, Path]:
    """Confusion matrix heat map with counts (rows graders' consensus, columns model)."""
    plt = _plt()
    a = np.asarray(cm)
    fig, ax = plt.subplots(figsize=(2.6 + 0.35 * len(names), 2.4 + 0.35 * len(names)))
    ax.imshow(a, cmap="Blues")
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.set_xlabel("model", fontsize=8)
    ax.set_ylabel("graders (consensus)", fontsize=8)
    ax.set_title(title, fontsize=9)
    vmax = a.max() if a.size else 0
    for i in range(a.shape[0]):
        for j in range(a.shape[1]):
            ax.text(j, i, str(a[i, j]), ha="center", va="center", fontsize=8,
                    color="white" if a[i, j] > vmax / 2 else "black")  # fmt: skip
    fig.tight_layout()
    return save_figure(fig, path)


def plot_group_boxes(groups: dict[str, Any], score_name: str, path: Path) -> dict[str, Path]:
    """Box plots of per-animal means per cell, model beside graders, each animal a point.

    Lines join an animal's model and graders' values, so a biased cell shows as parallel slopes.
    """
    plt = _plt()
    cells = list(groups["cells"])
    fig, ax = plt.subplots(figsize=(1.6 + 1.5 * len(cells), 3.6))
    rng = np.random.default_rng(0)
    w = 0.32
    for i, g in enumerate(cells):
        animals = groups["cells"][g]["animals"]
        for off, who, color in ((-w / 2 - 0.02, "model", MODEL_COLOR), (w / 2 + 0.02, "human", HUMAN_COLOR)):
            vals = [a[who] for a in animals if who in a]
            if not vals:
                continue
            ax.boxplot([vals], positions=[i + off], widths=w, showfliers=False, patch_artist=True,
                       boxprops={"facecolor": color, "alpha": 0.25, "edgecolor": color},
                       medianprops={"color": color}, whiskerprops={"color": color},
                       capprops={"color": color})  # fmt: skip
        jit = rng.uniform(-0.05, 0.05, len(animals))
        for a, j in zip(animals, jit, strict=True):
            if "model" in a and "human" in a:
                ax.plot([i - w / 2 - 0.02 + j, i + w / 2 + 0.02 + j], [a["model"], a["human"]], color="#999",
                        lw=0.6, zorder=2)  # fmt: skip
            if "model" in a:
                ax.scatter(i - w / 2 - 0.02 + j, a["model"], s=16, color=MODEL_COLOR, zorder=3, **EDGE)
            if "human" in a:
                ax.scatter(i + w / 2 + 0.02 + j, a["human"], s=16, color=HUMAN_COLOR, zorder=3, **EDGE)
    ax.set_xticks(range(len(cells)), [f"{g}\n(n={groups['cells'][g]['n_animals']} animals)" for g in cells],
                  fontsize=8)  # fmt: skip
    ax.set_ylabel(f"per-animal mean {score_name}", fontsize=9)
    hm, hh = groups["headline"]["model"], groups["headline"]["human"]
    ax.set_title(
        f"Kruskal–Wallis on animals: model p={fmt(hm['p'], 4)}, graders p={fmt(hh['p'], 4)}", fontsize=9
    )
    ax.scatter([], [], color=MODEL_COLOR, label="model", edgecolor="k", lw=0.4)
    ax.scatter([], [], color=HUMAN_COLOR, label="graders' mean", edgecolor="k", lw=0.4)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return save_figure(fig, path)


def plot_bland_altman(ba: dict[str, Any], score_name: str, path: Path) -> dict[str, Path]:
    """Bland–Altman plot: images faint, per-animal means bold, bias and limits with their 95% bands."""
    plt = _plt()
    mean = np.asarray(ba["mean_of_pair"], dtype=float)
    diff = np.asarray(ba["difference"], dtype=float)
    animal = np.asarray(ba["animal"], dtype=object)
    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    ax.scatter(mean, diff, s=6, color="#888", alpha=0.45, label="images")
    ids = list(dict.fromkeys(animal.tolist()))
    if len(ids) < len(mean):
        am = [mean[animal == a].mean() for a in ids]
        ad = [diff[animal == a].mean() for a in ids]
        ax.scatter(am, ad, s=26, color=MODEL_COLOR, edgecolor="k", lw=0.4, label="animal means", zorder=3)
    lines = (("bias", ba["bias"], "-"), ("loa_lower", ba["loa"][0], "--"), ("loa_upper", ba["loa"][1], "--"))
    for key, val, ls in lines:
        if val is None:
            continue
        ax.axhline(val, color="k", ls=ls, lw=1)
        ci = ba["ci95"].get(key)
        if ci and ci[0] is not None:
            ax.axhspan(ci[0], ci[1], color="k", alpha=0.08)
    ax.axhline(0, color="#bbb", lw=0.6)
    ax.set_xlabel(f"mean of model and graders ({score_name})", fontsize=9)
    ax.set_ylabel("model − graders", fontsize=9)
    lo, hi = ba["loa"]
    ax.set_title(f"Bland–Altman: bias {fmt(ba['bias'])}, limits {fmt(lo)} to {fmt(hi)}", fontsize=9)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return save_figure(fig, path)


def plot_scatter(
    ba: dict[str, Any], per_animal: list[dict[str, Any]], score_name: str, path: Path
) -> dict[str, Path]:
    """Model vs graders' mean: images faint, one bold point per animal, identity line."""
    plt = _plt()
    mean = np.asarray(ba["mean_of_pair"], dtype=float)
    diff = np.asarray(ba["difference"], dtype=float)
    model = mean + diff / 2
    human = mean - diff / 2
    fig, ax = plt.subplots(figsize=(4.2, 4.0))
    ax.scatter(human, model, s=6, color="#888", alpha=0.45, label="images")
    pa = [a for a in per_animal if a["model"] is not None and a["human"] is not None]
    ax.scatter([a["human"] for a in pa], [a["model"] for a in pa], s=28, color=MODEL_COLOR, edgecolor="k",
               lw=0.4, zorder=3, label=f"animals (n={len(pa)})")  # fmt: skip
    lo = float(np.nanmin(np.r_[model, human, 0.0]))
    hi = float(np.nanmax(np.r_[model, human, 1.0]))
    ax.plot([lo, hi], [lo, hi], color="k", lw=0.8, ls=":", label="identity")
    ax.set_xlabel(f"graders' mean {score_name}", fontsize=9)
    ax.set_ylabel(f"model {score_name}", fontsize=9)
    ax.set_title("model vs graders", fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    ax.set_aspect("equal", adjustable="box")
    fig.tight_layout()
    return save_figure(fig, path)


def _blocks(report: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    out = [(k, b["label"], b) for k, b in report["units"].items()]
    out.append(("total", report["total"]["label"], report["total"]))
    return out


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def render_html(report: dict[str, Any], figures: dict[str, dict[str, Path]]) -> str:
    """The report page from ``templates/grades_report.html.j2`` (Jinja2, autoescaped)."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("train.evaluation", "templates"),
        autoescape=jinja2.select_autoescape(["html", "j2"]),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(fmt=fmt, ci=fmt_ci, p=fmt_p)
    fig = {k: {"b64": _b64(v["png"]), "png": v["png"].name, "svg": v["svg"].name} for k, v in figures.items()}
    return env.get_template("grades_report.html.j2").render(
        r=report,
        blocks=_blocks(report),
        forms=list(stats.ICC_FORMS),
        form_names={k: v.split(" ")[0] for k, v in stats.ICC_FORMS.items()},
        fig=fig,
        dpi=DPI,
    )


def write_grades_report(report: dict[str, Any], out_dir: str | Path) -> dict[str, Path]:
    """Write ``report.json``, the PNG + SVG figures and ``report.html`` into ``out_dir``.

    Returns:
        Name -> path of every file written (``<figure>`` for PNGs, ``<figure>_svg`` for SVGs).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    score_name = report["total"]["label"]
    figures: dict[str, dict[str, Path]] = {}
    for key, label, block in _blocks(report):
        c = block.get("classification", {})
        if "confusion" in c:
            figures[f"confusion_{key}"] = plot_confusion(
                c["confusion"], c["label_names"], f"{label} (n={c['n']})", out / f"confusion_{key}.png"
            )
    ba = report["total"].get("bland_altman")
    if ba and ba.get("bias") is not None:
        figures["bland_altman"] = plot_bland_altman(ba, score_name, out / "bland_altman.png")
        figures["scatter_model_vs_human"] = plot_scatter(
            ba, report["total"]["per_animal"], score_name, out / "scatter_model_vs_human.png"
        )
    groups = report.get("groups")
    if groups and groups["cells"]:
        figures["groups_per_animal"] = plot_group_boxes(groups, score_name, out / "groups_per_animal.png")
    files: dict[str, Path] = {}
    for k, v in figures.items():
        files[k] = v["png"]
        files[f"{k}_svg"] = v["svg"]
    files["json"] = write_json(out / "report.json", report)
    html_path = out / "report.html"
    html_path.write_text(render_html(jsonable(report), figures), encoding="utf-8")
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
