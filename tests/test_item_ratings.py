"""Pointwise per-attribute ratings → pairs per attribute; balancing weights."""

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rewardlab.config import DataConfig
from rewardlab.contracts.schema import Comparison, DataError, Pair
from rewardlab.data.balance import balance_pairs
from rewardlab.data.load import load_comparisons

from conftest import write_jsonl

ROWS = [
    {"prompt": "p1", "response": "a", "helpfulness": 5, "correctness": 1},
    {"prompt": "p1", "response": "b", "helpfulness": 2, "correctness": 4},
    {"prompt": "p1", "response": "c", "helpfulness": 2},  # not rated on correctness
    {"prompt": "p2", "response": "a", "helpfulness": 3, "correctness": 3},
]


def load(path, **kw):
    return load_comparisons(str(path), DataConfig(**kw))


def test_rows_of_a_prompt_form_pairs_per_attribute(tmp_path):
    path = write_jsonl(tmp_path / "r.jsonl", ROWS)
    (c,), report = load(path, attributes=["helpfulness", "correctness"])
    assert c.prompt == "p1" and c.responses == ("a", "b", "c")
    by_attr = {}
    for p in c.pairs:
        by_attr.setdefault(p.attribute, []).append(p[:3])
    assert sorted(by_attr["helpfulness"]) == [(0, 1, 3.0), (0, 2, 3.0)]  # b and c tie on helpfulness
    assert by_attr["correctness"] == [(1, 0, 3.0)]  # c has no correctness rating: no pair
    # overall pairs from the mean of rows rated on both: a = 3, b = 3 -> none; c lacks a rating
    assert None not in by_attr
    assert report.no_preference == 1  # p2 has a single response


def test_attributes_are_inferred_and_aggregate_pairs_formed(tmp_path):
    path = write_jsonl(tmp_path / "r.jsonl", [
        {"prompt": "p", "response": "x", "style": 5, "spatial": 4, "group": "g"},
        {"prompt": "p", "response": "y", "style": 1, "spatial": 1, "group": "g"},
    ])
    (c,), _ = load(path)
    assert {p.attribute for p in c.pairs} == {"style", "spatial", None}
    overall = [p for p in c.pairs if p.attribute is None]
    assert overall == [Pair(0, 1, 3.5)] and c.scores == (4.5, 1.0) and c.group == "g"
    (c,), _ = load(path, aggregate_pairs=False)
    assert None not in {p.attribute for p in c.pairs}


@pytest.mark.parametrize("value, message", [
    (float("nan"), "must be a finite number, got nan"),
    ("high", "expected a number, got 'high'"),
    (11, r"rating 11 is outside data.rating_range \[1, 10\]"),
])
def test_bad_ratings_name_file_row_and_field(tmp_path, value, message):
    rows = [dict(ROWS[0]), dict(ROWS[1], helpfulness=value)]
    path = write_jsonl(tmp_path / "r.jsonl", rows) if not isinstance(value, float) else tmp_path / "r.jsonl"
    if isinstance(value, float):  # json.dumps writes NaN, which Python's json reads back
        path.write_text("\n".join(__import__("json").dumps(r) for r in rows))
    with pytest.raises(DataError, match=f"r.jsonl:2, field 'helpfulness': {message}"):
        load(path, attributes=["helpfulness", "correctness"], rating_range=[1, 10])


def test_same_response_twice_and_missing_response_are_errors(tmp_path):
    path = write_jsonl(tmp_path / "r.jsonl", [ROWS[0], dict(ROWS[1], response="a")])
    with pytest.raises(DataError, match=r"r.jsonl:2, field 'response': the same response to this prompt appears at "
                                        r".*r.jsonl:1"):
        load(path, attributes=["helpfulness"])
    path = write_jsonl(tmp_path / "s.jsonl", [ROWS[0], {"prompt": "p1", "response": "", "helpfulness": 1}, ROWS[1]])
    with pytest.raises(DataError, match="s.jsonl:2, field 'response': empty text"):
        load(path, attributes=["helpfulness"])
    (c,), report = load(path, attributes=["helpfulness"], on_bad_row="skip")
    assert report.skipped == 1 and "empty text" in report.reasons[0]


