"""Encoded comparisons → a batch of unique items plus a pair table, and length-grouped sampling.

The batch contract every model kind shares::

    {"items": {...model inputs for N unique items...}, "pairs": PairTable (P rows)}

A model maps ``items`` to rewards (N, H); the pair table says which two rows each
judgement compares, on which head, with what outcome, margin and weight. What an
item *is* (token ids, an image tensor, a cached embedding) is the business of the
model kind's :class:`ItemProcessor`; the collator only de-duplicates items and
indexes the pairs, so a ranking of K responses costs K items, not K(K-1).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Hashable, Iterator, Mapping, Protocol, Sequence

import numpy as np
import torch

from rewardlab.data.schema import Comparison, Pair

UNKNOWN_LABELER = -1


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
class EncodedComparison:
    """A comparison's K encoded items, their costs and its judgements."""

    items: tuple[Hashable, ...]
    costs: tuple[int, ...]
    pairs: tuple[Pair, ...]
    index: int
    labeler: str | None = None

    @property
    def length(self) -> int:
        return sum(self.costs)

    @property
    def longest(self) -> int:
        """A batch is padded to its longest item, so this is the key to group batches by."""
        return max(self.costs)


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


def encode_comparisons(comparisons: Sequence[Comparison], processor: ItemProcessor
                       ) -> tuple[list[EncodedComparison], int]:
    """Encode every response of every comparison; returns (encoded, number of truncated items)."""
    prompts = [c.prompt for c in comparisons for _ in c.responses]
    responses = [r for c in comparisons for r in c.responses]
    items, truncated = processor.encode_items(prompts, responses) if prompts else ([], 0)
    out, pos = [], 0
    for i, c in enumerate(comparisons):
        own = tuple(items[pos: pos + len(c.responses)])
        pos += len(c.responses)
        out.append(EncodedComparison(own, tuple(processor.cost(x) for x in own), c.pairs, i, c.labeler))
    return out, truncated


class PreferenceCollator:
    """Stack the unique items of a batch of comparisons and build its :class:`PairTable`.

    ``head_index`` maps a pair's attribute to its reward column (``None``, the
    overall reward, maps to the aggregate column); ``labeler_index`` maps labeler ids
    to rows of a personalised model's table (others get -1).

    Example:
        >>> from rewardlab.data.encode import TextItems
        >>> a = EncodedComparison((((1, 2, 3), None), ((1, 4), None)), (3, 2), ((0, 1, 0.0),), 0)
        >>> b = EncodedComparison((((1, 4), None), ((5,), None)), (2, 1), ((1, 0, 2.0),), 1)
        >>> out = PreferenceCollator(TextItems(pad_token_id=0))([a, b])
        >>> out["items"]["input_ids"].tolist()              # (1, 4) appears twice, encoded once
        [[1, 2, 3], [1, 4, 0], [5, 0, 0]]
        >>> out["pairs"].i.tolist(), out["pairs"].j.tolist(), out["pairs"].margin.tolist()
        ([0, 2], [1, 1], [0.0, 2.0])
    """

    def __init__(self, processor: ItemProcessor, head_index: Mapping[str | None, int] | None = None,
                 labeler_index: Mapping[str, int] | None = None):
        self.processor = processor
        self.head_index = dict(head_index or {None: 0})
        self.labeler_index = dict(labeler_index or {})

    def __call__(self, batch: Sequence[EncodedComparison]) -> dict:
        rows: dict[Hashable, int] = {}
        items: list[Hashable] = []
        table: dict[str, list] = {f.name: [] for f in fields(PairTable)}
        for comp in batch:
            local = []
            for item in comp.items:
                if item not in rows:
                    rows[item] = len(items)
                    items.append(item)
                local.append(rows[item])
            labeler = self.labeler_index.get(comp.labeler, UNKNOWN_LABELER) if comp.labeler else UNKNOWN_LABELER
            for p in comp.pairs:
                table["i"].append(local[p.winner])
                table["j"].append(local[p.loser])
                table["tie"].append(p.tie)
                table["margin"].append(p.margin)
                table["head"].append(self.head_index[p.attribute])
                table["labeler"].append(labeler)
                table["weight"].append(p.weight)
                table["comparison"].append(comp.index)
        dtypes = {"tie": torch.bool, "margin": torch.float32, "weight": torch.float32}
        pairs = PairTable(**{k: torch.tensor(v, dtype=dtypes.get(k, torch.long)) for k, v in table.items()})
        return {"items": self.processor.collate(items), "pairs": pairs}


class LengthGroupedBatchSampler:
    """Seeded shuffled batches of indices, grouped by length to cut padding.

    Indices are shuffled with ``seed + epoch``; within mega-batches of
    ``batch_size * 50`` they are sorted by length and cut into batches, whose
    order is shuffled again. The same (seed, epoch) always gives the same batches,
    which is what exact resume relies on.
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, *, seed: int = 0, shuffle: bool = True,
                 group_by_length: bool = True, mega: int = 50):
        self.lengths = np.asarray(lengths)
        self.batch_size = batch_size
        self.seed, self.shuffle, self.group_by_length, self.mega = seed, shuffle, group_by_length, mega
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def batches(self) -> list[list[int]]:
        n = len(self.lengths)
        rng = np.random.default_rng(self.seed + self.epoch)
        order = rng.permutation(n) if self.shuffle else np.arange(n)
        if not self.group_by_length:
            return [order[i: i + self.batch_size].tolist() for i in range(0, n, self.batch_size)]
        size = self.batch_size * self.mega
        out = []
        for start in range(0, n, size):
            chunk = order[start: start + size]
            chunk = chunk[np.argsort(-self.lengths[chunk], kind="stable")]
            out.extend(chunk[i: i + self.batch_size].tolist() for i in range(0, len(chunk), self.batch_size))
        if self.shuffle:
            out = [out[i] for i in rng.permutation(len(out))]
        return out

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches())

    def __len__(self) -> int:
        return (len(self.lengths) + self.batch_size - 1) // self.batch_size
