"""Process-reward metrics against values worked out by hand, sklearn, and a few properties."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn import metrics as skm

from rewardlab.config.sections import STEP_AGGREGATES
from rewardlab.metrics import pairwise as M
from rewardlab.metrics import steps as S

T, F = True, False
# Flattened: p = .9 .2 .1 | .8 .7 | .6 .4 .9 | .3 .8; predicted wrong (p < .5) at steps 1, 2, 6, 8; wrong at 1, 2, 9.
PROBS = [[0.9, 0.2, 0.1], [0.8, 0.7], [0.6, 0.4, 0.9], [0.3, 0.8]]
LABELS = [[T, F, F], [T, T], [T, T, T], [T, F]]


def test_step_metrics_by_hand():
    a = S.step_arrays(PROBS, LABELS)
    m = S.step_classification(a.p, a.y)
    assert m["step_accuracy"] == pytest.approx(0.7)  # 6, 8 and 9 are misjudged
    assert m["wrong_step_precision"] == pytest.approx(2 / 4)  # flagged 1, 2, 6, 8; right on 1, 2
    assert m["wrong_step_recall"] == pytest.approx(2 / 3)  # of 1, 2, 9
    assert m["wrong_step_f1"] == pytest.approx(4 / 7)
    assert m["roc_auc"] == pytest.approx(16.5 / 21)  # right-vs-wrong pairs ordered correctly; .8 vs .8 counts half
    assert m["brier"] == pytest.approx(1.85 / 10)


def test_step_ece_is_the_pairwise_ece_of_the_true_label_probability():
    # P(true label) = .8 (right), .2 (wrong step given .8), .7 (wrong step given .3): confidences .8, .8, .7
    ece, bins = S.step_calibration(np.array([0.8, 0.8, 0.3]), np.array([T, F, F]))
    assert ece == pytest.approx((1 / 3) * abs(1 - 0.7) + (2 / 3) * abs(0.5 - 0.8))
    assert [b["count"] for b in bins] == [1, 2]


def test_first_error_by_hand():
    # true first errors 1, none, none, 1; predicted 1, none, 1, 0
    m = S.first_error_scores(PROBS, LABELS)
    assert m == {"error_accuracy": 0.5, "correct_accuracy": 0.5, "f1": 0.5}
    assert S.first_error_scores(PROBS, LABELS, threshold=0.35)["correct_accuracy"] == 1.0  # .4 no longer flagged
    assert S.harmonic_mean(1.0, 0.5) == pytest.approx(2 / 3) and S.harmonic_mean(0.0, 0.0) == 0.0
    assert S.predicted_first_error([0.9, 0.5, 0.49]) == 2 and S.predicted_first_error([0.5]) is None


# Solution-level aggregation; the comment gives each aggregate and whether it calls the solution right.
AGG_PROBS = [[0.9, 0.6], [0.7, 0.7], [0.2, 0.9], [0.9, 0.4], [0.8, 0.3, 0.2], [0.9, 0.1, 0.9]]
AGG_LABELS = [[T, T], [T, T], [F, F], [T, F], [T, T, F], [T, F, T]]  # the last: right after an error (PRM800K)
# correct: T T F F F F. min: all right. last: .9 on C and F wrong. product: .49 on B wrong. mean: C .55, D .65, F .63.


def test_solution_accuracy_and_baselines_by_hand():
    m = S.process_summary(AGG_PROBS, AGG_LABELS, n_boot=50)
    acc = {how: v["value"] for how, v in m["solution_accuracy"].items()}
    assert acc == pytest.approx({"min": 1.0, "last": 4 / 6, "product": 5 / 6, "mean": 3 / 6})
    b = m["baselines"]
    assert b["majority_class"]["value"] == pytest.approx(4 / 6) and b["majority_class"]["predicts"] == "has an error"
    assert b["last_step_label"]["value"] == pytest.approx(5 / 6)  # only F's right last step misleads
    assert b["last_step_only"] == m["solution_accuracy"]["last"]
    assert S.process_summary(AGG_PROBS, AGG_LABELS, n_boot=0, majority=True)["baselines"]["majority_class"][
        "value"] == pytest.approx(2 / 6)
    assert m["counts"] == {"solutions": 6, "steps": 14, "wrong_steps": 5, "solutions_with_error": 4,
                           "correct_solutions": 2}
    assert m["solution_accuracy"]["min"]["ci95"] == [1.0, 1.0]  # right on every resample
    for block in ("steps", "first_error", "solution_accuracy", "baselines"):
        for name, v in m[block].items():
            lo, hi = v["ci95"]
            assert v["value"] is None or lo - 1e-12 <= v["value"] <= hi + 1e-12, (block, name)


def test_intervals_resample_solutions_with_the_draws_of_bootstrap_ci():
    a = S.step_arrays(PROBS, LABELS)
    assert a.steps_of(np.array([3, 3, 0])).tolist() == [8, 9, 8, 9, 0, 1, 2]  # whole solutions, in order
    m = S.process_summary(PROBS, LABELS, n_boot=200, seed=3)

    def accuracy(idx):
        at = a.steps_of(idx)
        return S.step_classification(a.p[at], a.y[at])["step_accuracy"]

    assert m["steps"]["step_accuracy"]["ci95"] == pytest.approx(list(M.bootstrap_ci(accuracy, 4, n_boot=200, seed=3)))
    assert m["steps"]["step_accuracy"]["value"] == pytest.approx(0.7)


def test_step_metrics_match_sklearn():
    rng = np.random.default_rng(0)
    y = rng.random(300) < 0.6
    p = np.clip(np.where(y, 0.65, 0.35) + rng.normal(0, 0.25, 300), 0, 1).round(2)  # rounded: ties exist
    m = S.step_classification(p, y, threshold=0.5)
    pr, rc, f1, _ = skm.precision_recall_fscore_support(~y, p < 0.5, average="binary", zero_division=0)
    assert (m["wrong_step_precision"], m["wrong_step_recall"], m["wrong_step_f1"]) == pytest.approx((pr, rc, f1))
    assert m["roc_auc"] == pytest.approx(skm.roc_auc_score(y, p))
    assert m["brier"] == pytest.approx(skm.brier_score_loss(y, p))


@pytest.mark.parametrize("probs, labels, match", [
    ([[0.5]], [[T], [F]], "1 solutions of probabilities but 2"),
    ([[0.5, 0.2]], [[T]], "solution 0 has 2 probabilities and 1 labels"),
    ([[0.5], [1.3]], [[T], [F]], "solution 1 has a step probability 1.3"),
    ([], [], "no solutions"),
])
def test_bad_inputs_name_the_solution(probs, labels, match):
    with pytest.raises(ValueError, match=match):
        S.process_summary(probs, labels, n_boot=0)


def test_the_aggregates_are_the_ones_a_prm_can_be_configured_with():
    assert set(S.AGGREGATIONS) == set(STEP_AGGREGATES)


def test_unknown_aggregate_lists_the_valid_ones():
    with pytest.raises(ValueError, match="min, last, product, mean"):
        S.solution_predictions(S.step_arrays(PROBS, LABELS), "max")


def _shepherd(lengths_and_errors):
    """Math-Shepherd labels: right before the first error, wrong from it on."""
    return [[k < e for k in range(n)] for n, e in lengths_and_errors]


solutions = st.lists(st.integers(1, 5).flatmap(lambda n: st.tuples(st.just(n), st.integers(0, n + 2))),
                     min_size=2, max_size=12)


@settings(max_examples=40, deadline=None)
@given(solutions)
def test_perfect_probabilities_score_one(spec):
    labels = _shepherd(spec)
    probs = [[1.0 if ok else 0.0 for ok in y] for y in labels]
    m = S.process_summary(probs, labels, n_boot=0)
    assert m["steps"]["step_accuracy"]["value"] == 1.0
    assert all(m["solution_accuracy"][how]["value"] == 1.0 for how in ("min", "last", "product"))
    fe = m["first_error"]
    assert all(v["value"] in (1.0, None) for v in fe.values())  # None: the data has no solution of that kind
    assert m["baselines"]["last_step_label"]["value"] == 1.0  # Math-Shepherd labels: the last step decides


@settings(max_examples=40, deadline=None)
@given(solutions, st.integers(0, 2**16))
def test_first_error_f1_lies_between_its_accuracies_and_min_agrees_with_it(spec, seed):
    labels = _shepherd(spec)
    rng = np.random.default_rng(seed)
    probs = [rng.random(len(y)).tolist() for y in labels]
    m = S.first_error_scores(probs, labels)
    a, b = m["error_accuracy"], m["correct_accuracy"]
    if np.isnan(a) or np.isnan(b):
        assert np.isnan(m["f1"])
        return
    assert min(a, b) - 1e-12 <= m["f1"] <= (a + b) / 2 + 1e-12
    # "min >= threshold" is "no step predicted wrong": on correct solutions the two accuracies agree.
    arrays = S.step_arrays(probs, labels)
    by_min = S.solution_predictions(arrays, "min")
    correct = np.array([all(y) for y in labels])
    assert by_min[correct].mean() == pytest.approx(b)
