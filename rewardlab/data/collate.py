"""Encoded comparisons → a batch of unique items plus a pair table, and length-grouped sampling.

The batch contract every model kind shares::

    {"items": {...model inputs for N unique items...}, "pairs": PairTable (P rows),
     "nuisance": (N, F) features of each item (its length, ...: see rewardlab.contracts.nuisance)}

A model maps ``items`` to rewards (N, H); the pair table says which two rows each
judgement compares, on which head, with what outcome, margin and weight. What an
item *is* (token ids, an image tensor, a cached embedding) is the business of the
model kind's :class:`ItemProcessor`; the collator only de-duplicates items and
indexes the pairs, so a ranking of K responses costs K items, not K(K-1).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, fields
from functools import cached_property
from typing import Hashable, Iterator, Mapping, Sequence

import numpy as np
import torch

from rewardlab.contracts.batch import UNKNOWN_LABELER, ItemProcessor, PairTable
from rewardlab.contracts.nuisance import FEATURES, nuisance_of
from rewardlab.contracts.schema import Comparison, Pair

@dataclass(frozen=True)
class EncodedComparison:
    """A comparison's K encoded items, their costs and its judgements; ``nuisance[k]`` holds item k's
    nuisance features (see :mod:`rewardlab.contracts.nuisance`), empty where not computed."""

    items: tuple[Hashable, ...]
    costs: tuple[int, ...]
    pairs: tuple[Pair, ...]
    index: int
    labeler: str | None = None
    nuisance: tuple[tuple[float, ...], ...] = ()

    @property
    def length(self) -> int:
        return sum(self.costs)

    @property
    def longest(self) -> int:
        """A batch is padded to its longest item, so this is the key to group batches by."""
        return max(self.costs)

    @cached_property
    def pair_columns(self) -> tuple[dict[str, np.ndarray], list[str | None]]:
        """The pairs as columns, built once and reused every epoch: ({winner, loser, tie, margin, weight,
        attribute_code}, attributes) with ``attributes[attribute_code[k]]`` pair k's attribute."""
        attributes = list(dict.fromkeys(p.attribute for p in self.pairs))
        code = {a: k for k, a in enumerate(attributes)}
        columns = {"winner": np.fromiter((p.winner for p in self.pairs), np.int64, len(self.pairs)),
                   "loser": np.fromiter((p.loser for p in self.pairs), np.int64, len(self.pairs)),
                   "tie": np.fromiter((p.tie for p in self.pairs), bool, len(self.pairs)),
                   "margin": np.fromiter((p.margin for p in self.pairs), np.float32, len(self.pairs)),
                   "weight": np.fromiter((p.weight for p in self.pairs), np.float32, len(self.pairs)),
                   "attribute_code": np.fromiter((code[p.attribute] for p in self.pairs), np.int64, len(self.pairs))}
        return columns, attributes


