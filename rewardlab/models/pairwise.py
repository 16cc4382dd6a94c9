"""Pairwise kinds read prompt, A and B together; their items are *ordered pairs* of responses.

:func:`ordered_pairs` is their ``ModelKind.prepare``: every judged pair (w, l) of a
comparison becomes two items, the tuples ``(w, l)`` and ``(l, w)``, and one
:class:`~rewardlab.contracts.schema.Pair` between them, so the shared batch contract
(unique items + pair table) and trainer are unchanged. A pairwise model returns
three logits per item — first wins, second wins, tie — and the
:class:`~rewardlab.models.outcomes.ThreeClass` outcome model averages both orders:
training sees every pair both ways (swap augmentation) and predictions cannot
depend on position.

The kind here, ``cross_encoder``, is a Hugging Face sequence classifier with three
labels reading ``prompt`` and ``A <sep> B`` as one text (3K labels, a group per member,
in a shared-backbone ensemble); the LLM judge (:mod:`rewardlab.models.judge`) is
another pairwise kind.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from rewardlab.config import ExperimentConfig
from rewardlab.contracts.schema import Comparison
from rewardlab.data.encode import EncodingSpec, TextEncoder, TextItem, TextItems
from rewardlab.models.backbones import load_backbone, load_tokenizer, prepare_tokenizer, save_tokenizer, with_lora
from rewardlab.models.base import CONFIG_KEY, ModelKind, read_metadata
from rewardlab.models.ensemble import is_member_head, mean_probability
from rewardlab.models.outcomes import ThreeClass
from rewardlab.models.text import TextRewardModel, inference_spec

PAIR_LABELS = ("first", "second", "tie")


def ordered_pairs(comparison: Comparison) -> Comparison:
    """Responses → ordered pairs: each judged pair (w, l) gives items (w, l) and (l, w) and one Pair between them.

    Example:
        >>> from rewardlab.contracts.schema import Pair
        >>> c = Comparison("p", ("x", "y", "z"), (Pair(0, 1), Pair(2, 1, tie=True)))
        >>> out = ordered_pairs(c)
        >>> out.responses
        (('x', 'y'), ('y', 'x'), ('z', 'y'), ('y', 'z'))
        >>> [(p.winner, p.loser, p.tie) for p in out.pairs]
        [(0, 1, False), (2, 3, True)]
    """
    responses: dict[tuple, int] = {}
    pairs = []

    def index(item: tuple) -> int:
        return responses.setdefault(item, len(responses))

    for p in comparison.pairs:
        w, l = comparison.responses[p.winner], comparison.responses[p.loser]
        pairs.append(p._replace(winner=index((w, l)), loser=index((l, w))))
    return dataclasses.replace(comparison, responses=tuple(responses), pairs=tuple(pairs), scores=None)


class PairTextItems(TextItems):
    """Text items for ordered pairs: ``prompt`` and ``first <sep> second`` encoded as one text pair.

    Each response keeps at most half of the tokens the prompt leaves, so a long first
    answer cannot push the second out of the window: the training budget's window, or a
    loaded model's (the backbone's position limit), where the tokenizer then cuts what
    is still too long as :class:`~rewardlab.data.encode.TextEncoder` says.
    """

    def __init__(self, encoder: TextEncoder, separator: str | None = None, *, pad_to_multiple_of: int = 1):
        super().__init__(encoder, pad_to_multiple_of=pad_to_multiple_of)
        tok = encoder.tokenizer
        self.separator = separator or (f" {tok.sep_token} " if tok.sep_token else "\n\n[Response B]\n")

    def encode_items(self, prompts: Sequence[str], responses: Sequence[object]) -> tuple[list[TextItem], int]:
        for i, r in enumerate(responses):
            if not (isinstance(r, tuple) and len(r) == 2 and all(isinstance(x, str) for x in r)):
                raise TypeError(f"item {i}: a pairwise model reads two text responses (A, B), got {type(r).__name__}")
        spec, tok = self.encoder.spec, self.tokenizer
        window = self.encoder.max_length or sys.maxsize  # None: the backbone states no limit
        half = max(1, (window - spec.max_prompt_tokens - self.encoder.n_special - 4) // 2)
        firsts, seconds = [r[0] for r in responses], [r[1] for r in responses]
        cut = []
        for texts in (firsts, seconds):
            offsets = tok(list(texts), add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
            cut.append([self.encoder._cut(t, o, half, spec.response_truncation) for t, o in zip(texts, offsets)])
        joined = [a + self.separator + b for a, b in zip(*cut)]
        return super().encode_items(prompts, joined)


class MeanProbability(nn.Module):
    """The aggregate of K three-logit groups (N, 3K): log of their mean A / B / tie probabilities, (N, 3)."""

    def __init__(self, groups: int):
        super().__init__()
        self.groups = groups

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        return mean_probability(logits.reshape(len(logits), self.groups, len(PAIR_LABELS)), 1)


def _pairwise_model(hf_model: nn.Module, members: Sequence[str]) -> TextRewardModel:
    """A three-logit model: one A / B / tie group (``members`` empty), or one group per member head of a
    shared-backbone ensemble and, last, their mean-probability aggregate."""
    model = TextRewardModel(hf_model)
    model.head_width = len(PAIR_LABELS)
    model.heads = PAIR_LABELS
    if members:
        model.heads = (*(name for m in members for name in (m, f"{m}:second", f"{m}:tie")), *PAIR_LABELS)
        model.aggregator = MeanProbability(len(members))
    model.set_outcome(ThreeClass())
    return model


def build_cross_encoder(cfg: ExperimentConfig, attributes: Sequence[str], processor: PairTextItems
                        ) -> TextRewardModel:
    members = [a for a in attributes if is_member_head(a)]
    if len(members) != len(attributes):
        raise ValueError(f"model.kind=cross_encoder predicts one A / B / tie outcome; the data rates attributes "
                         f"{', '.join(attributes)}: use model.kind=text for per-attribute heads")
    hf_model, _ = load_backbone(cfg.model.backbone, num_labels=len(PAIR_LABELS) * max(1, len(members)),
                                dropout=cfg.model.dropout, tokenizer=processor.tokenizer)
    if cfg.model.lora:
        hf_model = with_lora(hf_model, cfg.model, "SEQ_CLS")
    return _pairwise_model(hf_model, members)


def _processor(cfg: ExperimentConfig) -> PairTextItems:
    tokenizer = load_tokenizer(cfg.model.backbone)
    return PairTextItems(TextEncoder(tokenizer, EncodingSpec.from_data_config(cfg.data)),
                         pad_to_multiple_of=cfg.train.pad_to_multiple_of)


def _save(model: TextRewardModel, processor: PairTextItems, folder: Path, metadata: dict) -> None:
    hf = model.merged_model()
    members = model.heads[:-len(PAIR_LABELS)][::len(PAIR_LABELS)]  # an ensemble's member heads; none when plain
    labels = [f"{m}:{label}" for m in members for label in PAIR_LABELS] or list(PAIR_LABELS)
    hf.config.id2label = dict(enumerate(labels))
    hf.config.label2id = {name: i for i, name in enumerate(labels)}
    spec = inference_spec(processor.encoder.spec, hf.config, processor.tokenizer, metadata)
    setattr(hf.config, CONFIG_KEY, {**metadata, "encoding": spec.to_dict(), "separator": processor.separator})
    hf.save_pretrained(folder, safe_serialization=True)
    save_tokenizer(processor.tokenizer, folder, spec.inference_max_length)


def _load(path: str, device: torch.device, dtype: torch.dtype | None):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    hf = AutoModelForSequenceClassification.from_pretrained(path, use_safetensors=True, dtype=dtype)
    metadata = read_metadata(path)
    prepare_tokenizer(tokenizer, hf)
    labels = [hf.config.id2label[i] for i in range(hf.config.num_labels)]
    members = [label.split(":")[0] for label in labels[::len(PAIR_LABELS)]] if len(labels) > len(PAIR_LABELS) else []
    model = _pairwise_model(hf, members)
    spec = inference_spec(EncodingSpec(**metadata["encoding"]), hf.config, tokenizer, metadata)
    processor = PairTextItems(TextEncoder(tokenizer, spec, inference=True), metadata["separator"])
    return model.to(device).eval(), processor, metadata


CROSS_ENCODER_KIND = ModelKind(
    name="cross_encoder", processor=_processor, build=build_cross_encoder, save=_save, load=_load,
    prepare=ordered_pairs, outcome="three_class",
    help="Pairwise cross-encoder: reads prompt, A and B together and predicts A / B / tie (3-class head), both "
         "orders averaged; a plain 3-label AutoModelForSequenceClassification folder.")
