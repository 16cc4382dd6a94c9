"""Batch samplers beyond length grouping: token budgets, and length-matched batches.

Peak memory is set by the largest micro-batch. With a fixed number of comparisons
per batch, grouping by length puts the longest comparisons together and one batch
of 64 × 1,024-token sequences sets the peak for the whole run. A token budget
bounds every micro-batch instead, and lets batches of short comparisons fill the
device: a batch's cost is (items in it) × (its longest item), what padding to the
longest item costs.

A reward model can learn "longer wins" from data where it mostly does. Length-matched
batches hold as many pairs the longer response won as pairs the shorter one won, so
no batch's gradient rewards length on its own.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from rewardlab.contracts.nuisance import LENGTH_COLUMN
from rewardlab.data.collate import EncodedComparison, LengthGroupedBatchSampler, costliest_first, item_key
from rewardlab.data.encode import padded_width


def padded_cost(n_items: int, longest: int) -> int:
    """Padded tokens of a batch of ``n_items`` items padded to ``longest``."""
    return n_items * longest


class TokenBudgetBatchSampler(LengthGroupedBatchSampler):
    """Seeded, length-grouped batches holding at most ``max_tokens`` padded tokens (and ``batch_size`` comparisons).

    ``items[k]`` and ``lengths[k]`` are comparison k's item count and longest item.
    The cost counts every item of every comparison (the collator may de-duplicate
    some, which only lowers it). Shuffling and grouping are those of
    :class:`~rewardlab.data.collate.LengthGroupedBatchSampler`, so (seed, epoch)
    fixes the batches, which exact resume relies on.

    Example:
        >>> s = TokenBudgetBatchSampler([10, 10, 40, 5], [2, 2, 2, 2], max_tokens=80, batch_size=8, shuffle=False)
        >>> s.batches()
        [[2], [0, 1, 3]]
    """

    def __init__(self, lengths: Sequence[int], items: Sequence[int], max_tokens: int, batch_size: int, *,
                 seed: int = 0, shuffle: bool = True, mega: int = 50, keys: Sequence[int] | None = None):
        super().__init__(lengths, batch_size, seed=seed, shuffle=shuffle, group_by_length=True, mega=mega, keys=keys)
        self.items = np.asarray(items)
        self.max_tokens = max_tokens
        too_big = [k for k in range(len(self.items)) if padded_cost(self.items[k], self.lengths[k]) > max_tokens]
        if too_big:
            k = too_big[0]
            raise ValueError(f"comparison {k} alone needs {padded_cost(self.items[k], self.lengths[k])} padded tokens "
                             f"({self.items[k]} items x {self.lengths[k]}), more than train.max_tokens_per_batch="
                             f"{max_tokens} ({len(too_big)} such comparisons); raise the budget or lower "
                             "data.max_length")
        self._n_batches: int | None = None

    def _cut(self, chunk: np.ndarray) -> list[list[int]]:
        out: list[list[int]] = []
        batch: list[int] = []
        n_items, longest = 0, 0
        for k in chunk.tolist():  # longest first, so the first comparison fixes the padded width
            grown_items, grown_longest = n_items + self.items[k], max(longest, self.lengths[k])
            if batch and (len(batch) == self.batch_size or padded_cost(grown_items, grown_longest) > self.max_tokens):
                out.append(batch)
                batch, grown_items, grown_longest = [], self.items[k], self.lengths[k]
            batch.append(k)
            n_items, longest = grown_items, grown_longest
        if batch:
            out.append(batch)
        return out

    def __len__(self) -> int:
        # The number of batches depends on the shuffle only through mega-batch boundaries; count epoch 0's.
        if self._n_batches is None:
            self._n_batches = len(self.batches())
        return self._n_batches


def length_outcome(comparison: EncodedComparison) -> int:
    """+1 if the longer response won most of a comparison's decided pairs, -1 if the shorter did, 0 otherwise
    (ties, equal lengths, images, or a draw)."""
    if not comparison.nuisance:
        return 0
    length = [f[LENGTH_COLUMN] for f in comparison.nuisance]
    votes = sum((length[p.winner] > length[p.loser]) - (length[p.winner] < length[p.loser])
                for p in comparison.pairs if not p.tie)
    return (votes > 0) - (votes < 0)


class LengthMatchedBatchSampler(LengthGroupedBatchSampler):
    """Seeded batches in which the longer response won as often as the shorter one.

    ``outcomes[k]`` is comparison k's :func:`length_outcome`, ``lengths[k]`` its longest
    item. Each epoch keeps the data's size n: it draws (n - n_0) / 2 comparisons from
    each of the +1 and -1 groups (the smaller cycled through fresh permutations, the
    larger subsampled afresh each epoch) plus all n_0 others. Each group is cut into
    the same number of mega-chunks (about ``batch_size * mega`` comparisons in all per
    chunk), each slice sorted longest first, and the slices of a chunk are interleaved
    evenly: every batch holds the two groups in equal numbers (±1), of similar lengths
    (little padding), and batches are then shuffled. Without both groups (e.g. images,
    which have no length) its batches are the length-grouped sampler's. (seed, epoch)
    fixes the batches, which exact resume relies on.

    Example:
        >>> outcomes = [1, 1, 1, 1, 1, -1]
        >>> s = LengthMatchedBatchSampler(outcomes, batch_size=2)
        >>> [sorted(outcomes[k] for k in b) for b in s.batches()]
        [[-1, 1], [-1, 1], [-1, 1]]
    """

    def __init__(self, outcomes: Sequence[int], batch_size: int, *, lengths: Sequence[int] | None = None,
                 seed: int = 0, group_by_length: bool = True, mega: int = 50, keys: Sequence[int] | None = None):
        lengths = [0] * len(outcomes) if lengths is None else lengths
        super().__init__(lengths, batch_size, seed=seed, group_by_length=group_by_length, mega=mega, keys=keys)
        self.outcomes = np.asarray(outcomes)
        self._n_batches: int | None = None

    def batches(self) -> list[list[int]]:
        longer, shorter = np.flatnonzero(self.outcomes > 0), np.flatnonzero(self.outcomes < 0)
        if not len(longer) or not len(shorter):
            return super().batches()
        rng = np.random.default_rng([self.seed, self.epoch, 1])
        other = rng.permutation(np.flatnonzero(self.outcomes == 0))
        half = (len(self.outcomes) - len(other)) // 2

        def draw(group: np.ndarray, count: int) -> np.ndarray:  # fresh permutations, cycled as often as needed
            rounds = -(-count // len(group))
            return np.concatenate([rng.permutation(group) for _ in range(rounds)])[:count]

        streams = [draw(longer, half), draw(shorter, len(self.outcomes) - len(other) - half), other]
        chunks = max(1, round(len(self.outcomes) / (self.batch_size * self.mega))) if self.group_by_length else 1
        out = []
        for parts in zip(*(np.array_split(stream, chunks) for stream in streams)):
            if self.group_by_length:
                parts = [p[np.argsort(-self.lengths[p], kind="stable")] for p in parts]
            # Evenly spaced positions in [0, 1) per part, merged: any window holds each part in proportion.
            keys = np.concatenate([(np.arange(len(p)) + 0.5) / max(len(p), 1) for p in parts])
            order = np.concatenate(parts)[np.argsort(keys, kind="stable")]
            out.extend(order[i: i + self.batch_size].tolist() for i in range(0, len(order), self.batch_size))
        return costliest_first([out[i] for i in rng.permutation(len(out))], self.lengths) if self.group_by_length \
            else out

    def __len__(self) -> int:
        if self._n_batches is None:  # the same every epoch: it depends on the group sizes only
            self._n_batches = len(self.batches())
        return self._n_batches


def build_batch_sampler(data: Sequence[EncodedComparison], cfg) -> LengthGroupedBatchSampler:
    """The training batch sampler ``cfg`` (a TrainConfig) asks for: length-matched, token-budget or
    length-grouped batches of ``data``."""
    lengths, keys = [c.longest for c in data], [item_key(c) for c in data]
    if cfg.length_matched:
        return LengthMatchedBatchSampler([length_outcome(c) for c in data], cfg.batch_size, lengths=lengths,
                                         seed=cfg.seed, group_by_length=cfg.group_by_length, keys=keys)
    if cfg.max_tokens_per_batch is not None:  # the budget counts the padded width
        widths = [padded_width(n, cfg.pad_to_multiple_of) for n in lengths]
        return TokenBudgetBatchSampler(widths, [len(c.items) for c in data], cfg.max_tokens_per_batch,
                                       cfg.batch_size, seed=cfg.seed, keys=keys)
    return LengthGroupedBatchSampler(lengths, cfg.batch_size, seed=cfg.seed, group_by_length=cfg.group_by_length,
                                     keys=keys)
