"""One served model and how a request's texts reach it: rendered, checked, cut to what the model reads, encoded in
bounded chunks and queued for its batcher. No HTTP here (see :mod:`rewardlab.serve.service`).

Memory follows tokens, not bytes: each long text is cut to the head and tail the model can read before it is
tokenised (:mod:`rewardlab.serve.precut`), and a request's items are encoded (or judged) a chunk of at most
:data:`~rewardlab.serve.precut.CHUNK_CHARS` characters at a time, so a text that cannot be cut costs one chunk's
tokenising, not the whole request's.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import re
import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from anyio import to_thread

from rewardlab.contracts.schema import Comparison, Pair
from rewardlab.models.image_items import ImageTextItems
from rewardlab.scoring import NORMALIZATIONS
from rewardlab.scoring_inputs import render_items
from rewardlab.serve.batcher import DynamicBatcher
from rewardlab.serve.precut import CHUNK_CHARS, PreCut
from rewardlab.serve.worker import ModelProcess


class RequestError(ValueError):
    """A mistake in a request (the app answers 422); the message names the item and field, and the fix."""


class TooLarge(RequestError):
    """A request over one of the server's size limits (the app answers 413)."""


DATA_URL = re.compile(r"data:image/[\w.+-]+;base64,", re.IGNORECASE)


def inline_image(value: object, where: str) -> bytes:
    """An image in a request: a data URL (``data:image/png;base64,...``) -> its encoded bytes.

    The server never reads a path or fetches a URL that a request names: that would let any client probe this
    machine's files or make it fetch from inside its network.

    Example:
        >>> inline_image("data:image/png;base64,iVBORw0K", "items[0].response")
        b'\\x89PNG\\r\\n'
    """
    if isinstance(value, str) and (match := DATA_URL.match(value)):
        try:
            return base64.b64decode(value[match.end():], validate=True)
        except binascii.Error:
            raise RequestError(f"{where}: the data URL's base64 does not decode") from None
    raise RequestError(f"{where}: this model scores images: send each inline as a data URL "
                       "(data:image/png;base64,...); the server reads no paths or URLs")


def chunks(sizes: Sequence[int], limit: int = CHUNK_CHARS) -> list[range]:
    """Consecutive index ranges whose sizes add up to at most ``limit`` (an item over it gets a range of its own).

    >>> chunks([5, 5, 5, 20, 1], limit=10)
    [range(0, 2), range(2, 3), range(3, 4), range(4, 5)]
    """
    out, start, total = [], 0, 0
    for i, size in enumerate(sizes):
        if i > start and total + size > limit:
            out.append(range(start, i))
            start, total = i, 0
        total += size
    if start < len(sizes):
        out.append(range(start, len(sizes)))
    return out


def _size(text: object) -> int:
    return len(text) if isinstance(text, (str, bytes)) else 0


@dataclass(frozen=True)
class Scored:
    """What a served model computed for a request's items."""

    rows: np.ndarray  # rewards (n, H) in item order; an ensemble's (n, H·(K+1)): the mean's H columns, then each member's
    prompts: list[str]  # the rendered prompts, whole (prompt_mean groups by them)
    truncated: int  # items the model's own rule truncated
    tokens: int  # tokens of the encoded items (the engines' usage)


