"""Pairwise reward losses: pure functions of reward tensors, kept in a registry.

Every loss takes the rewards of the preferred and the dispreferred response of P
pairs and the per-pair margin (a rating gap, 0 where there is none) and returns
a scalar. Names are looked up with :func:`get_loss`; an unknown name raises.

Example:
    >>> import torch
    >>> chosen, rejected = torch.tensor([2.0, 0.0]), torch.tensor([0.0, 0.0])
    >>> round(bradley_terry(chosen, rejected, torch.zeros(2)).item(), 4)
    0.4103
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

LossFn = Callable[..., torch.Tensor]


def bradley_terry(chosen: torch.Tensor, rejected: torch.Tensor, margin: torch.Tensor, **_: float) -> torch.Tensor:
    """-log σ(r_c - r_r), averaged over pairs. Shapes: (P,), (P,), (P,) -> ()."""
    return -F.logsigmoid(chosen - rejected).mean()


def bt_margin(
    chosen: torch.Tensor, rejected: torch.Tensor, margin: torch.Tensor, *, margin_scale: float = 1.0, **_: float
) -> torch.Tensor:
    """-log σ(r_c - r_r - s·m): the preferred response must win by the rating gap m (Llama-2 style)."""
    return -F.logsigmoid(chosen - rejected - margin_scale * margin).mean()


def label_smoothing(
    chosen: torch.Tensor, rejected: torch.Tensor, margin: torch.Tensor, *, label_smoothing: float = 0.1, **_: float
) -> torch.Tensor:
    """BT against a soft target: -(1-ε) log σ(d) - ε log σ(-d), for noisy labels."""
    diff = chosen - rejected
    return (-(1.0 - label_smoothing) * F.logsigmoid(diff) - label_smoothing * F.logsigmoid(-diff)).mean()


def focal(
    chosen: torch.Tensor, rejected: torch.Tensor, margin: torch.Tensor, *, focal_gamma: float = 2.0, **_: float
) -> torch.Tensor:
    """-(1-p)^γ log p with p = σ(r_c - r_r): down-weights pairs the model already gets right."""
    log_p = F.logsigmoid(chosen - rejected)
    return (-((1.0 - log_p.exp()) ** focal_gamma) * log_p).mean()


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
