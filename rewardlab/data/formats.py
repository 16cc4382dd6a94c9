"""Row formats: each turns one raw row into a :class:`Comparison`, in a registry.

A converter validates as it goes and raises :class:`DataError` naming the row
and field. It returns ``None`` for a valid row that implies no preference (all
ratings within ``min_rating_diff``); the loader counts those. Pointwise formats,
whose rows each hold one response (``item_ratings``), live in
:mod:`rewardlab.data.item_ratings`: their rows are grouped by prompt first.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

from rewardlab.contracts.registry import DATA_FORMATS
from rewardlab.contracts.schema import Comparison, DataError, Pair
from rewardlab.data.benchmarks import SIGNATURES, detect_benchmark
from rewardlab.data.fields import (FormatContext, carried_fields, list_field, message_list, number, rating,
                                   text_field)

def _pair(prompt: str, chosen: str, rejected: str, margin: float, where: str, row: dict, used: set) -> Comparison:
    if chosen == rejected:
        raise DataError(where, "rejected", "identical to 'chosen': a pair needs two different responses")
    carried = carried_fields(row, used, where)
    return Comparison(prompt=prompt, responses=(chosen, rejected), source=where,
                      pairs=(Pair(0, 1, margin, attribute=carried["attribute"]),), **carried)


# ----------------------------------------------------------------------------- formats


def from_pairs(row: dict, where: str, ctx: FormatContext) -> Comparison:
    """``prompt, chosen, rejected`` (optional ``margin``)."""
    prompt = text_field(row, "prompt", where)
    chosen, rejected = text_field(row, "chosen", where), text_field(row, "rejected", where)
    margin = number(row["margin"], where, "margin") if row.get("margin") not in (None, "") else 0.0
    return _pair(prompt, chosen, rejected, margin, where, row, {"prompt", "chosen", "rejected", "margin"})


def split_implicit_prompt(chosen: str, rejected: str, marker: str) -> tuple[str, str, str]:
    """Split two dialogues sharing a prefix into (prompt, chosen response, rejected response).

    The prompt ends with the last ``marker`` (e.g. ``"\\n\\nAssistant:"``) that both
    dialogues share; without one, at the last whitespace of their common prefix.
    """
    common = 0
    for a, b in zip(chosen, rejected):
        if a != b:
            break
        common += 1
    cut = chosen.rfind(marker, 0, common) if marker else -1
    if cut >= 0:
        cut += len(marker)
    else:
        cut = max(chosen.rfind(" ", 0, common), chosen.rfind("\n", 0, common)) + 1
    return chosen[:cut], chosen[cut:], rejected[cut:]


def from_implicit_prompt(row: dict, where: str, ctx: FormatContext) -> Comparison:
    """Whole dialogues ``chosen, rejected`` whose shared prefix is the prompt (HH-RLHF)."""
    chosen, rejected = text_field(row, "chosen", where), text_field(row, "rejected", where)
    if chosen == rejected:
        raise DataError(where, "rejected", "identical to 'chosen': a pair needs two different responses")
    prompt, c, r = split_implicit_prompt(chosen, rejected, ctx.assistant_marker)
    if not c.strip() or not r.strip():
        side = "chosen" if not c.strip() else "rejected"
        raise DataError(where, side, "empty response once the shared prompt is removed")
    return _pair(prompt, c, r, 0.0, where, row, {"chosen", "rejected"})


def from_chat(row: dict, where: str, ctx: FormatContext) -> Comparison:
    """Message lists ``chosen, rejected`` (optional ``prompt`` list), as in TRL's conversational format."""
    chosen = message_list(row.get("chosen"), where, "chosen")
    rejected = message_list(row.get("rejected"), where, "rejected")
    if row.get("prompt") is not None:
        history = message_list(row["prompt"], where, "prompt")
    else:
        if chosen[:-1] != rejected[:-1]:
            raise DataError(where, "rejected", "without a 'prompt' column both conversations must share all "
                            "messages but the last")
        history, chosen, rejected = chosen[:-1], chosen[-1:], rejected[-1:]
    prompt = ctx.render_chat(history, True)
    responses = []
    for name, msgs in (("chosen", chosen), ("rejected", rejected)):
        full = ctx.render_chat(history + msgs, False)
        text = full[len(prompt):] if full.startswith(prompt) else "\n".join(m["content"] for m in msgs)
        if not text.strip():
            raise DataError(where, name, "empty response")
        responses.append(text)
    return _pair(prompt, responses[0], responses[1], 0.0, where, row, {"prompt", "chosen", "rejected"})


