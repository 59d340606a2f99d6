"""Agreement, group and uncertainty statistics for validating a model against human graders.

ICCs come from :func:`pingouin.intraclass_corr`; this module only reshapes the data, names the forms
in Shrout & Fleiss (1979) terms and attaches the Landis & Koch label the seed uses and the Koo & Li
(2016) label judged on the 95% interval (:func:`koo_li`). Group tests are :func:`scipy.stats.wilcoxon`,
:func:`scipy.stats.kruskal`, :func:`scipy.stats.mannwhitneyu` and :func:`scipy.stats.friedmanchisquare`;
the mixed model is statsmodels ``MixedLM`` (:func:`mixed_model`). Intervals for headline figures come
from :func:`cluster_bootstrap`, which resamples *animals* (clusters), never images.

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


KOO_LI_BANDS = ((0.5, "poor"), (0.75, "moderate"), (0.9, "good"), (math.inf, "excellent"))
"""Koo & Li (2016): ICC < 0.5 poor, 0.5–0.75 moderate, 0.75–0.9 good, > 0.9 excellent."""


def _koo_li_band(value: float) -> str:
    for upper, name in KOO_LI_BANDS:
        if value < upper:
            return name
    return "excellent"


def koo_li(ci95: tuple[float | None, float | None] | list[float | None] | None) -> str:
    """Koo & Li (2016) reliability label judged on the 95% interval, as they recommend.

    The label of the lower and of the upper bound; when they differ both are given
    (``"moderate to good"``), so an interval that spans bands is never read as its best end.

    Args:
        ci95: ``[lower, upper]`` of the ICC's 95% interval.

    Returns:
        ``"poor"``, ``"moderate"``, ``"good"``, ``"excellent"``, ``"A to B"`` or ``"undefined"``.
    """
    if not ci95 or len(ci95) != 2:
        return "undefined"
    lo, hi = ci95
    if lo is None or hi is None or not (math.isfinite(lo) and math.isfinite(hi)):
        return "undefined"
    a, b = _koo_li_band(lo), _koo_li_band(hi)
    return a if a == b else f"{a} to {b}"


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
            "koo_li": koo_li([_finite(ci[0]), _finite(ci[1])]),
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


# ------------------------------------------------------------------------------- fast ICC(2,1)
# ICC(2,1) in numpy (no CI, no pandas/pingouin: the cluster bootstrap calls it thousands of times; the
# station's validation page runs it on the device). One copy, in edge (edge never imports train).
from edge.station.agreement import icc21 as icc21  # noqa: E402  (re-export)


# ------------------------------------------------------------------------ animal-level helpers
def per_animal_means(values: np.ndarray, animals: np.ndarray) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Mean of the finite ``values`` of each animal.

    Args:
        values: float ``(N,)`` (NaN = missing).
        animals: animal id per value ``(N,)``.

    Returns:
        ``(ids, means (M,), counts (M,))`` for the ``M`` animals with at least one finite value, in
        order of first appearance.
    """
    v = np.asarray(values, dtype=float)
    a = np.asarray(animals, dtype=object)
    ids: list[str] = []
    sums: dict[str, float] = {}
    cnt: dict[str, int] = {}
    for x, s in zip(v.tolist(), a.tolist(), strict=True):
        if not math.isfinite(x):
            continue
        s = str(s)
        if s not in cnt:
            ids.append(s)
            sums[s] = 0.0
            cnt[s] = 0
        sums[s] += x
        cnt[s] += 1
    return ids, np.array([sums[s] / cnt[s] for s in ids]), np.array([cnt[s] for s in ids], dtype=int)


def pseudoreplication_warning(n_images: int, n_animals: int) -> str | None:
    """The warning printed wherever a test would count images of the same animal as independent."""
    if n_images <= n_animals:
        return None
    return (
        f"{n_images} images come from {n_animals} animals: images of one animal are not independent, so "
        "image-level p-values are pseudoreplicated (far too small) and are shown as descriptive only; "
        "the headline tests use one value per animal."
    )


