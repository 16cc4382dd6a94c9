import gzip
import json
import math

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rewardlab.config import DataConfig
from rewardlab.contracts.schema import DataError, Pair
from rewardlab.data.fields import FormatContext
from rewardlab.data.formats import from_ratings, split_implicit_prompt
from rewardlab.data.load import load_comparisons
from rewardlab.data.sources import default_data_path, read_rows
from rewardlab.data.splits import split_by_group

from conftest import SHARED, write_jsonl


def load(path, **kw):
    return load_comparisons(str(path), DataConfig(**kw))


def test_explicit_pairs_carry_optional_fields(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [
        {"prompt": "p", "chosen": "good", "rejected": "bad", "labeler": "u1", "attribute": "helpful",
         "group": "g1", "category": "chat"}])
    (c,), report = load(path)
    assert (c.prompt, c.responses, c.pairs) == ("p", ("good", "bad"), (Pair(0, 1, 0.0, attribute="helpful"),))
    assert (c.labeler, c.attribute, c.group, c.meta) == ("u1", "helpful", "g1", {"category": "chat"})
    assert c.source == f"{path}:1" and report.pairs == 1


def test_implicit_prompt_hh_dialogues():
    chosen = "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Best pet?\n\nAssistant: Dogs are loyal."
    rejected = "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Best pet?\n\nAssistant: Don't care."
    prompt, c, r = split_implicit_prompt(chosen, rejected, "\n\nAssistant:")
    assert prompt.endswith("Best pet?\n\nAssistant:") and (c, r) == (" Dogs are loyal.", " Don't care.")
    # responses that share a first word still split at the marker, not mid-response
    prompt2, c2, r2 = split_implicit_prompt("\n\nHuman: Q\n\nAssistant: Yes I can", "\n\nHuman: Q\n\nAssistant: Yes no",
                                            "\n\nAssistant:")
    assert (c2, r2) == (" Yes I can", " Yes no")


def test_chat_messages_rendered_without_template(tmp_path):
    history = [{"role": "user", "content": "Hi?"}]
    path = write_jsonl(tmp_path / "c.jsonl", [{"chosen": history + [{"role": "assistant", "content": "Hello!"}],
                                               "rejected": history + [{"role": "assistant", "content": "Go away"}]}])
    (c,), _ = load(path)
    assert c.prompt == "user: Hi?\nassistant:" and c.responses == (" Hello!", " Go away")


def test_chat_messages_use_the_tokenizers_chat_template(tmp_path, tiny_llama):
    from transformers import AutoTokenizer

    from rewardlab.data.encode import EncodingSpec, TextEncoder, TextItems

    tok = AutoTokenizer.from_pretrained(tiny_llama)
    tok.chat_template = ("{% for m in messages %}<{{ m.role }}>{{ m.content }}</s>{% endfor %}"
                         "{% if add_generation_prompt %}<assistant>{% endif %}")
    history = [{"role": "user", "content": "Hi?"}]
    path = write_jsonl(tmp_path / "c.jsonl", [{"chosen": history + [{"role": "assistant", "content": "Hello!"}],
                                               "rejected": history + [{"role": "assistant", "content": "Go away"}]}])
    (c,), _ = load_comparisons(str(path), DataConfig(), render_chat=TextItems(TextEncoder(tok, EncodingSpec())).render_chat)
    assert c.prompt == "<user>Hi?</s><assistant>"
    assert c.responses == ("Hello!</s>", "Go away</s>")


def test_rankings_give_all_ordered_pairs_and_ties(tmp_path):
    path = write_jsonl(tmp_path / "r.jsonl", [
        {"prompt": "p", "responses": ["a", "b", "c", "d"], "ranks": [2, 1, 4, 3]},
        {"prompt": "q", "responses": ["x", "y", "z"], "ranks": [1, 1, 2]}])
    (c, d), report = load(path)
    assert len(c.pairs) == 6 and set(p[:2] for p in c.pairs) >= {(1, 0), (0, 3), (3, 2)}
    assert [p[:2] for p in d.pairs if not p.tie] == [(0, 2), (1, 2)]
    assert [(p.winner, p.loser) for p in d.pairs if p.tie] == [(0, 1)]  # x and y tie: one tie pair
    assert report.pairs == 9


def test_ratings_respect_min_rating_diff(tmp_path):
    path = write_jsonl(tmp_path / "s.jsonl", [
        {"prompt": "p", "responses": ["a", "b", "c"], "ratings": [5, 4.5, 1]},
        {"prompt": "q", "responses": ["x", "y"], "ratings": [3, 3]}])
    (c,), report = load(path, min_rating_diff=1.0)
    assert sorted(p[:3] for p in c.pairs) == [(0, 2, 4.0), (1, 2, 3.5)]
    assert report.no_preference == 1 and "no scores far enough apart" in report.summary()


