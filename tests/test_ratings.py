"""Model-level ratings from win / loss / tie counts: closed forms, recovery, validation, leaderbot parity."""

import json
import math

import numpy as np
import pytest
from scipy.stats import kendalltau

from rewardlab.evaluation.ratings import (
    LIKELIHOODS,
    counts_from_votes,
    fit_ratings,
    load_leaderbot_counts,
    outcome_log_likelihood,
    outcome_probabilities,
    to_leaderbot_data,
)

DIFFS = np.linspace(-6.0, 6.0, 25)


def two_models(w, l, t):
    wins = np.array([[0, w], [l, 0]])
    ties = np.array([[0, t], [t, 0]])
    return ["x", "y"], wins, wins.T, ties


def logit(p):
    return math.log(p / (1 - p))


# ----------------------------------------------------------------------------- closed forms


def test_bradley_terry_two_models_score_gap_is_log_odds():
    fit = fit_ratings(*two_models(30, 10, 0), "bradley_terry")
    assert fit.scores[0] - fit.scores[1] == pytest.approx(math.log(3.0), abs=1e-6)
    assert fit.scores.sum() == pytest.approx(0.0, abs=1e-9)
    assert fit.tie_parameter is None and fit.ranking() == ["x", "y"]


def test_bradley_terry_counts_a_tie_as_half_a_win_and_half_a_loss():
    fit = fit_ratings(*two_models(30, 10, 8), "bradley_terry")
    assert fit.scores[0] - fit.scores[1] == pytest.approx(math.log(34 / 14), abs=1e-6)


def test_rao_kupper_two_models_reproduce_the_observed_frequencies():
    # Two models saturate the model: sigma(d - eta) = w / n and sigma(-d - eta) = l / n.
    w, l, t = 50, 20, 30
    fit = fit_ratings(*two_models(w, l, t), "rao_kupper")
    d, eta = fit.scores[0] - fit.scores[1], math.log(fit.tie_parameter)
    assert d == pytest.approx((logit(w / 100) - logit(l / 100)) / 2, abs=1e-5)
    assert eta == pytest.approx(-(logit(w / 100) + logit(l / 100)) / 2, abs=1e-5)
    assert fit.log_likelihood == pytest.approx(w * math.log(0.5) + l * math.log(0.2) + t * math.log(0.3), abs=1e-6)


def test_davidson_two_models_closed_form():
    # P(win) / P(loss) = e^d and P(tie) / sqrt(P(win) P(loss)) = nu.
    w, l, t = 50, 20, 30
    fit = fit_ratings(*two_models(w, l, t), "davidson")
    assert fit.scores[0] - fit.scores[1] == pytest.approx(math.log(w / l), abs=1e-5)
    assert fit.tie_parameter == pytest.approx(t / math.sqrt(w * l), rel=1e-5)


@pytest.mark.parametrize("likelihood,tie", [("rao_kupper", 1.0), ("rao_kupper", 1.7), ("rao_kupper", 40.0),
                                            ("davidson", 0.0), ("davidson", 0.6), ("davidson", 25.0)])
def test_outcome_probabilities_sum_to_one(likelihood, tie):
    p_win, p_loss, p_tie = outcome_probabilities(DIFFS, likelihood, tie)
    np.testing.assert_allclose(p_win + p_loss + p_tie, 1.0, atol=1e-12)
    assert np.all(p_tie >= 0)
    np.testing.assert_allclose(p_win, p_loss[::-1], atol=1e-12)  # swapping the models swaps win and loss


@pytest.mark.parametrize("likelihood,tie", [("rao_kupper", 1.0 + 1e-10), ("rao_kupper", 1.0),
                                            ("davidson", 1e-10), ("davidson", 0.0)])
def test_tie_models_reduce_to_bradley_terry(likelihood, tie):
    p_win, p_loss, p_tie = outcome_probabilities(DIFFS, likelihood, tie)
    bt_win, _, _ = outcome_probabilities(DIFFS, "bradley_terry")
    np.testing.assert_allclose(p_win, bt_win, atol=1e-9)
    np.testing.assert_allclose(p_tie, 0.0, atol=1e-9)


# ----------------------------------------------------------------------------- recovery from synthetic counts


