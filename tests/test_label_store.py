"""The label store: no answer lost between writers or to a kill, skip / revisit, assignment, check items,
agreement, export to training data, the old JSONL --out, refusals. The page itself: test_generate_label.py."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from conftest import post, serving, write_jsonl

from rewardlab.cli import main
from rewardlab.config import DataConfig
from rewardlab.contracts.schema import DataError
from rewardlab.data.load import load_comparisons
from rewardlab.data.sources import read_rows
from rewardlab.label import Assignment, LabelStore
from rewardlab.label.agreement import check_agreement, store_agreement
from rewardlab.label.server import create_app
from rewardlab.metrics.agreement import (
    kendall_tau,
    krippendorff_alpha_ordinal,
    rank_agreement,
)


def _candidates(tmp_path: Path, n: int = 5, k: int = 3, name: str = "cands.jsonl") -> Path:
    rows = [{"prompt": f"prompt {i}", "responses": [f"response {i}.{j}" for j in range(k)], "id": f"p{i}"}
            for i in range(n)]
    return write_jsonl(tmp_path / name, rows)


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# --------------------------------------------------------------------- writers at once, and a kill

WRITER = """
import sys
from rewardlab.label import LabelStore
store = LabelStore(None, sys.argv[1])
for item in range(int(sys.argv[3])):
    store.answer(sys.argv[2], item, "rank", [1, 2] if item % 2 else [2, 1], elapsed_ms=item)
    print(item, flush=True)
