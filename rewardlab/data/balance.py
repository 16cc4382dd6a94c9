"""Reweight training pairs so that no attribute (or rating gap) drowns the others.

A data set with 10,000 "style" pairs and 500 "spatial" pairs trains mostly the
style head. ``balance_pairs`` gives every pair the weight ``n / (G · n_g)``
(n pairs in all, G groups, n_g pairs in the pair's group), so each group
contributes equally to the weighted-mean loss while the mean weight stays 1.
That is what a balanced sampler gives in expectation, without the variance of
re-sampling and without changing which batches exact resume replays.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from typing import Hashable, Sequence

import numpy as np

from rewardlab.contracts.schema import Comparison, Pair

GAP_BINS = ("small", "medium", "large")


def _gap_edges(pairs: Sequence[Pair]) -> dict[str | None, np.ndarray]:
    """Per attribute, the tertiles of |margin| that separate small, medium and large rating gaps."""
    gaps: dict[str | None, list[float]] = {}
    for p in pairs:
        gaps.setdefault(p.attribute, []).append(abs(p.margin))
    return {a: np.quantile(v, [1 / 3, 2 / 3]) for a, v in gaps.items()}


def balance_pairs(comparisons: Sequence[Comparison], mode: str) -> list[Comparison]:
    """Comparisons with pair weights set by ``mode``: ``none``, ``attribute`` or ``attribute_gap``.

    Example:
        >>> from rewardlab.contracts.schema import Pair
        >>> c = Comparison("p", ("a", "b", "c"), (Pair(0, 1, attribute="x"), Pair(0, 2, attribute="x"),
        ...                                      Pair(1, 2, attribute="y")))
        >>> [p.weight for p in balance_pairs([c], "attribute")[0].pairs]
        [0.75, 0.75, 1.5]
    """
    if mode == "none":
        return list(comparisons)
    if mode not in ("attribute", "attribute_gap"):
        raise ValueError(f"train.balance={mode!r}; choose none, attribute or attribute_gap")
    all_pairs = [p for c in comparisons for p in c.pairs]
    edges = _gap_edges(all_pairs) if mode == "attribute_gap" else {}

    def group(p: Pair) -> Hashable:
        if mode == "attribute":
            return p.attribute
        return p.attribute, GAP_BINS[int(np.searchsorted(edges[p.attribute], abs(p.margin), side="left"))]

    counts = Counter(group(p) for p in all_pairs)
    scale = len(all_pairs) / len(counts)
    return [dataclasses.replace(c, pairs=tuple(p._replace(weight=p.weight * scale / counts[group(p)])
                                               for p in c.pairs)) for c in comparisons]
