"""How far the answers in a label store agree: between labelers, with the known-answer check items, and with a
reward model. The arithmetic is :mod:`rewardlab.metrics.agreement`; this module reads the store."""

from __future__ import annotations

import threading

from rewardlab.label.store import LabelStore
from rewardlab.metrics.agreement import kendall_tau, pair_agreement, rank_agreement


def check_agreement(store: LabelStore) -> dict[str, dict]:
    """Per labeler, over the check items they ranked: ``{"items", "tau", "agree", "pairs"}``: mean τ-b with the
    known ranking, and how many of the pairs it orders they ordered the same way."""
    known = {c.index: c.known_ranks for c in store.checks}
    out: dict[str, dict] = {}
    for a in store.answers():
        if a["action"] != "rank" or a["item"] not in known:
            continue
        entry = out.setdefault(a["labeler"], {"items": 0, "taus": [], "agree": 0, "pairs": 0})
        agree, pairs = pair_agreement(a["ranks"], known[a["item"]])
        tau = kendall_tau(a["ranks"], known[a["item"]])
        entry["items"] += 1
        entry["agree"] += agree
        entry["pairs"] += pairs
        if tau is not None:
            entry["taus"].append(tau)
    for entry in out.values():
        taus = entry.pop("taus")
        entry["tau"] = sum(taus) / len(taus) if taus else None
    return out


def store_agreement(store: LabelStore, model: ModelAgreement | None = None) -> dict:
    """Everything ``/api/agreement`` shows: between labelers (:func:`rank_agreement`), with the check items, and
    (with a reward model) each labeler's pair agreement with it."""
    report = {"between": rank_agreement(store.rankings()), "checks": check_agreement(store)}
    if model is not None:
        report["model"] = model.by_labeler()
    return report


class ModelAgreement:
    """Reward-model scores per item (computed once) and pairwise agreement with a labeler's ranks."""

    def __init__(self, reward_model, store: LabelStore):
        self.rm, self.store = reward_model, store
        self._scores: dict[int, list[float]] = {}
        self._lock = threading.Lock()

    def scores(self, item: int) -> list[float]:
        with self._lock:
            if item not in self._scores:
                c = self.store.candidate(item)
                self._scores[item] = self.rm.score_batch([c.prompt] * len(c.responses), list(c.responses))
            return self._scores[item]

    @staticmethod
    def pairs(ranks: list[int], scores: list[float]) -> tuple[int, int]:
        """(agreeing, compared) over response pairs the person did not tie."""
        return pair_agreement([-s for s in scores], ranks)

    def _running(self, labeler: str) -> tuple[int, int]:
        agree = total = 0
        for row in self.store.ranked_rows(labeler):
            a, t = self.pairs(row["ranks"], self.scores(row["item"]))
            agree, total = agree + a, total + t
        return agree, total

    def report(self, labeler: str, item: int, ranks: list[int]) -> dict:
        scores = self.scores(item)
        agree, total = self.pairs(ranks, scores)
        run_agree, run_total = self._running(labeler)
        return {"order": sorted(range(len(scores)), key=lambda j: -scores[j]), "scores": scores,
                "agree": agree, "pairs": total, "running_agree": run_agree, "running_pairs": run_total}

    def by_labeler(self) -> dict[str, dict]:
        """``{labeler: {"agree", "pairs"}}`` over every ranking in the store."""
        names = sorted({a["labeler"] for a in self.store.answers() if a["action"] == "rank"})
        return {name: dict(zip(("agree", "pairs"), self._running(name))) for name in names}


Agreement = ModelAgreement  # the name earlier versions used
