"""The generated stepwise set: its arithmetic checks out, its labels point at the injected slip, it is seeded."""

import json
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rewardlab.data.synthetic_steps import (
    UNIT_CHAINS,
    make_solutions,
    write_stepwise_jsonl,
    wrong_number,
)

FACTOR = {u: f for chain in UNIT_CHAINS for u, f in chain}
NEXT = {u: chain[k + 1][0] for chain in UNIT_CHAINS for k, (u, _) in enumerate(chain[:-1])}
UNIT = re.compile(r"(\d+) (" + "|".join(sorted(FACTOR, key=len, reverse=True)) + r")\b")
OPERATION = re.compile(r"(\d+) ([-+*]) (\d+) (?:=|gives) (\d+)")
SOLUTIONS = make_solutions(300, seed=7)


def _arithmetic(s) -> tuple[list[bool], int, int]:
    """(each computing step's own arithmetic is right, the final answer, the true answer)."""
    expression = re.search(r"\d+(?: [-+*] \d+)+", s.prompt).group(0)
    ok, last = [], None
    for step in s.steps[:-1]:
        a, op, b, c = OPERATION.search(step).groups()
        ok.append(int(c) == eval(f"{a} {op} {b}"))
        last = int(c)
    answer = int(re.findall(r"\d+", s.steps[-1])[-1])
    assert answer == last  # the answer step reports the last result
    return ok, answer, eval(expression)


def _units(s) -> tuple[list[bool], int, int]:
    (value, unit), = UNIT.findall(s.prompt)  # the target unit has no number before it
    value, target = int(value), re.search(r"(?:to|in) (\w+)[.?]?$", s.prompt) or re.search(r"many (\w+)", s.prompt)
    ok, truth, carried = [], value, value
    for step in s.steps[:-1]:
        pairs = UNIT.findall(step)
        (v, u1), (w, u2) = pairs[0], pairs[-1]
        assert int(v) == carried and u2 == NEXT[u1]  # each hop starts where the last one ended
        ok.append(int(w) == int(v) * FACTOR[u1])
        truth, carried = truth * FACTOR[u1], int(w)
    (answer, unit), = UNIT.findall(s.steps[-1])
    assert unit == target.group(1) and int(answer) == carried
    return ok, int(answer), truth


def _check(s) -> tuple[list[bool], int, int]:
    return _arithmetic(s) if s.meta["task"] == "arithmetic" else _units(s)


def test_both_tasks_and_many_surface_forms_appear():
    assert {s.meta["task"] for s in SOLUTIONS} == {"arithmetic", "units"}
    assert len({re.sub(r"\d+", "N", s.steps[0]) for s in SOLUTIONS}) >= 10


def test_every_correct_solution_checks_out():
    correct = [s for s in SOLUTIONS if s.correct]
    assert len(correct) > 100
    for s in correct:
        ok, answer, truth = _check(s)
        assert all(ok) and answer == truth, s


def test_the_first_wrong_label_is_the_injected_slip_and_the_error_is_carried_forward():
    wrong = [s for s in SOLUTIONS if not s.correct]
    assert len(wrong) > 100
    positions = set()
    for s in wrong:
        ok, answer, truth = _check(s)
        k = s.first_error
        assert ok[:k] == [True] * k and not ok[k], s  # right up to the slip, wrong there
        assert all(ok[k + 1:]) and answer != truth, s  # later steps compute correctly from the wrong value
        assert s.labels == tuple(i < k for i in range(len(s.steps)))  # Math-Shepherd: wrong from the slip on
        positions.add(k)
    assert positions == {0, 1, 2}  # the slip can be at any computing step


def test_a_wrong_step_looks_like_a_right_one_but_for_its_number():
    """Across the set, wrong steps are no longer or shorter than right ones at the same position."""
    def mean_length(keep):
        lengths = [len(re.sub(r"\d+", "", s.steps[0])) for s in SOLUTIONS if keep(s)]
        return sum(lengths) / len(lengths)

    slip = mean_length(lambda s: s.first_error == 0)
    fine = mean_length(lambda s: s.first_error != 0)
    assert abs(slip - fine) < 3  # wording drawn independently of the mistake


@given(st.integers(0, 10**9), st.integers(0, 2**16))
def test_wrong_number_keeps_the_digits_and_trailing_zeros(right, seed):
    import numpy as np

    wrong = wrong_number(right, np.random.default_rng(seed))
    assert wrong != right and wrong >= 0 and len(str(wrong)) == len(str(right))
    zeros = len(str(right)) - len(str(right).rstrip("0"))
    if right:
        assert len(str(wrong)) - len(str(wrong).rstrip("0")) == zeros


def test_deterministic_per_seed_and_label_balance_as_asked():
    assert make_solutions(50, seed=1) == make_solutions(50, seed=1)
    assert make_solutions(50, seed=1) != make_solutions(50, seed=2)
    for rate in (0.2, 0.5):
        share = sum(not s.correct for s in make_solutions(400, seed=0, error_rate=rate)) / 400
        assert abs(share - rate) < 0.07
    assert all(s.correct for s in make_solutions(30, seed=0, error_rate=0.0))
    assert not any(s.correct for s in make_solutions(30, seed=0, error_rate=1.0))
    with pytest.raises(ValueError, match="error_rate in"):
        make_solutions(3, seed=0, error_rate=1.5)


def test_written_as_trl_stepwise_rows(tmp_path):
    path = write_stepwise_jsonl(tmp_path / "d" / "steps.jsonl", SOLUTIONS[:5])
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(r["prompt"], tuple(r["completions"]), tuple(r["labels"])) for r in rows] == [
        (s.prompt, s.steps, s.labels) for s in SOLUTIONS[:5]]
    assert all(isinstance(b, bool) for r in rows for b in r["labels"]) and rows[0]["task"] == SOLUTIONS[0].meta["task"]


def test_candidates_share_their_problem_and_hold_as_many_right_ones_as_asked():
    from rewardlab.data.synthetic_steps import make_candidates

    groups = make_candidates(40, 4, seed=3, correct=1)
    assert len(groups) == 40 and all(len(g) == 4 for g in groups)
    for g in groups:
        assert len({c.prompt for c in g}) == 1 and sum(c.correct for c in g) == 1
        answer = {re.findall(r"\d+", c.steps[-1])[-1] for c in g if c.correct}
        assert all(re.findall(r"\d+", c.steps[-1])[-1] not in answer for c in g if not c.correct)  # a slip: wrong
    assert make_candidates(5, 3, seed=3) == make_candidates(5, 3, seed=3)
    assert sum(g[0].correct for g in groups) < 40  # the right one is not always first
