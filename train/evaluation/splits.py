"""Train/test split generators for the goat seed's validation schemes, and the leakage check.

Schemes (``SCHEMES``):

* ``split`` — one random train/test split of the *items* (frames/images), stratified by label; the
  seed's "single train-test split" (80/20). Frames of one animal land on both sides.
* ``kfold`` — stratified k-fold over items (the seed's 5-fold). Also leaks subjects, like the seed.
* ``subject-kfold`` — k folds over *subjects*, stratified by each subject's majority label; all items
  of a subject are on one side (the seed's subject-wise 10-fold).
* ``loso`` — leave one subject out: one fold per subject.

For ``subject-kfold`` and ``loso`` :func:`make_folds` always runs :func:`check_no_subject_leakage`,
which raises :class:`SubjectLeakageError` if any subject is on both sides of any fold.

Everything works on index arrays: ``subjects[i]`` and ``labels[i]`` describe item ``i``.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

SCHEMES = ("split", "kfold", "subject-kfold", "loso")
SUBJECT_SCHEMES = ("subject-kfold", "loso")


class SubjectLeakageError(AssertionError):
    """A subject appears on both the training and the test side of a fold."""


class SplitError(ValueError):
    """A split cannot be made with the given items (e.g. more folds than subjects)."""


@dataclass(frozen=True)
class Fold:
    """One fold.

    Attributes:
        name: e.g. ``"fold 3/10"`` or ``"subject g07"``.
        train: Item indices of the training side, int64 ``(n_train,)``, sorted.
        test: Item indices of the test side, int64 ``(n_test,)``, sorted.
    """

    name: str
    train: np.ndarray
    test: np.ndarray


def _deal(
    groups_by_label: dict[object, list[object]], k: int, rng: np.random.Generator
) -> list[list[object]]:
    """Shuffle each label's members and deal them round-robin into k bins (balanced, stratified)."""
    bins: list[list[object]] = [[] for _ in range(k)]
    start = 0
    for label in sorted(groups_by_label, key=str):
        members = list(groups_by_label[label])
        order = rng.permutation(len(members))
        for j, m in enumerate(order):
            bins[(start + j) % k].append(members[m])
        start = (start + len(members)) % k
    return bins


def _labels_or_none(labels: Sequence[object] | None, n: int) -> list[object]:
    if labels is None:
        return [0] * n
    if len(labels) != n:
        raise SplitError(f"{len(labels)} labels for {n} items")
    return list(labels)


def single_split(
    n: int, test_fraction: float = 0.2, seed: int = 0, labels: Sequence[object] | None = None
) -> list[Fold]:
    """One random item-level split, stratified by label.

    Args:
        n: Number of items.
        test_fraction: Share of each label's items put on the test side (at least one per label
            with 2+ items).
        seed: Random seed.
        labels: Label per item for stratification.
    """
    if not 0 < test_fraction < 1:
        raise SplitError(f"test fraction must be in (0, 1), got {test_fraction}")
    if n < 2:
        raise SplitError(f"need at least 2 items for a split, got {n}")
    labs = _labels_or_none(labels, n)
    rng = np.random.default_rng(seed)
    by: dict[object, list[int]] = defaultdict(list)
    for i, lab in enumerate(labs):
        by[lab].append(i)
    test: list[int] = []
    for lab in sorted(by, key=str):
        idx = np.array(by[lab])[rng.permutation(len(by[lab]))]
        m = round(len(idx) * test_fraction)
        if len(idx) >= 2:
            m = min(max(m, 1), len(idx) - 1)
        test.extend(idx[:m].tolist())
    test_a = np.array(sorted(test), dtype=np.int64)
    train_a = np.setdiff1d(np.arange(n), test_a).astype(np.int64)
    return [Fold(f"split {1 - test_fraction:.0%}/{test_fraction:.0%}", train_a, test_a)]


def item_kfold(n: int, k: int, seed: int = 0, labels: Sequence[object] | None = None) -> list[Fold]:
    """Stratified k-fold over items (subjects ignored, as in the seed's 5-fold)."""
    if k < 2:
        raise SplitError(f"k must be at least 2, got {k}")
    if k > n:
        raise SplitError(f"k={k} folds but only {n} items")
    labs = _labels_or_none(labels, n)
    by: dict[object, list[object]] = defaultdict(list)
    for i, lab in enumerate(labs):
        by[lab].append(i)
    bins = _deal(by, k, np.random.default_rng(seed))
    return _folds_from_bins([[int(i) for i in b] for b in bins], n, "fold")  # type: ignore[call-overload]


