"""Process reward models: a token classifier read at the separator that ends each step of a solution.

A solution is encoded as TRL's PRMTrainer builds it: ``[BOS or CLS] prompt step_1 SEP step_2 SEP ...``,
the prompt and each step tokenised on their own and ``SEP`` the ids of ``model.step_separator``; the
step's probability of being correct is read at the last token of its separator::

    ids:        [CLS] what is 2+2 ? 2+2=4 [SEP] so 4 [SEP]
    step_mask:    0    0   0   0  0   0     1    0  0   1

The network is a plain ``AutoModelForTokenClassification`` with ``num_labels=2`` (label 1 = correct, as in
TRL), so P(correct) = softmax(logits)[1] = σ(z₁ - z₀); its folder records the separator (``step_separator``)
and its last token id (``step_tag_id``, what vLLM's STEP pooling reads) at the top of ``config.json``.
``forward`` gives the solution's reward, its step probabilities aggregated (``min`` by default, see
``model.step_aggregate``), so scoring, ranking and best-of-n read a process reward model as any other.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

from rewardlab.config import ExperimentConfig
from rewardlab.config.sections import STEP_AGGREGATES
from rewardlab.contracts.schema import unicode_problem
from rewardlab.data.encode import pack, padded_width
from rewardlab.data.fields import render_plain
from rewardlab.models.backbones import (backbone_source, dequantised, dropout_overrides, load_tokenizer,
                                        position_limit, prepare_tokenizer, save_tokenizer, with_lora)
from rewardlab.models.base import CONFIG_KEY, ModelKind, read_metadata, readable_weights
from rewardlab.models.text import TextRewardModel, check_packable

STEP_LABELS = {0: "wrong", 1: "correct"}  # the token classifier's classes; index 1 = correct, as in TRL
PRM_NAME = "prm"
StepItem = tuple[tuple[int, ...], tuple[int, ...]]  # (input ids, positions where the steps' probabilities are read)


def resolve_separator(tokenizer, separator: str) -> str:
    """``model.step_separator`` for ``tokenizer``: ``auto`` is ``"\\n"`` where the tokenizer keeps it, else its
    separator token; a separator the tokenizer turns into no token is an error."""
    if separator == "auto":
        separator = "\n" if tokenizer.encode("\n", add_special_tokens=False) else (tokenizer.sep_token or "\n")
    if not tokenizer.encode(separator, add_special_tokens=False):
        raise ValueError(f"model.step_separator={separator!r} is no token for this tokenizer (it drops it): choose "
                         "one it keeps, e.g. its separator token" + (f" {tokenizer.sep_token!r}" if tokenizer.sep_token
                                                                    else ""))
    return separator


class StepItems:
    """The item processor of process reward models: (prompt, steps) → token ids and the step-end positions.

    ``max_length`` caps a solution's tokens (None: no cap): a long solution keeps its prompt's end (at least
    ``max_prompt_tokens`` of it) and as many whole steps as fit; the steps left out are counted by
    :meth:`encode_solutions`, and a first step too long to fit is cut to fit.
    """

    def __init__(self, tokenizer, separator: str, *, max_length: int | None = None,
                 max_prompt_tokens: int | None = None, packing: bool = False, pad_to_multiple_of: int = 1):
        self.tokenizer, self.separator, self.packing = tokenizer, separator, packing
        self.pad_to_multiple_of = pad_to_multiple_of
        self.separator_ids = tuple(tokenizer.encode(separator, add_special_tokens=False))
        assert self.separator_ids, "resolve_separator checks the separator first"
        start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.cls_token_id
        self.start = () if start is None else (start,)
        self.pad_token_id = tokenizer.pad_token_id
        self.max_length = max_length
        self.max_prompt_tokens = max_prompt_tokens if max_prompt_tokens is not None else (max_length or 0) // 2
        if max_length is not None and max_length - len(self.start) - self.max_prompt_tokens <= len(self.separator_ids):
            raise ValueError(f"data.max_length={max_length} leaves no room for a step after the prompt's "
                             f"{self.max_prompt_tokens} tokens (data.max_prompt_tokens)")

    @property
    def step_tag_id(self) -> int:
        """The token the steps' probabilities are read at (the separator's last)."""
        return self.separator_ids[-1]

    def render_chat(self, messages: Sequence[dict], add_generation_prompt: bool) -> str:
        """Chat messages as text: the tokenizer's chat template where it has one, else ``role: content`` lines."""
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(list(messages), tokenize=False,
                                                      add_generation_prompt=add_generation_prompt)
        return render_plain(messages, add_generation_prompt)

    def split_steps(self, response: str, where: str = "response") -> list[str]:
        """A response's steps: its pieces between separators (between line breaks where it has no separator, as
        with a separator token such as [SEP]), stripped, blank ones dropped."""
        cut = self.separator if self.separator.strip() and self.separator in response else "\n"
        steps = [s.strip() for s in response.split(cut) if s.strip()]
        if not steps:
            raise ValueError(f"{where}: no steps (a process reward model scores steps separated by "
                             f"{self.separator!r})")
        return steps

    def _assemble(self, prompt: list[int], steps: list[list[int]]) -> tuple[StepItem, int]:
        """Ids and step ends of one solution, within ``max_length``; returns (item, steps kept)."""
        sep = list(self.separator_ids)
        steps = [s + sep for s in steps]
        if self.max_length is not None:
            budget = self.max_length - len(self.start)
            total = sum(map(len, steps))
            if len(prompt) + total > budget:
                keep = min(len(prompt), max(self.max_prompt_tokens, budget - total))
                prompt = prompt[len(prompt) - keep:]  # the prompt keeps its end
                room, used, kept = budget - len(prompt), 0, 0
                while kept < len(steps) and used + len(steps[kept]) <= room:
                    used += len(steps[kept])
                    kept += 1
                steps = steps[:kept] if kept else [steps[0][: room - len(sep)] + sep]  # a first step cut to fit
        ids, ends = list(self.start) + prompt, []
        for step in steps:
            ids += step
            ends.append(len(ids) - 1)
        return (tuple(ids), tuple(ends)), len(ends)

    def encode_solutions(self, prompts: Sequence[str], steps: Sequence[Sequence[str]]
                         ) -> tuple[list[StepItem], list[int]]:
        """Encode aligned prompts and step lists; returns (items, steps kept of each: fewer than given where the
        solution was too long)."""
        flat = [s for solution in steps for s in solution]
        for i, text in enumerate([*prompts, *flat]):
            if not isinstance(text, str):
                raise TypeError(f"a process reward model reads text, got {type(text).__name__} {text!r:.40}")
            if problem := unicode_problem(text):
                raise ValueError(f"{'prompt' if i < len(prompts) else 'step'} is {problem}")
        tok = lambda texts: self.tokenizer(list(texts), add_special_tokens=False)["input_ids"] if texts else []
        prompt_ids, step_ids = tok(prompts), tok(flat)
        items, kept, at = [], [], 0
        for p, solution in zip(prompt_ids, steps):
            item, n = self._assemble(p, step_ids[at: at + len(solution)])
            at += len(solution)
            items.append(item)
            kept.append(n)
        return items, kept

    def encode_items(self, prompts: Sequence[str], responses: Sequence[object]) -> tuple[list[StepItem], int]:
        """Items for ``RewardModel.score``: a response is a text split at the separator, or a list of steps;
        returns (items, solutions with steps left out)."""
        steps = [self.split_steps(r, f"item {i}") if isinstance(r, str) else list(r) for i, r in enumerate(responses)]
        items, kept = self.encode_solutions(prompts, steps)
        return items, sum(k < len(s) for k, s in zip(kept, steps))

    def cost(self, item: StepItem) -> int:
        return len(item[0])

    def collate(self, items: Sequence[StepItem]) -> dict[str, torch.Tensor]:
        """Right-padded ``input_ids`` and ``attention_mask`` (N, L), and ``step_mask`` (N, L): True where a step's
        probability is read. With ``packing``: the solutions in one row without padding (``input_ids`` and
        ``position_ids`` (1, T), see :func:`~rewardlab.data.encode.pack`), ``step_mask`` (1, T) and
        ``step_counts`` (N,), each solution's number of steps."""
        if self.packing:
            packed = pack([(ids, None) for ids, _ in items])
            starts = packed["last_index"] - torch.tensor([len(ids) for ids, _ in items]) + 1
            step_mask = torch.zeros_like(packed["input_ids"], dtype=torch.bool)
            step_mask[0, [int(start) + e for start, (_, ends) in zip(starts, items) for e in ends]] = True
            return {"input_ids": packed["input_ids"], "position_ids": packed["position_ids"], "step_mask": step_mask,
                    "step_counts": torch.tensor([len(ends) for _, ends in items])}
        width = padded_width(max(len(ids) for ids, _ in items), self.pad_to_multiple_of)
        input_ids = torch.full((len(items), width), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(items), width), dtype=torch.long)
        step_mask = torch.zeros((len(items), width), dtype=torch.bool)
        for row, (ids, ends) in enumerate(items):
            input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            attention_mask[row, : len(ids)] = 1
            step_mask[row, list(ends)] = True
        return {"input_ids": input_ids, "attention_mask": attention_mask, "step_mask": step_mask}


