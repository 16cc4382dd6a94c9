"""(prompt, response) → token ids, truncating long texts at token boundaries and counting it.

``concat`` makes one text of the two, ``prompt + response`` as written (with
``concat_separator`` between them when neither has whitespace at the joint), as
TRL's RewardTrainer builds it. ``text_pair`` gives encoders (tokenizers with a
separator token, e.g. BERT) ``[CLS] prompt [SEP] response [SEP]``, exactly what
``tokenizer(prompt, response)`` gives a plain transformers user. Long inputs are
cut *before* encoding, so the ids are those of the truncated texts: by default
the prompt keeps its end and the response keeps its start.

That cut is the *training* budget (``max_length``). A loaded model encodes for
inference instead (``TextEncoder(..., inference=True)``): the whole text, up to the
backbone's position limit (``inference_max_length``), exactly as the saved tokenizer
reads it with ``truncation=True``; a longer text loses tokens from its start
(``truncation_side="left"``: the response's end, where a decoder reads its reward,
is kept; special tokens such as [CLS] stay).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from rewardlab.config import DataConfig
from rewardlab.contracts.schema import unicode_problem
from rewardlab.data.fields import render_plain


@dataclass(frozen=True)
class EncodingSpec:
    """How texts become ids; saved in the checkpoint's config so scoring matches training."""

    max_length: int = 256
    max_prompt_tokens: int = 128
    prompt_truncation: str = "left"
    response_truncation: str = "right"
    pair_encoding: str = "auto"  # text_pair | concat | auto (text_pair when the tokenizer has a sep token)
    # concat: put between prompt and response when neither has whitespace there. "" here, not DataConfig's "\n", so
    # that checkpoints saved before the option existed (their specs lack it) keep encoding as they were trained
    concat_separator: str = ""
    # the most tokens scoring reads (the backbone's position limit); None: not recorded (checkpoints saved before it
    # was), worked out from the model when it loads
    inference_max_length: int | None = None

    @classmethod
    def from_data_config(cls, cfg: DataConfig, auto: str = "auto") -> "EncodingSpec":
        """The spec ``cfg`` asks for; ``auto`` is what a model kind makes of ``pair_encoding=auto``."""
        prompt_tokens = cfg.max_prompt_tokens if cfg.max_prompt_tokens is not None else cfg.max_length // 2
        return cls(max_length=cfg.max_length, max_prompt_tokens=prompt_tokens,
                   prompt_truncation=cfg.prompt_truncation, response_truncation=cfg.response_truncation,
                   pair_encoding=auto if cfg.pair_encoding == "auto" else cfg.pair_encoding,
                   concat_separator=cfg.concat_separator)

    def to_dict(self) -> dict:
        return dict(self.__dict__)


INFERENCE_TRUNCATION_SIDE = "left"  # past the backbone's limit a text loses its start (see the module's docstring)


