"""RewardFunction's names (what TRL's GRPOTrainer logs each reward under) and the messages it takes."""

import shutil

import pytest

from rewardlab.reward_function import RewardFunction


def trl_name(reward) -> str:
    """The name GRPOTrainer logs a callable reward under (its own helper where this TRL has one)."""
    utils = pytest.importorskip("trl.trainer.utils")
    return getattr(utils, "get_callable_name", lambda f: f.__name__)(reward)


@pytest.fixture(scope="module")
def runs(tiny_bert, tmp_path_factory):
    """Two reward model folders laid out as training runs: <run>/model."""
    root = tmp_path_factory.mktemp("runs")
    for run in ("helpful", "harmless"):
        shutil.copytree(tiny_bert, root / run / "model")
    return root


def test_each_model_logs_under_its_own_name(runs):
    helpful, harmless = RewardFunction(str(runs / "helpful" / "model")), RewardFunction(str(runs / "harmless/model/"))
    assert (trl_name(helpful), trl_name(harmless)) == ("helpful", "harmless")
    named = RewardFunction(str(runs / "helpful" / "model"), name="helpful-v2")
    assert trl_name(named) == "helpful-v2" and "name='helpful-v2'" in repr(named)
    # the same model: settings that change the reward change the name; the same settings share it
    again = RewardFunction(str(runs / "helpful" / "model"))
    centred = RewardFunction(str(runs / "helpful" / "model"), normalize="prompt_mean")
    assert trl_name(again) == "helpful" and trl_name(centred) == "helpful_prompt_mean"
    served = [RewardFunction("http://user:secret@127.0.0.1:8000/", model=m) for m in ("helpful", None)]
    assert [trl_name(f) for f in served] == ["127.0.0.1_8000_helpful", "127.0.0.1_8000"]


def test_a_bad_name_is_refused_naming_the_argument(runs):
    for bad in ("", "rewards/helpful", "two words"):
        with pytest.raises(ValueError, match=f"name={bad!r}: a reward function's name is one or more letters"):
            RewardFunction(str(runs / "helpful" / "model"), name=bad)
    with pytest.raises(TypeError, match="name must be a string, got int"):
        RewardFunction(str(runs / "helpful" / "model"), name=3)


def test_openai_messages_score_as_plain_ones_locally_and_over_the_wire(runs, monkeypatch):
    local = RewardFunction(str(runs / "helpful" / "model"))
    prompts = [[{"role": "user", "content": "q1", "name": "ada"}]]
    completions = [[{"role": "assistant", "content": "an answer", "refusal": None, "tool_calls": None}]]
    plain = local([[{"role": "user", "content": "q1"}]], [[{"role": "assistant", "content": "an answer"}]])
    assert local(prompts, completions) == pytest.approx(plain, abs=1e-6)
    with pytest.raises(ValueError, match=r"item 0: response\[0\] has an unknown key 'reasoning'"):
        local(prompts, [[{"role": "assistant", "content": "x", "reasoning": "..."}]])
    remote, sent = RewardFunction("http://127.0.0.1:8000"), {}
    monkeypatch.setattr(remote.client, "score", lambda p, c, **kw: sent.update(prompts=p, completions=c) or [0.0])
    remote(prompts, completions)
    assert sent == {"prompts": [[{"role": "user", "content": "q1"}]],
                    "completions": [[{"role": "assistant", "content": "an answer"}]]}
