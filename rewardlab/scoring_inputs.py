"""What a reward model reads of a (prompt, response): plain text, or chat messages rendered with its template.

A prompt is a string or a list of messages; a response is a string, a list of messages, or (image + text
models) an image: a path, bytes or a PIL image, passed on as it is. A message is OpenAI's chat message:

    >>> chat_messages([{"role": "user", "content": "Hi", "name": "ada"}], "prompt")   # name: ignored
    [{'role': 'user', 'content': 'Hi'}]
    >>> chat_messages([{"role": "assistant", "content": "Hi", "refusal": None, "tool_calls": None}], "response")
    [{'role': 'assistant', 'content': 'Hi'}]
    >>> chat_messages([{"role": "assistant", "content": "Hi", "mood": "glad"}], "response", where="item 3")
    Traceback (most recent call last):
    ...
    ValueError: item 3: response[0] has an unknown key 'mood'; a message has role and content, and optionally ...

Only ``role`` and ``content`` are rendered: ``name`` and ``annotations`` carry nothing a reward model reads,
and tool calls, audio and refusals it cannot score are refused unless empty (``None`` or ``[]``, as OpenAI's
client writes them). One implementation serves :class:`~rewardlab.scoring.RewardModel`, the reward function
and the server.
"""

from __future__ import annotations

from typing import Callable, Sequence

from rewardlab.contracts.schema import unicode_problem

IGNORED_KEYS = ("name", "annotations")  # a participant's name, citations in the content: nothing to render
# what a reward model reading text cannot score, and what to do instead: accepted only when empty
UNSCORABLE_KEYS = {
    "tool_calls": "tool calls cannot be scored",
    "function_call": "function calls cannot be scored",
    "tool_call_id": "tool results cannot be scored",
    "audio": "audio cannot be scored",
    "refusal": "a refusal is scored from content: put its text there",
}


def chat_messages(value: list, field: str, *, where: str = "item") -> list[dict]:
    """``value`` checked as a non-empty list of chat messages, each reduced to ``{"role", "content"}``.

    Raises:
        ValueError: naming ``where``, the field, the message and the key: a message that is not a dict, lacks a
            string role or content, has an unknown key, or a non-empty key that cannot be scored.
    """
    if not value:
        raise ValueError(f"{where}: {field} is an empty list of messages")
    out = []
    for i, m in enumerate(value):
        at = f"{where}: {field}[{i}]"
        if not isinstance(m, dict):
            raise ValueError(f'{at} must be a message {{"role": str, "content": str}}, got {type(m).__name__}')
        for key in m:
            if key in UNSCORABLE_KEYS and m[key] not in (None, [], ""):
                raise ValueError(f"{at}.{key}: {UNSCORABLE_KEYS[key]} by a reward model that reads text; leave "
                                 f"{key} out (or null)")
            if key not in ("role", "content", *IGNORED_KEYS, *UNSCORABLE_KEYS):
                raise ValueError(f"{at} has an unknown key {key!r}; a message has role and content, and optionally "
                                 f"{' or '.join(IGNORED_KEYS)} (ignored)")
        for key in ("role", "content"):
            if key not in m:
                raise ValueError(f"{at} has no {key!r}")
            if not isinstance(m[key], str):
                raise ValueError(f"{at}.{key} must be a string, got {type(m[key]).__name__}")
        if not m["role"]:
            raise ValueError(f"{at}.role is empty")
        if problem := unicode_problem(m["content"]):
            raise ValueError(f"{at}.content is {problem}")
        out.append({"role": m["role"], "content": m["content"]})
    return out


def render_item(render_chat: Callable[[list, bool], str], prompt: str | list, response: str | list | bytes, *,
                where: str = "item", fields: tuple[str, str] = ("prompt", "response")) -> tuple[str, object]:
    """A (prompt, response) as the model reads it: message lists checked (:func:`chat_messages`) and rendered
    with ``render_chat``; a response that is not a message list (text, an image) as it is.

    The response is the rendered full conversation minus the rendered prompt where the latter is its prefix
    (as the data loader does), else the messages' contents joined by newlines. Errors name ``where`` and the
    field (``fields``: how the prompt and the response are called there).

    Raises:
        TypeError: the prompt is neither a string nor a list.
        ValueError: a malformed message, or a prompt that is not valid Unicode.
    """
    if isinstance(prompt, list):
        history = chat_messages(prompt, fields[0], where=where)
        p = render_chat(history, True)
    elif isinstance(prompt, str):
        if problem := unicode_problem(prompt):
            raise ValueError(f"{where}: the {fields[0]} is {problem}")
        history, p = None, prompt
    else:
        raise TypeError(f"{where}: the {fields[0]} must be a string or a list of messages, got "
                        f"{type(prompt).__name__}")
    if not isinstance(response, list):  # text, or an image's bytes / path
        return p, response
    messages = chat_messages(response, fields[1], where=where)
    joined = "\n".join(m["content"] for m in messages)
    if history is None:
        return p, joined
    full = render_chat(history + messages, False)
    return p, full[len(p):] if full.startswith(p) else joined


def render_items(render_chat: Callable[[list, bool], str], prompts: Sequence[object], responses: Sequence[object],
                 *, where: str = "item {i}", fields: tuple[str, str] = ("prompt", "response")
                 ) -> tuple[list[str], list[object]]:
    """Aligned prompts and responses rendered by :func:`render_item`; errors name ``where`` formatted with the
    item's index ``i`` (``"items[{i}]"`` on the server)."""
    if len(prompts) != len(responses):
        raise ValueError(f"got {len(prompts)} prompts but {len(responses)} responses")
    rendered = [render_item(render_chat, p, r, where=where.format(i=i), fields=fields)
                for i, (p, r) in enumerate(zip(prompts, responses))]
    return [p for p, _ in rendered], [r for _, r in rendered]