def test_a_row_rated_on_nothing_is_an_error(tmp_path):
    path = write_jsonl(tmp_path / "r.jsonl", [ROWS[0], {"prompt": "p1", "response": "z", "helpfulness": None}])
    with pytest.raises(DataError, match="r.jsonl:2: no rating in any of the attribute columns helpfulness"):
        load(path, attributes=["helpfulness"])


def test_labelers_and_groups_rate_separately(tmp_path):
    rows = [dict(r, labeler=u) for u in ("u1", "u2") for r in ROWS[:2]]
    comps, _ = load(write_jsonl(tmp_path / "r.jsonl", rows), attributes=["helpfulness"])
    assert [c.labeler for c in comps] == ["u1", "u2"] and all(len(c.pairs) == 1 for c in comps)
    rows = [dict(r, group=g, response=r["response"] + g) for g in ("g1", "g2") for r in ROWS[:2]]
    comps, _ = load(write_jsonl(tmp_path / "g.jsonl", rows), attributes=["helpfulness"])
    assert [c.group for c in comps] == ["g1", "g2"]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(st.none(), st.floats(1, 5, allow_nan=False)), min_size=2, max_size=6),
       st.lists(st.one_of(st.none(), st.floats(1, 5, allow_nan=False)), min_size=2, max_size=6),
       st.floats(0, 2))
def test_pairs_are_exactly_the_rated_gaps(tmp_path_factory, style, spatial, min_diff):
    n = min(len(style), len(spatial))
    rows = [{"prompt": "p", "response": f"r{i}", "style": style[i], "spatial": spatial[i]} for i in range(n)
            if style[i] is not None or spatial[i] is not None]
    path = write_jsonl(tmp_path_factory.mktemp("h") / "r.jsonl", rows or [{"prompt": "p", "response": "x"}])
    try:
        comps, _ = load(path, attributes=["style", "spatial"], min_rating_diff=min_diff, aggregate_pairs=False)
    except DataError as err:
        assert "no usable preference pairs" in str(err) or "no rating" in str(err)
        return
    (c,) = comps
    for attr in ("style", "spatial"):
        ratings = [r.get(attr) for r in rows]
        expected = {(i, j) for i, a in enumerate(ratings) for j, b in enumerate(ratings)
                    if a is not None and b is not None and a - b >= max(min_diff, 1e-12)}
        got = {(p.winner, p.loser) for p in c.pairs if p.attribute == attr}
        assert got == expected
        assert all(math.isclose(p.margin, ratings[p.winner] - ratings[p.loser]) for p in c.pairs if p.attribute == attr)


def test_balance_gives_each_attribute_equal_total_weight():
    c = Comparison("p", ("a", "b", "c", "d"), tuple(Pair(i, j, float(j - i), attribute="style")
                                                   for i in range(4) for j in range(i + 1, 4))
                   + (Pair(0, 1, 1.0, attribute="spatial"),))
    (b,) = balance_pairs([c], "attribute")
    totals = {}
    for p in b.pairs:
        totals[p.attribute] = totals.get(p.attribute, 0.0) + p.weight
    assert totals["style"] == pytest.approx(totals["spatial"]) and sum(totals.values()) == pytest.approx(7)
    (g,) = balance_pairs([c], "attribute_gap")
    style = [p for p in g.pairs if p.attribute == "style"]
    # gaps 1,1,1 (small) / 2,2 / 3 (large): each bin's pairs weigh the same in total
    by_gap = {}
    for p in style:
        by_gap[p.margin] = by_gap.get(p.margin, 0.0) + p.weight
    assert len(set(round(v, 9) for v in by_gap.values())) == 1
    assert balance_pairs([c], "none")[0] is c
