"""Metrics for three-way A / B / tie predictions: pure functions of probabilities and labels.

Classes are ordered :data:`OUTCOMES` = ``("a", "b", "tie")``. Labels are int
arrays (P,) in {0, 1, 2}; probabilities are float arrays (P, 3) whose rows sum
to 1. :func:`outcome_metrics` returns one JSON-ready dict; the plots in
:mod:`rewardlab.evaluation.plots` draw from that dict, so a saved report can be re-plotted.

Example:
    >>> import numpy as np
    >>> probs = np.array([[0.7, 0.2, 0.1], [0.2, 0.5, 0.3], [0.3, 0.3, 0.4]])
    >>> m = outcome_metrics(probs, np.array([0, 1, 0]))
    >>> round(m["accuracy"], 4), round(m["log_loss"], 4)  # 2 of 3 right; -(ln .7 + ln .5 + ln .3) / 3
    (0.6667, 0.7513)
    >>> m["confusion"]
    [[1, 0, 1], [0, 1, 0], [0, 0, 0]]
"""

from __future__ import annotations

import math

import numpy as np
from sklearn.metrics import precision_recall_fscore_support

from rewardlab.contracts.schema import OUTCOMES
from rewardlab.metrics.pairwise import binned_calibration

EPS = 1e-12  # probabilities are clipped here before the log, so a confident miss costs ~27.6 nats, not inf
ROW_SUM_TOL = 1e-4
_SWAP = [1, 0, 2]  # column order that maps a prediction made with A and B swapped back to the original frame


def _check(probs: np.ndarray, labels: np.ndarray, name: str = "probs") -> tuple[np.ndarray, np.ndarray]:
    """Validated float64 (P, 3) probabilities and int64 (P,) labels; ValueError says what is wrong."""
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels)
    if probs.ndim != 2 or probs.shape[1] != len(OUTCOMES):
        raise ValueError(f"{name} has shape {probs.shape}; expected (P, 3) with columns {OUTCOMES}")
    if labels.ndim != 1 or len(labels) != len(probs):
        raise ValueError(f"labels has shape {labels.shape} but {name} has shape {probs.shape}; expected labels (P,) "
                         "with one label per row of probabilities")
    if not len(labels):
        raise ValueError("no pairs: probs and labels are empty")
    if not np.isin(labels, [0, 1, 2]).all():
        bad = np.unique(labels[~np.isin(labels, [0, 1, 2])])[:5].tolist()
        raise ValueError(f"labels must be 0 (a), 1 (b) or 2 (tie); found {bad}")
    if not np.isfinite(probs).all() or (probs < 0).any():
        row = int(np.flatnonzero(~np.isfinite(probs).all(1) | (probs < 0).any(1))[0])
        raise ValueError(f"{name} row {row} = {probs[row].tolist()} has a negative or non-finite probability")
    sums = probs.sum(axis=1)
    if not np.allclose(sums, 1.0, rtol=0.0, atol=ROW_SUM_TOL):
        row = int(np.argmax(np.abs(sums - 1.0)))
        raise ValueError(f"{name} rows must sum to 1 (tolerance {ROW_SUM_TOL}); row {row} sums to {sums[row]:.6g}. "
                         "Apply a softmax to logits first")
    return probs, labels.astype(np.int64)


def prior_probabilities(labels: np.ndarray) -> np.ndarray:
    """Frequency of each outcome among ``labels``. Shape: (P,) -> (3,).

    >>> prior_probabilities(np.array([0, 0, 1, 2])).tolist()
    [0.5, 0.25, 0.25]
    """
    labels = np.asarray(labels)
    if not len(labels):
        raise ValueError("no pairs: labels are empty")
    if labels.ndim != 1 or not np.isin(labels, [0, 1, 2]).all():
        raise ValueError(f"labels must be a (P,) array of 0 (a), 1 (b) or 2 (tie); got shape {labels.shape}")
    return np.bincount(labels.astype(np.int64), minlength=len(OUTCOMES)) / len(labels)


def uniform_log_loss() -> float:
    """Log-loss of predicting 1/3 for every outcome: ln 3.

    >>> round(uniform_log_loss(), 4)
    1.0986
    """
    return math.log(len(OUTCOMES))


