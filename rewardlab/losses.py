"""Pairwise reward losses: pure functions of gathered pair rewards, kept in a registry.

Every loss takes the rewards of the preferred (``chosen``) and the other
(``rejected``) item of P judgements, each read on the judgement's own head, plus
the batch's :class:`~rewardlab.data.collate.PairTable` (margin, tie, labeler, ...),
and returns the P per-pair terms. :func:`weighted_mean` reduces them with the
pairs' weights. Names are looked up with :func:`get_loss`; an unknown name raises.

Example:
    >>> import torch
    >>> from rewardlab.data.collate import PairTable
    >>> chosen, rejected = torch.tensor([2.0, 0.0]), torch.tensor([0.0, 0.0])
    >>> round(bradley_terry(chosen, rejected, PairTable.of(2)).mean().item(), 4)  # (-log σ(2) - log σ(0)) / 2
    0.41
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from rewardlab.data.collate import PairTable

LossFn = Callable[..., torch.Tensor]


def bradley_terry(chosen: torch.Tensor, rejected: torch.Tensor, pairs: PairTable, **_: float) -> torch.Tensor:
    """-log σ(r_c - r_r) per pair. Shapes: (P,), (P,) -> (P,)."""
    return -F.logsigmoid(chosen - rejected)


def bt_margin(chosen: torch.Tensor, rejected: torch.Tensor, pairs: PairTable, *, margin_scale: float = 1.0,
              **_: float) -> torch.Tensor:
    """-log σ(r_c - r_r - s·m): the preferred response must win by the rating gap m (Llama-2 style)."""
    return -F.logsigmoid(chosen - rejected - margin_scale * pairs.margin)


def label_smoothing(chosen: torch.Tensor, rejected: torch.Tensor, pairs: PairTable, *,
                    label_smoothing: float = 0.1, **_: float) -> torch.Tensor:
    """BT against a soft target: -(1-ε) log σ(d) - ε log σ(-d), for noisy labels."""
    diff = chosen - rejected
    return -(1.0 - label_smoothing) * F.logsigmoid(diff) - label_smoothing * F.logsigmoid(-diff)


def focal(chosen: torch.Tensor, rejected: torch.Tensor, pairs: PairTable, *, focal_gamma: float = 2.0,
          **_: float) -> torch.Tensor:
    """-(1-p)^γ log p with p = σ(r_c - r_r): down-weights pairs the model already gets right."""
    log_p = F.logsigmoid(chosen - rejected)
    return -((1.0 - log_p.exp()) ** focal_gamma) * log_p


def weighted_mean(per_pair: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Σ w·ℓ / Σ w over the pairs: (P,), (P,) -> ()."""
    return (per_pair * weight).sum() / weight.sum().clamp_min(1e-12)


def reward_centering_penalty(rewards: torch.Tensor) -> torch.Tensor:
    """Mean squared reward (N,) -> (); added with a small weight it keeps rewards near 0 (Eisenstein et al.)."""
    return rewards.pow(2).mean()


LOSSES: dict[str, LossFn] = {
    "bradley_terry": bradley_terry,
    "bt_margin": bt_margin,
    "label_smoothing": label_smoothing,
    "focal": focal,
}


def get_loss(name: str) -> LossFn:
    """The loss registered under ``name``; raises ``ValueError`` listing valid names."""
    try:
        return LOSSES[name]
    except KeyError:
        raise ValueError(f"unknown loss {name!r}; valid losses: {', '.join(sorted(LOSSES))}") from None