class TextEncoder:
    """Tokenise (prompt, response) pairs under an :class:`EncodingSpec`.

    For training (the default) each pair is cut to ``spec.max_length`` by the spec's rule; with
    ``inference`` it is read whole up to ``spec.inference_max_length`` and cut beyond it as the tokenizer
    cuts with ``truncation=True``, which this sets to that limit and to ``truncation_side="left"``.

    Example:
        >>> enc = TextEncoder(tokenizer, EncodingSpec(max_length=8))   # doctest: +SKIP
        >>> ids, truncated = enc.encode(["why?"], ["because " * 20])   # doctest: +SKIP
        >>> len(ids[0]["input_ids"]), truncated                         # doctest: +SKIP
        (8, 1)
    """

    def __init__(self, tokenizer, spec: EncodingSpec, *, inference: bool = False):
        if not getattr(tokenizer, "is_fast", False):
            raise ValueError("rewardlab needs a fast (Rust) tokenizer for offset-exact truncation; "
                             f"{type(tokenizer).__name__} is not one")
        self.tokenizer = tokenizer
        mode = spec.pair_encoding
        if mode == "auto":
            mode = "text_pair" if tokenizer.sep_token is not None else "concat"
            spec = EncodingSpec(**{**spec.to_dict(), "pair_encoding": mode})
        if mode not in ("text_pair", "concat"):
            raise ValueError(f"pair_encoding={mode!r}; choose text_pair, concat or auto")
        self.spec = spec
        # tokens the encoding adds to the two texts: special tokens, and the separator concat may put between them
        joint = tokenizer(spec.concat_separator, add_special_tokens=False)["input_ids"] \
            if mode == "concat" and spec.concat_separator else []
        self.n_special = tokenizer.num_special_tokens_to_add(pair=mode == "text_pair") + len(joint)
        if spec.max_length - self.n_special < 2:
            raise ValueError(f"data.max_length={spec.max_length} leaves {max(spec.max_length - self.n_special, 0)} "
                             f"token(s) for the text: the encoding adds {self.n_special} of its own, and a prompt "
                             "and a response need at least one each")
        self.inference = inference
        if inference:
            tokenizer.truncation_side = INFERENCE_TRUNCATION_SIDE
            if spec.inference_max_length is not None:
                tokenizer.model_max_length = spec.inference_max_length

    @property
    def max_length(self) -> int | None:
        """The most tokens an encoded text has: the training budget, or at inference the backbone's limit (None:
        the backbone states none)."""
        return self.spec.inference_max_length if self.inference else self.spec.max_length

    def _cut(self, text: str, offsets: list, keep: int, side: str) -> str:
        """Keep ``keep`` tokens of ``text``; ``side`` is the side that is cut off."""
        if keep >= len(offsets):
            return text
        if keep <= 0:
            return ""
        if side == "left":
            return text[offsets[len(offsets) - keep][0]:]
        return text[: offsets[keep - 1][1]]

    def encode(self, prompts: Sequence[str], responses: Sequence[str]) -> tuple[list[dict], int]:
        """Encode aligned prompts and responses; returns (features per text, number truncated)."""
        if self.inference:
            return self._encode_whole(prompts, responses)
        spec, tok = self.spec, self.tokenizer
        budget = spec.max_length - self.n_special
        kw = dict(add_special_tokens=False, return_offsets_mapping=True)
        p_off = tok(list(prompts), **kw)["offset_mapping"]
        r_off = tok(list(responses), **kw)["offset_mapping"]
        cut_p, cut_r, truncated = [], [], 0
        for prompt, response, po, ro in zip(prompts, responses, p_off, r_off):
            lp, lr = len(po), len(ro)
            if lp + lr > budget:
                truncated += 1
                p_keep = min(lp, max(spec.max_prompt_tokens, budget - lr), budget - 1)
                r_keep = budget - p_keep
                prompt = self._cut(prompt, po, p_keep, spec.prompt_truncation)
                response = self._cut(response, ro, r_keep, spec.response_truncation)
            cut_p.append(prompt)
            cut_r.append(response)
        if spec.pair_encoding == "text_pair":
            enc = tok(cut_p, cut_r, truncation="longest_first", max_length=spec.max_length)
        else:
            enc = tok([joined(p, r, spec.concat_separator) for p, r in zip(cut_p, cut_r)], truncation=True,
                      max_length=spec.max_length)
        return _features(enc), truncated

    def _encode_whole(self, prompts: Sequence[str], responses: Sequence[str]) -> tuple[list[dict], int]:
        """Inference: ``tokenizer(text, truncation=True)`` (``tokenizer(prompt, response, ...)`` for text pairs) at
        the backbone's limit; a text is counted as truncated when the tokenizer cut tokens off it."""
        spec, limit = self.spec, self.spec.inference_max_length
        texts = (list(prompts), list(responses)) if spec.pair_encoding == "text_pair" else \
            ([joined(p, r, spec.concat_separator) for p, r in zip(prompts, responses)],)
        enc = self.tokenizer(*texts, truncation=limit is not None, max_length=limit)
        return _features(enc), sum(bool(e.overflowing) for e in enc.encodings)


def _features(enc) -> list[dict]:
    """A tokenizer's batch output as one dict per text: ``input_ids`` and, where made, ``token_type_ids``."""
    names = [k for k in ("input_ids", "token_type_ids") if k in enc]
    return [{k: enc[k][i] for k in names} for i in range(len(enc["input_ids"]))]


def joined(prompt: str, response: str, separator: str) -> str:
    """``prompt + response``, with ``separator`` between them when neither has whitespace at the joint.

    Example:
        >>> joined("Why?", "Because.", "\\n"), joined("Human: hi\\n\\nAssistant:", " Hello.", "\\n")
        ('Why?\\nBecause.', 'Human: hi\\n\\nAssistant: Hello.')
    """
    if separator and prompt and response and not prompt[-1].isspace() and not response[0].isspace():
        return prompt + separator + response
    return prompt + response


TextItem = tuple[tuple[int, ...], "tuple[int, ...] | None"]  # (input_ids, token_type_ids or None)


