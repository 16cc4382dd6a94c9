"""Reply bodies of the reward server, from what a served model computed: no HTTP, no forward passes.

:func:`score_reply` turns the batcher's rows into ``POST /v1/score``'s reply: each item's score from the head
its ``attribute`` names (else the last, the overall reward), every head's column where there are several,
which reward scored each labeler, an ensemble's member spread, and the normalised scores.
:func:`compare_reply` turns judgements into ``POST /v1/compare``'s probabilities, and :func:`openrlhf_reply`
rows into the body OpenRLHF's remote reward model client reads. :func:`classify_reply`, :func:`pooling_reply` and
:func:`embeddings_reply` give the inference engines' reply bodies (vLLM's ``/classify`` and ``/pooling``, SGLang's
``/v1/embeddings``), each text's value being its rewards, one per head (the last the overall reward).
"""

from __future__ import annotations

import time
import uuid
from typing import Sequence

import numpy as np

from rewardlab.contracts.schema import OUTCOMES
from rewardlab.serve.schemas import ScoreRequest


def score_reply(rm, name: str, body: ScoreRequest, rows: np.ndarray, prompts: list[str], truncated: int) -> dict:
    """``/v1/score``'s reply to ``body`` from the rewards of its items.

    Args:
        rm: the served :class:`~rewardlab.scoring.RewardModel` (its heads, labelers, normalisation).
        name: the model's name in the reply.
        body: the request whose items were scored.
        rows: rewards (n, H) in item order; an ensemble's are (n, H·(K+1)): the mean's H columns, then each
            member's H.
        prompts: the items' rendered prompts (``prompt_mean`` groups by them).
        truncated: how many items were truncated to fit the model.
    """
    heads = rm.heads
    members, rows = rows[:, len(heads):], rows[:, : len(heads)]  # ensembles: each member's columns follow
    idx = np.arange(len(rows))
    col = np.array([heads.index(it.attribute) if it.attribute else len(heads) - 1 for it in body.items], dtype=int)
    out = {"model": name, "scores": rows[idx, col].tolist(), "truncated": truncated}
    if len(heads) > 1:
        out["attributes"] = {h: rows[:, j].tolist() for j, h in enumerate(heads)}
    if rm.personalized:  # which reward scored each item
        out["reward_source"] = [rm.labeler_source(it.labeler) for it in body.items]
    if rm.is_ensemble:  # member disagreement on each item's reported head
        per_member = members.reshape(len(rows), -1, len(heads))[idx, :, col].T  # (K, n)
        spread = rm.uncertainty(per_member, body.uncertainty_lambda)
        out["uncertainty"] = {k: spread[k].tolist() for k in ("std", "conservative", "min")}
    if body.normalize != "none":
        out["normalize"] = body.normalize
        out["normalized"] = rm.normalize_scores(rows, body.normalize, prompts)[idx, col].tolist()
    return out


def compare_reply(rm, name: str, items: Sequence, judged: Sequence) -> dict:
    """``/v1/compare``'s reply: P(a), P(b), P(tie) of each item's pair from its judgement (ties only from
    tie-aware outcome models, 0 otherwise), and for personalised models which reward judged it."""
    probs = [np.exp(j.log_probs[0]) / np.exp(j.log_probs[0]).sum() for j in judged]
    out = {"model": name, "outcome_model": rm.model.outcome.name,
           "probabilities": [dict(zip(OUTCOMES, p.tolist())) for p in probs]}
    if rm.personalized:
        out["reward_source"] = [rm.labeler_source(it.labeler) for it in items]
    return out


def openrlhf_reply(rm, rows: np.ndarray, prompts: list[str], normalize: str) -> dict:
    """OpenRLHF's reply body: the overall reward of each query (normalised as ``normalize`` says), under both
    of the keys its client reads (``scores``, else ``rewards``)."""
    rewards = rm.normalize_scores(rows, normalize, prompts)[:, -1].tolist()
    return {"rewards": rewards, "scores": rewards, "extra_logs": {}}


def engine_values(rm, rows: np.ndarray, activated: bool) -> np.ndarray:
    """What the engines return per text: its rewards, one per head (an ensemble's mean; a personalised model's
    population reward), through a sigmoid where ``activated`` (vLLM's ``use_activation``): (n, H)."""
    values = rows[:, : len(rm.heads)]
    return 1.0 / (1.0 + np.exp(-values)) if activated else values


def _usage(tokens: int) -> dict:
    return {"prompt_tokens": tokens, "total_tokens": tokens, "completion_tokens": 0, "prompt_tokens_details": None}


def classify_reply(rm, model: str, values: np.ndarray, tokens: int) -> dict:
    """vLLM's ``ClassificationResponse``: per text ``probs`` (its values), ``num_classes`` and the ``label`` of the
    largest value (the head's name, as vLLM names a class from ``id2label``)."""
    data = [{"index": i, "label": rm.heads[int(np.argmax(v))], "probs": v.tolist(), "num_classes": len(v)}
            for i, v in enumerate(values)]
    return {"id": f"classify-{uuid.uuid4().hex}", "object": "list", "created": int(time.time()), "model": model,
            "data": data, "usage": _usage(tokens)}


def pooling_reply(model: str, values: np.ndarray, tokens: int) -> dict:
    """vLLM's ``PoolingResponse``: per text ``{"index", "object": "pooling", "data": values}``."""
    data = [{"index": i, "object": "pooling", "data": v.tolist()} for i, v in enumerate(values)]
    return {"id": f"pool-{uuid.uuid4().hex}", "object": "list", "created": int(time.time()), "model": model,
            "data": data, "usage": _usage(tokens)}


def embeddings_reply(model: str, values: np.ndarray, tokens: int) -> dict:
    """SGLang's ``EmbeddingResponse`` as its reward models fill it: per text ``{"embedding": values, "index",
    "object": "embedding"}``."""
    data = [{"embedding": v.tolist(), "index": i, "object": "embedding"} for i, v in enumerate(values)]
    return {"data": data, "model": model, "object": "list", "usage": _usage(tokens)}
