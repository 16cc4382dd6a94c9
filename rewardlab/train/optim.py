"""AdamW with separate backbone / head learning rates, and warm-up + decay schedules."""

from __future__ import annotations

import torch
from transformers import get_constant_schedule_with_warmup, get_cosine_schedule_with_warmup, \
    get_linear_schedule_with_warmup

from rewardlab.config import TrainConfig

_NO_DECAY = ("bias", "LayerNorm.weight", "layer_norm.weight", "norm.weight")


def build_optimizer(named_groups: dict[str, list[tuple[str, torch.nn.Parameter]]], cfg: TrainConfig,
                    ) -> torch.optim.AdamW:
    """AdamW over named parameter groups ``{"backbone": [...], "head": [...]}``.

    Each group gets its own learning rate (``lr_backbone`` / ``lr_head``, and ``lr_fusion`` for a
    multimodal model's ``fusion`` group, ``lr_outcome`` for a tie-aware outcome model's parameter);
    biases, norm weights and the tie parameter get no weight decay.
    """
    lrs = {"backbone": cfg.lr_backbone, "head": cfg.lr_head, "fusion": cfg.lr_fusion, "outcome": cfg.lr_outcome}
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
        for ps, wd in ((decay, cfg.weight_decay), (no_decay, 0.0)):
            if ps:
                groups.append({"params": ps, "lr": lrs[group], "weight_decay": wd, "name": group})
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