def aggregate_steps(probs: torch.Tensor, step_mask: torch.Tensor, how: str) -> torch.Tensor:
    """A solution's reward from its step probabilities: (N, L) probabilities read where ``step_mask`` (N, L) is
    True -> (N,); ``min``, ``product``, ``mean`` or ``last`` (NaN for a row without steps).

    Example:
        >>> p, m = torch.tensor([[0.0, 0.9, 0.5, 0.8]]), torch.tensor([[False, True, True, True]])
        >>> [round(float(aggregate_steps(p, m, h)), 2) for h in ("min", "product", "mean", "last")]
        [0.5, 0.36, 0.73, 0.8]
    """
    mask = step_mask.bool()
    if how == "min":
        out = probs.masked_fill(~mask, float("inf")).amin(1)
    elif how == "product":
        out = (probs.clamp_min(1e-12).log() * mask).sum(1).exp()
    elif how == "mean":
        out = (probs * mask).sum(1) / mask.sum(1).clamp_min(1)
    elif how == "last":
        last = (mask * torch.arange(1, mask.shape[1] + 1, device=mask.device)).argmax(1)  # (N,)
        out = probs.gather(1, last[:, None])[:, 0]
    else:
        raise ValueError(f"aggregate={how!r}; choose one of {', '.join(STEP_AGGREGATES)}")
    return torch.where(mask.any(1), out, torch.full_like(out, float("nan")))


