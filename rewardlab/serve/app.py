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

What each endpoint computes lives in :class:`~rewardlab.serve.service.RewardService`, which knows nothing of
HTTP (how ``/get_reward`` splits OpenRLHF's queries into prompt and response:
:meth:`~rewardlab.serve.service.RewardService.openrlhf`). This module only routes requests to it, turns
its exceptions into status codes (:func:`error_reply`) and bounds request bodies (:class:`LimitsAndMetrics`).
"""

from __future__ import annotations

import time
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from starlette.concurrency import run_in_threadpool

from rewardlab.serve.batcher import Overloaded
from rewardlab.serve.config import ServeConfig
from rewardlab.serve.metrics import Metrics
from rewardlab.serve.schemas import CompareRequest, OpenRLHFRequest, ScoreRequest, error_message
from rewardlab.serve.service import RequestError, RewardService, TooLarge, load_models, parse_model_specs
from rewardlab.serve.worker import ModelProcess, WorkerGone

ENDPOINTS = ("/v1/score", "/get_reward", "/health", "/v1/models", "/metrics", "/v1/compare")

# What the service raises -> the status it gets; the first class that matches wins (TooLarge is a RequestError).
STATUS = {TooLarge: 413, RequestError: 422, Overloaded: 503, WorkerGone: 503}


async def error_reply(request: Request, err: Exception) -> JSONResponse:
    """The one place an exception becomes an error reply: ``{"detail": message}`` with the status of
    :data:`STATUS`; a full queue adds ``Retry-After``, a body pydantic refused lists its ``errors`` (422)."""
    if isinstance(err, RequestValidationError):
        errors = err.errors()
        return JSONResponse({"detail": error_message(errors),
                             "errors": [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in errors]},
                            status_code=422)
    status = next(code for kind, code in STATUS.items() if isinstance(err, kind))
    headers = {"Retry-After": str(max(1, round(err.retry_after)))} if isinstance(err, Overloaded) else None
    return JSONResponse({"detail": str(err)}, status_code=status, headers=headers)


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
    service = RewardService(models, cfg, paths, processes)

    @asynccontextmanager
    async def lifespan(app):
        yield
        # uvicorn has already waited for in-flight requests; drain whatever is still queued, then stop.
        await run_in_threadpool(service.close, 60)

    app = FastAPI(title="rewardlab reward server", lifespan=lifespan)
    app.state.service, app.state.served, app.state.metrics = service, service.served, service.metrics
    app.add_middleware(LimitsAndMetrics, max_body_bytes=cfg.max_body_bytes, metrics=service.metrics)
    for error in (*STATUS, RequestValidationError):
        app.add_exception_handler(error, error_reply)

    @app.post("/v1/score")
    async def score(body: ScoreRequest) -> dict:
        return await service.score(body)

    @app.post("/get_reward")
    async def openrlhf(body: OpenRLHFRequest) -> dict:
        return await service.openrlhf(body)

    @app.get("/health")
    async def health():
        ok, body = service.health()
        return body if ok else JSONResponse(body, status_code=503)

    @app.get("/v1/models")
    async def list_models() -> dict:
        return service.models()

    @app.get("/metrics")
    async def prometheus() -> PlainTextResponse:
        return PlainTextResponse(service.metrics.render(), media_type="text/plain; version=0.0.4")

    @app.post("/v1/compare")
    async def compare(body: CompareRequest) -> dict:
        """P(a), P(b), P(tie) per pair: from the outcome model of any kind (ties only from tie-aware ones)."""
        return await service.compare(body)

    return app


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
