"""Score responses with a trained reward model, whatever its kind.

    >>> rm = RewardModel.from_pretrained(checkpoint)  # a model folder such as "runs/demo/model", or a hub id
    >>> rm.heads                                       # one reward per rated attribute, then the overall one
    ('correctness', 'helpfulness', 'aggregate')
    >>> reward = rm.score("How do I boil an egg?", "Simmer it for 9 minutes.")
    >>> type(reward)
    <class 'float'>
    >>> scores = rm.score_attributes("How do I boil an egg?", "Simmer it for 9 minutes.")
    >>> list(scores), scores["aggregate"] == reward    # score() is the aggregate head
    (['correctness', 'helpfulness', 'aggregate'], True)
    >>> abs(scores["aggregate"] - (scores["correctness"] + scores["helpfulness"]) / 2) < 1e-5  # equal weights
    True
    >>> ranked = rm.rank("How do I boil an egg?", ["Simmer it for 9 minutes.", "No idea.", "Boil it."])
    >>> sorted(ranked.order), ranked.scores == sorted(ranked.scores, reverse=True)  # indices, best first
    ([0, 1, 2], True)
    >>> chat = [{"role": "user", "content": "How do I boil an egg?"}]  # chat messages (OpenAI's, TRL's) work too
    >>> answer = [{"role": "assistant", "content": "Simmer it for 9 minutes.", "name": "bot"}]  # name is ignored
    >>> rm.score(chat, answer) == rm.score(*render_item(rm.processor.render_chat, chat, answer))  # the template's text
    True
    >>> sorted(rm.compare(chat, answer, [{"role": "assistant", "content": "No idea."}]))  # P(a wins), P(b), P(tie)
    ['a', 'b', 'tie']
    >>> centred = rm.score_batch(["How do I boil an egg?"] * 2, ["Simmer it.", "No idea."], normalize="prompt_mean")
    >>> abs(sum(centred)) < 1e-9                       # each reward minus its prompt's mean
    True

A prompt is a string or a list of ``{"role", "content"}`` messages, a response a string, a message list
or (image + text models) an image; messages are rendered with the model's chat template exactly as the
server and :class:`~rewardlab.reward_function.RewardFunction` render them (:mod:`rewardlab.scoring_inputs`
says which message keys are ignored and which are refused).

Works for rewardlab checkpoints of every kind (the folder's ``rewardlab.kind``
picks how it is loaded) and for any Hugging Face sequence-classification reward
model with one output (a local folder, or a hub id for users online). Scores are
the raw head outputs unless ``normalize`` asks for z-scores (using the training
reward mean/std stored in the checkpoint), a sigmoid, or ``prompt_mean``: each reward
minus the mean reward of the items in the same call that share its prompt (the
group baseline GRPO-style loops subtract).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np
import torch

from rewardlab.contracts.batch import PairTable
from rewardlab.contracts.schema import OUTCOMES, Comparison, Pair
from rewardlab.models.base import RewardNet, get_kind, load_model
from rewardlab.models.personal import POPULATION, Personal, personalize
from rewardlab.scoring_inputs import render_item, render_items
from rewardlab.scoring_steps import StepScoring

__all__ = ["NORMALIZATIONS", "JudgedComparison", "Ranked", "RewardModel", "render_item", "zero_shot_judge"]

NORMALIZATIONS = ("none", "zscore", "sigmoid", "prompt_mean")


@dataclass(frozen=True)
class Ranked:
    """Responses ordered best first: their original indices and scores."""

    order: list[int]
    scores: list[float]


@dataclass(frozen=True)
class JudgedComparison:
    """A comparison's pairs as the model judges them.

    ``chosen`` / ``rejected`` (P,): each pair's two scores (rewards on the pair's head, or
    log P(first) / log P(second) for pairwise kinds); ``log_probs`` (P, 3): log P(first wins),
    log P(second wins), log P(tie); ``rewards`` (K, H): each response's rewards (None for
    pairwise kinds, which score pairs only).
    """

    chosen: np.ndarray
    rejected: np.ndarray
    log_probs: np.ndarray
    rewards: np.ndarray | None
    consistent: np.ndarray | None = None  # (P,) pairwise kinds: each order alone predicts the same outcome


class RewardModel(StepScoring):
    """A loaded reward model: its network, its item processor and the checkpoint's metadata."""

    def __init__(self, model: RewardNet, processor, metadata: dict, device: str | torch.device = "cpu"):
        # an ensemble scores and judges as its members' kind does (pairwise kinds prepare ordered pairs)
        self.kind = get_kind(metadata.get("member_kind") or metadata.get("kind", "text"))
        self.model = model.to(device).eval()
        self.processor = processor
        self.device = torch.device(device)
        self.metadata = metadata
        self.temperature = float(metadata.get("temperature", 1.0))

    @classmethod
    def from_pretrained(cls, path: str, *, device: str | None = None, dtype: torch.dtype | None = None
                        ) -> "RewardModel":
        """Load a checkpoint folder or hub id (safetensors weights only); the saved kind decides how."""
        device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        model, processor, metadata = load_model(path, device, dtype)
        return cls(model, processor, metadata, device)

    @property
    def heads(self) -> tuple[str, ...]:
        """Names of the reward columns; the last is the overall reward."""
        return tuple(self.model.heads)

    def normalize_scores(self, scores: np.ndarray, normalize: str, prompts: Sequence[str] = ()) -> np.ndarray:
        """``scores`` (N, H) or (N,) normalised as ``normalize`` says; ``prompt_mean`` groups rows by ``prompts``."""
        if normalize == "none":
            return scores
        if normalize == "sigmoid":
            return 1.0 / (1.0 + np.exp(-scores))
        if normalize == "prompt_mean":
            if len(prompts) != len(scores):
                raise ValueError(f"normalize='prompt_mean' needs each item's prompt: got {len(prompts)} prompts "
                                 f"for {len(scores)} scores")
            groups: dict[str, list[int]] = {}
            for i, p in enumerate(prompts):
                groups.setdefault(p, []).append(i)
            out = np.array(scores, dtype=np.float64)
            for rows in groups.values():
                out[rows] -= out[rows].mean(axis=0)
            return out
        if normalize == "zscore":
            if "reward_mean" not in self.metadata:
                raise ValueError("normalize='zscore' needs reward statistics, which only rewardlab checkpoints store")
            stats = self.metadata.get("head_stats")
            if stats and scores.ndim == 2:
                mean = np.array([stats[h][0] for h in self.heads])
                std = np.array([max(stats[h][1], 1e-8) for h in self.heads])
                return (scores - mean) / std
            return (scores - self.metadata["reward_mean"]) / max(self.metadata["reward_std"], 1e-8)
        raise ValueError(f"normalize={normalize!r}; choose one of {', '.join(NORMALIZATIONS)}")

    # ------------------------------------------------------------------ labelers

    @property
    def personalized(self) -> bool:
        """Whether the model has rewards of its own for labelers (``model.personalization``) beside the
        population's; the checkpoint's metadata says so, for every kind and for ensembles of personalised members."""
        return "personalization" in self.metadata

    @property
    def labeler_pairs(self) -> dict[str, int]:
        """The training pairs of each labeler of a personalised model ({} otherwise)."""
        return dict(self.metadata.get("personalization", {}).get("train_pairs", {}))

    @property
    def labelers(self) -> list[str]:
        """The labelers a personalised model has parameters for (empty for population models)."""
        return list(self.metadata.get("personalization", {}).get("labelers", []))

    @property
    def labeler_positions(self) -> dict[str, int]:
        """Each labeler's row in the model's user tables (the saved order; an ensemble's members share it)."""
        return {u: i for i, u in enumerate(self.labelers)}

    def labeler_source(self, labeler: str | None) -> str:
        """Which reward scores ``labeler``: ``personal`` (its own parameters) or ``population``."""
        return "personal" if labeler is not None and labeler in self.labelers else "population"

    def _labeler_index(self, labeler: str | None, unknown_labeler: str) -> int:
        if labeler is None:
            return POPULATION
        if not isinstance(labeler, str) or not labeler.strip():
            raise ValueError(f"labeler must be a non-empty string id, got {labeler!r}")
        if not self.personalized:
            if unknown_labeler == "error":
                raise ValueError(f"labeler {labeler!r}: this model is not personalised (it has one population reward)")
            return POPULATION
        index = self.labeler_positions
        if labeler not in index and unknown_labeler == "error":
            known = ", ".join(self.labelers[:10]) + (" ..." if len(self.labelers) > 10 else "")
            raise ValueError(f"unknown labeler {labeler!r}; the model knows {len(index)} labelers ({known}). Score "
                             "with the population reward (unknown_labeler='population') or onboard them with "
                             "`rewardlab adapt`")
        return index.get(labeler, POPULATION)

    def with_labelers(self, responses: Sequence[object], labelers: Sequence[str | None] | str | None,
                      unknown_labeler: str = "population") -> list[object]:
        """Responses tagged with their labeler for a personalised model's processor (as they are otherwise);
        checks every labeler id, raising for unknown ones where ``unknown_labeler="error"``."""
        if unknown_labeler not in ("population", "error"):
            raise ValueError(f"unknown_labeler={unknown_labeler!r}; choose population or error")
        if labelers is None:  # items already carry their labeler, or are the population's
            return list(responses)
        if isinstance(labelers, str):
            labelers = [labelers] * len(responses)
        if len(labelers) != len(responses):
            raise ValueError(f"got {len(labelers)} labelers for {len(responses)} responses")
        if not self.personalized:
            for u in set(labelers):
                self._labeler_index(u, unknown_labeler)  # checks, raises where asked to
            return list(responses)
        cache = {u: self._labeler_index(u, unknown_labeler) for u in set(labelers)}
        return [Personal(cache[u], r) for u, r in zip(labelers, responses)]

    # ------------------------------------------------------------------ scoring

    @torch.inference_mode()
    def score_heads(self, prompts: Sequence[str | list], responses: Sequence[object], *, batch_size: int = 32,
                    normalize: str = "none", labeler: Sequence[str | None] | str | None = None,
                    unknown_labeler: str = "population", aggregate: str | None = None) -> np.ndarray:
        """Every head's reward for aligned (prompt, response) lists: (N, H), in input order.

        A prompt is a string or a list of ``{"role", "content"}`` chat messages, a response a string, a
        message list or (image + text models) an image; message lists are rendered with the model's chat
        template (:func:`~rewardlab.scoring_inputs.render_item`), so ``[{"role": "user", "content": p}]``
        scores as its rendered text. ``labeler`` (one id, or one per item) picks a personalised model's
        labeler; a labeler it has no parameters for is scored with the population reward, or raises with
        ``unknown_labeler="error"`` (:meth:`labeler_source` says which reward applies). Items are
        batched cheapest first (shortest texts together) to cut padding. ``aggregate``: how a process reward
        model's step probabilities make a reward, in this call (:mod:`rewardlab.scoring_steps`; None: as saved).
        """
        prompts, responses = render_items(self.processor.render_chat, prompts, responses)
        responses = self.with_labelers(responses, labeler, unknown_labeler)
        if not prompts:
            return np.zeros((0, len(self.heads)))
        items, _ = self.processor.encode_items(prompts, responses)
        order = sorted(range(len(items)), key=lambda i: self.processor.cost(items[i]))
        scores = np.empty((len(items), len(self.heads)), dtype=np.float64)
        with self.aggregating(aggregate):
            for start in range(0, len(order), batch_size):
                idx = order[start: start + batch_size]
                inputs = {k: v.to(self.device) for k, v in self.processor.collate([items[i] for i in idx]).items()}
                scores[idx] = self.model(**inputs).float().cpu().numpy()
        return self.normalize_scores(scores, normalize, prompts)

    # ------------------------------------------------------------------ ensembles

    @property
    def is_ensemble(self) -> bool:
        return hasattr(self.model, "member_rewards")

    def forward_rows(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Rewards of a collated batch: (B, H), or for ensembles (B, H·(K+1)): the mean's H columns, then each
        member's (what the server's batcher computes)."""
        if not self.is_ensemble:
            return self.model(**inputs)
        members = self.model.member_rewards(**inputs)  # (K, B, H)
        return torch.cat([members.mean(0), *members], dim=1)

    @property
    def row_width(self) -> int:
        """Columns of :meth:`forward_rows`."""
        return len(self.heads) * (1 + len(self.model.members) if self.is_ensemble else 1)

    def uncertainty(self, member_rows: np.ndarray, lam: float = 1.0) -> dict[str, np.ndarray]:
        """From members' rewards (K, N): mean, std, conservative = mean - lam·std, and the worst case (min)."""
        mean, std = member_rows.mean(0), member_rows.std(0)
        return {"mean": mean, "std": std, "conservative": mean - lam * std, "min": member_rows.min(0)}

    @torch.inference_mode()
    def member_scores(self, prompts: Sequence[str | list], responses: Sequence[object], *, batch_size: int = 32,
                      labeler: Sequence[str | None] | str | None = None, unknown_labeler: str = "population"
                      ) -> np.ndarray:
        """Every member's rewards (K, N, H) of an ensemble, items batched by length; one forward per batch
        scores all members (for a shared-backbone ensemble, one pass of the backbone). ``labeler`` as in
        :meth:`score_heads`."""
        if not self.is_ensemble:
            raise ValueError("member scores need an ensemble (train with train.ensemble_size >= 2)")
        prompts, responses = render_items(self.processor.render_chat, prompts, responses)
        responses = self.with_labelers(responses, labeler, unknown_labeler)
        items, _ = self.processor.encode_items(prompts, responses)
        k, h = len(self.model.members), len(self.heads)
        rows = np.empty((len(items), self.row_width))
        order = np.argsort([self.processor.cost(x) for x in items], kind="stable")
        for start in range(0, len(items), batch_size):
            idx = order[start: start + batch_size]
            batch = self.processor.collate([items[i] for i in idx])
            rows[idx] = self.forward_rows({n: v.to(self.device) for n, v in batch.items()}).float().cpu().numpy()
        return rows[:, h:].reshape(len(items), k, h).transpose(1, 0, 2)  # (K, N, H)

    def score_uncertainty(self, prompts: Sequence[str | list], responses: Sequence[object], *, lam: float = 1.0,
                          batch_size: int = 32, **labelers) -> dict[str, list[float]]:
        """An ensemble's overall reward per item with its uncertainty: mean, std (member disagreement),
        conservative (mean − lam·std, against over-optimisation) and min (the worst member); ``labeler``
        (and ``unknown_labeler``) as in :meth:`score_heads`."""
        if not self.is_ensemble:
            raise ValueError("score_uncertainty needs an ensemble (train with train.ensemble_size >= 2)")
        members = self.member_scores(prompts, responses, batch_size=batch_size, **labelers)[:, :, -1]  # (K, N)
        return {name: values.tolist() for name, values in self.uncertainty(members, lam).items()}

    def score_batch(self, prompts: Sequence[str | list], responses: Sequence[object], *, batch_size: int = 32,
                    normalize: str = "none", **labelers) -> list[float]:
        """Overall rewards of aligned (prompt, response) lists, in input order (texts or chat message lists,
        ``labeler`` as in :meth:`score_heads`)."""
        return self.score_heads(prompts, responses, batch_size=batch_size, normalize=normalize,
                                **labelers)[:, -1].tolist()

    def score(self, prompt: str | list, response: object, *, normalize: str = "none", labeler: str | None = None,
              unknown_labeler: str = "population", aggregate: str | None = None) -> float:
        """The overall reward of one response, a text or chat message list as in :meth:`score_heads` (for
        ``labeler``'s taste where the model is personalised)."""
        return self.score_batch([prompt], [response], normalize=normalize, labeler=labeler,
                                unknown_labeler=unknown_labeler, aggregate=aggregate)[0]

    def score_attributes(self, prompt: str | list, response: object, *, normalize: str = "none",
                         labeler: str | None = None) -> dict[str, float]:
        """Every head's score by name (per attribute, then the aggregate) for one response."""
        row = self.score_heads([prompt], [response], normalize=normalize, labeler=labeler)[0]
        return dict(zip(self.heads, row.tolist()))

    def rank(self, prompt: str | list, responses: Sequence[object], **kwargs) -> Ranked:
        """Order ``responses`` best first by reward."""
        scores = self.score_batch([prompt] * len(responses), list(responses), **kwargs)
        order = sorted(range(len(scores)), key=lambda i: -scores[i])
        return Ranked(order=order, scores=[scores[i] for i in order])

    def best_of_n(self, prompt: str | list, responses: Sequence[object]) -> tuple[int, object]:
        """Index and value of the highest-reward response."""
        if not responses:
            raise ValueError("best_of_n needs at least one response")
        best = self.rank(prompt, responses).order[0]
        return best, responses[best]

    # ------------------------------------------------------------------ judging pairs

    @torch.inference_mode()
    def judge(self, comparisons: Sequence[Comparison], *, batch_size: int = 32) -> list[JudgedComparison]:
        """Each comparison's pairs judged by the model's outcome model, whatever the kind.

        Single-response kinds score each distinct (prompt, response) once and compare rewards on each
        pair's head; pairwise kinds score the ordered pairs their ``prepare`` makes. A comparison's prompt
        and responses may be chat message lists, rendered as :meth:`score_heads` renders them.
        """
        comparisons = [self._rendered(c, f"comparisons[{k}]") for k, c in enumerate(comparisons)]
        prepared = [self.kind.prepare(c) for c in comparisons] if self.kind.prepare else comparisons
        if self.personalized:  # each comparison judged by its own labeler's reward
            prepared = [personalize(c, self.labeler_positions) for c in prepared]
        keys = list(dict.fromkeys((c.prompt, r) for c in prepared for r in c.responses))
        scores = self.score_heads([k[0] for k in keys], [k[1] for k in keys], batch_size=batch_size)
        row = {k: i for i, k in enumerate(keys)}
        heads = self.model.head_index()
        out = []
        for c in prepared:
            for p in c.pairs:
                if p.attribute not in heads:
                    names = ", ".join(h for h in heads if h is not None)
                    raise ValueError(f"{c.source}: the data rates attribute {p.attribute!r}, which the model has no "
                                     f"head for (heads: {names})")
            rewards = torch.from_numpy(scores[[row[(c.prompt, r)] for r in c.responses]])
            table = PairTable.of(len(c.pairs), i=[p.winner for p in c.pairs], j=[p.loser for p in c.pairs],
                                 tie=[p.tie for p in c.pairs], head=[heads[p.attribute] for p in c.pairs])
            judged = self.model.outcome(rewards.to(self.device), table.to(self.device))
            consistent = None if judged.consistent is None else judged.consistent.cpu().numpy()
            out.append(JudgedComparison(*(x.float().cpu().numpy() for x in judged[:3]),
                                        None if self.kind.prepare else rewards.numpy(), consistent))
        return out

    def _rendered(self, c: Comparison, where: str) -> Comparison:
        """``c`` with message lists rendered (as it is when it has none); errors name ``where`` or its source."""
        if isinstance(c.prompt, str) and not any(isinstance(r, list) for r in c.responses):
            return c
        items = [render_item(self.processor.render_chat, c.prompt, r, where=c.source or where,
                             fields=("prompt", f"responses[{j}]")) for j, r in enumerate(c.responses)]
        return replace(c, prompt=items[0][0], responses=tuple(r for _, r in items))

    def compare(self, prompt: str | list, a: object, b: object, *, labeler: str | None = None,
                unknown_labeler: str = "population") -> dict[str, float]:
        """P(a wins), P(b wins), P(tie) for two responses to ``prompt`` (ties only from tie-aware models),
        as ``labeler`` would judge where the model is personalised. Prompt and responses may be chat message
        lists, as in :meth:`score_heads`."""
        self._labeler_index(labeler, unknown_labeler)  # raises for an unknown labeler where asked to
        (p, a), (_, b) = (render_item(self.processor.render_chat, prompt, r, where="compare", fields=("prompt", n))
                          for n, r in (("a", a), ("b", b)))
        judged = self.judge([Comparison(p, (a, b), (Pair(0, 1),), labeler=labeler)])[0]
        probs = np.exp(judged.log_probs[0])
        return dict(zip(OUTCOMES, (probs / probs.sum()).tolist()))

    def preference_probability(self, prompt: str | list, a: object, b: object) -> float:
        """P(a ≻ b) = σ((r_a - r_b) / T), with the calibrated temperature T where one was fitted."""
        ra, rb = self.score_batch([prompt, prompt], [a, b])
        return float(1.0 / (1.0 + np.exp(-(ra - rb) / self.temperature)))


def zero_shot_judge(backbone: str | None = None, *, device: str | None = None, dtype: torch.dtype | None = None,
                    **options) -> RewardModel:
    """An untrained causal LM (default: the offline SmolLM2-135M-Instruct) as an A / B / tie judge (``compare``,
    ``judge``); ``options``: ``template``, ``max_length``, ``max_prompt_tokens`` (see
    :func:`rewardlab.models.judge.zero_shot_parts`).

    Example (loads SmolLM2-135M-Instruct: 20 s the first time, then 1 s; its probabilities vary with the backbone)::

        rm = zero_shot_judge("smollm2")
        rm.compare("2 + 2?", "4", "5")   # {'a': 0.41, 'b': 0.33, 'tie': 0.26}
    """
    from rewardlab.models.judge import DEFAULT_JUDGE_BACKBONE, zero_shot_parts

    model, processor, metadata = zero_shot_parts(backbone or DEFAULT_JUDGE_BACKBONE, dtype=dtype, **options)
    return RewardModel(model, processor, metadata, device or ("cuda" if torch.cuda.is_available() else "cpu"))
