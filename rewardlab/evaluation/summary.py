"""Scored pairs → the numbers in ``metrics.json``, each with a bootstrap 95 % interval."""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np

from rewardlab.evaluation.predict import ATTRIBUTE_FIELD, SECTION_FIELDS, ScoredPairs
from rewardlab.metrics import pairwise as M
from rewardlab.metrics.benchmarks import length_rule_accuracy

SUBSET_FIELD = "subset"  # benchmarks name their subsets here: always broken down by it
HIGH_CONFIDENCE = {"top10": 0.10, "top25": 0.25}
LENGTH_RATIO_BUCKETS = (1.0, 1.25, 1.5, 2.0, 4.0, math.inf)  # longer / shorter response, in characters


def headline_metrics(margins: np.ndarray, temperature: float = 1.0) -> dict[str, float]:
    """Every pair-level metric of one set of margins (one bootstrap resample, or the real data)."""
    out = {
        "accuracy": M.pairwise_accuracy(margins),
        "log_loss": M.pairwise_log_loss(margins, temperature),
        "ece": M.expected_calibration_error(margins, strategy="uniform", temperature=temperature)[0],
        "ece_equal_mass": M.expected_calibration_error(margins, strategy="quantile", temperature=temperature)[0],
        "mean_margin": float(np.mean(margins)),
        "std_margin": float(np.std(margins)),
    }
    out.update(M.classification_metrics(margins, temperature))
    for name, fraction in HIGH_CONFIDENCE.items():
        out[f"accuracy_{name}"] = M.high_confidence_accuracy(margins, fraction)["accuracy"]
    return out


def with_intervals(fn: Callable[[np.ndarray], dict[str, float]], margins: np.ndarray, n_boot: int,
                   seed: int = 0) -> dict[str, dict]:
    """``fn(margins)`` with a percentile bootstrap interval for each of its values (pairs resampled)."""
    point = fn(margins)
    rng = np.random.default_rng(seed)
    draws = [fn(margins[rng.integers(0, len(margins), len(margins))]) for _ in range(n_boot)]
    out = {}
    for key, value in point.items():
        values = np.array([d[key] for d in draws], dtype=np.float64)
        values = values[np.isfinite(values)]
        ci = [float(np.quantile(values, 0.025)), float(np.quantile(values, 0.975))] if len(values) else [None, None]
        out[key] = {"value": _finite(value), "ci95": ci}
    return out


def _finite(x: float) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else x


def _small(margins: np.ndarray, temperature: float) -> dict[str, float]:
    return {"accuracy": M.pairwise_accuracy(margins), "log_loss": M.pairwise_log_loss(margins, temperature)}


def length_rules(length_diff: np.ndarray, n_boot: int, seed: int = 0) -> dict:
    """The length-only rules' accuracy (prefer longer, prefer shorter) with bootstrap intervals, over the pairs
    whose lengths differ (``pairs``); ``len(chosen) - len(rejected)`` per pair."""
    differ = np.asarray(length_diff)[np.asarray(length_diff) != 0]
    if not len(differ):
        return {"pairs": 0}
    return {"pairs": len(differ), **with_intervals(length_rule_accuracy, differ, n_boot, seed)}


def grouped(margins: np.ndarray, values: Sequence, temperature: float, n_boot: int,
            length_diff: np.ndarray | None = None) -> dict[str, dict]:
    """Accuracy and log-loss (with intervals) for each distinct value of a field, and beside them the
    length-only rules on the same pairs when ``length_diff`` (len(chosen) - len(rejected)) is given."""
    values = np.array(["(none)" if v is None else str(v) for v in values], dtype=object)
    out = {}
    for value in sorted(set(values)):
        m = margins[values == value]
        out[value] = {"pairs": int(len(m)), **with_intervals(lambda x: _small(x, temperature), m, n_boot)}
        if length_diff is not None:
            out[value]["length_rules"] = length_rules(length_diff[values == value], n_boot)
    return out


def by_attribute(margins: np.ndarray, attributes: Sequence, temperature: float, n_boot: int) -> dict | None:
    """Every headline metric (with intervals) for the pairs of each attribute; ``(overall)`` for the
    aggregate's pairs. ``None`` when the data judges no attribute."""
    if all(a is None for a in attributes):
        return None
    values = np.array(["(overall)" if a is None else str(a) for a in attributes], dtype=object)
    return {v: {"pairs": int((values == v).sum()),
                **with_intervals(lambda m: headline_metrics(m, temperature), margins[values == v], n_boot)}
            for v in dict.fromkeys(values)}