def _log_loss(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean -ln p(true outcome), p clipped at EPS. Shapes: (P, 3), (P,) -> scalar."""
    return float(-np.log(np.clip(probs[np.arange(len(labels)), labels], EPS, 1.0)).mean())


def _reliability(conf: np.ndarray, hit: np.ndarray, n_bins: int) -> tuple[float, list[dict]]:
    """One-vs-rest ECE and its non-empty bins over ``n_bins`` equal-width bins of [0, 1].

    ``conf`` (P,) is the predicted probability of one outcome, ``hit`` (P,) whether it happened.
    ECE = Σ_bins (count / P) · |frequency - mean confidence|.
    """
    ece, bins = binned_calibration(conf, hit, np.linspace(0.0, 1.0, n_bins + 1))
    return ece, [{"lo": lo, "hi": hi, "count": n, "mean_confidence": c, "frequency": f} for lo, hi, n, c, f in bins]


def outcome_metrics(probs: np.ndarray, labels: np.ndarray, *, swapped_probs: np.ndarray | None = None,
                    n_bins: int = 10) -> dict:
    """All A / B / tie metrics of one set of predictions, as a JSON-ready dict.

    Args:
        probs: (P, 3) predicted probabilities of (a, b, tie); rows sum to 1.
        labels: (P,) true outcomes in {0, 1, 2}.
        swapped_probs: optional (P, 3) predictions for the same pairs shown with A and B swapped, in the
            swapped frame (column 0 is the new A, i.e. the old B). Adds ``position_consistency`` (share of
            pairs whose argmax outcome survives the swap) and ``swap_gap`` (mean |P(a) - P_swapped(b)|).
        n_bins: equal-width bins of [0, 1] for the one-vs-rest ECE and reliability curves.

    Returns:
        dict with ``pairs``, ``accuracy`` (argmax; ties in argmax go to the first outcome), ``log_loss``
        (nats), ``brier`` (Σ_k (p_k - y_k)², in [0, 2]), ``macro_f1`` (over all three outcomes, an absent
        one counting 0), ``per_class`` {a/b/tie: {precision, recall, f1, support}}, ``confusion`` (3×3,
        rows true, columns predicted), ``class_prior`` and ``class_prior_log_loss`` (the baseline of
        always predicting the label frequencies), ``uniform_log_loss`` (ln 3), ``ece_per_class``
        {a/b/tie: float}, ``ece`` (their mean) and ``reliability`` {a/b/tie: [bin dicts]}.

    Example:
        >>> m = outcome_metrics(np.full((2, 3), 1 / 3), np.array([0, 2]))
        >>> round(m["log_loss"], 4), round(m["brier"], 4), round(m["class_prior_log_loss"], 4)  # ln 3, 2/3, ln 2
        (1.0986, 0.6667, 0.6931)
    """
    probs, labels = _check(probs, labels)
    if isinstance(n_bins, bool) or not isinstance(n_bins, (int, np.integer)) or n_bins < 1:
        raise ValueError(f"n_bins={n_bins!r}; expected a positive integer number of bins")
    k = len(OUTCOMES)
    pred = probs.argmax(axis=1)  # (P,)
    onehot = np.eye(k)[labels]  # (P, 3)
    prior = prior_probabilities(labels)  # (3,)
    precision, recall, f1, support = precision_recall_fscore_support(
        labels, pred, labels=[0, 1, 2], zero_division=0)
    confusion = np.zeros((k, k), dtype=np.int64)
    np.add.at(confusion, (labels, pred), 1)
    ece, reliability = {}, {}
    for c, name in enumerate(OUTCOMES):
        ece[name], reliability[name] = _reliability(probs[:, c], labels == c, n_bins)
    out = {
        "pairs": int(len(labels)),
        "accuracy": float((pred == labels).mean()),
        "log_loss": _log_loss(probs, labels),
        "brier": float(((probs - onehot) ** 2).sum(axis=1).mean()),
        "macro_f1": float(f1.mean()),
        "per_class": {name: {"precision": float(precision[c]), "recall": float(recall[c]), "f1": float(f1[c]),
                             "support": int(support[c])} for c, name in enumerate(OUTCOMES)},
        "confusion": confusion.tolist(),
        "class_prior": {name: float(prior[c]) for c, name in enumerate(OUTCOMES)},
        "class_prior_log_loss": _log_loss(np.broadcast_to(prior, probs.shape), labels),
        "uniform_log_loss": uniform_log_loss(),
        "ece_per_class": ece,
        "ece": float(np.mean(list(ece.values()))),
        "reliability": reliability,
    }
    if swapped_probs is not None:
        swapped, _ = _check(swapped_probs, labels, name="swapped_probs")
        back = swapped[:, _SWAP]  # (P, 3) in the original frame: its "a" column is the swapped frame's "b"
        out["position_consistency"] = float((back.argmax(axis=1) == pred).mean())
        out["swap_gap"] = float(np.abs(probs[:, 0] - swapped[:, 1]).mean())
    return out


def outcome_summary(log_probs: np.ndarray, tie: np.ndarray) -> dict[str, float]:
    """Three-way (first wins / second wins / tie) metrics of P judged pairs, the first item being the winner.

    ``log_probs`` (P, 3) are the outcome model's log-probabilities, ``tie`` (P,) marks the pairs the
    data calls a tie.
    """
    probs = np.exp(np.asarray(log_probs, dtype=np.float64))
    probs /= probs.sum(axis=1, keepdims=True)
    m = outcome_metrics(probs, np.where(np.asarray(tie, dtype=bool), 2, 0))
    return {"three_way_accuracy": m["accuracy"], "three_way_log_loss": m["log_loss"],
            "tie_rate": float(np.mean(tie)), "predicted_tie_rate": float((probs.argmax(1) == 2).mean()),
            "tie_f1": m["per_class"]["tie"]["f1"]}