@pytest.mark.parametrize("likelihood,tie", [("bradley_terry", None), ("rao_kupper", 1.6), ("davidson", 0.5)])
def test_recovers_known_scores_from_sampled_counts(likelihood, tie):
    rng = np.random.default_rng(0)
    true = np.array([1.2, 0.6, 0.1, -0.3, -0.5, -1.1])
    n = true.size
    wins, ties = np.zeros((n, n), dtype=int), np.zeros((n, n), dtype=int)
    for i in range(n):
        for j in range(i + 1, n):
            probs = np.stack(outcome_probabilities(true[i] - true[j], likelihood, tie))
            w, l, t = rng.multinomial(20_000, probs / probs.sum())
            wins[i, j], wins[j, i], ties[i, j], ties[j, i] = w, l, t, t
    fit = fit_ratings([f"m{k}" for k in range(n)], wins, wins.T, ties, likelihood)
    assert fit.converged
    np.testing.assert_allclose(fit.scores, true - true.mean(), atol=0.03)
    if tie is not None:
        assert fit.tie_parameter == pytest.approx(tie, rel=0.03)
    assert fit.ranking() == [f"m{k}" for k in range(n)]
    # The fit is a maximum of the shared log-likelihood function.
    ll = outcome_log_likelihood(fit.scores, wins, wins.T, ties, likelihood, fit.tie_parameter)
    assert ll == pytest.approx(fit.log_likelihood, rel=1e-12)
    nudged = fit.scores + 0.01 * rng.standard_normal(n)
    assert outcome_log_likelihood(nudged, wins, wins.T, ties, likelihood, fit.tie_parameter) < ll


def test_l2_keeps_an_unbeaten_model_finite():
    names, wins, losses, ties = two_models(12, 0, 0)
    fit = fit_ratings(names, wins, losses, ties, l2=1e-3)
    assert np.all(np.isfinite(fit.scores)) and fit.scores[0] > fit.scores[1]


# ----------------------------------------------------------------------------- counts


def test_counts_from_votes():
    votes = [("a", "b", "a"), ("b", "a", "a"), ("b", "c", "tie"), ("c", "a", "b"), ("a", "b", "a")]
    names, wins, losses, ties = counts_from_votes(votes)
    assert names == ["a", "b", "c"]
    assert wins.tolist() == [[0, 2, 1], [1, 0, 0], [0, 0, 0]]
    assert losses.tolist() == wins.T.tolist()
    assert ties.tolist() == [[0, 0, 0], [0, 0, 1], [0, 1, 0]]


@pytest.mark.parametrize("votes,match", [([("a", "b", "draw")], "vote 0: outcome must be"),
                                         ([("a", "b", "a"), ("a", "a", "tie")], "vote 1: model 'a' cannot play"),
                                         ([("a", "b")], "vote 0 must be")])
def test_counts_from_votes_rejects_bad_votes(votes, match):
    with pytest.raises(ValueError, match=match):
        counts_from_votes(votes)


def test_load_leaderbot_counts_reads_the_json_layout(tmp_path):
    path = tmp_path / "arena.json"
    path.write_text(json.dumps({"models": ["p", "q", "r"], "X": [[0, 1], [1, 2]],
                                "Y": [[5, 3, 2, 4], [1, 6, 0, 7]]}))
    names, wins, losses, ties = load_leaderbot_counts(path)
    assert names == ["p", "q", "r"]
    assert wins.tolist() == [[0, 5, 0], [3, 0, 1], [0, 6, 0]]
    assert ties.tolist() == [[0, 2, 0], [2, 0, 0], [0, 0, 0]]
    _, _, _, both = load_leaderbot_counts(path, include_both_bad=True)
    assert both.tolist() == [[0, 6, 0], [6, 0, 7], [0, 7, 0]]
    data = to_leaderbot_data(names, wins, losses, ties)
    assert data["X"].tolist() == [[0, 1], [1, 2]] and data["Y"].tolist() == [[5, 3, 2], [1, 6, 0]]


def test_load_leaderbot_counts_rejects_a_bad_layout(tmp_path):
    path = tmp_path / "arena.json"
    path.write_text(json.dumps({"models": ["p", "q"], "X": [[0, 1]], "Y": [[5, 3]]}))
    with pytest.raises(ValueError, match=r"expected X of shape \(P, 2\) and Y of shape \(P, 3 or 4\)"):
        load_leaderbot_counts(path)


# ----------------------------------------------------------------------------- validation


