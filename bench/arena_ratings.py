"""rewardlab vs leaderbot: model ratings on leaderbot's Chatbot Arena counts (2024-08-14).

Data: ``leaderbot/data/chatbotarena_20240814.json`` as shipped (129 models, 3,460 model pairs), read by
``rewardlab.evaluation.ratings.load_leaderbot_counts``. Like ``leaderbot.data.load()`` (``tie="tie"``), the "both bad"
votes are left out, leaving 1,374,996 votes (595,570 + 498,305 decided, 281,121 ties) over 3,455 pairs. Both
libraries fit the same counts, handed to leaderbot as its ``{"models", "X", "Y"}`` dict.

Likelihoods, leaderbot's plain variants so that both fit the same model:

- ``bradley_terry`` vs ``BradleyTerry(k_cov=None)``: a tie counts as half a win and half a loss in both.
- ``rao_kupper`` vs ``RaoKupper(k_cov=None, k_tie=0)``: one threshold eta = log(theta) for all pairs.
- ``davidson`` vs ``Davidson(k_cov=None, k_tie=0)``: one mu = log(nu) for all pairs.

Every log-likelihood is computed by one function, ``rewardlab.evaluation.ratings.outcome_log_likelihood``, from each
library's scores and tie parameter, on the same counts. Kendall tau compares the two orderings of all models.
Fit time: best of two fits each, so leaderbot's numba compilation (5-10 s on first use) is left out. Our
L-BFGS runs on preconditioned scores (``s_i * sqrt(games_i / games)``) and needs ~25 iterations; leaderbot's
BFGS on the raw scores needs ~500 for Rao-Kupper. Timings are from a shared 2-core CPU and vary.

Where the two can differ, and why:

- Bradley-Terry: leaderbot solves it with Newman's (2023) fixed-point iteration, which adds a weak prior
  (``a += 1/(1+p)``, ``b += 1/(1+p)``: each model one virtual win and one virtual loss against a score-0
  opponent) and stops after at most 100 sweeps (``tol=1e-7``); rewardlab maximises the plain likelihood,
  so its log-likelihood can only be higher, and the prior shrinks sparsely-played models' scores slightly.
- Rao-Kupper and Davidson: leaderbot runs BFGS on the same likelihood (eta clipped at >= 0.01, irrelevant
  here) with a ``(sum s)**2`` penalty, as rewardlab does with L-BFGS; any remaining gap is optimiser
  tolerance.

    python bench/arena_ratings.py
"""

from __future__ import annotations

import time

import numpy as np
from scipy.stats import kendalltau

from rewardlab.evaluation.ratings import LIKELIHOODS, fit_ratings, load_leaderbot_counts, outcome_log_likelihood, to_leaderbot_data


def leaderbot_model(likelihood: str, data: dict):
    from leaderbot.models import BradleyTerry, Davidson, RaoKupper

    if likelihood == "bradley_terry":
        return BradleyTerry(data, k_cov=None)
    cls = RaoKupper if likelihood == "rao_kupper" else Davidson
    return cls(data, k_cov=None, k_tie=0)


def leaderbot_fit(likelihood: str, data: dict):
    """Train leaderbot's plain model -> (scores (n,), tie parameter in rewardlab's convention, seconds)."""
    model = leaderbot_model(likelihood, data)
    start = time.perf_counter()
    model.train()
    seconds = time.perf_counter() - start
    param = np.asarray(model.param, dtype=float)
    n = len(data["models"])
    scores = param[:n] - param[:n].mean()
    if likelihood == "bradley_terry":
        return scores, None, seconds
    if likelihood == "rao_kupper":
        return scores, float(np.exp(abs(max(param[-1], 1e-2)))), seconds  # theta = e^eta, eta clipped as leaderbot does
    return scores, float(np.exp(param[-1])), seconds  # nu = e^mu


def main() -> None:
    names, wins, losses, ties = load_leaderbot_counts()
    data = to_leaderbot_data(names, wins, losses, ties)
    n_votes = int(wins.sum() + ties.sum() // 2)
    print(f"Chatbot Arena 2024-08-14 (leaderbot's file): {len(names)} models, {len(data['X'])} pairs with votes, "
          f"{n_votes:,} votes ({int(ties.sum() // 2):,} ties; 'both bad' left out as in leaderbot.data.load())")

    rows, tops = [], []
    for likelihood in LIKELIHOODS:
        our_seconds = []
        for _ in range(2):
            start = time.perf_counter()
            ours = fit_ratings(names, wins, losses, ties, likelihood)
            our_seconds.append(time.perf_counter() - start)
        lb_runs = [leaderbot_fit(likelihood, data) for _ in range(2)]  # the first run compiles numba kernels
        lb_scores, lb_tie, _ = lb_runs[-1]
        our_seconds, lb_seconds = min(our_seconds), min(run[2] for run in lb_runs)
        if not ours.converged:
            print(f"warning: rewardlab's {likelihood} fit did not report convergence")
        ll_ours = outcome_log_likelihood(ours.scores, wins, losses, ties, likelihood, ours.tie_parameter)
        ll_lb = outcome_log_likelihood(lb_scores, wins, losses, ties, likelihood, lb_tie)
        tau = kendalltau(ours.scores, lb_scores).statistic
        tie = "-" if lb_tie is None else f"{ours.tie_parameter:.5f} / {lb_tie:.5f}"
        rows.append((likelihood, f"{ll_ours:,.3f}", f"{ll_lb:,.3f}", f"{ll_ours - ll_lb:+.1e}", tie,
                     f"{np.max(np.abs(ours.scores - lb_scores)):.2e}", f"{tau:.4f}",
                     f"{our_seconds:.3f} / {lb_seconds:.3f}"))
        lb_top = [names[k] for k in np.argsort(-lb_scores, kind="stable")[:5]]
        tops.append((likelihood, ours.ranking()[:5], lb_top))

    header = ("likelihood", "LL rewardlab", "LL leaderbot", "LL diff", "tie param (rl / lb)", "max |ds|",
              "Kendall tau", "fit s (rl / lb, best of 2)")
    widths = [max(len(str(r[c])) for r in [header, *rows]) for c in range(len(header))]
    for r in [header, *rows]:
        print("  ".join(str(v).ljust(w) for v, w in zip(r, widths)))
    print("(tie param: theta for rao_kupper, nu for davidson; max |ds|: largest score gap, both mean-centred;\n"
          " compare LL within a row only: Bradley-Terry scores a tie as half a win and half a loss, the others\n"
          " give it its own probability)")
    for likelihood, ours_top, lb_top in tops:
        print(f"top-5 {likelihood:13s} rewardlab: {', '.join(ours_top)}")
        print(f"top-5 {likelihood:13s} leaderbot: {', '.join(lb_top)}")
    print("Differences: leaderbot's Bradley-Terry solver adds one virtual win and loss per model against a "
          "score-0 opponent\n(a weak prior) and stops after 100 sweeps, so rewardlab's plain MLE has the higher "
          "log-likelihood; Rao-Kupper and\nDavidson maximise the same likelihood in both, so gaps there are "
          "optimiser tolerance.")


if __name__ == "__main__":
    main()
