"""Command-line flags generated from a config dataclass, whose fields are the one place an option is documented.

Each field becomes ``--field-name`` (``max_new_tokens`` -> ``--max-new-tokens``) with the field's default, its
``metadata["help"]``, and the argparse type of its annotation: ``int``, ``float``, ``str`` (optional ones too),
``bool`` (``--x`` switches on a field that defaults to off, ``--no-x`` switches off one that defaults to on).
A nested dataclass (``ServeConfig.batcher``) is flattened: its fields are flags of the same command.

A :class:`Flag` entry, keyed by field name, says what the annotation cannot: a flag name users already know
(``--temperature`` for ``temperatures``), a stricter type, a repeatable flag, a parser from text.
:func:`config_from_args` builds the config back from the parsed flags.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from rewardlab.config.options import field_default

_FIELD_DEFAULT = object()  # Flag.default: the field's own default


def positive_int(text: str) -> int:
    """argparse type: a whole number >= 1 (a batch or chunk of 0 would silently do nothing)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


@dataclass(frozen=True, kw_only=True)
class Flag:
    """How one config field appears on the command line, where the generated flag is not what users know."""

    name: str | None = None  # the flag, e.g. "--temperature" for `temperatures` (default: from the field name)
    type: Callable[[str], Any] | None = None  # argparse type instead of the annotation's (e.g. positive_int)
    repeat: bool = False  # each use adds one value; not given at all leaves the field's default
    parse: Callable[[str], Any] | None = None  # text -> value of a tuple field, e.g. "0.7,1.0" -> (0.7, 1.0)
    choices: tuple | None = None
    metavar: str | None = None
    default: Any = _FIELD_DEFAULT  # the command's own default, where it differs from the field's
    shown_default: str | None = None  # how --help names that default (e.g. "runs/tune/STUDY")


def add_config_flags(parser: argparse.ArgumentParser, cls: type, flags: Mapping[str, Flag] | None = None) -> None:
    """Add a flag for every field of the dataclass ``cls`` (nested dataclasses flattened) to ``parser``."""
    flags = dict(flags or {})
    unknown = set(flags) - set(leaf_fields(cls))
    if unknown:  # a misspelt entry would silently leave its flag generated
        raise TypeError(f"{cls.__name__} has no field {', '.join(sorted(unknown))}")
    for f, hint in leaf_fields(cls).values():
        _add_flag(parser, f, hint, flags.get(f.name, Flag()))


def config_from_args(cls: type, args: argparse.Namespace, flags: Mapping[str, Flag] | None = None,
                     **given: Any) -> Any:
    """The config ``cls`` from flags added by :func:`add_config_flags`; ``given`` fields the command works out.

    A ``parse`` flag's text is parsed here, so a bad value is the command's ``ValueError`` (one line, exit 2).
    """
    flags = flags or {}
    hints = typing.get_type_hints(cls)
    values = {}
    for f in dataclasses.fields(cls):
        flag = flags.get(f.name, Flag())
        if f.name in given:
            values[f.name] = given[f.name]
        elif dataclasses.is_dataclass(hints[f.name]):
            values[f.name] = config_from_args(hints[f.name], args, flags, **given)
        elif flag.repeat:
            if getattr(args, f.name):  # none given: the field's default
                values[f.name] = _base_type(hints[f.name])(getattr(args, f.name))
        elif flag.parse is not None:
            values[f.name] = flag.parse(getattr(args, f.name))
        else:
            values[f.name] = getattr(args, f.name)
    return cls(**values)


def flag_help(f: dataclasses.Field, flag: Flag | None = None) -> str:
    """A flag's help: the field's help and, where there is one worth naming, the default."""
    flag = flag or Flag()
    text = f.metadata.get("help")
    if not text:
        raise TypeError(f"config field {f.name!r} has no help metadata; say what the option does")
    default = field_default(f) if flag.default is _FIELD_DEFAULT else flag.default
    if flag.shown_default is not None:
        return f"{text} (default: {flag.shown_default})"
    if default is True:
        return f"{text} (on unless {flag_name(f, flag, default)} is given)"
    if flag.repeat or flag.parse is not None:
        default = ",".join(map(str, default)) if default is not dataclasses.MISSING else ""
    if default is None or default is False or default is dataclasses.MISSING or default == "":
        return text  # required, off, or a default the help itself explains
    return f"{text} (default: {default})"


def leaf_fields(cls: type) -> dict[str, tuple[dataclasses.Field, Any]]:
    """Field name -> (field, annotation) of every non-dataclass field, nested dataclasses flattened."""
    hints = typing.get_type_hints(cls)
    leaves = {}
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            leaves.update(leaf_fields(hints[f.name]))
        else:
            leaves[f.name] = (f, hints[f.name])
    return leaves


def _base_type(hint: Any) -> type:
    """``int | None`` -> ``int``; ``tuple[float, ...]`` -> ``tuple``."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) != 1:
            raise TypeError(f"cannot make a flag for a field of type {hint}")
        hint = args[0]
    return typing.get_origin(hint) or hint


def flag_name(f: dataclasses.Field, flag: Flag | None = None, default: Any = _FIELD_DEFAULT) -> str:
    """The flag of field ``f``: the :class:`Flag`'s name, else ``--field-name`` (``--no-field-name`` for a switch
    that is on by default)."""
    if flag is not None and flag.name:
        return flag.name
    default = field_default(f) if default is _FIELD_DEFAULT else default
    return ("--no-" if default is True else "--") + f.name.replace("_", "-")


def _add_flag(parser: argparse.ArgumentParser, f: dataclasses.Field, hint: Any, flag: Flag) -> None:
    own_default = field_default(f)
    default = own_default if flag.default is _FIELD_DEFAULT else flag.default
    base = _base_type(hint)
    kwargs: dict[str, Any] = {"dest": f.name, "help": flag_help(f, flag)}
    if base is bool:
        kwargs["action"] = "store_false" if default is True else "store_true"
    elif flag.repeat:
        kwargs.update(action="append", default=[], type=flag.type)
    elif base in (tuple, list):
        if flag.parse is None:
            raise TypeError(f"field {f.name!r} ({hint}) needs a Flag with repeat=True or a parse function")
        kwargs["default"] = ",".join(map(str, default))
    elif base in (int, float, str):
        kwargs.update(type=flag.type or base, default=default)
    else:
        raise TypeError(f"cannot make a flag for field {f.name!r} of type {hint}")
    if own_default is dataclasses.MISSING and flag.default is _FIELD_DEFAULT:
        kwargs.pop("default", None)
        kwargs["required"] = True
    if flag.choices is not None:
        kwargs["choices"] = flag.choices
    if flag.metavar is not None:
        kwargs["metavar"] = flag.metavar
    elif flag.name is not None and base is not bool:  # --temperature TEMPERATURE, not the field's TEMPERATURES
        kwargs["metavar"] = flag.name.lstrip("-").replace("-", "_").upper()
    parser.add_argument(flag_name(f, flag, default), **kwargs)
