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

from rewardlab.contracts.schema import Comparison, response_key, response_length
from rewardlab.metrics.pairwise import preference_probability
from rewardlab.scoring import RewardModel

SECTION_FIELDS = ("subset", "section")
ATTRIBUTE_FIELD = "attribute"  # always recorded: the head each pair was judged on


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
    outcome_probs: list[np.ndarray] = field(default_factory=list)  # every pair's (a, b, tie) probabilities
    outcome_labels: list[int] = field(default_factory=list)  # 0: a won, 1: b won, 2: tie
    position_consistent: list[bool] = field(default_factory=list)  # pairwise kinds: both orders alone agree
    worst: list = field(default_factory=list)  # heap of (-confidence_wrong, n, record)

    boundaries: list[dict] = field(default_factory=list)  # list lengths after each chunk (to merge shards)

    @property
    def margins(self) -> np.ndarray:
        return np.asarray(self.chosen) - np.asarray(self.rejected)

    def _lists(self) -> dict[str, list]:
        out = {name: getattr(self, name) for name in LIST_COLUMNS}
        out.update({f"fields.{k}": v for k, v in self.fields.items()})
        return out

    def mark_chunk(self) -> None:
        self.boundaries.append({name: len(values) for name, values in self._lists().items()})

    def to_json(self) -> dict:
        """Plain JSON (numbers and lists) of the columns, the chunk boundaries and the worst errors."""
        lists = {k: [v.tolist() if isinstance(v, np.ndarray) else v for v in values]
                 for k, values in self._lists().items()}
        return {"lists": lists, "boundaries": self.boundaries, "worst": self.worst}

    @classmethod
    def merge(cls, shards: list[dict], keep_worst: int = 20) -> "ScoredPairs":
        """Shards of :meth:`to_json` (process r scored chunks r, r + N, ...) back in chunk order."""
        n = len(shards)
        out = cls(fields={k.split(".", 1)[1]: [] for k in shards[0]["lists"] if k.startswith("fields.")})
        target = out._lists()
        starts = [dict.fromkeys(s["lists"], 0) for s in shards]
        taken = [0] * n
        for k in itertools.count():
            r = k % n
            if taken[r] >= len(shards[r]["boundaries"]):
                break
            end = shards[r]["boundaries"][taken[r]]
            for name, values in shards[r]["lists"].items():
                target[name].extend(values[starts[r][name]: end[name]])
                starts[r][name] = end[name]
            taken[r] += 1
        out.model_scores = [np.asarray(x) for x in out.model_scores]
        out.human_scores = [np.asarray(x) for x in out.human_scores]
        out.outcome_probs = [np.asarray(x) for x in out.outcome_probs]
        worst = [w for s in shards for w in s["worst"]]
        out.worst = sorted(worst, key=lambda r: -abs(r["margin"]))[:keep_worst]
        return out


LIST_COLUMNS = ("chosen", "rejected", "chosen_len", "rejected_len", "model_scores", "human_scores", "tie_margins",
                "outcome_probs", "outcome_labels", "position_consistent")


def _chunks(items: Iterable[Comparison], size: int) -> Iterator[list[Comparison]]:
    it = iter(items)
    while chunk := list(itertools.islice(it, size)):
        yield chunk


def _tie_pairs(c: Comparison, min_diff: float) -> list[tuple[int, int]]:
    if c.scores is None:
        return []
    s = c.scores
    return [(i, j) for i in range(len(s)) for j in range(i + 1, len(s)) if abs(s[i] - s[j]) < max(min_diff, 1e-12)]


def pair_margins(model: RewardModel, comparisons: Sequence[Comparison], batch_size: int = 32) -> np.ndarray:
    """The model's margin for the winner of every decided pair: r(winner) - r(loser) on the pair's head
    (log P(winner) - log P(loser) for pairwise kinds)."""
    return np.array([j.chosen[k] - j.rejected[k] for c, j in zip(comparisons, model.judge(comparisons, batch_size=batch_size))
                     for k, p in enumerate(c.pairs) if not p.tie])


