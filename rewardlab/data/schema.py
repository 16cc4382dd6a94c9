"""The examples every data format is converted to.

A :class:`Comparison` is one prompt with K >= 2 responses and the ordered pairs
that human judgement implies between them (a plain preference pair is K = 2
with one pair; a ranking of K responses gives all K(K-1)/2 ordered pairs). Each
unique response is encoded once, and the pairwise loss indexes its reward.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Mapping


class DataError(ValueError):
    """Invalid input data; the message names the file, the row and the field."""

    def __init__(self, location: str, field_name: str | None, message: str):
        self.location = location
        self.field_name = field_name
        self.reason = message
        where = f"{location}, field {field_name!r}" if field_name else location
        super().__init__(f"{where}: {message}")


@dataclass(frozen=True)
class PreferencePair:
    """One judgement: ``chosen`` is preferred over ``rejected`` for ``prompt``."""

    prompt: str
    chosen: str
    rejected: str
    margin: float = 0.0
    source: str = ""
    labeler: str | None = None
    attribute: str | None = None
    group: str | None = None
    meta: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class Comparison:
    """A prompt, K responses and the preference pairs between them.

    Attributes:
        prompt: the shared context (already rendered to text).
        responses: the K distinct responses.
        pairs: (winner index, loser index, margin) triples.
        scores: human scores of the responses (ratings, or negated ranks) where the
            data has them; used for rank correlations. ``None`` for plain pairs.
        source: ``file:row`` where the example came from, for error messages.
        labeler / attribute / group: optional fields carried through untouched.
        meta: any other columns of the row (category, subset, ...).
    """

    prompt: str
    responses: tuple[str, ...]
    pairs: tuple[tuple[int, int, float], ...]
    scores: tuple[float, ...] | None = None
    source: str = ""
    labeler: str | None = None
    attribute: str | None = None
    group: str | None = None
    meta: Mapping[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        k = len(self.responses)
        assert k >= 2 and self.pairs, "a comparison needs two responses and a pair"
        assert all(0 <= w < k and 0 <= l < k and w != l for w, l, _ in self.pairs)

    def iter_pairs(self) -> Iterator[PreferencePair]:
        for w, l, margin in self.pairs:
            yield PreferencePair(
                prompt=self.prompt, chosen=self.responses[w], rejected=self.responses[l], margin=margin,
                source=self.source, labeler=self.labeler, attribute=self.attribute, group=self.group,
                meta=self.meta,
            )

    def field_value(self, name: str) -> object:
        """Value of a named field (prompt, labeler, group, or a meta column) for grouping."""
        if name in ("prompt", "labeler", "attribute", "group", "source"):
            return getattr(self, name)
        return self.meta.get(name)

