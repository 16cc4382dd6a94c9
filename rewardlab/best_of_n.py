"""``rewardlab best-of-n``: sample N responses per prompt, keep the one the reward model scores highest.

    rewardlab best-of-n --policy MODEL --model RM --prompts prompts.txt --n 8 [--out best.jsonl]

Reports how much reward picking the best of N gains over a random sample (the mean reward of the N samples,
which is what one random sample gets on average) and over the policy's greedy response, and how widely the N
rewards spread, per prompt and over all prompts.
"""

from __future__ import annotations

import json
import os
import time
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

    def summary(self, per_prompt: int = 20) -> str:
        """The means over prompts, then each prompt's chosen reward and the spread of its N (the first
        ``per_prompt`` prompts), then the spread over all prompts."""
        n = len(self.rows[0]["samples"]) if self.rows else 0
        head = (f"best-of-{n} over {len(self.rows)} prompts: mean reward {self.best:.4f}; random sample "
                f"{self.random:.4f} (gain {self.gain_over_random:+.4f}); greedy {self.greedy:.4f} "
                f"(gain {self.gain_over_greedy:+.4f})")
        lines = [head]
        for i, row in enumerate(self.rows[:per_prompt]):
            r = np.asarray(row["rewards"])
            lines.append(f"  prompt {i + 1}: best {row['best_reward']:.4f} of {len(r)} rewards in "
                         f"[{r.min():.4f}, {r.max():.4f}] (mean {r.mean():.4f}, std {r.std():.4f}); "
                         f"greedy {row['greedy_reward']:.4f}")
        if len(self.rows) > per_prompt:
            lines.append(f"  ... {len(self.rows) - per_prompt} more prompts (every reward is in --out)")
        if self.rows:
            everything = np.concatenate([row["rewards"] for row in self.rows])
            spread = [float(np.std(row["rewards"])) for row in self.rows]
            best = [row["best_reward"] for row in self.rows]
            lines.append(f"all {everything.size} sampled rewards in [{everything.min():.4f}, {everything.max():.4f}] "
                         f"(std {everything.std():.4f}); within a prompt std {np.mean(spread):.4f} on average; "
                         f"chosen rewards in [{min(best):.4f}, {max(best):.4f}]")
        return "\n".join(lines)


def _score_batch(reward_model, batch: list[dict], samples: list[list[str]], greedy: list[list[str]]) -> list[dict]:
    """Each prompt's output row: its N samples and greedy response scored (the whole batch in one call), the best
    sample kept."""
    n = len(samples[0])
    flat_prompts = [p["prompt"] for p in batch for _ in range(n + 1)]
    flat_responses = [r for s, g in zip(samples, greedy) for r in s + g]
    rewards = np.asarray(reward_model.score_batch(flat_prompts, flat_responses), dtype=float).reshape(len(batch), n + 1)
    rows = []
    for p, s, g, r in zip(batch, samples, greedy, rewards):
        best = int(np.argmax(r[:-1]))
        rows.append({**p, "best": s[best], "best_reward": float(r[best]), "greedy": g[0],
                     "greedy_reward": float(r[-1]), "samples": s, "rewards": r[:-1].tolist()})
    return rows


class _StepDisplay:
    """Shows the token step of the batch being generated in the progress bar's postfix (at most 4 times a
    second), so a long batch visibly moves before its prompts are counted."""

    def __init__(self, bar, batch: str, max_new_tokens: int):
        self.bar, self.batch, self.max, self.shown = bar, batch, max_new_tokens, 0.0

    def step(self, what: str):
        count = 0

        def on_step() -> None:
            nonlocal count
            count += 1
            now = time.monotonic()
            if now - self.shown >= 0.25:
                self.shown = now
                self.bar.set_postfix_str(f"{self.batch}: {what} token {count}/{self.max}")

        return on_step if not self.bar.disable else None


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
    # Counted in prompts (a batch's once it is scored); within a batch the postfix follows the token steps.
    bar = tqdm(total=len(prompts), desc="best-of-n", unit="prompt", disable=not progress, dynamic_ncols=True)
    batches = (len(prompts) + cfg.batch_size - 1) // cfg.batch_size
    for b, start in enumerate(range(0, len(prompts), cfg.batch_size)):
        batch = prompts[start: start + cfg.batch_size]
        texts = [p["prompt"] for p in batch]
        torch.manual_seed(cfg.seed * 1_000_003 + start)
        steps = _StepDisplay(bar, f"batch {b + 1}/{batches}", cfg.max_new_tokens)
        samples = sample(model, tokenizer, texts, num=cfg.n, temperature=cfg.temperature, top_p=cfg.top_p,
                         max_new_tokens=cfg.max_new_tokens, on_step=steps.step("sampling")).texts
        greedy = sample(model, tokenizer, texts, num=1, temperature=0.0, max_new_tokens=cfg.max_new_tokens,
                        on_step=steps.step("greedy")).texts
        bar.set_postfix_str(f"batch {b + 1}/{batches}: scoring", refresh=False)
        for row in _score_batch(reward_model, batch, samples, greedy):
            rows.append(row)
            bar.update(1)
    bar.close()
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
