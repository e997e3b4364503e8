"""Cross-validation folds over a data module's labelled training items.

Single-label targets give stratified folds (every fold holds each class in about the proportion
of the whole); multi-label and regression targets give plain shuffled folds. With ``groups``,
items of one group always land in the same fold (scikit-learn's ``StratifiedGroupKFold`` /
``GroupKFold``), so near-duplicates (crops of one photo, sentences of one review, rows of one
patient) cannot sit on both sides of a fold.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from flash.core.utils.validation import check_int

Fold = tuple[np.ndarray, np.ndarray]
"""The positions of a fold's training items and of its held-out items."""


def is_stratifiable(targets: np.ndarray | None) -> bool:
    """Whether ``targets`` are single-label class indices (what stratified folds need)."""
    return targets is not None and targets.ndim == 1 and np.issubdtype(targets.dtype, np.integer)


def check_folds(targets: np.ndarray | None, folds: int, groups: Sequence[Any] | None) -> None:
    """Refuse fold counts the data cannot fill, with what to do instead."""
    check_int(folds, "folds", 2)
    n = 0 if targets is None else len(targets)
    if targets is None:
        raise ValueError("Cross-validation needs labelled training data; this data has no training targets.")
    if n < folds:
        raise ValueError(f"folds={folds} but the training data has only {n} items. Use folds <= {n}.")
    if groups is not None:
        if len(groups) != n:
            raise ValueError(
                f"groups has {len(groups)} entries but the pooled training data has {n} items "
                "(the training items, then the validation items): give one group per item."
            )
        distinct = len(set(groups))
        if distinct < folds:
            raise ValueError(
                f"folds={folds} but groups has only {distinct} distinct groups. Use fewer folds."
            )
    if is_stratifiable(targets):
        counts = Counter(targets.tolist())
        smallest, size = min(counts.items(), key=lambda kv: kv[1])
        if size < folds:
            raise ValueError(
                f"folds={folds} but class {smallest} has only {size} training item(s), so some folds "
                f"would hold none of it out. Use folds <= {size}, or add examples of that class."
            )


def make_folds(
    targets: np.ndarray | None,
    folds: int = 5,
    seed: int = 0,
    groups: Sequence[Any] | None = None,
) -> list[Fold]:
    """``folds`` (train positions, held-out positions) pairs covering every item once as held out.

    Args:
        targets: the pooled training targets (class indices, 0/1 rows, or real values).
        folds: number of folds (at least 2).
        seed: seed of the shuffle; the same seed gives the same folds.
        groups: one hashable per item; items sharing one stay in the same fold.

    Raises:
        ValueError: for more folds than items, groups or members of the smallest class, or
            ``groups`` of the wrong length.
    """
    from sklearn.model_selection import GroupKFold, KFold, StratifiedGroupKFold, StratifiedKFold

    check_folds(targets, folds, groups)
    assert targets is not None
    n = len(targets)
    positions = np.zeros((n, 1))
    stratified = is_stratifiable(targets)
    if groups is not None:
        codes = np.unique(np.asarray([str(g) for g in groups]), return_inverse=True)[1]
        if stratified:
            splitter: Any = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
            pairs = splitter.split(positions, targets, codes)
        else:
            # GroupKFold does not shuffle; renaming the groups at random does.
            renamed = np.random.default_rng(seed).permutation(codes.max() + 1)[codes]
            pairs = GroupKFold(n_splits=folds).split(positions, groups=renamed)
    elif stratified:
        pairs = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed).split(positions, targets)
    else:
        pairs = KFold(n_splits=folds, shuffle=True, random_state=seed).split(positions)
    made = [(np.sort(train), np.sort(held_out)) for train, held_out in pairs]
    empty = [i for i, (train, held_out) in enumerate(made) if len(train) == 0 or len(held_out) == 0]
    if empty:
        raise ValueError(f"Fold {empty[0]} came out empty: use fewer folds or more (or smaller) groups.")
    return made
