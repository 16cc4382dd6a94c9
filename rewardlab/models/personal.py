"""Personalised reward models: one model, many labelers, and a population reward for everyone else.

Any kind becomes personal by wrapping, so the trainer, scorer and evaluator stay
as they are:

- the data side wraps each response as :class:`Personal` ``(labeler index, response)``
  (:func:`personalize`), and :class:`PersonalItems` wraps the kind's processor: it
  encodes the response as before and carries the labeler to the batch;
- the model side, :class:`PersonalizedRewardNet`, wraps the kind's model and
  conditions the input of its final reward layer (``head_layer()``) on the labeler.

Modes (``model.personalization``):

``tokens``
    a special token per labeler (``<user:ID>``) with a trainable embedding, put in
    front of the text (after the first special token, [CLS] or <bos>); for image+text
    models on the text side.
``embedding``
    a learned user vector e_u (one per output) is read against the pooled representation
    h the reward layer sees: r_u(x) = r(x) + e_u · h(x), i.e. the user's reward direction is
    the population's w plus e_u (zero-initialised: every user starts at the population).
    Its gradient is h itself, so users learn from the start; FiLM (h ⊙ (1 + γ_u)) was
    tried and learned far slower, its gradient being scaled by the still-small w.
``lowrank``
    r_u(x) = r(x) + c_u · (B h): each user's reward is the population reward plus a
    user-specific mix c_u (rank K) of K shared reward directions B h, so users with
    little data borrow strength from the rest.

Labeler index -1 is the population: no token, no user parameters. Training drops
the labeler of a fixed, seeded share of items (``model.labeler_dropout``) so the
population reward is learned from every labeler's data; labelers with fewer than
``model.min_labeler_pairs`` training pairs get no parameters of their own and are
treated as the population. The labeler ids are saved as JSON in the checkpoint's
metadata and the user parameters in ``personal.safetensors`` (never pickled).
"""

from __future__ import annotations

import dataclasses
import hashlib
import threading
from collections import Counter
from pathlib import Path
from typing import Hashable, NamedTuple, Sequence

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from rewardlab.contracts.schema import Comparison
from rewardlab.models.base import RewardNet

MODES = ("none", "tokens", "embedding", "lowrank")
_ACTIVE = threading.local()  # the labelers of the forward pass running in this thread, per model (id)
POPULATION = -1
WEIGHTS_FILE = "personal.safetensors"


class Personal(NamedTuple):
    """A response as judged by one labeler (index into the model's labeler table; -1: the population)."""

    labeler: int
    response: object


def labeler_token(labeler: str) -> str:
    return f"<user:{labeler}>"


def labeler_table(comparisons: Sequence[Comparison], min_pairs: int) -> tuple[list[str], dict[str, int]]:
    """Labelers with at least ``min_pairs`` judgements, sorted, and every labeler's pair count."""
    counts = Counter()
    for c in comparisons:
        if c.labeler is not None:
            counts[c.labeler] += len(c.pairs)
    return sorted(u for u, n in counts.items() if n >= min_pairs), dict(counts)


def personalize(comparison: Comparison, index: dict[str, int]) -> Comparison:
    """Wrap every response as ``Personal(labeler index, response)``; unknown labelers get the population (-1)."""
    u = index.get(comparison.labeler, POPULATION) if comparison.labeler is not None else POPULATION
    return dataclasses.replace(comparison, responses=tuple(Personal(u, r) for r in comparison.responses))


