"""A small Python client of the reward server (standard library only: no extra dependency).

    >>> client = RewardClient("http://127.0.0.1:8000")                     # doctest: +SKIP
    >>> client.score(["How do I boil an egg?"], ["Simmer it for 9 minutes."])  # doctest: +SKIP
    [1.73]

For an image + text model, send each image as :func:`data_url` gives it (``client.score([prompt],
[data_url("cat.png")])``). Overload replies (503) and dropped connections are retried after the server's ``Retry-After`` (or an
exponential backoff), up to ``retries`` times; other errors raise :class:`ServerError` with the server's
message.
"""

from __future__ import annotations

import base64
import io
import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Sequence


def data_url(image, mime: str = "image/png") -> str:
    """An image as the server takes it for image + text models: a path or encoded bytes (PNG, JPEG, ...; say
    which with ``mime``) or a PIL image (sent as PNG) -> ``data:<mime>;base64,...``.

    >>> data_url(b"\\x89PNG")
    'data:image/png;base64,iVBORw=='
    """
    if hasattr(image, "save") and not isinstance(image, (str, bytes)) and not hasattr(image, "read_bytes"):
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        data, mime = buffer.getvalue(), "image/png"
    elif isinstance(image, (bytes, bytearray)):
        data = bytes(image)
    else:
        data = Path(image).read_bytes()
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


class ServerError(RuntimeError):
    """The server answered with an error: ``status`` and its message."""

    def __init__(self, status: int, message: str):
        super().__init__(f"reward server answered {status}: {message}")
        self.status = status


class RewardClient:
    """Talks to ``rewardlab serve`` at ``url``.

    Args:
        url: the server's base address, e.g. ``http://127.0.0.1:8000``.
        model: the served model's name (default: the server's default model).
        timeout: seconds to wait for one reply.
        retries: further attempts after a 503 or a connection error.
    """

    def __init__(self, url: str, *, model: str | None = None, timeout: float = 180.0, retries: int = 5):
        self.url, self.model, self.timeout, self.retries = url.rstrip("/"), model, timeout, retries

    def request(self, method: str, path: str, body: dict | None = None) -> dict | str:
        """One call with retries; the JSON reply (or the text, for ``/metrics``)."""
        data = None if body is None else json.dumps(body).encode()
        for attempt in range(self.retries + 1):
            req = urllib.request.Request(self.url + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as res:
                    text = res.read().decode()
                    return json.loads(text) if "json" in res.headers.get("Content-Type", "") else text
            except urllib.error.HTTPError as err:
                text = err.read().decode(errors="replace")
                if err.code != 503 or attempt == self.retries:
                    try:
                        text = json.loads(text).get("detail", text)
                    except (ValueError, AttributeError):
                        pass
                    raise ServerError(err.code, str(text)) from None
                wait = float(err.headers.get("Retry-After") or 2 ** attempt)
            except (urllib.error.URLError, ConnectionError, TimeoutError) as err:
                if attempt == self.retries:
                    reason = getattr(err, "reason", None) or err
                    raise ConnectionError(f"reward server at {self.url} did not answer {method} {path} in "
                                          f"{self.retries + 1} attempts: {reason}") from None
                wait = min(2 ** attempt * 0.5, 10.0)
            time.sleep(wait)
        raise AssertionError("unreachable")

    def score_items(self, items: Sequence[dict], *, normalize: str = "none") -> dict:
        """``POST /v1/score`` with raw item dicts; the whole reply."""
        body = {"items": list(items), "normalize": normalize}
        if self.model is not None:
            body["model"] = self.model
        return self.request("POST", "/v1/score", body)

    def score(self, prompts: Sequence, responses: Sequence, *, normalize: str = "none",
              attribute: str | None = None) -> list[float]:
        """Rewards of aligned prompts and responses (strings or chat message lists), in order."""
        if len(prompts) != len(responses):
            raise ValueError(f"got {len(prompts)} prompts but {len(responses)} responses")
        items = [{"prompt": p, "response": r} | ({"attribute": attribute} if attribute else {})
                 for p, r in zip(prompts, responses)]
        reply = self.score_items(items, normalize=normalize)
        return reply["normalized"] if normalize != "none" else reply["scores"]

    def health(self) -> dict:
        return self.request("GET", "/health")

    def models(self) -> dict:
        return self.request("GET", "/v1/models")

    def metrics(self) -> str:
        return self.request("GET", "/metrics")
