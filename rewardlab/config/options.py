"""How an option is declared and checked: a dataclass field with its default and help, and the checks
``__post_init__`` runs (types, choices, ranges), each raising ``ValueError`` naming the option."""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from dataclasses import field
from typing import Any


def option(default: Any, help: str, **kwargs: Any) -> Any:
    """A config field with its default and its help (the one place an option is documented)."""
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help}, **kwargs)
    return field(default=default, metadata={"help": help}, **kwargs)


def check_types(cfg: Any, section: str = "") -> None:
    """Raise naming the option where a field does not hold its annotated type (a config built in Python; YAML and
    ``--set`` values are coerced before). An int is a float here; a bool is neither.

    Example:
        >>> from dataclasses import dataclass
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


def choice(name: str, value: Any, choices: typing.Iterable[Any]) -> None:
    """Raise naming the option unless ``value`` is one of ``choices``."""
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not valid; choose one of {', '.join(map(str, choices))}")


def positive(name: str, value: float, *, allow_zero: bool = False) -> None:
    """Raise naming the option unless ``value`` is finite and > 0 (>= 0 with ``allow_zero``)."""
    ok = value >= 0 if allow_zero else value > 0
    if not ok or (isinstance(value, float) and not math.isfinite(value)):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name}={value!r} must be {bound}")


def field_default(f: dataclasses.Field) -> Any:
    """A dataclass field's default (its factory's value), or ``dataclasses.MISSING`` for a required field."""
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING
