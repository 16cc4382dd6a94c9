"""Ensembles of reward models: K members of one kind, scored together, with their disagreement as uncertainty.

Two forms share one interface (``forward`` → the members' mean (N, H); ``member_rewards`` →
(K, N, H); ``members``; ``member_kind``), which scoring, evaluation and the server read:

- :class:`EnsembleRewardNet`: K separate models (the ``ensemble`` kind, one folder per member);
- :class:`HeadEnsembleRewardNet`: K heads of one model over a shared backbone
  (``train.ensemble_shared_backbone``): a plain multi-head checkpoint of the member kind whose
  heads ``member-00`` … are the members and whose aggregate column is their mean, marked
  ``ensemble_heads: K`` in its metadata; one forward pass scores every member. Pairwise
  members are groups of three logits (A / B / tie), aggregated as separate members are: the
  log of their mean probabilities.

:class:`EnsembleRewardNet` keeps the contract (``forward(**items) -> (N, H)``, the
members' mean) and adds ``member_rewards(**items) -> (K, N, H)``. Members share one
processor (same kind, backbone and encoding; they differ in seed and, optionally, in a
bootstrap resample of the training data), so an item is encoded once for all.

The ``ensemble`` kind saves one folder: ``member-<k>/`` per member, each a complete
checkpoint of its own kind (a text member is a plain transformers folder), and a
``config.json`` naming the member kind and count. Scores: the mean; uncertainty: the
standard deviation over members; conservative rewards for over-optimisation: mean − λ·std
and the worst case (min over members). Members of a pairwise kind (3-class logits per ordered
pair) are averaged in probability: the ensemble's logits are log of the members' mean
A / B / tie probabilities.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from rewardlab.contracts.schema import Comparison
from rewardlab.models.base import (AGGREGATE, CONFIG_KEY, ModelKind, RewardNet, get_kind, read_metadata, rewrap,
                                   unwrap_for_saving)
from rewardlab.models.outcomes import OutcomeModel, outcome_from_metadata


def mean_probability(logits: torch.Tensor, dim: int) -> torch.Tensor:
    """Three-logit (A / B / tie) members stacked along ``dim``: the log of their mean probabilities."""
    return logits.float().log_softmax(-1).logsumexp(dim) - math.log(logits.shape[dim])


class EnsembleRewardNet(RewardNet):
    """K member models of one kind. ``forward`` → the mean rewards (N, H); ``member_rewards`` → (K, N, H)."""

    def __init__(self, members: Sequence[RewardNet], member_kind: str):
        super().__init__()
        if len(members) < 2:
            raise ValueError(f"an ensemble needs at least 2 members, got {len(members)}")
        heads = {tuple(m.heads) for m in members}
        if len(heads) != 1:
            raise ValueError(f"ensemble members must share their heads; got {sorted(heads)}")
        self.members = nn.ModuleList(members)
        self.member_kind = member_kind
        self.heads = members[0].heads

    def member_rewards(self, **items: torch.Tensor) -> torch.Tensor:
        return torch.stack([m(**items).float() for m in self.members])  # (K, N, H)

    def forward(self, **items: torch.Tensor) -> torch.Tensor:
        members = self.member_rewards(**items)  # (K, N, H)
        if self.outcome.name == "three_class":  # pairwise members: the mean of their probabilities, as logits
            return mean_probability(members, 0)
        return members.mean(0)

    @property
    def outcome(self) -> OutcomeModel:
        """Pairs are judged from the mean rewards with the first member's outcome model (its tie parameter);
        for 3-class members, from the mean of their outcome probabilities."""
        return self.members[0].outcome

    def head_index(self) -> dict[str | None, int]:
        return self.members[0].head_index()


def member_name(k: int) -> str:
    return f"member-{k}"


def _not_trained_directly(*_) -> None:
    raise ValueError("an ensemble is trained member by member: set train.ensemble_size=K (K >= 2) with the members' "
                     "model.kind, not model.kind=ensemble")


def _save(model: EnsembleRewardNet, processor, folder: Path, metadata: dict) -> None:
    kind = get_kind(model.member_kind)
    for k, member in enumerate(model.members):
        target = folder / member_name(k)
        target.mkdir()
        meta = {**metadata, "kind": model.member_kind,
                "outcome": {"name": member.outcome.name, **member.outcome.extra_metadata()}}
        kind.save(*unwrap_for_saving(member, processor, target, meta), target, meta)
    meta = {**metadata, "kind": "ensemble", "member_kind": model.member_kind, "members": len(model.members)}
    meta.pop("outcome", None)  # each member keeps its own
    (folder / "config.json").write_text(json.dumps({CONFIG_KEY: meta}, indent=2))


def _load(path: str, device: torch.device, dtype: torch.dtype | None):
    meta = read_metadata(path)
    kind = get_kind(meta["member_kind"])
    members, processor = [], None
    for k in range(int(meta["members"])):
        folder = str(Path(path) / member_name(k))
        member, member_processor, member_meta = kind.load(folder, device, dtype)
        if "outcome" in member_meta:
            member.set_outcome(outcome_from_metadata(member_meta["outcome"]).to(device))
        # personalised members share one labeler table, so one processor serves all
        member, member_processor, member_meta = rewrap(member, member_processor, folder, member_meta)
        members.append(member)
        processor = processor or member_processor
    return EnsembleRewardNet(members, meta["member_kind"]).to(device).eval(), processor, meta


ENSEMBLE_KIND = ModelKind(name="ensemble", processor=_not_trained_directly, build=_not_trained_directly, save=_save,
                          load=_load, loads_wrappers=True,
                          help="K members of one kind (train.ensemble_size): mean reward, member disagreement as "
                               "uncertainty, conservative rewards; one folder with a checkpoint per member.")


def member_head(k: int) -> str:
    """The head name of member ``k`` in a shared-backbone ensemble."""
    return f"member-{k:02d}"


def is_member_head(name: str | None) -> bool:
    return name is not None and re.fullmatch(r"member-\d{2,}", name) is not None


def member_pairs(comparisons: list[Comparison], k_members: int, *, bootstrap: bool, seed: int) -> list[Comparison]:
    """Each judgement once per member head; with ``bootstrap`` each copy weighs Poisson(1) (zero: left out),
    drawn from (seed, comparison position), so a rerun draws the same."""
    out = []
    for position, c in enumerate(comparisons):
        rng = np.random.default_rng([seed, position])
        pairs = []
        for p in c.pairs:
            if p.attribute is not None:
                raise ValueError(f"{c.source}: train.ensemble_shared_backbone makes one head per member, but this "
                                 f"judgement is about attribute {p.attribute!r}; multi-attribute ensembles need "
                                 "separate members (train.ensemble_shared_backbone=false)")
            draws = rng.poisson(1.0, k_members) if bootstrap else np.ones(k_members, dtype=int)
            pairs += [p._replace(attribute=member_head(k), weight=p.weight * float(w))
                      for k, w in enumerate(draws) if w > 0]
        if pairs:
            out.append(dataclasses.replace(c, pairs=tuple(pairs)))
    return out


class _MemberColumn(RewardNet):
    """One member of a :class:`HeadEnsembleRewardNet`: its head's columns of the shared model, (N, W)."""

    def __init__(self, base: RewardNet, column: int, heads: tuple[str, ...]):
        super().__init__()
        self.base, self.column, self.heads, self.head_width = base, column, heads, base.head_width

    def forward(self, **items: torch.Tensor) -> torch.Tensor:
        return self.base(**items)[:, self.column: self.column + self.head_width]

    @property
    def outcome(self) -> OutcomeModel:
        return self.base.outcome


