"""The ``ab`` format: a judge saw responses A and B and said A, B or tie.

Two row layouts are read:

* ``prompt, response_a, response_b, winner``, where ``winner`` is a spelling of
  A / B / tie (see :data:`WINNER_SPELLINGS`). Integer codes are ambiguous (is 0 a
  tie or A?), so they are read only through an explicit ``data.winner_codes``
  mapping such as ``{0: a, 1: b, 2: tie}``.
* Chatbot Arena (Human Preference 55k): ``prompt, response_a, response_b`` hold
  JSON-encoded lists of turns, and the outcome is one-hot in ``winner_model_a,
  winner_model_b, winner_tie``. See :func:`arena_texts` for how turns are rendered.

Every row is one :class:`Comparison` with ``responses=(a, b)`` and one pair:
A wins -> ``Pair(0, 1)``, B wins -> ``Pair(1, 0)``, tie -> ``Pair(0, 1, tie=True)``;
``meta["outcome"]`` keeps ``"a"``, ``"b"`` or ``"tie"`` for three-way evaluation.
Rows judging the same two responses (different labelers) stay separate comparisons.
"""

from __future__ import annotations

import json
import math
import re

from rewardlab.contracts.schema import Comparison, DataError, Pair
from rewardlab.data.fields import FormatContext, carried_fields, number, text_field

WINNER_SPELLINGS = {
    "a": "a", "b": "b", "tie": "tie",
    "model_a": "a", "model_b": "b", "tie (bothbad)": "tie", "both_bad": "tie",
    "left": "a", "right": "b",
}
ARENA_COLUMNS = {"winner_model_a": "a", "winner_model_b": "b", "winner_tie": "tie"}
_INTEGER = re.compile(r"[+-]?\d+")


def outcome_pair(outcome: str, attribute: str | None = None) -> Pair:
    """The pair of responses (A, B) = (0, 1) that an outcome ``a`` / ``b`` / ``tie`` stands for."""
    if outcome == "a":
        return Pair(0, 1, attribute=attribute)
    if outcome == "b":
        return Pair(1, 0, attribute=attribute)
    assert outcome == "tie", outcome
    return Pair(0, 1, tie=True, attribute=attribute)


def pair_outcome(pair: Pair) -> str:
    """Inverse of :func:`outcome_pair`: ``tie``, else ``a`` when response 0 wins, else ``b``."""
    return "tie" if pair.tie else ("a" if pair.winner == 0 else "b")


def _integer_code(value: object) -> int | None:
    """``value`` as an integer code (1, 1.0, "1"), or None when it is not one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    if isinstance(value, str) and _INTEGER.fullmatch(value.strip()):
        return int(value.strip())
    return None


def winner_outcome(value: object, where: str, codes: dict) -> str:
    """``a`` / ``b`` / ``tie`` from a ``winner`` cell; integer codes only through ``codes`` (data.winner_codes)."""
    code = _integer_code(value)
    if code is not None:
        if not codes:
            raise DataError(where, "winner", f"integer winner {value!r} is ambiguous (is 0 a tie or A?); set "
                            "data.winner_codes to say what each code means, e.g. {0: a, 1: b, 2: tie}")
        mapped = {int(k): v for k, v in codes.items()}
        if code not in mapped:
            raise DataError(where, "winner", f"code {code} is not in data.winner_codes "
                            f"({', '.join(f'{k}: {v}' for k, v in sorted(mapped.items()))})")
        return mapped[code]
    if isinstance(value, str) and value.strip().lower() in WINNER_SPELLINGS:
        return WINNER_SPELLINGS[value.strip().lower()]
    accepted = " / ".join(WINNER_SPELLINGS)
    raise DataError(where, "winner", f"{value!r:.60} is not a winner; accepted (any case): {accepted}, or "
                    "integer codes with data.winner_codes")


def arena_outcome(row: dict, where: str) -> str:
    """The outcome from Arena's one-hot ``winner_model_a, winner_model_b, winner_tie`` columns."""
    hot = []
    for name, outcome in ARENA_COLUMNS.items():
        if name not in row:
            raise DataError(where, name, "missing column; Arena rows need winner_model_a, winner_model_b and "
                            "winner_tie")
        flag = number(row[name], where, name)
        if flag not in (0.0, 1.0):
            raise DataError(where, name, f"expected 0 or 1, got {row[name]!r:.60}")
        if flag == 1.0:
            hot.append(outcome)
    if len(hot) != 1:
        raise DataError(where, "winner_tie", f"exactly one of winner_model_a, winner_model_b, winner_tie must be 1; "
                        f"{len(hot)} are")
    return hot[0]


