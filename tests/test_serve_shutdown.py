"""Graceful shutdown: on SIGTERM every request gets its scores or a 503 with Retry-After, never a 500, and the server
exits 0; the batcher's drain deadline, alone."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from conftest import Gated, post
from rewardlab.scoring import RewardModel
from rewardlab.serve.batcher import MIN_DRAIN_S, DynamicBatcher, Overloaded
from rewardlab.serve.config import BatcherConfig, ServeConfig

ROOT = Path(__file__).resolve().parents[1]


def _start(model: str, *flags: str) -> tuple[subprocess.Popen, str]:
    """``python -m rewardlab serve`` on a free port; returns the process and its address, read from what it says."""
    env = dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1")
    proc = subprocess.Popen([sys.executable, "-m", "rewardlab", "serve", "--model", model, "--device", "cpu",
                             "--port", "0", *flags], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    found = re.search(r"on (http://127\.0\.0\.1:\d+)", line)
    if not found:
        proc.kill()
        pytest.fail(f"the server did not start: {line!r} {proc.stderr.read()}")
    return proc, found.group(1)


def _queued(base: str) -> int:
    return json.loads(urllib.request.urlopen(f"{base}/health", timeout=10).read())["queue_items"]["default"]


def _encoded(base: str) -> int:
    """Requests the server has read and encoded (each is queued right after)."""
    text = urllib.request.urlopen(f"{base}/metrics", timeout=10).read().decode()
    found = re.search(r'^rewardlab_encode_seconds_count\{model="default"\} (\S+)$', text, re.MULTILINE)
    return int(float(found.group(1))) if found else 0


def test_sigterm_with_a_full_queue_answers_every_request_and_exits_0(tiny_bert):
    """24 requests of 32 long items queued, then SIGTERM with --graceful-timeout 0: those scored get 200, the rest
    503 with Retry-After at once; no 500, no traceback, exit status 0."""
    proc, base = _start(tiny_bert, "--graceful-timeout", "0", "--max-wait-ms", "0")
    long = "the sky is blue because light scatters off the small molecules of the air. " * 40  # over 512 tokens
    body = {"items": [{"prompt": "Why is the sky blue?", "response": f"{i} {long}"} for i in range(32)]}
    replies: list = []

    def send():
        replies.append(post(f"{base}/v1/score", body))

    threads = [threading.Thread(target=send) for _ in range(24)]
    try:
        [t.start() for t in threads]
        deadline = time.monotonic() + 60
        while not (replies and _encoded(base) == 24) and time.monotonic() < deadline:  # all in, one answered
            time.sleep(0.02)
        assert _queued(base) > 0, "the queue emptied before the signal"
        proc.send_signal(signal.SIGTERM)
        [t.join(60) for t in threads]
        _, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    codes = sorted(code for code, _, _ in replies)
    assert len(codes) == 24 and set(codes) <= {200, 503} and 200 in codes and 503 in codes, codes
    for code, reply, headers in replies:
        assert code == 200 and len(reply["scores"]) == 32 or code == 503 and headers["retry-after"] == "5" and \
            "shutting down" in reply["detail"], reply
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr and "CancelledError" not in stderr, stderr


def test_the_drain_deadline_refuses_what_is_still_queued_even_during_a_pass(tiny_bert):
    """drain(0.2) while a pass holds the model: at the deadline the queued requests fail with the shutdown error
    (503, Retry-After 5), later submissions too; the pass in progress still delivers its rewards."""
    rm = RewardModel.from_pretrained(tiny_bert, device="cpu")
    rm.model = Gated(rm.model)
    batcher = DynamicBatcher(rm, BatcherConfig(max_batch_tokens=16, max_wait_ms=0))
    items, _ = rm.processor.encode_items(["q"], ["a helpful answer"])
    try:
        assert batcher.drain_estimate() == MIN_DRAIN_S  # no pass measured yet
        first = batcher.submit(items)
        assert rm.model.entered.wait(10)
        queued = [batcher.submit(items) for _ in range(3)]
        assert batcher.drain(0.2) == 0.2
        for future in queued:
            with pytest.raises(Overloaded, match=r"shutting down and its drain time \(0.2 s, --graceful-timeout\) "
                                                 r"ran out") as refused:
                future.result(5)
            assert refused.value.retry_after == 5.0 and refused.value.reason == "shutdown"
        assert not first.done()
        with pytest.raises(Overloaded, match="shutting down"):
            batcher.submit(items)
        rm.model.gate.set()
        assert first.result(10).shape == (1, 1)
        assert batcher.drain_estimate() == MIN_DRAIN_S  # nothing queued: the floor
    finally:
        rm.model.gate.set()
        batcher.close(10)
    with pytest.raises(ValueError, match=r"graceful_timeout=-1: must be >= 0"):
        ServeConfig(graceful_timeout=-1)
