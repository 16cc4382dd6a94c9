"""Ensembles of reward models: K members of one kind, scored together, with their disagreement as uncertainty.

:class:`EnsembleRewardNet` keeps the contract (``forward(**items) -> (N, H)``, the
members' mean) and adds ``member_rewards(**items) -> (K, N, H)``. Members share one
processor (same kind, backbone and encoding; they differ in seed and, optionally, in a
bootstrap resample of the training data), so an item is encoded once for all.

The ``ensemble`` kind saves one folder: ``member-<k>/`` per member, each a complete
checkpoint of its own kind (a text member is a plain transformers folder), and a
``config.json`` naming the member kind and count. Scores: the mean; uncertainty: the
standard deviation over members; conservative rewards for over-optimisation: mean − λ·std
and the worst case (min over members).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from rewardlab.models.base import CONFIG_KEY, ModelKind, RewardNet, get_kind, read_metadata
from rewardlab.models.outcomes import OutcomeModel, outcome_from_metadata


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
        return self.member_rewards(**items).mean(0)

    @property
    def outcome(self) -> OutcomeModel:
        """Pairs are judged from the mean rewards with the first member's outcome model (its tie parameter)."""
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
        kind.save(member, processor, target, {**metadata, "kind": model.member_kind,
                                               "outcome": {"name": member.outcome.name,
                                                           **member.outcome.extra_metadata()}})
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
        members.append(member)
        processor = processor or member_processor
    return EnsembleRewardNet(members, meta["member_kind"]).to(device).eval(), processor, meta


ENSEMBLE_KIND = ModelKind(name="ensemble", processor=_not_trained_directly, build=_not_trained_directly, save=_save,
                          load=_load,
                          help="K members of one kind (train.ensemble_size): mean reward, member disagreement as "
                               "uncertainty, conservative rewards; one folder with a checkpoint per member.")
