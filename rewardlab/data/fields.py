"""Checks of a raw row's fields, shared by every row format: each returns the clean value or raises
:class:`DataError` naming the row and the field."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from rewardlab.contracts.schema import DataError, unicode_problem

CARRIED = ("labeler", "attribute", "group")
Renderer = Callable[[Sequence[dict], bool], str]


def render_plain(messages: Sequence[dict], add_generation_prompt: bool) -> str:
    """Chat messages as ``role: content`` lines, for tokenizers without a chat template."""
    text = "\n".join(f"{m['role']}: {m['content']}" for m in messages)
    return text + ("\nassistant:" if add_generation_prompt else "")


@dataclass(frozen=True)
class FormatContext:
    min_rating_diff: float = 1.0
    assistant_marker: str = "\n\nAssistant:"
    render_chat: Renderer = render_plain
    base_dir: Path | None = None  # the data file's folder: relative image paths start here
    attributes: tuple[str, ...] = ()
    rating_range: tuple[float, ...] = ()
    aggregate_pairs: bool = True
    extra: dict = field(default_factory=dict)


def text_field(row: dict, name: str, where: str) -> str:
    if name not in row:
        raise DataError(where, name, f"missing column; the row has {', '.join(map(str, row)) or 'no columns'}"
                        " (map yours with data.columns)")
    value = row[name]
    if not isinstance(value, str):
        raise DataError(where, name, f"expected text, got {type(value).__name__} {value!r:.60}")
    if not value.strip():
        raise DataError(where, name, "empty text")
    if problem := unicode_problem(value):
        raise DataError(where, name, problem)
    return value


def number(value: object, where: str, name: str) -> float:
    if isinstance(value, bool) or value is None:
        raise DataError(where, name, f"expected a number, got {value!r}")
    try:
        x = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise DataError(where, name, f"expected a number, got {value!r:.60}") from None
    if not math.isfinite(x):
        raise DataError(where, name, f"must be a finite number, got {x}")
    return x


def rating(value: object, where: str, name: str, ctx: FormatContext) -> float:
    """A finite number inside ``data.rating_range`` when one is set."""
    x = number(value, where, name)
    if ctx.rating_range and not ctx.rating_range[0] <= x <= ctx.rating_range[1]:
        lo, hi = ctx.rating_range
        raise DataError(where, name, f"rating {x:g} is outside data.rating_range [{lo:g}, {hi:g}]")
    return x


def list_field(row: dict, name: str, where: str) -> list:
    if name not in row:
        raise DataError(where, name, "missing column (map yours with data.columns)")
    value = row[name]
    if not isinstance(value, (list, tuple)):
        raise DataError(where, name, f"expected a list, got {type(value).__name__}")
    return list(value)


def carried_fields(row: dict, used: set[str], where: str) -> dict:
    """labeler / attribute / group as text (None when absent), and the row's other columns as ``meta``.

    A row's ``attribute`` is also the attribute its pairs judge: they train that head."""
    out = {name: carried_name(row.get(name), where, name) for name in CARRIED}
    out["meta"] = {k: v for k, v in row.items() if k not in used and k not in CARRIED}
    return out


def carried_name(value: object, where: str, field_name: str) -> str | None:
    """A labeler / attribute / group id as text: text or an integer (3.0, as pandas writes an integer column with
    gaps, is "3"); None, "" and NaN (a missing cell) mean absent; anything else is an error, never its repr."""
    if value is None or value == "" or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise DataError(where, field_name, f"expected text or an integer id, got {type(value).__name__} {value!r}")
    return str(value)


def message_list(value: object, where: str, name: str) -> list[dict]:
    """A non-empty list of ``{role, content}`` chat messages, checked (a tuple too, as parquet files give them)."""
    if not isinstance(value, (list, tuple)) or not value:
        raise DataError(where, name, "expected a non-empty list of {role, content} messages")
    for i, m in enumerate(value):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise DataError(where, f"{name}[{i}]", "expected a message {role: str, content: str}")
        if problem := unicode_problem(m["content"]):
            raise DataError(where, f"{name}[{i}].content", problem)
    return list(value)
