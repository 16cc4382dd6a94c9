"""The ``ab`` format (A / B / tie judgements), tie pairs from rankings, stratified and k-fold splits, LLMFAO."""

import collections
import importlib.util
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rewardlab.config import DataConfig
from rewardlab.contracts.schema import Comparison, DataError, Pair
from rewardlab.data.ab import WINNER_SPELLINGS, from_ab, pair_outcome
from rewardlab.data.fields import FormatContext
from rewardlab.data.formats import detect_format, from_rankings, get_format
from rewardlab.data.load import load_comparisons
from rewardlab.data.splits import kfold_splits, outcome_label, stratified_group_split

from conftest import write_jsonl

LLMFAO = Path(__file__).resolve().parents[1].parent / "shared/data/llmfao"
CTX = FormatContext()


def row(**kw):
    return {"prompt": "p", "response_a": "first", "response_b": "second", "winner": "a", **kw}


def arena_row(**kw):
    return {"id": 30192, "model_a": "gpt-4", "model_b": "llama-2-13b",
            "prompt": json.dumps(["Hi?", "And then?"]), "response_a": json.dumps(["Hello!", None]),
            "response_b": json.dumps(["Go away", "Bye"]), "winner_model_a": 0, "winner_model_b": 1, "winner_tie": 0,
            **kw}


# ----------------------------------------------------------------------------- winner spellings


@pytest.mark.parametrize("spelling, outcome", [
    ("a", "a"), ("B", "b"), (" tie ", "tie"), ("model_a", "a"), ("Model_B", "b"), ("tie (bothbad)", "tie"),
    ("both_bad", "tie"), ("left", "a"), ("RIGHT", "b"), ("TIE", "tie"),
])
def test_every_winner_spelling(spelling, outcome):
    c = from_ab(row(winner=spelling), "f.jsonl:1", CTX)
    expected = {"a": Pair(0, 1), "b": Pair(1, 0), "tie": Pair(0, 1, tie=True)}[outcome]
    assert c.responses == ("first", "second") and c.pairs == (expected,)
    assert c.meta["outcome"] == outcome and pair_outcome(c.pairs[0]) == outcome


def test_every_listed_spelling_is_tested():
    assert set(WINNER_SPELLINGS) == {"a", "b", "tie", "model_a", "model_b", "tie (bothbad)", "both_bad", "left",
                                     "right"}


@pytest.mark.parametrize("code, outcome", [(0, "a"), ("1", "b"), (2.0, "tie"), (" 2", "tie")])
def test_integer_winners_need_winner_codes(code, outcome):
    ctx = FormatContext(extra={"winner_codes": {0: "a", 1: "b", 2: "tie"}})
    assert from_ab(row(winner=code), "f:1", ctx).meta["outcome"] == outcome
    with pytest.raises(DataError, match=r"f:1, field 'winner': integer winner .* is ambiguous.*data.winner_codes"):
        from_ab(row(winner=code), "f:1", CTX)


def test_winner_codes_travel_from_the_config(tmp_path):
    path = tmp_path / "ab.csv"
    path.write_text("prompt,response_a,response_b,winner\np,x,y,1\np,x,y,0\n")
    with pytest.raises(DataError, match=r"ab.csv:2, field 'winner': integer winner '1' is ambiguous"):
        load_comparisons(str(path), DataConfig())
    comps, _ = load_comparisons(str(path), DataConfig(winner_codes={0: "tie", 1: "b"}), )
    assert [c.meta["outcome"] for c in comps] == ["b", "tie"]
    with pytest.raises(DataError, match=r"ab.csv:2, field 'winner': code 1 is not in data.winner_codes \(0: a\)"):
        load_comparisons(str(path), DataConfig(winner_codes={0: "a"}))


@pytest.mark.parametrize("codes, match", [
    ({0: "A wins"}, r"data.winner_codes\[0\]='A wins' is not valid; choose one of a, b, tie"),
    ({"x": "a"}, r"data.winner_codes: key 'x' must be an integer code"),
    ({True: "a"}, r"data.winner_codes: key True must be an integer code"),
])
def test_winner_codes_are_validated(codes, match):
    with pytest.raises(ValueError, match=match):
        DataConfig(winner_codes=codes)


# ----------------------------------------------------------------------------- Arena 55k columns


def test_arena_rows_render_turns_and_keep_models():
    c = from_ab(arena_row(), "arena.csv:2", CTX)
    assert c.prompt == "user: Hi?\nassistant:"  # the first user turn is the shared prompt
    # each response is the rest of its own conversation; the null turn became ""
    assert c.responses == (" Hello!\nuser: And then?\nassistant: ", " Go away\nuser: And then?\nassistant: Bye")
    assert c.pairs == (Pair(1, 0),) and c.meta == {"model_a": "gpt-4", "model_b": "llama-2-13b", "outcome": "b"}
    assert c.group == "30192"
    assert from_ab(arena_row(group="g7"), "a:2", CTX).group == "g7"


def test_arena_one_turn_row_and_csv_strings(tmp_path):
    path = tmp_path / "arena.csv"
    path.write_text('id,model_a,model_b,prompt,response_a,response_b,winner_model_a,winner_model_b,winner_tie\n'
                    '1,m1,m2,"[""Q?""]","[""yes""]","[""no""]",0,0,1\n')
    (c,), _ = load_comparisons(str(path), DataConfig())  # format detected from winner_model_a
    assert (c.prompt, c.responses, c.pairs) == ("user: Q?\nassistant:", (" yes", " no"), (Pair(0, 1, tie=True),))
    assert c.meta["outcome"] == "tie" and c.group == "1"


@pytest.mark.parametrize("fields, match", [
    ({"winner_model_b": 0}, r"field 'winner_tie': exactly one of .* must be 1; 0 are"),
    ({"winner_model_a": 1}, r"field 'winner_tie': exactly one of .* must be 1; 2 are"),
    ({"winner_model_a": 2}, r"field 'winner_model_a': expected 0 or 1, got 2"),
    ({"winner_model_a": "yes"}, r"field 'winner_model_a': expected a number"),
    ({"response_a": json.dumps([None, " "])}, r"field 'response_a': empty response \(every turn is empty or null\)"),
    ({"response_b": json.dumps(["one"])}, r"field 'response_b': has 1 turns for 2 prompt turns"),
    ({"prompt": "not json"}, r"field 'prompt': expected a JSON list of turns"),
    ({"prompt": json.dumps([])}, r"field 'prompt': expected a non-empty list of turns"),
    ({"prompt": json.dumps([None, "x"])}, r"field 'prompt': the first user turn is empty"),
    ({"response_a": json.dumps(["x", 3])}, r"field 'response_a\[1\]': expected text or null, got int"),
    ({"response_a": json.dumps(["Go away", "Bye"])}, r"field 'response_b': identical to 'response_a'"),
])
def test_bad_arena_rows_name_row_and_field(fields, match):
    with pytest.raises(DataError, match=r"^arena.csv:7, " + match):
        from_ab(arena_row(**fields), "arena.csv:7", CTX)


def test_missing_arena_column():
    bad = arena_row()
    del bad["winner_tie"]
    with pytest.raises(DataError, match=r"^a:3, field 'winner_tie': missing column"):
        from_ab(bad, "a:3", CTX)


# ----------------------------------------------------------------------------- errors and loading


@pytest.mark.parametrize("fields, match", [
    ({"winner": "A is better"}, r"field 'winner': 'A is better' is not a winner; accepted \(any case\): a / b / tie"
                                r" / model_a / model_b / tie \(bothbad\) / both_bad / left / right"),
    ({"winner": None}, r"field 'winner': None is not a winner"),
    ({"winner": True}, r"field 'winner': True is not a winner"),
    ({"response_b": "first"}, r"field 'response_b': identical to 'response_a'"),
    ({"response_a": "  "}, r"field 'response_a': empty text"),
    ({"prompt": ""}, r"field 'prompt': empty text"),
    ({"response_b": 5}, r"field 'response_b': expected text, got int"),
])
def test_bad_rows_name_row_and_field(fields, match):
    with pytest.raises(DataError, match=r"^f.jsonl:4, " + match):
        from_ab(row(**fields), "f.jsonl:4", CTX)


@pytest.mark.parametrize("column", ["prompt", "response_a", "response_b", "winner"])
def test_missing_columns(column):
    bad = row()
    del bad[column]
    with pytest.raises(DataError, match=rf"^f:2, field '{column}': missing column"):
        from_ab(bad, "f:2", CTX)


