"""A / B / tie metrics against closed-form values, their validation errors and their plots."""

import doctest
import math

import numpy as np
import pytest

from rewardlab.contracts.schema import OUTCOMES
from rewardlab.evaluation.plots import plot_confusion, plot_outcome_reliability
from rewardlab.metrics import outcomes
from rewardlab.metrics.outcomes import outcome_metrics, prior_probabilities, uniform_log_loss

# Four pairs worked by hand: argmax predictions are a, b, b, a against true a, a, b, tie.
HAND_PROBS = np.array([[0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.1, 0.8, 0.1], [0.5, 0.2, 0.3]])
HAND_LABELS = np.array([0, 0, 1, 2])


def _calibrated(n, seed=0, sharpen=1.0):
    """Probabilities drawn from Dirichlet(1, 1, 1) with labels drawn from them; ``sharpen`` > 1 then makes the
    reported probabilities over-confident (p^s renormalised) while the labels keep the true ones."""
    rng = np.random.default_rng(seed)
    true = rng.dirichlet(np.ones(3), size=n)  # (n, 3)
    labels = (rng.random(n)[:, None] > true.cumsum(axis=1)[:, :2]).sum(axis=1)  # inverse-CDF sample per row
    reported = true ** sharpen
    return reported / reported.sum(axis=1, keepdims=True), labels


