"""The batch contract every model kind, loss and trainer shares.

A batch is ``{"items": {...model inputs for N unique items...}, "pairs": PairTable (P rows),
"nuisance": (N, F) features of each item}``: a kind's :class:`ItemProcessor` makes the items,
the collator de-duplicates them and indexes the judgements in a :class:`PairTable`, a model
maps the items to rewards (N, H), and its outcome model turns each judged pair's rewards into a
:class:`Judged` that the losses and metrics read.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Hashable, NamedTuple, Protocol, Sequence

import torch

UNKNOWN_LABELER = -1  # a pair's labeler index when it has none of its own: the population


class ItemProcessor(Protocol):
    """Turns (prompt, response) items into model inputs; one per model kind.

    ``encode_items`` returns hashable items (equal items are computed once per batch)
    and the number truncated; ``cost`` is an item's padded size (tokens, for text),
    which batches are grouped by; ``collate`` stacks items into the model's inputs.
    """

    def encode_items(self, prompts: Sequence[str], responses: Sequence[object]) -> tuple[list[Hashable], int]: ...

    def cost(self, item: Hashable) -> int: ...

    def collate(self, items: Sequence[Hashable]) -> dict[str, torch.Tensor]: ...


@dataclass(frozen=True)
class PairTable:
    """The judgements of a batch, one row per pair; every field is a (P,) tensor.

    ``i`` / ``j``: rows of the reward matrix (``i`` preferred unless ``tie``);
    ``head``: the reward column the judgement is about; ``labeler``: index into the
    model's labeler table (-1: unknown / population); ``comparison``: dataset index
    of the pair's comparison (for gathering predictions).
    """

    i: torch.Tensor
    j: torch.Tensor
    tie: torch.Tensor
    margin: torch.Tensor
    head: torch.Tensor
    labeler: torch.Tensor
    weight: torch.Tensor
    comparison: torch.Tensor

    def to(self, *args, **kwargs) -> "PairTable":
        return PairTable(**{f.name: getattr(self, f.name).to(*args, **kwargs) for f in fields(self)})

    def __len__(self) -> int:
        return int(self.i.shape[0])

    @classmethod
    def of(cls, n: int, **columns) -> "PairTable":
        """A table of ``n`` pairs with defaults (pair k compares rows 2k and 2k+1 on head 0, weight 1)
        and any column given as a list or tensor; for tests and examples."""
        default = {"i": torch.arange(0, 2 * n, 2), "j": torch.arange(1, 2 * n, 2), "tie": torch.zeros(n, dtype=torch.bool),
                   "margin": torch.zeros(n), "head": torch.zeros(n, dtype=torch.long),
                   "labeler": torch.full((n,), UNKNOWN_LABELER), "weight": torch.ones(n),
                   "comparison": torch.arange(n)}
        for name, value in columns.items():
            default[name] = torch.as_tensor(value, dtype=default[name].dtype)
        return cls(**default)


class Judged(NamedTuple):
    """Per-pair outputs of an outcome model: scores (P,), (P,) and log-probabilities (P, 3).

    ``consistent`` (P,) bool, for models that read the pair in an order: whether the predictions
    made from each order alone agree (position consistency); None where order cannot matter.
    """

    chosen: torch.Tensor
    rejected: torch.Tensor
    log_probs: torch.Tensor
    consistent: torch.Tensor | None = None
