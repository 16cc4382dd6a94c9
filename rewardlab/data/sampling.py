"""Token-budget batches: as many comparisons as fit in a budget of padded tokens.

Peak memory is set by the largest micro-batch. With a fixed number of comparisons
per batch, grouping by length puts the longest comparisons together and one batch
of 64 × 1,024-token sequences sets the peak for the whole run. A token budget
bounds every micro-batch instead, and lets batches of short comparisons fill the
device: a batch's cost is (items in it) × (its longest item), what padding to the
longest item costs.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from rewardlab.data.collate import LengthGroupedBatchSampler


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
