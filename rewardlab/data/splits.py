"""Seeded group splits: all comparisons sharing a group key land on the same side (also stratified, and k-fold)."""

from __future__ import annotations

import numpy as np

from rewardlab.contracts.schema import Comparison


def group_key(comparison: Comparison, split_by: str) -> object:
    """The key that keeps related examples together (``pair`` = each example its own group)."""
    if split_by == "pair":
        return comparison.source
    if split_by == "group" and comparison.group is None:
        return comparison.prompt  # rows without a group fall back to their prompt
    return comparison.field_value(split_by)


def split_by_group(
    comparisons: list[Comparison], eval_fraction: float, *, split_by: str = "prompt", seed: int = 0
) -> tuple[list[Comparison], list[Comparison]]:
    """Split into (train, eval) so that no group appears on both sides.

    Groups are shuffled with ``seed`` and taken for evaluation until at least
    ``eval_fraction`` of the comparisons are held out; the result depends only on
    the data, the fraction and the seed.
    """
    if not 0.0 <= eval_fraction < 1.0:
        raise ValueError(f"eval_fraction={eval_fraction!r} must be in [0, 1)")
    keys = [group_key(c, split_by) for c in comparisons]
    if split_by != "pair" and all(k is None for k in keys):
        raise ValueError(f"cannot split by {split_by!r}: no example has that field (data.split_by)")
    groups = sorted({repr(k) for k in keys})
    order = np.random.default_rng(seed).permutation(len(groups))
    sizes: dict[str, int] = {}
    for k in keys:
        sizes[repr(k)] = sizes.get(repr(k), 0) + 1
    target = eval_fraction * len(comparisons)
    held: set[str] = set()
    count = 0
    for i in order:
        if count >= target:
            break
        held.add(groups[i])
        count += sizes[groups[i]]
    train = [c for c, k in zip(comparisons, keys) if repr(k) not in held]
    evaluation = [c for c, k in zip(comparisons, keys) if repr(k) in held]
    return train, evaluation


def outcome_label(comparison: Comparison) -> str:
    """The class a stratified split balances: ``meta["outcome"]`` (a / b / tie) when the data has one, else
    ``tie`` when the first pair is a tie, else ``a`` (plain pairs are all "A wins")."""
    outcome = comparison.meta.get("outcome")
    if outcome is not None:
        return str(outcome)
    return "tie" if comparison.pairs[0].tie else "a"


def _labels_and_groups(comparisons: list[Comparison], split_by: str, stratify_by: str) -> tuple[list, np.ndarray]:
    keys = [group_key(c, split_by) for c in comparisons]
    if split_by != "pair" and all(k is None for k in keys):
        raise ValueError(f"cannot split by {split_by!r}: no example has that field (data.split_by)")
    if stratify_by == "outcome":
        labels = [outcome_label(c) for c in comparisons]
    else:
        labels = [repr(c.field_value(stratify_by)) for c in comparisons]
    _, groups = np.unique([repr(k) for k in keys], return_inverse=True)
    return labels, groups


def _group_folds(comparisons: list[Comparison], k: int, *, split_by: str, stratify_by: str | None, seed: int
                 ) -> list[np.ndarray]:
    """The eval indices of each of ``k`` folds; a group's comparisons always share a fold."""
    from sklearn.model_selection import GroupKFold, StratifiedGroupKFold  # late import: only splits need it

    labels, groups = _labels_and_groups(comparisons, split_by, stratify_by or "outcome")
    n_groups = int(groups.max()) + 1 if len(groups) else 0
    if n_groups < k:
        raise ValueError(f"cannot make {k} folds from {n_groups} groups of {split_by!r}; use fewer folds (data.folds) "
                         "or a larger data.eval_fraction, or split by a finer field (data.split_by)")
    index = np.arange(len(comparisons))
    if stratify_by is not None:
        folds = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed).split(index, labels, groups)
    else:
        # GroupKFold does not shuffle (before scikit-learn 1.6): renumber the groups at random instead.
        groups = np.random.default_rng(seed).permutation(n_groups)[groups]
        folds = GroupKFold(n_splits=k).split(index, groups=groups)
    return [held for _, held in folds]


def stratified_group_split(
    comparisons: list[Comparison], eval_fraction: float, *, split_by: str = "prompt", stratify_by: str = "outcome",
    seed: int = 0,
) -> tuple[list[Comparison], list[Comparison]]:
    """Split into (train, eval) so that no group appears on both sides and both keep the outcome proportions.

    One fold of scikit-learn's ``StratifiedGroupKFold`` with ``round(1 / eval_fraction)``
    folds is held out, so the eval share is close to, not exactly, ``eval_fraction``.
    ``stratify_by`` is ``"outcome"`` (see :func:`outcome_label`) or any field name.
    """
    if not 0.0 <= eval_fraction < 1.0:
        raise ValueError(f"eval_fraction={eval_fraction!r} must be in [0, 1)")
    if eval_fraction == 0.0:
        return list(comparisons), []
    k = round(1 / eval_fraction)
    if k < 2:
        raise ValueError(f"eval_fraction={eval_fraction!r} is too large for a stratified split (at most 0.5: one "
                         "fold of round(1 / eval_fraction) is held out)")
    held = set(_group_folds(comparisons, k, split_by=split_by, stratify_by=stratify_by, seed=seed)[0].tolist())
    return ([c for i, c in enumerate(comparisons) if i not in held],
            [c for i, c in enumerate(comparisons) if i in held])


def kfold_splits(
    comparisons: list[Comparison], k: int, *, split_by: str = "prompt", stratify: bool = True, seed: int = 0
) -> list[tuple[list[Comparison], list[Comparison]]]:
    """``k`` (train, eval) splits for cross-validation: every comparison is in exactly one eval part, and
    no group appears on both sides of a split. ``stratify`` keeps the outcome proportions in each fold."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 2:
        raise ValueError(f"k={k!r} folds: cross-validation needs a whole number >= 2")
    out = []
    for held in _group_folds(comparisons, k, split_by=split_by, stratify_by="outcome" if stratify else None,
                             seed=seed):
        chosen = set(held.tolist())
        out.append(([c for i, c in enumerate(comparisons) if i not in chosen],
                    [c for i, c in enumerate(comparisons) if i in chosen]))
    return out
