"""Train/test splits for the goat seed's validation schemes (scikit-learn splitters) and the leakage check.

Schemes (``SCHEMES``), each a scikit-learn splitter:

* ``split`` — one random train/test split of the *items* (frames/images), stratified by label
  (:func:`sklearn.model_selection.train_test_split`); the seed's "single train-test split" (80/20).
  Frames of one animal land on both sides.
* ``kfold`` — :class:`~sklearn.model_selection.StratifiedKFold` over items (the seed's 5-fold; plain
  ``KFold`` without labels or when a class has fewer than k items). Also leaks subjects, like the seed.
* ``subject-kfold`` — :class:`~sklearn.model_selection.StratifiedGroupKFold` with the animals as groups
  (``GroupKFold`` without labels); all items of a subject are on one side (the seed's subject-wise
  10-fold).
* ``loso`` — :class:`~sklearn.model_selection.LeaveOneGroupOut`: one fold per subject.

For ``subject-kfold`` and ``loso`` :func:`make_folds` always runs :func:`check_no_subject_leakage`,
which raises :class:`SubjectLeakageError` if any subject is on both sides of any fold.

Everything works on index arrays: ``subjects[i]`` and ``labels[i]`` describe item ``i``.
"""

from __future__ import annotations

import warnings
from collections import Counter
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
        splitter: The scikit-learn splitter that made it (for reports).
    """

    name: str
    train: np.ndarray
    test: np.ndarray
    splitter: str = ""


def _labels_or_none(labels: Sequence[object] | None, n: int) -> np.ndarray | None:
    if labels is None:
        return None
    if len(labels) != n:
        raise SplitError(f"{len(labels)} labels for {n} items")
    return np.array([str(x) for x in labels], dtype=object)


def _fold(name: str, train: np.ndarray, test: np.ndarray, splitter: str) -> Fold:
    tr = np.sort(np.asarray(train, dtype=np.int64))
    return Fold(name, tr, np.sort(np.asarray(test, dtype=np.int64)), splitter)


def single_split(
    n: int, test_fraction: float = 0.2, seed: int = 0, labels: Sequence[object] | None = None
) -> list[Fold]:
    """One random item-level split, stratified by label when every class has 2+ items.

    Args:
        n: Number of items.
        test_fraction: Test share.
        seed: Random seed.
        labels: Label per item for stratification.
    """
    from sklearn.model_selection import train_test_split

    if not 0 < test_fraction < 1:
        raise SplitError(f"test fraction must be in (0, 1), got {test_fraction}")
    if n < 2:
        raise SplitError(f"need at least 2 items for a split, got {n}")
    y = _labels_or_none(labels, n)
    strat = y if y is not None and min(Counter(y.tolist()).values()) >= 2 else None
    try:
        tr, te = train_test_split(np.arange(n), test_size=test_fraction, random_state=seed, stratify=strat)
    except ValueError as e:
        raise SplitError(f"cannot split {n} items at test fraction {test_fraction}: {e}") from None
    how = "train_test_split" + (" (stratified)" if strat is not None else "")
    return [_fold(f"split {1 - test_fraction:.0%}/{test_fraction:.0%}", tr, te, how)]


def item_kfold(n: int, k: int, seed: int = 0, labels: Sequence[object] | None = None) -> list[Fold]:
    """Stratified k-fold over items (subjects ignored, as in the seed's 5-fold)."""
    from sklearn.model_selection import KFold, StratifiedKFold

    if k < 2:
        raise SplitError(f"k must be at least 2, got {k}")
    if k > n:
        raise SplitError(f"k={k} folds but only {n} items")
    y = _labels_or_none(labels, n)
    x = np.zeros((n, 1))
    if y is not None and min(Counter(y.tolist()).values()) >= k:
        it, how = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed).split(x, y), "StratifiedKFold"
    else:
        it, how = KFold(n_splits=k, shuffle=True, random_state=seed).split(x), "KFold"
    return [_fold(f"fold {j + 1}/{k}", tr, te, how) for j, (tr, te) in enumerate(it)]


def subject_kfold(
    subjects: Sequence[str], k: int, seed: int = 0, labels: Sequence[object] | None = None
) -> list[Fold]:
    """k folds over subjects (``StratifiedGroupKFold``, stratified by label; ``GroupKFold`` without)."""
    from sklearn.model_selection import GroupKFold, StratifiedGroupKFold

    subs = np.array([str(s) for s in subjects], dtype=object)
    n_sub = len(set(subs.tolist()))
    if k < 2:
        raise SplitError(f"k must be at least 2, got {k}")
    if k > n_sub:
        raise SplitError(f"k={k} subject-wise folds but only {n_sub} subjects")
    y = _labels_or_none(labels, len(subs))
    x = np.zeros((len(subs), 1))
    splits: list[tuple[np.ndarray, np.ndarray]] | None = None
    how = "GroupKFold"
    if y is not None and max(Counter(y.tolist()).values()) >= k:
        try:
            sgk = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # "least populated class" on small sets
                splits = list(sgk.split(x, y, subs))
            how = "StratifiedGroupKFold"
        except ValueError:  # too few items per class to stratify: group folds only
            splits = None
    if splits is None:
        splits = list(GroupKFold(n_splits=k).split(x, groups=subs))
    folds = [_fold(f"subject fold {j + 1}/{k}", tr, te, how) for j, (tr, te) in enumerate(splits)]
    empty = [f.name for f in folds if not f.test.size]
    if empty:
        raise SplitError(f"{', '.join(empty)} would test no subject; use fewer folds than {k}")
    return folds


def leave_one_subject_out(subjects: Sequence[str]) -> list[Fold]:
    """One fold per subject (``LeaveOneGroupOut``), holding out all of that subject's items."""
    from sklearn.model_selection import LeaveOneGroupOut

    subs = np.array([str(s) for s in subjects], dtype=object)
    uniq = list(dict.fromkeys(subs.tolist()))
    if len(uniq) < 2:
        raise SplitError(f"leave-one-subject-out needs at least 2 subjects, got {len(uniq)}")
    folds = {}
    for tr, te in LeaveOneGroupOut().split(np.zeros((len(subs), 1)), groups=subs):
        folds[subs[te[0]]] = _fold(f"subject {subs[te[0]]}", tr, te, "LeaveOneGroupOut")
    return [folds[s] for s in uniq]  # in order of first appearance


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
