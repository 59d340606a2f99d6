"""Agreement and group statistics of the rat seed paper (ICC, Wilcoxon, Kruskal–Wallis, mean ± SEM).

ICCs come from :func:`pingouin.intraclass_corr`; this module only reshapes the data, names the forms
in Shrout & Fleiss (1979) terms and attaches the Landis & Koch label the seed uses. Group tests are
:func:`scipy.stats.wilcoxon`, :func:`scipy.stats.kruskal` and :func:`scipy.stats.mannwhitneyu`.

Shrout & Fleiss forms (n targets, k raters):

* ``ICC1`` — ICC(1,1): one-way random effects, absolute agreement, single rater (the seed's choice).
* ``ICC2`` — ICC(2,1): two-way random effects, absolute agreement, single rater.
* ``ICC3`` — ICC(3,1): two-way mixed effects, consistency, single rater.
* ``ICC1k``, ``ICC2k``, ``ICC3k`` — the same models for the mean of the k raters.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np

ICC_FORMS: dict[str, str] = {
    "ICC1": "ICC(1,1) one-way random effects, absolute agreement, single rater",
    "ICC2": "ICC(2,1) two-way random effects, absolute agreement, single rater",
    "ICC3": "ICC(3,1) two-way mixed effects, consistency, single rater",
    "ICC1k": "ICC(1,k) one-way random effects, absolute agreement, mean of k raters",
    "ICC2k": "ICC(2,k) two-way random effects, absolute agreement, mean of k raters",
    "ICC3k": "ICC(3,k) two-way mixed effects, consistency, mean of k raters",
}
"""Shrout & Fleiss names of the forms reported, in pingouin's row order."""

# pingouin < 0.6 names rows ICC1..ICC3k; pingouin >= 0.6 names them ICC(1,1), ICC(A,1), ICC(C,1), ...
_PINGOUIN_NAMES = {
    "ICC1": "ICC1",
    "ICC2": "ICC2",
    "ICC3": "ICC3",
    "ICC1k": "ICC1k",
    "ICC2k": "ICC2k",
    "ICC3k": "ICC3k",
    "ICC(1,1)": "ICC1",
    "ICC(A,1)": "ICC2",
    "ICC(C,1)": "ICC3",
    "ICC(1,k)": "ICC1k",
    "ICC(A,k)": "ICC2k",
    "ICC(C,k)": "ICC3k",
}

SEED_ICC_FORM = "ICC1"
"""The form the rat seed reports (one-way random, absolute agreement, single rater)."""


def landis_koch(value: float | None) -> str:
    """Reliability label on the Landis & Koch bands the rat seed uses.

    Bands (on the value rounded to two decimals, as the bands are written): ``> 0.80`` very good,
    ``0.61–0.80`` good, ``0.41–0.60`` moderate, ``0.21–0.40`` fair, ``<= 0.20`` poor.

    Args:
        value: An ICC (or kappa); ``None``/NaN gives ``"undefined"``.
    """
    if value is None or not math.isfinite(value):
        return "undefined"
    r = round(value, 2)
    if r >= 0.81:
        return "very good"
    if r >= 0.61:
        return "good"
    if r >= 0.41:
        return "moderate"
    if r >= 0.21:
        return "fair"
    return "poor"


def _finite(x: Any) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def icc(ratings: np.ndarray) -> dict[str, Any]:
    """All six Shrout & Fleiss ICC forms of a complete targets × raters table.

    Args:
        ratings: float ``(n_targets, k_raters)``; rows with any NaN are dropped (listwise) and
            counted in ``n_excluded``.

    Returns:
        ``{"n": n used, "k": raters, "n_excluded": rows dropped, "forms": {name: {"icc", "ci95":
        [lo, hi], "F", "df1", "df2", "p", "label", "description"}}}``. With fewer than 2 complete
        targets, or no variance at all, ``forms`` holds ``None`` values and ``"error"`` says why.
    """
    pd = __import__("pandas")
    pg = __import__("pingouin")
    x = np.asarray(ratings, dtype=float)
    if x.ndim != 2:
        raise ValueError(f"ratings must be (n_targets, k_raters), got shape {x.shape}")
    keep = np.isfinite(x).all(axis=1)
    x = x[keep]
    n, k = x.shape
    out: dict[str, Any] = {"n": int(n), "k": int(k), "n_excluded": int((~keep).sum()), "forms": {}}
    empty = {name: None for name in ICC_FORMS}
    if k < 2:
        return {**out, "forms": empty, "error": f"need at least 2 raters, got {k}"}
    if n < 2:
        return {**out, "forms": empty, "error": f"need at least 2 complete targets, got {n}"}
    if np.allclose(x, x.flat[0]):
        return {**out, "forms": empty, "error": "all ratings are identical; the ICC is undefined"}
    df = pd.DataFrame(
        {
            "target": np.repeat(np.arange(n), k),
            "rater": np.tile(np.arange(k), n),
            "rating": x.reshape(-1),
        }
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = pg.intraclass_corr(data=df, targets="target", raters="rater", ratings="rating")
    for _, row in table.iterrows():
        name = _PINGOUIN_NAMES.get(str(row["Type"]))
        if name is None:
            continue
        value = _finite(row["ICC"])
        ci = row["CI95%"] if "CI95%" in row else row.get("CI95")
        out["forms"][name] = {
            "icc": value,
            "ci95": [_finite(ci[0]), _finite(ci[1])],
            "F": _finite(row["F"]),
            "df1": _finite(row["df1"]),
            "df2": _finite(row["df2"]),
            "p": _finite(row["pval"]),
            "label": landis_koch(value),
            "description": ICC_FORMS[name],
        }
    missing = set(ICC_FORMS) - set(out["forms"])
    if missing:
        raise RuntimeError(f"pingouin returned no row for {sorted(missing)}; got {list(table['Type'])}")
    return out


def sem(values: np.ndarray) -> float | None:
    """Standard error of the mean (sample SD / sqrt(n)); ``None`` for fewer than 2 values."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if v.size < 2:
        return None
    return float(v.std(ddof=1) / math.sqrt(v.size))


def describe(values: np.ndarray) -> dict[str, Any]:
    """``{"n", "mean", "sem", "sd", "median"}`` of the finite values (``None`` where undefined)."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    return {
        "n": int(v.size),
        "mean": float(v.mean()) if v.size else None,
        "sem": sem(v),
        "sd": float(v.std(ddof=1)) if v.size > 1 else None,
        "median": float(np.median(v)) if v.size else None,
    }


