"""The reward server's work, with no HTTP in it: the served models and what each endpoint computes.

:class:`RewardService` holds the served models by name (the first is the default), each a :class:`ServedModel`
with its dynamic batcher (:mod:`rewardlab.serve.batcher`) and, with ``--model-process``, its worker process
(:mod:`rewardlab.serve.worker`). Its methods take validated request bodies (:mod:`rewardlab.serve.schemas`)
and return reply bodies (:mod:`rewardlab.serve.responses`); the app (:mod:`rewardlab.serve.app`) only routes
requests to them and turns what they raise into status codes:

- :class:`RequestError`, a ``ValueError``: the client's mistake, with a message naming the item and field
  (422); :class:`TooLarge`, one of them: a request over a size limit (413);
- :class:`~rewardlab.serve.batcher.Overloaded`: the model's queue is full, or the server is shutting down
  (503 with ``Retry-After``);
- :class:`~rewardlab.serve.worker.WorkerGone`: the model's worker process has exited (503).

Input is checked and encoded before it reaches the batcher, so a bad request never shares a forward pass with
good ones.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import re
import time

import numpy as np
from anyio import to_thread

from rewardlab.contracts.schema import Comparison, Pair
from rewardlab.models.image_items import ImageTextItems
from rewardlab.scoring import NORMALIZATIONS, render_item
from rewardlab.serve.batcher import DynamicBatcher
from rewardlab.serve.config import ServeConfig
from rewardlab.serve.metrics import Metrics
from rewardlab.serve.responses import compare_reply, openrlhf_reply, score_reply
from rewardlab.serve.schemas import CompareRequest, OpenRLHFRequest, ScoreRequest
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


class ServedModel:
    """One served model: its scorer, its batcher, where it came from, and its worker process if it has one."""

    def __init__(self, name: str, path: str, reward_model, batcher: DynamicBatcher,
                 process: ModelProcess | None = None):
        self.name, self.path, self.rm, self.batcher, self.process = name, path, reward_model, batcher, process
        processor = reward_model.processor
        while hasattr(processor, "inner"):  # a personalised model wraps its kind's processor
            processor = processor.inner
        self.takes_images = isinstance(processor, ImageTextItems)  # its responses are images

    def response(self, value: object, where: str) -> object:
        """A response as the model takes it: an image model's from its data URL (:func:`inline_image`)."""
        return inline_image(value, where) if self.takes_images else value

    @property
    def healthy(self) -> bool:
        return self.process is None or self.process.alive

    def judge(self, comparisons: list) -> list:
        """``RewardModel.judge`` where the model's forward passes run (its worker process, or here)."""
        return (self.rm if self.process is None else self.process).judge(comparisons)

    def info(self) -> dict:
        meta = self.rm.metadata
        norms = [n for n in NORMALIZATIONS if n != "zscore" or "reward_mean" in meta]
        return {"name": self.name, "path": self.path, "kind": meta.get("kind", "text"), "heads": list(self.rm.heads),
                "members": len(self.rm.model.members) if self.rm.is_ensemble else None,
                "labelers": self.rm.labelers if self.rm.personalized else None,
                "pairwise": self.rm.kind.prepare is not None, "normalizations": norms}

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

    async def rows(self, prompts: list, responses: list, labelers: list | None = None
                   ) -> tuple[np.ndarray, list[str], int]:
        """Rewards (n, H) of the items, the rendered prompts, and how many items were truncated.

        Encoding runs on a worker thread; the batcher's future is awaited. Raises :class:`RequestError` for
        items the model's processor refuses, :class:`~rewardlab.serve.batcher.Overloaded` for a full queue."""
        def encode():
            texts = [render_item(self.rm.processor.render_chat, p, r) for p, r in zip(prompts, responses)]
            ps, rs = [t[0] for t in texts], [t[1] for t in texts]
            items, truncated = self.rm.processor.encode_items(ps, self.rm.with_labelers(rs, labelers))
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
        return await asyncio.wrap_future(future), rendered, truncated


