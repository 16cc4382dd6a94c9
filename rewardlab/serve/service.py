"""The reward server's work, with no HTTP in it: the served models and what each endpoint computes.

:class:`RewardService` holds the served models by name (the first is the default), each a
:class:`~rewardlab.serve.served.ServedModel` with its dynamic batcher (:mod:`rewardlab.serve.batcher`), its pre-cut
of long texts (:mod:`rewardlab.serve.precut`) and, with ``--model-process``, its worker process
(:mod:`rewardlab.serve.worker`). Besides rewardlab's own endpoints it answers the bodies other programs send as
they are: OpenRLHF's (:meth:`RewardService.openrlhf`) and the inference engines' (:meth:`RewardService.classify`,
:meth:`RewardService.pooling`, :meth:`RewardService.embeddings`), where a text over ``max_text_chars`` is scored
as the model truncates it unless ``on_long="reject"``. Its methods take validated request bodies (:mod:`rewardlab.serve.schemas`)
and return reply bodies (:mod:`rewardlab.serve.responses`); the app (:mod:`rewardlab.serve.app`) only routes
requests to them and turns what they raise into status codes:

- :class:`RequestError`, a ``ValueError``: the client's mistake, with a message naming the item and field
  (422); :class:`TooLarge`, one of them: a request over a size limit (413);
- :class:`~rewardlab.serve.batcher.Overloaded`: the model's queue is full, or the server is shutting down and
  its drain time ran out (:meth:`RewardService.drain`; 503 with ``Retry-After``);
- :class:`~rewardlab.serve.worker.WorkerGone`: the model's worker process has exited (503).

Input is checked and encoded before it reaches the batcher, so a bad request never shares a forward pass with
good ones.
"""

from __future__ import annotations

from anyio import to_thread

from rewardlab.serve.batcher import DynamicBatcher
from rewardlab.serve.config import ServeConfig
from rewardlab.serve.metrics import Metrics
from rewardlab.serve.responses import (classify_reply, compare_reply, embeddings_reply, engine_values, openrlhf_reply,
                                       pooling_reply, score_reply)
from rewardlab.serve.schemas import CompareRequest, EngineRequest, OpenRLHFRequest, ScoreRequest
from rewardlab.serve.served import RequestError, Scored, ServedModel, TooLarge, inline_image
from rewardlab.serve.worker import ModelProcess

__all__ = ["RequestError", "RewardService", "ServedModel", "TooLarge", "inline_image", "load_models",
           "parse_model_specs"]


