"""The public benchmarks' row formats (rewardlab.data.benchmarks), each read from a fixture written from its
public schema: RewardBench (v1) and RewardBench 2 (hub cards of allenai/reward-bench and reward-bench-2),
LLMBar's folder tree, PandaLM's data/testset-v1.json, lmsys/mt_bench_human_judgments and JudgeBench."""

import json
import math
import sys
import types
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rewardlab.config import DataConfig
from rewardlab.contracts.registry import DATA_FORMATS
from rewardlab.contracts.schema import DataError
from rewardlab.data.benchmarks import (
    BENCHMARKS,
    PANDALM_OUTCOMES,
    judgebench_outcome,
    pandalm_majority,
)
from rewardlab.data.formats import detect_format
from rewardlab.data.load import load_comparisons


def rewardbench(**kw):
    return {"prompt": "How do I boil an egg?", "chosen": "Simmer it for nine minutes.", "chosen_model": "gpt-4",
            "rejected": "Eggs are laid by hens.", "rejected_model": "alpaca-7b", "subset": "alpacaeval-easy",
            "id": 30, **kw}


def rewardbench2(**kw):
    return {"id": "1021", "prompt": "Explain tides.", "chosen": ["The moon's gravity pulls the oceans."],
            "rejected": ["Wind.", "Fish swimming.", "Earthquakes."], "num_correct": 1, "num_incorrect": 3,
            "total_completions": 4, "models": ["m1", "m2", "m3", "m4"], "subset": "Focus",
            "additional_metadata": {"category": "focus"}, **kw}


def pandalm(**kw):
    return {"idx": 0, "motivation_app": "Grammarly", "cmp_key": "bloom-7b_llama-7b",
            "instruction": "Rewrite the sentence concisely.", "input": "If you have any questions, ask me.",
            "response1": "Ask me anything.", "response2": "Questions? Ask.", "annotator1": 2, "annotator2": 2,
            "annotator3": 2, **kw}


def conversation(question, first, follow_up, second):
    return [{"content": question, "role": "user"}, {"content": first, "role": "assistant"},
            {"content": follow_up, "role": "user"}, {"content": second, "role": "assistant"}]


def mtbench(**kw):
    return {"question_id": 81, "model_a": "alpaca-13b", "model_b": "gpt-4", "winner": "model_b", "judge": "author_2",
            "conversation_a": conversation("Write a haiku.", "Leaves fall.", "Make it sadder.", "Leaves die."),
            "conversation_b": conversation("Write a haiku.", "Autumn wind...", "Make it sadder.", "Cold ash..."),
            "turn": 1, **kw}


def judgebench(**kw):
    return {"pair_id": "81ec57f2", "original_id": "10646", "source": "mmlu-pro-computer science",
            "question": "What is the capacity of the channel?", "response_model": "gpt-4o-2024-05-13",
            "response_A": "It is 1 bit.", "response_B": "It is 2 bits.", "label": "B>A", **kw}


def llmbar(**kw):
    return {"input": "Name a fruit.", "output_1": "Apple.", "output_2": "Carrot.", "label": 1, **kw}


ROWS = {"rewardbench": rewardbench, "rewardbench2": rewardbench2, "pandalm": pandalm, "mtbench_human": mtbench,
        "judgebench": judgebench, "llmbar": llmbar}


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def load(path, repeated="refuse", **cfg):
    return load_comparisons(str(path), DataConfig(**cfg), repeated=repeated)


def write_llmbar_tree(root):
    """LLMBar's layout: Dataset/LLMBar/<Natural | Adversarial/{Neighbor, GPTInst}>/dataset.json, JSON arrays."""
    sets = {"Natural": [llmbar(), llmbar(input="Name a colour.", output_1="Seven.", output_2="Red.", label=2)],
            "Adversarial/Neighbor": [llmbar(input="Name a dog.", output_1="Rex.", output_2="A cat.")],
            "Adversarial/GPTInst": [llmbar(input="Say hi.", output_1="Bye.", output_2="Hi.", label="2")]}
    for subset, rows in sets.items():
        folder = root / "Dataset" / "LLMBar" / subset
        folder.mkdir(parents=True)
        (folder / "dataset.json").write_text(json.dumps(rows, indent=2))
    return root / "Dataset" / "LLMBar"