class RewardService:
    """The served models and what the server computes with them (see the module docstring).

    Args:
        models: loaded :class:`~rewardlab.scoring.RewardModel` s by name; the first is the default.
        cfg: the server's options: request limits, batching, ``/get_reward``'s normalisation.
        paths: each model's folder, as :meth:`models` reports it.
        processes: worker processes (:class:`~rewardlab.serve.worker.ModelProcess`) by model name; a model with
            one is scored there, and :meth:`close` stops it.
    """

    def __init__(self, models: dict[str, object], cfg: ServeConfig = ServeConfig(),
                 paths: dict[str, str] | None = None, processes: dict[str, ModelProcess] | None = None):
        if not models:
            raise ValueError("a reward service needs at least one model")
        self.cfg, self.metrics = cfg, Metrics()
        paths, processes = paths or {}, processes or {}
        self.served = {name: ServedModel(name, paths.get(name, ""), rm, DynamicBatcher(
            rm, cfg.batcher, self.metrics, name, processes.get(name)), processes.get(name))
            for name, rm in models.items()}
        self.default = next(iter(self.served))

    def pick(self, name: str | None) -> ServedModel:
        """The served model a request names (``None``: the default)."""
        if name is None:
            return self.served[self.default]
        if name not in self.served:
            raise RequestError(f"model: {name!r} is not served; models: {', '.join(self.served)}")
        return self.served[name]

    def check_sizes(self, texts: list[tuple[str, object]], n: int, what: str) -> None:
        """Raise :class:`TooLarge` for over ``max_items`` items, or a text (where, text) over ``max_text_chars``."""
        if n > self.cfg.max_items:
            raise TooLarge(f"{what}: {n} items; at most {self.cfg.max_items} per request (--max-items); "
                           "split the request")
        for where, text in texts:
            size = len(text) if isinstance(text, str) else sum(len(m["content"]) for m in text)
            if size > self.cfg.max_text_chars:
                raise TooLarge(f"{where}: {size} characters; at most {self.cfg.max_text_chars} are accepted "
                               "(--max-text-chars)")

    async def score(self, body: ScoreRequest) -> dict:
        """``POST /v1/score``: the items' scores in item order (see :func:`~rewardlab.serve.responses.score_reply`)."""
        s = self.pick(body.model)
        self.check_sizes([(f"items[{i}].{f}", getattr(it, f)) for i, it in enumerate(body.items)
                          for f in ("prompt", "response")], len(body.items), "items")
        if s.rm.kind.prepare is not None:
            raise RequestError(f"model {s.name!r} is pairwise (model.kind={s.rm.kind.name}): it judges pairs, "
                               "not single responses; use POST /v1/compare")
        s.check_items(body.items, body.unknown_labeler)
        s.check_normalize(body.normalize, "normalize")
        responses = [s.response(it.response, f"items[{i}].response") for i, it in enumerate(body.items)]
        rows, prompts, truncated = await s.rows([it.prompt for it in body.items], responses,
                                                [it.labeler for it in body.items])
        return score_reply(s.rm, s.name, body, rows, prompts, truncated)

    async def compare(self, body: CompareRequest) -> dict:
        """``POST /v1/compare``: P(a), P(b), P(tie) per pair, from the outcome model of any kind."""
        s = self.pick(body.model)
        self.check_sizes([(f"items[{i}].{f}", getattr(it, f)) for i, it in enumerate(body.items)
                          for f in ("prompt", "response_a", "response_b")], len(body.items), "items")
        s.check_items(body.items, body.unknown_labeler)
        comparisons = [Comparison(it.prompt, (s.response(it.response_a, f"items[{i}].response_a"),
                                              s.response(it.response_b, f"items[{i}].response_b")),
                                  (Pair(0, 1),), labeler=it.labeler) for i, it in enumerate(body.items)]
        try:
            judged = await to_thread.run_sync(s.judge, comparisons)
        except (TypeError, ValueError) as err:
            raise RequestError(str(err)) from None
        return compare_reply(s.rm, s.name, body.items, judged)

    async def openrlhf(self, body: OpenRLHFRequest) -> dict:
        """``POST /get_reward``, OpenRLHF's remote reward model, scored by the default model.

        OpenRLHF sends each ``query`` as the full chat-templated prompt + response text. Where ``prompts[i]`` is
        a prefix of ``query[i]`` the rest is scored as the response to that prompt; otherwise (no prompts, or a
        prompt that is not a prefix) the whole query is scored as the response to an empty prompt."""
        s = self.served[self.default]
        n = len(body.query)
        if body.prompts is not None and len(body.prompts) != n:
            raise RequestError(f"prompts: got {len(body.prompts)} prompts for {n} queries; send one per query")
        self.check_sizes([(f"query[{i}]", q) for i, q in enumerate(body.query)], n, "query")
        if n == 0:  # nothing to score (a loop whose batch was filtered away): OpenRLHF's own server answers so
            return {"rewards": [], "scores": [], "extra_logs": {}}
        prompts, responses = [], []
        for i, q in enumerate(body.query):
            p = body.prompts[i] if body.prompts is not None else ""
            p = p if p and q.startswith(p) else ""  # not a prefix: score the whole text
            prompts.append(p)
            responses.append(q[len(p):])
        if s.takes_images:
            raise RequestError(f"model {s.name!r} scores images: OpenRLHF's text queries cannot reach it; "
                               "use POST /v1/score with data URLs")
        rows, rendered, _ = await s.rows(prompts, responses)
        return openrlhf_reply(s.rm, rows, rendered, self.cfg.openrlhf_normalize)

    def health(self) -> tuple[bool, dict]:
        """Whether every model can score (no worker process has exited), and ``GET /health``'s body."""
        down = [n for n, s in self.served.items() if not s.healthy]
        body = {"status": "ok" if not down else f"worker process exited: {', '.join(down)}",
                "models": list(self.served), "queue_items": {n: s.batcher.queued_items for n, s in self.served.items()}}
        return not down, body

    def models(self) -> dict:
        """``GET /v1/models``: the default model's name, and each model's heads, labelers and normalisations."""
        return {"default": self.default, "models": [s.info() for s in self.served.values()]}

    def close(self, timeout: float = 60) -> None:
        """Refuse new requests, score the queued ones, then stop each batcher and worker process."""
        for s in self.served.values():
            s.batcher.close(timeout)
            if s.process is not None:
                s.process.close()