"""


def test_two_processes_and_two_store_objects_on_one_file_keep_every_answer(tmp_path):
    db = tmp_path / "labels.sqlite"
    LabelStore(_candidates(tmp_path, n=50, k=2), db).close()
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(db), name, "50"], stdout=subprocess.DEVNULL)
             for name in ("proc-a", "proc-b")]
    first, second = LabelStore(None, db), LabelStore(None, db)  # two objects in this process, meanwhile
    for item in range(50):
        first.answer("obj-a", item, "skip" if item % 5 == 0 else "rank", [1, 2])
        second.answer("obj-b", item, "flag", note=f"n{item}")
    assert [p.wait(60) for p in procs] == [0, 0]
    reopened = LabelStore(None, db)
    answers = reopened.answers()
    assert len(answers) == 200 and len({(a["labeler"], a["item"]) for a in answers}) == 200
    for name in ("proc-a", "proc-b"):
        mine = sorted((a for a in answers if a["labeler"] == name), key=lambda a: a["item"])
        assert [a["ranks"] for a in mine] == [[1, 2] if i % 2 else [2, 1] for i in range(50)]
        assert [a["elapsed_ms"] for a in mine] == list(range(50))
    assert {a["note"] for a in answers if a["labeler"] == "obj-b"} == {f"n{i}" for i in range(50)}
    assert reopened.progress("obj-a") == {"total": 50, "answered": 40, "ranked": 40, "skipped": 10, "flagged": 0,
                                          "remaining": 10}
    assert all(a["given_at"].endswith("+00:00") for a in answers)  # UTC
    assert len(reopened.export_rows()) == 140  # rankings only: 3 x 50 answers less obj-a's 10 skips


def test_answers_confirmed_before_a_sigkill_are_there_after_reopening(tmp_path):
    db = tmp_path / "labels.sqlite"
    LabelStore(_candidates(tmp_path, n=400, k=2), db).close()
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(db), "killed", "400"], stdout=subprocess.PIPE, text=True)
    confirmed = [int(proc.stdout.readline()) for _ in range(20)]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    saved = {a["item"] for a in LabelStore(None, db).answers("killed")}
    assert set(confirmed) <= saved and len(saved) < 400  # killed part-way, nothing it confirmed is missing


# --------------------------------------------------------------------- what a labeler sees next


def test_skips_are_counted_apart_and_come_back_once_nothing_else_is_left(tmp_path):
    store = LabelStore(_candidates(tmp_path, n=4), tmp_path / "s.sqlite")
    store.answer("ann", 0, "rank", [1, 2, 3])
    store.answer("ann", 1, "skip")
    store.answer("ann", 2, "flag", note="offensive")
    assert store.progress("ann") == {"total": 4, "answered": 2, "ranked": 1, "skipped": 1, "flagged": 1,
                                     "remaining": 2}
    assert store.next_step("ann", 2) == {"item": 3, "revisit": False, "last": 3}
    store.answer("ann", 3, "skip")
    assert store.next_step("ann", 3)["item"] == 1 and store.next_step("ann", 3)["revisit"]  # revisit, in order
    assert store.next_item("ann", 1) == 3 and store.next_item("ann", 3, revisit=False) is None
    assert store.item("ann", 1)["answer"]["action"] == "skip"  # the earlier answer is still shown
    store.answer("ann", 1, "rank", [3, 2, 1])
    assert store.next_item("ann", 1) == 3
    store.answer("ann", 3, "rank", [1, 1, 2])
    assert store.next_item("ann") is None
    assert store.progress("ann") == {"total": 4, "answered": 4, "ranked": 3, "skipped": 0, "flagged": 1,
                                     "remaining": 0}
    assert store.answer_of("ann", 1)["revision"] == 2 and store.item("ann", 1)["answer"]["ranks"] == [3, 2, 1]


def test_per_prompt_assignment_spreads_labels_over_three_labelers(tmp_path):
    store = LabelStore(_candidates(tmp_path, n=12), tmp_path / "s.sqlite", assignment=Assignment(per_prompt=1))
    queues = {name: store.queue(name) for name in ("ann", "bob", "cy")}
    assert len({tuple(q) for q in queues.values()}) == 3 and all(sorted(q) == list(range(12)) for q in queues.values())
    assert store.queue("ann") == queues["ann"]  # stable per name
    assert LabelStore(None, tmp_path / "s.sqlite", assignment=Assignment(per_prompt=1)).queue("ann") == queues["ann"]
    first = {name: store.next_item(name) for name in queues}
    assert first == {name: q[0] for name, q in queues.items()}  # each starts in their own order
    served: dict[str, list[int]] = {name: [] for name in queues}
    for _ in range(12):  # in turns, each answers what they are served
        for name in queues:
            item = store.next_item(name)
            if item is not None:
                store.answer(name, item, "rank", [1, 2, 3])
                served[name].append(item)
    every = sorted(i for items in served.values() for i in items)
    assert every == list(range(12))  # each prompt labelled once (K = 1), by whoever reached it first
    assert all(served.values()), served  # and early prompts did not all go to one person
    for name in queues:
        p = store.progress(name)
        assert p["answered"] == len(served[name]) and p["total"] == p["answered"] and p["remaining"] == 0
    assert LabelStore(None, tmp_path / "s.sqlite").next_item("dee") == 0  # without --per-prompt: all of them


def test_check_items_are_mixed_in_and_scored_per_labeler(tmp_path):
    checks = write_jsonl(tmp_path / "checks.jsonl", [
        {"prompt": "2 + 2?", "responses": ["4", "5", "22"], "ranks": [1, 3, 2]},
        {"prompt": "Capital of France?", "responses": ["Paris", "Lyon"], "ranks": [1, 2]}])
    store = LabelStore(_candidates(tmp_path, n=4), tmp_path / "s.sqlite", checks=checks,
                       assignment=Assignment(check_every=2))
    assert [c.index for c in store.checks] == [4, 5]
    queue = store.queue("ann")
    assert queue[:2] == [0, 1] and queue[2] in (4, 5) and queue[3:5] == [2, 3] and queue[5] in (4, 5)
    assert "ranks" not in store.item("ann", 4) and store.progress("ann")["total"] == 6
    store.answer("ann", 4, "rank", [1, 3, 2])       # all 3 pairs right
    store.answer("ann", 5, "rank", [2, 1])          # wrong
    store.answer("bob", 4, "rank", [1, 2, 3])       # 2 of 3 pairs right, tau 1/3
    assert check_agreement(store) == {"ann": {"items": 2, "agree": 3, "pairs": 4, "tau": 0.0},
                                      "bob": {"items": 1, "agree": 2, "pairs": 3, "tau": pytest.approx(1 / 3)}}
    assert store.export_rows() == []  # check answers are no training data
    with pytest.raises(ValueError, match="has other check items .*same --checks file"):
        LabelStore(None, tmp_path / "s.sqlite", checks=write_jsonl(tmp_path / "other.jsonl", [
            {"prompt": "1 + 1?", "responses": ["2", "3"], "ranks": [1, 2]}]))
    with pytest.raises(DataError, match=r"bad\.jsonl:1, field 'ranks': a check item needs its known ranking"):
        LabelStore(_candidates(tmp_path, n=2), tmp_path / "t.sqlite",
                   checks=write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "x", "responses": ["a", "b"]}]))


# --------------------------------------------------------------------- agreement


def test_kendall_tau_and_krippendorff_alpha_match_hand_computed_values():
    assert kendall_tau([1, 2, 3], [1, 3, 2]) == pytest.approx(1 / 3)  # 2 concordant, 1 discordant of 3
    assert kendall_tau([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert kendall_tau([1, 1, 1], [1, 2, 3]) is None
    # o_11 = o_22 = 2, o_12 = o_21 = 1, n = 6, delta^2_12 = (6 - 3)^2: alpha = 1 - 5 * 18 / 162 = 4 / 9
    assert krippendorff_alpha_ordinal([[1, 1], [2, 2], [1, 2]]) == pytest.approx(4 / 9)
    assert krippendorff_alpha_ordinal([[1, 1], [2, 2], [3, 3]]) == pytest.approx(1.0)
    assert krippendorff_alpha_ordinal([[1], [2]]) is None  # nothing pairable
    # Krippendorff (2011), "Computing Krippendorff's alpha-reliability", 4 coders x 12 units: ordinal 0.815
    coders = [[1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None], [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
              [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None], [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None]]
    units = [[c[u] for c in coders if c[u] is not None] for u in range(12)]
    assert krippendorff_alpha_ordinal(units) == pytest.approx(0.815, abs=5e-4)
    report = rank_agreement({0: {"a": [1, 2, 3], "b": [1, 3, 2]}, 1: {"a": [2, 1], "b": [2, 1], "c": [1, 2]},
                             2: {"a": [1, 2]}})
    assert report["items"] == 2 and report["labelers"] == 3
    assert [p["tau"] for p in report["by_pair"]] == pytest.approx([(1 / 3 + 1) / 2, -1.0, -1.0])
    assert report["tau"] == pytest.approx((2 / 3 - 2) / 3)


def test_agreement_route_and_the_answer_api(tmp_path):
    store = LabelStore(_candidates(tmp_path, n=3), tmp_path / "s.sqlite")
    with serving(create_app(store, default_labeler="server-default")) as (url, _):
        for name, ranks in (("ann", [1, 2, 3]), ("bob", [1, 3, 2])):
            status, reply, _ = post(f"{url}/api/answer", {"labeler": name, "item": 0, "action": "rank",
                                                          "ranks": ranks, "elapsed_ms": 2500.4})
            assert status == 200 and reply["saved"]["elapsed_ms"] == 2500 and reply["next"] == 1
        status, reply, _ = post(f"{url}/api/answer", {"labeler": "ann", "item": 1, "action": "skip",
                                                      "elapsed_ms": -1})
        assert status == 422 and "elapsed_ms -1 must be a number of milliseconds >= 0" in reply["error"]
        with urllib.request.urlopen(f"{url}/api/agreement") as res:
            report = json.loads(res.read())
        with urllib.request.urlopen(f"{url}/api/next?labeler=ann&after=0") as res:
            step = json.loads(res.read())
        with urllib.request.urlopen(f"{url}/api/config") as res:
            config = json.loads(res.read())
    assert report["between"]["items"] == 1 and report["between"]["tau"] == pytest.approx(1 / 3)
    assert report["between"]["by_pair"] == [{"labelers": ["ann", "bob"], "items": 1, "tau": pytest.approx(1 / 3)}]
    assert step["item"] == 1 and step["progress"]["answered"] == 1 and step["revisit"] is False
    assert config["default_labeler"] == "server-default" and config["store"].endswith("s.sqlite")
    assert store_agreement(store)["between"] == report["between"]


# --------------------------------------------------------------------- into training, and old files


def test_export_and_the_store_itself_are_training_data(tmp_path, capsys):
    cands = _candidates(tmp_path, n=3)
    db = tmp_path / "s.sqlite"
    store = LabelStore(cands, db)
    store.answer("ann", 0, "rank", [2, 1, 3])
    store.answer("bob", 0, "rank", [1, 1, 2])
    store.answer("bob", 1, "skip")
    assert main(["label", "--out", str(db), "--export", str(tmp_path / "r.jsonl")]) == 0
    assert "2 rankings from" in capsys.readouterr().out
    assert _rows(tmp_path / "r.jsonl") == [
        {"prompt": "prompt 0", "responses": ["response 0.0", "response 0.1", "response 0.2"], "ranks": [2, 1, 3],
         "labeler": "ann", "item": 0, "id": "p0"},
        {"prompt": "prompt 0", "responses": ["response 0.0", "response 0.1", "response 0.2"], "ranks": [1, 1, 2],
         "labeler": "bob", "item": 0, "id": "p0"}]
    def judged(source):  # what training reads: the comparisons less the location they came from
        return [(c.prompt, c.responses, c.pairs, c.labeler, c.meta) for c in load_comparisons(source, DataConfig())[0]]

    from_file = judged(str(tmp_path / "r.jsonl"))
    assert len(from_file) == 2 and [c[3] for c in from_file] == ["ann", "bob"]
    assert judged(str(db)) == from_file and judged(f"sqlite:{db}") == from_file
    with pytest.raises(DataError, match="missing.sqlite: file does not exist"):
        list(read_rows(str(tmp_path / "missing.sqlite")))
    (tmp_path / "empty.sqlite").write_bytes(b"")
    with pytest.raises(DataError, match="not a rewardlab label store"):
        list(read_rows(str(tmp_path / "empty.sqlite")))


def test_an_old_jsonl_out_is_imported_once_and_kept_up_to_date(tmp_path):
    cands = _candidates(tmp_path, n=3)
    old = write_jsonl(tmp_path / "rankings.jsonl", [
        {"prompt": "prompt 1", "responses": ["response 1.0", "response 1.1", "response 1.2"], "ranks": [1, 2, 3],
         "labeler": "alice", "item": 1, "id": "p1"}])
    write_jsonl(tmp_path / "rankings.skipped.jsonl", [{"prompt": "prompt 0", "item": 0, "labeler": "alice",
                                                       "action": "skip", "note": ""}])
    store = LabelStore(cands, old)
    assert store.location == str(tmp_path / "rankings.sqlite")
    assert store.progress("alice") == {"total": 3, "answered": 1, "ranked": 1, "skipped": 1, "flagged": 0,
                                       "remaining": 2}
    store.answer("alice", 2, "rank", [3, 2, 1])
    assert [r["item"] for r in _rows(old)] == [1, 2] and len(_rows(tmp_path / "rankings.skipped.jsonl")) == 1
    store.answer("alice", 1, "rank", [2, 1, 3])  # a changed answer replaces its row in the file too
    assert [(r["item"], r["ranks"]) for r in _rows(old)] == [(2, [3, 2, 1]), (1, [2, 1, 3])]
    again = LabelStore(cands, old)  # the second start does not import the (rewritten) file again
    assert [(a["item"], a["revision"]) for a in again.answers("alice")] == [(0, 1), (2, 1), (1, 2)]


def test_foreign_stores_and_bad_answers_are_refused_with_a_clear_message(tmp_path):
    db = tmp_path / "s.sqlite"
    store = LabelStore(_candidates(tmp_path, n=3), db)
    with pytest.raises(ValueError, match=r"s\.sqlite does not belong to these candidates .*label into a new --out"):
        LabelStore(_candidates(tmp_path, n=4, name="other.jsonl"), db)
    with pytest.raises(ValueError, match="not a label store yet; name the candidates with --data"):
        LabelStore(None, tmp_path / "new.sqlite")
    with pytest.raises(ValueError, match=r"--out .*x\.txt: name a store"):
        LabelStore(_candidates(tmp_path), tmp_path / "x.txt")
    write_jsonl(tmp_path / "old.jsonl", [{"prompt": "another prompt", "responses": ["a", "b"], "ranks": [1, 2],
                                          "labeler": "z", "item": 0}])
    with pytest.raises(ValueError, match=r"old\.jsonl:1 does not belong to these candidates .*new --out"):
        LabelStore(_candidates(tmp_path), tmp_path / "old.jsonl")
    for args, why in [(("", 0, "rank", [1, 2, 3]), "labeler must be a non-empty name"),
                      (("ann", 0, "maybe"), "action 'maybe' is not valid"),
                      (("ann", 7, "skip"), "item 7 does not exist; there are 3"),
                      (("ann", 0, "rank", [1, 2]), "must be a list of 3 integers"),
                      (("ann", 0, "flag", None, 5), "note must be text")]:
        with pytest.raises(ValueError, match=why):
            store.answer(*args)
    with pytest.raises(ValueError, match="elapsed_ms 'soon' must be a number"):
        store.answer("ann", 0, "skip", elapsed_ms="soon")
    assert store.answers() == []
    assert main(["label", "--data", str(_candidates(tmp_path, n=4, name="o.jsonl")), "--out", str(db),
                 "--export", str(tmp_path / "e.jsonl")]) == 2
    with pytest.raises(ValueError, match="--per-prompt 0 must be an integer >= 1"):
        Assignment(per_prompt=0)


# --------------------------------------------------------------------- PostgreSQL, for a team on several machines


def test_a_postgresql_store_works_the_same_way(tmp_path, postgres_url):
    cands = _candidates(tmp_path, n=3)
    first, second = LabelStore(cands, postgres_url), LabelStore(cands, postgres_url)  # two servers, one database
    first.answer("ann", 0, "rank", [2, 1, 3], elapsed_ms=900)
    second.answer("bob", 0, "rank", [1, 2, 3])
    second.answer("ann", 0, "rank", [1, 2, 3])  # ann again, through the other server: replaces her answer
    first.answer("bob", 1, "skip")
    assert second.progress("bob") == {"total": 3, "answered": 1, "ranked": 1, "skipped": 1, "flagged": 0,
                                      "remaining": 2}
    assert first.answer_of("ann", 0)["revision"] == 2 and first.next_step("bob", 1)["item"] == 2
    rows = [row for _, row in read_rows(postgres_url)]
    assert [(r["labeler"], r["ranks"]) for r in rows] == [("bob", [1, 2, 3]), ("ann", [1, 2, 3])]
    assert rank_agreement(first.rankings())["tau"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="does not belong to these candidates"):
        LabelStore(_candidates(tmp_path, n=2, name="other.jsonl"), postgres_url)
