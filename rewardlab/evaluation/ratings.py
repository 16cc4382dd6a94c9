"""Model-level ratings from model-vs-model win / loss / tie counts (e.g. Chatbot Arena votes).

Each model ``i`` gets a score ``s_i`` (a log-strength, ``p_i = exp(s_i)``), fitted by maximum likelihood to
pairwise counts under one of three likelihoods, with ``d = s_i - s_j``:

* ``"bradley_terry"``: ``P(i beats j) = sigmoid(d)``. A tie counts as half a win and half a loss, as in
  ``leaderbot.models.BradleyTerry``, so the two are like for like.
* ``"rao_kupper"``: ``P(i beats j) = p_i / (p_i + theta p_j) = sigmoid(d - eta)``, ``eta = log(theta) > 0``,
  ``P(tie) = (theta**2 - 1) p_i p_j / ((p_i + theta p_j)(p_j + theta p_i))``.
* ``"davidson"``: ``P(i beats j) = p_i / (p_i + p_j + nu sqrt(p_i p_j))``,
  ``P(tie) = nu sqrt(p_i p_j) / (p_i + p_j + nu sqrt(p_i p_j))``, ``nu >= 0``.

These are the per-pair outcome heads of :mod:`rewardlab.models.outcomes`, fitted here to counts of whole
models instead of rewards of responses. The tie parameter is optimised on a log scale (``log eta``,
``log nu``) so it stays in range without bounds. Scores are defined up to a common shift; a ``(sum s)**2``
penalty pins their mean to zero without changing the likelihood (leaderbot does the same).

Counts are ``(n, n)`` arrays: ``wins[i, j]`` is how often ``i`` beat ``j``; ``losses`` must equal ``wins.T``
and ``ties`` must be symmetric (the redundancy is checked, so nothing is counted twice by mistake).
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.optimize import minimize
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.special import log_expit

from rewardlab.contracts.schema import OUTCOMES

LIKELIHOODS = ("bradley_terry", "rao_kupper", "davidson")
LEADERBOT_ARENA_FILE = "chatbotarena_20240814.json"


@dataclass(frozen=True)
class RatingFit:
    """Result of :func:`fit_ratings`.

    Attributes:
        likelihood: One of :data:`LIKELIHOODS`.
        names: Model names, ``n`` of them, in the order of ``scores``.
        scores: ``(n,)`` log-strengths with mean zero; higher is better.
        tie_parameter: ``theta`` (>= 1) for Rao-Kupper, ``nu`` (>= 0) for Davidson, else ``None``.
        log_likelihood: Total log-likelihood of the fitted counts.
        converged: Whether L-BFGS reported convergence.
    """

    likelihood: str
    names: list[str]
    scores: np.ndarray
    tie_parameter: float | None
    log_likelihood: float
    converged: bool = True

    def ranking(self) -> list[str]:
        """Model names from best to worst score."""
        return [self.names[k] for k in np.argsort(-self.scores, kind="stable")]


def _check_likelihood(likelihood: str) -> None:
    if likelihood not in LIKELIHOODS:
        raise ValueError(f"unknown likelihood {likelihood!r}; valid names: {', '.join(LIKELIHOODS)}")


def _pair_counts(wins, losses, ties, n: int | None = None):
    """Validate ``(n, n)`` count matrices and flatten them to unordered pairs.

    Returns:
        ``(i, j, w, l, t)``: ``(P,)`` arrays over pairs ``i < j`` with at least one game;
        ``w`` = i beat j, ``l`` = j beat i, ``t`` = ties.
    """
    arrays = {}
    for field, value in (("wins", wins), ("losses", losses), ("ties", ties)):
        a = np.asarray(value, dtype=float)
        if a.ndim != 2 or a.shape[0] != a.shape[1] or (n is not None and a.shape[0] != n):
            want = f"({n}, {n})" if n is not None else "square (n, n)"
            raise ValueError(f"`{field}` must have shape {want}, got {a.shape}")
        if not np.all(np.isfinite(a)) or np.any(a < 0):
            raise ValueError(f"`{field}` must hold finite, non-negative counts")
        if np.any(np.diag(a) != 0):
            raise ValueError(f"`{field}` has a non-zero diagonal: a model cannot play itself")
        arrays[field] = a
    if not np.array_equal(arrays["losses"], arrays["wins"].T):
        raise ValueError("`losses` must equal `wins.T` (losses[i, j] = wins[j, i]); "
                         "build the arrays with counts_from_votes if unsure")
    if not np.array_equal(arrays["ties"], arrays["ties"].T):
        raise ValueError("`ties` must be symmetric (ties[i, j] = ties[j, i] = ties between i and j)")
    i, j = np.triu_indices(arrays["wins"].shape[0], k=1)
    w, l, t = arrays["wins"][i, j], arrays["wins"][j, i], arrays["ties"][i, j]
    keep = (w + l + t) > 0
    return i[keep], j[keep], w[keep], l[keep], t[keep]


def _log_outcome_probs(d, tie_log, likelihood: str):
    """``d = s_i - s_j`` (P,) and the raw tie parameter -> log P(win), log P(loss), log P(tie), each (P,).

    ``tie_log`` is ``log(eta)`` (Rao-Kupper, ``eta = log(theta)``) or ``log(nu)`` (Davidson).
    """
    if likelihood == "bradley_terry":
        return log_expit(d), log_expit(-d), np.full_like(d, -np.inf)
    if likelihood == "rao_kupper":
        eta = np.exp(tie_log)
        log_win, log_loss = log_expit(d - eta), log_expit(-d - eta)
        with np.errstate(divide="ignore"):  # theta = 1: no ties, log 0
            log_tie = np.log(np.expm1(2.0 * eta)) + log_win + log_loss  # P(tie) = (theta^2 - 1) P(win) P(loss)
        return log_win, log_loss, log_tie
    # Davidson divided through by sqrt(p_i p_j): a softmax over (d/2, -d/2, log nu).
    half = 0.5 * d
    big_l = np.logaddexp(np.logaddexp(half, -half), tie_log)
    return half - big_l, -half - big_l, tie_log - big_l


def _pair_log_likelihood(d, tie_log, w, l, t, likelihood: str):
    """Total log-likelihood of pair counts ``w, l, t`` (P,) and its gradients.

    Returns:
        ``(ll, dll_dd, dll_dtie)``: float, ``(P,)`` gradient in ``d``, float gradient in ``tie_log``.
    """
    log_win, log_loss, log_tie = _log_outcome_probs(d, tie_log, likelihood)
    n = w + l + t
    if likelihood == "bradley_terry":  # a tie counts half a win and half a loss, as in leaderbot
        wh, lh = w + 0.5 * t, l + 0.5 * t
        return float(np.sum(wh * log_win + lh * log_loss)), wh - n * np.exp(log_win), 0.0
    tied = t > 0  # 0 * log 0 is 0, not nan
    ll = float(np.sum(w * log_win + l * log_loss) + np.sum(t[tied] * log_tie[tied]))
    if likelihood == "rao_kupper":
        eta = np.exp(tie_log)
        gw, gl = (w + t) * -np.expm1(log_win), (l + t) * -np.expm1(log_loss)
        dll_deta = np.sum(-gw - gl) + np.sum(t) * 2.0 / -np.expm1(-2.0 * eta)
        return ll, gw - gl, float(dll_deta * eta)
    p_win, p_loss, p_tie = np.exp(log_win), np.exp(log_loss), np.exp(log_tie)
    return ll, 0.5 * (w - l) - 0.5 * n * (p_win - p_loss), float(np.sum(t - n * p_tie))


def _tie_log_from_parameter(likelihood: str, tie_parameter: float | None) -> float:
    if likelihood == "bradley_terry":
        return 0.0
    if tie_parameter is None:
        raise ValueError(f"likelihood {likelihood!r} needs a tie_parameter")
    if likelihood == "rao_kupper" and tie_parameter < 1:
        raise ValueError(f"Rao-Kupper theta must be >= 1, got {tie_parameter}")
    if tie_parameter < 0:
        raise ValueError(f"Davidson nu must be >= 0, got {tie_parameter}")
    with np.errstate(divide="ignore"):
        return float(np.log(np.log(tie_parameter) if likelihood == "rao_kupper" else tie_parameter))


def outcome_probabilities(score_diff, likelihood: str, tie_parameter: float | None = None):
    """Win / loss / tie probabilities for score differences ``d = s_i - s_j``.

    Args:
        score_diff: ``(P,)`` array (or scalar) of ``s_i - s_j``.
        likelihood: One of :data:`LIKELIHOODS`.
        tie_parameter: ``theta`` (Rao-Kupper) or ``nu`` (Davidson).

    Returns:
        ``(p_win, p_loss, p_tie)``, each shaped like ``score_diff``; Bradley-Terry gives ``p_tie = 0``.

    Example:
        >>> [round(float(p), 3) for p in outcome_probabilities(0.0, "davidson", 2.0)]
        [0.25, 0.25, 0.5]
    """
    _check_likelihood(likelihood)
    d = np.asarray(score_diff, dtype=float)
    tie_log = _tie_log_from_parameter(likelihood, tie_parameter)
    return tuple(np.exp(x) for x in _log_outcome_probs(d, tie_log, likelihood))


def outcome_log_likelihood(scores, wins, losses, ties, likelihood: str,
                           tie_parameter: float | None = None) -> float:
    """Total log-likelihood of count matrices under given scores.

    One function serves every fit (ours, leaderbot's, hand-made), so log-likelihoods compare like for like.

    Args:
        scores: ``(n,)`` log-strengths.
        wins, losses, ties: ``(n, n)`` counts (see the module docstring).
        likelihood: One of :data:`LIKELIHOODS`.
        tie_parameter: ``theta`` (Rao-Kupper) or ``nu`` (Davidson).

    Returns:
        Sum over games of the log-probability of the observed outcome (Bradley-Terry: a tie counts as half
        a win and half a loss).
    """
    _check_likelihood(likelihood)
    s = np.asarray(scores, dtype=float)
    if s.ndim != 1:
        raise ValueError(f"`scores` must be 1-D, got shape {s.shape}")
    i, j, w, l, t = _pair_counts(wins, losses, ties, n=s.shape[0])
    tie_log = _tie_log_from_parameter(likelihood, tie_parameter)
    return _pair_log_likelihood(s[i] - s[j], tie_log, w, l, t, likelihood)[0]


def _initial_tie_log(likelihood: str, tie_fraction: float) -> float:
    # Closed forms at d = 0: Rao-Kupper P(tie) = tanh(eta / 2); Davidson nu / (2 + nu).
    f = float(np.clip(tie_fraction, 1e-3, 0.9))
    if likelihood == "rao_kupper":
        return float(np.log(2.0 * np.arctanh(f)))
    return float(np.log(2.0 * f / (1.0 - f)))


def fit_ratings(names: Sequence[str], wins, losses, ties, likelihood: str = "bradley_terry",
                *, l2: float = 0.0, max_iter: int = 2000) -> RatingFit:
    """Fit model scores to pairwise counts by maximum likelihood (L-BFGS).

    Args:
        names: ``n`` distinct model names.
        wins, losses, ties: ``(n, n)`` counts; ``wins[i, j]`` = times ``i`` beat ``j``,
            ``losses == wins.T``, ``ties`` symmetric.
        likelihood: ``"bradley_terry"``, ``"rao_kupper"`` or ``"davidson"``.
        l2: Ridge penalty ``l2 / 2 * sum(s**2)`` per game (0 = plain MLE). Set it (e.g. 1e-6) when some
            model never loses or never wins: there the MLE runs off to infinity.
        max_iter: L-BFGS iteration cap.

    Returns:
        A :class:`RatingFit` with mean-zero scores.

    Raises:
        ValueError: on an unknown likelihood, malformed counts or a comparison graph that is not
            connected (scores of separate groups of models are not comparable).
    """
    _check_likelihood(likelihood)
    names = list(names)
    if len(set(names)) != len(names) or len(names) < 2:
        raise ValueError(f"`names` must be at least two distinct models, got {names}")
    if l2 < 0:
        raise ValueError(f"`l2` must be >= 0, got {l2}")
    n = len(names)
    i, j, w, l, t = _pair_counts(wins, losses, ties, n=n)
    n_components, labels = connected_components(coo_matrix((np.ones(i.size), (i, j)), shape=(n, n)),
                                                directed=False)
    if n_components > 1:
        lonely = [names[k] for k in np.flatnonzero(labels != labels[0])][:5]
        raise ValueError(f"comparison graph has {n_components} separate groups of models "
                         f"(e.g. {lonely} never meet the group of {names[0]!r}); fit each group separately")
    total = float(np.sum(w + l + t))
    has_tie = likelihood != "bradley_terry"

    # Precondition: optimise u = s * sqrt(games_i / total). The Hessian of the mean NLL is roughly
    # diag(games_i / total) / 4, so u is evenly scaled: ~25 L-BFGS steps on Chatbot Arena instead of >1000.
    games = np.bincount(i, w + l + t, minlength=n) + np.bincount(j, w + l + t, minlength=n)
    scale = np.sqrt(games / total)

    def objective(x):  # mean negative log-likelihood + identifiability penalties
        s, tie_log = x[:n] / scale, (x[n] if has_tie else 0.0)
        ll, dll_dd, dll_dtie = _pair_log_likelihood(s[i] - s[j], tie_log, w, l, t, likelihood)
        grad_s = np.bincount(i, dll_dd, minlength=n) - np.bincount(j, dll_dd, minlength=n)
        shift = np.sum(s)
        loss = -ll / total + shift**2 + 0.5 * l2 * np.sum(s**2)
        grad_s = (-grad_s / total + 2.0 * shift + l2 * s) / scale
        return loss, np.concatenate([grad_s, [-dll_dtie / total] if has_tie else []])

    x0 = np.zeros(n + int(has_tie))
    if has_tie:
        x0[n] = _initial_tie_log(likelihood, np.sum(t) / total)
    result = minimize(objective, x0, jac=True, method="L-BFGS-B",
                      options={"maxiter": max_iter, "ftol": 1e-14, "gtol": 1e-8})
    scores = result.x[:n] / scale
    scores = scores - np.mean(scores)  # a shift leaves the likelihood unchanged
    tie_log = float(result.x[n]) if has_tie else 0.0
    tie_parameter = {"bradley_terry": None, "rao_kupper": float(np.exp(np.exp(tie_log))),
                     "davidson": float(np.exp(tie_log))}[likelihood]
    ll = _pair_log_likelihood(scores[i] - scores[j], tie_log, w, l, t, likelihood)[0]
    return RatingFit(likelihood=likelihood, names=names, scores=scores, tie_parameter=tie_parameter,
                     log_likelihood=ll, converged=bool(result.success))


def counts_from_votes(votes: Iterable[tuple[str, str, str]]):
    """Count matrices from individual votes.

    Args:
        votes: ``(model_a, model_b, outcome)`` with outcome ``"a"``, ``"b"`` or ``"tie"``.

    Returns:
        ``(names, wins, losses, ties)``: sorted names and ``(n, n)`` int arrays.

    Example:
        >>> names, wins, losses, ties = counts_from_votes([("x", "y", "a"), ("y", "x", "tie")])
        >>> names, wins.tolist(), ties.tolist()
        (['x', 'y'], [[0, 1], [0, 0]], [[0, 1], [1, 0]])
    """
    votes = list(votes)
    names = sorted({m for vote in votes for m in vote[:2]})
    index = {m: k for k, m in enumerate(names)}
    wins = np.zeros((len(names), len(names)), dtype=np.int64)
    ties = np.zeros_like(wins)
    for row, vote in enumerate(votes):
        if len(vote) != 3:
            raise ValueError(f"vote {row} must be (model_a, model_b, outcome), got {vote!r}")
        a, b, outcome = index[vote[0]], index[vote[1]], vote[2]
        if outcome not in OUTCOMES:
            raise ValueError(f"vote {row}: outcome must be 'a', 'b' or 'tie', got {outcome!r}")
        if a == b:
            raise ValueError(f"vote {row}: model {vote[0]!r} cannot play itself")
        if outcome == "tie":
            ties[a, b] += 1
            ties[b, a] += 1
        else:
            wins[(a, b) if outcome == "a" else (b, a)] += 1
    return names, wins, wins.T.copy(), ties


def load_leaderbot_counts(path: str | Path | None = None, *, include_both_bad: bool = False):
    """Read leaderbot's Chatbot Arena counts without importing leaderbot.

    The JSON holds ``models`` (names), ``X`` (``[i, j]`` pairs) and ``Y`` (``[i wins, j wins, ties,
    ties "both bad"]``). As in ``leaderbot.data.load()``, "both bad" ties are left out by default.

    Args:
        path: JSON file; default: the file shipped in the installed leaderbot.
        include_both_bad: Count "both bad" votes as ties (leaderbot's ``tie="both"``).

    Returns:
        ``(names, wins, losses, ties)`` as in :func:`counts_from_votes`.
    """
    if path is None:
        spec = importlib.util.find_spec("leaderbot")  # locates, does not import
        if spec is None or not spec.submodule_search_locations:
            raise ValueError("leaderbot is not installed; `pip install leaderbot` or pass `path`")
        path = Path(list(spec.submodule_search_locations)[0]) / "data" / LEADERBOT_ARENA_FILE
    data = json.loads(Path(path).read_text())
    names, pairs, counts = list(data["models"]), np.asarray(data["X"]), np.asarray(data["Y"])
    if pairs.ndim != 2 or pairs.shape[1] != 2 or counts.shape[0] != pairs.shape[0] or counts.shape[1] not in (3, 4):
        raise ValueError(f"{path}: expected X of shape (P, 2) and Y of shape (P, 3 or 4), "
                         f"got {pairs.shape} and {counts.shape}")
    if include_both_bad and counts.shape[1] != 4:
        raise ValueError(f"{path}: include_both_bad needs a 4th column in Y")
    wins = np.zeros((len(names), len(names)), dtype=np.int64)
    ties = np.zeros_like(wins)
    tie_count = counts[:, 2] + (counts[:, 3] if include_both_bad else 0)
    np.add.at(wins, (pairs[:, 0], pairs[:, 1]), counts[:, 0])
    np.add.at(wins, (pairs[:, 1], pairs[:, 0]), counts[:, 1])
    np.add.at(ties, (pairs[:, 0], pairs[:, 1]), tie_count)
    np.add.at(ties, (pairs[:, 1], pairs[:, 0]), tie_count)
    return names, wins, wins.T.copy(), ties


def to_leaderbot_data(names: Sequence[str], wins, losses, ties) -> dict:
    """Counts in the ``{"models", "X", "Y"}`` layout leaderbot's models take."""
    i, j, w, l, t = _pair_counts(wins, losses, ties, n=len(names))
    counts = np.column_stack([w, l, t])
    if not np.array_equal(counts, np.round(counts)):
        raise ValueError("leaderbot takes whole-number counts; round or rescale the weighted counts first")
    return {"models": list(names), "X": np.column_stack([i, j]), "Y": counts.astype(np.int64)}
