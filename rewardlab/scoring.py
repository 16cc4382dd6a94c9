"""Score texts with a trained reward model.

    >>> rm = RewardModel.from_pretrained("runs/demo/model")          # doctest: +SKIP
    >>> rm.score("How do I boil an egg?", "Simmer it for 9 minutes.")  # doctest: +SKIP
    1.73

Works for rewardlab checkpoints and for any Hugging Face sequence-classification
reward model with one output (a local folder, or a hub id for users online).
Scores are the raw head outputs unless ``normalize`` asks for z-scores (using
the training reward mean/std stored in the checkpoint) or a sigmoid.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from rewardlab.data.encode import EncodingSpec, TextEncoder
from rewardlab.models.backbones import prepare_tokenizer
from rewardlab.models.text import TextRewardModel, read_metadata

NORMALIZATIONS = ("none", "zscore", "sigmoid")


@dataclass(frozen=True)
class Ranked:
    """Responses ordered best first: their original indices and scores."""

    order: list[int]
    scores: list[float]


class RewardModel:
    def __init__(self, model: TextRewardModel, tokenizer, metadata: dict, device: str | torch.device = "cpu"):
        self.model = model.to(device).eval()
        self.device = torch.device(device)
        self.metadata = metadata
        spec = EncodingSpec(**metadata["encoding"]) if "encoding" in metadata else EncodingSpec(
            max_length=min(getattr(tokenizer, "model_max_length", 512) or 512, 512))
        self.encoder = TextEncoder(tokenizer, spec)
        self.pad_token_id = tokenizer.pad_token_id
        self.temperature = float(metadata.get("temperature", 1.0))

    @classmethod
    def from_pretrained(cls, path: str, *, device: str | None = None, dtype: torch.dtype | None = None
                        ) -> "RewardModel":
        """Load a checkpoint folder or hub id (safetensors weights only)."""
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        tokenizer = AutoTokenizer.from_pretrained(path)
        hf = AutoModelForSequenceClassification.from_pretrained(path, use_safetensors=True, dtype=dtype)
        if hf.config.num_labels != 1:
            raise ValueError(f"{path}: a reward model has num_labels=1, this one has {hf.config.num_labels}")
        prepare_tokenizer(tokenizer, hf)
        metadata = read_metadata(path) or dict(getattr(hf.config, "rewardlab", None) or {})
        return cls(TextRewardModel(hf), tokenizer, metadata, device)

    # ------------------------------------------------------------------ scoring

    def _normalize(self, scores: np.ndarray, normalize: str) -> np.ndarray:
        if normalize == "none":
            return scores
        if normalize == "sigmoid":
            return 1.0 / (1.0 + np.exp(-scores))
        if normalize == "zscore":
            if "reward_mean" not in self.metadata:
                raise ValueError("normalize='zscore' needs reward statistics, which only rewardlab checkpoints store")
            return (scores - self.metadata["reward_mean"]) / max(self.metadata["reward_std"], 1e-8)
        raise ValueError(f"normalize={normalize!r}; choose one of {', '.join(NORMALIZATIONS)}")

    @torch.inference_mode()
    def score_batch(self, prompts: Sequence[str], responses: Sequence[str], *, batch_size: int = 32,
                    normalize: str = "none") -> list[float]:
        """Rewards of aligned (prompt, response) lists; batched shortest-first, returned in input order."""
        if len(prompts) != len(responses):
            raise ValueError(f"got {len(prompts)} prompts but {len(responses)} responses")
        if not prompts:
            return []
        for i, (p, r) in enumerate(zip(prompts, responses)):
            if not isinstance(p, str) or not isinstance(r, str):
                raise TypeError(f"item {i}: prompt and response must be strings")
        features, _ = self.encoder.encode(prompts, responses)
        order = sorted(range(len(features)), key=lambda i: len(features[i]["input_ids"]))
        scores = np.empty(len(features), dtype=np.float64)
        for start in range(0, len(order), batch_size):
            idx = order[start: start + batch_size]
            width = max(len(features[i]["input_ids"]) for i in idx)
            ids = torch.full((len(idx), width), self.pad_token_id, dtype=torch.long)
            mask = torch.zeros_like(ids)
            types = torch.zeros_like(ids) if "token_type_ids" in features[0] else None
            for row, i in enumerate(idx):
                n = len(features[i]["input_ids"])
                ids[row, :n] = torch.tensor(features[i]["input_ids"])
                mask[row, :n] = 1
                if types is not None:
                    types[row, :n] = torch.tensor(features[i]["token_type_ids"])
            out = self.model(ids.to(self.device), mask.to(self.device),
                             types.to(self.device) if types is not None else None)
            scores[idx] = out.cpu().numpy()
        return self._normalize(scores, normalize).tolist()

    def score(self, prompt: str, response: str, *, normalize: str = "none") -> float:
        return self.score_batch([prompt], [response], normalize=normalize)[0]

    def rank(self, prompt: str, responses: Sequence[str], **kwargs) -> Ranked:
        """Order ``responses`` best first by reward."""
        scores = self.score_batch([prompt] * len(responses), list(responses), **kwargs)
        order = sorted(range(len(scores)), key=lambda i: -scores[i])
        return Ranked(order=order, scores=[scores[i] for i in order])

    def best_of_n(self, prompt: str, responses: Sequence[str]) -> tuple[int, str]:
        """Index and text of the highest-reward response."""
        if not responses:
            raise ValueError("best_of_n needs at least one response")
        best = self.rank(prompt, responses).order[0]
        return best, responses[best]

    def preference_probability(self, prompt: str, a: str, b: str) -> float:
        """P(a ≻ b) = σ((r_a - r_b) / T), with the calibrated temperature T where one was fitted."""
        ra, rb = self.score_batch([prompt, prompt], [a, b])
        return float(1.0 / (1.0 + np.exp(-(ra - rb) / self.temperature)))