class ProcessRewardNet(TextRewardModel):
    """A token classifier over solutions. ``forward(input_ids, attention_mask, step_mask)`` -> rewards (N, 1), the
    step probabilities aggregated as ``aggregate`` says; with ``steps=True`` the logits of P(step is correct) of
    every step instead, (S,) in row order (each row's steps in order)."""

    def __init__(self, hf_model: torch.nn.Module, aggregate: str = "min"):
        super().__init__(hf_model)
        self.aggregate = aggregate

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                step_mask: torch.Tensor | None = None, steps: bool = False, position_ids: torch.Tensor | None = None,
                step_counts: torch.Tensor | None = None) -> torch.Tensor:
        # packed (decoders only): no cache, so that attention reads the sequence boundaries from the position ids
        packed = {} if position_ids is None else {"position_ids": position_ids, "use_cache": False}
        logits = self.hf_model(input_ids=input_ids, attention_mask=attention_mask,
                               **packed).logits.float()  # (N, L, 2), or (1, T, 2) packed
        margin = logits[..., 1] - logits[..., 0]  # log-odds of "correct" at every token
        if steps:
            return margin[step_mask]  # (S,)
        if step_counts is None:
            return aggregate_steps(torch.sigmoid(margin), step_mask, self.aggregate)[:, None]  # (N, 1)
        # packed: each solution's steps back into a row of their own, then aggregated as when padded
        rows = torch.nn.utils.rnn.pad_sequence(torch.sigmoid(margin[step_mask]).split(step_counts.tolist()),
                                               batch_first=True)  # (N, K)
        mask = torch.arange(rows.shape[1], device=rows.device)[None] < step_counts.to(rows.device)[:, None]
        return aggregate_steps(rows, mask, self.aggregate)[:, None]  # (N, 1)

    @torch.inference_mode()
    def step_probabilities(self, **items: torch.Tensor) -> torch.Tensor:
        """P(step is correct) of every step of a collated batch, (S,) in row order."""
        return torch.sigmoid(self(**items, steps=True))


