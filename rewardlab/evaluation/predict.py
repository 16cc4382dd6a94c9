"""Score a stream of comparisons in chunks, keeping only per-pair numbers in memory.

Texts go straight to ``predictions.jsonl`` as each chunk is scored; what stays
in memory is a few numbers and the group-by field values per pair, plus the
highest-confidence errors (with their texts) for the report.
"""

from __future__ import annotations

import heapq
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
from tqdm.auto import tqdm

from rewardlab.data.schema import Comparison
from rewardlab.metrics import preference_probability
from rewardlab.scoring import RewardModel

SECTION_FIELDS = ("subset", "section")


@dataclass
class ScoredPairs:
    """Columnar per-pair results of an evaluation pass."""

    chosen: list[float] = field(default_factory=list)
    rejected: list[float] = field(default_factory=list)
    chosen_len: list[int] = field(default_factory=list)
    rejected_len: list[int] = field(default_factory=list)
    fields: dict[str, list] = field(default_factory=dict)
    model_scores: list[np.ndarray] = field(default_factory=list)  # per comparison with human scores
    human_scores: list[np.ndarray] = field(default_factory=list)
    tie_margins: list[float] = field(default_factory=list)  # |margin| of pairs the data calls a tie
    worst: list = field(default_factory=list)  # heap of (-confidence_wrong, n, record)

    @property
    def margins(self) -> np.ndarray:
        return np.asarray(self.chosen) - np.asarray(self.rejected)


def _chunks(items: Iterable[Comparison], size: int) -> Iterator[list[Comparison]]:
    it = iter(items)
    while chunk := list(itertools.islice(it, size)):
        yield chunk


def _tie_pairs(c: Comparison, min_diff: float) -> list[tuple[int, int]]:
    if c.scores is None:
        return []
    s = c.scores
    return [(i, j) for i in range(len(s)) for j in range(i + 1, len(s)) if abs(s[i] - s[j]) < max(min_diff, 1e-12)]


def response_scores(model: RewardModel, comparisons: Sequence[Comparison], batch_size: int = 32) -> list[np.ndarray]:
    """Rewards of every comparison's responses (K,), each distinct (prompt, response) scored once."""
    keys = list(dict.fromkeys((c.prompt, r) for c in comparisons for r in c.responses))
    reward = dict(zip(keys, model.score_batch([k[0] for k in keys], [k[1] for k in keys], batch_size=batch_size)))
    return [np.array([reward[(c.prompt, r)] for r in c.responses]) for c in comparisons]


def score_stream(model: RewardModel, comparisons: Iterable[Comparison], predictions_path: Path, *,
                 group_by: Sequence[str] = (), batch_size: int = 32, chunk_size: int = 512,
                 min_rating_diff: float = 1.0, keep_worst: int = 20, progress: bool = True) -> ScoredPairs:
    """Score every pair of ``comparisons``; write ``predictions.jsonl``; return the per-pair columns."""
    out = ScoredPairs(fields={name: [] for name in (*group_by, *SECTION_FIELDS)})
    counter = itertools.count()
    bar = tqdm(desc="scoring", unit="pair", disable=not progress, dynamic_ncols=True)
    with predictions_path.open("w") as fh:
        for chunk in _chunks(comparisons, chunk_size):
            for c, rs in zip(chunk, response_scores(model, chunk, batch_size)):
                if c.scores is not None:
                    out.model_scores.append(rs)
                    out.human_scores.append(np.asarray(c.scores, dtype=np.float64))
                out.tie_margins.extend(abs(rs[i] - rs[j]) for i, j in _tie_pairs(c, min_rating_diff))
                for w, l, _ in c.pairs:
                    margin = float(rs[w] - rs[l])
                    prob = float(preference_probability(margin, model.temperature))
                    record = {"source": c.source, "prompt": c.prompt, "chosen": c.responses[w],
                              "rejected": c.responses[l], "chosen_score": float(rs[w]),
                              "rejected_score": float(rs[l]), "margin": margin, "probability": prob,
                              "correct": margin > 0}
                    fh.write(json.dumps(record, ensure_ascii=False) + "\n")
                    out.chosen.append(float(rs[w]))
                    out.rejected.append(float(rs[l]))
                    out.chosen_len.append(len(c.responses[w]))
                    out.rejected_len.append(len(c.responses[l]))
                    for name in out.fields:
                        out.fields[name].append(c.field_value(name))
                    if margin < 0:  # keep the most confident errors
                        item = (1.0 - prob, next(counter), record)
                        if len(out.worst) < keep_worst:
                            heapq.heappush(out.worst, item)
                        elif item[0] > out.worst[0][0]:
                            heapq.heapreplace(out.worst, item)
                    bar.update(1)
    bar.close()
    out.worst = [r for _, _, r in sorted(out.worst, key=lambda t: (-t[0], t[1]))]
    return out
