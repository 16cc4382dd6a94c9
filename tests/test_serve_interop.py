"""Other programs' clients against `rewardlab serve`, unchanged: verl's reward loop (its vLLM and SGLang paths), a
vLLM client of /classify and /pooling, OpenRLHF's over-long queries, chat messages on /v1/compare, and a
Prometheus scrape of /metrics. Each sends the body its client sends and reads the value where the client reads it."""

from __future__ import annotations

import re
import urllib.request

import numpy as np
import pytest
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families

from conftest import post, serving
from rewardlab.scoring import RewardModel
from rewardlab.serve.app import create_app
from rewardlab.serve.config import ServeConfig

LIMITS = dict(max_items=8, max_text_chars=2000)
CHAT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Why is the sky blue?"}]
REPLY = {"role": "assistant", "content": "Because of scattering."}


@pytest.fixture(scope="module")
def rm(tiny_llama) -> RewardModel:
    """A decoder sequence classifier, as verl serves reward models: a Hugging Face folder rewardlab loads as it is."""
    return RewardModel.from_pretrained(tiny_llama, device="cpu")


@pytest.fixture(scope="module")
def url(rm, tiny_llama):
    with serving(create_app({"default": rm}, ServeConfig(**LIMITS), paths={"default": tiny_llama})) as (base, _):
        yield base


def sigmoid(x):
    return 1 / (1 + np.exp(-np.asarray(x)))


def verl_prompt(rm) -> str:
    """What verl's reward loop posts as ``input``: the conversation and the rollout, rendered by the reward model's
    tokenizer (``apply_chat_template(chat, add_generation_prompt=False, tokenize=False)``)."""
    return rm.processor.render_chat(CHAT + [REPLY], False)


def test_verl_reward_loop_reads_the_reward_on_both_engine_paths(url, rm):
    """verl's ``compute_score_disrm`` (verl/experimental/reward_loop/reward_loop.py): vLLM path ``POST /classify``
    ``{"model", "input", "activation": False}`` reading ``data[-1]["probs"][-1]``; SGLang path ``POST
    /v1/embeddings`` ``{"model", "input"}`` reading ``data[-1]["embedding"][-1]``. ``model`` is verl's own path
    to the checkpoint, which a one-model server answers to."""
    text = verl_prompt(rm)
    expected = rm.score("", text)
    for body in ({"model": "/data/models/rm", "input": text, "activation": False},  # verl as of 2026-01
                 {"model": "/data/models/rm", "input": text, "use_activation": False}):  # vLLM >= 0.11.2's name
        code, reply, _ = post(f"{url}/classify", body)
        assert code == 200, reply
        assert reply["data"][-1]["probs"][-1] == pytest.approx(expected, abs=1e-5)
    code, reply, _ = post(f"{url}/v1/embeddings", {"model": "/data/models/rm", "input": text})
    assert code == 200, reply
    assert reply["data"][-1]["embedding"][-1] == pytest.approx(expected, abs=1e-5)
    assert reply["object"] == "list" and reply["data"][0]["object"] == "embedding" and reply["data"][0]["index"] == 0
    assert reply["model"] == "/data/models/rm" and reply["usage"]["prompt_tokens"] > 0


def test_a_vllm_client_gets_vllms_classify_and_pooling_shapes(url, rm, tiny_llama):
    """vLLM's ClassificationResponse / PoolingResponse (vllm/entrypoints/pooling/{classify,pooling}/protocol.py):
    a list input, the activation on by default (sigmoid), the chat form, and /v1/classify as /classify."""
    texts = ["Because of scattering.", "No idea."]
    expected = rm.score_batch(["", ""], texts)
    code, reply, _ = post(f"{url}/v1/classify", {"model": tiny_llama, "input": texts})
    assert code == 200, reply
    assert set(reply) == {"id", "object", "created", "model", "data", "usage"} and reply["id"].startswith("classify-")
    assert reply["object"] == "list" and isinstance(reply["created"], int) and reply["model"] == tiny_llama
    assert [d["index"] for d in reply["data"]] == [0, 1]
    assert [d["probs"][-1] for d in reply["data"]] == pytest.approx(sigmoid(expected), abs=1e-6)
    assert all(d["num_classes"] == 1 and d["label"] == "reward" for d in reply["data"])
    assert reply["usage"]["prompt_tokens"] == reply["usage"]["total_tokens"] > 0
    code, pooled, _ = post(f"{url}/pooling", {"input": texts, "use_activation": False})
    assert code == 200 and pooled["id"].startswith("pool-") and pooled["data"][1]["object"] == "pooling"
    assert [d["data"][-1] for d in pooled["data"]] == pytest.approx(expected, abs=1e-5)
    code, chat, _ = post(f"{url}/classify", {"messages": CHAT + [REPLY], "use_activation": False})
    assert code == 200 and chat["data"][0]["probs"][-1] == pytest.approx(rm.score(CHAT, [REPLY]), abs=1e-5)
    for body, message in [({"input": [1, 2, 3]}, r"input: must be a string or a non-empty list of strings"),
                          ({"messages": CHAT}, r"messages: end the conversation with the assistant's reply"),
                          ({}, r"input, messages: send one of them"),
                          ({"input": "x", "encoding_format": "base64"}, r"encoding_format: Input should be 'float'")]:
        code, reply, _ = post(f"{url}/classify", body)
        assert code == 422 and re.search(message, reply["detail"]), reply


