"""``rewardlab label``: a local web page where people rank each prompt's responses.

    rewardlab label --data candidates.jsonl [--out labels.sqlite] [--port 8765] [--labeler NAME] [--model RM]
                    [--per-prompt K] [--shuffle] [--checks FILE] [--check-every N]
                    [--select random|uncertain|disagree] [--retrain-every N --train-config YAML]

The page (``static/label.html``, plain HTML/JS) talks to this FastAPI app over a small JSON API; the routes
only parse, call the store (:mod:`rewardlab.label.store`, no FastAPI there) and map ``ValueError`` to 422:

    GET  /api/config                      file names, the server's default labeler (the page's own name, from
                                          the address or the browser, comes first), whether a model is loaded
    GET  /api/next?labeler=&after=&revisit=1
                                          {item, revisit, last, progress}: the next item in this labeler's
                                          queue (unanswered first, then skipped ones again: revisit = true)
    GET  /api/item/{i}?labeler=           an item: prompt, responses, display order, the saved answer if any,
                                          position in the labeler's queue, the item before it (prev)
    POST /api/answer                      {labeler, item, action: rank|skip|flag, ranks, note, elapsed_ms}
                                          -> {saved, progress, next, revisit, model?}
    GET  /api/agreement                   agreement between labelers, with the check items, with the model

Progress is ``{total, answered (ranked + flagged), ranked, skipped, flagged, remaining}``. Every answer is
committed before the reply is sent. With ``--model``, the reply also carries the reward model's order of the
responses and how often it agreed with this labeler. The server listens on 127.0.0.1 only.
"""

from __future__ import annotations

import socket
from importlib.resources import files
from pathlib import Path
from typing import Callable

from rewardlab.label.agreement import ModelAgreement, store_agreement
from rewardlab.label.queue import Assignment
from rewardlab.label.store import LabelStore

STATIC = files("rewardlab.label") / "static"
STATIC_FILES = {"label.html": "text/html", "label.js": "text/javascript", "label.css": "text/css"}


def create_app(store: LabelStore, *, default_labeler: str = "anonymous", reward_model=None,
               on_answer: Callable[[], None] | None = None):
    """The FastAPI app serving the page and the answer API over ``store``; ``on_answer`` is called after each
    answer is saved (``--select`` reorders the queue there)."""
    from fastapi import Body, FastAPI, HTTPException, Request
    from fastapi.responses import JSONResponse, Response

    app = FastAPI(title="rewardlab label", docs_url=None, redoc_url=None, openapi_url=None)
    agreement = ModelAgreement(reward_model, store) if reward_model is not None else None

    @app.exception_handler(ValueError)
    async def _user_error(request: Request, err: ValueError):
        return JSONResponse({"error": str(err)}, status_code=422)

    def _static(name: str) -> Response:
        if name not in STATIC_FILES:
            raise HTTPException(404)
        # no-store: a reloaded page always runs the JS that matches this server
        return Response((STATIC / name).read_bytes(), media_type=STATIC_FILES[name],
                        headers={"Cache-Control": "no-store"})

    @app.get("/")
    def page():
        return _static("label.html")

    @app.get("/static/{name}")
    def static(name: str):
        return _static(name)

    @app.get("/api/config")
    def config():
        return {"data": str(store.candidates_path or store.location), "out": store.out, "store": store.location,
                "skipped": str(store.sidecar) if store.sidecar else None, "default_labeler": default_labeler,
                "total": len(store.candidates), "checks": len(store.checks),
                "per_prompt": store.assignment.per_prompt, "model": agreement is not None}

    @app.get("/api/next")
    def next_item(labeler: str, after: int = -1, revisit: bool = True):
        return {**store.next_step(labeler, after, revisit=revisit), "progress": store.progress(labeler)}

    @app.get("/api/item/{index}")
    def item(index: int, labeler: str):
        return {**store.item(labeler, index), "progress": store.progress(labeler)}

    @app.post("/api/answer")
    def answer(body: dict = Body(...)):
        row = store.answer(body.get("labeler"), body.get("item"), body.get("action"), body.get("ranks"),
                           body.get("note", ""), elapsed_ms=body.get("elapsed_ms"))
        if on_answer is not None:
            on_answer()
        step = store.next_step(row["labeler"], row["item"])
        reply = {"saved": row, "progress": store.progress(row["labeler"]), "next": step["item"],
                 "revisit": step["revisit"]}
        if agreement is not None and row["ranks"]:
            reply["model"] = agreement.report(row["labeler"], row["item"], row["ranks"])
        return reply

    @app.get("/api/agreement")
    def agreement_report():
        return store_agreement(store, agreement)

    return app


def loopback_socket(port: int = 0) -> socket.socket:
    """A listening socket on 127.0.0.1 (port 0 = any free port), so the page is reachable from this machine only.

    It listens before the server starts, so a browser opened on the announced address as soon as it is printed
    waits in the backlog for the server instead of being refused."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", port))
        sock.listen(socket.SOMAXCONN)
    except OSError as err:
        sock.close()
        raise ValueError(f"cannot listen on 127.0.0.1:{port} ({err.strerror}); pick another --port") from None
    return sock


def serve(data: str | Path | None, out: str | Path | None, *, port: int = 8765, labeler: str = "anonymous",
          model: str | None = None, checks: str | Path | None = None, assignment: Assignment | None = None,
          select: str | None = None, retrain_every: int | None = None, train_config: str | Path | None = None,
          announce=print) -> None:
    """Serve the labelling page until interrupted; ``announce`` receives the page's address. ``select`` orders
    the queue (:mod:`rewardlab.label.reorder`)."""
    import uvicorn

    store = LabelStore(data, out, checks=checks, assignment=assignment)
    reward_model = None
    if model:
        from rewardlab.scoring import RewardModel

        reward_model = RewardModel.from_pretrained(model)
    reorder = None
    if select is not None:
        from rewardlab.label.reorder import Reorderer

        reorder = Reorderer(store, select, reward_model=reward_model, retrain_every=retrain_every,
                            train_config=train_config)
    app = create_app(store, default_labeler=labeler, reward_model=reward_model,
                     on_answer=reorder.answered if reorder is not None else None)
    sock = loopback_socket(port)
    progress = store.progress(labeler)
    announce(f"labelling {len(store.candidates)} prompts from {store.candidates_path or store.location} into "
             f"{store.out}{'' if store.mirror is None else f' (store {store.location})'} "
             f"({progress['answered']} already answered by {labeler})\n"
             f"open http://127.0.0.1:{sock.getsockname()[1]}/  (Ctrl-C stops; answers are saved as they are given)")
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    try:
        server.run(sockets=[sock])
    finally:
        store.close()