def subject_kfold(
    subjects: Sequence[str], k: int, seed: int = 0, labels: Sequence[object] | None = None
) -> list[Fold]:
    """k folds over subjects, stratified by each subject's majority label."""
    subs = [str(s) for s in subjects]
    uniq = list(dict.fromkeys(subs))
    if k < 2:
        raise SplitError(f"k must be at least 2, got {k}")
    if k > len(uniq):
        raise SplitError(f"k={k} subject-wise folds but only {len(uniq)} subjects")
    labs = _labels_or_none(labels, len(subs))
    per_subject: dict[str, Counter[object]] = defaultdict(Counter)
    for s, lab in zip(subs, labs, strict=True):
        per_subject[s][lab] += 1
    by: dict[object, list[object]] = defaultdict(list)
    for s in uniq:
        by[per_subject[s].most_common(1)[0][0]].append(s)
    bins = _deal(by, k, np.random.default_rng(seed))
    where = {s: b for b, members in enumerate(bins) for s in members}
    item_bins: list[list[int]] = [[] for _ in range(k)]
    for i, s in enumerate(subs):
        item_bins[where[s]].append(i)
    folds = _folds_from_bins(item_bins, len(subs), "subject fold")
    return folds


def leave_one_subject_out(subjects: Sequence[str]) -> list[Fold]:
    """One fold per subject, holding out all of that subject's items."""
    subs = np.array([str(s) for s in subjects], dtype=object)
    uniq = list(dict.fromkeys(subs.tolist()))
    if len(uniq) < 2:
        raise SplitError(f"leave-one-subject-out needs at least 2 subjects, got {len(uniq)}")
    folds = []
    for s in uniq:
        test = np.flatnonzero(subs == s).astype(np.int64)
        train = np.flatnonzero(subs != s).astype(np.int64)
        folds.append(Fold(f"subject {s}", train, test))
    return folds


def _folds_from_bins(bins: list[list[int]], n: int, word: str) -> list[Fold]:
    k = len(bins)
    folds = []
    for j, b in enumerate(bins):
        test = np.array(sorted(b), dtype=np.int64)
        train = np.setdiff1d(np.arange(n), test).astype(np.int64)
        folds.append(Fold(f"{word} {j + 1}/{k}", train, test))
    return folds


def check_no_subject_leakage(folds: Sequence[Fold], subjects: Sequence[str]) -> None:
    """Raise unless every fold keeps each subject on one side only.

    Raises:
        SubjectLeakageError: Naming the fold and (up to 5 of) the subjects found on both sides.
    """
    subs = np.array([str(s) for s in subjects], dtype=object)
    for f in folds:
        both = sorted(set(subs[f.train].tolist()) & set(subs[f.test].tolist()))
        if both:
            shown = ", ".join(both[:5]) + (f" (+{len(both) - 5} more)" if len(both) > 5 else "")
            raise SubjectLeakageError(
                f"{f.name}: {len(both)} subject(s) on both the training and the test side: {shown}"
            )


def check_partition(folds: Sequence[Fold], n: int) -> None:
    """Raise unless train and test are disjoint in every fold (and cover all ``n`` items)."""
    for f in folds:
        if np.intersect1d(f.train, f.test).size:
            raise SplitError(f"{f.name}: an item is on both sides")
        if f.train.size + f.test.size != n:
            raise SplitError(f"{f.name}: {f.train.size}+{f.test.size} items, expected {n}")


def make_folds(
    scheme: str,
    subjects: Sequence[str],
    labels: Sequence[object] | None = None,
    k: int = 5,
    seed: int = 0,
    test_fraction: float = 0.2,
) -> list[Fold]:
    """Folds of one scheme (see the module docstring); subject schemes are checked for leakage.

    Args:
        scheme: One of :data:`SCHEMES`.
        subjects: Subject (animal) id per item.
        labels: Label per item (stratification), optional.
        k: Number of folds (``kfold``, ``subject-kfold``).
        seed: Random seed.
        test_fraction: Test share for ``split``.
    """
    n = len(subjects)
    if scheme == "split":
        folds = single_split(n, test_fraction, seed, labels)
    elif scheme == "kfold":
        folds = item_kfold(n, k, seed, labels)
    elif scheme == "subject-kfold":
        folds = subject_kfold(subjects, k, seed, labels)
    elif scheme == "loso":
        folds = leave_one_subject_out(subjects)
    else:
        raise SplitError(f"unknown scheme {scheme!r}; expected one of {', '.join(SCHEMES)}")
    check_partition(folds, n)
    if scheme in SUBJECT_SCHEMES:
        check_no_subject_leakage(folds, subjects)
    return folds