def friedman(table: np.ndarray, names: list[str] | None = None) -> dict[str, Any]:
    """Friedman test of repeated measures: animals (rows) measured at every condition (columns).

    Args:
        table: float ``(n_animals, k_conditions)``; animals with any NaN are dropped.
        names: Condition names.

    Returns:
        ``{"test", "n", "n_excluded", "conditions", "statistic", "p", "error"}``; ``k < 3`` gives an
        error (use :func:`wilcoxon_paired` for two conditions).
    """
    scipy_stats = __import__("scipy.stats", fromlist=["friedmanchisquare"])
    x = np.asarray(table, dtype=float)
    keep = np.isfinite(x).all(axis=1)
    x = x[keep]
    res: dict[str, Any] = {
        "test": "friedman chi-square (repeated measures on per-animal means)",
        "n": int(x.shape[0]),
        "n_excluded": int((~keep).sum()),
        "conditions": names or [str(i) for i in range(x.shape[1])],
        "statistic": None,
        "p": None,
        "error": None,
    }
    if x.shape[1] < 3:
        res["error"] = f"Friedman needs at least 3 conditions, got {x.shape[1]}"
    elif x.shape[0] < 2:
        res["error"] = f"need at least 2 animals seen at every condition, got {x.shape[0]}"
    elif np.allclose(x, x.flat[0]):
        res["error"] = "all values are identical; the test is undefined"
        res["p"] = 1.0
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            r = scipy_stats.friedmanchisquare(*x.T)
        res["statistic"] = _finite(r.statistic)
        res["p"] = _finite(r.pvalue)
    return res


MIN_MIXED_ANIMALS = 6
"""Fewest animals for which :func:`mixed_model` is fitted (a random intercept needs several)."""


def mixed_model(
    score: np.ndarray,
    group: np.ndarray,
    timepoint: np.ndarray,
    animal: np.ndarray,
    min_animals: int = MIN_MIXED_ANIMALS,
) -> dict[str, Any]:
    """Linear mixed model ``score ~ group × timepoint + (1 | animal)`` (statsmodels ``MixedLM``, REML).

    Uses every image: the random intercept per animal models the dependence between images of one
    animal, so these p-values are not pseudoreplicated. Factors with a single level are dropped from
    the formula. Fixed effects are treatment-coded against the first level in order of appearance.

    Args:
        score: float ``(N,)`` (NaN rows dropped).
        group: group per image ``(N,)``.
        timepoint: timepoint per image ``(N,)`` (``""`` allowed).
        animal: animal id per image ``(N,)``.
        min_animals: Fit only with at least this many animals.

    Returns:
        ``{"model", "formula", "n_obs", "n_animals", "converged", "animal_variance", "residual_variance",
        "fixed_effects": [{"term", "estimate", "se", "z", "p", "ci95"}], "error", "warnings"}``.
    """
    pd = __import__("pandas")
    y = np.asarray(score, dtype=float)
    keep = np.isfinite(y)
    df = pd.DataFrame(
        {
            "score": y[keep],
            "grp": np.asarray(group, dtype=object)[keep].astype(str),
            "tp": np.asarray(timepoint, dtype=object)[keep].astype(str),
            "animal": np.asarray(animal, dtype=object)[keep].astype(str),
        }
    )
    n_animals = int(df["animal"].nunique())
    res: dict[str, Any] = {
        "model": "linear mixed model, random intercept per animal (statsmodels MixedLM, REML)",
        "formula": None,
        "n_obs": len(df),
        "n_animals": n_animals,
        "converged": None,
        "animal_variance": None,
        "residual_variance": None,
        "fixed_effects": [],
        "error": None,
        "warnings": [],
    }
    if n_animals < min_animals:
        res["error"] = f"not fitted: {n_animals} animals, fewer than the {min_animals} needed"
        return res
    levels = {col: list(dict.fromkeys(df[col])) for col in ("grp", "tp")}
    varying = [col for col in ("grp", "tp") if len(levels[col]) > 1]
    if not varying:
        res["error"] = "not fitted: a single group and a single timepoint"
        return res
    crossed = len(set(zip(df["grp"], df["tp"], strict=True))) == len(levels["grp"]) * len(levels["tp"])
    if len(varying) == 2 and not crossed:
        # e.g. controls seen once, injured animals at day 1 and month 1: one factor of the cells
        df["cell"] = pd.Categorical(
            df["grp"] + "/" + df["tp"], categories=list(dict.fromkeys(df["grp"] + "/" + df["tp"]))
        )
        formula = "score ~ C(cell)"
        res["formula"] = "score ~ cell + (1 | animal)"
        res["note"] = "groups and timepoints are not fully crossed: one factor of the group/timepoint cells"
    else:
        for col in varying:
            df[col] = pd.Categorical(df[col], categories=levels[col])
        formula = "score ~ " + " * ".join(f"C({c})" for c in varying)
        res["formula"] = formula.replace("C(grp)", "group").replace("C(tp)", "timepoint") + " + (1 | animal)"
    smf = __import__("statsmodels.formula.api", fromlist=["mixedlm"])
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fit = smf.mixedlm(formula, df, groups=df["animal"]).fit(reml=True)
    except (ValueError, np.linalg.LinAlgError) as e:
        res["error"] = f"fit failed: {e}"
        return res
    res["warnings"] = sorted({str(w.message).splitlines()[0] for w in caught})
    res["converged"] = bool(fit.converged)
    res["animal_variance"] = _finite(np.asarray(fit.cov_re)[0, 0])
    res["residual_variance"] = _finite(fit.scale)
    ci = fit.conf_int()
    for term in fit.fe_params.index:
        label = (
            str(term)
            .replace("C(grp)[T.", "group[")
            .replace("C(tp)[T.", "timepoint[")
            .replace("C(cell)[T.", "cell[")
        )
        res["fixed_effects"].append(
            {
                "term": label,
                "estimate": _finite(fit.fe_params[term]),
                "se": _finite(fit.bse_fe[term]),
                "z": _finite(fit.tvalues[term]),
                "p": _finite(fit.pvalues[term]),
                "ci95": [_finite(ci.loc[term, 0]), _finite(ci.loc[term, 1])],
            }
        )
    return res


