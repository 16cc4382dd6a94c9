"""What an evaluation adds for the public benchmarks, for pairwise judges and for data with ties.

- :func:`benchmark_block`: RewardBench v1 section scores, RewardBench 2 best-of-N (and its Ties score),
  PandaLM annotator agreement beside the model's; read from ``meta["benchmark"]``, ``meta["subset"]``,
  ``meta["id"]``, ``meta["num_correct"]`` and ``meta["annotators"]`` of the comparisons the benchmark
  readers make.
- :func:`position_bias_block`: a judge that reads both responses (``model.kind.prepare``), scored in each
  order on its own.
- :func:`three_way_block`: the A / B / tie metrics, saying when the model cannot predict a tie, with the
  training data's tie rate beside the evaluation data's class prior.

Each walks the comparisons again in the order they were scored; the per-pair columns of
:class:`~rewardlab.evaluation.predict.ScoredPairs` (decided pairs; outcome columns for every pair) line up
with them.
"""

from __future__ import annotations

import itertools
import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from rewardlab.contracts.schema import Comparison
from rewardlab.evaluation.predict import ScoredPairs
from rewardlab.metrics import benchmarks as B
from rewardlab.metrics.outcomes import outcome_metrics
from rewardlab.metrics.pairwise import bootstrap_ci
from rewardlab.scoring import RewardModel

TIES_SUBSET = "ties"  # RewardBench 2's subset scored by its own rule; ids "ref:<prompt>" | "tied:<prompt>"
ANNOTATOR_CODES = (1, 2, 0)  # the model's a / b / tie in PandaLM's codes (1: response1, 2: response2, 0: tie)
NO_TIES_NOTE = ("not applicable: the {name} outcome model gives every tie probability 0, so each tie costs "
                "-ln(1e-12) = 27.6 nats (clipped); read accuracy and macro-F1, or train a tie-aware outcome "
                "model (davidson, rao_kupper, three_class)")


def is_benchmark(sample: Sequence[Comparison]) -> bool:
    """Whether the comparisons come from a benchmark reader (they name their benchmark in ``meta``)."""
    return any("benchmark" in c.meta for c in sample)


def _with_ci(values: list[float], n_boot: int) -> dict:
    arr = np.asarray(values, dtype=np.float64)
    ci = bootstrap_ci(lambda idx: float(arr[idx].mean()), len(arr), n_boot=n_boot)
    return {"prompts": len(arr), "value": float(arr.mean()), "ci95": list(ci)}


def _walk(scored: ScoredPairs, comparisons: Iterable[Comparison]):
    """(comparison, its decided pairs' column indices, all its pairs' outcome-column indices), in scoring order."""
    decided, every = itertools.count(), itertools.count()
    for c in comparisons:
        yield c, [next(decided) for p in c.pairs if not p.tie], [next(every) for _ in c.pairs]


def benchmark_block(scored: ScoredPairs, comparisons: Iterable[Comparison], *, per_response: bool,
                    n_boot: int = 1000) -> dict:
    """The benchmark's own scores. ``per_response``: the model scores single responses (RewardBench 2's Ties
    needs one score per response; pairwise judges have none)."""
    margins = scored.margins
    names, subset_margins = set(), defaultdict(list)
    bon, ties, annotators, model_codes = defaultdict(list), [], [], []
    for c, rows, every in _walk(scored, comparisons):
        names.add(c.meta.get("benchmark"))
        subset = str(c.meta.get("subset", "(none)"))
        subset_margins[subset].extend(margins[rows])
        if "num_correct" in c.meta and subset.lower() == TIES_SUBSET:
            scores = {}
            for k, p in zip(rows, [p for p in c.pairs if not p.tie], strict=True):
                scores[p.winner], scores[p.loser] = scored.chosen[k], scored.rejected[k]
            winners = {p.winner for p in c.pairs}
            kind, _, prompt_id = str(c.meta.get("id", "")).partition(":")
            ties.append((kind, prompt_id, [scores[i] for i in winners], [s for i, s in scores.items()
                                                                          if i not in winners]))
        elif "num_correct" in c.meta and rows:
            bon[subset].append(B.best_of_n_credit(margins[rows]))
        if "annotators" in c.meta and every:
            annotators.append([int(a) for a in c.meta["annotators"]])
            model_codes.append(ANNOTATOR_CODES[int(np.argmax(scored.outcome_probs[every[0]]))])
    out: dict = {"benchmarks": sorted(str(n) for n in names if n is not None)}
    if "rewardbench" in names:
        out["rewardbench"] = B.rewardbench_sections(
            {s: float(np.mean((np.asarray(m) > 0) + 0.5 * (np.asarray(m) == 0))) for s, m in subset_margins.items()})
    if bon or ties:
        out["best_of_n"] = _best_of_n(bon, ties, per_response, n_boot)
    if annotators:
        out["annotators"] = B.annotator_agreement(np.asarray(annotators), np.asarray(model_codes))
    return out


