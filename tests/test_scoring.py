import math

import numpy as np
import pytest

from rewardlab.models.base import read_metadata
from rewardlab.scoring import RewardModel
from rewardlab.train.run import train

from conftest import tiny_config


@pytest.fixture(scope="module")
def trained(tiny_bert, tmp_path_factory):
    from conftest import write_jsonl

    d = tmp_path_factory.mktemp("scoring")
    rows = [{"prompt": f"q{i}", "chosen": f"a helpful answer {i}", "rejected": "no."} for i in range(12)]
    path = write_jsonl(d / "p.jsonl", rows)
    return str(train(tiny_config(tiny_bert, path, d / "run", max_steps=3)).model_dir)


def test_score_batch_order_and_batching_do_not_matter(trained):
    rm = RewardModel.from_pretrained(trained, device="cpu")
    prompts = ["short", "a much longer prompt " * 5, "mid length prompt"]
    responses = ["x", "y " * 30, "zz"]
    batched = rm.score_batch(prompts, responses, batch_size=2)
    singles = [rm.score(p, r) for p, r in zip(prompts, responses)]
    assert batched == pytest.approx(singles, abs=1e-5)
    reversed_ = rm.score_batch(prompts[::-1], responses[::-1])
    assert reversed_[::-1] == pytest.approx(batched, abs=1e-5)
    assert rm.score_batch([], []) == []


def test_rank_best_of_n_and_normalisation(trained):
    rm = RewardModel.from_pretrained(trained, device="cpu")
    responses = ["no.", "a helpful answer 3", "maybe"]
    ranked = rm.rank("q3", responses)
    raw = rm.score_batch(["q3"] * 3, responses)
    assert ranked.order == list(np.argsort(-np.asarray(raw))) and ranked.scores == sorted(raw, reverse=True)
    assert rm.best_of_n("q3", responses) == (ranked.order[0], responses[ranked.order[0]])
    meta = read_metadata(trained)
    z = rm.score("q3", "maybe", normalize="zscore")
    assert z == pytest.approx((rm.score("q3", "maybe") - meta["reward_mean"]) / meta["reward_std"], rel=1e-6)
    assert 0 < rm.score("q3", "maybe", normalize="sigmoid") < 1
    with pytest.raises(ValueError, match="normalize='minmax'; choose one of none, zscore, sigmoid"):
        rm.score("q", "a", normalize="minmax")


def test_preference_probability_uses_temperature(trained):
    rm = RewardModel.from_pretrained(trained, device="cpu")
    a, b = "a helpful answer 1", "no."
    margin = rm.score("q1", a) - rm.score("q1", b)
    assert rm.preference_probability("q1", a, b) == pytest.approx(1 / (1 + math.exp(-margin)), rel=1e-6)
    rm.temperature = 2.0
    assert rm.preference_probability("q1", a, b) == pytest.approx(1 / (1 + math.exp(-margin / 2)), rel=1e-6)
    assert rm.preference_probability("q1", a, b) + rm.preference_probability("q1", b, a) == pytest.approx(1.0)


def test_input_errors(trained):
    rm = RewardModel.from_pretrained(trained, device="cpu")
    with pytest.raises(ValueError, match="got 2 prompts but 1 responses"):
        rm.score_batch(["a", "b"], ["c"])
    with pytest.raises(TypeError, match="item 0: the prompt must be a string or a list of messages, got NoneType"):
        rm.score_batch([None], ["c"])
    with pytest.raises(TypeError, match="item 1: a text reward model scores text responses, got int"):
        rm.score_batch(["a", "b"], ["c", 3])
    with pytest.raises(ValueError, match="best_of_n needs at least one response"):
        rm.best_of_n("q", [])
    with pytest.raises(ValueError, match=r"item 1: the response is not valid Unicode: a lone surrogate \(U\+DC00\)"):
        rm.score_batch(["a", "b"], ["c", "d" + chr(0xDC00)])
    with pytest.raises(ValueError, match=r"item 0: the prompt is not valid Unicode"):
        rm.score(chr(0xD800), "c")


def _chat(role: str, content: str, **extra) -> list[dict]:
    return [{"role": role, "content": content, **extra}]


