"""Typed configuration: one frozen dataclass per concern, loaded from YAML plus overrides.

Every option is documented once, in its field's ``help`` metadata; the CLI prints
these strings (``rewardlab train --help-config``). ``__post_init__`` rejects bad
values naming the field and the value.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


def _opt(default: Any, help: str, **kwargs: Any) -> Any:
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help}, **kwargs)
    return field(default=default, metadata={"help": help}, **kwargs)


def _choice(name: str, value: Any, choices: typing.Iterable[Any]) -> None:
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not valid; choose one of {', '.join(map(str, choices))}")


def _positive(name: str, value: float, *, allow_zero: bool = False) -> None:
    ok = value >= 0 if allow_zero else value > 0
    if not ok or (isinstance(value, float) and not math.isfinite(value)):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name}={value!r} must be {bound}")


@dataclass(frozen=True, kw_only=True)
class DataConfig:
    train: str = _opt("default", "Training data: a .jsonl/.json/.csv/.parquet file (optionally .gz), "
                      "'hf:NAME' for a Hugging Face dataset, or 'default' for the embedded data set.")
    eval: str | None = _opt(None, "Held-out data in the same forms as `train`; when unset, a split of `train` is used.")
    format: str = _opt("auto", "Row format: auto, pairs, implicit_prompt, chat, rankings, ratings or item_ratings "
                       "(one row per response with a rating column per attribute; rows of a prompt form pairs).")
    columns: dict = _opt({}, "Column mapping {our_name: your_column}, e.g. {prompt: question, chosen: good}.")
    hf_split: str = _opt("train", "Split to read for 'hf:' sources.")
    min_rating_diff: float = _opt(1.0, "Ratings formats: a pair is formed only where two scores differ by at least this.")
    attributes: list = _opt([], "item_ratings format: the rating columns, one reward head each (e.g. [helpfulness, "
                            "correctness]). Empty: every numeric column that is not a known field.")
    rating_range: list = _opt([], "Ratings formats: [low, high]; a rating outside it is an error. Empty: any finite number.")
    aggregate_pairs: bool = _opt(True, "item_ratings format: also form overall pairs from the mean rating of rows "
                                 "rated on every attribute; they train the aggregate.")
    eval_fraction: float = _opt(0.2, "Fraction of groups held out when `eval` is unset.")
    split_by: str = _opt("prompt", "Field that groups examples for the split (prompt, group, labeler, ...; "
                         "'pair' splits by example). No group appears on both sides.")
    seed: int = _opt(0, "Seed of the train/eval split.")
    on_bad_row: str = _opt("error", "What to do with an invalid row: 'error' stops naming file, row and field; "
                           "'skip' drops it and reports how many and why.")
    max_examples: int | None = _opt(None, "Read at most this many rows per source (for quick runs).")
    max_length: int = _opt(256, "Maximum tokens per (prompt, response) sequence; longer ones are truncated and counted.")
    max_prompt_tokens: int | None = _opt(None, "When a sequence is too long, the prompt keeps at most this many "
                                         "tokens (default: half of max_length).")
    prompt_truncation: str = _opt("left", "Which side of a long prompt is cut: 'left' keeps its end.")
    response_truncation: str = _opt("right", "Which side of a long response is cut: 'right' keeps its start.")
    assistant_marker: str = _opt("\n\nAssistant:", "implicit_prompt format: the marker that opens the final response.")

    def __post_init__(self) -> None:
        _choice("data.format", self.format, ("auto", "pairs", "implicit_prompt", "chat", "rankings", "ratings",
                                             "item_ratings"))
        if self.rating_range and (len(self.rating_range) != 2 or not all(
                isinstance(x, (int, float)) for x in self.rating_range) or self.rating_range[0] >= self.rating_range[1]):
            raise ValueError(f"data.rating_range={self.rating_range!r} must be [low, high] with low < high")
        _choice("data.on_bad_row", self.on_bad_row, ("error", "skip"))
        _choice("data.prompt_truncation", self.prompt_truncation, ("left", "right"))
        _choice("data.response_truncation", self.response_truncation, ("left", "right"))
        _positive("data.min_rating_diff", self.min_rating_diff, allow_zero=True)
        if not 0.0 <= self.eval_fraction < 1.0:
            raise ValueError(f"data.eval_fraction={self.eval_fraction!r} must be in [0, 1)")
        _positive("data.max_length", self.max_length)
        if self.max_prompt_tokens is not None and not 0 <= self.max_prompt_tokens < self.max_length:
            raise ValueError(f"data.max_prompt_tokens={self.max_prompt_tokens!r} must be in [0, max_length)")
        if self.max_examples is not None:
            _positive("data.max_examples", self.max_examples)


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    kind: str = _opt("text", "Model kind (see `rewardlab kinds`): text.")
    aggregate: str = _opt("mean", "With several attribute heads, the overall reward: mean, weighted "
                          "(model.aggregate_weights) or learned (softmax weights trained by overall pairs).")
    aggregate_weights: dict = _opt({}, "aggregate=weighted: {attribute: weight}; unnamed attributes weigh 0.")
    backbone: str = _opt("minilm", "Backbone: a registry name (see `rewardlab backbones`), a local folder, "
                         "or a Hugging Face hub id; it must load as AutoModelForSequenceClassification.")
    lora: bool = _opt(False, "Train LoRA adapters (PEFT) instead of the full backbone; the head is always trained.")
    lora_r: int = _opt(8, "LoRA rank.")
    lora_alpha: int = _opt(16, "LoRA scaling alpha.")
    lora_dropout: float = _opt(0.05, "LoRA dropout.")
    lora_target_modules: list = _opt([], "Modules to adapt; empty lets PEFT choose for known architectures.")
    gradient_checkpointing: bool = _opt(False, "Trade compute for memory in the backbone.")

    def __post_init__(self) -> None:
        _choice("model.aggregate", self.aggregate, ("mean", "weighted", "learned"))
        from rewardlab.models.base import list_kinds  # late import: models import torch

        _choice("model.kind", self.kind, list_kinds())
        _positive("model.lora_r", self.lora_r)
        _positive("model.lora_alpha", self.lora_alpha)
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ValueError(f"model.lora_dropout={self.lora_dropout!r} must be in [0, 1)")


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    output_dir: str = _opt("runs/rewardlab", "Where the model, metrics, logs and resume states go.")
    epochs: float = _opt(1.0, "Passes over the training data (fractions allowed).")
    max_steps: int | None = _opt(None, "Stop after this many optimiser steps (overrides `epochs` when set).")
    batch_size: int = _opt(16, "Comparisons per process per micro-batch (a ranking of K counts once).")
    eval_batch_size: int = _opt(64, "Sequences per forward pass when evaluating.")
    grad_accum: int = _opt(1, "Micro-batches per optimiser step.")
    lr_backbone: float = _opt(2e-5, "Learning rate of the backbone (or its LoRA adapters).")
    lr_head: float = _opt(1e-4, "Learning rate of the scalar head.")
    weight_decay: float = _opt(0.01, "AdamW weight decay (not applied to biases and norms).")
    warmup_ratio: float = _opt(0.1, "Fraction of steps spent warming the learning rate up from 0.")
    schedule: str = _opt("cosine", "Decay after warm-up: cosine, linear or constant.")
    max_grad_norm: float = _opt(1.0, "Clip the gradient norm to this; 0 disables clipping.")
    loss: str = _opt("bradley_terry", "Pairwise loss: see `rewardlab losses` for the names.")
    margin_scale: float = _opt(1.0, "bt_margin loss: multiplier on the rating gap used as margin.")
    label_smoothing: float = _opt(0.1, "label_smoothing loss: probability mass given to the other order.")
    focal_gamma: float = _opt(2.0, "focal loss: focusing exponent.")
    center_rewards: float = _opt(0.0, "Weight of a penalty on mean squared reward, keeping rewards centred at 0.")
    balance: str = _opt("none", "Reweight training pairs so groups contribute equally to the loss: none, attribute "
                        "(each reward head), or attribute_gap (each head x rating-gap bin: small, medium, large).")
    ema_decay: float = _opt(0.0, "Keep an exponential moving average of weights with this decay (0 = off); "
                            "evaluation and the saved model use it.")
    eval_every: int = _opt(0, "Evaluate every N optimiser steps (0 = once per epoch).")
    save_every: int = _opt(0, "Save a resume state every N steps (0 = at each evaluation).")
    save_total_limit: int = _opt(2, "Resume states kept on disk (oldest removed first).")
    metric_for_best: str = _opt("accuracy", "Validation metric that selects the best model (higher is better, "
                                "except loss-like metrics).")
    early_stopping_patience: int = _opt(0, "Stop after this many evaluations without improvement (0 = never).")
    mixed_precision: str = _opt("auto", "no, fp16, bf16 or auto (bf16 where supported on GPU, else no).")
    group_by_length: bool = _opt(True, "Batch comparisons of similar length together to cut padding.")
    seed: int = _opt(0, "Seed for initialisation, shuffling and dropout.")
    log_with: list = _opt(["tensorboard"], "Accelerate trackers: tensorboard, wandb, mlflow (installed ones only).")
    progress: bool = _opt(True, "Show progress bars.")
    num_workers: int = _opt(0, "DataLoader worker processes.")

    def __post_init__(self) -> None:
        _positive("train.epochs", self.epochs)
        if self.max_steps is not None:
            _positive("train.max_steps", self.max_steps)
        for name in ("batch_size", "eval_batch_size", "grad_accum", "save_total_limit"):
            _positive(f"train.{name}", getattr(self, name))
        for name in ("lr_backbone", "lr_head"):
            _positive(f"train.{name}", getattr(self, name))
        for name in ("weight_decay", "max_grad_norm", "center_rewards", "margin_scale", "eval_every",
                     "save_every", "early_stopping_patience", "num_workers", "focal_gamma"):
            _positive(f"train.{name}", getattr(self, name), allow_zero=True)
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ValueError(f"train.warmup_ratio={self.warmup_ratio!r} must be in [0, 1)")
        if not 0.0 <= self.label_smoothing < 0.5:
            raise ValueError(f"train.label_smoothing={self.label_smoothing!r} must be in [0, 0.5)")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"train.ema_decay={self.ema_decay!r} must be in [0, 1)")
        _choice("train.schedule", self.schedule, ("cosine", "linear", "constant"))
        _choice("train.balance", self.balance, ("none", "attribute", "attribute_gap"))
        _choice("train.mixed_precision", self.mixed_precision, ("auto", "no", "fp16", "bf16"))
        from rewardlab.losses import LOSSES  # late import: losses imports torch

        _choice("train.loss", self.loss, sorted(LOSSES))


@dataclass(frozen=True, kw_only=True)
class ExperimentConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

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
            raise ValueError(f"config file {path} is not valid YAML: {err}") from None
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
