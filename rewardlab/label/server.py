"""``rewardlab label``: a local web page where people rank each prompt's responses.

    rewardlab label --data candidates.jsonl --out rankings.jsonl [--port 8765] [--labeler NAME] [--model RM]

The page (``static/label.html``, plain HTML/JS) talks to this FastAPI app over a small JSON API:

    GET  /api/config                      file names, default labeler, whether a reward model is loaded
    GET  /api/next?labeler=&after=        the next unanswered item for this labeler, and their progress
    GET  /api/item/{i}?labeler=           an item: prompt, responses, display order, the saved answer if any
    POST /api/answer                      {labeler, item, action: rank|skip|flag, ranks, note} -> saved row

Every answer is on disk before the reply is sent (see :mod:`rewardlab.label.store`). With ``--model``, the
reply also carries the reward model's order of the responses and how often it agreed with this labeler.
The server listens on 127.0.0.1 only.
"""

from __future__ import annotations

import socket
import threading
from importlib.resources import files
from pathlib import Path

from rewardlab.label.store import LabelStore

STATIC = files("rewardlab.label") / "static"
STATIC_FILES = {"label.html": "text/html", "label.js": "text/javascript", "label.css": "text/css"}


class Agreement:
    """Reward-model scores per item (computed once) and pairwise agreement with a labeler's ranks."""

    def __init__(self, reward_model, store: LabelStore):
        self.rm, self.store = reward_model, store
        self._scores: dict[int, list[float]] = {}
        self._lock = threading.Lock()

    def scores(self, item: int) -> list[float]:
        with self._lock:
            if item not in self._scores:
                c = self.store.candidates[item]
                self._scores[item] = self.rm.score_batch([c.prompt] * len(c.responses), list(c.responses))
            return self._scores[item]

    @staticmethod
    def pairs(ranks: list[int], scores: list[float]) -> tuple[int, int]:
        """(agreeing, compared) over response pairs the person did not tie."""
        agree = total = 0
        for i in range(len(ranks)):
            for j in range(i + 1, len(ranks)):
                if ranks[i] != ranks[j]:
                    total += 1
                    agree += (ranks[i] < ranks[j]) == (scores[i] > scores[j])
        return agree, total

    def report(self, labeler: str, item: int, ranks: list[int]) -> dict:
        scores = self.scores(item)
        agree, total = self.pairs(ranks, scores)
        run_agree = run_total = 0
        for row in self.store.ranked_rows(labeler):
            a, t = self.pairs(row["ranks"], self.scores(row["item"]))
            run_agree, run_total = run_agree + a, run_total + t
        return {"order": sorted(range(len(scores)), key=lambda j: -scores[j]), "scores": scores,
                "agree": agree, "pairs": total, "running_agree": run_agree, "running_pairs": run_total}


def create_app(store: LabelStore, *, default_labeler: str = "anonymous", reward_model=None):
    """The FastAPI app serving the page and the answer API over ``store``."""
    from fastapi import Body, FastAPI, HTTPException, Request
    from fastapi.responses import JSONResponse, Response

    app = FastAPI(title="rewardlab label", docs_url=None, redoc_url=None, openapi_url=None)
    agreement = Agreement(reward_model, store) if reward_model is not None else None

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
        return {"data": str(store.candidates_path), "out": str(store.out), "skipped": str(store.sidecar),
                "default_labeler": default_labeler, "total": len(store.candidates), "model": agreement is not None}

    @app.get("/api/next")
    def next_item(labeler: str, after: int = -1):
        return {"item": store.next_item(labeler, after), "progress": store.progress(labeler)}

    @app.get("/api/item/{index}")
    def item(index: int, labeler: str):
        return {**store.item(labeler, index), "progress": store.progress(labeler)}

    @app.post("/api/answer")
    def answer(body: dict = Body(...)):
        labeler, index = body.get("labeler"), body.get("item")
        row = store.answer(labeler, index, body.get("action"), body.get("ranks"), body.get("note", ""))
        reply = {"saved": row, "progress": store.progress(row["labeler"]),
                 "next": store.next_item(row["labeler"], index)}
        if agreement is not None and row.get("ranks"):
            reply["model"] = agreement.report(row["labeler"], index, row["ranks"])
        return reply

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


def serve(data: str | Path, out: str | Path, *, port: int = 8765, labeler: str = "anonymous",
          model: str | None = None, announce=print) -> None:
    """Serve the labelling page until interrupted; ``announce`` receives the page's address."""
    import uvicorn

    store = LabelStore(data, out)
    reward_model = None
    if model:
        from rewardlab.scoring import RewardModel

        reward_model = RewardModel.from_pretrained(model)
    app = create_app(store, default_labeler=labeler, reward_model=reward_model)
    sock = loopback_socket(port)
    progress = store.progress(labeler)
    announce(f"labelling {len(store.candidates)} prompts from {data} into {out} "
             f"({progress['answered']} already answered by {labeler})\n"
             f"open http://127.0.0.1:{sock.getsockname()[1]}/  (Ctrl-C stops; answers are saved as they are given)")
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    server.run(sockets=[sock])
