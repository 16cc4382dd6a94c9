"""Encoded comparisons → padded tensors, and length-grouped batch sampling.

A batch holds whole comparisons. Each unique (prompt, response) sequence in the
batch is encoded once; ``pair_index`` says which rows of the reward vector form
each preference pair, so a ranking of K responses costs K sequences, not the
K(K-1) a pair-at-a-time trainer spends.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch

from rewardlab.data.encode import TextEncoder
from rewardlab.data.schema import Comparison


@dataclass(frozen=True)
class EncodedComparison:
    """Token ids of a comparison's K sequences and its pairs (winner, loser, margin)."""

    sequences: tuple[tuple[int, ...], ...]
    token_types: tuple[tuple[int, ...], ...] | None
    pairs: tuple[tuple[int, int, float], ...]
    index: int

    @property
    def length(self) -> int:
        return sum(len(s) for s in self.sequences)

    @property
    def longest(self) -> int:
        """A batch is padded to its longest sequence, so this is the key to group batches by."""
        return max(len(s) for s in self.sequences)


def encode_comparisons(comparisons: Sequence[Comparison], encoder: TextEncoder) -> tuple[list[EncodedComparison], int]:
    """Tokenise every response of every comparison; returns (encoded, number of truncated sequences)."""
    prompts = [c.prompt for c in comparisons for _ in c.responses]
    responses = [r for c in comparisons for r in c.responses]
    features, truncated = encoder.encode(prompts, responses) if prompts else ([], 0)
    out, pos = [], 0
    for i, c in enumerate(comparisons):
        feats = features[pos: pos + len(c.responses)]
        pos += len(c.responses)
        types = tuple(tuple(f["token_type_ids"]) for f in feats) if "token_type_ids" in feats[0] else None
        out.append(EncodedComparison(tuple(tuple(f["input_ids"]) for f in feats), types, c.pairs, i))
    return out, truncated


class PreferenceCollator:
    """Stack the unique sequences of a batch of comparisons and index their pairs.

    Returns ``input_ids`` and ``attention_mask`` (N, L) (plus ``token_type_ids``
    where the tokenizer makes them), ``pair_index`` (P, 2) rows of the reward
    vector (winner, loser), ``margins`` (P,) and ``pair_comparison`` (P,) the
    dataset index of each pair's comparison.

    Example:
        >>> a = EncodedComparison(((1, 2, 3), (1, 4)), None, ((0, 1, 0.0),), 0)
        >>> b = EncodedComparison(((1, 4), (5,)), None, ((1, 0, 2.0),), 1)
        >>> out = PreferenceCollator(pad_token_id=0)([a, b])
        >>> out["input_ids"].tolist()              # (1, 4) appears twice, encoded once
        [[1, 2, 3], [1, 4, 0], [5, 0, 0]]
        >>> out["pair_index"].tolist(), out["margins"].tolist()
        ([[0, 1], [2, 1]], [0.0, 2.0])
    """

    def __init__(self, pad_token_id: int):
        self.pad_token_id = pad_token_id

    def __call__(self, batch: Sequence[EncodedComparison]) -> dict[str, torch.Tensor]:
        rows: dict[tuple, int] = {}
        seqs: list[tuple[int, ...]] = []
        types: list[tuple[int, ...]] = []
        pair_index, margins, owners = [], [], []
        has_types = batch[0].token_types is not None
        for comp in batch:
            local = []
            for k, ids in enumerate(comp.sequences):
                tt = comp.token_types[k] if has_types else ()
                key = (ids, tt)
                if key not in rows:
                    rows[key] = len(seqs)
                    seqs.append(ids)
                    types.append(tt)
                local.append(rows[key])
            for w, l, m in comp.pairs:
                pair_index.append((local[w], local[l]))
                margins.append(m)
                owners.append(comp.index)
        width = max(len(s) for s in seqs)
        input_ids = torch.full((len(seqs), width), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, s in enumerate(seqs):
            input_ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
            attention_mask[i, : len(s)] = 1
        out = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "pair_index": torch.tensor(pair_index, dtype=torch.long).reshape(-1, 2),
            "margins": torch.tensor(margins, dtype=torch.float32),
            "pair_comparison": torch.tensor(owners, dtype=torch.long),
        }
        if has_types:
            token_type_ids = torch.zeros_like(input_ids)
            for i, t in enumerate(types):
                token_type_ids[i, : len(t)] = torch.tensor(t, dtype=torch.long)
            out["token_type_ids"] = token_type_ids
        return out


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