@pytest.mark.parametrize("row, match", [
    ({"prompt": "p", "chosen": "a"}, r":1, field 'rejected': missing column"),
    ({"prompt": "p", "chosen": "  ", "rejected": "b"}, r"field 'chosen': empty text"),
    ({"prompt": "p", "chosen": 3, "rejected": "b"}, r"field 'chosen': expected text, got int"),
    ({"prompt": "p", "chosen": "same", "rejected": "same"}, r"field 'rejected': identical to 'chosen'"),
    ({"prompt": "p", "responses": ["a", "b"], "ratings": [1, float("nan")]}, r"field 'ratings\[1\]': must be a finite"),
    ({"prompt": "p", "responses": ["a", "b"], "ratings": [1, "high"]}, r"field 'ratings\[1\]': expected a number"),
    ({"prompt": "p", "responses": ["a", "b", "c"], "ratings": [1, 2]}, r"has 2 values for 3 responses"),
    ({"prompt": "p", "responses": ["a", "a"], "ranks": [1, 2]}, r"contains the same response twice"),
    ({"question": "p", "answer": "a"}, r"cannot tell the format from columns"),
    ({"prompt": "p", "chosen": "a\ud83d", "rejected": "b"}, r"field 'chosen': not valid Unicode: a lone surrogate"),
    ({"chosen": [{"role": "user", "content": "\udc00"}], "rejected": [{"role": "user", "content": "b"}]},
     r"field 'chosen\[0\]\.content': not valid Unicode"),
    ({"prompt": "p", "chosen": "a", "rejected": "b", "labeler": {"id": 1}},
     r"field 'labeler': expected text or an integer id, got dict"),
    ({"prompt": "p", "response": "a", "helpful": 2, "group": [1]}, r"field 'group': expected text or an integer id"),
])
def test_bad_rows_name_file_row_and_field(tmp_path, row, match):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(row, allow_nan=True) + "\n")
    with pytest.raises(DataError, match=match) as err:
        load(path)
    assert str(path) in str(err.value)


def test_duplicate_pairs_and_skip_policy_report_everything(tmp_path):
    rows = [{"prompt": "p", "chosen": "a", "rejected": "b"}, {"prompt": "p", "chosen": "a", "rejected": "b"},
            {"prompt": "p", "chosen": "", "rejected": "b"}, {"prompt": "q", "chosen": "c", "rejected": "d"}]
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    with pytest.raises(DataError, match=r"d.jsonl:2: duplicate of the pair at .*d.jsonl:1"):
        load(path)
    comps, report = load(path, on_bad_row="skip")
    assert len(comps) == 2 and report.skipped == 2 and report.rows == 4
    assert "d.jsonl:2" in report.reasons[0] and "field 'chosen': empty text" in report.reasons[1]


def test_malformed_json_line_and_unknown_file_type(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text('{"prompt": "p", "chosen": "a", "rejected": "b"}\n{"prompt": oops}\n')
    with pytest.raises(DataError, match=r"x.jsonl:2: not valid JSON"):
        load(path)
    (tmp_path / "x.txt").write_text("prompt,chosen,rejected\n")
    with pytest.raises(DataError, match=r"x.txt: unknown file type; use one of .jsonl, .json, .csv, .parquet"):
        list(read_rows(str(tmp_path / "x.txt")))
    with pytest.raises(DataError, match=r"missing.jsonl: file does not exist"):
        list(read_rows(str(tmp_path / "missing.jsonl")))


def test_empty_files_and_broken_containers_name_the_file(tmp_path):
    (tmp_path / "empty.jsonl").write_text("\n  \n")
    (tmp_path / "header.csv").write_text("prompt,chosen,rejected\n")
    (tmp_path / "not.jsonl.gz").write_text('{"prompt": "p"}\n')
    (tmp_path / "not.parquet").write_text("prompt,chosen,rejected\n")
    for name, match in [("empty.jsonl", "empty.jsonl: no rows"), ("header.csv", "header.csv: no rows"),
                        ("not.jsonl.gz", r"not.jsonl.gz: not a readable gzip file"),
                        ("not.parquet", r"not.parquet: not a readable Parquet file")]:
        with pytest.raises(DataError, match=match):
            load(tmp_path / name)


def test_a_byte_order_mark_and_missing_or_numeric_labelers_read_as_written(tmp_path):
    (tmp_path / "excel.csv").write_bytes("prompt,chosen,rejected,labeler\np,a,b,7\n".encode("utf-8-sig"))
    (tmp_path / "bom.jsonl").write_bytes(b"\xef\xbb\xbf" + json.dumps({"prompt": "p", "chosen": "a",
                                                                        "rejected": "b"}).encode() + b"\n")
    pq.write_table(pa.Table.from_pylist([{"prompt": "p", "chosen": "a", "rejected": "b", "labeler": 3.0},
                                         {"prompt": "q", "chosen": "a", "rejected": "b", "labeler": math.nan}]),
                   tmp_path / "pandas.parquet")
    assert [c.labeler for c in load(tmp_path / "excel.csv")[0]] == ["7"]
    assert [c.prompt for c in load(tmp_path / "bom.jsonl")[0]] == ["p"]
    assert [c.labeler for c in load(tmp_path / "pandas.parquet")[0]] == ["3", None]  # a missing cell is no labeler


def test_column_mapping_csv_json_parquet_gz(tmp_path):
    rows = [{"q": f"p{i}", "good": f"yes {i}", "bad": f"no {i}"} for i in range(3)]
    cfg = DataConfig(columns={"prompt": "q", "chosen": "good", "rejected": "bad"})
    (tmp_path / "a.csv").write_text("q,good,bad\n" + "".join(f"{r['q']},{r['good']},{r['bad']}\n" for r in rows))
    (tmp_path / "a.json").write_text(json.dumps(rows))
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "a.parquet")
    with gzip.open(tmp_path / "a.jsonl.gz", "wt") as fh:
        fh.write("".join(json.dumps(r) + "\n" for r in rows))
    for name in ("a.csv", "a.json", "a.parquet", "a.jsonl.gz"):
        comps, _ = load_comparisons(str(tmp_path / name), cfg)
        assert [c.responses for c in comps] == [(r["good"], r["bad"]) for r in rows], name
    assert load_comparisons(str(tmp_path / "a.csv"), cfg)[0][0].source.endswith("a.csv:2")  # header is line 1


