"""Stepwise data: TRL's stepwise supervision, Math-Shepherd, PRM800K ratings → Solutions; bad rows; detection."""

import pytest
from hypothesis import given, settings, strategies as st

from conftest import write_jsonl
from rewardlab.config import DataConfig
from rewardlab.contracts.schema import DataError
from rewardlab.data.formats import detect_format
from rewardlab.data.stepwise import (StepOptions, from_math_shepherd, is_stepwise, load_solutions, solution_from_row,
                                     split_solutions)

OPTS = StepOptions()


def test_trl_rows_with_bools_or_zero_one():
    s = solution_from_row({"prompt": "9.8 or 9.11?", "completions": ["11 > 8.", "So 9.11."], "labels": [True, 0],
                           "subset": "math"}, "f.jsonl:3", OPTS)
    assert (s.prompt, s.steps, s.labels) == ("9.8 or 9.11?", ("11 > 8.", "So 9.11."), (True, False))
    assert s.first_error == 1 and not s.correct and s.source == "f.jsonl:3" and s.meta == {"subset": "math"}


def test_math_shepherd_labels_follow_the_tags_and_the_prompt_ends_before_step_1():
    text = "Buzz has 78 slices. How many? Step 1: 5+8 = 13. ки\nStep 2: 13*6 = 80. ки\nStep 3: The answer is 80 ки"
    label = text.replace("ки", "+", 1).replace("ки", "-")
    s = from_math_shepherd({"input": text, "label": label, "task": "GSM8K"}, "ms:1", OPTS)
    assert s.prompt == "Buzz has 78 slices. How many?"
    assert s.steps == ("Step 1: 5+8 = 13.", "Step 2: 13*6 = 80.", "Step 3: The answer is 80")
    assert s.labels == (True, False, False) and s.meta == {"task": "GSM8K"}
    # without "Step 1:", the first step starts on the line after the problem; another tag is configurable
    s = from_math_shepherd({"input": "Why?\nBecause. <t> So. <t>", "label": "Why?\nBecause. + So. -"}, "ms:2",
                           StepOptions(step_tag="<t>"))
    assert (s.prompt, s.steps, s.labels) == ("Why?", ("Because.", "So."), (True, False))


@pytest.mark.parametrize("neutral, expected", [("good", (True, True, False)), ("bad", (True, False, False))])
def test_ratings_map_neutral_as_configured(neutral, expected):
    row = {"prompt": "p", "steps": ["a", "b", "c"], "ratings": [1, 0, -1]}
    assert solution_from_row(row, "r:1", StepOptions(neutral_step=neutral)).labels == expected


def test_prm800k_nested_rows_follow_the_chosen_completions_to_the_first_error():
    row = {"question": {"problem": "GCF of 20! and 200000?"}, "labeler": "x", "label": {"finish_reason": "found_error",
           "steps": [{"completions": [{"text": "Factor both.", "rating": 0}], "chosen_completion": 0,
                      "human_completion": None},
                     {"completions": [{"text": "Bad.", "rating": -1}], "chosen_completion": None,
                      "human_completion": {"text": "2^6 * 5^5.", "rating": None}},
                     {"completions": [{"text": "So 40000.", "rating": 1}, {"text": "So 320000.", "rating": -1}],
                      "chosen_completion": None, "human_completion": None}]}}
    s = solution_from_row(row, "prm:1", OPTS)
    assert s.prompt == "GCF of 20! and 200000?"
    assert s.steps == ("Factor both.", "2^6 * 5^5.", "So 320000.") and s.labels == (True, True, False)


BAD_ROWS = [
    ({"prompt": "p", "completions": ["a", "b"], "labels": [True]}, "labels", "1 values for 2 steps"),
    ({"prompt": "p", "completions": ["a", "  "], "labels": [True, True]}, "completions[1]", "empty step"),
    ({"prompt": "p", "completions": ["a"], "labels": [0.5]}, "labels[0]", "boolean or 0 / 1"),
    ({"prompt": "p", "completions": ["a"], "labels": ["yes"]}, "labels[0]", "boolean or 0 / 1"),
    ({"prompt": "p", "completions": ["a"], "labels": [-1]}, "labels[0]", "ratings"),
    ({"prompt": "p", "steps": ["a"], "ratings": [2]}, "ratings[0]", "-1, 0 or 1"),
    ({"prompt": "p", "completions": [], "labels": []}, "completions", "no steps"),
    ({"prompt": "p", "completions": ["a"]}, "labels", "missing column"),
    ({"input": "Q? Step 1: a ки", "label": "Q? Step 1: a ?"}, "label", r"expected \+ or -"),
    ({"input": "Q? Step 1: a", "label": "Q? Step 1: a"}, "input", "no steps"),
    ({"input": "Q? Step 1: a ки", "label": "Other text +"}, "label", "differs from 'input'"),
]


