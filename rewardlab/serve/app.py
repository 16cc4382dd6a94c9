"""The reward server: a FastAPI app over one or more loaded reward models.

    rewardlab serve --model DIR [--model NAME=DIR ...] [--host 127.0.0.1] [--port 8000]

Endpoints:

    POST /v1/score     {"items": [{"prompt", "response", "labeler"?, "attribute"?}], "model"?, "normalize"?}
                       -> {"model", "scores": [...], "truncated", "attributes"? {head: [...]}, "normalized"?}
    POST /get_reward   OpenRLHF's remote reward model: {"query", "prompts", "labels"}
                       -> {"rewards": [...], "scores": [...], "extra_logs": {}}
    GET  /health       {"status": "ok", "models": [...], "queue_items": {...}}
    GET  /v1/models    the served models, their heads and normalisations
    GET  /metrics      Prometheus text (see :mod:`rewardlab.serve.metrics`)
    POST /v1/compare   {"items": [{"prompt", "response_a", "response_b", "labeler"?}], "model"?}
                       -> {"model", "outcome_model", "probabilities": [{"a", "b", "tie"}]}

Scores come back in item order. Items of concurrent requests share forward passes (see
:mod:`rewardlab.serve.batcher`). Bad input gets 422 (wrong types, unknown fields, unknown attribute
or labeler) or 413 (body, item count or text length over the limits), with a message naming the item and
field; a full queue gets 503 with ``Retry-After``. Input is checked and encoded before it reaches the
batcher, so a bad request never shares a forward pass with good ones. With ``--model-process`` each model's
forward passes run in a process of its own (:mod:`rewardlab.serve.worker`); if that process exits, requests
for the model get 503 and ``/health`` answers 503.

OpenRLHF sends each ``query`` as the full chat-templated prompt + response text. Where ``prompts[i]`` is a
prefix of ``query[i]`` the rest is scored as the response to that prompt; otherwise (no prompts, or a
prompt that is not a prefix) the whole query is scored as the response to an empty prompt.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import re
import time
from contextlib import asynccontextmanager

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from starlette.concurrency import run_in_threadpool

from rewardlab.data.image_items import ImageTextItems
from rewardlab.data.schema import Comparison, Pair
from rewardlab.reward_function import render_item
from rewardlab.scoring import NORMALIZATIONS
from rewardlab.serve.batcher import DynamicBatcher, Overloaded
from rewardlab.serve.config import ServeConfig
from rewardlab.serve.metrics import Metrics
from rewardlab.serve.schemas import CompareRequest, OpenRLHFRequest, ScoreRequest, error_message
from rewardlab.serve.worker import ModelProcess, WorkerGone

ENDPOINTS = ("/v1/score", "/get_reward", "/health", "/v1/models", "/metrics", "/v1/compare")


class ApiError(Exception):
    """An error reply: status, a message naming what is wrong, optional headers."""

    def __init__(self, status: int, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


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
            raise ApiError(422, f"{where}: the data URL's base64 does not decode") from None
    raise ApiError(422, f"{where}: this model scores images: send each inline as a data URL "
                        "(data:image/png;base64,...); the server reads no paths or URLs")


class Served:
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
                "labelers": self.rm.labelers if "personalization" in meta else None,
                "pairwise": self.rm.kind.prepare is not None, "normalizations": norms}

    def check_items(self, items: list, unknown_labeler: str = "population") -> None:
        """422 naming the item for an attribute the model lacks, or a labeler it cannot take."""
        heads = self.rm.heads
        for i, it in enumerate(items):
            if getattr(it, "attribute", None) is not None and it.attribute not in heads:
                raise ApiError(422, f"items[{i}].attribute: {it.attribute!r} is not a head of model {self.name!r}; "
                                    f"heads: {', '.join(heads)}")
            if it.labeler is not None:
                if "personalization" not in self.rm.metadata:
                    raise ApiError(422, f"items[{i}].labeler: model {self.name!r} is not personalised (it has no "
                                        "labeler table); leave labeler out")
                try:
                    self.rm.with_labelers([None], it.labeler, unknown_labeler)
                except ValueError as err:
                    raise ApiError(422, f"items[{i}].labeler: {err}") from None

    def check_normalize(self, normalize: str, field_name: str) -> None:
        try:  # a one-row dry run: raises for zscore on a model without reward statistics
            self.rm.normalize_scores(np.zeros((1, len(self.rm.heads))), normalize, [""])
        except ValueError as err:
            raise ApiError(422, f"{field_name}: {err}") from None

    async def rows(self, prompts: list, responses: list, labelers: list | None = None
                   ) -> tuple[np.ndarray, list[str], int]:
        """Rewards (n, H) of the items, the rendered prompts, and how many items were truncated."""
        def encode():
            texts = [render_item(self.rm.processor.render_chat, p, r) for p, r in zip(prompts, responses)]
            ps, rs = [t[0] for t in texts], [t[1] for t in texts]
            items, truncated = self.rm.processor.encode_items(ps, self.rm.with_labelers(rs, labelers))
            return ps, items, truncated

        start = time.perf_counter()
        with self.batcher.incoming():  # queued requests wait for this one (up to max_wait_ms)
            try:
                rendered, items, truncated = await run_in_threadpool(encode)
            except (TypeError, ValueError) as err:
                raise ApiError(422, str(err)) from None
            if self.batcher.metrics is not None:
                self.batcher.metrics.timed("encode", self.name, time.perf_counter() - start)
            future = self.batcher.submit(items)  # raises Overloaded
        return await asyncio.wrap_future(future), rendered, truncated


def _check_sizes(texts: list[tuple[str, object]], n: int, max_items: int, max_chars: int, what: str) -> None:
    if n > max_items:
        raise ApiError(413, f"{what}: {n} items; at most {max_items} per request (--max-items); split the request")
    for where, text in texts:
        size = len(text) if isinstance(text, str) else sum(len(m["content"]) for m in text)
        if size > max_chars:
            raise ApiError(413, f"{where}: {size} characters; at most {max_chars} are accepted (--max-text-chars)")


class LimitsAndMetrics:
    """ASGI middleware: 413 for bodies over the limit (read, bounded, before any parsing); request metrics."""

    def __init__(self, app, max_body_bytes: int, metrics: Metrics):
        self.app, self.limit, self.metrics = app, max_body_bytes, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start, status = time.perf_counter(), [500]
        endpoint = scope["path"] if scope["path"] in ENDPOINTS else "other"

        async def send_and_record(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            if scope["method"] == "POST":
                body = await self._read_body(scope, receive)
                if body is None:
                    too_large = JSONResponse({"detail": f"body: over {self.limit} bytes (--max-body-bytes); "
                                              "split the request"}, status_code=413)
                    return await too_large(scope, receive, send_and_record)
                replayed = False

                async def receive_body():
                    nonlocal replayed
                    if not replayed:
                        replayed = True
                        return {"type": "http.request", "body": body, "more_body": False}
                    return await receive()

                return await self.app(scope, receive_body, send_and_record)
            return await self.app(scope, receive, send_and_record)
        finally:
            self.metrics.request(endpoint, status[0], time.perf_counter() - start)

    async def _read_body(self, scope, receive) -> bytes | None:
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return None
        body, more = bytearray(), True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.limit:
                return None
        return bytes(body)


def create_app(models: dict[str, object], cfg: ServeConfig = ServeConfig(), paths: dict[str, str] | None = None,
               processes: dict[str, ModelProcess] | None = None) -> FastAPI:
    """The app over loaded :class:`~rewardlab.scoring.RewardModel` s by name (the first is the default); a
    model with a worker process in ``processes`` is scored there (the app stops those processes on shutdown)."""
    if not models:
        raise ValueError("create_app needs at least one model")
    metrics = Metrics()
    processes = processes or {}
    served = {name: Served(name, (paths or {}).get(name, ""), rm,
                           DynamicBatcher(rm, cfg.batcher, metrics, name, processes.get(name)), processes.get(name))
              for name, rm in models.items()}
    default = next(iter(served))

    @asynccontextmanager
    async def lifespan(app):
        yield
        # uvicorn has already waited for in-flight requests; drain whatever is still queued, then stop.
        for s in served.values():
            await run_in_threadpool(s.batcher.close, 60)
            if s.process is not None:
                await run_in_threadpool(s.process.close)

    app = FastAPI(title="rewardlab reward server", lifespan=lifespan)
    app.state.served, app.state.metrics = served, metrics
    app.add_middleware(LimitsAndMetrics, max_body_bytes=cfg.max_body_bytes, metrics=metrics)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, err: ApiError):
        return JSONResponse({"detail": err.message}, status_code=err.status, headers=err.headers)

    @app.exception_handler(Overloaded)
    async def _overloaded(request: Request, err: Overloaded):
        return JSONResponse({"detail": str(err)}, status_code=503,
                            headers={"Retry-After": str(max(1, round(err.retry_after)))})

    @app.exception_handler(WorkerGone)
    async def _worker_gone(request: Request, err: WorkerGone):
        return JSONResponse({"detail": str(err)}, status_code=503)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, err: RequestValidationError):
        errors = err.errors()
        return JSONResponse({"detail": error_message(errors),
                             "errors": [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in errors]},
                            status_code=422)

    def pick(name: str | None) -> Served:
        if name is None:
            return served[default]
        if name not in served:
            raise ApiError(422, f"model: {name!r} is not served; models: {', '.join(served)}")
        return served[name]

    @app.post("/v1/score")
    async def score(body: ScoreRequest) -> dict:
        s = pick(body.model)
        _check_sizes([(f"items[{i}].{f}", getattr(it, f)) for i, it in enumerate(body.items)
                      for f in ("prompt", "response")], len(body.items), cfg.max_items, cfg.max_text_chars, "items")
        if s.rm.kind.prepare is not None:
            raise ApiError(422, f"model {s.name!r} is pairwise (model.kind={s.rm.kind.name}): it judges pairs, "
                                "not single responses; use POST /v1/compare")
        s.check_items(body.items, body.unknown_labeler)
        s.check_normalize(body.normalize, "normalize")
        labelers = [it.labeler for it in body.items]
        responses = [s.response(it.response, f"items[{i}].response") for i, it in enumerate(body.items)]
        rows, prompts, truncated = await s.rows([it.prompt for it in body.items], responses, labelers)
        heads = s.rm.heads
        members, rows = rows[:, len(heads):], rows[:, : len(heads)]  # ensembles: each member's columns follow
        idx = np.arange(len(rows))
        col = np.array([heads.index(it.attribute) if it.attribute else len(heads) - 1 for it in body.items], dtype=int)
        out = {"model": s.name, "scores": rows[idx, col].tolist(), "truncated": truncated}
        if len(heads) > 1:
            out["attributes"] = {h: rows[:, j].tolist() for j, h in enumerate(heads)}
        if "personalization" in s.rm.metadata:  # which reward scored each item
            out["reward_source"] = [s.rm.labeler_source(u) for u in labelers]
        if s.rm.is_ensemble:  # member disagreement on each item's reported head
            per_member = members.reshape(len(rows), -1, len(heads))[idx, :, col].T  # (K, n)
            spread = s.rm.uncertainty(per_member, body.uncertainty_lambda)
            out["uncertainty"] = {k: spread[k].tolist() for k in ("std", "conservative", "min")}
        if body.normalize != "none":
            out["normalize"] = body.normalize
            out["normalized"] = s.rm.normalize_scores(rows, body.normalize, prompts)[idx, col].tolist()
        return out

    @app.post("/get_reward")
    async def openrlhf(body: OpenRLHFRequest) -> dict:
        s = served[default]
        n = len(body.query)
        if body.prompts is not None and len(body.prompts) != n:
            raise ApiError(422, f"prompts: got {len(body.prompts)} prompts for {n} queries; send one per query")
        texts = [(f"query[{i}]", q) for i, q in enumerate(body.query)]
        _check_sizes(texts, n, cfg.max_items, cfg.max_text_chars, "query")
        if n == 0:  # nothing to score (a loop whose batch was filtered away): OpenRLHF's own server answers so
            return {"rewards": [], "scores": [], "extra_logs": {}}
        prompts, responses = [], []
        for i, q in enumerate(body.query):
            p = body.prompts[i] if body.prompts is not None else ""
            p = p if p and q.startswith(p) else ""  # not a prefix: score the whole text (see module docstring)
            prompts.append(p)
            responses.append(q[len(p):])
        if s.takes_images:
            raise ApiError(422, f"model {s.name!r} scores images: OpenRLHF's text queries cannot reach it; "
                                "use POST /v1/score with data URLs")
        rows, rendered, _ = await s.rows(prompts, responses)
        rewards = s.rm.normalize_scores(rows, cfg.openrlhf_normalize, rendered)[:, -1].tolist()
        return {"rewards": rewards, "scores": rewards, "extra_logs": {}}

    @app.get("/health")
    async def health():
        down = [n for n, s in served.items() if not s.healthy]
        body = {"status": "ok" if not down else f"worker process exited: {', '.join(down)}", "models": list(served),
                "queue_items": {n: s.batcher.queued_items for n, s in served.items()}}
        return body if not down else JSONResponse(body, status_code=503)

    @app.get("/v1/models")
    async def list_models() -> dict:
        return {"default": default, "models": [s.info() for s in served.values()]}

    @app.get("/metrics")
    async def prometheus() -> PlainTextResponse:
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4")

    @app.post("/v1/compare")
    async def compare(body: CompareRequest) -> dict:
        """P(a), P(b), P(tie) per pair: from the outcome model of any kind (ties only from tie-aware ones)."""
        s = pick(body.model)
        _check_sizes([(f"items[{i}].{f}", getattr(it, f)) for i, it in enumerate(body.items)
                      for f in ("prompt", "response_a", "response_b")], len(body.items), cfg.max_items,
                     cfg.max_text_chars, "items")
        s.check_items(body.items, body.unknown_labeler)
        comparisons = [Comparison(it.prompt, (s.response(it.response_a, f"items[{i}].response_a"),
                                              s.response(it.response_b, f"items[{i}].response_b")),
                                  (Pair(0, 1),), labeler=it.labeler) for i, it in enumerate(body.items)]
        try:
            judged = await run_in_threadpool(s.judge, comparisons)
        except (TypeError, ValueError) as err:
            raise ApiError(422, str(err)) from None
        probs = [np.exp(j.log_probs[0]) / np.exp(j.log_probs[0]).sum() for j in judged]
        out = {"model": s.name, "outcome_model": s.rm.model.outcome.name,
               "probabilities": [dict(zip(("a", "b", "tie"), p.tolist())) for p in probs]}
        if "personalization" in s.rm.metadata:
            out["reward_source"] = [s.rm.labeler_source(it.labeler) for it in body.items]
        return out

    return app


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


def serve(specs: list[str], cfg: ServeConfig = ServeConfig(), *, device: str | None = None, announce=print) -> None:
    """Load the models and serve them until interrupted (in-flight requests finish first)."""
    import uvicorn

    paths = parse_model_specs(specs)
    models, processes = load_models(paths, device, cfg.model_process)
    app = create_app(models, cfg, paths, processes)
    server = uvicorn.Server(uvicorn.Config(app, host=cfg.host, port=cfg.port, log_level="warning",
                                           timeout_graceful_shutdown=60))
    announce(f"serving {', '.join(paths)} on http://{cfg.host}:{cfg.port} (POST /v1/score, POST /get_reward)")
    server.run()
