"""Request bodies of the reward server, validated by pydantic: strict types, unknown fields rejected.

A text is a string or a conversation (a non-empty list of ``{"role": ..., "content": ...}`` messages);
the server renders conversations with the reward model's own chat template
(:func:`rewardlab.scoring.render_item`).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PlainValidator, StrictStr
from pydantic.json_schema import WithJsonSchema

from rewardlab.contracts.schema import unicode_problem
from rewardlab.scoring import NORMALIZATIONS

TEXT_HELP = 'a string or a non-empty list of {"role": str, "content": str} messages'


def _unicode(value: str) -> str:
    if problem := unicode_problem(value):
        raise ValueError(problem)
    return value


def _text(value: Any) -> str | list[dict]:
    if isinstance(value, str):
        return _unicode(value)
    if isinstance(value, list) and value and all(
            isinstance(m, dict) and set(m) == {"role", "content"}
            and isinstance(m["role"], str) and isinstance(m["content"], str) for m in value):
        for m in value:
            _unicode(m["content"])
        return value
    raise ValueError(f"must be {TEXT_HELP}, got {type(value).__name__}")


Str = Annotated[StrictStr, AfterValidator(_unicode)]  # a string a tokenizer takes


Text = Annotated[Any, PlainValidator(_text), WithJsonSchema({"anyOf": [
    {"type": "string"},
    {"type": "array", "items": {"type": "object", "properties": {"role": {"type": "string"},
                                                                  "content": {"type": "string"}}}}]})]


class ScoreItem(BaseModel):
    """One (prompt, response) to score; ``attribute`` picks the head reported as its score."""

    model_config = ConfigDict(extra="forbid")
    prompt: Text
    response: Text
    labeler: Str | None = None
    attribute: Str | None = None


class ScoreRequest(BaseModel):
    """``POST /v1/score``: items, the served model to use (default: the first) and a normalisation.

    ``unknown_labeler``: a labeler a personalised model has no parameters for is scored with the
    population reward (``population``, the default; the response says so per item) or refused (``error``)."""

    model_config = ConfigDict(extra="forbid")
    items: list[ScoreItem] = Field(min_length=1)
    model: Str | None = None
    normalize: Literal[NORMALIZATIONS] = "none"  # type: ignore[valid-type]
    unknown_labeler: Literal["population", "error"] = "population"
    uncertainty_lambda: float = Field(1.0, ge=0.0, le=100.0)  # ensembles: conservative = mean - lambda * std


class CompareItem(BaseModel):
    """Two responses to one prompt, judged A / B / tie (as ``labeler`` would, for personalised models)."""

    model_config = ConfigDict(extra="forbid")
    prompt: Str
    response_a: Str
    response_b: Str
    labeler: Str | None = None


class CompareRequest(BaseModel):
    """``POST /v1/compare``: pairs to judge with the served model (default: the first)."""

    model_config = ConfigDict(extra="forbid")
    items: list[CompareItem] = Field(min_length=1)
    model: Str | None = None
    unknown_labeler: Literal["population", "error"] = "population"


class OpenRLHFRequest(BaseModel):
    """OpenRLHF's remote reward model body: full prompt + response texts, their prompts, and labels (unused).

    Other keys are ignored rather than refused: OpenRLHF versions add fields to this body, and its client
    must keep working unchanged (our own /v1/score refuses unknown fields)."""

    model_config = ConfigDict(extra="ignore")
    query: list[Str]
    prompts: list[Str] | None = None
    labels: list[Any] | None = None


def error_message(errors: list[dict]) -> str:
    """Pydantic errors as one line naming each place: ``items[3].response: must be ...; items[4]: ...``."""
    parts = []
    for e in errors:
        loc = [p for p in e.get("loc", ()) if p != "body"]
        where = ""
        for p in loc:
            where += f"[{p}]" if isinstance(p, int) else (f".{p}" if where else str(p))
        msg = str(e.get("msg", "invalid")).removeprefix("Value error, ")
        if e.get("type") == "extra_forbidden":
            msg = "unknown field; remove it"
        if e.get("type") == "json_invalid":
            where, msg = "body", f"not valid JSON ({e.get('ctx', {}).get('error', 'parse error')})"
        parts.append(f"{where or 'body'}: {msg}")
    return "; ".join(dict.fromkeys(parts))
