"""Typed configuration: one frozen dataclass per concern, loaded from YAML plus overrides.

Every option is documented once, in its field's ``help`` metadata; the CLI prints
these strings (``rewardlab train --help-config``). ``__post_init__`` rejects bad
values naming the field and the value.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


def option(default: Any, help: str, **kwargs: Any) -> Any:
    """A config field with its default and its help (the one place an option is documented)."""
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help}, **kwargs)
    return field(default=default, metadata={"help": help}, **kwargs)


def check_types(cfg: Any, section: str = "") -> None:
    """Raise naming the option where a field does not hold its annotated type (a config built in Python; YAML and
    ``--set`` values are coerced before). An int is a float here; a bool is neither.

    Example:
        >>> @dataclass(frozen=True)
        ... class Demo:
        ...     steps: int = 1
        ...     lr: float | None = None
        >>> check_types(Demo(steps=3, lr=1), "train")
        >>> check_types(Demo(steps="8"), "train")
        Traceback (most recent call last):
        ValueError: train.steps='8' should be of type int
    """
    for name, hint in _hints(type(cfg)).items():
        value = getattr(cfg, name)
        if not _holds(value, hint):
            shown = " or ".join(getattr(a, "__name__", str(a)) for a in typing.get_args(hint) if a is not type(None)) \
                if typing.get_origin(hint) in (typing.Union, types.UnionType) else getattr(hint, "__name__", str(hint))
            raise ValueError(f"{section + '.' if section else ''}{name}={value!r} should be of type {shown}")


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _holds(value: Any, hint: Any) -> bool:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_holds(value, a) for a in typing.get_args(hint))
    target = origin or hint
    if target is type(None):
        return value is None
    if target in (int, float):
        return isinstance(value, int if target is int else (int, float)) and not isinstance(value, bool)
    if target is list:
        return isinstance(value, (list, tuple))
    return isinstance(value, target) if isinstance(target, type) else True


def _choice(name: str, value: Any, choices: typing.Iterable[Any]) -> None:
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not valid; choose one of {', '.join(map(str, choices))}")


def positive(name: str, value: float, *, allow_zero: bool = False) -> None:
    """Raise naming the option unless ``value`` is finite and > 0 (>= 0 with ``allow_zero``)."""
    ok = value >= 0 if allow_zero else value > 0
    if not ok or (isinstance(value, float) and not math.isfinite(value)):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name}={value!r} must be {bound}")


@dataclass(frozen=True, kw_only=True)
class DataConfig:
    train: str = option("default", "Training data: a .jsonl/.json/.csv/.parquet file (optionally .gz), "
                      "'hf:NAME' for a Hugging Face dataset, or 'default' for the embedded data set.")
    eval: str | None = option(None, "Held-out data in the same forms as `train`; when unset, a split of `train` is used.")
    format: str = option("auto", "Row format: auto, pairs, implicit_prompt, chat, rankings, ratings, ab (prompt, "
                       "response_a, response_b, winner a / b / tie; or Chatbot Arena's columns) or item_ratings "
                       "(one row per response with a rating column per attribute; rows of a prompt form pairs).")
    columns: dict = option({}, "Column mapping {our_name: your_column}, e.g. {prompt: question, chosen: good}.")
    hf_split: str = option("train", "Split to read for 'hf:' sources.")
    min_rating_diff: float = option(1.0, "Ratings formats: a pair is formed only where two scores differ by at least this.")
    attributes: list = option([], "item_ratings format: the rating columns, one reward head each (e.g. [helpfulness, "
                            "correctness]). Empty: every numeric column that is not a known field.")
    rating_range: list = option([], "Ratings formats: [low, high]; a rating outside it is an error. Empty: any finite number.")
    aggregate_pairs: bool = option(True, "item_ratings format: also form overall pairs from the mean rating of rows "
                                 "rated on every attribute; they train the aggregate.")
    winner_codes: dict = option({}, "ab format: what integer winners mean, e.g. {0: a, 1: b, 2: tie}; integer "
                              "winners are an error without it (the codes differ between data sets).")
    eval_fraction: float = option(0.2, "Fraction of groups held out when `eval` is unset.")
    split_by: str = option("prompt", "Field that groups examples for the split (prompt, group, labeler, ...; "
                         "'pair' splits by example). No group appears on both sides.")
    stratify: bool = option(False, "Train/eval split keeps the proportions of outcomes (A / B / tie; 'a' for plain "
                          "pairs) on both sides, still never splitting a group (scikit-learn StratifiedGroupKFold).")
    folds: int = option(1, "Cross-validation folds over `train` (split by `split_by`, stratified with `stratify`); "
                      "1 = a single train/eval split.")
    seed: int = option(0, "Seed of the train/eval split.")
    on_bad_row: str = option("error", "What to do with an invalid row: 'error' stops naming file, row and field; "
                           "'skip' drops it and reports how many and why.")
    max_examples: int | None = option(None, "Read at most this many rows per source (for quick runs).")
    max_length: int = option(256, "Maximum tokens per (prompt, response) sequence; longer ones are truncated and counted.")
    max_prompt_tokens: int | None = option(None, "When a sequence is too long, the prompt keeps at most this many "
                                         "tokens (default: half of max_length).")
    prompt_truncation: str = option("left", "Which side of a long prompt is cut: 'left' keeps its end.")
    response_truncation: str = option("right", "Which side of a long response is cut: 'right' keeps its start.")
    pair_encoding: str = option("auto", "How a prompt and a response make one sequence: concat (one segment, prompt + "
                              "response as written, as TRL's RewardTrainer builds it), text_pair (two segments, the "
                              "response with its own token type) or auto, the model kind's choice: concat for "
                              "model.kind=text (the better one for MiniLM on HH-RLHF and LLMFAO, README, Length bias), "
                              "text_pair for a cross-encoder whose tokenizer has a separator token.")
    concat_separator: str = option("\n", "pair_encoding=concat: put between prompt and response when neither has "
                                 "whitespace at the joint ('Why?' + 'Because.' → 'Why?\\nBecause.').")
    assistant_marker: str = option("\n\nAssistant:", "implicit_prompt format: the marker that opens the final response.")

    def __post_init__(self) -> None:
        check_types(self, "data")
        _choice("data.format", self.format, ("auto", "pairs", "implicit_prompt", "chat", "rankings", "ratings", "ab",
                                             "item_ratings"))
        if self.rating_range and (len(self.rating_range) != 2 or not all(
                isinstance(x, (int, float)) for x in self.rating_range) or self.rating_range[0] >= self.rating_range[1]):
            raise ValueError(f"data.rating_range={self.rating_range!r} must be [low, high] with low < high")
        _choice("data.on_bad_row", self.on_bad_row, ("error", "skip"))
        _choice("data.prompt_truncation", self.prompt_truncation, ("left", "right"))
        _choice("data.response_truncation", self.response_truncation, ("left", "right"))
        _choice("data.pair_encoding", self.pair_encoding, ("auto", "text_pair", "concat"))
        positive("data.min_rating_diff", self.min_rating_diff, allow_zero=True)
        if not 0.0 <= self.eval_fraction < 1.0:
            raise ValueError(f"data.eval_fraction={self.eval_fraction!r} must be in [0, 1)")
        positive("data.max_length", self.max_length)
        for code, outcome in self.winner_codes.items():
            if isinstance(code, bool) or not str(code).strip().lstrip("+-").isdigit():
                raise ValueError(f"data.winner_codes: key {code!r} must be an integer code, "
                                 "e.g. {0: a, 1: b, 2: tie}")
            _choice(f"data.winner_codes[{code}]", outcome, ("a", "b", "tie"))
        if isinstance(self.folds, bool) or not isinstance(self.folds, int) or self.folds < 1:
            raise ValueError(f"data.folds={self.folds!r} must be a whole number >= 1 (1 = no cross-validation)")
        if self.max_prompt_tokens is not None and not 0 <= self.max_prompt_tokens < self.max_length:
            raise ValueError(f"data.max_prompt_tokens={self.max_prompt_tokens!r} must be in [0, max_length)")
        if self.max_examples is not None:
            positive("data.max_examples", self.max_examples)


JUDGE_PLACEHOLDERS = ("{prompt}", "{response_a}", "{response_b}")
JUDGE_TEMPLATE = ("Please act as an impartial judge and evaluate the two responses to the user prompt below. "
                  "Which response is better?\n\n[User prompt]\n{prompt}\n\n[Response A]\n{response_a}\n\n"
                  "[Response B]\n{response_b}\n\nAnswer with one letter: A if response A is better, B if response B "
                  "is better, or C for a tie.")


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    kind: str = option("text", "Model kind (see `rewardlab kinds`): text (a text reward model) or multimodal "
                     "(text prompt + image; settings in the multimodal section).")
    aggregate: str = option("mean", "With several attribute heads, the overall reward: mean, weighted "
                          "(model.aggregate_weights), learned (softmax weights trained by overall pairs) or, for "
                          "model.kind=multimodal, gate (per-item softmax weights computed from the fused features).")
    aggregate_weights: dict = option({}, "aggregate=weighted: {attribute: weight}; unnamed attributes weigh 0.")
    backbone: str = option("minilm", "Backbone: a registry name (see `rewardlab backbones`), a local folder, "
                         "or a Hugging Face hub id; it must load as AutoModelForSequenceClassification. "
                         "model.kind=judge: a causal LM (folder, hub id, .gguf file, or smollm2 for the offline "
                         "SmolLM2-135M-Instruct, which also stands in for the default minilm, an encoder). "
                         "model.kind=multimodal: dual (EfficientNet-Lite0 + MiniLM, offline), a CLIPModel or "
                         "SiglipModel folder or hub id, or open_clip:MODEL[:PRETRAINED].")
    lora: bool = option(False, "Train LoRA adapters (PEFT) instead of the full backbone; the head is always trained. "
                      "model.kind=multimodal: adapters on the towers (needs multimodal.freeze_towers=false).")
    lora_r: int = option(8, "LoRA rank.")
    lora_alpha: int = option(16, "LoRA scaling alpha.")
    lora_dropout: float = option(0.05, "LoRA dropout.")
    lora_target_modules: list = option([], "Modules to adapt; empty lets PEFT choose for known architectures.")
    dropout: float = option(0.0, "Text and cross-encoder backbones: every dropout probability of the backbone's "
                          "config (hidden, attention, classifier) set to this in training; -1 keeps the checkpoint's "
                          "own. Off by default, as TRL's disable_dropout: with MiniLM it gained held-out accuracy on "
                          "HH-RLHF (three seeds) and LLMFAO, and trained 1.7x faster on CPU (README, Length bias).")
    gradient_checkpointing: bool = option(False, "Trade compute for memory in the backbone.")
    packing: bool = option(False, "Padding-free training for decoders whose attention takes per-sequence position ids "
                         "(Llama, Qwen2, Mistral, Gemma, Phi-3 class): a batch's sequences are concatenated without "
                         "padding and each reward is read at its own last token.")
    quantize_4bit: bool = option(False, "QLoRA: load the backbone in 4 bits (bitsandbytes NF4) and train LoRA adapters "
                               "on it (needs model.lora=true, a CUDA GPU and bitsandbytes); model.kind=judge.")
    personalization: str = option("none", "Per-labeler rewards from the data's labeler column: none; tokens (a "
                                "trainable <user:ID> token in front of the text); embedding (a learned user vector "
                                "FiLM-conditions the features of the reward layer); lowrank (each user's reward adds "
                                "a user mix of personal_rank shared reward directions). A population reward is learned "
                                "too and scores unknown labelers.")
    min_labeler_pairs: int = option(5, "personalization: labelers with fewer training pairs get no parameters of their "
                                  "own; their data trains the population reward.")
    labeler_dropout: float = option(0.2, "personalization: share of training items scored as the population (no "
                                  "labeler), so the population reward learns from everyone.")
    personal_rank: int = option(4, "personalization=lowrank: number of shared reward directions.")
    judge_template: str = option(JUDGE_TEMPLATE, "model.kind=judge: the judge's instruction, with the placeholders "
                               "{prompt}, {response_a} and {response_b}; it is sent as a user turn through the chat "
                               "template and the judge answers with one token: A, B or C (tie).")

    def __post_init__(self) -> None:
        check_types(self, "model")
        _choice("model.aggregate", self.aggregate, ("mean", "weighted", "learned", "gate"))
        from rewardlab.models.base import list_kinds  # late import: models import torch

        _choice("model.kind", self.kind, list_kinds())
        if not self.backbone.strip():
            raise ValueError("model.backbone is empty: name a registry backbone (rewardlab backbones), a folder or a "
                             "hub id")
        positive("model.lora_r", self.lora_r)
        positive("model.lora_alpha", self.lora_alpha)
        if not (self.dropout == -1.0 or 0.0 <= self.dropout < 1.0):
            raise ValueError(f"model.dropout={self.dropout!r} must be in [0, 1), or -1 to keep the backbone's own")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ValueError(f"model.lora_dropout={self.lora_dropout!r} must be in [0, 1)")
        _choice("model.personalization", self.personalization, ("none", "tokens", "embedding", "lowrank"))
        positive("model.min_labeler_pairs", self.min_labeler_pairs)
        positive("model.personal_rank", self.personal_rank)
        if not 0.0 <= self.labeler_dropout < 1.0:
            raise ValueError(f"model.labeler_dropout={self.labeler_dropout!r} must be in [0, 1)")
        if self.quantize_4bit and not self.lora:
            raise ValueError("model.quantize_4bit=true trains LoRA adapters on a 4-bit backbone: set model.lora=true")
        missing = [p for p in JUDGE_PLACEHOLDERS if p not in self.judge_template]
        if missing:
            raise ValueError(f"model.judge_template lacks the placeholder(s) {', '.join(missing)}; it must contain "
                             f"{', '.join(JUDGE_PLACEHOLDERS)}")


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    output_dir: str = option("runs/rewardlab", "Where the model, metrics, logs and resume states go.")
    epochs: float = option(1.0, "Passes over the training data (fractions allowed).")
    max_steps: int | None = option(None, "Stop after this many optimiser steps (overrides `epochs` when set).")
    batch_size: int = option(16, "Comparisons per process per micro-batch (a ranking of K counts once); with "
                           "max_tokens_per_batch, the most a micro-batch may hold.")
    max_tokens_per_batch: int | None = option(None, "Token budget of a micro-batch: as many comparisons as fit in this "
                                            "many padded tokens (items x longest item; an image item counts its "
                                            "image's tokens too), so peak memory is bounded by the budget, not by the "
                                            "longest examples. The loss is still the mean over the pairs of each "
                                            "optimiser step.")
    eval_batch_size: int = option(64, "Sequences per forward pass when evaluating.")
    grad_accum: int = option(1, "Micro-batches per optimiser step.")
    lr_backbone: float = option(2e-5, "Learning rate of the backbone (or its LoRA adapters).")
    lr_head: float | None = option(None, "Learning rate of the heads (everything outside the backbone but fusion); "
                                 "unset: 10 x lr_backbone, the better ratio for MiniLM on HH-RLHF (README, Length "
                                 "bias).")
    layer_decay: float = option(1.0, "Layer-wise learning-rate decay of the backbone (ELECTRA, BEiT): its top block "
                              "trains at lr_backbone, each block below at this factor times the one above, the "
                              "embeddings below the lowest; 1 = one rate for the whole backbone.")
    lr_fusion: float = option(3e-4, "model.kind=multimodal: learning rate of the fusion layers (trained from scratch).")
    lr_outcome: float = option(0.02, "Tie-aware losses (rao_kupper, davidson): learning rate of the tie parameter "
                             "(one scalar, no weight decay).")
    mixup_alpha: float = option(0.0, "Mixup for preference pairs (0 = off): each pair (a over b) adds mixed items "
                              "λa+(1-λ)b and λb+(1-λ)a, λ ~ Beta(alpha, alpha), judged with soft label λ. Needs items "
                              "that can be mixed (model.kind=multimodal), not token ids.")
    weight_decay: float = option(0.01, "AdamW weight decay (not applied to biases and norms).")
    warmup_ratio: float = option(0.1, "Fraction of steps spent warming the learning rate up from 0.")
    schedule: str = option("linear", "Decay after warm-up: linear, cosine or constant. Linear (as transformers and TRL "
                           "default to) beat cosine on HH-RLHF by 0.011 over five seeds (README, #16).")
    max_grad_norm: float = option(1.0, "Clip the gradient norm to this; 0 disables clipping.")
    loss: str = option("bradley_terry", "Pairwise loss: see `rewardlab losses` for the names.")
    margin_scale: float = option(1.0, "bt_margin loss: multiplier on the rating gap used as margin.")
    label_smoothing: float = option(0.1, "label_smoothing loss: probability mass given to the other order.")
    focal_gamma: float = option(2.0, "focal loss: focusing exponent.")
    contrastive_temperature: float = option(1.0, "contrastive loss: temperature dividing the rewards.")
    contrastive_negatives: str = option("batch", "contrastive loss: batch (each preferred item also meets every item "
                                      "rejected in the batch's other comparisons) or comparison (only the items it "
                                      "beats in its own; Bradley-Terry on plain pairs).")
    center_rewards: float = option(0.0, "Weight of a penalty on mean squared reward, keeping rewards centred at 0.")
    balance: str = option("none", "Reweight training pairs so groups contribute equally to the loss: none, attribute "
                        "(each reward head), or attribute_gap (each head x rating-gap bin: small, medium, large).")
    debias: list = option([], "Nuisance features the reward must not follow, e.g. [length]: a disentangled reward (after "
                        "ODIN, Chen et al. 2024). Beside the reward sits a nuisance reward that reads the feature "
                        "alone (a weight per unit of log length, started at a length-only fit of the training pairs); "
                        "the loss sees their sum, and the reward's margins are kept from following the feature "
                        "(train.debias_weight). Evaluation, scoring, serving and the saved model use the reward "
                        "without the nuisance part.")
    debias_weight: float = option(1.0, "debias: weight of the penalty on the reward's slope of margins on log-length "
                                "gaps over each batch's pairs.")
    length_penalty: float = option(0.0, "A length-regularised loss: this weight times the squared slope, over each batch's "
                                 "pairs, of reward margins on log-length gaps (reward per unit of log length; 0 = off).")
    length_matched: bool = option(False, "Length-matched sampling: each batch holds as many pairs the longer "
                                "response won as pairs the shorter one won: each epoch draws equally many of both "
                                "(the smaller group cycled, the larger subsampled afresh each epoch), so an epoch "
                                "keeps its size; pairs of equal length fill in proportionally. On HH-RLHF it raised "
                                "MiniLM's held-out accuracy in bench/length_bias.py's settings and lowered it in "
                                "bench/compare_trl.py's (README, Length bias), so it is off by default.")
    ensemble_size: int = option(1, "Train this many members (seeds seed, seed+1, ...) and save them as one ensemble "
                              "checkpoint: scores are their mean, their spread is the uncertainty. 1 = one model.")
    ensemble_bootstrap: bool = option(False, "ensemble_size > 1: each member trains on its own bootstrap resample "
                                    "(drawn with replacement) of the training comparisons.")
    ensemble_shared_backbone: bool = option(False, "ensemble_size > 1: the members are heads over one shared backbone "
                                          "(one forward pass scores them all; about the cost of one model, less "
                                          "diverse members) instead of separate models (not for "
                                          "model.kind=judge). With ensemble_bootstrap each head weighs each pair by "
                                          "its own Poisson(1) draw.")
    ema_decay: float = option(0.0, "Keep an exponential moving average of weights with this decay (0 = off); "
                            "evaluation and the saved model use it.")
    eval_every: int = option(0, "Evaluate every N optimiser steps (0 = once per epoch).")
    save_every: int = option(0, "Save a resume state every N steps (0 = at each evaluation).")
    save_total_limit: int = option(2, "Resume states kept on disk (oldest removed first).")
    save_model: bool = option(True, "Write the final model to <output_dir>/model; false keeps only the config, "
                            "metrics and history (e.g. for hyperparameter-search trials, to save disk).")
    metric_for_best: str = option("accuracy", "Validation metric that selects the best model (higher is better, "
                                "except loss-like metrics).")
    early_stopping_patience: int = option(0, "Stop after this many evaluations without improvement (0 = never).")
    mixed_precision: str = option("auto", "no, fp16, bf16 or auto: on a GPU with bf16, time a few fp32 and bf16 steps "
                                "of the first batch and keep the faster (small backbones can be slower in bf16); "
                                "fp32 elsewhere. The choice is printed and kept in metrics.json.")
    compile: bool = option(False, "torch.compile the model (inductor, dynamic shapes: new batch lengths do not "
                         "recompile each time). The first steps pay the compilation; off by default (see the README "
                         "for where it was measured faster). Needs a C++ compiler on CPU.")
    liger_kernel: bool = option(False, "Liger's fused Triton kernels (RMSNorm, RoPE, SwiGLU) in the backbone, for the "
                              "architectures Liger supports (Llama, Qwen2, Mistral, Gemma, ...); CUDA only, needs "
                              "pip install liger-kernel. Off by default: not yet measured faster here.")
    fsdp: bool = option(False, "Shard parameters, gradients and optimiser state over the processes (FSDP2, torch's "
                      "fully_shard: one unit per transformer block): for models too large to replicate. Needs several "
                      "processes (accelerate launch); resume states are then one slice per process, resumed with as "
                      "many processes. On CPU too (gloo).")
    group_by_length: bool = option(True, "Batch comparisons of similar length together to cut padding.")
    seed: int = option(0, "Seed for initialisation, shuffling and dropout.")
    log_with: list = option(["tensorboard"], "Accelerate trackers: tensorboard, wandb, mlflow (installed ones only).")
    progress: bool = option(True, "Show progress bars.")
    num_workers: int = option(0, "DataLoader worker processes.")

    def __post_init__(self) -> None:
        check_types(self, "train")
        positive("train.epochs", self.epochs)
        if self.max_steps is not None:
            positive("train.max_steps", self.max_steps)
        if self.max_tokens_per_batch is not None:
            positive("train.max_tokens_per_batch", self.max_tokens_per_batch)
        for name in ("batch_size", "eval_batch_size", "grad_accum", "save_total_limit", "ensemble_size"):
            positive(f"train.{name}", getattr(self, name))
        for name in ("lr_backbone", "lr_fusion", "lr_outcome"):
            positive(f"train.{name}", getattr(self, name))
        if self.lr_head is not None:
            positive("train.lr_head", self.lr_head)
        positive("train.mixup_alpha", self.mixup_alpha, allow_zero=True)
        for name in ("weight_decay", "max_grad_norm", "center_rewards", "margin_scale", "eval_every",
                     "save_every", "early_stopping_patience", "num_workers", "focal_gamma"):
            positive(f"train.{name}", getattr(self, name), allow_zero=True)
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ValueError(f"train.warmup_ratio={self.warmup_ratio!r} must be in [0, 1)")
        positive("train.contrastive_temperature", self.contrastive_temperature)
        _choice("train.contrastive_negatives", self.contrastive_negatives, ("batch", "comparison"))
        if not 0.0 <= self.label_smoothing < 0.5:
            raise ValueError(f"train.label_smoothing={self.label_smoothing!r} must be in [0, 0.5)")
        if not 0.0 < self.layer_decay <= 1.0:
            raise ValueError(f"train.layer_decay={self.layer_decay!r} must be in (0, 1]")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"train.ema_decay={self.ema_decay!r} must be in [0, 1)")
        _choice("train.schedule", self.schedule, ("cosine", "linear", "constant"))
        _choice("train.balance", self.balance, ("none", "attribute", "attribute_gap"))
        from rewardlab.data.nuisance import feature_index

        try:
            feature_index(self.debias)
        except ValueError as err:
            raise ValueError(f"train.debias={self.debias!r}: {err}") from None
        for name in ("debias_weight", "length_penalty"):
            positive(f"train.{name}", getattr(self, name), allow_zero=True)
        if self.length_matched and self.max_tokens_per_batch is not None:
            raise ValueError("train.length_matched=true draws fixed-size batches: unset train.max_tokens_per_batch")
        _choice("train.mixed_precision", self.mixed_precision, ("auto", "no", "fp16", "bf16"))
        if self.fsdp and self.compile:
            raise ValueError("train.fsdp=true with train.compile=true is not supported: set one of them to false")
        from rewardlab.losses import loss_names  # late import: losses imports torch

        _choice("train.loss", self.loss, loss_names())

    @property
    def head_lr(self) -> float:
        """``lr_head``, or 10 x ``lr_backbone`` when it is unset."""
        return self.lr_head if self.lr_head is not None else 10 * self.lr_backbone


@dataclass(frozen=True, kw_only=True)
class MultimodalConfig:
    fusion: str = option("attention", "How image and text meet: attention (cross-attention both ways, then "
                       "self-attention over the joint tokens, gated with the pooled path; sees where things are) or "
                       "concat (pooled image, pooled text, their product and cosine; cheaper).")
    hidden: int = option(256, "Width of the fusion layers and heads.")
    layers: int = option(2, "fusion=attention: self-attention layers over the joint image and text tokens.")
    attention_heads: int = option(4, "fusion=attention: attention heads (must divide hidden).")
    dropout: float = option(0.1, "Dropout in the fusion layers and heads.")
    token_pool: int = option(1, "fusion=attention: average the image tokens of each scale in k x k windows before "
                           "fusion (CLS-like tokens kept). 2 turns EfficientNet-Lite0's 7x7 grid into 4x4 tokens: "
                           "fusion costs about 2.5x less per item, spatial detail is coarser.")
    head_layers: int = option(2, "Residual MLP blocks in the reward heads (0: a linear head).")
    freeze_towers: bool = option(True, "Keep the image and text towers frozen (only fusion and heads learn; tower "
                               "outputs can be cached). false: fine-tune them, fully or with LoRA (model.lora).")
    cache: bool = option(True, "With frozen towers, compute tower outputs once and keep them on disk (cache_dir), so "
                       "training epochs never run the towers.")
    cache_dir: str | None = option(None, "Embedding cache folder (default: $XDG_CACHE_HOME/rewardlab/embeddings, "
                                 "~/.cache/... when unset); entries are keyed by image content, backbone weights and "
                                 "preprocessing, so one folder serves every run.")
    image_size: int | None = option(None, "Input size of the image tower (default: the tower's own, e.g. 224); images "
                                  "are resized on the shorter side and centre-cropped.")
    scales: list = option([], "Several input sizes, e.g. [128, 224]: the tower sees each, and their tokens are "
                        "concatenated (overrides image_size). Empty: image_size only.")
    augment: list = option([], "Training augmentations: any of hflip, rotate, crop, color (never hue). hflip swaps "
                         "left and right: leave it out when prompts name horizontal positions. Evaluation and "
                         "scoring never augment.")
    augment_views: int = option(4, "augment with the cache: augmented views cached per image (computed once); each "
                              "training batch picks one of them or the clean image at random.")
    text_blind: bool = option(False, "Replace every prompt with the empty text: a control that shows how much of the "
                            "model's accuracy needs the prompt.")
    tower_batch_size: int = option(32, "Images per tower pass when filling the cache.")

    def __post_init__(self) -> None:
        check_types(self, "multimodal")
        _choice("multimodal.fusion", self.fusion, ("attention", "concat"))
        for name in ("hidden", "attention_heads", "tower_batch_size", "token_pool"):
            positive(f"multimodal.{name}", getattr(self, name))
        for name in ("layers", "head_layers", "augment_views"):
            positive(f"multimodal.{name}", getattr(self, name), allow_zero=True)
        if self.hidden % self.attention_heads:
            raise ValueError(f"multimodal.attention_heads={self.attention_heads} must divide "
                             f"multimodal.hidden={self.hidden}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"multimodal.dropout={self.dropout!r} must be in [0, 1)")
        for size in ([self.image_size] if self.image_size is not None else []) + list(self.scales):
            if not isinstance(size, int) or isinstance(size, bool) or not 16 <= size <= 4096:
                raise ValueError(f"multimodal image sizes must be whole numbers of pixels in [16, 4096], got {size!r} "
                                 "(multimodal.image_size / multimodal.scales)")
        for name in self.augment:
            _choice("multimodal.augment", name, ("hflip", "rotate", "crop", "color"))
        if self.augment and self.cache and self.freeze_towers and self.augment_views < 1:
            raise ValueError("multimodal.augment with multimodal.cache needs multimodal.augment_views >= 1 (augmented "
                             "views are cached per image); or set multimodal.cache=false to augment afresh every step")


@dataclass(frozen=True, kw_only=True)
class ExperimentConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    multimodal: MultimodalConfig = field(default_factory=MultimodalConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        check_types(self)
        multimodal = self.model.kind == "multimodal"
        if self.model.aggregate == "gate" and not multimodal:
            raise ValueError(f"model.aggregate=gate needs model.kind=multimodal (got {self.model.kind!r}); "
                             "choose mean, weighted or learned")
        if multimodal and self.model.personalization == "tokens" and self.multimodal.freeze_towers:
            raise ValueError("model.personalization=tokens puts a trainable token in front of the text tower's input: "
                             "set multimodal.freeze_towers=false (full or LoRA towers), or use embedding or lowrank, "
                             "which work with frozen, cached towers")
        if multimodal and self.model.lora and self.multimodal.freeze_towers:
            raise ValueError("model.lora=true trains adapters on the towers: set multimodal.freeze_towers=false")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------- loading


class _Yaml12Loader(yaml.SafeLoader):
    """YAML 1.2 booleans: only true/false are booleans, so ``no``/``yes``/``on``/``off`` stay text."""


_Yaml12Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
for _first in "tTfF":
    _Yaml12Loader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(
        r"^(?:true|True|TRUE|false|False|FALSE)$"), list(_first))


def parse_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_Yaml12Loader)


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """Coerce a YAML value to a field's annotated type, or raise naming the field."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            return None
        return _coerce(value, args[0], where)
    target = origin or hint
    if target is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
    elif target in (int, float) and not isinstance(value, bool):
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, (int, float)) and (target is float or float(value).is_integer()):
            return target(value)
    elif target is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
    elif target is list:
        if isinstance(value, (list, tuple)):
            return list(value)
        if isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
    elif target is dict:
        if isinstance(value, dict):
            return dict(value)
    raise ValueError(f"{where}={value!r} should be of type {getattr(target, '__name__', target)}")