# ----------------------------------------------------------------------------- each format, read


def test_rewardbench_rows_are_pairs_with_subset_and_id(tmp_path):
    path = write_jsonl(tmp_path / "rb.jsonl", [rewardbench(), rewardbench(id=31, subset="hep-go", prompt="Sort?")])
    comps, report = load(path)
    assert report.pairs == 2 and [c.meta["subset"] for c in comps] == ["alpacaeval-easy", "hep-go"]
    c = comps[0]
    assert c.responses == ("Simmer it for nine minutes.", "Eggs are laid by hens.") and c.pairs[0][:2] == (0, 1)
    assert c.meta["benchmark"] == "rewardbench" and c.meta["id"] == 30 and c.meta["chosen_model"] == "gpt-4"


def test_rewardbench2_has_one_pair_per_chosen_and_rejected_and_ties_ids(tmp_path):
    ref = rewardbench2(id="ref:7", prompt="Name the colour of grass.", chosen=["Green."],
                       rejected=["Pink.", "Blue."], num_correct=1, subset="Ties")
    tied = rewardbench2(id="tied:7", prompt="Name a primary colour.", chosen=["Red.", "Blue.", "Yellow."],
                        rejected=["Green.", "Purple."], num_correct=3, subset="Ties")
    comps, report = load(write_jsonl(tmp_path / "rb2.jsonl", [rewardbench2(), ref, tied]))
    assert [len(c.pairs) for c in comps] == [3, 2, 6] and report.pairs == 11
    focus, _, ties = comps
    assert focus.meta["subset"] == "Focus" and focus.meta["num_correct"] == 1 and "sample_type" not in focus.meta
    assert ties.responses == ("Red.", "Blue.", "Yellow.", "Green.", "Purple.")
    assert {p[:2] for p in ties.pairs} == {(i, j) for i in range(3) for j in (3, 4)}
    assert [(c.meta["sample_type"], c.meta["prompt_id"], c.meta["num_correct"]) for c in comps[1:]] == [
        ("ref", 7, 1), ("tied", 7, 3)]


def test_rewardbench2_reads_from_the_hub_parquet_file(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq
    rows = [rewardbench2(), rewardbench2(id="tied:3", chosen=["Red.", "Blue."], rejected=["Green."], num_correct=2,
                                         subset="Ties")]
    path = tmp_path / "test-00000-of-00001.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    comps, report = load(path)
    assert report.pairs == 5 and comps[1].meta["sample_type"] == "tied" and comps[1].meta["prompt_id"] == 3
    assert comps[0].meta["additional_metadata"] == {"category": "focus"}


@pytest.mark.parametrize("bad, field, message", [
    ({"num_correct": 2}, "num_correct", "'chosen' holds 1 responses"),
    ({"subset": "Ties", "id": "42"}, "id", "'ref:N' or 'tied:N'"),
    ({"rejected": ["Wind.", "The moon's gravity pulls the oceans."]}, "rejected", "also among 'chosen'"),
    ({"rejected": []}, "rejected", "at least one response"),
])
def test_rewardbench2_inconsistent_rows_name_the_field(tmp_path, bad, field, message):
    path = write_jsonl(tmp_path / "rb2.jsonl", [rewardbench2(), rewardbench2(**bad)])
    with pytest.raises(DataError, match=rf"rb2.jsonl:2, field '{field}': .*{message}"):
        load(path)


def test_llmbar_folder_tree_names_each_subset_from_its_path(tmp_path):
    folder = write_llmbar_tree(tmp_path)
    comps, report = load(folder)
    assert report.rows == 4 and {c.meta["benchmark"] for c in comps} == {"llmbar"}
    got = [(c.meta["subset"], c.meta["outcome"]) for c in comps]
    assert got == [("Adversarial/GPTInst", "b"), ("Adversarial/Neighbor", "a"), ("Natural", "a"), ("Natural", "b")]
    assert comps[1].source == f"{folder}/Adversarial/Neighbor/dataset.json:0" and comps[1].prompt == "Name a dog."
    assert comps[3].pairs[0][:2] == (1, 0)  # label 2: output_2 wins
    # a subfolder (or one file) keeps the names relative to Natural / Adversarial
    assert [c.meta["subset"] for c in load(folder / "Adversarial")[0]] == ["Adversarial/GPTInst", "Adversarial/Neighbor"]
    assert load(folder / "Natural" / "dataset.json")[0][0].meta["subset"] == "Natural"
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"empty: a folder is read as every dataset.json"):
        load(tmp_path / "empty")


