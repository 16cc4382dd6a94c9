"""The reward server over real HTTP on 127.0.0.1, its service alone, its batcher, the client, RewardFunction and
a GRPO step."""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import Gated, post, serving, tiny_config, write_jsonl
from rewardlab.reward_function import RewardFunction
from rewardlab.scoring import RewardModel, render_item
from rewardlab.serve.app import create_app
from rewardlab.serve.batcher import DynamicBatcher, Overloaded, plan_passes
from rewardlab.serve.client import RewardClient, ServerError
from rewardlab.serve.config import BatcherConfig, ServeConfig
from rewardlab.serve.schemas import CompareRequest, OpenRLHFRequest, ScoreRequest
from rewardlab.serve.service import RequestError, RewardService, TooLarge, parse_model_specs
from rewardlab.serve.worker import HeapTrimmer, ModelProcess
from rewardlab.train.run import train

LIMITS = dict(max_items=8, max_text_chars=2000, max_body_bytes=12_000)


@pytest.fixture(scope="module")
def trained(tiny_bert, tmp_path_factory) -> str:
    d = tmp_path_factory.mktemp("serve")
    rows = [{"prompt": f"q{i}", "chosen": f"a helpful answer {i}", "rejected": "no."} for i in range(12)]
    return str(train(tiny_config(tiny_bert, write_jsonl(d / "p.jsonl", rows), d / "run", max_steps=3)).model_dir)


@pytest.fixture(scope="module")
def rm(trained) -> RewardModel:
    return RewardModel.from_pretrained(trained, device="cpu")


@pytest.fixture(scope="module")
def url(rm):
    cfg = ServeConfig(**LIMITS, batcher=BatcherConfig(max_wait_ms=100, wait_for="any", max_queue_items=64))
    with serving(create_app({"default": rm}, cfg)) as (base, _):
        yield base


def items(*pairs, **extra) -> dict:
    return {"items": [{"prompt": p, "response": r} for p, r in pairs], **extra}


GOOD = [("q1", "a helpful answer 1"), ("q1", "no."), ("a longer prompt " * 8, "x")]


def test_score_matches_the_library_in_item_order(url, rm):
    status, reply, _ = post(f"{url}/v1/score", items(*GOOD))
    assert status == 200 and reply["model"] == "default" and reply["truncated"] == 0
    expected = rm.score_batch([p for p, _ in GOOD], [r for _, r in GOOD])
    assert reply["scores"] == pytest.approx(expected, abs=1e-5) and "attributes" not in reply
    status, reply, _ = post(f"{url}/v1/score", items(*GOOD, normalize="prompt_mean"))
    assert reply["normalized"][0] == pytest.approx(-reply["normalized"][1]) and reply["normalized"][2] == 0
    assert reply["normalized"][0] == pytest.approx((expected[0] - expected[1]) / 2, abs=1e-5)
    status, reply, _ = post(f"{url}/v1/score", items(*GOOD, normalize="sigmoid"))
    assert reply["normalized"] == pytest.approx([1 / (1 + np.exp(-s)) for s in expected], abs=1e-5)
    chat = {"items": [{"prompt": [{"role": "user", "content": "q1"}],
                       "response": [{"role": "assistant", "content": "no."}]}]}
    status, reply, _ = post(f"{url}/v1/score", chat)
    prompt, response = render_item(rm.processor.render_chat, [{"role": "user", "content": "q1"}],
                                   [{"role": "assistant", "content": "no."}])
    assert status == 200 and reply["scores"] == pytest.approx([rm.score(prompt, response)], abs=1e-5)


