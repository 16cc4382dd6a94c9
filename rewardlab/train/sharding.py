"""Fully sharded data parallel (FSDP2) and the tensors of a sharded model.

``train.fsdp: true`` shards a model with torch's ``fully_shard``: each transformer
layer is one unit (its parameters are gathered for its forward and backward only),
the rest of the model the root unit. Parameters, gradients and optimiser state are
then DTensors of which each process holds one slice (dim 0). The same happens under
``accelerate launch --use_fsdp --fsdp_version 2``, where Accelerate shards; either
way the helpers below see DTensors and nothing else:

- resume states are written per process, each its own slice (:func:`local`), and
  read back onto the same layout (:func:`like`);
- the final model is gathered in full (:func:`full`) on every process, so the
  main process can save it as an ordinary checkpoint.

It works on CPU (gloo) as on GPUs (NCCL): the device mesh takes the accelerator's
device type.
"""

from __future__ import annotations

from typing import Iterable, Mapping

import torch
from torch import nn

from rewardlab.models.backbones import outermost

try:  # torch >= 2.4
    from torch.distributed.tensor import DTensor
except ImportError:  # pragma: no cover - older torch has no FSDP2 either
    DTensor = None  # type: ignore[assignment,misc]

# Transformer blocks of models that are not transformers' PreTrainedModel (their own _no_split_modules).
_BLOCKS: tuple[type[nn.Module], ...] = (nn.TransformerEncoderLayer, nn.TransformerDecoderLayer)


def is_sharded(tensor: torch.Tensor) -> bool:
    return DTensor is not None and isinstance(tensor, DTensor)


def model_is_sharded(model: nn.Module) -> bool:
    return any(is_sharded(p) for p in model.parameters())


def _block_names(model: nn.Module) -> set[str]:
    """Class names of the transformer blocks: every sub-model's ``_no_split_modules`` (transformers' own list)."""
    names: set[str] = set()
    for module in model.modules():
        names.update(getattr(module, "_no_split_modules", None) or ())
    return names


def shard(model: nn.Module, device: torch.device, num_processes: int) -> nn.Module:
    """Shard ``model`` in place over ``num_processes`` processes: one FSDP unit per transformer block, then the root.

    Raises:
        ValueError: one process (nothing to shard over), or a torch without FSDP2.
    """
    if num_processes < 2:
        raise ValueError("train.fsdp=true shards the model over several processes, and this run has one: launch "
                         "with accelerate launch --multi_gpu --num_processes N (on CPU also ACCELERATE_USE_CPU=true)")
    try:
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard
    except ImportError as err:  # pragma: no cover - torch < 2.6
        raise ValueError(f"train.fsdp=true needs FSDP2 (torch.distributed.fsdp.fully_shard): {err}") from None
    model.to(device)
    mesh = init_device_mesh(device.type, (num_processes,))
    blocks = _block_names(model)
    # A block nested in another block belongs to its parent's unit.
    for child in model.children():
        for unit in outermost(child, lambda m: type(m).__name__ in blocks or isinstance(m, _BLOCKS)):
            fully_shard(unit, mesh=mesh)
    # The root too frees its gathered parameters after each forward (FSDP2 keeps them by default): evaluation
    # and EMA swaps then always see the sharded parameters.
    fully_shard(model, mesh=mesh, reshard_after_forward=True)
    return model


def local_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """This process's slice of ``tensor`` (a plain tensor is its own), detached, contiguous, on CPU."""
    return (tensor.to_local() if is_sharded(tensor) else tensor).detach().contiguous().cpu()


def local(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """:func:`local_tensor` of each named tensor."""
    return {k: local_tensor(v) for k, v in tensors.items()}


def full(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Each tensor whole, on CPU. A collective: every process must call it with the same names, in the same order."""
    return {k: (v.full_tensor() if is_sharded(v) else v).detach().cpu() for k, v in tensors.items()}


def like(saved: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """``saved`` (a slice written by :func:`local`) laid out as ``reference``: a DTensor on its mesh, or a tensor on
    its device."""
    if is_sharded(reference) and saved.shape == reference.to_local().shape:
        return DTensor.from_local(saved.to(reference.device, reference.dtype), reference.device_mesh,
                                  reference.placements, shape=reference.shape, stride=reference.stride())
    return saved.to(reference.device)


def copy_into(targets: Mapping[str, torch.Tensor], saved: Mapping[str, torch.Tensor]) -> None:
    """Copy saved slices into the named tensors in place (a DTensor's slice into its local part)."""
    with torch.no_grad():
        for name, value in saved.items():
            target = targets[name]
            (target.to_local() if is_sharded(target) else target).copy_(value)


def optimizer_params(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    """The optimiser's parameters in the order its ``state_dict`` numbers them."""
    inner = getattr(optimizer, "optimizer", optimizer)  # Accelerate's wrapper
    return [p for group in inner.param_groups for p in group["params"]]


def optimizer_state_like(state: dict, params: Iterable[torch.Tensor]) -> dict:
    """An optimiser state dict read from slices, with each parameter's per-element state laid out as the parameter."""
    params = list(params)
    out = {}
    for pid, slots in state["state"].items():
        ref = params[int(pid)]
        out[pid] = {k: like(v, ref) if torch.is_tensor(v) and v.dim() > 0 else v for k, v in slots.items()}
    return {"state": out, "param_groups": state["param_groups"]}
