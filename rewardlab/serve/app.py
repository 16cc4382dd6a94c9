"""The reward server: a FastAPI app over one or more loaded reward models.

    rewardlab serve --model DIR [--model NAME=DIR ...] [--host 127.0.0.1] [--port 8000]

Endpoints:

    POST /v1/score       {"items": [{"prompt", "response", "labeler"?, "attribute"?}], "model"?, "normalize"?}
                         -> {"model", "scores": [...], "truncated", "attributes"? {head: [...]}, "normalized"?}
    POST /v1/compare     {"items": [{"prompt", "response_a", "response_b", "labeler"?}], "model"?}
                         -> {"model", "outcome_model", "probabilities": [{"a", "b", "tie"}]}
    POST /get_reward     OpenRLHF's remote reward model: {"query", "prompts", "labels"}
                         -> {"rewards": [...], "scores": [...], "extra_logs": {}}
    POST /classify       vLLM's classify API (also /v1/classify): {"model"?, "input" | "messages", "use_activation"?}
                         -> {"id", "object", "created", "model", "data": [{"index", "label", "probs", "num_classes"}],
                             "usage"}
    POST /pooling        vLLM's pooling API: the same body -> {..., "data": [{"index", "object", "data": [...]}]}
    POST /v1/embeddings  SGLang's reward models: {"model"?, "input"} -> {"data": [{"embedding", "index", "object"}], ...}
    GET  /health         {"status": "ok", "models": [...], "queue_items": {...}}
    GET  /v1/models      the served models, their heads and normalisations
    GET  /metrics        Prometheus text (see :mod:`rewardlab.serve.metrics`)

Scores come back in item order. Items of concurrent requests share forward passes (see
:mod:`rewardlab.serve.batcher`). Bad input gets 422 (wrong types, unknown fields, unknown attribute
or labeler, a message key OpenAI's messages do not have) or 413 (body, item count or text length over the limits),
with a message naming the item and field; a full queue gets 503 with ``Retry-After``. Input is checked and
encoded before it reaches the batcher, so a bad request never shares a forward pass with good ones. With
``--model-process`` each model's forward passes run in a process of its own (:mod:`rewardlab.serve.worker`); if
that process exits, requests for the model get 503 and ``/health`` answers 503.

On SIGTERM or SIGINT (:class:`DrainingServer`) the server stops accepting connections and scores the requests it
has until ``--graceful-timeout``; those still queued then get 503 with ``Retry-After``, never a 500, and the
process exits 0.

What each endpoint computes lives in :class:`~rewardlab.serve.service.RewardService`, which knows nothing of
HTTP (how ``/get_reward`` splits OpenRLHF's queries into prompt and response:
:meth:`~rewardlab.serve.service.RewardService.openrlhf`). This module only routes requests to it, turns
its exceptions into status codes (:func:`error_reply`) and bounds request bodies (:class:`LimitsAndMetrics`).
"""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from contextlib import asynccontextmanager

import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from rewardlab.serve.batcher import SHUTDOWN_RETRY_AFTER_S, Overloaded
from rewardlab.serve.config import ServeConfig
from rewardlab.serve.metrics import Metrics
from rewardlab.serve.schemas import CompareRequest, EngineRequest, OpenRLHFRequest, ScoreRequest, error_message
from rewardlab.serve.service import RequestError, RewardService, TooLarge, load_models, parse_model_specs
from rewardlab.serve.worker import HeapTrimmer, ModelProcess, WorkerGone

ENDPOINTS = ("/v1/score", "/get_reward", "/health", "/v1/models", "/metrics", "/v1/compare", "/classify",
             "/v1/classify", "/pooling", "/v1/embeddings")

