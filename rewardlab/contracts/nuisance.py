"""Nuisance features of a response: what a reward should not follow (its length, for now).

Every encoded item carries one value per registered feature, and every batch a
``nuisance`` (N, F) tensor in :data:`FEATURES` order, so debiasing options (a
decorrelation penalty, ODIN's nuisance head, length-matched sampling) read them
without knowing the model kind. A new feature (markdown list count, refusal
phrases) is one entry here.

Example:
    >>> nuisance_of("four")
    (1.6094379124341003,)
    >>> feature_index(["length"])
    [0]
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

from rewardlab.contracts.schema import response_length

# name -> feature of one response. Length is log(1 + characters): preferences follow length ratios, not sums.
FEATURES: dict[str, Callable[[object], float]] = {
    "length": lambda response: math.log1p(response_length(response)),
}


LENGTH_COLUMN = list(FEATURES).index("length")  # the length column of a batch's ``nuisance`` tensor


def nuisance_of(response: object) -> tuple[float, ...]:
    """The features of one response, in :data:`FEATURES` order (images: length 0)."""
    return tuple(feature(response) for feature in FEATURES.values())


def feature_index(names: Sequence[str]) -> list[int]:
    """Columns of the batch's ``nuisance`` tensor for ``names``; an unknown name raises ValueError."""
    order = list(FEATURES)
    unknown = [n for n in names if n not in FEATURES]
    if unknown:
        raise ValueError(f"unknown nuisance feature {unknown[0]!r}; choose from {', '.join(order)}")
    return [order.index(n) for n in names]