class HeadEnsembleRewardNet(RewardNet):
    """K members as K heads of one model. ``forward`` → their aggregate, (N, W): the mean reward (W = 1), or
    for three-logit (pairwise) heads the log of their mean A / B / tie probabilities (W = 3);
    ``member_rewards`` → (K, N, W) from the same forward pass."""

    def __init__(self, base: RewardNet, k_members: int, member_kind: str):
        super().__init__()
        index = base.head_index()
        missing = [member_head(k) for k in range(k_members) if member_head(k) not in index]
        if missing:
            raise ValueError(f"a {k_members}-head ensemble needs heads {member_head(0)} ... "
                             f"{member_head(k_members - 1)}; the model has {', '.join(base.heads)}")
        self.base, self.member_kind = base, member_kind
        self.head_width = base.head_width
        self.heads = tuple(base.heads[-self.head_width:]) if self.head_width > 1 else ("reward",)
        self.columns = [index[member_head(k)] for k in range(k_members)]
        # A plain tuple: the views are not submodules (their weights are the base's).
        self.members = tuple(_MemberColumn(base, c, self.heads) for c in self.columns)

    def member_rewards(self, **items: torch.Tensor) -> torch.Tensor:
        out, w = self.base(**items), self.head_width
        return torch.stack([out[:, c: c + w] for c in self.columns])  # (K, N, W)

    def forward(self, **items: torch.Tensor) -> torch.Tensor:
        return self.base(**items)[:, -self.head_width:]  # the aggregate

    @property
    def outcome(self) -> OutcomeModel:
        return self.base.outcome


def load_head_ensemble(model: RewardNet, processor, path: str | Path, metadata: dict
                       ) -> tuple[HeadEnsembleRewardNet, object, dict]:
    """The loader of shared-backbone ensembles (metadata ``ensemble_heads``: K; see rewardlab.models.base.WRAPPERS):
    the member heads, scored as an ensemble."""
    ensemble = HeadEnsembleRewardNet(model, int(metadata["ensemble_heads"]), metadata.get("kind", "text"))
    if "head_stats" in metadata and ensemble.head_width == 1:  # its one reported head is the base's aggregate
        metadata = {**metadata, "head_stats": {"reward": metadata["head_stats"][AGGREGATE]}}
    return ensemble, processor, metadata
