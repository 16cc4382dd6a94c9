"""A served model's forward passes in a process of its own (``rewardlab serve --model-process``).

Why: a forward pass calls a few hundred operators, and each takes and gives back the GIL. In the server's
process the event loop (HTTP, validation, JSON) and the tokenising threads hold the GIL in turn, and under
load every operator waits for it: on the H200 a 28-item pass took 165 ms at 32 clients against ~60 ms
for 4 items alone, and tokenising a request 42 ms against 6 ms. In a process of its own the model holds
its own GIL, as vLLM's engine core does for the same reason.

The worker loads the checkpoint on the serving device; the server process keeps a CPU copy for what needs no
forward pass (tokenising, heads, labelers, normalisation). Both batched scoring (``rows``, the batcher's passes
of encoded items) and judging (``judge``, ``/v1/compare``) run in the worker. Requests go over a pipe one at a
time (the batcher already merges them); what crosses it is token ids and rewards, pickled between two
processes of this program (never a user's file). A worker that dies fails the call with
:class:`WorkerGone` (the app answers 503) instead of hanging it.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import threading
import time
from contextlib import nullcontext
from typing import Sequence

import numpy as np
import torch

# Errors the worker sends back as themselves (the app turns them into 422); anything else is a RuntimeError.
PASSED_THROUGH = {"ValueError": ValueError, "TypeError": TypeError}


class WorkerGone(RuntimeError):
    """The model's worker process has exited; the server cannot score with that model until restarted."""


def autocast(device: torch.device):
    """bf16 autocast on GPUs that support it (weights are loaded in bf16 there too); nothing on CPU."""
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


class HeapTrimmer:
    """Gives the C heap's free memory back to the system (glibc's ``malloc_trim``), at most once per ``interval`` s.

    Forward passes at ever-new batch shapes leave glibc's heap fragmented: freed blocks are kept, and a
    serving process's resident memory grows with every new shape. Measured on CPU with MiniLM, 8 concurrent
    clients of 4 HH items: 709 -> 991 MB over 384 requests without trimming, 596-733 MB (flat) with it; one
    trim took about 4 ms, so once a second costs under 0.5 %. Where ``malloc_trim`` is missing (not glibc)
    this does nothing.
    """

    def __init__(self, interval: float = 1.0):
        self.interval, self._last = interval, float("-inf")
        try:
            self._trim = ctypes.CDLL("libc.so.6").malloc_trim
        except (OSError, AttributeError):
            self._trim = None

    @property
    def available(self) -> bool:
        return self._trim is not None

    def __call__(self) -> bool:
        """Trim if the interval has passed since the last trim; say whether it did."""
        now = time.monotonic()
        if self._trim is None or now - self._last < self.interval:
            return False
        self._last = now
        self._trim(0)
        return True


def forward_items(rm, items: Sequence) -> np.ndarray:
    """Rewards (B, H[·(K+1)]) of encoded items in one forward pass: collate, forward, back to the host."""
    with torch.inference_mode(), autocast(rm.device):
        inputs = rm.processor.collate(items)
        rewards = rm.forward_rows({k: v.to(rm.device) for k, v in inputs.items()})
    return rewards.float().cpu().numpy()


def _work(conn, path: str, device: str, dtype: str | None) -> None:
    """The worker's loop: load the model, then answer (op, payload) messages until ("stop", None)."""
    from rewardlab.scoring import RewardModel

    try:
        rm = RewardModel.from_pretrained(path, device=device, dtype=getattr(torch, dtype) if dtype else None)
    except Exception as err:  # noqa: BLE001 — reported to the server, which refuses to start
        conn.send(("error", (type(err).__name__, str(err))))
        return
    conn.send(("ok", None))
    trim = HeapTrimmer()
    while True:
        try:
            op, payload = conn.recv()
        except EOFError:  # the server went away
            return
        if op == "stop":
            conn.send(("ok", None))
            return
        try:
            value = forward_items(rm, payload) if op == "rows" else rm.judge(payload)
            conn.send(("ok", value))
            trim()
        except Exception as err:  # noqa: BLE001 — the error goes back to the request that asked
            conn.send(("error", (type(err).__name__, str(err))))


class ModelProcess:
    """One served model's worker process (see the module docstring).

    Args:
        path: the checkpoint folder the worker loads.
        device: where the worker runs the model (``cuda``, ``cpu``).
        dtype: a torch dtype name for the weights (``bfloat16``), or ``None`` for the checkpoint's.
        name: the model's name, in messages and the process name.
    """

    def __init__(self, path: str, device: str, dtype: str | None = None, name: str = "default"):
        self.name, self.device = name, torch.device(device)
        ctx = multiprocessing.get_context("spawn")  # never fork a process that may hold CUDA or threads
        self._conn, child = ctx.Pipe()
        self._process = ctx.Process(target=_work, args=(child, path, device, dtype), daemon=True,
                                    name=f"rewardlab-model-{name}")
        self._process.start()
        child.close()
        self._lock = threading.Lock()
        self._call_reply("load")

    @property
    def alive(self) -> bool:
        return self._process.is_alive()

    def rows(self, items: Sequence) -> np.ndarray:
        """What :func:`forward_items` gives, computed in the worker."""
        return self._call("rows", list(items))

    def judge(self, comparisons: Sequence) -> list:
        """``RewardModel.judge(comparisons)``, computed in the worker."""
        return self._call("judge", list(comparisons))

    def close(self, timeout: float = 30) -> None:
        """Stop the worker (after the call in progress, if any)."""
        if self.alive:
            try:
                self._call("stop", None)
            except WorkerGone:
                pass
        self._process.join(timeout)
        if self._process.is_alive():
            self._process.kill()
            self._process.join(5)

    def _call(self, op: str, payload) -> object:
        with self._lock:
            try:
                self._conn.send((op, payload))
            except (BrokenPipeError, ConnectionResetError, EOFError, OSError):
                raise self._gone() from None
            return self._call_reply(op)

    def _call_reply(self, op: str) -> object:
        try:
            status, value = self._conn.recv()
        except (EOFError, ConnectionResetError, OSError):
            raise self._gone() from None
        if status == "ok":
            return value
        kind, message = value
        if op == "load":
            self._process.join(30)
            raise RuntimeError(f"model {self.name!r}: its worker process could not load it: {kind}: {message}")
        raise PASSED_THROUGH.get(kind, RuntimeError)(message if kind in PASSED_THROUGH else f"{kind}: {message}")

    def _gone(self) -> WorkerGone:
        self._process.join(1)
        return WorkerGone(f"model {self.name!r}: its worker process has exited (exit code "
                          f"{self._process.exitcode}); restart the server")