# What the service raises -> the status it gets; the first class that matches wins (TooLarge is a RequestError).
STATUS = {TooLarge: 413, RequestError: 422, Overloaded: 503, WorkerGone: 503}
SHUTDOWN_MARGIN_S = 15.0  # uvicorn waits this long past the drain deadline (a pass in progress) before cancelling
TRIM_AFTER_BYTES = 1 << 20  # a request body this large has its freed memory handed back once it is answered


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
    """ASGI middleware: 413 for bodies over the limit (read, bounded, before any parsing); request metrics; a 503
    with ``Retry-After`` for a request uvicorn cancels at the end of a shutdown (instead of its 500); and, once a
    large body's request is answered, the C heap's free memory handed back to the system (its text, parsed and
    validated, freed in blocks glibc would otherwise keep: a 30 MB request left the server 200 MB larger)."""

    def __init__(self, app, max_body_bytes: int, metrics: Metrics):
        self.app, self.limit, self.metrics = app, max_body_bytes, metrics
        self.trim = HeapTrimmer(interval=0.0)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start, status, size = time.perf_counter(), [0], 0
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
                size, replayed = len(body), False

                async def receive_body():
                    nonlocal replayed, body
                    if not replayed:
                        replayed, message, body = True, {"type": "http.request", "body": body, "more_body": False}, b""
                        return message
                    return await receive()

                return await self.app(scope, receive_body, send_and_record)
            return await self.app(scope, receive, send_and_record)
        except asyncio.CancelledError:  # uvicorn's shutdown outlasted its grace: answer, do not log a traceback
            if not status[0]:
                gone = JSONResponse({"detail": "the server is shutting down; retry on another replica or after the "
                                     "restart"}, status_code=503,
                                    headers={"Retry-After": str(round(SHUTDOWN_RETRY_AFTER_S))})
                await gone(scope, receive, send_and_record)
        finally:
            self.metrics.request(endpoint, status[0] or 500, time.perf_counter() - start)
            if size >= TRIM_AFTER_BYTES:  # the request's objects are freed by now; trimming takes a few ms, off the loop
                await run_in_threadpool(self.trim)

    async def _read_body(self, scope, receive) -> bytes | None:
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return None
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = message.get("more_body", False)
            if size > self.limit:
                return None
        return b"".join(chunks)


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
        # uvicorn has already waited for in-flight requests; stop, scoring whatever is still queued.
        drain = cfg.graceful_timeout if cfg.graceful_timeout is not None else 60.0
        await run_in_threadpool(service.close, drain + SHUTDOWN_MARGIN_S)

    app = FastAPI(title="rewardlab reward server", lifespan=lifespan)
    app.state.service, app.state.served, app.state.metrics = service, service.served, service.metrics
    app.add_middleware(LimitsAndMetrics, max_body_bytes=cfg.max_body_bytes, metrics=service.metrics)
    for error in (*STATUS, RequestValidationError):
        app.add_exception_handler(error, error_reply)
    _routes(app, service)
    return app


def _routes(app: FastAPI, service: RewardService) -> None:
    """Each endpoint: parse (pydantic), call the service, return its reply (errors: :func:`error_reply`)."""

    @app.post("/v1/score")
    async def score(body: ScoreRequest) -> dict:
        return await service.score(body)

    @app.post("/v1/compare")
    async def compare(body: CompareRequest) -> dict:
        """P(a), P(b), P(tie) per pair: from the outcome model of any kind (ties only from tie-aware ones)."""
        return await service.compare(body)

    @app.post("/get_reward")
    async def openrlhf(body: OpenRLHFRequest) -> dict:
        return await service.openrlhf(body)

    @app.post("/classify")
    @app.post("/v1/classify")
    async def classify(body: EngineRequest, request: Request) -> dict:
        return await service.classify(body, request.url.path)

    @app.post("/pooling")
    async def pooling(body: EngineRequest) -> dict:
        return await service.pooling(body)

    @app.post("/v1/embeddings")
    async def embeddings(body: EngineRequest) -> dict:
        return await service.embeddings(body)

    @app.get("/health")
    async def health():
        ok, body = service.health()
        return body if ok else JSONResponse(body, status_code=503)

    @app.get("/v1/models")
    async def list_models() -> dict:
        return service.models()

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(service.metrics.render(), media_type=service.metrics.content_type)


class DrainingServer(uvicorn.Server):
    """uvicorn's server, which starts the service's drain as the shutdown begins (before it waits for the open
    connections) and waits for the connections until the drain deadline plus :data:`SHUTDOWN_MARGIN_S`."""

    def __init__(self, config: uvicorn.Config, service: RewardService):
        super().__init__(config)
        self.service = service

    async def shutdown(self, sockets=None) -> None:
        seconds = self.service.drain()
        self.config.timeout_graceful_shutdown = seconds + SHUTDOWN_MARGIN_S
        await super().shutdown(sockets)


def serve(specs: list[str], cfg: ServeConfig = ServeConfig(), *, device: str | None = None, announce=print) -> None:
    """Load the models and serve them until SIGTERM or SIGINT: requests already received are scored (until
    ``cfg.graceful_timeout``), the rest get 503 with Retry-After; after SIGTERM the call returns normally."""
    paths = parse_model_specs(specs)
    models, processes = load_models(paths, device, cfg.model_process)
    app = create_app(models, cfg, paths, processes)
    config = uvicorn.Config(app, host=cfg.host, port=cfg.port, log_level="warning")
    sock = config.bind_socket()  # bound here, so the announcement names the port (--port 0: the one given)
    sock.listen(config.backlog)  # connections wait in the backlog until uvicorn serves them, none is refused
    server = DrainingServer(config, app.state.service)
    host, port = sock.getsockname()[:2]
    announce(f"serving {', '.join(paths)} on http://{host}:{port} (POST /v1/score, POST /get_reward, POST /classify, "
             "POST /v1/embeddings)")
    main = threading.current_thread() is threading.main_thread()
    # uvicorn hands SIGTERM back to the handler it found once it has shut down: a quiet one, so a drained server
    # exits 0 rather than dying of the signal.
    previous = signal.signal(signal.SIGTERM, lambda *_: None) if main else None
    try:
        server.run(sockets=[sock])
    finally:
        if main:
            signal.signal(signal.SIGTERM, previous)
