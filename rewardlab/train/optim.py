"""AdamW with separate backbone / head learning rates, and warm-up + decay schedules."""

from __future__ import annotations

import re

import torch
from transformers import get_constant_schedule_with_warmup, get_cosine_schedule_with_warmup, \
    get_linear_schedule_with_warmup

from rewardlab.config import TrainConfig

_NO_DECAY = ("bias", "LayerNorm.weight", "layer_norm.weight", "norm.weight")
_BLOCK = re.compile(r"\.(?:layer|layers|h|blocks|block)\.(\d+)\.")  # BERT, Llama, GPT-2, ViT/CLIP, T5 blocks


def layer_scales(names: list[str], decay: float) -> list[float]:
    """Each backbone parameter's share of ``lr_backbone`` under layer-wise decay: ``decay ** d``, ``d`` the
    number of blocks above it (0 in the top block, the block count for embeddings); parameters outside the
    numbered blocks and the embeddings (a pooler, a final norm) keep the full rate. Several block stacks (the
    towers of a dual encoder) each count from their own top.

    Example:
        >>> layer_scales(["bert.embeddings.word_embeddings.weight", "bert.encoder.layer.0.output.dense.weight",
        ...               "bert.encoder.layer.1.output.dense.weight", "bert.pooler.dense.weight"], 0.5)
        [0.25, 0.5, 1.0, 1.0]
    """
    blocks = [_BLOCK.search(n) for n in names]
    stacks = [n[:m.start()] if m else None for n, m in zip(names, blocks)]
    top: dict[str, int] = {}
    for stack, m in zip(stacks, blocks):
        if m:
            top[stack] = max(top.get(stack, 0), int(m.group(1)))
    deepest = max(top.values(), default=-1) + 1
    return [decay ** (top[stack] - int(m.group(1))) if m else decay ** deepest if "embed" in n else 1.0
            for n, m, stack in zip(names, blocks, stacks)]


def build_optimizer(named_groups: dict[str, list[tuple[str, torch.nn.Parameter]]], cfg: TrainConfig,
                    ) -> torch.optim.AdamW:
    """AdamW over named parameter groups ``{"backbone": [...], "head": [...]}``.

    Each group gets its own learning rate (``lr_backbone`` / ``lr_head``, by default 10 x ``lr_backbone``, and
    ``lr_fusion`` for a multimodal model's ``fusion`` group, ``lr_outcome`` for a tie-aware outcome model's parameter);
    biases, norm weights and the tie parameter get no weight decay. With ``layer_decay`` < 1 the
    backbone's blocks train at rates decaying from its top down (``layer_scales``).
    """
    lrs = {"backbone": cfg.lr_backbone, "head": cfg.head_lr, "fusion": cfg.lr_fusion, "outcome": cfg.lr_outcome}
    # The outcome model's tie parameter (Rao-Kupper's eta, Davidson's nu) is one scalar the whole data set informs:
    # its own learning rate, and no weight decay pulling it toward an arbitrary value.
    outcome = [(n, p) for ps in named_groups.values() for n, p in ps if "outcome_model." in n]
    named_groups = {g: [(n, p) for n, p in ps if "outcome_model." not in n] for g, ps in named_groups.items()}
    if outcome:
        named_groups["outcome"] = outcome
    groups = []
    for group, params in named_groups.items():
        decay = [p for n, p in params if not n.endswith(_NO_DECAY) and group != "outcome"]
        no_decay = [p for n, p in params if n.endswith(_NO_DECAY) or group == "outcome"]
        scales = dict(zip((id(p) for _, p in params), layer_scales([n for n, _ in params], cfg.layer_decay)
                          if group == "backbone" and cfg.layer_decay < 1.0 else [1.0] * len(params)))
        for ps, wd in ((decay, cfg.weight_decay), (no_decay, 0.0)):
            for scale in sorted({scales[id(p)] for p in ps}, reverse=True):
                groups.append({"params": [p for p in ps if scales[id(p)] == scale], "lr": lrs[group] * scale,
                               "weight_decay": wd, "name": group})
    if not groups:
        raise ValueError("the model has no trainable parameters")
    # The fused kernel (one pass per tensor, no temporaries; as transformers' default adamw_torch_fused) where
    # every parameter is a plain floating tensor on a device it supports; the reference loop elsewhere.
    params = [p for g in groups for p in g["params"]]
    fused = all(type(p.data) is torch.Tensor and p.is_floating_point() and p.device.type in ("cpu", "cuda")
                for p in params)
    return torch.optim.AdamW(groups, fused=fused or None)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, total_steps: int):
    warmup = int(round(cfg.warmup_ratio * total_steps))
    if cfg.schedule == "cosine":
        return get_cosine_schedule_with_warmup(optimizer, warmup, total_steps)
    if cfg.schedule == "linear":
        return get_linear_schedule_with_warmup(optimizer, warmup, total_steps)
    return get_constant_schedule_with_warmup(optimizer, warmup)