def test_detect_format_and_registry():
    assert detect_format(row(), "f:1") == "ab" and detect_format(arena_row(), "f:1") == "ab"
    assert detect_format({"prompt": "p", "chosen": "a", "rejected": "b"}, "f:1") == "pairs"
    assert get_format("ab")(row(), "f:1", CTX).meta["outcome"] == "a"
    assert DataConfig(format="ab").format == "ab"
    with pytest.raises(ValueError, match=r"unknown data format 'abc'; valid formats: .*\bab\b"):
        get_format("abc")


def test_same_pair_judged_by_several_labelers_stays_separate(tmp_path):
    rows = [row(winner=w, labeler=f"u{i}", category="chat") for i, w in enumerate(["a", "b", "tie", "a"])]
    comps, report = load_comparisons(str(write_jsonl(tmp_path / "ab.jsonl", rows)), DataConfig())
    assert len(comps) == 4 and report.comparisons == 4 and report.pairs == 4
    assert [c.meta["outcome"] for c in comps] == ["a", "b", "tie", "a"]
    assert [c.labeler for c in comps] == ["u0", "u1", "u2", "u3"]
    assert all(c.responses == ("first", "second") and c.meta["category"] == "chat" for c in comps)


# ----------------------------------------------------------------------------- property test

texts = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=20).filter(str.strip)
spellings = st.sampled_from(sorted(WINNER_SPELLINGS)).flatmap(
    lambda s: st.sampled_from([s, s.upper(), f"  {s.title()} "]))


@settings(max_examples=100, deadline=None)
@given(prompt=texts, a=texts, b=texts, winner=spellings)
def test_valid_rows_round_trip_outcome_and_pair(prompt, a, b, winner):
    if a == b:
        with pytest.raises(DataError, match="identical"):
            from_ab(row(prompt=prompt, response_a=a, response_b=b, winner=winner), "h:1", CTX)
        return
    c = from_ab(row(prompt=prompt, response_a=a, response_b=b, winner=winner), "h:1", CTX)
    outcome = WINNER_SPELLINGS[winner.strip().lower()]
    (pair,) = c.pairs
    assert c.meta["outcome"] == outcome == pair_outcome(pair) == outcome_label(c)
    winner_text = {"a": a, "b": b, "tie": a}[outcome]
    assert c.responses[pair.winner] == winner_text and pair.tie == (outcome == "tie")


# ----------------------------------------------------------------------------- ties from rankings


def test_equal_ranks_give_one_tie_pair_per_tied_pair():
    c = from_rankings({"prompt": "p", "responses": ["w", "x", "y", "z"], "ranks": [2, 1, 2, 2]}, "r:1", CTX)
    strict = sorted(p[:2] for p in c.pairs if not p.tie)
    ties = sorted(p[:2] for p in c.pairs if p.tie)
    assert strict == [(1, 0), (1, 2), (1, 3)]
    assert ties == [(0, 2), (0, 3), (2, 3)]  # i < j, one per unordered pair
    assert all(p.margin == 0.0 for p in c.pairs)
    only_ties = from_rankings({"prompt": "p", "responses": ["x", "y"], "ranks": [1, 1]}, "r:2", CTX)
    assert only_ties.pairs == (Pair(0, 1, tie=True),) and outcome_label(only_ties) == "tie"


# ----------------------------------------------------------------------------- splits


def judged(n_groups=40, per_group=3, seed=0):
    """Comparisons in groups of ``per_group``, outcomes cycling a / b / tie / a (half a, a quarter each b, tie)."""
    out = []
    for g in range(n_groups):
        for k in range(per_group):
            outcome = "abta"[(g * per_group + k + seed) % 4].replace("t", "tie")
            out.append(Comparison(prompt=f"q{g}", responses=(f"x{g}.{k}", f"y{g}.{k}"), source=f"m:{g}.{k}",
                                  pairs=(from_ab(row(winner=outcome), "m", CTX).pairs[0],), group=f"g{g}",
                                  meta={"outcome": outcome}))
    return out


def shares(comparisons):
    counts = collections.Counter(outcome_label(c) for c in comparisons)
    return {k: counts[k] / len(comparisons) for k in ("a", "b", "tie")}


def test_stratified_split_keeps_groups_and_proportions():
    comps = judged()
    train, held = stratified_group_split(comps, 0.25, split_by="group", seed=1)
    assert not {c.group for c in train} & {c.group for c in held}
    assert len(train) + len(held) == len(comps) and 0.2 <= len(held) / len(comps) <= 0.3
    whole, t, e = shares(comps), shares(train), shares(held)
    assert all(abs(t[k] - whole[k]) < 0.05 and abs(e[k] - whole[k]) < 0.05 for k in whole), (whole, t, e)
    again = stratified_group_split(comps, 0.25, split_by="group", seed=1)[1]
    assert [c.source for c in again] == [c.source for c in held]
    assert stratified_group_split(comps, 0.0, split_by="group") == (comps, [])