def test_embedded_default_data():
    comps, report = load_comparisons("default", DataConfig())
    assert report.pairs >= 300 and report.skipped == 0
    assert len({c.prompt for c in comps}) >= 60
    assert {c.meta["category"] for c in comps} == {"obvious", "subtle"}
    assert default_data_path().is_file()
    # length does not give the preference away: the longer reply wins about half the pairs, refusals included
    def longer_won(cs):
        return sum(len(c.responses[0]) > len(c.responses[1]) for c in cs) / len(cs)

    assert 0.45 <= longer_won(comps) <= 0.6
    assert 0.4 <= longer_won([c for c in comps if c.meta["kind"] == "refusal"]) <= 0.6


def test_group_split_is_disjoint_seeded_and_sized():
    comps, _ = load_comparisons("default", DataConfig())
    train, held = split_by_group(comps, 0.2, split_by="prompt", seed=3)
    assert not {c.prompt for c in train} & {c.prompt for c in held}
    assert len(train) + len(held) == len(comps)
    assert 0.2 <= len(held) / len(comps) < 0.3
    again = split_by_group(comps, 0.2, split_by="prompt", seed=3)[1]
    assert [c.source for c in again] == [c.source for c in held]
    assert [c.source for c in split_by_group(comps, 0.2, seed=4)[1]] != [c.source for c in held]
    with pytest.raises(ValueError, match="cannot split by 'labeler'"):
        split_by_group(comps, 0.2, split_by="labeler")


def test_hh_rlhf_shared_data_loads():
    path = SHARED / "hh-rlhf" / "harmless-base-dev.jsonl.gz"
    if not path.exists():
        pytest.skip(f"{path} is absent (the shared data folder ships beside the repo, not in it)")
    comps, report = load_comparisons(str(path), DataConfig(on_bad_row="skip"))
    assert report.rows == 1812 and report.comparisons + report.skipped == report.rows
    assert all(c.prompt.endswith("Assistant:") for c in comps[:50])


# ----------------------------------------------------------------------------- property tests

texts = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=30).filter(str.strip)


@settings(max_examples=60, deadline=None)
@given(scores=st.lists(st.floats(-10, 10, allow_nan=False), min_size=2, max_size=6),
       min_diff=st.floats(0, 5, allow_nan=False))
def test_ratings_pairs_match_brute_force(scores, min_diff):
    responses = [f"r{i}" for i in range(len(scores))]
    c = from_ratings({"prompt": "p", "responses": responses, "ratings": scores}, "mem:1",
                     FormatContext(min_rating_diff=min_diff))
    expected = {(i, j) for i in range(len(scores)) for j in range(len(scores))
                if scores[i] - scores[j] >= max(min_diff, 1e-12)}
    got = set() if c is None else {p[:2] for p in c.pairs}
    assert got == expected
    if c is not None:
        assert all(math.isclose(m, scores[w] - scores[l]) and m >= min_diff for w, l, m, *_ in c.pairs)


@settings(max_examples=60, deadline=None)
@given(rows=st.lists(st.tuples(texts, texts, texts), min_size=1, max_size=8))
def test_jsonl_round_trip_keeps_every_valid_row(tmp_path_factory, rows):
    path = tmp_path_factory.mktemp("h") / "rows.jsonl"
    write_jsonl(path, [{"prompt": p, "chosen": c, "rejected": r} for p, c, r in rows])
    valid = {(p, c, r) for p, c, r in rows if c != r}
    if not valid:
        with pytest.raises(DataError):
            load(path, on_bad_row="skip")
        return
    comps, report = load(path, on_bad_row="skip")
    assert {(c.prompt, *c.responses) for c in comps} == valid
    assert report.comparisons + report.skipped == len(rows)  # nothing lost silently