def test_docstring_examples():
    result = doctest.testmod(outcomes, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def test_perfect_predictions():
    labels = np.array([0, 1, 2, 2, 0])
    m = outcome_metrics(np.eye(3)[labels], labels)
    assert m["pairs"] == 5
    assert m["accuracy"] == 1.0 and m["macro_f1"] == 1.0
    assert m["log_loss"] == pytest.approx(0.0, abs=1e-12)
    assert m["brier"] == 0.0
    assert m["confusion"] == [[2, 0, 0], [0, 1, 0], [0, 0, 2]]
    assert all(v == 0.0 for v in m["ece_per_class"].values()) and m["ece"] == 0.0


def test_uniform_predictions():
    labels = np.array([0, 1, 2, 0, 0, 1])
    m = outcome_metrics(np.full((6, 3), 1 / 3), labels)
    assert m["log_loss"] == pytest.approx(math.log(3)) == pytest.approx(uniform_log_loss())
    assert uniform_log_loss() == pytest.approx(1.0986, abs=1e-4)
    assert m["brier"] == pytest.approx(2 / 3)  # (2/3)² + 2 (1/3)²
    assert m["accuracy"] == pytest.approx(3 / 6)  # argmax ties go to "a"
    # class-prior baseline: -Σ f ln f for frequencies (1/2, 1/3, 1/6)
    f = np.array([1 / 2, 1 / 3, 1 / 6])
    assert m["class_prior"] == pytest.approx(dict(zip(OUTCOMES, f)))
    assert m["class_prior_log_loss"] == pytest.approx(-(f * np.log(f)).sum())


def test_confident_miss_is_clipped_not_infinite():
    m = outcome_metrics(np.array([[1.0, 0.0, 0.0]]), np.array([1]))
    assert m["log_loss"] == pytest.approx(-math.log(1e-12))


def test_hand_computed_four_pairs():
    m = outcome_metrics(HAND_PROBS, HAND_LABELS)
    assert m["confusion"] == [[1, 1, 0], [0, 1, 0], [1, 0, 0]]
    assert m["accuracy"] == 0.5
    pc = m["per_class"]
    assert pc["a"] == pytest.approx({"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2})
    assert pc["b"] == pytest.approx({"precision": 0.5, "recall": 1.0, "f1": 2 / 3, "support": 1})
    assert pc["tie"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}  # never predicted
    assert m["macro_f1"] == pytest.approx((0.5 + 2 / 3 + 0.0) / 3)
    assert m["log_loss"] == pytest.approx(-(math.log(0.6) + math.log(0.2) + math.log(0.8) + math.log(0.3)) / 4)
    assert m["brier"] == pytest.approx((0.26 + 1.14 + 0.06 + 0.78) / 4)
    assert m["class_prior"] == {"a": 0.5, "b": 0.25, "tie": 0.25}
    np.testing.assert_allclose(prior_probabilities(HAND_LABELS), [0.5, 0.25, 0.25])


def test_reliability_bins_hand_computed():
    # P(a) = 0.15, 0.15, 0.85, 0.85 with a happening once in each bin of width 0.5
    probs = np.array([[0.15, 0.85, 0.0], [0.15, 0.85, 0.0], [0.85, 0.15, 0.0], [0.85, 0.15, 0.0]])
    m = outcome_metrics(probs, np.array([0, 1, 0, 1]), n_bins=2)
    assert m["reliability"]["a"] == [
        {"lo": 0.0, "hi": 0.5, "count": 2, "mean_confidence": pytest.approx(0.15), "frequency": 0.5},
        {"lo": 0.5, "hi": 1.0, "count": 2, "mean_confidence": pytest.approx(0.85), "frequency": 0.5}]
    assert m["ece_per_class"]["a"] == pytest.approx(0.35)
    assert m["ece_per_class"]["tie"] == 0.0  # p = 0 and tie never happens
    assert m["ece"] == pytest.approx((0.35 + 0.35 + 0.0) / 3)


def test_ece_calibrated_is_near_zero():
    probs, labels = _calibrated(200_000)
    m = outcome_metrics(probs, labels)
    assert max(m["ece_per_class"].values()) < 0.01
    assert sum(b["count"] for b in m["reliability"]["tie"]) == 200_000


def test_ece_over_confident_is_large():
    probs, labels = _calibrated(20_000, sharpen=4.0)
    m = outcome_metrics(probs, labels)
    assert min(m["ece_per_class"].values()) > 0.1 and m["ece"] > 0.1


def test_position_consistency_invariant_model():
    probs, labels = _calibrated(100, seed=1)
    m = outcome_metrics(probs, labels, swapped_probs=probs[:, [1, 0, 2]])
    assert m["position_consistency"] == 1.0
    assert m["swap_gap"] == pytest.approx(0.0)


def test_position_consistency_always_a():
    labels = np.array([0, 1, 2, 1])
    always_a = np.tile([1.0, 0.0, 0.0], (4, 1))
    m = outcome_metrics(always_a, labels, swapped_probs=always_a)
    assert m["position_consistency"] == 0.0
    assert m["swap_gap"] == 1.0


def test_no_swap_keys_without_swapped_probs():
    m = outcome_metrics(HAND_PROBS, HAND_LABELS)
    assert "position_consistency" not in m and "swap_gap" not in m


@pytest.mark.parametrize("probs, labels, match", [
    (np.full((3, 2), 0.5), np.array([0, 1, 0]), r"shape \(3, 2\); expected \(P, 3\)"),
    (np.full(3, 1 / 3), np.array([0]), r"expected \(P, 3\)"),
    (HAND_PROBS, np.array([0, 1, 2]), r"labels has shape \(3,\) but probs has shape \(4, 3\)"),
    (HAND_PROBS, HAND_LABELS[:, None], r"labels has shape \(4, 1\)"),
    (np.zeros((0, 3)), np.zeros(0, dtype=int), "no pairs"),
    (HAND_PROBS, np.array([0, 1, 3, -1]), r"labels must be 0 \(a\), 1 \(b\) or 2 \(tie\); found \[-1, 3\]"),
    (HAND_PROBS * 1.01, HAND_LABELS, r"rows must sum to 1 \(tolerance 0.0001\); row \d sums to 1.01"),
    (np.array([[1.2, -0.2, 0.0]]), np.array([0]), "row 0 .* negative or non-finite"),
    (np.array([[np.nan, 0.5, 0.5]]), np.array([0]), "negative or non-finite"),
])
def test_invalid_inputs(probs, labels, match):
    with pytest.raises(ValueError, match=match):
        outcome_metrics(probs, labels)


def test_row_sum_tolerance_accepts_rounding():
    probs = HAND_PROBS + np.array([5e-5, 0.0, 0.0])
    assert outcome_metrics(probs, HAND_LABELS)["pairs"] == 4


def test_invalid_swapped_probs():
    with pytest.raises(ValueError, match=r"swapped_probs has shape \(3, 3\)"):
        outcome_metrics(HAND_PROBS, HAND_LABELS, swapped_probs=HAND_PROBS[:3])
    with pytest.raises(ValueError, match="swapped_probs rows must sum to 1"):
        outcome_metrics(HAND_PROBS, HAND_LABELS, swapped_probs=HAND_PROBS * 0.5)


@pytest.mark.parametrize("n_bins", [0, -3, 2.5, True])
def test_invalid_n_bins(n_bins):
    with pytest.raises(ValueError, match="n_bins=.*positive integer"):
        outcome_metrics(HAND_PROBS, HAND_LABELS, n_bins=n_bins)


def test_prior_probabilities_errors():
    with pytest.raises(ValueError, match="labels are empty"):
        prior_probabilities(np.array([], dtype=int))
    with pytest.raises(ValueError, match=r"labels must be a \(P,\) array"):
        prior_probabilities(np.array([0, 5]))


def test_plots_write_png(tmp_path):
    probs, labels = _calibrated(500, seed=2)
    m = outcome_metrics(probs, labels)
    for plot, name in [(plot_outcome_reliability, "reliability.png"), (plot_confusion, "confusion.png")]:
        out = plot(m, tmp_path / name)
        assert out == tmp_path / name
        data = out.read_bytes()
        assert len(data) > 1000 and data[:8] == b"\x89PNG\r\n\x1a\n"
    assert plot_confusion(m, str(tmp_path / "as_str.png")).stat().st_size > 0
