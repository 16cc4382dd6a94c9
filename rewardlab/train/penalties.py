"""Extra training-loss terms beside the pairwise loss, chosen by the config: a registry the trainer sums.

Each penalty maps one training batch's ``(rewards (N, H), batch, model)`` to a scalar
(or None: nothing to add). The trainer adds ``weight * penalty`` for every entry,
scaled by the batch's share of its optimiser step's pair weight (so gradient
accumulation does not multiply it), in training only; evaluation losses are the
pairwise loss alone.

- ``center_rewards``: mean squared reward, keeping rewards near 0.
- ``length_penalty``: the squared slope of reward margins on log-length gaps over the
  batch's pairs (a length-regularised loss).
- ``debias``: the model's own penalty (the disentangled reward's slope term, see
  :mod:`rewardlab.models.debias`), with ``debias_weight`` > 0.
"""

from __future__ import annotations

from typing import Callable

import torch

from rewardlab.config import TrainConfig
from rewardlab.contracts.nuisance import LENGTH_COLUMN
from rewardlab.losses import margin_feature_slope, reward_centering_penalty
from rewardlab.models.base import RewardNet

Penalty = Callable[[torch.Tensor, dict, RewardNet], "torch.Tensor | None"]


def _center(rewards: torch.Tensor, batch: dict, model: RewardNet) -> torch.Tensor:
    return reward_centering_penalty(rewards[:, -1])


def _length(rewards: torch.Tensor, batch: dict, model: RewardNet) -> torch.Tensor:
    return margin_feature_slope(rewards, batch["pairs"], batch["nuisance"][:, LENGTH_COLUMN])


def _model_penalty(rewards: torch.Tensor, batch: dict, model: RewardNet) -> torch.Tensor | None:
    return model.penalty(batch)


def build_penalties(cfg: TrainConfig) -> dict[str, tuple[float, Penalty]]:
    """The penalties ``cfg`` turns on: {name: (weight, penalty)}.

    Example:
        >>> sorted(build_penalties(TrainConfig(center_rewards=0.01, length_penalty=1.0)))
        ['center_rewards', 'length_penalty']
    """
    out: dict[str, tuple[float, Penalty]] = {}
    if cfg.center_rewards > 0:
        out["center_rewards"] = (cfg.center_rewards, _center)
    if cfg.length_penalty > 0:
        out["length_penalty"] = (cfg.length_penalty, _length)
    if cfg.debias and cfg.debias_weight > 0:
        out["debias"] = (cfg.debias_weight, _model_penalty)
    return out
