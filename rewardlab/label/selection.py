"""Which prompt to label next: the queue's order under ``rewardlab label --select``.

- ``random``: a seeded shuffle.
- ``uncertain``: the prompts the reward model is least sure of first. For an ensemble, the
  spread of its members' pair margins (their standard deviation, averaged over the prompt's
  pairs of responses); for a single model, the smallest margin between two of the prompt's
  responses (the Bradley–Terry probability nearest 1/2).
- ``disagree``: the prompts whose labellers disagree most first (one minus the mean Kendall τ
  between the rankings given so far); prompts with fewer than two rankings come after them,
  in random order.

Example:
    >>> margin_uncertainty([[0.0, 3.0], [1.0, 1.1, 5.0]]).round(2).tolist()
    [-3.0, -0.1]
    >>> selection_order(np.array([0.1, 0.9, 0.5]), seed=0)
    [1, 2, 0]
"""

from __future__ import annotations

import itertools
from typing import Sequence

import numpy as np

from rewardlab.metrics.agreement import kendall_tau

SELECTIONS = ("random", "uncertain", "disagree")


def margin_uncertainty(rewards: Sequence[Sequence[float]]) -> np.ndarray:
    """Per prompt, minus the smallest gap between two of its responses' rewards: higher is less sure."""
    return np.array([-min(abs(a - b) for a, b in itertools.combinations(r, 2)) for r in rewards])


def spread_uncertainty(member_rewards: Sequence[np.ndarray]) -> np.ndarray:
    """Per prompt, the members' spread of each pair margin, averaged over pairs; ``member_rewards[i]`` is
    (members M, responses K) for prompt i. Higher is less sure."""
    spreads = []
    for rows in member_rewards:
        rows = np.asarray(rows, dtype=float)
        margins = [rows[:, a] - rows[:, b] for a, b in itertools.combinations(range(rows.shape[1]), 2)]
        spreads.append(float(np.mean([m.std() for m in margins])))
    return np.array(spreads)


def disagreement(rankings: Sequence[Sequence[Sequence[int]]]) -> np.ndarray:
    """Per prompt, 1 − the mean Kendall τ between every two of its rankings (ranks, 1 = best); NaN where fewer
    than two people ranked it. 0 is full agreement, 2 full reversal."""
    out = []
    for given in rankings:
        taus = [t for a, b in itertools.combinations(given, 2) if (t := kendall_tau(a, b)) is not None]
        out.append(1.0 - float(np.mean(taus)) if taus else np.nan)
    return np.array(out)


def selection_order(priority: np.ndarray, *, seed: int = 0) -> list[int]:
    """Item indices by ``priority``, highest first; NaN last; ties (and NaNs) in a seeded random order."""
    priority = np.asarray(priority, dtype=float)
    tiebreak = np.random.default_rng(seed).permutation(len(priority))
    known = np.where(np.isnan(priority), -np.inf, priority)
    return np.lexsort((tiebreak, -known)).tolist()


def queue_order(mode: str, n_items: int, *, rewards: Sequence[Sequence[float]] | None = None,
                member_rewards: Sequence[np.ndarray] | None = None,
                rankings: Sequence[Sequence[Sequence[int]]] | None = None, seed: int = 0) -> list[int]:
    """The order to serve ``n_items`` prompts in under selection ``mode`` (see the module's docstring).

    ``uncertain`` needs ``member_rewards`` (an ensemble) or ``rewards`` (a single model); ``disagree``
    needs ``rankings`` (per prompt, the rankings given so far)."""
    if mode == "random":
        return selection_order(np.zeros(n_items), seed=seed)
    if mode == "uncertain":
        if member_rewards is not None:
            return selection_order(spread_uncertainty(member_rewards), seed=seed)
        if rewards is None:
            raise ValueError("--select uncertain needs a reward model: pass --model")
        return selection_order(margin_uncertainty(rewards), seed=seed)
    if mode == "disagree":
        return selection_order(disagreement(rankings or [[] for _ in range(n_items)]), seed=seed)
    raise ValueError(f"unknown selection {mode!r}; choose one of {', '.join(SELECTIONS)}")