class PersonalItems:
    """Wraps a kind's :class:`~rewardlab.contracts.batch.ItemProcessor`: items are ``(inner item, labeler)``.

    ``collate`` puts the labeler token in front of the text (``tokens``) or adds a
    ``labeler`` (N,) tensor to the model inputs (``embedding`` / ``lowrank``). In
    training (grad enabled), a seeded ``dropout`` share of items is scored as the population.
    """

    def __init__(self, inner, mode: str, token_ids: Sequence[int] = (), *, dropout: float = 0.0, seed: int = 0):
        self.inner, self.mode, self.token_ids = inner, mode, list(token_ids)
        self.dropout, self.seed = dropout, seed

    def __getattr__(self, name: str):
        if name in ("mix", "inner"):  # mixing labelers' items has no meaning
            raise AttributeError(name)
        return getattr(self.inner, name)

    def encode_items(self, prompts: Sequence[str], responses: Sequence[object]) -> tuple[list[Hashable], int]:
        labelers = [r.labeler if isinstance(r, Personal) else POPULATION for r in responses]
        plain = [r.response if isinstance(r, Personal) else r for r in responses]
        items, truncated = self.inner.encode_items(prompts, plain)
        return list(zip(items, labelers)), truncated

    def cost(self, item) -> int:
        return self.inner.cost(item[0]) + (self.mode == "tokens" and item[1] != POPULATION)

    def padded_cost(self, costs: Sequence[int]) -> int:
        return self.inner.padded_cost(costs) if hasattr(self.inner, "padded_cost") else len(costs) * max(costs)

    def _labeler(self, item) -> int:
        inner, u = item
        if u == POPULATION or self.dropout <= 0 or not torch.is_grad_enabled():
            return u
        digest = hashlib.blake2b(repr((self.seed, u, inner)).encode(), digest_size=8).digest()
        return POPULATION if int.from_bytes(digest, "little") / 2**64 < self.dropout else u

    def collate(self, items: Sequence, **kwargs) -> dict[str, torch.Tensor]:
        labelers = [self._labeler(it) for it in items]
        inner = [it[0] for it in items]
        if self.mode == "tokens":
            inner = [x if u == POPULATION else self.inner.with_prefix_token(x, self.token_ids[u])
                     for x, u in zip(inner, labelers)]
        out = self.inner.collate(inner, **kwargs)
        if self.mode in ("embedding", "lowrank"):
            out["labeler"] = torch.tensor(labelers, dtype=torch.long)
        return out


