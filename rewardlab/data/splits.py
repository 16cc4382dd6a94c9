"""Seeded group splits: all comparisons sharing a group key land on the same side."""

from __future__ import annotations

import numpy as np

from rewardlab.data.schema import Comparison


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