def _scored(row: dict, where: str, scores: list[float], score_name: str, min_diff: float, *, ties: bool = False
            ) -> Comparison | None:
    prompt = text_field(row, "prompt", where)
    responses = list_field(row, "responses", where)
    if len(responses) < 2:
        raise DataError(where, "responses", f"needs at least 2 responses, got {len(responses)}")
    if len(scores) != len(responses):
        raise DataError(where, score_name, f"has {len(scores)} values for {len(responses)} responses")
    for i, r in enumerate(responses):
        if not isinstance(r, str) or not r.strip():
            raise DataError(where, f"responses[{i}]", "expected non-empty text")
    if len(set(responses)) != len(responses):
        raise DataError(where, "responses", "contains the same response twice")
    carried = carried_fields(row, {"prompt", "responses", score_name}, where)
    pairs = rated_pairs(scores, min_diff, attribute=carried["attribute"])
    if ties:
        pairs += tied_pairs(scores, attribute=carried["attribute"])
    if not pairs:
        return None
    return Comparison(prompt=prompt, responses=tuple(responses), pairs=pairs, scores=tuple(scores), source=where,
                      **carried)


def rated_pairs(scores: Sequence[float | None], min_diff: float, attribute: str | None = None) -> tuple[Pair, ...]:
    """Every ordered pair whose scores differ by at least ``min_diff`` (unrated ``None`` entries skipped)."""
    return tuple(
        Pair(i, j, scores[i] - scores[j], attribute=attribute)
        for i in range(len(scores)) for j in range(len(scores))
        if scores[i] is not None and scores[j] is not None and scores[i] - scores[j] >= max(min_diff, 1e-12)
    )


def tied_pairs(scores: Sequence[float | None], attribute: str | None = None) -> tuple[Pair, ...]:
    """One tie pair ``(i, j)``, i < j, per two responses with equal scores (a tie's order carries no meaning)."""
    n = len(scores)
    return tuple(Pair(i, j, tie=True, attribute=attribute) for i in range(n) for j in range(i + 1, n)
                 if scores[i] is not None and scores[i] == scores[j])


def from_rankings(row: dict, where: str, ctx: FormatContext) -> Comparison | None:
    """``prompt, responses`` with ``ranks`` (1 = best) or, without ranks, best first.

    Equal ranks are ties: one ``Pair(i, j, tie=True)`` per two tied responses, besides the strict pairs."""
    n = len(list_field(row, "responses", where))
    if row.get("ranks") is None:
        ranks = list(range(1, n + 1))
    else:
        ranks = [number(v, where, f"ranks[{i}]") for i, v in enumerate(list_field(row, "ranks", where))]
    comparison = _scored(dict(row, ranks=ranks), where, [-r for r in ranks], "ranks", 1e-12, ties=True)
    # Margins of rankings are rank gaps; they carry no rating scale, so BT uses none.
    if comparison is None:
        return None
    return dataclasses.replace(comparison, pairs=tuple(p._replace(margin=0.0) for p in comparison.pairs))


def from_ratings(row: dict, where: str, ctx: FormatContext) -> Comparison | None:
    """``prompt, responses, ratings``: pairs where ratings differ by at least ``min_rating_diff``."""
    name = "ratings" if "ratings" in row or "scores" not in row else "scores"
    scores = [rating(v, where, f"{name}[{i}]", ctx) for i, v in enumerate(list_field(row, name, where))]
    return _scored(row, where, scores, name, ctx.min_rating_diff)


def detect_format(row: dict, where: str) -> str:
    """Guess the format from a row's columns."""
    keys = set(row)
    if benchmark := detect_benchmark(keys):  # a public benchmark, read as distributed (data/benchmarks.py)
        return benchmark
    if "winner_model_a" in keys or ({"response_a", "response_b"} <= keys and "winner" in keys):
        return "ab"
    if "responses" in keys:
        return "ratings" if keys & {"ratings", "scores"} else "rankings"
    if keys & {"chosen", "rejected"}:
        if isinstance(row.get("chosen", row.get("rejected")), list):
            return "chat"
        return "pairs" if "prompt" in keys else "implicit_prompt"
    if "prompt" in keys and keys & {"response", "image"}:
        return "item_ratings"
    if (keys & {"completions", "steps"} and keys & {"labels", "ratings"}) or {"input", "label"} <= keys \
            or isinstance(row.get("label"), dict):
        return "stepwise"  # solutions with a label per step: rewardlab.data.stepwise
    benchmarks = "; ".join(f"{name}: {', '.join(sorted(fields))}" for name, fields in SIGNATURES)
    raise DataError(where, None, f"cannot tell the format from columns {sorted(keys)}; tried every format "
                    f"({', '.join(DATA_FORMATS.names())}): expected prompt/chosen/rejected, chosen/rejected "
                    "dialogues, prompt/responses with ranks or ratings, prompt/response_a/response_b/winner, "
                    "prompt/response (or image) with rating columns, or a benchmark's fields "
                    f"({benchmarks}) (set data.format and data.columns)")


GROUPED_FORMATS = ("item_ratings",)  # rows hold one response each; see rewardlab.data.item_ratings


def get_format(name: str) -> Callable[[dict, str, FormatContext], Comparison | None]:
    """The row converter registered under ``name`` (:data:`rewardlab.contracts.registry.DATA_FORMATS`);
    raises ``ValueError`` listing valid names."""
    return DATA_FORMATS.get(name)