class PersonalizedRewardNet(RewardNet):
    """A kind's model conditioned on the labeler at its final reward layer.

    ``forward(labeler (N,) = None, **items) -> rewards (N, H)``; labeler -1 (or none) is the population.
    """

    def __init__(self, base: RewardNet, mode: str, labelers: Sequence[str], *, rank: int = 4,
                 train_pairs: dict[str, int] | None = None):
        super().__init__()
        self.base, self.mode, self.labelers, self.rank = base, mode, list(labelers), rank
        self.train_pairs = dict(train_pairs or {})  # judgements each labeler was trained on (for evaluation)
        self.heads = base.heads
        layer = base.head_layer()
        weight = next(p for p in layer.parameters() if p.dim() == 2)  # (outputs, D)
        outputs, width = weight.shape
        n = max(1, len(self.labelers))
        if mode == "embedding":
            self.user_vectors = nn.Parameter(torch.zeros(n, width, outputs))  # e_u per user and output
            layer.register_forward_hook(self._user_vector)
        elif mode == "lowrank":
            self.directions = nn.Linear(width, rank, bias=False)  # B: K shared reward directions
            nn.init.normal_(self.directions.weight, std=width ** -0.5)
            self.mix = nn.Parameter(torch.zeros(n, rank, outputs))  # c_u per user and output
            layer.register_forward_hook(self._low_rank)

    @property
    def _labeler(self) -> torch.Tensor | None:
        """The labelers (N,) of this thread's running forward pass; the reward layer's hook reads them. Kept per
        thread so that concurrent scoring threads (the server) never see each other's labelers."""
        return getattr(_ACTIVE, "labelers", {}).get(id(self))

    # the population is index -1: zero user parameters
    def _rows(self, table: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        u = self._labeler
        known = (u >= 0).to(table.dtype)
        rows = table[u.clamp_min(0)] * known.view(-1, *([1] * (table.dim() - 1)))
        while rows.dim() - (table.dim() - 1) < like.dim() - 1:  # broadcast over token positions (N, L, ...)
            rows = rows.unsqueeze(1)
        return rows

    def _user_vector(self, module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor | None:
        if self._labeler is None:
            return None
        x = args[0]  # (N, [L,] D)
        vectors = self._rows(self.user_vectors, x)  # (N, [1,] D, A)
        return output + torch.einsum("...d,...da->...a", x.to(vectors.dtype), vectors).to(output.dtype)

    def _low_rank(self, module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor | None:
        if self._labeler is None:
            return None
        x = args[0]
        mix = self._rows(self.mix, x)  # (N, [L,] K, A)
        personal = torch.einsum("...k,...ka->...a", self.directions(x.to(self.directions.weight.dtype)), mix)
        return output + personal.to(output.dtype)

    def forward(self, labeler: torch.Tensor | None = None, **items: torch.Tensor) -> torch.Tensor:
        active = _ACTIVE.__dict__.setdefault("labelers", {})
        active[id(self)] = labeler
        try:
            return self.base(**items)
        finally:
            active.pop(id(self), None)

    @property
    def outcome(self):
        return self.base.outcome

    def set_outcome(self, outcome) -> None:
        self.base.set_outcome(outcome)

    def head_layer(self) -> nn.Module:
        return self.base.head_layer()

    def parameter_groups(self) -> dict[str, list[tuple[str, nn.Parameter]]]:
        groups = {k: [(f"base.{n}", p) for n, p in v] for k, v in self.base.parameter_groups().items()}
        own = [(n, p) for n, p in self.named_parameters() if p.requires_grad and not n.startswith("base.")]
        groups.setdefault("head", []).extend(own)
        return groups

    def unwrap(self, processor: "PersonalItems", folder: Path) -> tuple[RewardNet, object, dict]:
        """The user parameters go to ``personal.safetensors``, their description to the metadata; the kind saves
        the wrapped model."""
        state = self.personal_state()
        if state:
            save_file(state, str(folder / WEIGHTS_FILE), metadata={"format": "pt"})
        return self.base, processor.inner, {"personalization": self.metadata()}

    def personal_state(self) -> dict[str, torch.Tensor]:
        """The user parameters (what ``personal.safetensors`` holds)."""
        return {n: p.detach().contiguous().clone() for n, p in self.named_parameters() if not n.startswith("base.")}

    def metadata(self) -> dict:
        return {"mode": self.mode, "labelers": self.labelers, "rank": self.rank, "train_pairs": self.train_pairs}

    def labeler_index(self) -> dict[str, int]:
        return {u: i for i, u in enumerate(self.labelers)}


def add_labeler_tokens(tokenizer, labelers: Sequence[str]) -> list[int]:
    """Add ``<user:ID>`` tokens (special, never split) to ``tokenizer``; their ids in ``labelers`` order."""
    tokens = [labeler_token(u) for u in labelers]
    tokenizer.add_special_tokens({"additional_special_tokens": tokens}, replace_extra_special_tokens=False)
    return tokenizer.convert_tokens_to_ids(tokens)


def load_personal(model: RewardNet, processor, path: str | Path, meta: dict) -> tuple[PersonalizedRewardNet, PersonalItems]:
    """Rebuild a personalised model saved by :meth:`PersonalizedRewardNet.unwrap` around its loaded base model."""
    personal = PersonalizedRewardNet(model, meta["mode"], meta["labelers"], rank=meta.get("rank", 4),
                                     train_pairs=meta.get("train_pairs"))
    state = personal.personal_state()
    if state:
        saved = load_file(str(Path(path) / WEIGHTS_FILE))
        if set(saved) != set(state):
            raise ValueError(f"{path}: {WEIGHTS_FILE} does not match the model's personalization settings")
        personal.load_state_dict(saved, strict=False)
    token_ids = processor.tokenizer.convert_tokens_to_ids([labeler_token(u) for u in meta["labelers"]]) \
        if meta["mode"] == "tokens" else []
    return personal.to(next(model.parameters()).device), PersonalItems(processor, meta["mode"], token_ids)


def load_wrapped(model: RewardNet, processor, path: str | Path, metadata: dict) -> tuple[RewardNet, object, dict]:
    """The loader of checkpoints whose metadata has ``personalization`` (see rewardlab.models.base.WRAPPERS)."""
    model, processor = load_personal(model, processor, path, metadata["personalization"])
    return model, processor, metadata