def ab_frame(pair, log_probs: np.ndarray) -> tuple[np.ndarray, int]:
    """A pair's outcome probabilities in the (a, b, tie) frame of its responses (a = the lower index) and its label."""
    probs = np.exp(log_probs)
    probs = probs / probs.sum()
    if pair.winner < pair.loser:
        return probs, 2 if pair.tie else 0
    return probs[[1, 0, 2]], 2 if pair.tie else 1


def _display(response: object) -> str:
    return response if isinstance(response, str) else response_key(response)


def score_stream(model: RewardModel, comparisons: Iterable[Comparison], predictions_path: Path, *,
                 group_by: Sequence[str] = (), batch_size: int = 32, chunk_size: int = 512,
                 min_rating_diff: float = 1.0, keep_worst: int = 20, progress: bool = True,
                 process_index: int = 0, num_processes: int = 1) -> ScoredPairs:
    """Score every pair of ``comparisons``; write ``predictions.jsonl``; return the per-pair columns.

    With several processes, this one scores chunks ``process_index``, ``process_index + num_processes``, ...
    (see :meth:`ScoredPairs.merge`)."""
    out = ScoredPairs(fields={name: [] for name in (*group_by, *SECTION_FIELDS, ATTRIBUTE_FIELD)})
    counter = itertools.count()
    bar = None
    with predictions_path.open("w") as fh:
        for n_chunk, chunk in enumerate(_chunks(comparisons, chunk_size)):
            # started once the model is loaded and the first chunk read, so its rate is the scoring's alone
            if bar is None:
                bar = tqdm(desc="scoring", unit="pair", disable=not progress, dynamic_ncols=True)
            if n_chunk % num_processes != process_index:
                continue
            for c, judged in zip(chunk, model.judge(chunk, batch_size=batch_size)):
                if judged.rewards is not None:  # single-response kinds: rank statistics of the overall reward
                    overall = judged.rewards[:, -1]
                    if c.scores is not None:
                        out.model_scores.append(overall)
                        out.human_scores.append(np.asarray(c.scores, dtype=np.float64))
                    if not any(p.tie for p in c.pairs):  # ratings closer than min_rating_diff count as ties
                        out.tie_margins.extend(abs(overall[i] - overall[j]) for i, j in _tie_pairs(c, min_rating_diff))
                for k, p in enumerate(c.pairs):
                    probs, label = ab_frame(p, judged.log_probs[k])
                    out.outcome_probs.append(probs)
                    out.outcome_labels.append(label)
                    if judged.consistent is not None:
                        out.position_consistent.append(bool(judged.consistent[k]))
                    w, l = p.winner, p.loser
                    margin = float(judged.chosen[k] - judged.rejected[k])
                    if p.tie:  # no side is right: the tie statistics read these, accuracy does not
                        out.tie_margins.append(abs(margin))
                        continue
                    prob = float(preference_probability(margin, model.temperature))
                    record = {"source": c.source, "prompt": c.prompt, "chosen": _display(c.responses[w]),
                              "rejected": _display(c.responses[l]), "attribute": p.attribute,
                              "chosen_score": float(judged.chosen[k]), "rejected_score": float(judged.rejected[k]),
                              "margin": margin,
                              "probability": prob, "correct": margin > 0}
                    fh.write(json.dumps(record, ensure_ascii=False) + "\n")
                    out.chosen.append(float(judged.chosen[k]))
                    out.rejected.append(float(judged.rejected[k]))
                    out.chosen_len.append(response_length(c.responses[w]))
                    out.rejected_len.append(response_length(c.responses[l]))
                    for name in out.fields:
                        out.fields[name].append(p.attribute if name == ATTRIBUTE_FIELD else c.field_value(name))
                    if margin < 0:  # keep the most confident errors
                        item = (1.0 - prob, next(counter), record)
                        if len(out.worst) < keep_worst:
                            heapq.heappush(out.worst, item)
                        elif item[0] > out.worst[0][0]:
                            heapq.heapreplace(out.worst, item)
                    bar.update(1)
            out.mark_chunk()
    if bar is not None:
        bar.close()
    out.worst = [r for _, _, r in sorted(out.worst, key=lambda t: (-t[0], t[1]))]
    return out