def wilcoxon_paired(a: np.ndarray, b: np.ndarray) -> dict[str, Any]:
    """Wilcoxon signed-rank test of paired samples (pairs with a missing side are excluded).

    Returns:
        ``{"test", "n", "n_excluded", "statistic", "p", "error"}``; when the test is undefined (fewer
        than 2 pairs, all differences zero) ``statistic``/``p`` are ``None`` and ``error`` says why.
    """
    scipy_stats = __import__("scipy.stats", fromlist=["wilcoxon"])
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"paired samples differ in length: {a.shape} vs {b.shape}")
    keep = np.isfinite(a) & np.isfinite(b)
    a, b = a[keep], b[keep]
    res: dict[str, Any] = {
        "test": "wilcoxon signed-rank (two-sided)",
        "n": int(a.size),
        "n_excluded": int((~keep).sum()),
        "statistic": None,
        "p": None,
        "error": None,
    }
    d = a - b
    if a.size < 2:
        res["error"] = f"need at least 2 pairs, got {a.size}"
    elif np.allclose(d, 0):
        res["error"] = "all paired differences are zero (identical samples)"
        res["p"] = 1.0
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            r = scipy_stats.wilcoxon(a, b, zero_method="wilcox", alternative="two-sided")
        res["statistic"] = _finite(r.statistic)
        res["p"] = _finite(r.pvalue)
    return res


def mann_whitney(a: np.ndarray, b: np.ndarray) -> dict[str, Any]:
    """Mann–Whitney U (Wilcoxon rank-sum) test of two independent samples, two-sided."""
    scipy_stats = __import__("scipy.stats", fromlist=["mannwhitneyu"])
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    res: dict[str, Any] = {
        "test": "mann-whitney U / wilcoxon rank-sum (two-sided)",
        "n": [int(a.size), int(b.size)],
        "statistic": None,
        "p": None,
        "error": None,
    }
    if a.size < 1 or b.size < 1:
        res["error"] = "a sample is empty"
        return res
    r = scipy_stats.mannwhitneyu(a, b, alternative="two-sided")
    res["statistic"] = _finite(r.statistic)
    res["p"] = _finite(r.pvalue)
    return res


def kruskal(samples: dict[str, np.ndarray]) -> dict[str, Any]:
    """Kruskal–Wallis H test across groups (NaNs dropped, empty groups left out).

    Args:
        samples: Group name -> values.

    Returns:
        ``{"test", "groups", "n", "statistic", "p", "error"}``.
    """
    scipy_stats = __import__("scipy.stats", fromlist=["kruskal"])
    clean = {g: np.asarray(v, dtype=float) for g, v in samples.items()}
    clean = {g: v[np.isfinite(v)] for g, v in clean.items()}
    clean = {g: v for g, v in clean.items() if v.size}
    res: dict[str, Any] = {
        "test": "kruskal-wallis H",
        "groups": list(clean),
        "n": {g: int(v.size) for g, v in clean.items()},
        "statistic": None,
        "p": None,
        "error": None,
    }
    if len(clean) < 2:
        res["error"] = f"need at least 2 non-empty groups, got {len(clean)}"
        return res
    allv = np.concatenate(list(clean.values()))
    if np.allclose(allv, allv[0]):
        res["error"] = "all values are identical; the test is undefined"
        res["p"] = 1.0
        return res
    r = scipy_stats.kruskal(*clean.values())
    res["statistic"] = _finite(r.statistic)
    res["p"] = _finite(r.pvalue)
    return res


def stars(p: float | None) -> str:
    """GraphPad-style significance marks used in the seed's figures (ns, *, **, ***, ****)."""
    if p is None or not math.isfinite(p):
        return "n/a"
    if p < 0.0001:
        return "****"
    if p < 0.001:
        return "***"
    if p < 0.01:
        return "**"
    if p < 0.05:
        return "*"
    return "ns"
