"""Few-shot onboarding of a new labeler into a personalised reward model (``rewardlab adapt``).

The new labeler gets one new row in the model's user table (a user vector, a low-rank
mix, or a ``<user:ID>`` token embedding) and only that row is trained, on the
labeler's k judgements, full batch, in a few seconds. Every other parameter is
untouched, so every other labeler's scores stay bit-for-bit the same: the other rows
get no gradient, and Adam without weight decay moves a parameter with zero gradient
by exactly nothing.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from rewardlab.config import DataConfig
from rewardlab.data.collate import PreferenceCollator, encode_comparisons
from rewardlab.data.load import load_comparisons
from rewardlab.losses import build_pair_loss, weighted_mean
from rewardlab.models.base import read_metadata, save_model
from rewardlab.models.ensemble import EnsembleRewardNet, HeadEnsembleRewardNet, member_pairs
from rewardlab.models.personal import add_labeler_tokens, personalize
from rewardlab.scoring import RewardModel


@dataclass
class AdaptResult:
    model_dir: Path
    labeler: str
    pairs: int
    seconds: float
    accuracy_before: float  # on the labeler's own judgements: the population reward
    accuracy_after: float  # the new labeler's reward
    loss: float


def _grow_row(table: nn.Parameter) -> tuple[nn.Parameter, int]:
    """The table with one zero row appended (the population's starting point); (new table, row index)."""
    grown = nn.Parameter(torch.cat([table.detach(), torch.zeros_like(table[:1])]))
    return grown, table.shape[0]


def _only_row(param: nn.Parameter, row: int) -> None:
    """Train row ``row`` of ``param`` alone: every other row's gradient is zeroed."""
    mask = torch.zeros_like(param)
    mask[row] = 1.0
    param.requires_grad_(True)
    param.register_hook(lambda grad: grad * mask)


def _accuracy(comparisons, judged) -> float:
    """Share of the decided (non-tie) pairs whose winner the model scores higher."""
    right = total = 0
    for c, j in zip(comparisons, judged):
        for p, chosen, rejected in zip(c.pairs, j.chosen, j.rejected):
            if not p.tie:
                right, total = right + int(chosen > rejected), total + 1
    return right / max(total, 1)


def _grow(net: nn.Module, mode: str, processor, token: int | None, labeler: str, pairs: int,
          what: str) -> list[nn.Parameter]:
    """Give ``net`` (a personalised model) a row for ``labeler``; returns the parameters to train (that row only)."""
    if mode == "tokens":
        if not hasattr(net.base, "hf_model"):
            raise ValueError(f"adapt with labeler tokens supports text models; {what} is not one (use "
                             "personalization=embedding or lowrank there)")
        hf = net.base.hf_model
        embeddings = hf.get_input_embeddings()
        if token >= embeddings.weight.shape[0]:
            hf.resize_token_embeddings(token + 1)
            embeddings = hf.get_input_embeddings()
            with torch.no_grad():  # start from the mean of the known labelers' tokens
                embeddings.weight[token] = embeddings.weight[processor.token_ids].mean(0)
        _only_row(embeddings.weight, token)
        trained = [embeddings.weight]
    else:
        name = "user_vectors" if mode == "embedding" else "mix"
        grown, row = _grow_row(getattr(net, name))
        setattr(net, name, grown)
        _only_row(grown, row)
        trained = [grown]
    net.labelers.append(labeler)
    net.train_pairs[labeler] = pairs
    return trained


def _fit(net: nn.Module, trained: list[nn.Parameter], items: dict, pairs, steps: int, lr: float) -> float:
    """Full-batch Adam on the new row alone; returns the last loss."""
    loss_fn = build_pair_loss(net.outcome.name if net.outcome.ties else "bradley_terry")
    net.eval()  # no dropout: a few judgements, fitted deterministically
    optimizer = torch.optim.Adam(trained, lr=lr, weight_decay=0.0)
    loss = torch.tensor(float("nan"))
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        loss = weighted_mean(loss_fn(net.outcome(net(**items), pairs), pairs), pairs.weight)
        loss.backward()
        optimizer.step()
    net.requires_grad_(False)
    return float(loss.detach())


def adapt(model_dir: str, data: str, labeler: str, out: str | Path | None = None, *,
          data_cfg: DataConfig | None = None, steps: int = 100, lr: float = 0.05,
          device: str | None = None) -> AdaptResult:
    """Add ``labeler`` to the personalised model at ``model_dir`` from their judgements in ``data``.

    An ensemble gets the labeler in every member: separate members each fit their own new row; K member heads
    over one backbone share one, fitted on every head's judgement of the pairs. Writes the model with the new
    labeler to ``out`` (default: ``model_dir`` itself, replaced atomically). Rows of ``data`` may leave
    ``labeler`` empty; a row naming another labeler is an error.
    """
    start = time.perf_counter()
    rm = RewardModel.from_pretrained(model_dir, device=device or "cpu")
    meta = rm.metadata.get("personalization")
    if meta is None:
        raise ValueError(f"{model_dir} is not a personalised model (train with model.personalization=tokens, "
                         "embedding or lowrank)")
    if not isinstance(labeler, str) or not labeler.strip():
        raise ValueError(f"--labeler must be a non-empty id, got {labeler!r}")
    if labeler in rm.labelers:
        raise ValueError(f"labeler {labeler!r} is already in {model_dir}; onboarding adds new labelers only")
    comparisons, _ = load_comparisons(data, data_cfg or DataConfig(), render_chat=rm.processor.render_chat)
    others = sorted({c.labeler for c in comparisons} - {None, labeler})
    if others:
        raise ValueError(f"{data}: rows judged by {others[0]!r}; adapt reads one labeler's judgements ({labeler!r})")
    if not comparisons:
        raise ValueError(f"{data}: no judgements to learn {labeler!r} from")

    if rm.kind.prepare is not None:
        raise ValueError(f"adapt does not support model.kind={rm.kind.name} yet")
    comparisons = [dataclasses.replace(c, labeler=labeler) for c in comparisons]
    before = _accuracy(comparisons, rm.judge(comparisons))  # the population reward: the labeler is not known yet

    # The personalised models to grow: the model, each separate member, or the one model under K member heads.
    heads = isinstance(rm.model, HeadEnsembleRewardNet)
    nets = list(rm.model.members) if isinstance(rm.model, EnsembleRewardNet) else \
        [rm.model.base if heads else rm.model]
    token = add_labeler_tokens(rm.processor.tokenizer, [labeler])[0] if meta["mode"] == "tokens" else None
    count = sum(len(c.pairs) for c in comparisons)
    trained = []
    for net in nets:
        net.requires_grad_(False)
        trained.append(_grow(net, meta["mode"], rm.processor, token, labeler, count, model_dir))
    if token is not None:
        rm.processor.token_ids.append(token)
    judged = member_pairs(comparisons, len(rm.model.members), bootstrap=False, seed=0) if heads else comparisons
    encoded, _ = encode_comparisons([personalize(c, nets[0].labeler_index()) for c in judged], rm.processor)
    batch = PreferenceCollator(rm.processor, nets[0].head_index())(encoded)
    items = {k: v.to(rm.device) for k, v in batch["items"].items()}
    pairs = batch["pairs"].to(rm.device)
    losses = [_fit(net, params, items, pairs, steps, lr) for net, params in zip(nets, trained)]
    after = _accuracy(comparisons, rm.judge(comparisons))

    target = Path(out) if out is not None else Path(model_dir)
    saved = read_metadata(model_dir)  # as saved: loading presents a member-head ensemble as one reward
    keep = {k: v for k, v in saved.items() if k not in ("kind", "heads", "outcome", "personalization")}
    if isinstance(rm.model, EnsembleRewardNet):  # its own record of the labeler table the members share
        keep["personalization"] = {**meta, "labelers": list(nets[0].labelers), "train_pairs": {
            **meta.get("train_pairs", {}), labeler: count}}
    config = Path(model_dir) / "rewardlab.yaml"
    save_model(nets[0] if heads else rm.model, rm.processor, target, keep,
               kind="ensemble" if isinstance(rm.model, EnsembleRewardNet) else rm.kind.name,
               extra_files={"rewardlab.yaml": config.read_text()} if config.is_file() else None)
    return AdaptResult(model_dir=target, labeler=labeler, pairs=len(pairs), seconds=time.perf_counter() - start,
                       accuracy_before=before, accuracy_after=after, loss=float(np.mean(losses)))
