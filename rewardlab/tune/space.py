"""The search space: ``{dotted option: distribution}`` read from YAML, each bound checked against the config."""

from __future__ import annotations

import difflib
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import optuna
import yaml
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from rewardlab.config import describe, load_config, parse_yaml
from rewardlab.metrics.pairwise import is_improvement, pairwise_summary


def trainer_metrics() -> list[str]:
    """Validation metrics each evaluation reports (the keys of the trainer's summary)."""
    summary = pairwise_summary(np.array([1.0, 0.0]), np.array([0.0, 1.0]))
    return [k for k, v in summary.items() if isinstance(v, float)]


def direction(metric: str) -> str:
    """``minimize`` for loss-like metrics (as the trainer's best-model choice sees them), else ``maximize``."""
    return "minimize" if is_improvement(metric, 0.0, 1.0) else "maximize"


def override(name: str, value) -> str:
    """A ``--set`` override giving option ``name`` the value ``value``."""
    return f"{name}={json.dumps(value)}"  # JSON is YAML; the config loader coerces to the field's type


def _number(name: str, key: str, spec: dict, where: str) -> float:
    value = spec[key]
    if isinstance(value, str):  # YAML reads 1e-6 (no dot) as text
        try:
            value = float(value)
        except ValueError:
            pass
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{where}: {name}: {key}={spec[key]!r} must be a number")
    return value


_KEYS = {"float": {"type", "low", "high", "log", "step"}, "int": {"type", "low", "high", "log", "step"},
         "categorical": {"type", "choices"}}


def _distribution(name: str, spec, where: str) -> BaseDistribution:
    if isinstance(spec, list):
        spec = {"type": "categorical", "choices": spec}
    if not isinstance(spec, dict):
        raise ValueError(f"{where}: {name} must be a mapping such as {{type: float, low: 1.0e-6, high: 1.0e-4, "
                         f"log: true}} or a list of choices, got {spec!r}")
    kind = spec.get("type")
    if kind not in _KEYS:
        raise ValueError(f"{where}: {name}: type={kind!r}; choose float, int or categorical")
    unknown = sorted(set(spec) - _KEYS[kind])
    if unknown:
        raise ValueError(f"{where}: {name}: unknown key {unknown[0]!r} for type {kind}; "
                         f"valid: {', '.join(sorted(_KEYS[kind]))}")
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices or not all(
                c is None or isinstance(c, (bool, int, float, str)) for c in choices):
            raise ValueError(f"{where}: {name}: choices must be a non-empty list of numbers, text, booleans or "
                             f"null, got {choices!r}")
        return CategoricalDistribution(choices)
    return _numeric_distribution(name, kind, spec, where)


def _numeric_distribution(name: str, kind: str, spec: dict, where: str) -> BaseDistribution:
    for key in ("low", "high"):
        if key not in spec:
            raise ValueError(f"{where}: {name}: type {kind} needs low and high")
    low, high = _number(name, "low", spec, where), _number(name, "high", spec, where)
    log, step = spec.get("log", False), spec.get("step")
    step = None if step is None else _number(name, "step", spec, where)
    if not isinstance(log, bool):
        raise ValueError(f"{where}: {name}: log={log!r} must be true or false")
    if not low < high:
        raise ValueError(f"{where}: {name}: bad range low={low!r}, high={high!r}; low must be < high")
    if log and low <= 0:
        raise ValueError(f"{where}: {name}: a log scale needs low > 0, got low={low!r}")
    if log and step is not None:
        raise ValueError(f"{where}: {name}: log and step cannot be combined")
    if step is not None and not 0 < step <= high - low:
        raise ValueError(f"{where}: {name}: step={step!r} must be > 0 and at most high - low")
    if kind == "int":
        if not all(float(v).is_integer() for v in (low, high, step or 1)):
            raise ValueError(f"{where}: {name}: type int needs whole-number low, high and step")
        return IntDistribution(int(low), int(high), log=log, step=int(step or 1))
    return FloatDistribution(float(low), float(high), log=log, step=step)


def _read_space_file(path: Path) -> dict:
    if not path.is_file():
        raise ValueError(f"search space file {path} does not exist")
    try:
        raw = parse_yaml(path.read_text())
    except yaml.YAMLError as err:
        raise ValueError(f"search space file {path} is not valid YAML: {err}") from None
    if not isinstance(raw, dict) or not raw:
        raise ValueError(f"search space file {path} must map option names to distributions, e.g. "
                         "train.lr_backbone: {type: float, low: 1.0e-6, high: 1.0e-4, log: true}")
    return raw


def load_space(path: str | Path, config: str | None = None, overrides: Sequence[str] = ()) -> dict:
    """Read a search space: ``{dotted option: distribution}``, each bound checked against the config.

    Example (``space.yaml``)::

        train.lr_backbone: {type: float, low: 1.0e-6, high: 1.0e-4, log: true}
        train.loss: {type: categorical, choices: [bradley_terry, focal]}
        model.lora_r: {type: int, low: 4, high: 32, step: 4}
    """
    path = Path(path)
    raw = _read_space_file(path)
    options = [name for name, _, _ in describe()]
    space = {}
    for name, spec in raw.items():
        if name not in options:
            close = difflib.get_close_matches(str(name), options, n=3, cutoff=0.5)
            hint = f"did you mean {', '.join(close)}? " if close else ""
            raise ValueError(f"{path}: unknown option {name!r}; {hint}(`rewardlab options` lists them all)")
        dist = _distribution(name, spec, str(path))
        ends = dist.choices if isinstance(dist, CategoricalDistribution) else (dist.low, dist.high)
        for value in ends:  # a value the config rejects (dropout 1.5, an unknown loss) fails now, not in trial 7
            try:
                load_config(config, [*overrides, override(name, value)])
            except ValueError as err:
                raise ValueError(f"{path}: {name}={value!r} is not a valid value: {err}") from None
        space[name] = dist
    return space


def suggest(trial: optuna.Trial, name: str, dist: BaseDistribution):
    """Ask ``trial`` for a value of option ``name`` from ``dist``."""
    if isinstance(dist, CategoricalDistribution):
        return trial.suggest_categorical(name, dist.choices)
    if isinstance(dist, IntDistribution):
        return trial.suggest_int(name, dist.low, dist.high, step=dist.step, log=dist.log)
    return trial.suggest_float(name, dist.low, dist.high, step=dist.step, log=dist.log)