def test_pandalm_majority_ties_and_repeated_pairs_kept_for_evaluation(tmp_path):
    rows = [pandalm(), pandalm(idx=1, cmp_key="llama-7b_opt-7b"),  # the same two texts again: a second judgement
            pandalm(idx=2, input=math.nan, response1="", annotator1=0, annotator2=0, annotator3=1),
            pandalm(idx=3, response1=True, response2="False.", annotator1=2, annotator2=0, annotator3=1)]
    path = tmp_path / "testset-v1.json"
    path.write_text(json.dumps(rows))  # PandaLM's file writes NaN for a missing input, as json.dumps does
    with pytest.raises(DataError, match=r"testset-v1.json:1: duplicate of the pair at .*testset-v1.json:0"):
        load(path)  # training: the same example twice
    comps, report = load(path, repeated="keep")
    assert report.comparisons == 4 and report.repeated == 1 and "1 pairs repeat an earlier one (kept" in report.summary()
    assert [c.meta["outcome"] for c in comps] == ["b", "b", "tie", "b"]  # a three-way split: annotator1's vote
    assert comps[2].pairs[0].tie and comps[2].prompt == "Rewrite the sentence concisely."
    assert comps[2].responses[0] == "" and comps[3].responses[0] == "True"
    assert comps[0].prompt == "Rewrite the sentence concisely.\n\nIf you have any questions, ask me."
    assert comps[0].meta["annotators"] == [2, 2, 2] and comps[1].meta["id"] == 1
    with pytest.raises(ValueError, match="repeated='twice' must be 'refuse' or 'keep'"):
        load(path, repeated="twice")


def test_mtbench_turns_ties_and_judges(tmp_path):
    rows = [mtbench(), mtbench(turn=2, winner="tie (bothbad)", judge="expert_0"), mtbench(winner="model_a", turn=2, judge="expert_0")]
    comps, report = load(write_jsonl(tmp_path / "human.jsonl", rows), repeated="keep")
    first, tie, _ = comps
    assert first.prompt == "user: Write a haiku.\nassistant:" and first.responses == (" Leaves fall.", " Autumn wind...")
    assert first.pairs[0][:2] == (1, 0) and first.labeler == "author_2" and first.meta["subset"] == "turn 1"
    # turn 2: each model saw its own first answer, so the shared prompt is the question, each response the rest
    assert tie.prompt == first.prompt and tie.responses[1] == " Autumn wind...\nuser: Make it sadder.\nassistant: Cold ash..."
    assert tie.pairs[0].tie and tie.meta["winner"] == "tie (bothbad)" and tie.meta["outcome"] == "tie"
    assert tie.labeler == "expert_0" and tie.meta["subset"] == "turn 2" and tie.meta["question_id"] == 81
    assert report.repeated == 1  # rows 2 and 3: one judge saw the same two responses twice
    with pytest.raises(DataError, match=r"human.jsonl:1, field 'turn': is 3, but 'conversation_a' has 2"):
        load(write_jsonl(tmp_path / "human.jsonl", [mtbench(turn=3)]))


