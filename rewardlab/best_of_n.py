"""``rewardlab best-of-n``: sample N responses per prompt, keep the one the reward model scores highest.

    rewardlab best-of-n --policy MODEL --model RM --prompts prompts.txt --n 8 [--out best.jsonl]

Reports how much reward picking the best of N gains over a random sample (the mean reward of the N samples,
which is what one random sample gets on average) and over the policy's greedy response.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rewardlab.config import option, positive
from rewardlab.generate import DEFAULT_POLICY, load_policy, read_prompts, sample


@dataclass(frozen=True, kw_only=True)
class BestOfNConfig:
    policy: str = option(DEFAULT_POLICY, "Causal LM to sample from (same forms as `rewardlab generate --policy`).")
    n: int = option(8, "Samples per prompt.")
    temperature: float = option(1.0, "Sampling temperature of the N samples.")
    top_p: float = option(1.0, "Nucleus sampling threshold of the N samples.")
    max_new_tokens: int = option(128, "Longest response, in tokens.")
    seed: int = option(0, "Sampling seed.")
    batch_size: int = option(8, "Prompts per generate call.")

    def __post_init__(self) -> None:
        if not isinstance(self.n, int) or self.n < 1:
            raise ValueError(f"n={self.n!r} must be an integer >= 1")
        positive("temperature", self.temperature)
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p={self.top_p!r} must be in (0, 1]")
        positive("max_new_tokens", self.max_new_tokens)
        positive("batch_size", self.batch_size)


@dataclass(frozen=True)
class BestOfNResult:
    """Per-prompt rows and the mean rewards over prompts."""

    rows: list[dict]
    best: float      # mean over prompts of the highest of N rewards
    random: float    # mean reward of one random sample (the mean of the N)
    greedy: float    # mean reward of the greedy response

    @property
    def gain_over_random(self) -> float:
        return self.best - self.random

    @property
    def gain_over_greedy(self) -> float:
        return self.best - self.greedy

    def summary(self) -> str:
        n = len(self.rows[0]["samples"]) if self.rows else 0
        return (f"best-of-{n} over {len(self.rows)} prompts: mean reward {self.best:.4f}; random sample "
                f"{self.random:.4f} (gain {self.gain_over_random:+.4f}); greedy {self.greedy:.4f} "
                f"(gain {self.gain_over_greedy:+.4f})")


def best_of_n(cfg: BestOfNConfig, reward_model, prompts_path: str | Path, *, policy=None,
              out: str | Path | None = None, progress: bool = True) -> BestOfNResult:
    """Sample ``cfg.n`` responses and a greedy one per prompt, score them, keep the best.

    ``reward_model`` is a :class:`rewardlab.scoring.RewardModel`; ``policy`` an already loaded
    ``(model, tokenizer)`` (default: load ``cfg.policy``). With ``out``, one JSONL row per prompt is written:
    the prompt's columns plus ``best``, ``best_reward``, ``greedy``, ``greedy_reward``, ``samples`` and
    ``rewards``.
    """
    import torch
    from tqdm.auto import tqdm

    prompts = read_prompts(prompts_path)
    model, tokenizer = policy or load_policy(cfg.policy)
    rows = []
    for start in tqdm(range(0, len(prompts), cfg.batch_size), desc="best-of-n", unit="batch", disable=not progress,
                      dynamic_ncols=True):
        batch = prompts[start: start + cfg.batch_size]
        texts = [p["prompt"] for p in batch]
        torch.manual_seed(cfg.seed * 1_000_003 + start)
        samples = sample(model, tokenizer, texts, num=cfg.n, temperature=cfg.temperature, top_p=cfg.top_p,
                         max_new_tokens=cfg.max_new_tokens)
        greedy = sample(model, tokenizer, texts, num=1, temperature=0.0, max_new_tokens=cfg.max_new_tokens)
        flat_prompts = [t for t in texts for _ in range(cfg.n + 1)]
        flat_responses = [r for s, g in zip(samples, greedy) for r in s + g]
        rewards = np.array(reward_model.score_batch(flat_prompts, flat_responses)).reshape(len(batch), cfg.n + 1)
        for p, s, g, r in zip(batch, samples, greedy, rewards):
            best = int(np.argmax(r[:-1]))
            rows.append({**p, "best": s[best], "best_reward": float(r[best]), "greedy": g[0],
                         "greedy_reward": float(r[-1]), "samples": s, "rewards": r[:-1].tolist()})
    result = BestOfNResult(rows, best=float(np.mean([r["best_reward"] for r in rows])),
                           random=float(np.mean([np.mean(r["rewards"]) for r in rows])),
                           greedy=float(np.mean([r["greedy_reward"] for r in rows])))
    if out is not None:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.tmp")
        with tmp.open("w", encoding="utf-8") as fh:
            fh.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(out)
    return result