def test_the_service_scores_compares_and_refuses_without_http(rm):
    """The service alone, as the routes call it: scores equal ``RewardModel.score_heads`` in item order, and a
    client's mistake is a ValueError naming the field (the app answers 422, or 413 for :class:`TooLarge`)."""
    service = RewardService({"default": rm}, ServeConfig(**LIMITS))
    try:
        reply = asyncio.run(service.score(ScoreRequest.model_validate(items(*GOOD, normalize="sigmoid"))))
        expected = rm.score_heads([p for p, _ in GOOD], [r for _, r in GOOD])[:, -1]
        assert reply["model"] == "default" and reply["scores"] == pytest.approx(expected.tolist(), abs=1e-5)
        assert reply["normalized"] == pytest.approx((1 / (1 + np.exp(-expected))).tolist(), abs=1e-5)
        pair = {"items": [{"prompt": "q", "response_a": "yes, do this", "response_b": "no."}]}
        reply = asyncio.run(service.compare(CompareRequest.model_validate(pair)))
        assert reply["probabilities"][0] == pytest.approx(rm.compare("q", "yes, do this", "no."), abs=1e-5)
        prompt = "<|user|>q1<|assistant|>"
        query = OpenRLHFRequest(query=[prompt + "a helpful answer 1"], prompts=[prompt])
        assert asyncio.run(service.openrlhf(query))["scores"] == pytest.approx(
            rm.score_batch([prompt], ["a helpful answer 1"]), abs=1e-5)
        for body, error, message in [
                (items(("q", "a"), model="big"), RequestError, r"^model: 'big' is not served; models: default$"),
                ({"items": [{"prompt": "q", "response": "a", "attribute": "fluency"}]}, RequestError,
                 r"^items\[0\]\.attribute: 'fluency' is not a head of model 'default'; heads: reward$"),
                (items(*[("q", "a")] * 9), TooLarge, r"^items: 9 items; at most 8 per request")]:
            with pytest.raises(error, match=message) as caught:
                asyncio.run(service.score(ScoreRequest.model_validate(body)))
            assert isinstance(caught.value, ValueError)
        assert service.health() == (True, {"status": "ok", "models": ["default"], "queue_items": {"default": 0}})
        assert service.models()["models"][0]["heads"] == ["reward"]
    finally:
        service.close(10)


def test_prompt_mean_normalisation_is_the_group_baseline(rm):
    scores = np.array([[1.0], [3.0], [10.0]])
    out = rm.normalize_scores(scores, "prompt_mean", ["a", "a", "b"])
    assert out[:, 0].tolist() == [-1.0, 1.0, 0.0]
    with pytest.raises(ValueError, match="needs each item's prompt: got 0 prompts for 3 scores"):
        rm.normalize_scores(scores, "prompt_mean")
    assert rm.score_batch(["a", "a"], ["x", "yy"], normalize="prompt_mean") == pytest.approx(
        list(np.array(rm.score_batch(["a", "a"], ["x", "yy"])) - np.mean(rm.score_batch(["a", "a"], ["x", "yy"]))))


BAD = [
    (items(("q", 3)), 422, r"items\[0\]\.response: must be a string or a non-empty list"),
    ({"items": [{"prompt": "q"}]}, 422, r"items\[0\]\.response: Field required"),
    ({"items": [{"prompt": "q", "response": "a", "score": 1}]}, 422, r"items\[0\]\.score: unknown field"),
    ({"items": [], "temperature": 1}, 422, r"temperature: unknown field"),
    (items(("q", "a"), normalize="minmax"), 422, r"normalize: Input should be 'none', 'zscore'"),
    (items(("q", "a"), model="big"), 422, r"model: 'big' is not served; models: default"),
    ({"items": [{"prompt": "q", "response": "a", "attribute": "fluency"}]}, 422,
     r"items\[0\]\.attribute: 'fluency' is not a head of model 'default'; heads: reward"),
    ({"items": [{"prompt": "q", "response": "a"}, {"prompt": "q", "response": "a", "labeler": "ann"}]}, 422,
     r"items\[1\]\.labeler: model 'default' is not personalised"),
    ({"items": []}, 422, r"items: List should have at least 1 item"),
    (items(("q\ud800", "a")), 422, r"items\[0\]\.prompt: not valid Unicode: a lone surrogate \(U\+D800\) at character 1"),
    (items(("q", [{"role": "assistant", "content": "\udfff"}])), 422,
     r"items\[0\]: response\[0\]\.content is not valid Unicode"),
    ({"items": [{"prompt": "q", "response": "a", "labeler": "\ud800"}]}, 422, r"items\[0\]\.labeler: not valid Unicode"),
    (items(*[("q", "a")] * 9), 413, r"items: 9 items; at most 8 per request"),
    (items(("q", "a"), ("q", "x" * 2001)), 413, r"items\[1\]\.response: 2001 characters; at most 2000"),
    (items(*[("q", "x" * 1990)] * 8), 413, r"body: over 12000 bytes"),
]


@pytest.mark.parametrize("body, status, message", BAD)
def test_bad_requests_are_refused_naming_item_and_field(url, body, status, message):
    code, reply, _ = post(f"{url}/v1/score", body)
    assert code == status, reply
    assert re.search(message, reply["detail"]), reply["detail"]


def test_malformed_json_and_compare(url, rm):
    code, reply, _ = post(f"{url}/v1/score", None, raw=b'{"items": [')
    assert code == 422 and reply["detail"].startswith("body: not valid JSON")
    code, reply, _ = post(f"{url}/v1/compare", {"items": [{"prompt": "q", "response_a": "yes, do this", "response_b": "no."}]})
    assert code == 200 and reply["outcome_model"] == "bradley_terry"
    p = reply["probabilities"][0]
    assert p == pytest.approx(rm.compare("q", "yes, do this", "no."), abs=1e-5) and p["tie"] == 0.0
    code, reply, _ = post(f"{url}/v1/compare", {"items": [{"prompt": "q", "response_a": "a"}]})
    assert code == 422 and "items[0].response_b: Field required" in reply["detail"]


def test_good_requests_batched_beside_bad_ones_are_unharmed(url, rm):
    bodies = [items((f"q{i}", f"answer {i} " * (i + 1))) for i in range(6)]
    bodies += [items(("q", 3)), {"items": [{"prompt": "q", "response": "a", "attribute": "nope"}]},
                items(("q", "x" * 5000))]
    before = _batch_count(url)
    replies: list = [None] * len(bodies)

    def send(i):
        replies[i] = post(f"{url}/v1/score", bodies[i])

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(bodies))]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert [r[0] for r in replies] == [200] * 6 + [422, 422, 413]
    for i in range(6):
        assert replies[i][1]["scores"] == pytest.approx([rm.score(f"q{i}", f"answer {i} " * (i + 1))], abs=1e-5)
    assert _batch_count(url) - before < 6  # the six good requests shared forward passes


def _batch_count(url: str) -> int:
    text = urllib.request.urlopen(f"{url}/metrics").read().decode()
    line = [x for x in text.splitlines() if x.startswith('rewardlab_batch_items_count{model="default"}')]
    return int(float(line[0].split()[-1])) if line else 0


def _series(text: str, prefix: str) -> float:
    return float(next(x for x in text.splitlines() if x.startswith(prefix)).split()[-1])


def test_health_models_and_metrics(url):
    client = RewardClient(url)
    assert client.health()["status"] == "ok"
    info = client.models()
    assert info["default"] == "default" and info["models"][0]["heads"] == ["reward"]
    assert info["models"][0]["labelers"] is None and "zscore" in info["models"][0]["normalizations"]
    client.score(["q"], ["a"])
    text = client.metrics()
    assert 'rewardlab_requests_total{endpoint="/v1/score",status="200"}' in text
    assert "# TYPE rewardlab_request_seconds histogram" in text and 'le="+Inf"' in text
    assert 'rewardlab_queue_items{model="default"} 0.0' in text and "# TYPE rewardlab_batch_tokens histogram" in text
    # where a request's time goes: each stage counted for the request just scored, with a positive time
    for stage in ("encode", "queue", "forward"):
        assert f"# TYPE rewardlab_{stage}_seconds histogram" in text
        count = _series(text, f'rewardlab_{stage}_seconds_count{{model="default"}}')
        total = _series(text, f'rewardlab_{stage}_seconds_sum{{model="default"}}')
        assert count >= 1 and total > 0, stage
    with pytest.raises(ServerError, match="422: model: 'x' is not served"):
        RewardClient(url, model="x").score(["q"], ["a"])
    with pytest.raises(ConnectionError, match=r"reward server at http://127.0.0.1:1 did not answer POST /v1/score "
                                              r"in 2 attempts: \[Errno 111\] Connection refused"):
        RewardClient("http://127.0.0.1:1", retries=1).score(["q"], ["a"])


def test_openrlhf_remote_rm_shape(url, rm):
    """The body OpenRLHF's remote_rm_url client posts, and the keys it reads (``scores``, else ``rewards``)."""
    prompt = "<|user|>q1<|assistant|>"
    body = {"query": [prompt + "a helpful answer 1", "no prompt match"], "prompts": [prompt, "other"],
            "labels": ["", None]}
    code, reply, _ = post(f"{url}/get_reward", {**body, "datasources": ["x", "y"]})  # newer clients add keys
    assert code == 200 and set(reply) == {"rewards", "scores", "extra_logs"} and reply["extra_logs"] == {}
    expected = rm.score_batch([prompt, ""], ["a helpful answer 1", "no prompt match"])
    assert reply["scores"] == pytest.approx(expected, abs=1e-5) and reply["rewards"] == reply["scores"]
    code, reply, _ = post(f"{url}/get_reward", {"query": ["a", "b"], "prompts": ["a"]})
    assert code == 422 and "prompts: got 1 prompts for 2 queries" in reply["detail"]
    code, reply, _ = post(f"{url}/get_reward", {"query": [], "prompts": []})  # a batch filtered away
    assert code == 200 and reply == {"rewards": [], "scores": [], "extra_logs": {}}
    code, reply, _ = post(f"{url}/get_reward", {"query": ["a\udc80b"]})
    assert code == 422 and reply["detail"].startswith("query[0]: not valid Unicode")


def test_overload_gets_503_and_shutdown_finishes_in_flight_requests(trained):
    rm = RewardModel.from_pretrained(trained, device="cpu")
    rm.model = Gated(rm.model)
    cfg = ServeConfig(max_items=4, batcher=BatcherConfig(max_wait_ms=0, max_queue_items=4))
    four = items(*[("q", "a")] * 4)
    with serving(create_app({"default": rm}, cfg)) as (base, server):
        replies = {}
        first = threading.Thread(target=lambda: replies.setdefault("a", post(f"{base}/v1/score", four)))
        first.start()
        assert rm.model.entered.wait(10)  # the worker holds request a in its forward pass
        second = threading.Thread(target=lambda: replies.setdefault("b", post(f"{base}/v1/score", four)))
        second.start()
        while RewardClient(base).health()["queue_items"]["default"] < 4:  # b waits in the queue
            time.sleep(0.01)
        code, reply, headers = post(f"{base}/v1/score", items(("q", "a")))
        assert code == 503 and "4 items waiting" in reply["detail"] and headers["retry-after"] == "1"
        server.should_exit = True  # graceful shutdown: a and b still get answers
        time.sleep(0.2)
        rm.model.gate.set()
        first.join(30), second.join(30)
    assert replies["a"][0] == replies["b"][0] == 200 and len(replies["b"][1]["scores"]) == 4


def test_batcher_fails_only_the_requests_of_a_failing_pass(rm):
    class Fussy(torch.nn.Module):  # fails on any batch holding a 1-token item
        def __init__(self, net):
            super().__init__()
            self.net, self.heads = net, net.heads

        def forward(self, **inputs):
            if (inputs["attention_mask"].sum(1) < 8).any():
                raise RuntimeError("boom")
            return self.net(**inputs)

    fussy = RewardModel(Fussy(rm.model), rm.processor, rm.metadata)
    # A 24-token budget puts every one of these items in a pass of its own.
    batcher = DynamicBatcher(fussy, BatcherConfig(max_batch_tokens=24, max_wait_ms=50, max_queue_items=8))
    answers = ["a long enough answer here, with a few more words to pass"] * 2
    good_items, _ = rm.processor.encode_items(["question"] * 2, answers)
    good, bad = batcher.submit(good_items), batcher.submit([((101, 102), None)])
    with pytest.raises(RuntimeError, match="boom"):
        bad.result(10)
    assert good.result(10)[:, 0] == pytest.approx(rm.score_batch(["question"] * 2, answers), abs=1e-5)
    batcher.close(10)
    with pytest.raises(Overloaded, match="shutting down"):
        batcher.submit(good_items)


def _plan_cost(costs, ends, overhead):
    return sum(overhead + (end - start) * costs[end - 1] for start, end in zip([0] + ends[:-1], ends))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(1, 300), min_size=1, max_size=8), st.integers(1, 800), st.integers(0, 1000))
def test_plan_passes_is_the_cheapest_plan_within_the_budget(costs, max_tokens, overhead):
    """Against every way of cutting the sorted items: the plan covers them in order, keeps each pass of two
    or more items within the budget, and costs (padded tokens + overhead per pass) the least."""
    costs = sorted(costs)
    ends = plan_passes(costs, max_tokens, overhead)
    assert ends[-1] == len(costs) and ends == sorted(set(ends)) and ends[0] > 0
    for start, end in zip([0] + ends[:-1], ends):
        assert end - start == 1 or (end - start) * costs[end - 1] <= max_tokens
    feasible = []
    for cuts in itertools.product((False, True), repeat=len(costs) - 1):
        plan = [k + 1 for k, cut in enumerate(cuts) if cut] + [len(costs)]
        if all(e - s == 1 or (e - s) * costs[e - 1] <= max_tokens for s, e in zip([0] + plan[:-1], plan)):
            feasible.append(_plan_cost(costs, plan, overhead))
    assert _plan_cost(costs, ends, overhead) == min(feasible)


