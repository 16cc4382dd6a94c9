"""Request bodies of the reward server, validated by pydantic: strict types, unknown fields rejected (except on
the bodies other programs send as they are: OpenRLHF's and the inference engines').

A text is a string or a conversation: a non-empty list of OpenAI chat messages (``{"role", "content"}``, with
OpenAI's optional keys). The server renders conversations with the reward model's own chat template
(:func:`rewardlab.scoring.render_item`), which also checks each message: a key OpenAI's messages do not have is
refused naming the item, the message and the key.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PlainValidator, StrictStr
from pydantic.json_schema import WithJsonSchema

from rewardlab.contracts.schema import unicode_problem
from rewardlab.scoring import NORMALIZATIONS

TEXT_HELP = 'a string or a non-empty list of chat messages ({"role": str, "content": str, ...})'


def _unicode(value: str) -> str:
    if problem := unicode_problem(value):
        raise ValueError(problem)
    return value


def _text(value: Any) -> str | list[dict]:
    if isinstance(value, str):
        return _unicode(value)
    if isinstance(value, list) and value:  # messages: checked where they are rendered, naming item and key
        return value
    raise ValueError(f"must be {TEXT_HELP}, got {type(value).__name__}" + (" (empty)" if value == [] else ""))


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
    """Two responses to one prompt, judged A / B / tie (as ``labeler`` would, for personalised models); each text a
    string or a message list, as on ``/v1/score``."""

    model_config = ConfigDict(extra="forbid")
    prompt: Text
    response_a: Text
    response_b: Text
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


def _engine_input(value: Any) -> str | list[str]:
    if isinstance(value, str):
        return _unicode(value)
    if isinstance(value, list) and value and all(isinstance(t, str) for t in value):
        for t in value:
            _unicode(t)
        return value
    raise ValueError("must be a string or a non-empty list of strings: rewardlab reads text, not token ids (its "
                     "tokenizer may not be the client's)")


EngineInput = Annotated[Any, PlainValidator(_engine_input), WithJsonSchema({"anyOf": [
    {"type": "string"}, {"type": "array", "items": {"type": "string"}}]})]


class EngineRequest(BaseModel):
    """The body inference engines take for reward models: vLLM's ``POST /classify`` and ``/pooling``
    (completion form ``input``, chat form ``messages``), SGLang's ``POST /v1/embeddings``.

    ``input`` is one text or a list (each already rendered, e.g. with a chat template: scored as a response to an
    empty prompt, as ``/get_reward`` scores a query without its prompt); ``messages`` one conversation whose
    last message is the reply scored. ``use_activation`` (vLLM >= 0.11.2; ``activation`` before it) asks for the
    sigmoid of each reward; the engines' default is on. ``model`` picks a served model by name or folder; a
    server with one model answers whatever the client names (verl sends its own path of the checkpoint). Other
    keys engines take (``truncate_prompt_tokens``, ``user``, ``priority``, ...) are ignored, so clients keep
    working across versions."""

    model_config = ConfigDict(extra="ignore")
    model: Str | None = None
    input: EngineInput | None = None
    messages: list[Any] | None = None
    use_activation: bool | None = None
    activation: bool | None = None
    encoding_format: Literal["float"] = "float"

    def activated(self) -> bool:
        """Whether rewards go through a sigmoid: ``use_activation``, else ``activation``, else on (vLLM's default)."""
        return next((v for v in (self.use_activation, self.activation) if v is not None), True)

    def texts(self) -> tuple[list[object], list[object]]:
        """(prompts, responses) to score: each ``input`` text as a response to an empty prompt, or ``messages``
        split before its last message. Raises ``ValueError`` for neither or both, or a last message that is not
        the assistant's after at least one other."""
        if (self.input is None) == (self.messages is None):
            raise ValueError("input, messages: send one of them (input: a text or a list of texts; messages: a "
                             "conversation ending with the assistant's reply)")
        if self.input is not None:
            texts = [self.input] if isinstance(self.input, str) else list(self.input)
            return [""] * len(texts), texts
        last = self.messages[-1] if self.messages else None
        if len(self.messages) < 2 or not isinstance(last, dict) or last.get("role") != "assistant":
            raise ValueError("messages: end the conversation with the assistant's reply to score, after at least "
                             "one message it answers")
        return [self.messages[:-1]], [[last]]


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