def from_dict(cls: type, values: dict, prefix: str = "") -> Any:
    """Build a config dataclass from a (nested) dict, rejecting unknown keys by name."""
    if not isinstance(values, dict):
        raise ValueError(f"config section {prefix.rstrip('.') or '<root>'} must be a mapping, got {values!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"unknown config key {prefix}{unknown[0]}; valid keys here: {', '.join(sorted(names))}")
    kwargs = {}
    for name, value in values.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            kwargs[name] = from_dict(hint, value or {}, f"{prefix}{name}.")
        else:
            kwargs[name] = _coerce(value, hint, f"{prefix}{name}")
    return cls(**kwargs)


def apply_overrides(values: dict, overrides: typing.Sequence[str]) -> dict:
    """Apply ``section.key=value`` overrides (values parsed as YAML) to a nested dict."""
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in values.items()}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"override {item!r} must look like section.key=value, e.g. train.epochs=2")
        *path, leaf = key.strip().split(".")
        node = out
        for part in path:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"override {item!r}: {part!r} is not a section")
        node[leaf] = parse_yaml(raw) if raw.strip() else ""
    return out


def load_config(path: str | Path | None = None, overrides: typing.Sequence[str] = ()) -> ExperimentConfig:
    """Load an :class:`ExperimentConfig` from a YAML file (or defaults) plus ``key=value`` overrides."""
    values: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"config file {path} does not exist")
        try:
            values = parse_yaml(path.read_text()) or {}
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
            problem = getattr(err, "problem", None) or str(err).splitlines()[0]
            raise ValueError(f"config file {where}: not valid YAML: {problem}") from None
    return from_dict(ExperimentConfig, apply_overrides(values, overrides))


def describe(cls: type = ExperimentConfig, prefix: str = "") -> list[tuple[str, Any, str]]:
    """(dotted name, default, help) for every option, for CLI help and docs."""
    rows = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            rows.extend(describe(hints[f.name], f"{prefix}{f.name}."))
        else:
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            rows.append((prefix + f.name, default, f.metadata.get("help", "")))
    return rows