def parse_model_specs(specs: list[str]) -> dict[str, str]:
    """``["DIR", "NAME=DIR", ...]`` -> {name: dir}; a bare DIR is named ``default``."""
    out: dict[str, str] = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep:
            name, path = "default", spec
        if not name or not path:
            raise ValueError(f"--model {spec!r}: expected DIR or NAME=DIR")
        if name in out:
            raise ValueError(f"--model: the name {name!r} is used twice; name each model with NAME=DIR")
        out[name] = path
    if not out:
        raise ValueError("serve needs at least one --model")
    return out


def load_models(specs: dict[str, str], device: str | None = None, model_process: bool = False
                ) -> tuple[dict[str, object], dict[str, ModelProcess]]:
    """Load each {name: dir}; bf16 weights on GPUs that support it. With ``model_process`` each model also
    gets a worker process that loads it on ``device``, and the copy here stays on the CPU."""
    import torch

    from rewardlab.scoring import RewardModel

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.startswith("cuda") and torch.cuda.is_bf16_supported() else None
    here = "cpu" if model_process else device
    models = {name: RewardModel.from_pretrained(path, device=here, dtype=None if model_process else dtype)
              for name, path in specs.items()}
    processes = {}
    try:
        for name, path in specs.items() if model_process else ():
            processes[name] = ModelProcess(path, device, str(dtype).removeprefix("torch.") if dtype else None, name)
    except Exception:
        for process in processes.values():
            process.close()
        raise
    return models, processes