def test_fit_ratings_validation_errors():
    names, wins, losses, ties = two_models(3, 2, 1)
    with pytest.raises(ValueError, match="unknown likelihood 'elo'; valid names: bradley_terry, rao_kupper"):
        fit_ratings(names, wins, losses, ties, "elo")
    with pytest.raises(ValueError, match=r"`losses` must equal `wins.T`"):
        fit_ratings(names, wins, wins, ties)
    with pytest.raises(ValueError, match="`ties` must be symmetric"):
        fit_ratings(names, wins, losses, np.array([[0, 1], [0, 0]]))
    with pytest.raises(ValueError, match="`wins` must hold finite, non-negative counts"):
        fit_ratings(names, -wins, -losses, ties)
    with pytest.raises(ValueError, match=r"`wins` must have shape \(3, 3\), got \(2, 2\)"):
        fit_ratings(["x", "y", "z"], wins, losses, ties)
    with pytest.raises(ValueError, match="`names` must be at least two distinct models"):
        fit_ratings(["x", "x"], wins, losses, ties)
    with pytest.raises(ValueError, match="non-zero diagonal"):
        fit_ratings(names, wins + np.eye(2, dtype=int), losses + np.eye(2, dtype=int), ties)
    with pytest.raises(ValueError, match="Rao-Kupper theta must be >= 1"):
        outcome_probabilities(0.0, "rao_kupper", 0.5)
    with pytest.raises(ValueError, match="needs a tie_parameter"):
        outcome_log_likelihood(np.zeros(2), wins, losses, ties, "davidson")


def test_fit_ratings_rejects_a_disconnected_comparison_graph():
    _, wins, _, ties = counts_from_votes([("a", "b", "a"), ("b", "a", "a"), ("c", "d", "a"), ("d", "c", "a")])
    with pytest.raises(ValueError, match=r"2 separate groups of models \(e.g. \['c', 'd'\] never meet"):
        fit_ratings(["a", "b", "c", "d"], wins, wins.T, ties)


# ----------------------------------------------------------------------------- leaderbot parity


@pytest.fixture(scope="module")
def leaderbot_models():
    numba = pytest.importorskip("numba", reason="leaderbot (and its numba) not installed: pip install leaderbot")
    # leaderbot's numba kernels take ~10 s to compile on first use; on 20 models plain numpy is faster, so
    # import leaderbot with JIT off (numba reads the flag at decoration time) and restore the flag at once.
    old = numba.config.DISABLE_JIT
    numba.config.DISABLE_JIT = True
    try:
        return pytest.importorskip("leaderbot.models", reason="leaderbot not installed: pip install leaderbot")
    finally:
        numba.config.DISABLE_JIT = old


@pytest.mark.parametrize("likelihood", LIKELIHOODS)
def test_matches_leaderbot_on_the_20_most_played_arena_models(leaderbot_models, likelihood):
    names, wins, losses, ties = load_leaderbot_counts()
    keep = np.argsort(-(wins.sum(0) + wins.sum(1) + ties.sum(0)), kind="stable")[:20]
    names = [names[k] for k in keep]
    wins, losses, ties = (m[np.ix_(keep, keep)] for m in (wins, losses, ties))
    data = to_leaderbot_data(names, wins, losses, ties)
    if likelihood == "bradley_terry":
        lb = leaderbot_models.BradleyTerry(data, k_cov=None)
    else:
        cls = leaderbot_models.RaoKupper if likelihood == "rao_kupper" else leaderbot_models.Davidson
        lb = cls(data, k_cov=None, k_tie=0)
    lb.train()
    lb_scores = np.asarray(lb.param[:20], dtype=float)
    lb_tie = {"bradley_terry": None, "rao_kupper": math.exp(abs(max(lb.param[-1], 1e-2))),
              "davidson": math.exp(lb.param[-1])}[likelihood]

    fit = fit_ratings(names, wins, losses, ties, likelihood)
    assert kendalltau(fit.scores, lb_scores).statistic >= 0.9
    lb_ll = outcome_log_likelihood(lb_scores, wins, losses, ties, likelihood, lb_tie)
    # Same likelihood, same optimum: within 1e-3 nats on 427k votes (seen: 4e-5 BT, 2e-9 RK and Davidson).
    # Bradley-Terry: leaderbot's solver adds a weak prior (one virtual win and loss per model), so our plain
    # MLE is never below it.
    assert fit.log_likelihood >= lb_ll - 1e-6
    assert fit.log_likelihood - lb_ll <= 1e-3
