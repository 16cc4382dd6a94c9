"""The examples every data format is converted to.

A :class:`Comparison` is one prompt with K >= 2 responses (texts, or images for
image+text models) and the judgements between them, each a :class:`Pair`: a
plain preference pair is K = 2 with one pair; a ranking of K responses gives
all K(K-1)/2 ordered pairs; per-attribute ratings give pairs per attribute.
Each unique response is encoded once, and the loss indexes its reward.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Mapping, NamedTuple


OUTCOMES = ("a", "b", "tie")  # a judged pair's outcomes, in this order everywhere: its first item won, its second, a tie


class DataError(ValueError):
    """Invalid input data; the message names the file, the row and the field."""

    def __init__(self, location: str, field_name: str | None, message: str):
        self.location = location
        self.field_name = field_name
        self.reason = message
        where = f"{location}, field {field_name!r}" if field_name else location
        super().__init__(f"{where}: {message}")


def unicode_problem(text: str) -> str | None:
    """Why ``text`` is not valid Unicode (a lone surrogate, which JSON's ``\\ud800`` escapes can make and no
    tokenizer takes), or None.

    Example:
        >>> unicode_problem("café"), unicode_problem("a" + chr(0xD800))
        (None, 'not valid Unicode: a lone surrogate (U+D800) at character 1')
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        return f"not valid Unicode: a lone surrogate (U+{ord(text[err.start]):04X}) at character {err.start}"
    return None


class Pair(NamedTuple):
    """One judgement between two responses of a comparison.

    ``winner`` is preferred over ``loser`` (for a tie the order carries no meaning);
    ``margin`` is the rating gap where the data has one; ``attribute`` names the
    rating dimension (the head) the judgement is about, ``None`` meaning the overall
    reward; ``weight`` scales the pair's term in the loss.
    """

    winner: int
    loser: int
    margin: float = 0.0
    tie: bool = False
    attribute: str | None = None
    weight: float = 1.0


@dataclass(frozen=True)
class PreferencePair:
    """One judgement: ``chosen`` is preferred over ``rejected`` for ``prompt``."""

    prompt: str
    chosen: object
    rejected: object
    margin: float = 0.0
    source: str = ""
    labeler: str | None = None
    attribute: str | None = None
    group: str | None = None
    meta: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class Comparison:
    """A prompt, K responses and the judgements between them.

    Attributes:
        prompt: the shared context (already rendered to text).
        responses: the K distinct responses: texts, or image references for image+text data.
        pairs: the judgements, each a :class:`Pair` (plain ``(winner, loser, margin)`` tuples are accepted).
        scores: human scores of the responses (ratings, or negated ranks) where the
            data has them; used for rank correlations. ``None`` for plain pairs.
        source: ``file:row`` where the example came from, for error messages.
        labeler / attribute / group: optional fields carried through untouched.
        meta: any other columns of the row (category, subset, ...).
    """

    prompt: str
    responses: tuple[object, ...]
    pairs: tuple[Pair, ...]
    scores: tuple[float, ...] | None = None
    source: str = ""
    labeler: str | None = None
    attribute: str | None = None
    group: str | None = None
    meta: Mapping[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        pairs = tuple(p if isinstance(p, Pair) else Pair(*p) for p in self.pairs)
        object.__setattr__(self, "pairs", pairs)
        k = len(self.responses)
        assert k >= 2 and pairs, "a comparison needs two responses and a pair"
        assert all(0 <= p.winner < k and 0 <= p.loser < k and p.winner != p.loser for p in pairs)

    def iter_pairs(self) -> Iterator[PreferencePair]:
        for p in self.pairs:
            yield PreferencePair(
                prompt=self.prompt, chosen=self.responses[p.winner], rejected=self.responses[p.loser],
                margin=p.margin, source=self.source, labeler=self.labeler,
                attribute=p.attribute if p.attribute is not None else self.attribute, group=self.group,
                meta=self.meta,
            )

    def field_value(self, name: str) -> object:
        """Value of a named field (prompt, labeler, group, or a meta column) for grouping."""
        if name in ("prompt", "labeler", "attribute", "group", "source"):
            return getattr(self, name)
        return self.meta.get(name)


def response_key(response: object) -> str:
    """A string identity of a response: the text itself, or an image reference's ``key``."""
    return response if isinstance(response, str) else getattr(response, "key", repr(response))


def response_length(response: object) -> int:
    """Characters of a text response; 0 for non-text responses (images have no length)."""
    return len(response) if isinstance(response, str) else 0
