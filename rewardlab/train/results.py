"""What the training loop keeps and returns: where it is (saved with each resume state), a pass's per-pair
predictions with their metrics, and the process's peak memory."""

from __future__ import annotations

import resource
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rewardlab.metrics.outcomes import outcome_summary
from rewardlab.metrics.pairwise import pairwise_summary


def peak_rss_mb() -> float:
    """This process's peak resident memory in MB.

    Linux's ``VmHWM`` is the process's own; ``ru_maxrss`` is carried over from the parent at launch,
    so a worker started by a large process would report the parent's peak.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@dataclass
class LoopState:
    """Where the loop is; saved with each resume state."""

    step: int = 0
    epoch: int = 0
    batches_in_epoch: int = 0
    best_metric: float | None = None
    best_step: int | None = None
    evals_without_improvement: int = 0
    pairs_seen: int = 0
    history: list[dict] = field(default_factory=list)


@dataclass
class Predictions:
    """Per-pair rewards from one evaluation pass (ordered by comparison, then pair)."""

    comparison: np.ndarray  # (P,) dataset index of each pair's comparison
    head: np.ndarray  # (P,) the reward column each pair was read on
    chosen: np.ndarray  # (P,)
    rejected: np.ndarray  # (P,)
    rewards: np.ndarray  # (N, H) every item's rewards (for statistics)
    tie: np.ndarray  # (P,) bool: the data calls the pair a tie
    log_probs: np.ndarray  # (P, 3) log P(first wins), log P(second wins), log P(tie)

    def summary(self, heads: tuple[str, ...], ties: bool = False) -> dict:
        """Pairwise metrics over the decided pairs, per head where the model has several, and the
        three-way (A / B / tie) metrics when the data has ties or the model predicts them (``ties``)."""
        won = ~self.tie
        out = pairwise_summary(self.chosen[won], self.rejected[won])
        if len(heads) > 1:
            out["by_head"] = {name: pairwise_summary(self.chosen[won & (self.head == h)],
                                                     self.rejected[won & (self.head == h)])
                              for h, name in enumerate(heads) if (won & (self.head == h)).any()}
        if ties or self.tie.any():
            out.update(outcome_summary(self.log_probs, self.tie))
        return out
