"""DeepSpeed ZeRO (stages 1-3) under Accelerate: rewardlab's settings fill the engine's config, and resume states
stay rewardlab's own.

``accelerate launch --use_deepspeed --zero_stage 2 -m rewardlab train ...`` (or ``--config_file`` with one of
``rewardlab/configs/accelerate_zero*.yaml``) gives the trainer a DeepSpeed engine. rewardlab builds the optimiser
(per-component learning rates) and its schedule itself, so a DeepSpeed config that names an ``optimizer`` or
``scheduler`` is refused; the micro-batch size and gradient clipping come from ``train.batch_size`` and
``train.max_grad_norm``; gradient accumulation stays in rewardlab's loop (its loss is the pair-weighted mean of
the whole step), which marks the engine's accumulation boundary at each step's last micro-batch.

DeepSpeed's own checkpoints are pickles. rewardlab's resume states hold safetensors and JSON only, so on saving
each trainable parameter's full fp32 weight and Adam moments are read out of ZeRO's partitions (DeepSpeed's
``safe_get_full_*`` API) into the layout of an unsharded run's state, and on resuming they are written back
(``safe_set_full_*``). A state saved under ZeRO resumes under ZeRO of any stage, or without DeepSpeed.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType
from torch import nn

from rewardlab.config import TrainConfig


def stage(accelerator: Accelerator) -> int:
    """The ZeRO stage the run trains under; 0 without DeepSpeed."""
    if accelerator.distributed_type != DistributedType.DEEPSPEED:
        return 0
    return int(accelerator.state.deepspeed_plugin.deepspeed_config.get("zero_optimization", {}).get("stage", 0))


def configure(accelerator: Accelerator, cfg: TrainConfig) -> None:
    """Fill the DeepSpeed config with rewardlab's batch size and clipping before ``prepare``.

    Raises:
        ValueError: the DeepSpeed config names its own optimiser or scheduler, or ZeRO offloads the optimiser
            (its CPU Adam would replace rewardlab's AdamW and its per-component learning rates).
    """
    ds = accelerator.state.deepspeed_plugin.deepspeed_config
    own = [k for k in ("optimizer", "scheduler") if k in ds]
    if own:
        raise ValueError(f"the DeepSpeed config sets {' and '.join(own)}: rewardlab builds the optimiser (a learning "
                         "rate per component, train.lr_*) and its schedule (train.schedule) itself; remove them")
    offload = ds.get("zero_optimization", {}).get("offload_optimizer", {}).get("device", "none")
    if offload not in (None, "none"):
        raise ValueError(f"the DeepSpeed config offloads the optimiser to {offload}: not supported (DeepSpeed would "
                         "swap rewardlab's AdamW for its CPU Adam); use train.fsdp=true to shard it instead")
    ds["train_micro_batch_size_per_gpu"] = cfg.batch_size
    ds["gradient_accumulation_steps"] = 1  # rewardlab's loop accumulates and marks each step's boundary
    ds["train_batch_size"] = cfg.batch_size * accelerator.num_processes
    ds["gradient_clipping"] = float(cfg.max_grad_norm)
    ds.setdefault("zero_allow_untested_optimizer", True)


def check_model(model: nn.Module) -> None:
    """Raises ValueError for what DeepSpeed cannot hold: zero-dimensional parameters (it broadcasts and flattens
    parameters as bytes), such as a tie-aware outcome model's tie parameter."""
    scalars = [n for n, p in model.named_parameters() if p.dim() == 0]
    if scalars:
        raise ValueError(f"DeepSpeed cannot hold zero-dimensional parameters ({', '.join(scalars)}; a tie-aware "
                         "loss's tie parameter is one): train this model with DDP or train.fsdp=true")


def _zero_optimizer(optimizer):
    """DeepSpeed's ZeRO optimiser inside Accelerate's wrapper."""
    while not hasattr(optimizer, "loss_scaler") and hasattr(optimizer, "optimizer"):
        optimizer = optimizer.optimizer
    return optimizer


def _relink(zero) -> None:
    # Stages 1-2 link each parameter to its slice of the Adam moments after the first step, but only for the
    # param groups stepped by then (the first): link them all again before reading or writing moments.
    if hasattr(zero, "_hp_optimizer_states_linked"):
        zero._hp_optimizer_states_linked = False
        zero._lazy_init_hp_params_optimizer_state()


def _flat_partitions(zero, groups: int) -> list[torch.Tensor]:
    """The fp32 partition of each of the ``groups`` param groups that the base optimiser steps (its state is
    keyed by them)."""
    for name in ("single_partition_of_fp32_groups", "fp32_partitioned_groups_flat"):  # stages 1-2, stage 3
        if hasattr(zero, name):
            flats = list(getattr(zero, name))
            if len(flats) != groups:  # stage 3 cuts groups larger than sub_group_size
                raise ValueError(f"ZeRO split rewardlab's {groups} parameter groups into {len(flats)}: raise "
                                 "zero_optimization.sub_group_size in the DeepSpeed config above the model's size")
            return flats
    raise TypeError(f"unknown ZeRO optimiser {type(zero).__name__}: cannot read its optimiser state")


@contextlib.contextmanager
def gathered(params: list[nn.Parameter], *, modify: bool = False) -> Iterator[None]:
    """Stage 3: the parameters whole on every process inside the block (with ``modify``, what process 0 writes
    into them is partitioned again on leaving it). Other stages hold them whole already."""
    partitioned = [p for p in params if hasattr(p, "ds_id")]
    if not partitioned:
        yield
        return
    import deepspeed

    with deepspeed.zero.GatheredParameters(partitioned, modifier_rank=0 if modify else None):
        yield


def full_weights(named: dict[str, nn.Parameter]) -> dict[str, torch.Tensor]:
    """Each parameter's fp32 master weight, whole (a collective under stage 3: every process calls it)."""
    from deepspeed.utils import safe_get_full_fp32_param

    return {n: safe_get_full_fp32_param(p).detach().clone() for n, p in named.items()}


def optimizer_state(optimizer, groups: list[list[nn.Parameter]]) -> dict:
    """The ZeRO optimiser's state as ``torch.optim.AdamW.state_dict()`` would give it, ``groups`` being the
    parameters of each of rewardlab's param groups (as built, before ZeRO flattened them)."""
    from deepspeed.utils import safe_get_full_optimizer_state

    zero = _zero_optimizer(optimizer)
    _relink(zero)
    base, flats = zero.optimizer, _flat_partitions(zero, len(groups))
    index = {id(p): i for i, p in enumerate(p for group in groups for p in group)}
    state: dict[int, dict] = {}
    out_groups = []
    for g, (group, flat) in enumerate(zip(groups, flats)):
        slots = base.state.get(flat, {})
        for p in group:
            if slots:
                state[index[id(p)]] = {"step": slots["step"].detach().clone(),
                                       **{k: safe_get_full_optimizer_state(p, k).detach().clone()
                                          for k in ("exp_avg", "exp_avg_sq")}}
        out_groups.append({**{k: v for k, v in base.param_groups[g].items() if k != "params"},
                           "params": [index[id(p)] for p in group]})
    return {"state": state, "param_groups": out_groups}


def load_optimizer_state(optimizer, groups: list[list[nn.Parameter]], saved: dict) -> None:
    """Write a state from :func:`optimizer_state` (or an unsharded run's AdamW) back into ZeRO's partitions."""
    from deepspeed.utils import safe_set_full_optimizer_state

    zero = _zero_optimizer(optimizer)
    base, flats = zero.optimizer, _flat_partitions(zero, len(groups))
    params = [p for group in groups for p in group]
    if len(saved["param_groups"]) != len(groups):
        raise ValueError(f"the resume state has {len(saved['param_groups'])} parameter groups, this model "
                         f"{len(groups)}: resume with the configuration that saved it")
    for g, (group, flat) in enumerate(zip(saved["param_groups"], flats)):
        base.param_groups[g].update({k: v for k, v in group.items() if k != "params"})
        steps = [saved["state"][i]["step"] for i in group["params"] if i in saved["state"]]
        if steps:  # Adam's moments exist once it has stepped: make the slots, then fill them
            base.state[flat] = {"step": torch.as_tensor(steps[0], dtype=torch.float32).clone(),
                                "exp_avg": torch.zeros_like(flat), "exp_avg_sq": torch.zeros_like(flat)}
    _relink(zero)
    for i, slots in saved["state"].items():
        for k in ("exp_avg", "exp_avg_sq"):
            safe_set_full_optimizer_state(params[int(i)], slots[k].to(params[int(i)].device), k)


def load_weights(named: dict[str, nn.Parameter], weights: dict[str, torch.Tensor]) -> None:
    """Set the model's parameters and ZeRO's fp32 master copies of them to ``weights``."""
    from deepspeed.utils import safe_set_full_fp32_param

    chosen = {n: p for n, p in named.items() if n in weights}
    with gathered(list(chosen.values()), modify=True), torch.no_grad():
        for n, p in chosen.items():
            p.copy_(weights[n].to(p.dtype))
    for n, p in chosen.items():
        safe_set_full_fp32_param(p, weights[n].to(torch.float32))


def full_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's whole state dict, trainable parameters at their fp32 master values (a collective: every
    process calls it)."""
    with gathered(list(model.parameters())):
        state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    state.update(full_weights({n: p for n, p in model.named_parameters() if p.requires_grad}))
    return state


@contextlib.contextmanager
def whole_models() -> Iterator[None]:
    """Models built inside the block hold whole parameters: under an active ZeRO-3 config transformers would
    partition them at construction (``zero.Init``), and the final checkpoint is saved from a whole copy."""
    from transformers.integrations import deepspeed as hf_deepspeed

    active = hf_deepspeed._hf_deepspeed_config_weak_ref
    hf_deepspeed.unset_hf_deepspeed_config()
    try:
        yield
    finally:
        hf_deepspeed._hf_deepspeed_config_weak_ref = active
