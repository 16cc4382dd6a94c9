"""Invariance checks: a text's reward must not depend on its batch, its padding, or its A/B side."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from rewardlab.scoring import RewardModel

TOLERANCE = 1e-3  # float32 reductions over different shapes differ by ~1e-6; real bugs are far larger


@torch.inference_mode()
def _padded_scores(model: RewardModel, prompts: Sequence[str], responses: Sequence[str], extra: int) -> np.ndarray:
    """Score one at a time with ``extra`` pad tokens appended (attention-masked)."""
    features, _ = model.encoder.encode(prompts, responses)
    out = []
    for f in features:
        n = len(f["input_ids"])
        ids = torch.full((1, n + extra), model.pad_token_id, dtype=torch.long)
        ids[0, :n] = torch.tensor(f["input_ids"])
        mask = torch.zeros_like(ids)
        mask[0, :n] = 1
        types = None
        if "token_type_ids" in f:
            types = torch.zeros_like(ids)
            types[0, :n] = torch.tensor(f["token_type_ids"])
            types = types.to(model.device)
        out.append(model.model(ids.to(model.device), mask.to(model.device), types).item())
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
    padded = _padded_scores(model, prompts, a, extra=17)
    ab = np.array(model.score_batch(prompts + prompts, a + b))
    ba = np.array(model.score_batch(prompts + prompts, b + a))
    n = len(prompts)
    return [
        _result("batch", alone, batched, "score alone vs inside a batch of mixed lengths"),
        _result("padding", alone, padded, "score without vs with 17 extra pad tokens"),
        _result("ab_order", ab[:n] - ab[n:], ba[n:] - ba[:n], "margin A-B when A is shown first vs second"),
    ]