def test_plan_passes_parts_short_items_from_long_ones_when_a_pass_costs_less_than_the_padding():
    assert plan_passes([10, 10, 10, 500], 8192, overhead=100) == [3, 4]  # 30 + 500 + 2 x 100, not 2000 + 100
    assert plan_passes([10, 10, 10, 500], 8192, overhead=8192) == [4]  # a pass costs more than any padding
    assert plan_passes([400, 400, 400], 600, overhead=0) == [1, 2, 3]  # over budget in pairs: one each
    assert plan_passes([900], 600, overhead=0) == [1]  # an item over the budget still gets its pass


def test_batcher_parts_by_length_on_cpu_but_not_with_batching_off(rm):
    """A 5-token and a 400-token item: apart they cost 5 + 400 tokens + 2 passes of 256 (CPU's default overhead),
    together 2 x 400 + 256, so the batcher parts them; with batching off a request keeps its one pass. Passes
    in a model process on a GPU take the GPU's default (as few passes as fit), not the CPU copy's."""
    request = SimpleNamespace(costs=[5, 400])
    work = [(request, 0), (request, 1)]
    on, off = DynamicBatcher(rm, BatcherConfig()), DynamicBatcher(rm, BatcherConfig(batching=False))
    on_gpu = DynamicBatcher(rm, BatcherConfig(), process=SimpleNamespace(device=torch.device("cuda")))
    on_gpu.close(10)
    try:
        assert (on.pass_overhead_tokens, off.pass_overhead_tokens, on_gpu.pass_overhead_tokens) == (256, 8192, 8192)
        assert [[i for _, i in b] for b in on._buckets(work)] == [[0], [1]]
        assert [[i for _, i in b] for b in off._buckets(work)] == [[0, 1]]
    finally:
        on.close(10), off.close(10)


def test_a_queued_request_waits_only_for_requests_on_their_way(rm):
    """wait_for='incoming': with nothing being encoded a lone request is scored at once, however long
    max_wait_ms; with a request on its way the queued one waits for it, and both share one pass."""
    batcher = DynamicBatcher(rm, BatcherConfig(max_wait_ms=600_000))
    items_a, _ = rm.processor.encode_items(["q"], ["a helpful answer"])
    items_b, _ = rm.processor.encode_items(["q2"], ["no."])
    passes = []
    score = batcher._score
    batcher._score = lambda work: (passes.append(len(work)), score(work))
    try:
        alone = batcher.submit(items_a).result(30)  # would wait ten minutes with wait_for='any'
        assert alone[:, 0] == pytest.approx(rm.score_batch(["q"], ["a helpful answer"]), abs=1e-5)
        with batcher.incoming():
            first = batcher.submit(items_a)
            time.sleep(0.3)
            assert not first.done()  # waiting for the request on its way
            second = batcher.submit(items_b)
        assert first.result(30).shape == second.result(30).shape == (1, 1)
        assert passes == [1, 2]
    finally:
        batcher.close(10)
    with pytest.raises(ValueError, match="wait_for='soon': must be 'incoming' or 'any'"):
        BatcherConfig(wait_for="soon")


def test_heap_trimmer_trims_at_most_once_an_interval():
    calls = []
    trim = HeapTrimmer(interval=3600)
    assert trim.available or not Path("/lib/x86_64-linux-gnu/libc.so.6").exists()  # glibc has malloc_trim
    trim._trim = calls.append
    assert [trim(), trim(), trim()] == [True, False, False] and calls == [0]
    trim.interval = 0
    assert trim() and calls == [0, 0]


