"""Disentangled rewards (after ODIN, Chen et al. 2024): a nuisance reward carries the length signal, the
quality reward is kept from following it.

:class:`DebiasedRewardNet` wraps any kind's model (its reward, the *quality* reward
r_q). Beside it sits a *nuisance* reward r_n = Σ_k a_k f_k, one weight per nuisance
feature f_k (log length; see :mod:`rewardlab.contracts.nuisance`), started at a
Bradley–Terry fit of the training pairs on the features alone
(:func:`fit_nuisance_weights`) and trained with the head. In training the pairwise loss
sees r = r_q + r_n, and :meth:`~DebiasedRewardNet.penalty` (added by the trainer with
``train.debias_weight``) asks the quality margins not to follow the feature gaps over
the batch's pairs (the squared slope of :func:`~rewardlab.losses.margin_feature_slope`).
What the preferences owe to length then goes to r_n. Out of training the model returns
r_q alone: evaluation, scoring, serving and the saved checkpoint (the kind's own folder, a
plain transformers model for text) use the quality reward only, and the checkpoint's
metadata says so.

Measured on a synthetic set where length and quality are independent
(``tests/test_debias.py``), against ODIN's own form and simpler ones:

- ODIN's nuisance head reads the same features as the quality head, and nothing but the
  penalties decides which head learns length: the quality head kept the length signal,
  and ODIN's correlation loss (gradient ∝ 1 / |margin|) swamped the preference loss near
  initialisation. A nuisance reward that reads the feature itself can carry nothing
  else, so orthogonal head weights are automatic.
- Without the penalty, even a nuisance reward fitted to the data leaves the quality
  reward a share of the length signal: a length-only fit underestimates length's effect
  among replies of equal quality (an omitted variable attenuates a logistic
  coefficient), and the quality reward takes the rest.
- Started at zero, a single weight moves ~lr per step and lags far behind the backbone,
  which learns length first; hence the fitted start.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from rewardlab.contracts.nuisance import feature_index
from rewardlab.data.collate import EncodedComparison
from rewardlab.data.sampling import length_outcome
from rewardlab.losses import margin_feature_slope
from rewardlab.models.base import RewardNet


def fit_nuisance_weights(data: Sequence[EncodedComparison], features: Sequence[str], *, steps: int = 50,
                         ridge: float = 1e-3, length_matched: bool = False) -> list[float]:
    """A Bradley–Terry model of the decided training pairs on the nuisance features alone: the weights ``a``
    maximising Σ w·log σ(a · (f_winner - f_loser)) (Newton's method, a small ridge), one per feature.

    ``length_matched``: fit it to the pairs as length-matched batches present them (comparisons the longer
    and the shorter reply won weigh the same in all), not as the data holds them; otherwise the nuisance
    reward would carry a length preference the model never sees, and the reward would learn the opposite.

    Example:
        >>> from rewardlab.contracts.schema import Pair
        >>> data = [EncodedComparison(("x", "y"), (1, 1), (Pair(0, 1),), k, nuisance=((2.0,), (1.0,)))
        ...         for k in range(3)] + [EncodedComparison(("x", "y"), (1, 1), (Pair(1, 0),), 3,
        ...                                                    nuisance=((2.0,), (1.0,)))]
        >>> round(fit_nuisance_weights(data, ["length"])[0], 2)  # longer wins 3 of 4: log 3
        1.1
    """
    columns = feature_index(features)
    outcomes = [length_outcome(c) for c in data]
    share = {o: outcomes.count(o) / len(outcomes) for o in (-1, 1)} if data else {}
    gaps, weights = [], []
    for comp, outcome in zip(data, outcomes):
        if not comp.nuisance:
            continue
        # length-matched batches draw both groups half as often as the two together are in the data
        scale = (share[-1] + share[1]) / 2 / share[outcome] if length_matched and outcome and min(share.values()) \
            else 1.0
        f = np.asarray(comp.nuisance, dtype=np.float64)[:, columns]  # (K, F)
        for p in comp.pairs:
            if not p.tie:
                gaps.append(f[p.winner] - f[p.loser])
                weights.append(p.weight * scale)
    a = np.zeros(len(columns))
    if not gaps:
        return a.tolist()
    g, w = np.asarray(gaps), np.asarray(weights)  # (P, F), (P,)
    for _ in range(steps):
        p = 1 / (1 + np.exp(-(g @ a)))  # σ(a·g): the probability of the observed winner
        grad = g.T @ (w * (1 - p)) - ridge * a
        hess = (g * (w * p * (1 - p))[:, None]).T @ g + ridge * np.eye(len(a))
        step = np.linalg.solve(hess, grad)
        a = a + step
        if np.abs(step).max() < 1e-8:
            break
    return a.tolist()


class DebiasedRewardNet(RewardNet):
    """A kind's model plus a nuisance reward. ``forward(nuisance (N, F_all) = None, **items) -> rewards (N, H)``:
    r_q + r_n in training (r_n added to every head), r_q otherwise."""

    reads_nuisance = True  # the collator passes the batch's nuisance features as the input ``nuisance``

    def __init__(self, base: RewardNet, features: Sequence[str], weights: Sequence[float] | None = None, *,
                 penalized: bool = True):
        super().__init__()
        self.penalized = penalized  # keep each training pass's quality rewards for penalty() (else no graph is held)
        self.base, self.features, self.columns = base, tuple(features), feature_index(features)
        self.heads = base.heads
        # (F,) -> (); a bias would cancel in every margin. Starts at the length-only fit, then trains with the head.
        self.nuisance_head = nn.Linear(len(self.features), 1, bias=False)
        with torch.no_grad():
            self.nuisance_head.weight.copy_(torch.tensor([list(weights or [0.0] * len(self.features))]))
        self._last: torch.Tensor | None = None  # the quality rewards (N, H) of the last training forward pass

    def forward(self, nuisance: torch.Tensor | None = None, **items: torch.Tensor) -> torch.Tensor:
        quality = self.base(**items)  # (N, H)
        if not self.training or nuisance is None:
            return quality
        if self.penalized:
            self._last = quality
        f = nuisance[:, self.columns].to(self.nuisance_head.weight.dtype)  # (N, F)
        return quality + self.nuisance_head(f).to(quality.dtype)  # (N, 1) broadcast over the heads

    def penalty(self, batch: dict) -> torch.Tensor | None:
        """How much the quality margins of the last training forward pass follow each feature's gaps."""
        quality, self._last = self._last, None
        if quality is None:
            return None
        pairs, nuisance = batch["pairs"], batch["nuisance"]
        return sum((margin_feature_slope(quality, pairs, nuisance[:, c]) for c in self.columns), quality.new_zeros(()))

    def nuisance_weights(self) -> dict[str, float]:
        """The nuisance reward per unit of each feature (per unit of log length for ``length``)."""
        return {name: float(w) for name, w in zip(self.features, self.nuisance_head.weight.detach()[0])}

    @property
    def outcome(self):
        return self.base.outcome

    def set_outcome(self, outcome) -> None:
        self.base.set_outcome(outcome)

    def head_index(self) -> dict[str | None, int]:
        return self.base.head_index()

    def head_layer(self) -> nn.Module:
        return self.base.head_layer()

    def parameter_groups(self) -> dict[str, list[tuple[str, nn.Parameter]]]:
        groups = {k: [(f"base.{n}", p) for n, p in v] for k, v in self.base.parameter_groups().items()}
        groups.setdefault("head", []).append(("nuisance_head.weight", self.nuisance_head.weight))
        return groups

    def unwrap(self, processor: object, folder: Path) -> tuple[RewardNet, object, dict]:
        """What the kind saves (the quality model only) and the metadata that says so; nothing is rebuilt on load."""
        return self.base, processor, {"debias": {
            "features": list(self.features), "nuisance_weights": self.nuisance_weights(),
            "scores": "quality reward only; the nuisance reward (a weight per feature) is dropped at save"}}