# ----------------------------------------------------------------------------- cluster bootstrap
def cluster_bootstrap(
    clusters: np.ndarray,
    statistic: Any,
    n_boot: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, Any]:
    """Percentile bootstrap that resamples clusters (animals) with replacement, never single rows.

    Each replicate draws as many animals as there are, with replacement, and keeps *all* rows of
    every animal drawn (an animal drawn twice counts twice). The statistic is computed on the rows of
    the replicate; the interval is the ``(1 - level)/2`` and ``(1 + level)/2`` percentiles of the
    finite replicate values (replicates where a figure is undefined, e.g. a single class drawn, are
    left out of that figure and counted). With one row per cluster this is the ordinary bootstrap.

    Args:
        clusters: Cluster (animal) id per row ``(N,)``.
        statistic: ``f(rows: int64 (n,)) -> dict[str, float]`` computed on the given row indices
            (rows may repeat).
        n_boot: Replicates.
        seed: Random seed (same seed, same interval).
        level: Interval coverage.

    Returns:
        ``{"method", "n_boot", "n_clusters", "level", "seed", "figures": {name: {"estimate",
        "ci95": [lo, hi], "n_valid"}}}``; ``estimate`` is the statistic on all rows.
    """
    c = np.asarray(clusters, dtype=object)
    ids = list(dict.fromkeys(c.tolist()))
    rows_of = [np.flatnonzero(c == i) for i in ids]
    full = statistic(np.arange(len(c)))
    rng = np.random.default_rng(seed)
    draws: dict[str, list[float]] = {k: [] for k in full}
    m = len(ids)
    for _ in range(n_boot if m >= 2 else 0):
        pick = rng.integers(0, m, m)
        rows = np.concatenate([rows_of[j] for j in pick])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            vals = statistic(rows)
        for k in draws:
            v = vals.get(k)
            draws[k].append(math.nan if v is None else float(v))
    a = (1 - level) / 2
    figures = {}
    for k, est in full.items():
        d = np.array(draws[k], dtype=float)
        d = d[np.isfinite(d)]
        ci = [float(np.quantile(d, a)), float(np.quantile(d, 1 - a))] if d.size >= 2 else [None, None]
        figures[k] = {"estimate": _finite(est), "ci95": ci, "n_valid": int(d.size)}
    return {
        "method": f"percentile bootstrap over animals (clusters), {n_boot} resamples",
        "n_boot": n_boot,
        "n_clusters": m,
        "level": level,
        "seed": seed,
        "figures": figures,
    }


def bland_altman(model: np.ndarray, reference: np.ndarray) -> dict[str, Any]:
    """Bland–Altman agreement of two measurements of one quantity (pairs with a NaN dropped).

    Returns:
        ``{"n", "bias", "sd", "loa": [lower, upper]}`` with differences ``model - reference`` and
        limits of agreement ``bias ± 1.96 SD`` (sample SD). Intervals for these come from
        :func:`cluster_bootstrap`.
    """
    m = np.asarray(model, dtype=float)
    r = np.asarray(reference, dtype=float)
    keep = np.isfinite(m) & np.isfinite(r)
    d = m[keep] - r[keep]
    if d.size < 2:
        return {"n": int(d.size), "bias": None, "sd": None, "loa": [None, None]}
    bias = float(d.mean())
    sd = float(d.std(ddof=1))
    return {"n": int(d.size), "bias": bias, "sd": sd, "loa": [bias - 1.96 * sd, bias + 1.96 * sd]}