def test_over_long_texts_are_truncated_by_the_models_rule_and_counted(url, rm, tiny_llama):
    """OpenRLHF's client and the engine clients get the reward of an over-long text as the model reads it (not
    413); --on-long reject keeps the 413; /metrics counts the truncated items by endpoint."""
    long_text = "the sky is blue because of scattering. " * 60  # over 2000 characters, over 512 tokens
    expected = rm.score("", long_text)
    code, reply, _ = post(f"{url}/get_reward", {"query": [long_text, "short"], "prompts": ["", ""]})
    assert code == 200 and reply["rewards"][0] == pytest.approx(expected, abs=1e-5), reply
    code, reply, _ = post(f"{url}/classify", {"input": long_text, "use_activation": False})
    assert code == 200 and reply["data"][0]["probs"][0] == pytest.approx(expected, abs=1e-5)
    code, reply, _ = post(f"{url}/v1/score", {"items": [{"prompt": "", "response": long_text}]})
    assert code == 413 and "at most 2000" in reply["detail"]  # rewardlab's own API keeps its bound
    text = urllib.request.urlopen(f"{url}/metrics").read().decode()
    for endpoint in ("/get_reward", "/classify"):
        assert f'rewardlab_truncated_items_total{{endpoint="{endpoint}"}} 1.0' in text
    strict = create_app({"default": rm}, ServeConfig(**LIMITS, on_long="reject"))
    with serving(strict) as (base, _):
        code, reply, _ = post(f"{base}/get_reward", {"query": [long_text]})
        assert code == 413 and re.search(r"query\[0\]: \d+ characters; at most 2000", reply["detail"])
        code, reply, _ = post(f"{base}/v1/embeddings", {"input": ["ok", long_text]})
        assert code == 413 and reply["detail"].startswith("input[1]:")
    with pytest.raises(ValueError, match="on_long='drop': must be 'truncate' or 'reject'"):
        ServeConfig(on_long="drop")


def test_compare_takes_chat_messages_and_openai_keys(url, rm):
    """/v1/compare renders message lists as /v1/score does; OpenAI's optional keys are accepted (``name``
    ignored, empty ``tool_calls``), a key OpenAI's messages do not have is refused naming item, message and key."""
    other = {"role": "assistant", "content": "No idea.", "name": "bot", "tool_calls": [], "refusal": None}
    body = {"items": [{"prompt": CHAT, "response_a": [REPLY], "response_b": [other]}]}
    code, reply, _ = post(f"{url}/v1/compare", body)
    assert code == 200, reply
    assert reply["probabilities"][0] == pytest.approx(rm.compare(CHAT, [REPLY], [other]), abs=1e-5)
    named = [{"role": "user", "content": "Why is the sky blue?", "name": "ada"}]
    code, reply, _ = post(f"{url}/v1/score", {"items": [{"prompt": named, "response": [REPLY]}]})
    assert code == 200 and reply["scores"][0] == pytest.approx(rm.score(CHAT[1:], [REPLY]), abs=1e-5)
    moody = {"role": "assistant", "content": "No idea.", "mood": "glad"}
    for path, items, where in (
            ("/v1/compare", [{"prompt": "q", "response_a": "a", "response_b": [moody]}], "items[0]: response_b[0]"),
            ("/v1/score", [{"prompt": "q", "response": "a"}, {"prompt": "q", "response": [REPLY, moody]}],
             "items[1]: response[1]")):
        code, reply, _ = post(f"{url}{path}", {"items": items})
        assert code == 422 and reply["detail"].startswith(f"{where} has an unknown key 'mood'"), reply


def test_metrics_are_prometheus_clients_exposition(url):
    """/metrics is prometheus_client's own exposition (its content type; its parser reads every family), with the
    series names and labels the docs list."""
    post(f"{url}/classify", {"input": "hello"})
    res = urllib.request.urlopen(f"{url}/metrics")
    assert res.headers["Content-Type"] == CONTENT_TYPE_LATEST
    families = {f.name: f for f in text_string_to_metric_families(res.read().decode())}
    assert {"rewardlab_requests", "rewardlab_request_seconds", "rewardlab_items", "rewardlab_batch_items",
            "rewardlab_batch_tokens", "rewardlab_encode_seconds", "rewardlab_queue_seconds",
            "rewardlab_forward_seconds", "rewardlab_queue_items", "rewardlab_rejected",
            "rewardlab_truncated_items"} <= set(families)
    assert families["rewardlab_requests"].type == "counter" and families["rewardlab_queue_items"].type == "gauge"
    assert any(s.labels == {"endpoint": "/classify", "status": "200"} and s.value >= 1
               for s in families["rewardlab_requests"].samples)
