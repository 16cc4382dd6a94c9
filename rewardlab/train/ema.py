"""Exponential moving average of trainable weights."""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn


class EMA:
    """Shadow copy of trainable parameters, updated as ``s = d·s + (1-d)·p`` after each step.

    ``with ema.applied(model):`` swaps the averaged weights in (for evaluation and
    saving) and restores the live ones afterwards. ``state_dict`` / ``load_state_dict``
    let Accelerate checkpoint it for exact resume.
    """

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.shadow = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for n, p in model.named_parameters():
            if n in self.shadow:
                self.shadow[n].lerp_(p.detach(), 1.0 - self.decay)

    @contextlib.contextmanager
    def applied(self, model: nn.Module) -> Iterator[None]:
        live = {}
        with torch.no_grad():
            for n, p in model.named_parameters():
                if n in self.shadow:
                    live[n] = p.detach().clone()
                    p.copy_(self.shadow[n])
        try:
            yield
        finally:
            with torch.no_grad():
                for n, p in model.named_parameters():
                    if n in live:
                        p.copy_(live[n])

    def state_dict(self) -> dict:
        return {"decay": self.decay, "shadow": self.shadow}

    def load_state_dict(self, state: dict) -> None:
        self.decay = state["decay"]
        for n, t in state["shadow"].items():
            self.shadow[n].copy_(t)
