"""Does the ensemble beat its members, and does its uncertainty find its errors?

Every decided pair gets each member's margin; the ensemble's margin is their mean and
its uncertainty their standard deviation. Reported: the ensemble's accuracy against each
member's, the ROC-AUC of the standard deviation for telling misranked pairs from right
ones (0.5: uncertainty says nothing), and accuracy once the most uncertain 10 % / 25 % of
pairs are set aside (it should rise).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from sklearn.metrics import roc_auc_score

from rewardlab.contracts.schema import Comparison
from rewardlab.scoring import RewardModel


def member_margins(model: RewardModel, comparisons: Sequence[Comparison], batch_size: int = 32) -> np.ndarray:
    """Each member's margin for the winner of every decided pair, on the pair's head: (K, P), by the
    comparison's labeler's reward where the model is personalised. Each distinct (prompt, response,
    labeler) is scored once for all members. Pairwise members' margin: log P(winner) − log P(loser)."""
    if model.kind.prepare is not None:
        return _pairwise_member_margins(model, comparisons, batch_size)
    keys = list(dict.fromkeys((c.prompt, r, c.labeler) for c in comparisons for r in c.responses))
    scores = model.member_scores([k[0] for k in keys], [k[1] for k in keys], batch_size=batch_size,
                                 labeler=[k[2] for k in keys])  # (K, N, H)
    row = {key: i for i, key in enumerate(keys)}
    heads = model.model.head_index()
    margins = [scores[:, row[(c.prompt, c.responses[p.winner], c.labeler)], heads[p.attribute]]
               - scores[:, row[(c.prompt, c.responses[p.loser], c.labeler)], heads[p.attribute]]
               for c in comparisons for p in c.pairs if not p.tie]
    return np.stack(margins, axis=1) if margins else np.zeros((scores.shape[0], 0))


def _pairwise_member_margins(model: RewardModel, comparisons: Sequence[Comparison], batch_size: int) -> np.ndarray:
    decided = np.array([not p.tie for c in comparisons for p in c.pairs], dtype=bool)
    margins = []
    for member in model.model.members:  # each member judges the ordered pairs with its own outcome model
        judged = RewardModel(member, model.processor, model.metadata, model.device).judge(comparisons,
                                                                                          batch_size=batch_size)
        margin = np.concatenate([j.chosen - j.rejected for j in judged]) if judged else np.zeros(0)
        margins.append(margin[decided])
    return np.stack(margins)


def uncertainty_metrics(margins: np.ndarray, set_aside: Sequence[float] = (0.1, 0.25)) -> dict:
    """Ensemble vs members and uncertainty quality from member margins (K, P)."""
    mean, std = margins.mean(0), margins.std(0)
    wrong = mean <= 0
    order = np.argsort(std, kind="stable")  # most certain first
    out = {"pairs": int(margins.shape[1]), "members": int(margins.shape[0]),
           "accuracy": float((~wrong).mean()), "member_accuracy": [float((m > 0).mean()) for m in margins],
           "mean_std": float(std.mean()),
           "std_auroc_for_errors": float(roc_auc_score(wrong, std)) if 0 < wrong.sum() < len(wrong) else None}
    for share in set_aside:
        keep = order[: len(order) - int(round(share * len(order)))]
        out[f"accuracy_without_most_uncertain_{round(share * 100)}pct"] = float((~wrong[keep]).mean())
    return out


def ensemble_breakdown(model: RewardModel, comparisons: Sequence[Comparison], batch_size: int = 32) -> dict:
    return uncertainty_metrics(member_margins(model, comparisons, batch_size))