def pack(items: Sequence[TextItem]) -> dict[str, torch.Tensor]:
    """Items concatenated into one row without padding, as padding-free attention reads them.

    Returns ``input_ids`` (1, T), ``position_ids`` (1, T) restarting at 0 for each item
    (attention implementations read sequence boundaries from them) and ``last_index``
    (N,), the position of each item's last token, where its reward is read.

    Example:
        >>> out = pack([((5, 6, 7), None), ((8, 9), None)])
        >>> out["input_ids"].tolist(), out["position_ids"].tolist(), out["last_index"].tolist()
        ([[5, 6, 7, 8, 9]], [[0, 1, 2, 0, 1]], [2, 4])
    """
    if any(types is not None for _, types in items):
        raise ValueError("packing needs a decoder tokenizer (token type ids belong to text-pair encoders)")
    lengths = torch.tensor([len(ids) for ids, _ in items])
    input_ids = torch.tensor([t for ids, _ in items for t in ids], dtype=torch.long)[None]
    position_ids = torch.cat([torch.arange(n) for n in lengths.tolist()])[None]
    return {"input_ids": input_ids, "position_ids": position_ids, "last_index": lengths.cumsum(0) - 1}


def padded_width(longest: int, multiple: int) -> int:
    """``longest`` rounded up to a multiple of ``multiple``: the width of a batch padded to it.

    Example:
        >>> padded_width(100, 64), padded_width(128, 64), padded_width(7, 1)
        (128, 128, 7)
    """
    return -(-longest // multiple) * multiple


class TextItems:
    """The :class:`~rewardlab.contracts.batch.ItemProcessor` of text models: items are token ids.

    ``collate`` right-pads to the longest item, rounded up to a multiple of
    ``pad_to_multiple_of`` (``extra_padding`` more pad tokens, for the padding-invariance
    check) and returns ``input_ids``, ``attention_mask`` and, where the tokenizer makes
    them, ``token_type_ids``.
    """

    def __init__(self, encoder: TextEncoder | None = None, *, pad_token_id: int | None = None, packing: bool = False,
                 pad_to_multiple_of: int = 1):
        self.encoder = encoder
        self.pad_token_id = pad_token_id if pad_token_id is not None else encoder.tokenizer.pad_token_id
        self.packing = packing
        self.pad_to_multiple_of = pad_to_multiple_of

    @property
    def tokenizer(self):
        return self.encoder.tokenizer

    def render_chat(self, messages: Sequence[dict], add_generation_prompt: bool) -> str:
        """Chat messages as text: the tokenizer's chat template where it has one, else ``role: content`` lines."""
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(list(messages), tokenize=False,
                                                      add_generation_prompt=add_generation_prompt)
        return render_plain(messages, add_generation_prompt)

    def encode_items(self, prompts: Sequence[str], responses: Sequence[object]) -> tuple[list[TextItem], int]:
        for i, r in enumerate(responses):
            if not isinstance(r, str):
                raise TypeError(f"item {i}: a text reward model scores text responses, got {type(r).__name__}")
            if problem := unicode_problem(r):
                raise ValueError(f"item {i}: the response is {problem}")
        features, truncated = self.encoder.encode(prompts, responses)
        items = [(tuple(f["input_ids"]), tuple(f["token_type_ids"]) if "token_type_ids" in f else None)
                 for f in features]
        return items, truncated

    def cost(self, item: TextItem) -> int:
        return len(item[0])

    def with_prefix_token(self, item: TextItem, token: int) -> TextItem:
        """``token`` in front of the text: after a leading special token ([CLS], <bos>), else first."""
        ids, types = item
        at = 1 if ids and ids[0] in set(self.tokenizer.all_special_ids) else 0
        new_types = None if types is None else (*types[:at], types[0] if types else 0, *types[at:])
        return (*ids[:at], token, *ids[at:]), new_types

    def padded_cost(self, costs: Sequence[int]) -> int:
        """Tokens a batch of items with these costs occupies: no padding when packed."""
        return sum(costs) if self.packing else len(costs) * padded_width(max(costs), self.pad_to_multiple_of)

    def collate(self, items: Sequence[TextItem], extra_padding: int = 0) -> dict[str, torch.Tensor]:
        if self.packing and not extra_padding:
            return pack(items)
        width = padded_width(max(len(ids) for ids, _ in items), self.pad_to_multiple_of) + extra_padding
        input_ids = torch.full((len(items), width), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(items), width), dtype=torch.long)
        has_types = items[0][1] is not None
        token_type_ids = torch.zeros_like(input_ids) if has_types else None
        for row, (ids, types) in enumerate(items):
            input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            attention_mask[row, : len(ids)] = 1
            if has_types:
                token_type_ids[row, : len(types)] = torch.tensor(types, dtype=torch.long)
        out = {"input_ids": input_ids, "attention_mask": attention_mask}
        if has_types:
            out["token_type_ids"] = token_type_ids
        return out
