"""The labelling queue's order under ``--select``: what the model is unsure of, where labellers disagree, random."""

import json

import numpy as np
import pytest

from rewardlab.label.selection import (disagreement, margin_uncertainty, queue_order, selection_order,
                                       spread_uncertainty)


def test_a_single_model_is_least_sure_where_two_responses_are_closest():
    rewards = [[0.0, 2.0, 4.0], [1.0, 1.2], [0.0, 5.0, 5.5]]  # smallest gaps 2.0, 0.2, 0.5
    assert margin_uncertainty(rewards).tolist() == pytest.approx([-2.0, -0.2, -0.5])
    assert queue_order("uncertain", 3, rewards=rewards) == [1, 2, 0]


def test_an_ensemble_is_least_sure_where_its_members_disagree_on_the_margin():
    agree = np.array([[0.0, 1.0], [0.0, 1.0]])      # both members: margin 1, spread 0
    split = np.array([[0.0, 1.0], [1.0, 0.0]])      # margins +1 and -1: std 1
    assert spread_uncertainty([agree, split]).tolist() == pytest.approx([0.0, 1.0])
    # the spread decides even where the mean margin is large
    assert queue_order("uncertain", 2, member_rewards=[agree, split], rewards=[[0, 0.01], [0, 9]]) == [1, 0]


def test_disagreement_is_one_minus_the_mean_kendall_tau_and_unranked_prompts_come_last():
    same, reversed_, one = [[1, 2, 3], [1, 2, 3]], [[1, 2, 3], [3, 2, 1]], [[1, 2, 3]]
    d = disagreement([same, reversed_, one])
    assert d[:2].tolist() == pytest.approx([0.0, 2.0]) and np.isnan(d[2])
    assert queue_order("disagree", 3, rankings=[same, reversed_, one]) == [1, 0, 2]


def test_ties_and_random_order_are_seeded_and_a_permutation():
    assert selection_order(np.zeros(50), seed=3) == selection_order(np.zeros(50), seed=3)
    assert selection_order(np.zeros(50), seed=3) != selection_order(np.zeros(50), seed=4)
    assert sorted(queue_order("random", 50, seed=1)) == list(range(50))


def test_uncertain_without_a_model_and_an_unknown_mode_say_what_to_do():
    with pytest.raises(ValueError, match="--model"):
        queue_order("uncertain", 2)
    with pytest.raises(ValueError, match="random, uncertain, disagree"):
        queue_order("loudest", 2)


# --------------------------------------------------------------------- the server's queue under --select

class _Scores:
    """A stand-in reward model: fixed rewards per response text."""

    is_ensemble = False

    def __init__(self, rewards: dict[str, float]):
        self.rewards = rewards

    def score_batch(self, prompts, responses):
        return [self.rewards[r] for r in responses]


def _store(tmp_path):
    from conftest import write_jsonl

    from rewardlab.label import LabelStore

    rows = [{"prompt": f"p{i}", "responses": [f"r{i}a", f"r{i}b"]} for i in range(4)]
    return LabelStore(write_jsonl(tmp_path / "cands.jsonl", rows), tmp_path / "labels.sqlite")


def test_uncertain_selection_serves_the_closest_call_first(tmp_path):
    from rewardlab.label.reorder import Reorderer

    store = _store(tmp_path)
    gaps = {0: 3.0, 1: 0.1, 2: 1.0, 3: 0.5}
    model = _Scores({f"r{i}{s}": (gap if s == "a" else 0.0) for i, gap in gaps.items() for s in "ab"})
    Reorderer(store, "uncertain", reward_model=model)
    assert [store.next_item("ann")] == [1]
    store.answer("ann", 1, "rank", [1, 2])
    assert store.next_item("ann", 1) == 3 and store.queue("bob") == [1, 3, 2, 0]


def test_retraining_every_n_answers_reorders_the_queue_in_the_background(tmp_path):
    from rewardlab.label.reorder import Reorderer

    store = _store(tmp_path)
    trained = []

    def train(config, data, out):  # what the round trains on: the rankings so far, exported
        trained.append([json.loads(line)["item"] for line in data.read_text().splitlines()])
        return out / "model"

    later = _Scores({"r0a": 0.0, "r0b": 0.01, "r1a": 5, "r1b": 0, "r2a": 5, "r2b": 0, "r3a": 0, "r3b": 9})
    reorder = Reorderer(store, "uncertain", retrain_every=2, train_config=tmp_path / "train.yaml", train=train,
                        load=lambda folder: later)
    assert reorder.reward_model is None and sorted(store.order) == [0, 1, 2, 3]  # random until a model exists
    for item in (1, 2):
        store.answer("ann", item, "rank", [1, 2])
        reorder.answered()
    reorder.wait()
    assert trained == [[1, 2]] and reorder.retrains == 1
    assert store.order[0] == 0 and (tmp_path / "labels.sqlite.rounds" / "round-1" / "labels.jsonl").exists()


def test_disagreement_reorders_after_every_answer(tmp_path):
    from rewardlab.label.reorder import Reorderer

    store = _store(tmp_path)
    reorder = Reorderer(store, "disagree")
    for who, ranks in (("ann", [1, 2]), ("bob", [2, 1])):
        store.answer(who, 2, "rank", ranks)
        reorder.answered()
    assert store.order[0] == 2  # ann and bob disagree on prompt 2


def test_select_options_that_cannot_work_say_why(tmp_path):
    from rewardlab.label.reorder import Reorderer

    store = _store(tmp_path)
    with pytest.raises(ValueError, match="--model, or --retrain-every"):
        Reorderer(store, "uncertain")
    with pytest.raises(ValueError, match="--train-config"):
        Reorderer(store, "uncertain", retrain_every=5)
    with pytest.raises(ValueError, match="--select 'loud'"):
        Reorderer(store, "loud")