def load_token_classifier(name: str, *, dropout: float = -1.0, tokenizer=None):
    """``name`` (registry name, folder, hub id) as ``AutoModelForTokenClassification`` with the two step classes,
    and its tokenizer; a backbone's own head of another width is replaced by a fresh one."""
    from transformers import AutoConfig, AutoModelForTokenClassification

    path, extra = backbone_source(name)
    tokenizer = tokenizer if tokenizer is not None else load_tokenizer(name)
    kwargs = {"id2label": dict(STEP_LABELS), "label2id": {v: k for k, v in STEP_LABELS.items()}}  # 2 labels
    with readable_weights(path):
        if dropout >= 0:
            kwargs.update(dropout_overrides(AutoConfig.from_pretrained(path, **extra), dropout))
        model = dequantised(AutoModelForTokenClassification.from_pretrained(
            path, ignore_mismatched_sizes=True, **extra, **kwargs), extra)
    prepare_tokenizer(tokenizer, model)
    return model, tokenizer


# ----------------------------------------------------------------------------- the "prm" kind


def _processor(cfg: ExperimentConfig) -> StepItems:
    tokenizer = load_tokenizer(cfg.model.backbone)
    return StepItems(tokenizer, resolve_separator(tokenizer, cfg.model.step_separator), max_length=cfg.data.max_length,
                     max_prompt_tokens=cfg.data.max_prompt_tokens, packing=cfg.model.packing,
                     pad_to_multiple_of=cfg.train.pad_to_multiple_of)


def _build(cfg: ExperimentConfig, attributes: Sequence[str], processor: StepItems) -> ProcessRewardNet:
    if attributes:
        raise ValueError(f"model.kind=prm has one head (P(step is correct)); the data rates attributes {attributes}")
    hf_model, _ = load_token_classifier(cfg.model.backbone, dropout=cfg.model.dropout, tokenizer=processor.tokenizer)
    if cfg.model.packing:
        check_packable(hf_model, cfg.model.backbone)
    if cfg.model.gradient_checkpointing:
        hf_model.gradient_checkpointing_enable()
    if cfg.model.lora:  # PEFT trains the token classifier's head (classifier / score) in full beside the adapters
        hf_model = with_lora(hf_model, cfg.model, "TOKEN_CLS")
    return ProcessRewardNet(hf_model, aggregate=cfg.model.step_aggregate)


def _save(model: ProcessRewardNet, processor: StepItems, folder: Path, metadata: dict) -> None:
    hf = model.merged_model()
    limit = position_limit(hf.config, processor.tokenizer)
    metadata = {**metadata, "step_separator": processor.separator, "step_tag_id": processor.step_tag_id,
                "aggregate": model.aggregate, "encoding": {"max_length": processor.max_length,
                                                          "max_prompt_tokens": processor.max_prompt_tokens,
                                                          "inference_max_length": limit}}
    hf.config.step_separator, hf.config.step_tag_id = processor.separator, processor.step_tag_id
    hf.config.id2label, hf.config.label2id = dict(STEP_LABELS), {v: k for k, v in STEP_LABELS.items()}
    setattr(hf.config, CONFIG_KEY, metadata)
    hf.save_pretrained(folder, safe_serialization=True)
    save_tokenizer(processor.tokenizer, folder, limit)


def _load(path: str, device: torch.device, dtype: torch.dtype | None) -> tuple[ProcessRewardNet, StepItems, dict]:
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    hf = AutoModelForTokenClassification.from_pretrained(path, use_safetensors=True, dtype=dtype)
    if hf.config.num_labels != 2:
        raise ValueError(f"{path}: a process reward model has num_labels=2 (wrong, correct); this one has "
                         f"{hf.config.num_labels}")
    metadata = read_metadata(path) or dict(getattr(hf.config, CONFIG_KEY, None) or {})
    separator = resolve_separator(tokenizer, metadata.get("step_separator") or getattr(hf.config, "step_separator",
                                                                                        None) or "auto")
    prepare_tokenizer(tokenizer, hf)
    limit = metadata.get("encoding", {}).get("inference_max_length") or position_limit(hf.config, tokenizer)
    processor = StepItems(tokenizer, separator, max_length=limit, max_prompt_tokens=limit // 2 if limit else None)
    model = ProcessRewardNet(hf, aggregate=metadata.get("aggregate", "min")).to(device).eval()
    return model, processor, {**metadata, "kind": PRM_NAME}  # a folder TRL wrote has no rewardlab block


PRM_KIND = ModelKind(name=PRM_NAME, processor=_processor, build=_build, save=_save, load=_load,
                     help="Process reward model: a token classifier read at each step's separator, P(step is "
                          "correct) per step; saved as a plain AutoModelForTokenClassification folder.",
                     member_heads=False)
