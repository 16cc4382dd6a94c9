"""Outcome models: from a batch's reward matrix to each judged pair's P(i wins), P(j wins), P(tie).

Every :class:`~rewardlab.models.base.RewardNet` carries one (``model.outcome``). A
pair of the :class:`~rewardlab.contracts.batch.PairTable` compares rows ``i`` and ``j``;
the outcome model returns, per pair, the two scores the pairwise metrics read
(``chosen``, ``rejected``: their difference is the model's margin for ``i``) and the
log-probabilities of the three outcomes, in the order ``(i, j, tie)``:

- :class:`BradleyTerry` — P(i) = σ(r_i − r_j); no ties (P(tie) = 0).
- :class:`RaoKupper` — P(i) = σ(d − η), P(j) = σ(−d − η), the rest is a tie;
  η = log θ ≥ 0 is learned (Rao & Kupper 1967). η → 0 is Bradley–Terry.
- :class:`Davidson` — P(i) ∝ e^{d/2}, P(j) ∝ e^{−d/2}, P(tie) ∝ ν; ν ≥ 0 is learned
  (Davidson 1970). ν → 0 is Bradley–Terry.
- :class:`ThreeClass` — for pairwise models whose items are *ordered pairs* (a
  cross-encoder or an LLM judge reading prompt, A and B): each item's rewards are
  three logits (first wins, second wins, tie); ``i`` is the pair in one order and
  ``j`` the same pair swapped, and the two predictions are averaged, so the
  result cannot depend on position.

The tie parameters are ordinary parameters of the model (trained, saved, resumed
with it); :func:`outcome_to_metadata` / :func:`outcome_from_metadata` keep them in a
checkpoint's config as plain numbers.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from rewardlab.contracts.batch import Judged, PairTable

class OutcomeModel(nn.Module):
    """Base: reads each pair's scalar rewards on its own head; subclasses say how they become outcomes."""

    name = "bradley_terry"
    ties = False  # whether the model gives ties a probability

    def scores(self, rewards: torch.Tensor, pairs: PairTable) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, H) rewards -> the rewards of each pair's two items on the pair's head: (P,), (P,)."""
        return rewards[pairs.i, pairs.head], rewards[pairs.j, pairs.head]

    def outcome_log_probs(self, diff: torch.Tensor) -> torch.Tensor:
        """Margins d = r_i - r_j (P,) -> log P(i), log P(j), log P(tie): (P, 3)."""
        raise NotImplementedError

    def forward(self, rewards: torch.Tensor, pairs: PairTable) -> Judged:
        chosen, rejected = self.scores(rewards, pairs)
        return Judged(chosen, rejected, self.outcome_log_probs(chosen.float() - rejected.float()))

    def extra_metadata(self) -> dict:
        return {}


class BradleyTerry(OutcomeModel):
    """P(i) = σ(d): the plain pairwise model; a tie has probability 0."""

    def outcome_log_probs(self, diff: torch.Tensor) -> torch.Tensor:
        never = torch.full_like(diff, -math.inf)
        return torch.stack([F.logsigmoid(diff), F.logsigmoid(-diff), never], dim=-1)


class RaoKupper(OutcomeModel):
    """P(i) = σ(d − η), P(j) = σ(−d − η), P(tie) = 1 − P(i) − P(j), with η = softplus(raw) > 0.

    Example:
        >>> m = RaoKupper(eta=0.5)
        >>> p = m.outcome_log_probs(torch.tensor([0.0])).exp()
        >>> [round(x, 4) for x in p[0].tolist()]          # σ(-0.5), σ(-0.5), 1 - 2σ(-0.5)
        [0.3775, 0.3775, 0.2449]
    """

    name = "rao_kupper"
    ties = True

    def __init__(self, eta: float = 0.5):
        super().__init__()
        # softplus⁻¹(eta): η stays positive whatever the optimiser does
        self.raw_eta = nn.Parameter(torch.tensor(math.log(math.expm1(eta))))

    @property
    def eta(self) -> torch.Tensor:
        return F.softplus(self.raw_eta)

    def outcome_log_probs(self, diff: torch.Tensor) -> torch.Tensor:
        eta = self.eta.to(diff.dtype)
        log_i, log_j = F.logsigmoid(diff - eta), F.logsigmoid(-diff - eta)
        # P(tie) = 1 - σ(d-η) - σ(-d-η) = σ(η-d) - σ(-d-η): a difference of sigmoids, computed in log space
        log_tie = F.logsigmoid(eta - diff) + torch.log((-torch.expm1(
            F.logsigmoid(-diff - eta) - F.logsigmoid(eta - diff))).clamp_min(1e-30))
        return torch.stack([log_i, log_j, log_tie], dim=-1)

    def extra_metadata(self) -> dict:
        return {"eta": float(self.eta.detach())}


class Davidson(OutcomeModel):
    """Softmax over (d/2, −d/2, log ν): P(tie) = ν√(p_i p_j) / (p_i + p_j + ν√(p_i p_j)) with p = e^r.

    Example:
        >>> p = Davidson(nu=1.0).outcome_log_probs(torch.tensor([0.0])).exp()
        >>> [round(x, 4) for x in p[0].tolist()]          # equal rewards, ν = 1: a third each
        [0.3333, 0.3333, 0.3333]
    """

    name = "davidson"
    ties = True

    def __init__(self, nu: float = 0.5):
        super().__init__()
        self.log_nu = nn.Parameter(torch.tensor(math.log(nu)))

    def outcome_log_probs(self, diff: torch.Tensor) -> torch.Tensor:
        log_nu = self.log_nu.to(diff.dtype).expand_as(diff)
        return torch.stack([diff / 2, -diff / 2, log_nu], dim=-1).log_softmax(-1)

    def extra_metadata(self) -> dict:
        return {"nu": float(self.log_nu.detach().exp())}


class ThreeClass(OutcomeModel):
    """Ordered-pair items with three logits each; the prediction averages both orders.

    Item ``i`` holds (first = the pair's item i, second = item j) and item ``j`` the same
    two swapped, so P(i wins) = ½ (softmax(r_i)[first] + softmax(r_j)[second]), and
    likewise for j and for a tie. ``chosen`` / ``rejected`` are log P(i) and log P(j).
    The three logits are the pair's head's: columns ``head``, ``head + 1``, ``head + 2``.
    """

    name = "three_class"
    ties = True

    def forward(self, rewards: torch.Tensor, pairs: PairTable) -> Judged:
        if rewards.shape[-1] < 3:
            raise ValueError(f"outcome model three_class needs 3 logits per item, the model gives {rewards.shape[-1]}")
        columns = pairs.head[:, None] + torch.arange(3, device=rewards.device)  # (P, 3)
        as_first = rewards[pairs.i[:, None], columns].float().log_softmax(-1)  # (P, 3): (i wins, j wins, tie)
        as_second = rewards[pairs.j[:, None], columns].float().log_softmax(-1)[:, [1, 0, 2]]  # swapped back
        log_probs = torch.logaddexp(as_first, as_second) - math.log(2.0)
        consistent = as_first.argmax(-1) == as_second.argmax(-1)
        return Judged(log_probs[:, 0], log_probs[:, 1], log_probs, consistent)


OUTCOME_MODELS: dict[str, type[OutcomeModel]] = {
    "bradley_terry": BradleyTerry, "rao_kupper": RaoKupper, "davidson": Davidson, "three_class": ThreeClass,
}


def get_outcome_model(name: str, **kwargs: float) -> OutcomeModel:
    """A fresh outcome model by name; raises ``ValueError`` listing the valid names."""
    if name not in OUTCOME_MODELS:
        raise ValueError(f"unknown outcome model {name!r}; valid: {', '.join(OUTCOME_MODELS)}")
    return OUTCOME_MODELS[name](**kwargs)


def outcome_to_metadata(model: OutcomeModel) -> dict:
    """A JSON-able description of an outcome model (name and tie parameter)."""
    return {"name": model.name, **model.extra_metadata()}


def outcome_from_metadata(metadata: dict | None) -> OutcomeModel:
    """Rebuild the outcome model saved by :func:`outcome_to_metadata` (Bradley–Terry when absent)."""
    metadata = dict(metadata or {"name": "bradley_terry"})
    return get_outcome_model(metadata.pop("name"), **metadata)
