"""Process-reward metrics: pure functions of per-step probabilities P(step correct) and step labels.

A solution is a list of steps, each labelled right (True) or wrong (False); the model gives each step
p = P(step correct). A step is *predicted wrong* when p < threshold (0.5 unless told), as ProcessBench
reads a PRM (the first step whose argmax is "wrong"). Three groups of numbers, all in
:func:`process_summary`:

- **steps**: accuracy, precision / recall / F1 of the *wrong-step* class (the one a PRM exists to find),
  ROC-AUC, Brier and ECE of p against the step labels;
- **first_error** (ProcessBench): the predicted first error is the first step predicted wrong, or none.
  ``error_accuracy`` is the share of solutions with an error whose first error is found at exactly the right
  step; ``correct_accuracy`` the share of correct solutions where no error is predicted; ``f1`` their
  harmonic mean (0 when both are 0);
- **solution_accuracy**: a solution is predicted correct when an aggregate of its step probabilities
  (``min``, ``last``, ``product``, ``mean``) is >= threshold; accuracy against "every step is right".

Intervals resample *solutions*, not steps: the steps of one solution share a problem and an error, so they
are not independent draws.

Example:
    >>> probs = [[0.9, 0.2, 0.1], [0.8, 0.7]]
    >>> labels = [[True, False, False], [True, True]]
    >>> first_error_scores(probs, labels)
    {'error_accuracy': 1.0, 'correct_accuracy': 1.0, 'f1': 1.0}
    >>> predicted_first_error([0.9, 0.6, 0.4, 0.8])
    2
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.special import logit

from rewardlab.metrics.pairwise import binary_precision_recall_f1, expected_calibration_error, roc_auc

AGGREGATIONS: dict[str, Callable[[np.ndarray], float]] = {
    "min": lambda p: float(np.min(p)),
    "last": lambda p: float(p[-1]),
    "product": lambda p: float(np.prod(p)),
    "mean": lambda p: float(np.mean(p)),
}
_EPS = 1e-12  # probabilities are clipped here before the logit that feeds the ECE


@dataclass(frozen=True)
class StepArrays:
    """N solutions' steps laid end to end: ``p`` and ``y`` are (S,), solution i owns
    ``p[starts[i] : starts[i] + lengths[i]]``."""

    p: np.ndarray
    y: np.ndarray
    starts: np.ndarray
    lengths: np.ndarray

    def steps_of(self, solutions: np.ndarray) -> np.ndarray:
        """Step indices (in order, repeats kept) of the solutions ``solutions`` (a bootstrap resample)."""
        lengths = self.lengths[solutions]
        offsets = np.repeat(np.cumsum(lengths) - lengths, lengths)
        return np.repeat(self.starts[solutions], lengths) + np.arange(int(lengths.sum())) - offsets


def step_arrays(probs: Sequence[Sequence[float]], labels: Sequence[Sequence[bool]]) -> StepArrays:
    """Check and flatten per-solution probabilities and labels; ValueError names the solution at fault."""
    if len(probs) != len(labels):
        raise ValueError(f"{len(probs)} solutions of probabilities but {len(labels)} of labels; give one of each "
                         "per solution")
    if not len(probs):
        raise ValueError("no solutions to evaluate")
    for i, (p, y) in enumerate(zip(probs, labels)):
        if len(p) != len(y) or not len(p):
            raise ValueError(f"solution {i} has {len(p)} probabilities and {len(y)} labels; expected one per step "
                             "and at least one step")
    lengths = np.array([len(p) for p in probs], dtype=np.int64)
    p = np.concatenate([np.asarray(x, dtype=np.float64) for x in probs])
    y = np.concatenate([np.asarray(x, dtype=bool) for x in labels])
    bad = ~np.isfinite(p) | (p < 0) | (p > 1)
    if bad.any():
        owner = int(np.searchsorted(np.cumsum(lengths), np.flatnonzero(bad)[0], side="right"))
        raise ValueError(f"solution {owner} has a step probability {float(p[bad][0])} outside [0, 1]; score_steps must "
                         "return probabilities, not logits")
    return StepArrays(p=p, y=y, starts=np.cumsum(lengths) - lengths, lengths=lengths)


def step_classification(p: np.ndarray, y: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """Step-level metrics; the positive class of precision / recall / F1 is the *wrong* step.

    ``ece`` is the pairwise top-label ECE (equal-width bins of max(p, 1-p) over [0.5, 1]) of the probability
    given to each step's true label; ROC-AUC is the same whichever class is positive.
    """
    p, y = np.asarray(p, dtype=np.float64), np.asarray(y, dtype=bool)
    wrong, flagged = ~y, p < threshold
    precision, recall, f1 = binary_precision_recall_f1(wrong, flagged)
    return {
        "step_accuracy": float(np.mean(flagged == wrong)),
        "wrong_step_precision": precision,
        "wrong_step_recall": recall,
        "wrong_step_f1": f1,
        "roc_auc": roc_auc(y, p),
        "brier": float(np.mean((p - y) ** 2)),
        "ece": step_calibration(p, y)[0],
    }


def step_calibration(p: np.ndarray, y: np.ndarray, n_bins: int = 10) -> tuple[float, list[dict]]:
    """Top-label ECE and reliability bins of step probabilities, by :func:`expected_calibration_error`.

    That function reads margins whose sigmoid is the probability of the true outcome, so each step's margin is
    logit(p) where the step is right and logit(1 - p) where it is wrong.
    """
    p = np.clip(np.asarray(p, dtype=np.float64), _EPS, 1 - _EPS)
    return expected_calibration_error(np.where(np.asarray(y, dtype=bool), logit(p), -logit(p)), n_bins=n_bins)


def predicted_first_error(probs: Sequence[float], threshold: float = 0.5) -> int | None:
    """Index of the first step with probability below ``threshold``; None when there is none."""
    below = np.flatnonzero(np.asarray(probs, dtype=np.float64) < threshold)
    return int(below[0]) if len(below) else None


def harmonic_mean(a: float, b: float) -> float:
    """ProcessBench's F1: 2ab / (a + b), 0 when both are 0, nan when either is nan."""
    if math.isnan(a) or math.isnan(b):
        return float("nan")
    return 2 * a * b / (a + b) if a + b else 0.0