def item_key(comparison: EncodedComparison) -> int:
    """A stable 63-bit digest of a comparison's items: equal for comparisons of the same items, in every process."""
    digest = hashlib.blake2b(repr(sorted(map(repr, comparison.items))).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


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
        out.append(EncodedComparison(own, tuple(processor.cost(x) for x in own), c.pairs, i, c.labeler,
                                     tuple(map(nuisance_of, c.responses))))
    return out, truncated


class PreferenceCollator:
    """Stack the unique items of a batch of comparisons and build its :class:`PairTable`.

    ``head_index`` maps a pair's attribute to its reward column (``None``, the
    overall reward, maps to the aggregate column); ``labeler_index`` maps labeler ids
    to rows of a personalised model's table (others get -1). ``mixup_alpha`` > 0 adds
    mixed pairs to training batches (see :func:`mixup_pairs`); it needs a processor
    with a ``mix`` method, and ``seed`` fixes its draws. ``nuisance_to_model``: the items also
    carry the nuisance features (a model that reads them, see rewardlab.models.debias).

    Example:
        >>> from rewardlab.data.encode import TextItems
        >>> a = EncodedComparison((((1, 2, 3), None), ((1, 4), None)), (3, 2), (Pair(0, 1),), 0)
        >>> b = EncodedComparison((((1, 4), None), ((5,), None)), (2, 1), (Pair(1, 0, 2.0),), 1)
        >>> out = PreferenceCollator(TextItems(pad_token_id=0))([a, b])
        >>> out["items"]["input_ids"].tolist()              # (1, 4) appears twice, encoded once
        [[1, 2, 3], [1, 4, 0], [5, 0, 0]]
        >>> out["pairs"].i.tolist(), out["pairs"].j.tolist(), out["pairs"].margin.tolist()
        ([0, 2], [1, 1], [0.0, 2.0])
    """

    def __init__(self, processor: ItemProcessor, head_index: Mapping[str | None, int] | None = None,
                 labeler_index: Mapping[str, int] | None = None, *, mixup_alpha: float = 0.0, seed: int = 0,
                 nuisance_to_model: bool = False):
        self.processor = processor
        self.nuisance_to_model = nuisance_to_model  # also pass the features as the model input ``nuisance``
        self.head_index = dict(head_index or {None: 0})
        self.labeler_index = dict(labeler_index or {})
        if mixup_alpha > 0 and not callable(getattr(processor, "mix", None)):
            raise ValueError(f"train.mixup_alpha={mixup_alpha}: the items of {type(processor).__name__} cannot be mixed "
                             "(token ids have no in-between); set train.mixup_alpha=0, or use a model kind whose "
                             "items are vectors (model.kind=multimodal)")
        self.mixup_alpha, self.seed = float(mixup_alpha), seed

    def __call__(self, batch: Sequence[EncodedComparison]) -> dict:
        rows: dict[Hashable, int] = {}
        items: list[Hashable] = []
        nuisance: list[tuple[float, ...]] = []
        parts: dict[str, list[np.ndarray]] = {f.name: [] for f in fields(PairTable)}
        for comp in batch:
            local = []
            for k, item in enumerate(comp.items):
                if item not in rows:
                    rows[item] = len(items)
                    items.append(item)
                    nuisance.append(comp.nuisance[k] if comp.nuisance else (0.0,) * len(FEATURES))
                local.append(rows[item])
            local = np.asarray(local, dtype=np.int64)
            columns, attributes = comp.pair_columns
            n = len(columns["winner"])
            labeler = self.labeler_index.get(comp.labeler, UNKNOWN_LABELER) if comp.labeler else UNKNOWN_LABELER
            heads = np.asarray([self.head_index[a] for a in attributes], dtype=np.int64)
            parts["i"].append(local[columns["winner"]])
            parts["j"].append(local[columns["loser"]])
            parts["tie"].append(columns["tie"])
            parts["margin"].append(columns["margin"])
            parts["head"].append(heads[columns["attribute_code"]] if n else np.zeros(0, np.int64))
            parts["labeler"].append(np.full(n, labeler, dtype=np.int64))
            parts["weight"].append(columns["weight"])
            parts["comparison"].append(np.full(n, comp.index, dtype=np.int64))
        empty = {"tie": bool, "margin": np.float32, "weight": np.float32}
        pairs = PairTable(**{k: torch.from_numpy(np.concatenate(v) if v else np.zeros(0, empty.get(k, np.int64)))
                             for k, v in parts.items()})
        collated = self.processor.collate(items)
        features = torch.tensor(nuisance, dtype=torch.float32).reshape(len(items), len(FEATURES))  # (N, F)
        if self.mixup_alpha > 0 and torch.is_grad_enabled():  # training batches only: evaluation runs without grad
            # The draws depend on the seed and the batch's comparisons only, so a resumed run repeats them.
            rng = np.random.default_rng([self.seed, *sorted(c.index for c in batch)])
            # The features ride along as one more float input, so mixed items get mixed features.
            collated, pairs = mixup_pairs({**collated, "_nuisance": features}, pairs, len(items), self.processor.mix,
                                          rng, self.mixup_alpha)
            features = collated.pop("_nuisance")
        if self.nuisance_to_model:
            collated["nuisance"] = features
        costs = [self.processor.cost(item) for item in items]
        padded = self.processor.padded_cost(costs) if hasattr(self.processor, "padded_cost") else \
            len(costs) * max(costs)
        # (real, padded) cost of the batch's unique items, in the processor's unit (tokens for text)
        return {"items": collated, "pairs": pairs, "nuisance": features, "cost": torch.tensor([sum(costs), padded])}


def mixup_pairs(items: dict[str, torch.Tensor], pairs: PairTable, n_items: int, mix, rng: np.random.Generator,
                alpha: float) -> tuple[dict[str, torch.Tensor], PairTable]:
    """Mixup for preference pairs: soft-label pairs between mixtures of each pair's two items.

    For every judged (non-tie) item pair {a, b} one λ ~ Beta(alpha, alpha) is drawn and two
    items are appended with ``mix(items, rows_a, rows_b, lam)``: ``λ·x_a + (1-λ)·x_b`` and
    ``λ·x_b + (1-λ)·x_a``. A pair "w over l" then adds two pairs between the mixture
    leaning to w (m_w) and the one leaning to l (m_l): (m_w over m_l, weight λ·w) and
    (m_l over m_w, weight (1-λ)·w). With the pairwise weighted Bradley–Terry loss these
    two terms are exactly soft-label BT with target λ:
    λ·(-log σ(d)) + (1-λ)·(-log σ(-d)) = BCE(σ(d), λ), d = r(m_w) - r(m_l).
    The new pairs carry margin 0 and the judgement's head, labeler and comparison.

    Shapes: items are (N, ...) tensors; the result has N + 2U rows (U = distinct judged item pairs)
    and P + 2P' pairs (P' = non-tie pairs).

    Example:
        >>> mix = lambda x, a, b, lam: {k: torch.cat([v, lam[:, None] * v[a] + (1 - lam[:, None]) * v[b]])
        ...                             for k, v in x.items()}
        >>> items, pairs = mixup_pairs({"x": torch.eye(2)}, PairTable.of(1), 2, mix, np.random.default_rng(0), 1.0)
        >>> items["x"].shape, pairs.i.tolist(), pairs.j.tolist()
        (torch.Size([4, 2]), [0, 2, 3], [1, 3, 2])
    """
    keep = (~pairs.tie).nonzero().flatten()
    if len(keep) == 0:
        return items, pairs
    i, j = pairs.i[keep], pairs.j[keep]
    low, high = torch.minimum(i, j), torch.maximum(i, j)
    unique, inverse = torch.unique(low * n_items + high, return_inverse=True)  # (U,), (P',)
    u_low, u_high = unique // n_items, unique % n_items
    lam = torch.from_numpy(rng.beta(alpha, alpha, len(unique))).float()  # (U,)
    items = mix(items, torch.cat([u_low, u_high]), torch.cat([u_high, u_low]), torch.cat([lam, lam]))
    count = len(unique)
    toward_low = n_items + torch.arange(count)  # λ·x_low + (1-λ)·x_high
    toward_high = toward_low + count
    winner_low = i == low
    m_w = torch.where(winner_low, toward_low[inverse], toward_high[inverse])
    m_l = torch.where(winner_low, toward_high[inverse], toward_low[inverse])
    lam_p, weight = lam[inverse], pairs.weight[keep]
    extra = {"i": torch.cat([m_w, m_l]), "j": torch.cat([m_l, m_w]), "tie": torch.zeros(2 * len(keep), dtype=torch.bool),
             "margin": torch.zeros(2 * len(keep)), "weight": torch.cat([lam_p * weight, (1 - lam_p) * weight])}
    for name in ("head", "labeler", "comparison"):
        extra[name] = getattr(pairs, name)[keep].repeat(2)
    return items, PairTable(**{f.name: torch.cat([getattr(pairs, f.name), extra[f.name]]) for f in fields(PairTable)})


def costliest_first(batches: list[list[int]], lengths: np.ndarray) -> list[list[int]]:
    """``batches`` with the one of most padded tokens (comparisons × longest) swapped to the front.

    As transformers' length-grouped sampler does: a batch too large for the device fails in the
    first step, not hours in, and the allocator grows to its peak once instead of fragmenting
    while batches grow.

    Example:
        >>> costliest_first([[0], [1, 2], [3]], np.array([5, 2, 9, 4]))
        [[1, 2], [0], [3]]
    """
    if len(batches) < 2:
        return batches
    costs = [len(b) * int(lengths[b].max()) if b else 0 for b in batches]
    top = int(np.argmax(costs))
    batches = list(batches)
    batches[0], batches[top] = batches[top], batches[0]
    return batches


class LengthGroupedBatchSampler:
    """Seeded shuffled batches of indices, grouped by length to cut padding.

    Indices are shuffled with ``seed + epoch``; within mega-batches of
    ``batch_size * 50`` they are sorted by length (then ``keys``) and cut into batches, whose
    order is shuffled again, the costliest batch first (:func:`costliest_first`). The same
    (seed, epoch) always gives the same batches,
    which is what exact resume relies on.
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, *, seed: int = 0, shuffle: bool = True,
                 group_by_length: bool = True, mega: int = 50, keys: Sequence[int] | None = None):
        self.lengths = np.asarray(lengths)
        # Equal lengths (common: everything cut at max_length) are ordered by ``keys``, so comparisons with the
        # same items (one pair judged by several labelers) land in the same batch and are encoded once there.
        self.keys = np.asarray(keys) if keys is not None else np.zeros(len(self.lengths), dtype=np.int64)
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
            out.extend(self._cut(chunk[np.lexsort((self.keys[chunk], -self.lengths[chunk]))]))
        if self.shuffle:
            out = [out[i] for i in rng.permutation(len(out))]
        return costliest_first(out, self.lengths)

    def _cut(self, chunk: np.ndarray) -> list[list[int]]:
        """Cut indices sorted longest first into batches (``batch_size`` each here)."""
        return [chunk[i: i + self.batch_size].tolist() for i in range(0, len(chunk), self.batch_size)]

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches())

    def __len__(self) -> int:
        return (len(self.lengths) + self.batch_size - 1) // self.batch_size