def test_message_lists_score_as_their_rendered_text_everywhere(trained):
    rm = RewardModel.from_pretrained(trained, device="cpu")
    assert not rm.processor.tokenizer.chat_template  # so messages render as "role: content" lines
    prompt = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "q3"}]
    text = "system: Be brief.\nuser: q3\nassistant:"  # the rendered prompt; a reply is what the conversation adds
    replies = [_chat("assistant", "a helpful answer 3"), _chat("assistant", "no."), "maybe"]
    texts = [" a helpful answer 3", " no.", "maybe"]
    expected = rm.score_batch([text] * 3, texts)
    assert rm.score_batch([prompt] * 3, replies) == pytest.approx(expected, abs=1e-6)
    assert rm.score(prompt, replies[0]) == pytest.approx(expected[0], abs=1e-6)
    assert rm.score_heads([prompt], [replies[1]]) == pytest.approx(rm.score_heads([text], [texts[1]]), abs=1e-6)
    assert rm.score_attributes(prompt, replies[0]) == pytest.approx(rm.score_attributes(text, texts[0]), abs=1e-6)
    assert rm.rank(prompt, replies).order == rm.rank(text, texts).order
    assert rm.best_of_n(prompt, replies) == (rm.rank(text, texts).order[0], replies[rm.rank(text, texts).order[0]])
    assert rm.preference_probability(prompt, replies[0], replies[1]) == pytest.approx(
        rm.preference_probability(text, texts[0], texts[1]), abs=1e-6)
    # a string prompt with a message-list reply: the reply's contents joined by newlines
    assert rm.score("q3", [*replies[0], *_chat("assistant", "ok")]) == pytest.approx(
        rm.score("q3", "a helpful answer 3\nok"), abs=1e-6)
    centred = rm.score_batch([prompt, list(prompt)], texts[:2], normalize="prompt_mean")  # equal messages: one prompt
    assert centred[0] == pytest.approx(-centred[1])


def test_compare_and_judge_take_message_lists(trained):
    from rewardlab.contracts.schema import Comparison

    rm = RewardModel.from_pretrained(trained, device="cpu")
    prompt, text = _chat("user", "q1"), "user: q1\nassistant:"
    a, b = _chat("assistant", "a helpful answer 1"), _chat("assistant", "no.")
    assert rm.compare(prompt, a, b) == pytest.approx(rm.compare(text, " a helpful answer 1", " no."), abs=1e-6)
    judged = rm.judge([Comparison(prompt, (a, b), ((0, 1),))])[0]
    plain = rm.judge([Comparison(text, (" a helpful answer 1", " no."), ((0, 1),))])[0]
    assert judged.log_probs == pytest.approx(plain.log_probs, abs=1e-6)
    with pytest.raises(ValueError, match=r"compare: b\[0\]\.content must be a string, got NoneType"):
        rm.compare(prompt, a, _chat("assistant", None))
    with pytest.raises(ValueError, match=r"comparisons\[0\]: responses\[1\]\[0\] has an unknown key 'mood'"):
        rm.judge([Comparison(prompt, (a, _chat("assistant", "no.", mood="glad")), ((0, 1),))])


def test_openai_messages_are_accepted_and_what_cannot_be_scored_is_refused(trained):
    rm = RewardModel.from_pretrained(trained, device="cpu")
    prompt, reply = _chat("user", "q2"), _chat("assistant", "a helpful answer 2")
    plain = rm.score(prompt, reply)
    openai_reply = _chat("assistant", "a helpful answer 2", name="bot", refusal=None, tool_calls=None, annotations=[])
    assert rm.score(_chat("user", "q2", name="ada"), openai_reply) == pytest.approx(plain, abs=1e-6)
    calls = [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]
    refused = {
        r"item 1: response\[0\]\.tool_calls: tool calls cannot be scored": _chat("assistant", "", tool_calls=calls),
        r"item 1: response\[0\]\.refusal: a refusal is scored from content": _chat("assistant", "", refusal="No."),
        r"item 1: response\[0\] has an unknown key 'mood'; a message has role and content": _chat("assistant", "x",
                                                                                                mood="glad"),
        r"item 1: response\[0\] has no 'role'": [{"content": "x"}],
        r"item 1: response\[0\]\.content must be a string, got list": _chat("assistant", [{"type": "text"}]),
        r"item 1: response\[0\] must be a message \{\"role\": str, \"content\": str\}, got str": ["x"],
        r"item 1: response is an empty list of messages": [],
        r"item 1: response\[0\]\.content is not valid Unicode": _chat("assistant", "x" + chr(0xDC00)),
    }
    for match, bad in refused.items():
        with pytest.raises(ValueError, match=match):
            rm.score_batch([prompt, prompt], [reply, bad])
    with pytest.raises(ValueError, match=r"item 0: prompt\[1\]\.role must be a string, got NoneType"):
        rm.score([*prompt, {"role": None, "content": "x"}], reply)


def test_a_damaged_or_misnamed_model_folder_is_one_clear_error(trained, tmp_path):
    import shutil
    from pathlib import Path

    damaged = tmp_path / "damaged"
    shutil.copytree(trained, damaged)
    weights = damaged / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])  # a copy cut short
    with pytest.raises(ValueError, match=f"{damaged}: a weights file is damaged or cut short"):
        RewardModel.from_pretrained(str(damaged), device="cpu")
    run = Path(trained).parent
    with pytest.raises(ValueError, match=f"not a model folder .* keeps its model in {run / 'model'}"):
        RewardModel.from_pretrained(str(run), device="cpu")
    with pytest.raises(ValueError, match="model './no-such-run/model': no such folder or file"):
        RewardModel.from_pretrained("./no-such-run/model", device="cpu")


def test_foreign_hf_model_scores_without_metadata(tiny_bert):
    rm = RewardModel.from_pretrained(tiny_bert, device="cpu")
    assert rm.metadata == {} and isinstance(rm.score("q", "a"), float)
    with pytest.raises(ValueError, match="zscore' needs reward statistics"):
        rm.score("q", "a", normalize="zscore")
