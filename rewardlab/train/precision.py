"""``train.mixed_precision=auto``: pick fp32 or bf16 by timing both, never the slower one.

bf16 is not always faster. Measured on an H200, MiniLM (384 wide) trained 4–7×
*slower* in bf16 than in fp32: at that width the casts and the small matrix
products cost more than tensor cores save. Wide backbones gain. So ``auto`` runs a
short probe — a few forward + backward passes of the first training batch in each
precision, on the device that will train — and keeps the faster one. Without a
CUDA device that supports bf16 there is nothing to probe: fp32.
"""

from __future__ import annotations

import time
from typing import Callable

import torch
from torch import nn

PROBE_STEPS = 3


def _seconds_per_step(model: nn.Module, inputs: dict, device: torch.device, dtype: torch.dtype | None) -> float:
    """Mean wall time of a forward + backward of ``model(**inputs).sum()`` (after one warm-up pass)."""

    def step() -> None:
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            rewards = model(**inputs)
        rewards.float().sum().backward()

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    step()
    sync()
    start = time.perf_counter()
    for _ in range(PROBE_STEPS):
        step()
    sync()
    return (time.perf_counter() - start) / PROBE_STEPS


def process_precision() -> str | None:
    """The mixed precision Accelerate was set up with in this process, or None before the first run. Accelerate
    keeps one per process: a second run asking for another fails, so ``auto`` keeps the first run's choice
    (ensemble members, cross-validation folds and tuning trials train one after another in one process)."""
    from accelerate.state import AcceleratorState

    return AcceleratorState._shared_state.get("_mixed_precision")


def choose_precision(requested: str, model: nn.Module, inputs: Callable[[torch.device], dict],
                     device: torch.device) -> tuple[str, dict]:
    """The mixed-precision setting to train with, and why.

    ``requested`` other than ``auto`` is kept. ``inputs(device)`` gives the model's
    inputs for the probe (the first training batch). The probe leaves the weights as
    they were (no optimiser step; gradients are cleared) and is a few seconds at most.
    """
    if requested != "auto":
        return requested, {"choice": requested, "rule": "as configured"}
    if (earlier := process_precision()) is not None:
        return earlier, {"choice": earlier, "rule": f"auto: {earlier}, as this process trained before (Accelerate "
                                                    "keeps one precision per process)"}
    if device.type != "cuda" or not torch.cuda.is_bf16_supported():
        return "no", {"choice": "no", "rule": "auto: no CUDA device with bf16 support, fp32"}
    return probe(model, inputs(device), device)


def probe(model: nn.Module, inputs: dict, device: torch.device) -> tuple[str, dict]:
    """Time fp32 and bf16 on ``inputs``; the faster wins."""
    was_on = next(model.parameters()).device
    model.to(device)
    try:
        seconds = {"no": _seconds_per_step(model, inputs, device, None),
                   "bf16": _seconds_per_step(model, inputs, device, torch.bfloat16)}
    finally:
        model.zero_grad(set_to_none=True)
        model.to(was_on)
    choice = min(seconds, key=seconds.get)
    return choice, {"choice": choice, "rule": f"auto: measured, {PROBE_STEPS} steps each",
                    "seconds_per_step": seconds}
