"""Per-labeler evaluation of a personalised model: its own reward against the population reward it carries.

Every decided pair is judged twice by the same checkpoint — with the pair's labeler
(their own reward where the model knows them) and without (the population reward) —
so the gain per labeler compares like with like. Accuracy is related to how many
judgements each labeler was trained on (stored in the checkpoint).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Sequence

import numpy as np

from rewardlab.contracts.schema import Comparison
from rewardlab.evaluation.predict import pair_margins
from rewardlab.metrics.pairwise import bootstrap_ci
from rewardlab.scoring import RewardModel


def labeler_breakdown(model: RewardModel, comparisons: Sequence[Comparison], *, batch_size: int = 32,
                      n_boot: int = 1000, seed: int = 0) -> dict:
    """Per labeler: pairs, training judgements, which reward applies, accuracy (95 % interval) with their own
    reward and with the population reward, and the gain; plus how many labelers gain or lose."""
    comparisons = [c for c in comparisons if c.labeler is not None]
    personal = pair_margins(model, comparisons, batch_size)
    population = pair_margins(model, [dataclasses.replace(c, labeler=None) for c in comparisons], batch_size)
    owners = np.array([c.labeler for c in comparisons for p in c.pairs if not p.tie])
    trained = model.labeler_pairs
    rows = {}
    for labeler in sorted(set(owners.tolist())):
        mine = owners == labeler
        own, pop = personal[mine] > 0, population[mine] > 0
        rows[labeler] = {
            "pairs": int(mine.sum()), "train_pairs": int(trained.get(labeler, 0)),
            "reward": model.labeler_source(labeler),
            "accuracy": float(own.mean()), "ci95": list(bootstrap_ci(lambda idx: own[idx].mean(), len(own),
                                                                     n_boot=n_boot, seed=seed)),
            "population_accuracy": float(pop.mean()), "gain": float(own.mean() - pop.mean())}
    gains = np.array([r["gain"] for r in rows.values()])
    return {"labelers": rows, "overall": {
        "accuracy": float((personal > 0).mean()) if len(personal) else None,
        "population_accuracy": float((population > 0).mean()) if len(population) else None,
        "labelers_gaining": int((gains > 0).sum()), "labelers_losing": int((gains < 0).sum()),
        "labelers_equal": int((gains == 0).sum()), "mean_gain": float(gains.mean()) if len(gains) else None}}


def plot_gains(breakdown: dict, path: Path) -> Path:
    """Per-labeler gain of their own reward over the population reward, sorted; and accuracy against the
    number of judgements each labeler was trained on."""
    from rewardlab.evaluation.plots import _STYLE, _save, plt

    rows = breakdown["labelers"]
    names = sorted(rows, key=lambda u: rows[u]["gain"])
    gains = [rows[u]["gain"] for u in names]
    with plt.rc_context(_STYLE):
        fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.2))
        left.bar(range(len(names)), gains, color=["C3" if g < 0 else "C2" for g in gains])
        left.axhline(0, color="grey", linewidth=1)
        left.set(xlabel="labelers, sorted", ylabel="accuracy gain over population",
                 title="Personal vs population reward")
        if len(names) <= 20:
            left.set_xticks(range(len(names)), names, rotation=45, ha="right")
        else:
            left.set_xticks([])
        right.scatter([rows[u]["train_pairs"] for u in rows], [rows[u]["accuracy"] for u in rows],
                      s=[8 + rows[u]["pairs"] for u in rows], alpha=0.6, color="C0", label="own reward")
        right.scatter([rows[u]["train_pairs"] for u in rows], [rows[u]["population_accuracy"] for u in rows],
                      s=8, alpha=0.6, color="grey", marker="x", label="population reward")
        right.set(xlabel="training judgements of the labeler", ylabel="held-out accuracy", ylim=(-0.05, 1.05),
                  title="Accuracy vs training judgements")
        right.legend(loc="lower right")
        return _save(fig, Path(path))
