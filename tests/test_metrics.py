import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats
from sklearn import metrics as skm

from rewardlab.metrics import pairwise as M


def test_accuracy_counts_predicted_ties_as_half():
    assert M.pairwise_accuracy(np.array([1.0, -1.0, 0.0, 2.0])) == pytest.approx(2.5 / 4)


def test_log_loss_by_hand():
    margins = np.array([0.0, 2.0])
    expected = (math.log(2) + math.log(1 + math.exp(-2))) / 2
    assert M.pairwise_log_loss(margins) == pytest.approx(expected)
    assert M.pairwise_log_loss(margins, temperature=2.0) == pytest.approx((math.log(2) + math.log(1 + math.exp(-1))) / 2)


def test_ece_by_hand():
    # confidences sigma(m): 0.731 (right), 0.731 (wrong), 0.982 (right), 0.982 (right)
    margins = np.array([1.0, -1.0, 4.0, 4.0])
    ece, bins = M.expected_calibration_error(margins, n_bins=5, strategy="uniform")
    c1, c2 = 1 / (1 + math.exp(-1)), 1 / (1 + math.exp(-4))
    expected = 0.5 * abs(0.5 - c1) + 0.5 * abs(1.0 - c2)
    assert ece == pytest.approx(expected)
    assert [b["count"] for b in bins] == [2, 2]
    ece_q, bins_q = M.expected_calibration_error(margins, n_bins=2, strategy="quantile")
    assert sum(b["count"] for b in bins_q) == 4 and ece_q == pytest.approx(expected)


def test_classification_metrics_match_sklearn():
    rng = np.random.default_rng(1)
    margins = rng.normal(0.5, 1.0, 200)
    y, m = M.oriented(margins, seed=0)
    assert 60 < y.sum() < 140  # both classes present
    assert np.allclose(np.where(y == 1, m, -m), margins)  # orientation only flips signs
    p = 1 / (1 + np.exp(-m))
    out = M.classification_metrics(margins)
    assert out["roc_auc"] == pytest.approx(skm.roc_auc_score(y, p))
    assert out["f1"] == pytest.approx(skm.f1_score(y, p > 0.5))
    assert (out["precision"], out["recall"]) == pytest.approx((skm.precision_score(y, p > 0.5),
                                                              skm.recall_score(y, p > 0.5)))
    assert out["brier"] == pytest.approx(skm.brier_score_loss(y, p))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.sampled_from([0.1, 0.3, 0.5, 0.7, 0.9])), min_size=1, max_size=40))
def test_rank_auc_and_binary_scores_equal_sklearn(rows):
    """The bootstrap's own ROC-AUC, precision, recall and F1 give sklearn's numbers, ties and one-class samples
    included (scores drawn from five values, so ties are common)."""
    y, score = np.array([r[0] for r in rows]), np.array([r[1] for r in rows])
    if 0 < y.sum() < len(y):
        assert M.roc_auc(y, score) == pytest.approx(skm.roc_auc_score(y, score), abs=1e-12)
    else:
        assert np.isnan(M.roc_auc(y, score))
    flagged = score > 0.5
    expected = skm.precision_recall_fscore_support(y, flagged, average="binary", zero_division=0)[:3]
    assert M.binary_precision_recall_f1(y, flagged) == pytest.approx(expected, abs=1e-12)


def test_high_confidence_accuracy():
    margins = np.array([5.0, -4.0, 0.1, -0.1, 0.2, 3.0, 0.3, -0.2, 0.1, 2.0])
    top = M.high_confidence_accuracy(margins, 0.3)
    assert top == {"accuracy": pytest.approx(2 / 3), "coverage": pytest.approx(0.3), "pairs": 3}


def test_rank_correlations_match_scipy():
    model = [np.array([3.0, 1.0, 2.0, 0.0]), np.array([1.0, 2.0, 3.0])]
    human = [np.array([4.0, 2.0, 3.0, 1.0]), np.array([3.0, 2.0, 1.0])]
    out = M.rank_correlations(model, human)
    assert out["spearman"] == pytest.approx(np.mean([stats.spearmanr(a, b).statistic for a, b in zip(model, human)]))
    assert out["kendall"] == pytest.approx((1.0 + -1.0) / 2)
    assert out["prompts"] == 2


def test_bootstrap_interval_brackets_the_estimate():
    x = np.random.default_rng(0).normal(1.0, 1.0, 400)
    lo, hi = M.bootstrap_ci(lambda idx: float(x[idx].mean()), len(x), n_boot=300)
    assert lo < x.mean() < hi
    assert hi - lo == pytest.approx(2 * 1.96 / math.sqrt(400), rel=0.25)


def test_improvement_direction():
    assert M.is_improvement("accuracy", 0.8, 0.7) and not M.is_improvement("accuracy", 0.6, 0.7)
    assert M.is_improvement("log_loss", 0.3, 0.5) and not M.is_improvement("ece", 0.2, 0.1)


def test_length_balanced_accuracy_closed_form():
    from rewardlab.metrics.pairwise import length_balanced_accuracy

    margins = np.array([1.0, 1.0, 1.0, -1.0, -1.0, 1.0])
    diff = np.array([5, 3, 2, -4, -1, 0])  # 3 longer-won pairs all right; 2 shorter-won pairs both wrong
    assert length_balanced_accuracy(margins, diff) == pytest.approx(0.5 * (1.0 + 0.0))
    # a rule that reads only length ("longer wins" as margin = diff) scores exactly 0.5
    assert length_balanced_accuracy(np.sign(diff).astype(float), diff) == pytest.approx(0.5)
    assert np.isnan(length_balanced_accuracy(margins[:3], diff[:3]))  # no shorter-won pair


def test_reward_length_correlation():
    from rewardlab.metrics.pairwise import reward_length_correlation

    lengths = np.array([1, 2, 3, 4, 10])
    c = reward_length_correlation(2.0 * lengths + 1, lengths)
    assert c["pearson"] == pytest.approx(1.0) and c["spearman"] == pytest.approx(1.0)
    assert reward_length_correlation(-np.log(lengths), lengths)["spearman"] == pytest.approx(-1.0)
    assert np.isnan(reward_length_correlation(np.ones(5), lengths)["pearson"])


def test_training_summary_reports_ece_so_it_can_be_tuned():
    from rewardlab.metrics.pairwise import expected_calibration_error, pairwise_summary

    chosen, rejected = np.array([2.0, 0.5, -1.0, 3.0]), np.array([0.0, 1.0, -2.0, 0.0])
    s = pairwise_summary(chosen, rejected)
    assert s["ece"] == pytest.approx(expected_calibration_error(chosen - rejected)[0]) and 0 <= s["ece"] <= 1