def _turns(row: dict, name: str, where: str) -> list[str]:
    """A JSON-encoded (or already decoded) list of turns; null turns become ""."""
    if name not in row:
        raise DataError(where, name, "missing column (map yours with data.columns)")
    value = row[name]
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise DataError(where, name, f"expected a JSON list of turns, got {value!r:.60}") from None
    if not isinstance(value, (list, tuple)) or not value:
        raise DataError(where, name, f"expected a non-empty list of turns, got {value!r:.60}")
    for i, turn in enumerate(value):
        if turn is not None and not isinstance(turn, str):
            raise DataError(where, f"{name}[{i}]", f"expected text or null, got {type(turn).__name__}")
    return ["" if turn is None else turn for turn in value]


def arena_texts(row: dict, where: str, ctx: FormatContext) -> tuple[str, str, str]:
    """(prompt, response A, response B) of an Arena row, rendered with ``ctx.render_chat``.

    The two models saw different histories after the first turn (each its own earlier
    answers), so only the first user turn is shared: it is the prompt. Each response is
    the rest of its own conversation: its first answer, then every later user turn
    followed by its answer. A one-turn row is thus ``user`` prompt plus one answer, as in
    the ``chat`` format. Null turns become empty text; a response with no text at all is
    an error.
    """
    users = _turns(row, "prompt", where)
    if not users[0].strip():
        raise DataError(where, "prompt", "the first user turn is empty")
    history = [{"role": "user", "content": users[0]}]
    prompt = ctx.render_chat(history, True)
    out = []
    for name in ("response_a", "response_b"):
        answers = _turns(row, name, where)
        if len(answers) != len(users):
            raise DataError(where, name, f"has {len(answers)} turns for {len(users)} prompt turns")
        if not any(a.strip() for a in answers):
            raise DataError(where, name, "empty response (every turn is empty or null)")
        messages = [{"role": "assistant", "content": answers[0]}]
        for user, answer in zip(users[1:], answers[1:]):
            messages += [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]
        full = ctx.render_chat(history + messages, False)
        out.append(full[len(prompt):] if full.startswith(prompt) else "\n".join(m["content"] for m in messages))
    return prompt, out[0], out[1]


def from_ab(row: dict, where: str, ctx: FormatContext) -> Comparison:
    """``prompt, response_a, response_b, winner`` (or Arena's JSON turns and one-hot winner columns)."""
    arena = any(name in row for name in ARENA_COLUMNS)
    if arena:
        prompt, a, b = arena_texts(row, where, ctx)
        outcome = arena_outcome(row, where)
        used = {"prompt", "response_a", "response_b", *ARENA_COLUMNS}
    else:
        prompt = text_field(row, "prompt", where)
        a, b = text_field(row, "response_a", where), text_field(row, "response_b", where)
        if "winner" not in row:
            raise DataError(where, "winner", "missing column: who won, a / b / tie (map yours with data.columns)")
        outcome = winner_outcome(row["winner"], where, ctx.extra.get("winner_codes") or {})
        used = {"prompt", "response_a", "response_b", "winner"}
    if a == b:
        raise DataError(where, "response_b", "identical to 'response_a': a comparison needs two different responses")
    if arena and row.get("group") in (None, "") and row.get("id") not in (None, ""):
        used.add("id")  # Arena's row id groups the row (model_a / model_b stay in meta for model ratings)
        row = dict(row, group=row["id"])
    carried = carried_fields(row, used, where)
    carried["meta"] = {**carried["meta"], "outcome": outcome}
    return Comparison(prompt=prompt, responses=(a, b), pairs=(outcome_pair(outcome, carried["attribute"]),),
                      source=where, **carried)
