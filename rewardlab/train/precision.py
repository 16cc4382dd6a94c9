"""``train.mixed_precision=auto``: pick fp32 or bf16 by timing both, never the slower one.

bf16 is not always faster. Measured on an H200, MiniLM (384 wide) trained 4–7×
*slower* in bf16 than in fp32: at that width the casts and the small matrix
products cost more than tensor cores save. Wide backbones gain. So ``auto`` runs a
short probe — a few forward + backward passes of the first training batch in each
precision, on the device that will train — and keeps the faster one.

CPUs that compute bf16 natively (AVX512-BF16 or AMX) are probed too, on the first two
comparisons only (a CPU step of a whole batch takes seconds): on one with AVX512-BF16,
MiniLM trained 1.27× faster in bf16 end to end (its steps 1.35–1.5×). bf16 must win by :data:`CPU_MARGIN` there, and a model whose
fp32 step takes under :data:`MIN_PROBE_SECONDS` is not probed (it has little to gain,
and a step that short is too noisy to time), so tiny models stay in fp32. Elsewhere
(a CPU that would emulate bf16, or no bf16 at all): fp32.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import torch
from torch import nn

PROBE_STEPS = 3
CPU_PROBE_COMPARISONS = 2  # the probe's batch on CPU
CPU_MARGIN = 1.2  # bf16 must be this much faster on CPU, beyond what a few timed steps can mistake
MIN_PROBE_SECONDS = 0.05  # a CPU fp32 step shorter than this: fp32 without probing bf16
CPUINFO = Path("/proc/cpuinfo")  # where Linux lists the CPU's flags


def cpu_has_native_bf16(cpuinfo: str | None = None) -> bool:
    """Whether this CPU multiplies bf16 matrices natively (the ``avx512_bf16`` or ``amx_bf16`` flag Linux lists;
    oneDNN emulates bf16 elsewhere, slower than fp32). False where the flags cannot be read.

    Example:
        >>> cpu_has_native_bf16("flags : fpu avx512f avx512_bf16"), cpu_has_native_bf16("flags : fpu avx2")
        (True, False)
    """
    if cpuinfo is None:
        try:
            cpuinfo = CPUINFO.read_text()
        except OSError:
            return False
    flags = {f for line in cpuinfo.splitlines() if line.startswith("flags") for f in line.split(":", 1)[1].split()}
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def _seconds_per_step(model: nn.Module, inputs: dict, device: torch.device, dtype: torch.dtype | None,
                      steps: int = PROBE_STEPS, warm_up: bool = True) -> float:
    """The shortest wall time of ``steps`` forward + backward passes of ``model(**inputs).sum()`` (after one
    warm-up pass): the least disturbed by whatever else the machine runs."""

    def step() -> None:
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            rewards = model(**inputs)
        rewards.float().sum().backward()

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    if warm_up:
        step()
        sync()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - start)
    return min(times)


def process_precision() -> str | None:
    """The mixed precision Accelerate was set up with in this process, or None before the first run. Accelerate
    keeps one per process: a second run asking for another fails, so ``auto`` keeps the first run's choice
    (ensemble members, cross-validation folds and tuning trials train one after another in one process)."""
    from accelerate.state import AcceleratorState

    return AcceleratorState._shared_state.get("_mixed_precision")


def choose_precision(requested: str, model: nn.Module, inputs: Callable[[torch.device, int | None], dict],
                     device: torch.device) -> tuple[str, dict]:
    """The mixed-precision setting to train with, and why.

    ``requested`` other than ``auto`` is kept. ``inputs(device, n)`` gives the model's
    inputs for the probe: the first ``n`` training comparisons (None: the first batch).
    The probe leaves the weights as they were (no optimiser step; gradients are
    cleared) and is a few seconds at most.
    """
    if requested != "auto":
        return requested, {"choice": requested, "rule": "as configured"}
    if (earlier := process_precision()) is not None:
        return earlier, {"choice": earlier, "rule": f"auto: {earlier}, as this process trained before (Accelerate "
                                                    "keeps one precision per process)"}
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return probe(model, inputs(device, None), device)
    if device.type == "cpu" and cpu_has_native_bf16():
        return probe(model, inputs(device, CPU_PROBE_COMPARISONS), device, margin=CPU_MARGIN,
                     min_seconds=MIN_PROBE_SECONDS)
    return "no", {"choice": "no", "rule": "auto: no native bf16 here (a CUDA device with bf16, or a CPU with "
                                          "AVX512-BF16 or AMX), fp32"}


def probe(model: nn.Module, inputs: dict, device: torch.device, *, margin: float = 1.0,
          min_seconds: float = 0.0) -> tuple[str, dict]:
    """Time fp32 and bf16 on ``inputs``; bf16 wins when it is ``margin`` times faster. An fp32 step under
    ``min_seconds`` (timed once) keeps fp32 without timing bf16."""
    was_on = next(model.parameters()).device
    model.to(device)
    try:
        first = _seconds_per_step(model, inputs, device, None, steps=1)
        if first < min_seconds:
            return "no", {"choice": "no", "rule": f"auto: an fp32 step takes {first * 1000:.0f} ms, under "
                                                  f"{min_seconds * 1000:.0f} ms: fp32 without probing bf16",
                          "seconds_per_step": {"no": first}}
        seconds = {"no": min(first, _seconds_per_step(model, inputs, device, None, PROBE_STEPS - 1, warm_up=False)),
                   "bf16": _seconds_per_step(model, inputs, device, torch.bfloat16)}
    finally:
        model.zero_grad(set_to_none=True)
        model.to(was_on)
    choice = "bf16" if seconds["bf16"] * margin < seconds["no"] else "no"
    rule = (f"auto: measured, fp32 {seconds['no'] * 1000:.0f} ms and bf16 {seconds['bf16'] * 1000:.0f} ms a step "
            f"(the shortest of {PROBE_STEPS})" + (f", bf16 needing {margin:g}x" if margin != 1.0 else ""))
    return choice, {"choice": choice, "rule": rule, "seconds_per_step": seconds}