class RewardService:
    """The served models and what the server computes with them (see the module docstring).

    Args:
        models: loaded :class:`~rewardlab.scoring.RewardModel` s by name; the first is the default.
        cfg: the server's options: request limits, batching, ``/get_reward``'s normalisation, ``on_long``.
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

    def pick_engine(self, name: str | None) -> ServedModel:
        """The model an engine client names: by name, else by folder; a server with one model answers any name
        (engine clients send their own name for it: verl its path to the checkpoint)."""
        by_path = {s.path: s for s in self.served.values() if s.path}
        if name in self.served or name is None or len(self.served) > 1 and name not in by_path:
            return self.pick(name)
        return by_path.get(name, self.served[self.default])

    def check_sizes(self, texts: list[tuple[str, object]], n: int, what: str, *, long_ok: bool = False) -> None:
        """Raise :class:`TooLarge` for over ``max_items`` items, or (unless ``long_ok``) a text (where, text) over
        ``max_text_chars``."""
        if n > self.cfg.max_items:
            raise TooLarge(f"{what}: {n} items; at most {self.cfg.max_items} per request (--max-items); "
                           "split the request")
        for where, text in () if long_ok else texts:
            size = len(text) if isinstance(text, str) else sum(len(str(m.get("content", ""))) for m in text
                                                                if isinstance(m, dict))
            if size > self.cfg.max_text_chars:
                raise TooLarge(f"{where}: {size} characters; at most {self.cfg.max_text_chars} are accepted "
                               "(--max-text-chars)" + ("" if what == "items" else "; --on-long truncate scores it "
                                                       "as the model truncates it"))

    def _counted(self, scored: Scored, endpoint: str) -> Scored:
        if scored.truncated:
            self.metrics.truncated(endpoint, scored.truncated)
        return scored

    async def score(self, body: ScoreRequest) -> dict:
        """``POST /v1/score``: the items' scores in item order (see :func:`~rewardlab.serve.responses.score_reply`)."""
        s = self.pick(body.model)
        self.check_sizes([(f"items[{i}].{f}", getattr(it, f)) for i, it in enumerate(body.items)
                          for f in ("prompt", "response")], len(body.items), "items")
        if s.pairwise:
            raise RequestError(f"model {s.name!r} is pairwise (model.kind={s.rm.kind.name}): it judges pairs, "
                               "not single responses; use POST /v1/compare")
        s.check_items(body.items, body.unknown_labeler)
        s.check_normalize(body.normalize, "normalize")
        responses = [s.response(it.response, f"items[{i}].response") for i, it in enumerate(body.items)]
        scored = self._counted(await s.rows([it.prompt for it in body.items], responses,
                                            [it.labeler for it in body.items]), "/v1/score")
        reply = score_reply(s.rm, s.name, body, scored.rows, scored.prompts, scored.truncated)
        if s.stepwise:  # a process reward model: each step's probability beside the aggregate
            reply["step_rewards"] = await to_thread.run_sync(s.step_rewards, scored.prompts, responses)
        return reply

    async def compare(self, body: CompareRequest) -> dict:
        """``POST /v1/compare``: P(a), P(b), P(tie) per pair, from the outcome model of any kind; texts are strings
        or message lists, as on ``/v1/score``."""
        s = self.pick(body.model)
        self.check_sizes([(f"items[{i}].{f}", getattr(it, f)) for i, it in enumerate(body.items)
                          for f in ("prompt", "response_a", "response_b")], len(body.items), "items")
        s.check_items(body.items, body.unknown_labeler)
        try:
            judged = await to_thread.run_sync(s.judge, body.items)
        except (TypeError, ValueError) as err:
            raise RequestError(str(err)) from None
        return compare_reply(s.rm, s.name, body.items, judged)

    async def openrlhf(self, body: OpenRLHFRequest) -> dict:
        """``POST /get_reward``, OpenRLHF's remote reward model, scored by the default model.

        OpenRLHF sends each ``query`` as the full chat-templated prompt + response text. Where ``prompts[i]`` is
        a prefix of ``query[i]`` the rest is scored as the response to that prompt; otherwise (no prompts, or a
        prompt that is not a prefix) the whole query is scored as the response to an empty prompt. A query over
        ``max_text_chars`` is truncated by the model's rule (``on_long="truncate"``) or refused (``"reject"``)."""
        s = self.served[self.default]
        n = len(body.query)
        if body.prompts is not None and len(body.prompts) != n:
            raise RequestError(f"prompts: got {len(body.prompts)} prompts for {n} queries; send one per query")
        self.check_sizes([(f"query[{i}]", q) for i, q in enumerate(body.query)], n, "query",
                         long_ok=self.cfg.on_long == "truncate")
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
        scored = self._counted(await s.rows(prompts, responses, where="query"), "/get_reward")
        return openrlhf_reply(s.rm, scored.rows, scored.prompts, self.cfg.openrlhf_normalize)

    async def engine(self, body: EngineRequest, endpoint: str) -> tuple[ServedModel, Scored]:
        """What an engine endpoint scores (:class:`~rewardlab.serve.schemas.EngineRequest`): the served model and
        its rows. Texts over ``max_text_chars`` are truncated by the model's rule, or refused (``on_long``)."""
        s = self.pick_engine(body.model)
        try:
            prompts, responses = body.texts()
        except ValueError as err:
            raise RequestError(str(err)) from None
        field = "input" if body.input is not None else "messages"
        texts = [(f"input[{i}]", r) for i, r in enumerate(responses)] if field == "input" else [(field, body.messages)]
        self.check_sizes(texts, len(responses), field, long_ok=self.cfg.on_long == "truncate")
        if s.pairwise or s.takes_images:
            raise RequestError(f"model {s.name!r} ({s.rm.kind.name}) does not score one text: use POST /v1/compare"
                               if s.pairwise else f"model {s.name!r} scores images: use POST /v1/score")
        return s, self._counted(await s.rows(prompts, responses, where=field), endpoint)

    async def classify(self, body: EngineRequest, endpoint: str = "/classify") -> dict:
        """vLLM's ``POST /classify``: per text ``probs``, its rewards (through a sigmoid unless
        ``use_activation`` / ``activation`` is false); verl reads ``data[-1].probs[-1]``."""
        s, scored = await self.engine(body, endpoint)
        return classify_reply(s.rm, body.model or s.name, engine_values(s.rm, scored.rows, body.activated()),
                              scored.tokens)

    async def pooling(self, body: EngineRequest, endpoint: str = "/pooling") -> dict:
        """vLLM's ``POST /pooling``: per text ``data``, the same values as ``/classify``'s ``probs``."""
        s, scored = await self.engine(body, endpoint)
        return pooling_reply(body.model or s.name, engine_values(s.rm, scored.rows, body.activated()), scored.tokens)

    async def embeddings(self, body: EngineRequest, endpoint: str = "/v1/embeddings") -> dict:
        """SGLang's ``POST /v1/embeddings`` for reward models: per text ``embedding``, its raw rewards (SGLang
        applies no activation); verl reads ``data[-1].embedding[-1]``."""
        s, scored = await self.engine(body, endpoint)
        return embeddings_reply(body.model or s.name, engine_values(s.rm, scored.rows, False), scored.tokens)

    def health(self) -> tuple[bool, dict]:
        """Whether every model can score (no worker process has exited), and ``GET /health``'s body."""
        down = [n for n, s in self.served.items() if not s.healthy]
        body = {"status": "ok" if not down else f"worker process exited: {', '.join(down)}",
                "models": list(self.served), "queue_items": {n: s.batcher.queued_items for n, s in self.served.items()}}
        return not down, body

    def models(self) -> dict:
        """``GET /v1/models``: the default model's name, and each model's heads, labelers and normalisations."""
        return {"default": self.default, "models": [s.info() for s in self.served.values()]}

    def drain(self) -> float:
        """Begin a graceful shutdown (SIGTERM): each model's queue is scored until ``graceful_timeout`` (derived per
        model where unset: :meth:`~rewardlab.serve.batcher.DynamicBatcher.drain_estimate`), what is left then
        gets 503 with Retry-After. Returns the longest drain granted, in seconds."""
        return max(s.batcher.drain(self.cfg.graceful_timeout) for s in self.served.values())

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
