"""Invariance checks: a text's reward must not depend on its batch, its padding, or its A/B side."""

from __future__ import annotations

import inspect
from typing import Sequence

import numpy as np
import torch

from rewardlab.scoring import RewardModel

TOLERANCE = 1e-3  # float32 reductions over different shapes differ by ~1e-6; real bugs are far larger


def pads(model: RewardModel) -> bool:
    """Whether the model's items are padded (text), so the padding check applies."""
    return "extra_padding" in inspect.signature(model.processor.collate).parameters


@torch.inference_mode()
def _padded_scores(model: RewardModel, prompts: Sequence[str], responses: Sequence[object], extra: int) -> np.ndarray:
    """Score one at a time with ``extra`` pad tokens appended (attention-masked)."""
    items, _ = model.processor.encode_items(list(prompts), list(responses))
    out = []
    for item in items:
        inputs = model.processor.collate([item], extra_padding=extra)
        out.append(model.model(**{k: v.to(model.device) for k, v in inputs.items()})[0, -1].item())
    return np.asarray(out)


def _result(name: str, a: np.ndarray, b: np.ndarray, what: str) -> dict:
    deviation = float(np.max(np.abs(np.asarray(a) - np.asarray(b)))) if len(a) else 0.0
    return {"check": name, "passed": deviation <= TOLERANCE, "max_deviation": deviation, "tolerance": TOLERANCE,
            "what": what}


def run_invariance_checks(model: RewardModel, prompts: Sequence[str], a: Sequence[str], b: Sequence[str]) -> list[dict]:
    """Three checks on up to a few dozen (prompt, A, B) triples; each reports pass/fail and the largest deviation."""
    prompts, a, b = list(prompts), list(a), list(b)
    alone = np.array([model.score(p, r) for p, r in zip(prompts, a)])
    batched = np.array(model.score_batch(prompts + prompts, a + b, batch_size=len(prompts) * 2))[: len(a)]
    ab = np.array(model.score_batch(prompts + prompts, a + b))
    ba = np.array(model.score_batch(prompts + prompts, b + a))
    n = len(prompts)
    checks = [_result("batch", alone, batched, "score alone vs inside a batch of mixed lengths")]
    if pads(model):
        padded = _padded_scores(model, prompts, a, extra=17)
        checks.append(_result("padding", alone, padded, "score without vs with 17 extra pad tokens"))
    checks.append(_result("ab_order", ab[:n] - ab[n:], ba[n:] - ba[:n], "margin A-B when A is shown first vs second"))
    return checks