def test_judgebench_labels_and_categories(tmp_path):
    rows = [judgebench(), judgebench(pair_id="x2", source="livecodebench", label="A>B", response_A="Yes.")]
    comps, _ = load(write_jsonl(tmp_path / "jb.jsonl", rows))
    assert [(c.meta["subset"], c.meta["outcome"], c.meta["id"]) for c in comps] == [
        ("mmlu-pro", "b", "81ec57f2"), ("livecodebench", "a", "x2")]
    assert comps[0].meta["source"] == "mmlu-pro-computer science" and comps[0].pairs[0][:2] == (1, 0)


# ----------------------------------------------------------------------------- detection, forcing, bad rows


@pytest.mark.parametrize("name", sorted(ROWS))
def test_each_benchmark_is_detected_from_its_fields_and_can_be_forced(tmp_path, name):
    assert detect_format(ROWS[name](), "f:1") == name
    comps, _ = load(write_jsonl(tmp_path / "b.jsonl", [ROWS[name]()]), format=name)
    assert comps[0].meta["benchmark"] == name


def test_unknown_fields_name_what_was_found_and_every_format_tried():
    with pytest.raises(DataError, match=r"columns \['answer', 'question'\]; tried every format") as err:
        detect_format({"question": "p", "answer": "a"}, "x.jsonl:1")
    assert all(name in str(err.value) for name in DATA_FORMATS.names())
    assert "judgebench: label, response_A, response_B" in str(err.value)


@pytest.mark.parametrize("name, field", [("rewardbench", "subset"), ("rewardbench2", "num_correct"),
                                         ("llmbar", "label"), ("pandalm", "annotator3"),
                                         ("mtbench_human", "conversation_b"), ("judgebench", "response_B")])
def test_a_row_missing_a_field_names_file_row_and_field(tmp_path, name, field):
    broken = {k: v for k, v in ROWS[name]().items() if k != field}
    path = write_jsonl(tmp_path / "bench.jsonl", [ROWS[name](), broken])
    with pytest.raises(DataError, match=rf"bench.jsonl:2, field '{field}': missing column"):
        load(path)
    comps, report = load(path, on_bad_row="skip")
    assert len(comps) == 1 and report.skipped == 1 and f"'{field}'" in report.reasons[0]


def test_hub_copies_are_read_through_datasets_with_their_split(tmp_path, monkeypatch):
    calls = []

    def load_dataset(name, config, split):
        calls.append((name, config, split))
        return [rewardbench(), rewardbench(id=31, prompt="Another?")]

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    info = BENCHMARKS["rewardbench"]
    comps, _ = load(info.source, hf_split=info.split)
    assert calls == [("allenai/reward-bench", None, "filtered")]
    assert comps[1].source == "hf:allenai/reward-bench[filtered]:1" and comps[1].meta["subset"] == "alpacaeval-easy"


def test_benchmark_table_names_registered_formats_and_the_docs_page_lists_them():
    page = (Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md").read_text()
    for name, info in BENCHMARKS.items():
        assert DATA_FORMATS.get(name) and info.licence and info.offline and (info.source is None or info.split)
        assert f"`{name}`" in page and info.licence in page


# ----------------------------------------------------------------------------- parsers


@settings(max_examples=60, deadline=None)
@given(st.one_of(st.text(max_size=6), st.sampled_from(["A>B", "B>A", " A>B ", "A<B", "a>b", "A=B"]), st.integers()))
def test_judgebench_label_parser(value):
    if isinstance(value, str) and value.strip() in ("A>B", "B>A"):
        assert judgebench_outcome(value, "f:1") == ("a" if value.strip() == "A>B" else "b")
    else:
        with pytest.raises(DataError, match="field 'label': expected 'A>B' or 'B>A'"):
            judgebench_outcome(value, "f:1")


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from([0, 1, 2]), min_size=3, max_size=3))
def test_pandalm_majority_follows_pandalm_rule(votes):
    outcome = pandalm_majority(votes)
    common = [v for v in set(votes) if votes.count(v) >= 2]
    assert outcome == PANDALM_OUTCOMES[common[0] if common else votes[0]]