def length_bias(scored: ScoredPairs, temperature: float, n_boot: int) -> dict:
    """How much the model's preferences follow response length rather than content.

    Accuracy where the longer response is the preferred one vs where the shorter one
    is (a model that learnt "longer is better" does well on the first, badly on the
    second), their mean (length-balanced accuracy: 0.5 for any length-only rule), the
    accuracy of the two length-only rules on this data, the correlation of reward with
    length, and accuracy within buckets of the length ratio of the two responses.
    """
    margins = scored.margins
    chosen_len, rejected_len = np.asarray(scored.chosen_len), np.asarray(scored.rejected_len)
    diff = chosen_len - rejected_len
    out: dict = {}
    for name, mask in (("longer_preferred", diff > 0), ("shorter_preferred", diff < 0), ("equal_length", diff == 0)):
        if mask.any():
            out[name] = {"pairs": int(mask.sum()), **with_intervals(lambda x: _small(x, temperature), margins[mask],
                                                                    n_boot)}
    differ = diff != 0
    if not differ.any():  # images, or texts of equal length: nothing to say about length
        out["model_prefers_longer_rate"] = None
        return out
    out["model_prefers_longer_rate"] = float((np.sign(margins) == np.sign(diff))[differ].mean())
    ci = M.bootstrap_ci(lambda idx: M.length_balanced_accuracy(margins[idx], diff[idx]), len(margins), n_boot=n_boot)
    out["length_balanced_accuracy"] = {"value": _finite(M.length_balanced_accuracy(margins, diff)), "ci95": list(ci)}
    rules = length_rules(diff, n_boot)
    out["length_only_rules"] = {"prefer_longer": rules["prefer_longer"]["value"],
                                "prefer_shorter": rules["prefer_shorter"]["value"], "pairs": rules["pairs"]}
    out["length_only_rules_ci95"] = {name: rules[name]["ci95"] for name in ("prefer_longer", "prefer_shorter")}
    out["reward_length_correlation"] = M.reward_length_correlation(
        np.concatenate([scored.chosen, scored.rejected]), np.concatenate([chosen_len, rejected_len]))
    ratio = np.maximum(chosen_len, rejected_len) / np.maximum(np.minimum(chosen_len, rejected_len), 1)
    buckets = {}
    for lo, hi in zip(LENGTH_RATIO_BUCKETS[:-1], LENGTH_RATIO_BUCKETS[1:]):
        mask = (ratio >= lo) & (ratio < hi) & differ
        if mask.any():
            name = f"{lo:g}-{hi:g}x" if math.isfinite(hi) else f">={lo:g}x"
            buckets[name] = {"pairs": int(mask.sum()), **with_intervals(lambda x: _small(x, temperature),
                                                                        margins[mask], n_boot)}
    out["by_length_ratio"] = buckets
    return out


def sections(margins: np.ndarray, values: Sequence) -> dict | None:
    """RewardBench-style: example-weighted accuracy within each section, plain mean across sections."""
    if all(v is None for v in values):
        return None
    values = np.array(["(none)" if v is None else str(v) for v in values], dtype=object)
    per = {v: {"pairs": int((values == v).sum()), "accuracy": M.pairwise_accuracy(margins[values == v])}
           for v in sorted(set(values))}
    return {"per_section": per, "aggregate": float(np.mean([s["accuracy"] for s in per.values()]))}


def rank_metrics(scored: ScoredPairs, n_boot: int) -> dict | None:
    if not any(len(s) >= 3 for s in scored.human_scores):
        return None
    point = M.rank_correlations(scored.model_scores, scored.human_scores)
    n = len(scored.model_scores)
    out = {"prompts": point["prompts"]}
    for key in ("spearman", "kendall"):
        ci = M.bootstrap_ci(lambda idx: M.rank_correlations([scored.model_scores[i] for i in idx],
                                                            [scored.human_scores[i] for i in idx])[key],
                            n, n_boot=n_boot)
        out[key] = {"value": _finite(point[key]), "ci95": list(ci)}
    return out


def breakdown_fields(scored: ScoredPairs, group_by: Sequence[str]) -> list[str]:
    """The fields metrics are broken down by: ``group_by``, and ``subset`` whenever the data names one."""
    auto = [SUBSET_FIELD] if any(v is not None for v in scored.fields.get(SUBSET_FIELD, ())) else []
    return list(dict.fromkeys([*group_by, *auto]))


def summarize(scored: ScoredPairs, *, temperature: float = 1.0, group_by: Sequence[str] = (),
              n_boot: int = 1000) -> dict:
    margins = scored.margins
    chosen, rejected = np.asarray(scored.chosen), np.asarray(scored.rejected)
    diff = np.asarray(scored.chosen_len) - np.asarray(scored.rejected_len)
    out = {
        "pairs": int(len(margins)),
        "temperature": temperature,
        "overall": with_intervals(lambda m: headline_metrics(m, temperature), margins, n_boot),
        "high_confidence": {k: M.high_confidence_accuracy(margins, f) for k, f in HIGH_CONFIDENCE.items()},
        "calibration": {
            "bins_uniform": M.expected_calibration_error(margins, strategy="uniform", temperature=temperature)[1],
            "bins_equal_mass": M.expected_calibration_error(margins, strategy="quantile",
                                                            temperature=temperature)[1],
        },
        "rewards": {"chosen": M.reward_stats(chosen), "rejected": M.reward_stats(rejected),
                    "all": M.reward_stats(np.concatenate([chosen, rejected])), "margin": M.reward_stats(margins)},
        "length_bias": length_bias(scored, temperature, n_boot),
        "ties": {"pairs": len(scored.tie_margins),
                 "note": "pairs the data calls a tie are excluded from accuracy; their mean |margin| is shown",
                 "mean_abs_margin": float(np.mean(scored.tie_margins)) if scored.tie_margins else None},
        "groups": {name: grouped(margins, scored.fields[name], temperature, n_boot, diff)
                   for name in breakdown_fields(scored, group_by)},
    }
    attributes = by_attribute(margins, scored.fields[ATTRIBUTE_FIELD], temperature, n_boot)
    if attributes:
        out["attributes"] = attributes
    ranking = rank_metrics(scored, n_boot)
    if ranking:
        out["ranking"] = ranking
    for name in SECTION_FIELDS:
        section = sections(margins, scored.fields[name])
        if section:
            out["sections"] = {"field": name, **section}
            break
    return out


def fold_summary(per_fold: Sequence[dict]) -> dict:
    """Mean and standard deviation over folds of every number all folds report (flat dicts)."""
    numeric = [m for m in per_fold[0] if all(isinstance(f.get(m), (int, float)) and not isinstance(f.get(m), bool)
                                             for f in per_fold)]
    return {"mean": {m: float(np.mean([f[m] for f in per_fold])) for m in numeric},
            "std": {m: float(np.std([f[m] for f in per_fold], ddof=1)) for m in numeric}}
