"""An experiment's whole configuration, loaded from YAML plus ``section.key=value`` overrides."""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from rewardlab.config.options import check_types, field_default
from rewardlab.config.sections import DataConfig, ModelConfig, MultimodalConfig
from rewardlab.config.train import TrainConfig


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
            rows.append((prefix + f.name, field_default(f), f.metadata.get("help", "")))
    return rows