class ServedModel:
    """One served model: its scorer, its batcher, its pre-cut, where it came from and its worker process if any."""

    def __init__(self, name: str, path: str, reward_model, batcher: DynamicBatcher,
                 process: ModelProcess | None = None):
        self.name, self.path, self.rm, self.batcher, self.process = name, path, reward_model, batcher, process
        processor = reward_model.processor
        while hasattr(processor, "inner"):  # a personalised model wraps its kind's processor
            processor = processor.inner
        self.takes_images = isinstance(processor, ImageTextItems)  # its responses are images
        self.precut = PreCut.of(processor)  # None: texts reach the encoder whole

    def response(self, value: object, where: str) -> object:
        """A response as the model takes it: an image model's from its data URL (:func:`inline_image`)."""
        return inline_image(value, where) if self.takes_images else value

    @property
    def healthy(self) -> bool:
        return self.process is None or self.process.alive

    @property
    def pairwise(self) -> bool:
        return self.rm.kind.prepare is not None

    @property
    def stepwise(self) -> bool:
        """A process reward model: ``/v1/score`` also returns each step's probability."""
        return hasattr(self.rm.model, "step_probabilities")

    def step_rewards(self, prompts: list, responses: list) -> list[list[float | None]]:
        """Each response's steps (split at the model's separator) and their P(correct), None past what it reads."""
        steps = [self.rm.processor.split_steps(r, f"items[{i}].response") for i, r in enumerate(responses)]
        probs = self.rm.score_steps_batch(prompts, steps)
        return [[None if p != p else p for p in row] for row in probs]  # NaN is no JSON

    def info(self) -> dict:
        meta = self.rm.metadata
        norms = [n for n in NORMALIZATIONS if n != "zscore" or "reward_mean" in meta]
        return {"name": self.name, "path": self.path, "kind": meta.get("kind", "text"), "heads": list(self.rm.heads),
                "members": len(self.rm.model.members) if self.rm.is_ensemble else None,
                "labelers": self.rm.labelers if self.rm.personalized else None,
                "pairwise": self.pairwise, "normalizations": norms}

    def check_items(self, items: list, unknown_labeler: str = "population") -> None:
        """Raise :class:`RequestError` naming the item for an attribute the model lacks, or a labeler it cannot take."""
        heads = self.rm.heads
        for i, it in enumerate(items):
            if getattr(it, "attribute", None) is not None and it.attribute not in heads:
                raise RequestError(f"items[{i}].attribute: {it.attribute!r} is not a head of model {self.name!r}; "
                                   f"heads: {', '.join(heads)}")
            if it.labeler is not None:
                if not self.rm.personalized:
                    raise RequestError(f"items[{i}].labeler: model {self.name!r} is not personalised (it has no "
                                       "labeler table); leave labeler out")
                try:
                    self.rm.with_labelers([None], it.labeler, unknown_labeler)
                except ValueError as err:
                    raise RequestError(f"items[{i}].labeler: {err}") from None

    def check_normalize(self, normalize: str, field_name: str) -> None:
        try:  # a one-row dry run: raises for zscore on a model without reward statistics
            self.rm.normalize_scores(np.zeros((1, len(self.rm.heads))), normalize, [""])
        except ValueError as err:
            raise RequestError(f"{field_name}: {err}") from None

    def render(self, prompts: Sequence, responses: Sequence, where: str, fields=("prompt", "response")
               ) -> tuple[list[str], list[object]]:
        """Items as the model reads them (message lists rendered with its chat template); errors name ``where[i]``."""
        return render_items(self.rm.processor.render_chat, prompts, responses, where=where + "[{i}]", fields=fields)

    def cut(self, prompts: list, responses: list) -> tuple[list, list]:
        """The texts the encoder is handed: long ones cut to what it can read (:mod:`rewardlab.serve.precut`)."""
        return (prompts, responses) if self.precut is None else self.precut.items(prompts, responses)

    def encode(self, prompts: list, responses: list, labelers: list | None) -> tuple[list, int]:
        """Encoded items and how many the model truncated, a bounded chunk at a time (:func:`chunks`)."""
        items, truncated = [], 0
        for part in chunks([_size(p) + _size(r) for p, r in zip(prompts, responses)]):
            tagged = self.rm.with_labelers([responses[i] for i in part],
                                           None if labelers is None else [labelers[i] for i in part])
            got, cut = self.rm.processor.encode_items([prompts[i] for i in part], tagged)
            items += got
            truncated += cut
        return items, truncated

    async def rows(self, prompts: Sequence, responses: Sequence, labelers: list | None = None, *,
                   where: str = "items") -> Scored:
        """Rewards of the items (see :class:`Scored`). Rendering, cutting and encoding run on a worker thread; the
        batcher's future is awaited. Raises :class:`RequestError` for items the model refuses (naming
        ``where[i]``), :class:`~rewardlab.serve.batcher.Overloaded` for a full queue or a shutdown."""
        def encode():
            ps, rs = self.render(prompts, responses, where)
            items, truncated = self.encode(*self.cut(ps, rs), labelers)
            return ps, items, truncated

        start = time.perf_counter()
        with self.batcher.incoming():  # queued requests wait for this one (up to max_wait_ms)
            try:
                rendered, items, truncated = await to_thread.run_sync(encode)
            except (TypeError, ValueError) as err:
                raise RequestError(str(err)) from None
            if self.batcher.metrics is not None:
                self.batcher.metrics.timed("encode", self.name, time.perf_counter() - start)
            future = self.batcher.submit(items)  # raises Overloaded
        tokens = sum(self.rm.processor.cost(it) for it in items)
        return Scored(await asyncio.wrap_future(future), rendered, truncated, tokens)

    def judge(self, items: Sequence, fields=("prompt", "response_a", "response_b")) -> list:
        """``RewardModel.judge`` of (prompt, a, b) items where the model's passes run (its worker process, or here):
        rendered, cut and judged a bounded chunk at a time. Items carry ``labeler``."""
        prompts, a = self.render([it.prompt for it in items], [it.response_a for it in items], "items", fields[:2])
        _, b = self.render([it.prompt for it in items], [it.response_b for it in items], "items", fields[::2])
        a = [self.response(r, f"items[{i}].{fields[1]}") for i, r in enumerate(a)]
        b = [self.response(r, f"items[{i}].{fields[2]}") for i, r in enumerate(b)]
        cut_p, cut_ab = self.cut(prompts + prompts, a + b)
        n = len(prompts)
        comparisons = []
        for i, it in enumerate(items):
            same = cut_p[i] == cut_p[n + i]  # a text pair may keep a prompt whole beside one response only
            p, ra, rb = (cut_p[i], cut_ab[i], cut_ab[n + i]) if same else (prompts[i], a[i], b[i])
            comparisons.append(Comparison(p, (ra, rb), (Pair(0, 1),), labeler=it.labeler))
        judge = (self.rm if self.process is None else self.process).judge
        out = []
        for part in chunks([_size(c.prompt) + sum(map(_size, c.responses)) for c in comparisons]):
            out += judge([comparisons[i] for i in part])
        return out
