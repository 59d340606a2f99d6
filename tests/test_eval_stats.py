"""ICC against Shrout & Fleiss (1979), weighted accuracy by hand, Wilcoxon / Kruskal–Wallis cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from train.evaluation import stats
from train.metrics import confusion_matrix, precision_recall, weighted_accuracy

# Shrout & Fleiss (1979), Table 2: 6 targets rated by 4 judges
SF_DATA = np.array(
    [
        [9, 2, 5, 8],
        [6, 1, 3, 2],
        [8, 4, 6, 8],
        [7, 1, 2, 6],
        [10, 5, 6, 9],
        [6, 2, 4, 7],
    ],
    dtype=float,
)
# their Table 4: the published values of the six forms
SF_PUBLISHED = {"ICC1": 0.17, "ICC2": 0.29, "ICC3": 0.71, "ICC1k": 0.44, "ICC2k": 0.62, "ICC3k": 0.91}


@pytest.mark.parametrize("form", list(SF_PUBLISHED))
def test_icc_reproduces_shrout_fleiss_worked_example(form: str) -> None:
    res = stats.icc(SF_DATA)
    f = res["forms"][form]
    assert round(f["icc"], 2) == SF_PUBLISHED[form]
    lo, hi = f["ci95"]
    assert lo <= f["icc"] <= hi
    assert f["label"] == stats.landis_koch(f["icc"])
    assert res["n"] == 6 and res["k"] == 4 and res["n_excluded"] == 0


def test_icc_every_form_reported_and_missing_rows_excluded() -> None:
    data = np.vstack([SF_DATA, [np.nan, 1, 2, 3]])
    res = stats.icc(data)
    assert set(res["forms"]) == set(stats.ICC_FORMS)
    assert res["n_excluded"] == 1 and res["n"] == 6
    assert round(res["forms"]["ICC1"]["icc"], 2) == 0.17


def test_icc_degenerate_inputs_do_not_crash() -> None:
    assert stats.icc(np.ones((5, 2)))["forms"]["ICC1"] is None
    assert "at least 2 complete" in stats.icc(np.array([[1.0, 2.0]]))["error"]
    assert "2 raters" in stats.icc(np.ones((4, 1)))["error"]


@pytest.mark.parametrize(
    ("value", "label"),
    [
        (0.935, "very good"),
        (0.81, "very good"),
        (0.801, "good"),
        (0.641, "good"),
        (0.61, "good"),
        (0.584, "moderate"),
        (0.41, "moderate"),
        (0.3, "fair"),
        (0.21, "fair"),
        (0.2, "poor"),
        (-0.1, "poor"),
        (float("nan"), "undefined"),
    ],
)
def test_landis_koch_bands(value: float, label: str) -> None:
    assert stats.landis_koch(value) == label


def test_weighted_accuracy_hand_example() -> None:
    # class 0: TP1 FN1 FP1 TN3 -> 4/6; class 1: TP2 FP1 TN3 -> 5/6; class 2: TP1 FN1 TN4 -> 5/6
    y_true = [0, 0, 1, 1, 2, 2]
    y_pred = [0, 1, 1, 1, 2, 0]
    assert weighted_accuracy(y_true, y_pred) == pytest.approx((2 * 4 / 6 + 2 * 5 / 6 + 2 * 5 / 6) / 6)
    # unequal class sizes: weights are the true counts
    y_true = [0, 0, 0, 1]
    y_pred = [0, 0, 1, 1]
    # class 0: TP2 FN1 TN1 -> 3/4 (weight 3); class 1: TP1 FP1 TN2 -> 3/4 (weight 1)
    assert weighted_accuracy(y_true, y_pred) == pytest.approx(0.75)
    y_true = [0, 0, 0, 0, 1, 1, 2]
    y_pred = [0, 0, 0, 1, 1, 2, 2]
    # c0: TP3 FN1 TN3 -> 6/7 (w4); c1: TP1 FP1 FN1 TN4 -> 5/7 (w2); c2: TP1 FP1 TN5 -> 6/7 (w1)
    assert weighted_accuracy(y_true, y_pred) == pytest.approx((4 * 6 / 7 + 2 * 5 / 7 + 1 * 6 / 7) / 7)


def test_weighted_accuracy_errors() -> None:
    with pytest.raises(ValueError, match="empty"):
        weighted_accuracy([], [])
    with pytest.raises(ValueError, match="items"):
        weighted_accuracy([0, 1], [0])
    with pytest.raises(ValueError, match="not among labels"):
        weighted_accuracy([0, 3], [0, 1], labels=[0, 1, 2])


def test_precision_recall_and_confusion_match_counts() -> None:
    y_true = [0, 0, 1, 1, 2, 2]
    y_pred = [0, 1, 1, 1, 2, 0]
    cm = confusion_matrix(y_true, y_pred, [0, 1, 2])
    assert cm.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    pr = precision_recall(y_true, y_pred, [0, 1, 2])
    assert pr["per_class"]["1"]["precision"] == pytest.approx(2 / 3)
    assert pr["per_class"]["2"]["recall"] == pytest.approx(0.5)
    assert pr["recall_weighted"] == pytest.approx(4 / 6)


def test_wilcoxon_constructed_case() -> None:
    a = np.arange(1, 11, dtype=float)
    # every difference positive and distinct: W (smaller rank sum) = 0, exact p = 2 / 2**10
    res = stats.wilcoxon_paired(a + np.arange(1, 11) * 0.1, a)
    assert res["statistic"] == 0.0
    assert res["p"] == pytest.approx(2 / 2**10)
    same = stats.wilcoxon_paired(a, a)
    assert same["error"] and same["p"] == 1.0
    withnan = stats.wilcoxon_paired(np.r_[a, np.nan], np.r_[a + 1, 3.0])
    assert withnan["n"] == 10 and withnan["n_excluded"] == 1


def test_kruskal_constructed_case() -> None:
    # three fully separated groups of 3: ranks 1-3, 4-6, 7-9 -> H = 7.2 (no ties)
    res = stats.kruskal({"a": np.array([1.0, 2, 3]), "b": np.array([4.0, 5, 6]), "c": np.array([7.0, 8, 9])})
    assert res["statistic"] == pytest.approx(7.2)
    assert res["p"] == pytest.approx(math.exp(-7.2 / 2))  # chi2 with 2 df
    assert stats.kruskal({"a": np.array([1.0])})["error"]
    assert stats.stars(0.00001) == "****" and stats.stars(0.2) == "ns"


def test_sem_and_describe() -> None:
    v = np.array([1.0, 2.0, 3.0, 4.0, np.nan])
    assert stats.sem(v) == pytest.approx(np.std([1, 2, 3, 4], ddof=1) / 2)
    d = stats.describe(v)
    assert d["n"] == 4 and d["mean"] == 2.5


def test_fast_icc21_matches_shrout_fleiss_and_pingouin() -> None:
    assert round(stats.icc21(SF_DATA), 2) == SF_PUBLISHED["ICC2"]
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 1)) + rng.normal(0, 0.5, (30, 3)) + np.array([0.0, 0.3, -0.2])
    assert stats.icc21(x) == pytest.approx(stats.icc(x)["forms"]["ICC2"]["icc"], abs=1e-12)
    assert math.isnan(stats.icc21(np.ones((4, 2))))


@pytest.mark.parametrize(
    ("ci", "label"),
    [
        ((0.92, 0.97), "excellent"),
        ((0.80, 0.95), "good to excellent"),
        ((0.40, 0.60), "poor to moderate"),
        ((0.76, 0.89), "good"),
        ((None, 0.9), "undefined"),
    ],
)
def test_koo_li_judged_on_the_interval(ci: tuple, label: str) -> None:
    assert stats.koo_li(ci) == label


def test_fast_confusion_figures_equal_scikit_learn() -> None:
    from train.evaluation.grades import _class_figures, figures_from_confusion

    rng = np.random.default_rng(1)
    for c in (2, 3):
        t = rng.integers(0, c, 80)
        p = np.where(rng.random(80) < 0.6, t, rng.integers(0, c, 80))
        cm = confusion_matrix(t, p, list(range(c)))
        fast = figures_from_confusion(cm)
        ref = _class_figures(t, p, list(range(c)))
        assert fast == pytest.approx(ref)


def test_friedman_and_per_animal_means_by_hand() -> None:
    from scipy.stats import friedmanchisquare

    table = np.array([[1.0, 2.0, 3.0], [1.5, 2.5, 2.0], [0.5, 1.0, 2.5], [1.0, 3.0, 2.0], [np.nan, 1, 2]])
    r = stats.friedman(table, ["d0", "d1", "d7"])
    assert r["n"] == 4 and r["n_excluded"] == 1
    assert r["p"] == pytest.approx(friedmanchisquare(*table[:4].T).pvalue)
    assert "3 conditions" in stats.friedman(table[:, :2])["error"]
    ids, means, counts = stats.per_animal_means(
        np.array([1.0, 3.0, np.nan, 4.0]), np.array(["a", "a", "b", "c"])
    )
    assert ids == ["a", "c"] and means.tolist() == [2.0, 4.0] and counts.tolist() == [2, 1]
    assert stats.pseudoreplication_warning(10, 10) is None
    assert "10 images come from 2 animals" in stats.pseudoreplication_warning(10, 2)


def test_mixed_model_recovers_a_group_effect_and_refuses_few_animals() -> None:
    rng = np.random.default_rng(2)
    rows = []
    for a in range(12):
        group = "injured" if a % 2 else "control"
        u = rng.normal(0, 0.3)  # the animal's own level
        for tp in ("day1", "day7"):
            for _ in range(8):
                rows.append(
                    (
                        1.0 * (group == "injured") + 0.5 * (tp == "day7") + u + rng.normal(0, 0.1),
                        group,
                        tp,
                        f"a{a}",
                    )
                )
    score, group, tp, animal = (np.array(c, dtype=object) for c in zip(*rows, strict=True))
    r = stats.mixed_model(score.astype(float), group, tp, animal)
    assert r["formula"] == "score ~ group * timepoint + (1 | animal)" and r["converged"]
    eff = {t["term"]: t for t in r["fixed_effects"]}
    assert eff["group[injured]"]["estimate"] == pytest.approx(1.0, abs=0.4)
    assert eff["timepoint[day7]"]["estimate"] == pytest.approx(0.5, abs=0.05)
    assert r["animal_variance"] == pytest.approx(0.09, abs=0.08)
    few = stats.mixed_model(score.astype(float)[:32], group[:32], tp[:32], animal[:32])
    assert few["error"].startswith("not fitted: 2 animals")


def test_cluster_bootstrap_resamples_whole_animals() -> None:
    clusters = np.repeat(["a", "b", "c", "d"], [1, 2, 3, 4])
    sizes = []

    def stat(rows: np.ndarray) -> dict[str, float]:
        sizes.append(len(rows))
        return {"mean": float(np.mean(rows))}

    res = stats.cluster_bootstrap(clusters, stat, n_boot=200, seed=0)
    assert res["n_clusters"] == 4 and res["figures"]["mean"]["n_valid"] == 200
    # every replicate is a union of whole animals: its size is a sum of 4 animal sizes drawn from {1,2,3,4}
    assert sizes[0] == 10 and all(4 <= s <= 16 for s in sizes[1:])
    lo, hi = res["figures"]["mean"]["ci95"]
    assert lo <= res["figures"]["mean"]["estimate"] <= hi
    again = stats.cluster_bootstrap(clusters, stat, n_boot=200, seed=0)
    assert again["figures"] == res["figures"]