def test_stratified_split_without_outcome_meta_uses_the_first_pair():
    plain = [Comparison(prompt=f"q{i}", responses=("x", "y"), pairs=(Pair(0, 1, tie=i % 3 == 0),), source=f"m:{i}")
             for i in range(30)]
    assert [outcome_label(c) for c in plain[:3]] == ["tie", "a", "a"]
    train, held = stratified_group_split(plain, 0.2, split_by="prompt", seed=0)
    assert len(held) == 6 and sum(outcome_label(c) == "tie" for c in held) == 2


@pytest.mark.parametrize("call, match", [
    (lambda c: stratified_group_split(c, 0.8, split_by="group"), r"eval_fraction=0.8 is too large"),
    (lambda c: stratified_group_split(c, 1.0, split_by="group"), r"eval_fraction=1.0 must be in \[0, 1\)"),
    (lambda c: stratified_group_split(c, 0.2, split_by="labeler"), r"cannot split by 'labeler'"),
    (lambda c: kfold_splits(c, 50, split_by="group"), r"cannot make 50 folds from 40 groups of 'group'"),
    (lambda c: kfold_splits(c, 1, split_by="group"), r"k=1 folds: cross-validation needs a whole number >= 2"),
])
def test_split_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call(judged())


@pytest.mark.parametrize("stratify", [True, False])
def test_kfold_covers_every_comparison_once_as_eval(stratify):
    comps = judged()
    folds = kfold_splits(comps, 5, split_by="group", stratify=stratify, seed=3)
    assert len(folds) == 5
    held = [c.source for _, evaluation in folds for c in evaluation]
    assert sorted(held) == sorted(c.source for c in comps)  # each exactly once
    for train, evaluation in folds:
        assert len(train) + len(evaluation) == len(comps)
        assert not {c.group for c in train} & {c.group for c in evaluation}
    if stratify:
        whole = shares(comps)
        assert all(abs(shares(e)[k] - whole[k]) < 0.1 for _, e in folds for k in whole)


def test_config_split_options_are_validated():
    assert (DataConfig().stratify, DataConfig().folds, DataConfig().winner_codes) == (False, 1, {})
    assert DataConfig(stratify=True, folds=5).folds == 5
    for bad in (0, -2):
        with pytest.raises(ValueError, match=r"data.folds=.* must be a whole number >= 1"):
            DataConfig(folds=bad)
    for bad in (2.5, True):
        with pytest.raises(ValueError, match=r"data.folds=.* should be of type int"):
            DataConfig(folds=bad)


# ----------------------------------------------------------------------------- LLMFAO loader


def _llmfao_module():
    spec = importlib.util.spec_from_file_location("llmfao_data", Path(__file__).parents[1] / "bench/llmfao_data.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_llmfao_rows(tmp_path):
    if not LLMFAO.is_dir():
        pytest.skip(f"{LLMFAO} is absent (the shared data folder ships beside the repo, not in it)")
    llmfao = _llmfao_module()
    rows = llmfao.load_llmfao(LLMFAO)
    assert len(rows) == 8931 and len({r["labeler"] for r in rows}) == 124
    assert 0.37 < sum(r["winner"] == "tie" for r in rows) / len(rows) < 0.41
    assert set(rows[0]) == {"prompt", "response_a", "response_b", "winner", "labeler", "group", "model_a", "model_b"}
    assert rows[0]["labeler"].startswith("worker") and rows[0]["group"] == "0"
    assert len(llmfao.load_llmfao(LLMFAO, ties=False)) == 8931 - sum(r["winner"] == "tie" for r in rows)
    gpt4 = llmfao.load_llmfao_gpt4(LLMFAO)
    assert len(gpt4) == 2139 and {r["labeler"] for r in gpt4} == {"gpt4"}
    path = llmfao.write_jsonl(llmfao.load_llmfao(LLMFAO, skip_empty=True)[:300], tmp_path / "crowd.jsonl")
    comps, report = load_comparisons(str(path), DataConfig(on_bad_row="skip"))
    assert report.rows == 300 and comps[0].meta["outcome"] in ("a", "b", "tie") and comps[0].group is not None
    assert report.comparisons + report.skipped == 300