def test_model_process_scores_as_the_model_here_and_its_exit_gets_503(trained, rm):
    """--model-process: the same scores and judgements from the worker process, concurrent requests batched
    there, the worker's ValueError passed through, and a killed worker answered with 503, not a hang."""
    from rewardlab.contracts.schema import Comparison, Pair

    process = ModelProcess(trained, "cpu")
    cfg = ServeConfig(batcher=BatcherConfig(max_wait_ms=200, wait_for="any"))
    app = create_app({"default": rm}, cfg, processes={"default": process})
    with serving(app) as (base, _):
        bodies = [items(*GOOD), items(("q2", "a helpful answer 2"), ("q3", "no."))]
        with ThreadPoolExecutor(2) as pool:
            replies = list(pool.map(lambda b: post(f"{base}/v1/score", b), bodies))
        for body, (code, reply, _) in zip(bodies, replies):
            expected = rm.score_batch([it["prompt"] for it in body["items"]], [it["response"] for it in body["items"]])
            assert code == 200 and reply["scores"] == pytest.approx(expected, abs=1e-5)
        assert _batch_count(base) == 1  # both requests shared one pass in the worker
        pair = {"items": [{"prompt": "q", "response_a": "yes, do this", "response_b": "no."}]}
        code, reply, _ = post(f"{base}/v1/compare", pair)
        expected = rm.compare("q", "yes, do this", "no.")["a"]
        assert code == 200 and reply["probabilities"][0]["a"] == pytest.approx(expected, abs=1e-5)
        with pytest.raises(ValueError, match="rates attribute 'style', which the model has no head for"):
            process.judge([Comparison("q", ("a", "b"), (Pair(0, 1, attribute="style"),))])
        process._process.kill()
        process._process.join(10)
        code, reply, _ = post(f"{base}/v1/score", items(*GOOD))
        assert code == 503 and re.search(r"model 'default': its worker process has exited .* restart", reply["detail"])
        code, reply, _ = post(f"{base}/v1/compare", pair)
        assert code == 503
        status = urllib.request.urlopen(f"{base}/v1/models", timeout=10).status
        with pytest.raises(urllib.error.HTTPError) as health:
            urllib.request.urlopen(f"{base}/health", timeout=10)
        assert status == 200 and health.value.code == 503
        assert json.loads(health.value.read())["status"] == "worker process exited: default"
    with pytest.raises(RuntimeError, match="its worker process could not load it: .*nowhere"):
        ModelProcess(str(Path(trained) / "nowhere"), "cpu")


def test_config_and_model_spec_errors():
    assert parse_model_specs(["runs/a", "b=runs/b"]) == {"default": "runs/a", "b": "runs/b"}
    with pytest.raises(ValueError, match="the name 'default' is used twice; name each model with NAME=DIR"):
        parse_model_specs(["runs/a", "runs/b"])
    with pytest.raises(ValueError, match="max_items=10 exceeds max_queue_items=4"):
        ServeConfig(max_items=10, batcher=BatcherConfig(max_queue_items=4))
    with pytest.raises(ValueError, match="max_wait_ms=-1: must be >= 0"):
        BatcherConfig(max_wait_ms=-1)


def test_reward_function_local_and_over_url_agree_on_both_forms(trained, url):
    local, remote = RewardFunction(trained, device="cpu"), RewardFunction(url)
    prompts, completions = ["q1", "q2"], ["a helpful answer 1", "no."]
    assert local(prompts, completions, trainer_state=None, answer=["x", "y"]) == pytest.approx(
        remote(prompts=prompts, completions=completions), abs=1e-5)
    chat_p = [[{"role": "user", "content": p}] for p in prompts]
    chat_c = [[{"role": "assistant", "content": c}] for c in completions]
    assert local(chat_p, chat_c) == pytest.approx(remote(chat_p, chat_c), abs=1e-5)
    centred = RewardFunction(url, normalize="prompt_mean")(["q", "q"], completions)
    assert centred[0] == pytest.approx(-centred[1])
    with pytest.raises(ValueError, match="attribute='style' is not a head of"):
        RewardFunction(trained, attribute="style")


def test_grpo_trainer_takes_the_reward_function(tiny_llama, url, tmp_path):
    from datasets import Dataset
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM
    from trl import GRPOConfig, GRPOTrainer

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(tiny_llama)
    tok.pad_token = tok.eos_token
    policy = LlamaForCausalLM(LlamaConfig.from_pretrained(tiny_llama))
    data = Dataset.from_dict({"prompt": ["Why is the sky blue?", "Name a capital city."] * 2})
    args = GRPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=2, num_generations=2,
                      max_completion_length=6, max_steps=1, logging_steps=1, report_to=[], use_cpu=True,
                      save_strategy="no", disable_tqdm=True, bf16=False)
    trainer = GRPOTrainer(model=policy, reward_funcs=[RewardFunction(url)], args=args, train_dataset=data,
                          processing_class=tok)
    trainer.train()
    logged = trainer.state.log_history[0]  # TRL logs each reward function under its name
    means = [v for k, v in logged.items() if k.startswith("rewards/") and k.endswith("/mean")]
    assert len(means) == 1 and np.isfinite(means[0])
