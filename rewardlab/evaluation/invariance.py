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
def _padded_scores(model: RewardModel, prompts: Sequence[str], responses: Sequence[object],
                   extra: int) -> tuple[np.ndarray, list[int]]:
    """Score one at a time with ``extra`` pad tokens appended (attention-masked): the scores, and which items they
    are. An item read whole up to the backbone's position limit (a long benchmark response) has no room for the
    pad tokens, and is left out."""
    items, _ = model.processor.encode_items(list(prompts), list(responses))
    encoder = getattr(model.processor, "encoder", None)
    limit = getattr(getattr(encoder, "spec", None), "inference_max_length", None)
    out, kept = [], []
    for i, item in enumerate(items):
        if limit is not None and model.processor.cost(item) + extra > limit:
            continue
        inputs = model.processor.collate([item], extra_padding=extra)
        out.append(model.model(**{k: v.to(model.device) for k, v in inputs.items()})[0, -1].item())
        kept.append(i)
    return np.asarray(out), kept


def _result(name: str, a: np.ndarray, b: np.ndarray, what: str) -> dict:
    deviation = float(np.max(np.abs(np.asarray(a) - np.asarray(b)))) if len(a) else 0.0
    return {"check": name, "passed": deviation <= TOLERANCE, "max_deviation": deviation, "tolerance": TOLERANCE,
            "what": what}


def run_invariance_checks(model: RewardModel, prompts: Sequence[str], a: Sequence[str], b: Sequence[str]) -> list[dict]:
    """Three checks on up to a few dozen (prompt, A, B) triples; each reports pass/fail and the largest deviation."""
    prompts, a, b = list(prompts), list(a), list(b)
    n = len(prompts)
    alone = np.array([model.score(p, r) for p, r in zip(prompts, a)])
    batched = np.array(model.score_batch(prompts + prompts, a + b, batch_size=len(prompts) * 2))[: len(a)]
    ab = np.array(model.score_batch(prompts + prompts, a + b))
    ba = np.array(model.score_batch(prompts + prompts, b + a))
    checks = [_result("batch", alone, batched, "score alone vs inside a batch of mixed lengths")]
    if pads(model):
        padded, kept = _padded_scores(model, prompts, a, extra=17)
        if kept:  # none when every text already fills the backbone's positions
            left_out = f" ({n - len(kept)} of {n} texts too long for them, left out)" if len(kept) < n else ""
            what = f"score without vs with 17 extra pad tokens{left_out}"
            checks.append(_result("padding", alone[kept], padded, what))
    checks.append(_result("ab_order", ab[:n] - ab[n:], ba[n:] - ba[:n], "margin A-B when A is shown first vs second"))
    return checks
