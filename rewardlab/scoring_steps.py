"""Scoring with a process reward model: a probability per step, and the solution's reward from them::

    rm = RewardModel.from_pretrained("runs/prm/model")              # a model.kind=prm checkpoint
    rm.score_steps("What is 2 + 3 * 4?", ["3 * 4 = 12", "2 + 12 = 15", "So 15."])
    # [0.97, 0.08, 0.11]: P(step is correct), one per step
    rm.score("What is 2 + 3 * 4?", "3 * 4 = 12\\n2 + 12 = 15\\nSo 15.")                       # min: 0.08
    rm.score("What is 2 + 3 * 4?", "3 * 4 = 12\\n2 + 12 = 15\\nSo 15.", aggregate="product")  # 0.0085

``score`` (and ``score_batch``, ``rank``, ``best_of_n``, which go through it) reads a response as steps
separated by the checkpoint's ``step_separator`` and aggregates their probabilities as the checkpoint's
``aggregate`` (``model.step_aggregate``, min by default) or the call's ``aggregate`` says. A solution longer
than the backbone reads keeps its first steps: the steps left out get NaN from :meth:`score_steps` and are
left out of the aggregate.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Iterator, Sequence

import numpy as np
import torch

from rewardlab.config.sections import STEP_AGGREGATES
from rewardlab.scoring_inputs import render_item

log = logging.getLogger(__name__)


class StepScoring:
    """What :class:`~rewardlab.scoring.RewardModel` adds for process reward models (its ``model`` reads steps)."""

    model: torch.nn.Module
    processor: object
    device: torch.device

    def _step_model(self) -> torch.nn.Module:
        if not hasattr(self.model, "step_probabilities"):
            raise ValueError("scoring steps needs a process reward model (model.kind=prm); this checkpoint scores "
                             "whole responses")
        return self.model

    @torch.inference_mode()
    def score_steps_batch(self, prompts: Sequence[str | list], steps: Sequence[Sequence[str]], *,
                          batch_size: int = 32) -> list[list[float]]:
        """P(step is correct) for every step of aligned prompts (texts or chat messages) and step lists, in input
        order; a step past the backbone's limit is NaN (with a warning)."""
        model = self._step_model()
        if len(prompts) != len(steps):
            raise ValueError(f"got {len(prompts)} prompts but {len(steps)} step lists")
        prompts = [render_item(self.processor.render_chat, p, "", where=f"item {i}")[0] for i, p in enumerate(prompts)]
        for i, solution in enumerate(steps):
            if isinstance(solution, str) or not len(solution):
                raise ValueError(f"item {i}: steps must be a non-empty list of texts (a whole response goes to score)")
        items, kept = self.processor.encode_solutions(prompts, [list(s) for s in steps])
        out: list[list[float]] = [[] for _ in items]
        order = sorted(range(len(items)), key=lambda i: self.processor.cost(items[i]))
        for start in range(0, len(order), batch_size):
            idx = order[start: start + batch_size]
            inputs = {k: v.to(self.device) for k, v in self.processor.collate([items[i] for i in idx]).items()}
            probs = model.step_probabilities(**inputs).float().cpu().tolist()
            for i in idx:
                out[i], probs = probs[: kept[i]] + [float("nan")] * (len(steps[i]) - kept[i]), probs[kept[i]:]
        if any(k < len(s) for k, s in zip(kept, steps)):
            log.warning("%d solution(s) longer than the model reads: their last steps are NaN",
                        sum(k < len(s) for k, s in zip(kept, steps)))
        return out

    def score_steps(self, prompt: str | list, steps: Sequence[str], *, batch_size: int = 32) -> list[float]:
        """P(step is correct) for each of ``steps``, the solution to ``prompt``."""
        return self.score_steps_batch([prompt], [steps], batch_size=batch_size)[0]

    @contextmanager
    def aggregating(self, aggregate: str | None) -> Iterator[None]:
        """Within the block, a process reward model's ``score`` aggregates steps as ``aggregate`` says (None: as
        saved)."""
        if aggregate is None:
            yield
            return
        if aggregate not in STEP_AGGREGATES:
            raise ValueError(f"aggregate={aggregate!r}; choose one of {', '.join(STEP_AGGREGATES)}")
        model = self._step_model()
        saved, model.aggregate = model.aggregate, aggregate
        try:
            yield
        finally:
            model.aggregate = saved


def aggregate_probabilities(probs: Sequence[float], how: str = "min") -> float:
    """A solution's reward from its step probabilities (NaN ones left out), as a process reward model's ``score``
    computes it: ``min``, ``product``, ``mean`` or ``last``.

    Example:
        >>> [round(aggregate_probabilities([0.9, 0.5, 0.8], h), 2) for h in ("min", "product", "mean", "last")]
        [0.5, 0.36, 0.73, 0.8]
    """
    p = np.asarray([x for x in probs if not np.isnan(x)], dtype=np.float64)
    if how not in STEP_AGGREGATES:
        raise ValueError(f"aggregate={how!r}; choose one of {', '.join(STEP_AGGREGATES)}")
    if not len(p):
        return float("nan")
    return float({"min": p.min, "product": p.prod, "mean": p.mean, "last": lambda: p[-1]}[how]())