def _first_index(mask: np.ndarray) -> int:
    hits = np.flatnonzero(mask)
    return int(hits[0]) if len(hits) else -1


def _first_errors(arrays: StepArrays, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """(true, predicted) first-error index per solution, -1 for none. Shape: (N,), (N,)."""
    spans = [slice(s, s + n) for s, n in zip(arrays.starts, arrays.lengths)]
    return (np.array([_first_index(~arrays.y[s]) for s in spans], dtype=np.int64),
            np.array([_first_index(arrays.p[s] < threshold) for s in spans], dtype=np.int64))


def _first_error_from(true: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    has_error, match = true >= 0, true == pred
    error_acc = float(match[has_error].mean()) if has_error.any() else float("nan")
    correct_acc = float(match[~has_error].mean()) if (~has_error).any() else float("nan")
    return {"error_accuracy": error_acc, "correct_accuracy": correct_acc, "f1": harmonic_mean(error_acc, correct_acc)}


def first_error_scores(probs: Sequence[Sequence[float]], labels: Sequence[Sequence[bool]],
                       threshold: float = 0.5) -> dict[str, float]:
    """ProcessBench's accuracies (on solutions with an error, on correct ones) and their harmonic mean."""
    return _first_error_from(*_first_errors(step_arrays(probs, labels), threshold))


def solution_predictions(arrays: StepArrays, how: str, threshold: float = 0.5) -> np.ndarray:
    """Whether each solution is predicted correct: aggregate ``how`` of its step probabilities >= threshold."""
    if how not in AGGREGATIONS:
        raise ValueError(f"aggregate={how!r}; choose one of {', '.join(AGGREGATIONS)}")
    agg = AGGREGATIONS[how]
    return np.array([agg(arrays.p[s:s + n]) >= threshold for s, n in zip(arrays.starts, arrays.lengths)])


def intervals(fn: Callable[[np.ndarray], dict[str, float]], n: int, *, n_boot: int = 1000, seed: int = 0
              ) -> dict[str, dict]:
    """``fn(all n units)`` as ``{"value", "ci95"}`` per key, with percentile bootstrap intervals over units.

    The draws are those of :func:`rewardlab.metrics.pairwise.bootstrap_ci` with the same seed (so a key's
    interval is the one it gives), made once for every key. Non-finite values become None.
    """
    point = fn(np.arange(n))
    rng = np.random.default_rng(seed)
    draws = [fn(rng.integers(0, n, n)) for _ in range(n_boot)] if n else []
    out = {}
    for key, value in point.items():
        values = np.array([d[key] for d in draws], dtype=np.float64)
        values = values[np.isfinite(values)]
        ci = [float(np.quantile(values, 0.025)), float(np.quantile(values, 0.975))] if len(values) else [None, None]
        out[key] = {"value": float(value) if math.isfinite(value) else None, "ci95": ci}
    return out


def process_summary(probs: Sequence[Sequence[float]], labels: Sequence[Sequence[bool]], *, threshold: float = 0.5,
                    n_boot: int = 1000, seed: int = 0, majority: bool | None = None) -> dict:
    """Every process-reward metric, JSON-ready, each as ``{"value", "ci95"}`` (solutions resampled).

    Baselines for ``solution_accuracy``:

    - ``majority_class``: always predict the commoner outcome: ``majority`` (True = correct) when given,
      e.g. the training set's, otherwise this set's (correct on a tie). Any useful model must beat it.
    - ``last_step_only``: the model judging a solution by its last step's probability alone (the ``last``
      aggregation, repeated here to sit beside the others).
    - ``last_step_label``: a property of the *data*, not the model: the accuracy of calling a solution correct
      exactly when its last step's label is right. Under Math-Shepherd labels (every step after the first error
      wrong) it is 1.0, so the last step carries the whole outcome; below 1.0, the data has solutions whose last
      step is right after an earlier error (PRM800K-style labels), which an outcome-only judge would miss.
    """
    arrays = step_arrays(probs, labels)
    true_first, pred_first = _first_errors(arrays, threshold)
    correct = true_first < 0
    predicted = {how: solution_predictions(arrays, how, threshold) for how in AGGREGATIONS}
    if majority is None:
        majority = bool(correct.mean() >= 0.5)
    last_label = arrays.y[arrays.starts + arrays.lengths - 1]

    def steps(idx: np.ndarray) -> dict[str, float]:
        at = arrays.steps_of(idx)
        return step_classification(arrays.p[at], arrays.y[at], threshold)

    def solutions(idx: np.ndarray) -> dict[str, float]:
        out = {f"first_error.{k}": v for k, v in _first_error_from(true_first[idx], pred_first[idx]).items()}
        out |= {f"solution_accuracy.{how}": float(np.mean(pred[idx] == correct[idx])) for how, pred in
                predicted.items()}
        out["baselines.majority_class"] = float(np.mean(correct[idx] == majority))
        out["baselines.last_step_label"] = float(np.mean(last_label[idx] == correct[idx]))
        return out

    grouped: dict[str, dict] = {"steps": intervals(steps, len(arrays.lengths), n_boot=n_boot, seed=seed)}
    for key, value in intervals(solutions, len(arrays.lengths), n_boot=n_boot, seed=seed).items():
        block, name = key.split(".")
        grouped.setdefault(block, {})[name] = value
    grouped["baselines"]["last_step_only"] = grouped["solution_accuracy"]["last"]
    grouped["baselines"]["majority_class"]["predicts"] = "correct" if majority else "has an error"
    return {
        "threshold": threshold,
        "counts": {"solutions": len(arrays.lengths), "steps": len(arrays.p),
                   "wrong_steps": int((~arrays.y).sum()), "solutions_with_error": int((~correct).sum()),
                   "correct_solutions": int(correct.sum())},
        **grouped,
        "calibration": {"bins_uniform": step_calibration(arrays.p, arrays.y)[1]},
    }
