"""Pointwise ratings: one row per response, a rating column per attribute; rows of a prompt form pairs.

Rows like ``{"prompt": ..., "response": ... (or "image": ...), "helpfulness": 4,
"correctness": 2}`` are validated one by one (:func:`rated_item`), then grouped by
(prompt, labeler, group) into one :class:`Comparison` each (:func:`group_rated_items`);
a ``group`` column cuts a prompt's many responses into comparisons of a chosen size.
Within a group, every attribute forms pairs where two responses' ratings differ by
at least ``min_rating_diff``; each such pair trains only its attribute's head. A
row missing an attribute (absent, null or empty) gives that head no pairs. Rows
rated on every attribute also form overall pairs from their mean rating, which
train the aggregate (``data.aggregate_pairs``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator

from rewardlab.contracts.schema import Comparison, DataError, response_key
from rewardlab.data.fields import CARRIED, FormatContext, carried_name, rating, text_field
from rewardlab.data.formats import rated_pairs

RESPONSE_COLUMNS = ("response", "image")
KNOWN_FIELDS = {"prompt", *RESPONSE_COLUMNS, *CARRIED, "id", "source"}


@dataclass(frozen=True)
class RatedItem:
    """One validated row: a response to a prompt and its ratings per attribute (unrated ones absent)."""

    prompt: str
    response: object
    ratings: dict[str, float]
    where: str
    field: str  # the response column, for error messages
    row: dict
    carried: dict[str, str | None]  # labeler / attribute / group (see formats.carried_name)


def infer_attributes(row: dict) -> tuple[str, ...]:
    """Rating columns of a row when ``data.attributes`` is unset: its numeric columns that are not known fields."""
    out = []
    for name, value in row.items():
        if name in KNOWN_FIELDS or isinstance(value, bool):
            continue
        try:
            float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            continue
        out.append(name)
    return tuple(out)


def _response(row: dict, where: str, ctx: FormatContext) -> tuple[object, str]:
    if "image" in row:
        from rewardlab.data.images import image_ref  # images need PIL; text data never imports it

        return image_ref(row["image"], where=where, field="image", base_dir=ctx.base_dir), "image"
    return text_field(row, "response", where), "response"


def rated_item(row: dict, where: str, ctx: FormatContext) -> RatedItem:
    """Validate one row; raises :class:`DataError` naming the row and the field."""
    prompt = text_field(row, "prompt", where)
    response, column = _response(row, where, ctx)
    if not ctx.attributes:
        raise DataError(where, None, "no rating columns: set data.attributes to the columns that hold ratings")
    ratings = {name: rating(row[name], where, name, ctx) for name in ctx.attributes
               if row.get(name) not in (None, "")}
    if not ratings:
        raise DataError(where, None, f"no rating in any of the attribute columns {', '.join(ctx.attributes)}")
    carried = {name: carried_name(row.get(name), where, name) for name in CARRIED}
    return RatedItem(prompt, response, ratings, where, column, row, carried)


def _comparison(group: list[RatedItem], ctx: FormatContext) -> Comparison | None:
    seen: dict[str, str] = {}
    for item in group:
        key = response_key(item.response)
        if key in seen:
            raise DataError(item.where, item.field, f"the same response to this prompt appears at {seen[key]}")
        seen[key] = item.where
    pairs = []
    for name in ctx.attributes:
        pairs += rated_pairs([it.ratings.get(name) for it in group], ctx.min_rating_diff, attribute=name)
    complete = [sum(it.ratings.values()) / len(ctx.attributes) if len(it.ratings) == len(ctx.attributes) else None
                for it in group]
    if ctx.aggregate_pairs and len(ctx.attributes) > 1:
        pairs += rated_pairs(complete, ctx.min_rating_diff)
    if not pairs:
        return None
    first = group[0]
    carried = {**first.carried, "attribute": None}  # per pair instead
    used = KNOWN_FIELDS | set(ctx.attributes)
    return Comparison(prompt=first.prompt, responses=tuple(it.response for it in group), pairs=tuple(pairs),
                      scores=tuple(complete) if None not in complete else None, source=first.where,
                      meta={k: v for k, v in first.row.items() if k not in used}, **carried)


def group_rated_items(items: Iterable[RatedItem], ctx: FormatContext) -> Iterator[Comparison | None | DataError]:
    """One comparison per (prompt, labeler, group), in order of first appearance.

    Yields ``None`` for a group that forms no pair (one response, or ratings too
    close), and the :class:`DataError` of a group that is invalid (the same response
    twice), so the loader can apply its bad-row policy.
    """
    groups: dict[tuple, list[RatedItem]] = {}
    for item in items:
        groups.setdefault((item.prompt, item.carried["labeler"], item.carried["group"]), []).append(item)
    for group in groups.values():
        try:
            yield _comparison(group, ctx)
        except DataError as err:
            yield err
