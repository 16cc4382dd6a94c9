"""Fused GPU kernels from Liger (``train.liger_kernel``), applied to a model's transformers backbones.

Liger swaps in Triton kernels for the RMSNorm, rotary embedding and gated MLP of the
architectures it supports (Llama, Qwen2, Mistral, Gemma, Phi-3 and more); parameter
names do not change, so the saved checkpoint is the same plain transformers folder.
Reward models have no language-model head, so its fused cross-entropy stays off.
The kernels run on CUDA only; this module refuses elsewhere rather than fail inside a step.
"""

from __future__ import annotations

import torch
from torch import nn

from rewardlab.models.backbones import outermost

# A reward model's backbone has no LM head: the fused (linear) cross-entropy has nothing to fuse.
_OPTIONS = {"cross_entropy": False, "fused_linear_cross_entropy": False}


def backbones(model: nn.Module) -> list[nn.Module]:
    """The outermost transformers models inside ``model`` (a kind's backbone or towers)."""
    from transformers import PreTrainedModel

    return outermost(model, lambda m: isinstance(m, PreTrainedModel))


def apply_liger(model: nn.Module, device: torch.device) -> list[str]:
    """Patch every backbone of ``model`` with Liger's kernels; returns the model types patched.

    Raises:
        ValueError: not a CUDA device, liger-kernel not installed, or no backbone of a type Liger supports.
    """
    if device.type != "cuda":
        raise ValueError(f"train.liger_kernel=true: Liger's kernels are Triton GPU kernels, and this run is on "
                         f"{device.type}; set train.liger_kernel=false")
    try:
        from liger_kernel.transformers import monkey_patch
    except ImportError as err:
        raise ValueError(f"train.liger_kernel=true needs the liger-kernel package (pip install liger-kernel): {err}") \
            from None
    patched = []
    for backbone in backbones(model):
        model_type = getattr(backbone.config, "model_type", None)
        if model_type in monkey_patch.MODEL_TYPE_TO_APPLY_LIGER_FN:
            monkey_patch._apply_liger_kernel_to_instance(model=backbone, **_OPTIONS)
            patched.append(model_type)
    if not patched:
        types = sorted({getattr(b.config, "model_type", "?") for b in backbones(model)}) or ["none"]
        raise ValueError(f"train.liger_kernel=true: Liger has no kernels for this model's backbone "
                         f"({', '.join(types)}); it supports {', '.join(sorted(monkey_patch.MODEL_TYPE_TO_APPLY_LIGER_FN))}")
    return patched