@pytest.mark.parametrize("row, field, message", BAD_ROWS)
def test_bad_rows_name_the_row_and_field(row, field, message):
    with pytest.raises(DataError, match=message) as err:
        solution_from_row(row, "data.jsonl:7", OPTS)
    assert err.value.location == "data.jsonl:7" and err.value.field_name == field


def test_load_stops_at_a_bad_row_or_skips_and_counts_it(tmp_path):
    rows = [{"prompt": f"q{i}", "completions": ["a", "b"], "labels": [True, i % 2 == 0]} for i in range(4)]
    rows.insert(2, {"prompt": "bad", "completions": ["a", "b"], "labels": [True]})
    path = write_jsonl(tmp_path / "steps.jsonl", rows)
    with pytest.raises(DataError, match=r"steps.jsonl:3, field 'labels'"):
        load_solutions(str(path), DataConfig())
    solutions, report = load_solutions(str(path), DataConfig(on_bad_row="skip"))
    assert [s.prompt for s in solutions] == ["q0", "q1", "q2", "q3"]
    assert (report.rows, report.solutions, report.skipped, report.steps, report.wrong_steps) == (5, 4, 1, 8, 2)
    assert "1 values for 2 steps" in report.reasons[0] and "skipped 1 bad rows" in report.summary()


def test_columns_are_mapped_and_the_format_detected(tmp_path):
    path = write_jsonl(tmp_path / "s.jsonl", [{"question": "q", "completions": ["a"], "labels": [1]}])
    cfg = DataConfig(train=str(path), columns={"prompt": "question"})
    assert is_stepwise(cfg) and load_solutions(str(path), cfg)[0][0].prompt == "q"
    assert detect_format({"input": "x ки", "label": "x +"}, "w") == "stepwise"
    assert detect_format({"prompt": "p", "steps": ["a"], "ratings": [1]}, "w") == "stepwise"
    assert detect_format({"prompt": "p", "chosen": "a", "rejected": "b"}, "w") == "pairs"
    assert not is_stepwise(DataConfig(train=str(write_jsonl(tmp_path / "p.jsonl", [
        {"prompt": "p", "chosen": "a", "rejected": "b"}]))))


def test_split_keeps_a_prompt_on_one_side():
    solutions = [solution_from_row({"prompt": f"q{i % 5}", "completions": [f"s{i}"], "labels": [1]}, f"f:{i}", OPTS)
                 for i in range(20)]
    train, held = split_solutions(solutions, 0.3, seed=1)
    assert len(train) + len(held) == 20 and held
    assert not {s.prompt for s in train} & {s.prompt for s in held}


step_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="ки+-"), min_size=1,
                    max_size=12).filter(lambda t: t.strip() and t.strip() == t)


@settings(max_examples=60, deadline=None)
@given(steps=st.lists(step_text, min_size=1, max_size=5), data=st.data())
def test_math_shepherd_round_trip(steps, data):
    """Any solution written in Math-Shepherd's form reads back as the same steps and labels."""
    labels = data.draw(st.lists(st.booleans(), min_size=len(steps), max_size=len(steps)))
    body = "".join(f"{s} ки\n" for s in steps)
    text = "What is it?\nStep 1: " + body
    label = "What is it?\nStep 1: " + "".join(f"{s} {'+' if y else '-'}\n" for s, y in zip(steps, labels))
    solution = from_math_shepherd({"input": text, "label": label}, "h:1", OPTS)
    assert solution.prompt == "What is it?"
    assert solution.steps == ("Step 1: " + steps[0], *steps[1:]) and solution.labels == tuple(labels)


@settings(max_examples=60, deadline=None)
@given(row=st.fixed_dictionaries({"prompt": st.one_of(st.text(max_size=5), st.integers()),
                                  "completions": st.lists(st.one_of(st.text(max_size=4), st.none()), max_size=3),
                                  "labels": st.lists(st.one_of(st.booleans(), st.integers(-2, 2), st.floats()),
                                                     max_size=3)}))
def test_any_trl_row_is_a_solution_or_a_data_error(row):
    """The parser never fails with anything but a DataError naming the row, and what it accepts is consistent."""
    try:
        s = solution_from_row(row, "h:2", OPTS)
    except DataError as err:
        assert err.location == "h:2" and err.field_name
        return
    assert len(s.steps) == len(s.labels) == len(row["completions"]) >= 1 and all(t.strip() for t in s.steps)
    assert s.labels == tuple(bool(v) for v in row["labels"])
