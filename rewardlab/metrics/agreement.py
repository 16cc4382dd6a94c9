"""Agreement between people who ranked the same responses: pure functions of rank lists (1 = best).

- :func:`kendall_tau`: Kendall's τ-b between two rankings of one prompt's responses (ties allowed).
- :func:`krippendorff_alpha_ordinal`: Krippendorff's α with the ordinal metric over units rated by several
  coders (any number per unit, missing ratings allowed).
- :func:`rank_agreement`: both, over every prompt at least two labelers ranked: τ averaged over prompts for
  each pair of labelers, then over the pairs; α with each (prompt, response) a unit and its ranks the values.
- :func:`pair_agreement`: how many response pairs one ranking orders as another does.

Undefined values (no prompt ranked twice; a ranking that ties every response) are None, never NaN.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence

import numpy as np
from scipy import stats


def kendall_tau(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Kendall's τ-b of two rankings of the same responses; None where one ties every response.

    >>> round(kendall_tau([1, 2, 3], [1, 3, 2]), 4)  # 2 of 3 pairs concordant: (2 - 1) / 3
    0.3333
    """
    if len(a) != len(b) or len(a) < 2:
        raise ValueError(f"kendall_tau needs two rankings of the same >= 2 responses, got {len(a)} and {len(b)}")
    if len(set(a)) < 2 or len(set(b)) < 2:
        return None
    return float(stats.kendalltau(a, b).statistic)


def krippendorff_alpha_ordinal(units: Sequence[Sequence[float]]) -> float | None:
    """Krippendorff's α (ordinal metric) for ``units``: the values the coders gave each unit (missing left out).

    α = 1 − (n − 1) Σ o_ck δ²_ck / Σ n_c n_k δ²_ck, from the coincidence matrix o of values paired within a unit
    (each pair weighted 1 / (m_u − 1)), n_c its margins, and δ_ck = Σ_{g=c..k} n_g − (n_c + n_k) / 2.
    Units with fewer than two values are not pairable and count for nothing. None when fewer than two values
    are pairable or every pairable value is the same.

    >>> krippendorff_alpha_ordinal([[1, 1], [2, 2], [1, 2]])  # o_11 = o_22 = 2, o_12 = o_21 = 1: α = 1 − 5·18/162
    0.4444444444444444
    """
    pairable = [list(u) for u in units if len(u) >= 2]
    values = sorted({v for u in pairable for v in u})
    if len(values) < 2:
        return None
    at = {v: i for i, v in enumerate(values)}
    o = np.zeros((len(values), len(values)))
    for u in pairable:
        for i, j in itertools.permutations(range(len(u)), 2):
            o[at[u[i]], at[u[j]]] += 1.0 / (len(u) - 1)
    n_c = o.sum(axis=1)
    n = n_c.sum()
    cum = np.concatenate([[0.0], np.cumsum(n_c)])
    lo, hi = np.minimum.outer(np.arange(len(values)), np.arange(len(values))), \
        np.maximum.outer(np.arange(len(values)), np.arange(len(values)))
    delta2 = (cum[hi + 1] - cum[lo] - (n_c[:, None] + n_c[None, :]) / 2) ** 2
    expected = float((np.outer(n_c, n_c) * delta2).sum())
    return float(1.0 - (n - 1) * float((o * delta2).sum()) / expected)


def pair_agreement(ranks: Sequence[float], reference: Sequence[float]) -> tuple[int, int]:
    """``(agreeing, compared)`` over the response pairs ``reference`` does not tie: pairs ``ranks`` orders the
    same way (a tie in ``ranks`` is not agreement)."""
    agree = total = 0
    for i, j in itertools.combinations(range(len(reference)), 2):
        if reference[i] != reference[j]:
            total += 1
            agree += (ranks[i] - ranks[j]) * (reference[i] - reference[j]) > 0
    return agree, total


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def rank_agreement(rankings: Mapping[object, Mapping[str, Sequence[float]]]) -> dict:
    """Agreement between labelers over ``{item: {labeler: ranks}}`` (prompts ranked by one labeler ignored).

    Returns ``{"items", "labelers", "tau", "alpha", "by_pair"}``: the prompts ranked by two or more labelers,
    the labelers among them, τ-b averaged per labeler pair then over the pairs, ordinal α over
    (prompt, response) units, and per pair ``{"labelers": [a, b], "items", "tau"}``."""
    shared = {item: by for item, by in rankings.items() if len(by) >= 2}
    per_pair: dict[tuple[str, str], list[float]] = {}
    counted: dict[tuple[str, str], int] = {}
    units: list[list[float]] = []
    for by in shared.values():
        for a, b in itertools.combinations(sorted(by), 2):
            counted[(a, b)] = counted.get((a, b), 0) + 1
            tau = kendall_tau(by[a], by[b])
            if tau is not None and not math.isnan(tau):
                per_pair.setdefault((a, b), []).append(tau)
        k = len(next(iter(by.values())))
        units.extend([ranks[j] for ranks in by.values()] for j in range(k))
    by_pair = [{"labelers": list(pair), "items": n, "tau": _mean(per_pair.get(pair, []))}
               for pair, n in sorted(counted.items())]
    return {"items": len(shared), "labelers": len({name for by in shared.values() for name in by}),
            "tau": _mean([p["tau"] for p in by_pair if p["tau"] is not None]),
            "alpha": krippendorff_alpha_ordinal(units), "by_pair": by_pair}