def _best_of_n(bon: dict[str, list[float]], ties: list, per_response: bool, n_boot: int) -> dict:
    """Best-of-N accuracy per subset and over all prompts; Ties by its own rule; the leaderboard's mean of
    the subsets' scores."""
    out: dict = {"subsets": {s: _with_ci(v, n_boot) for s, v in sorted(bon.items())}}
    if bon:
        out["overall"] = _with_ci([x for v in bon.values() for x in v], n_boot)
    if ties:
        out["ties"] = B.ties_score(ties) if per_response else {
            "score": None, "note": "not applicable: the Ties score compares the scores of single responses, "
                                   "which a pairwise judge does not give"}
    scores = [s["value"] for s in out["subsets"].values()] + ([out["ties"]["score"]] if ties else [])
    out["mean_over_subsets"] = float(np.mean(scores)) if scores and None not in scores else None
    return out


def position_bias_block(model: RewardModel, comparisons: Iterable[Comparison], *, batch_size: int = 32,
                        chunk_size: int = 512) -> dict:
    """A pairwise judge's verdicts with the preferred response shown first and shown second, each order on
    its own (the model's prediction averages both): accuracy in each, flip rate, first-position win rate."""
    heads = model.model.head_index()
    first, second = [], []
    it = iter(comparisons)
    while chunk := list(itertools.islice(it, chunk_size)):
        prompts, items, columns = [], [], []
        for c in chunk:
            for p in c.pairs:
                if not p.tie:
                    win, lose = c.responses[p.winner], c.responses[p.loser]
                    prompts += [c.prompt, c.prompt]
                    items += [(win, lose), (lose, win)]
                    columns.append(heads[p.attribute])
        if not items:
            continue
        logits = model.score_heads(prompts, items, batch_size=batch_size)  # (2P, H)
        for k, h in enumerate(columns):
            first.append(int(np.argmax(logits[2 * k, h: h + 3])))
            second.append(int(np.argmax(logits[2 * k + 1, h: h + 3])))
    if not first:
        return {"pairs": 0}
    return B.position_bias(np.asarray(first), np.asarray(second))


def training_tie_rate(model: RewardModel, model_path: str) -> float | None:
    """The share of ties among the training pairs: from the checkpoint, or the run's metrics.json beside it."""
    if "train_tie_rate" in model.metadata:
        return float(model.metadata["train_tie_rate"])
    metrics = Path(model_path).parent / "metrics.json"
    try:
        rate = json.loads(metrics.read_text()).get("train", {}).get("tie_rate")
    except (OSError, ValueError):
        return None
    return None if rate is None else float(rate)


def three_way_block(scored: ScoredPairs, model: RewardModel, model_path: str) -> dict | None:
    """A / B / tie metrics when the data has ties or the model predicts them; ``None`` otherwise."""
    labels = np.asarray(scored.outcome_labels)
    predicts_ties = bool(model.model.outcome.ties)
    if not len(labels) or not (predicts_ties or (labels == 2).any()):
        return None
    out = outcome_metrics(np.asarray(scored.outcome_probs), labels)
    # Scores of single responses cannot depend on position; pairwise kinds average both orders, and here
    # report how often each order alone would have predicted the same outcome.
    out["position_consistency"] = float(np.mean(scored.position_consistent)) if scored.position_consistent else 1.0
    out["model_predicts_ties"] = predicts_ties
    if not predicts_ties and (labels == 2).any():
        out["log_loss_note"] = NO_TIES_NOTE.format(name=model.model.outcome.name)
    rate = training_tie_rate(model, model_path)
    if rate is not None:
        prior = np.array([(1 - rate) / 2, (1 - rate) / 2, rate])
        out["training_prior"] = {"tie": rate, "log_loss": B.prior_log_loss(prior, labels)}
    return out


def benchmark_extras(model: RewardModel, scored: ScoredPairs, sample: Sequence[Comparison], reread, *,
                     batch_size: int = 32, n_boot: int = 1000) -> dict:
    """``benchmark`` (for a benchmark's comparisons) and ``position_bias`` (for a pairwise judge) entries of
    metrics.json; ``reread()`` gives the scored comparisons again, in the same order."""
    out = {}
    if is_benchmark(sample):
        out["benchmark"] = benchmark_block(scored, reread(), per_response=model.kind.prepare is None, n_boot=n_boot)
    if model.kind.prepare is not None:
        out["position_bias"] = position_bias_block(model, reread(), batch_size=batch_size)
    return out
