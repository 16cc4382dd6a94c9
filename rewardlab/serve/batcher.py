"""Dynamic batching: items of concurrent requests share length-bucketed forward passes.

One worker thread per served model owns the network. Requests put their encoded items on a bounded queue
and get a :class:`concurrent.futures.Future` of their rewards (n, H), in their own item order. The worker
waits at most ``max_wait_ms`` after the oldest waiting request arrived (or until ``max_batch_tokens``
tokens wait) for requests already on their way (:meth:`DynamicBatcher.incoming`: being encoded; with
``wait_for="any"``, for whatever arrives), so a lone client never waits. It then takes the queued
requests, sorts their items by length and cuts them into forward passes of at most ``max_batch_tokens``
padded tokens each (:func:`plan_passes`: the cuts with the fewest padded tokens plus
``pass_overhead_tokens`` per pass, so short items are not padded to long ones where a pass of their own
costs less). Each request's future resolves as soon as its last item is scored.

Bounds: the queue holds at most ``max_queue_items`` items; beyond that :meth:`DynamicBatcher.submit`
raises :class:`Overloaded` (the app answers 503 with Retry-After) rather than queueing without limit.
A forward pass that fails fails only the requests with items in it. :meth:`DynamicBatcher.close`
refuses new work, finishes what is queued, then stops the thread.

With ``batching=False`` every request gets forward passes of its own (the baseline the load test
compares against). Given a :class:`~rewardlab.serve.worker.ModelProcess`, the passes run in that process
rather than on the worker thread (``rewardlab serve --model-process``).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from concurrent.futures import Future
from contextlib import contextmanager
from typing import Sequence

import numpy as np

from rewardlab.serve.config import BatcherConfig
from rewardlab.serve.worker import HeapTrimmer, forward_items

GATHER_BUDGETS = 4  # take up to this many forward passes' worth of queued tokens at once, to sort by length
CPU_PASS_OVERHEAD_TOKENS = 256  # a pass's fixed cost on CPU in tokens' worth (fitted: tiny BERT 185, MiniLM ~0)


def plan_passes(costs: Sequence[int], max_tokens: int, overhead: float) -> list[int]:
    """Cut items sorted by cost (ascending) into the contiguous forward passes of least total cost.

    A pass of items ``i..j-1`` pads each to ``costs[j-1]``, its longest, and costs ``(j - i) * costs[j-1]`` padded
    tokens plus ``overhead``; it holds at most ``max_tokens`` padded tokens unless it is one item. Exact, by
    dynamic programming over the last pass's first item. Returns each pass's end index, in order.
    """
    c = np.asarray(costs, dtype=np.float64)
    best = np.zeros(len(c) + 1)  # best[j]: least cost of the first j items
    first = np.zeros(len(c) + 1, dtype=np.int64)
    for j in range(1, len(c) + 1):
        longest = c[j - 1]
        lo = max(0, j - max(1, int(max_tokens // longest)))
        total = best[lo:j] + overhead + (j - np.arange(lo, j)) * longest
        k = int(np.argmin(total))  # the first minimum: the longest pass among equals
        best[j], first[j] = total[k], lo + k
    ends, j = [], len(c)
    while j > 0:
        ends.append(j)
        j = int(first[j])
    return ends[::-1]


class Overloaded(RuntimeError):
    """The queue is full (or the server is shutting down): try again after ``retry_after`` seconds."""

    def __init__(self, message: str, retry_after: float = 1.0, reason: str = "overload"):
        super().__init__(message)
        self.retry_after = retry_after
        self.reason = reason


class _Request:
    """One submitted request: its items, their costs, the rewards filled in so far and its future."""

    __slots__ = ("items", "costs", "tokens", "out", "left", "future", "arrived")

    def __init__(self, items: Sequence, costs: list[int], heads: int):
        self.items, self.costs = items, costs
        self.tokens = sum(costs)
        self.out = np.empty((len(items), heads), dtype=np.float64)  # (n, H)
        self.left = len(items)
        self.future: Future = Future()
        self.arrived = time.monotonic()


class DynamicBatcher:
    """Scores encoded items of many requests in shared forward passes (see the module docstring).

    Args:
        reward_model: a loaded :class:`~rewardlab.scoring.RewardModel` (its ``model``, ``processor``, ``device``).
        cfg: batching options.
        metrics: a :class:`~rewardlab.serve.metrics.Metrics` or ``None``.
        name: the model's name in metrics and messages.
        process: a :class:`~rewardlab.serve.worker.ModelProcess` that runs the forward passes, or ``None``
            to run them on this batcher's thread.
    """

    def __init__(self, reward_model, cfg: BatcherConfig = BatcherConfig(), metrics=None, name: str = "default",
                 process=None):
        self.rm, self.cfg, self.metrics, self.name, self.process = reward_model, cfg, metrics, name, process
        self.heads = reward_model.row_width  # H, or H·(K+1) for ensembles (the mean, then each member)
        overhead = cfg.pass_overhead_tokens
        if not cfg.batching:  # one request, one forward pass (if it fits the budget): the load test's baseline
            overhead = cfg.max_batch_tokens
        elif overhead is None:  # where the passes run: a model process's device, not the server's CPU copy's
            device = (process or reward_model).device
            overhead = CPU_PASS_OVERHEAD_TOKENS if device.type == "cpu" else cfg.max_batch_tokens
        self.pass_overhead_tokens = overhead
        self._queue: deque[_Request] = deque()
        self._queued_items = self._queued_tokens = self._incoming = 0
        self._cond = threading.Condition()
        self._closing = False
        self._thread = threading.Thread(target=self._run, name=f"rewardlab-batcher-{name}", daemon=True)
        self._thread.start()

    @property
    def queued_items(self) -> int:
        return self._queued_items

    def submit(self, items: Sequence) -> Future:
        """Queue encoded items; the future yields their rewards (n, H) in order. Raises :class:`Overloaded`."""
        costs = [self.rm.processor.cost(it) for it in items]
        request = _Request(items, costs, self.heads)
        if not items:
            request.future.set_result(request.out)
            return request.future
        with self._cond:
            if self._closing:
                self._reject("shutdown")
                raise Overloaded("the server is shutting down; retry on another replica", 5.0, "shutdown")
            if self._queued_items and self._queued_items + len(items) > self.cfg.max_queue_items:
                self._reject("overload")
                raise Overloaded(f"model {self.name!r} has {self._queued_items} items waiting (at most "
                                 f"{self.cfg.max_queue_items}); retry later")
            self._queue.append(request)
            self._queued_items += len(items)
            self._queued_tokens += request.tokens
            self._report_depth()
            self._cond.notify()
        return request.future

    @contextmanager
    def incoming(self):
        """Mark a request on its way to :meth:`submit` (being encoded) for the ``with`` block: the oldest queued
        request waits for it, up to ``max_wait_ms``. With nothing on its way a pass starts at once."""
        with self._cond:
            self._incoming += 1
        try:
            yield
        finally:
            with self._cond:
                self._incoming -= 1
                self._cond.notify()

    def close(self, timeout: float | None = None) -> None:
        """Refuse new requests, score those already queued, stop the worker."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join(timeout)

    # ----------------------------------------------------------------------------- worker

    def _reject(self, reason: str) -> None:
        if self.metrics is not None:
            self.metrics.reject(self.name, reason)

    def _report_depth(self) -> None:
        if self.metrics is not None:
            self.metrics.queue_depth(self.name, self._queued_items)

    def _take(self) -> list[_Request] | None:
        """Block until there is work; return the requests of the next round (None: closed and drained)."""
        with self._cond:
            while not self._queue and not self._closing:
                self._cond.wait()
            if not self._queue:
                return None
            if not self.cfg.batching:
                taken = [self._queue.popleft()]
            else:
                deadline = self._queue[0].arrived + self.cfg.max_wait_ms / 1000
                while (self._queued_tokens < self.cfg.max_batch_tokens and not self._closing
                       and (self.cfg.wait_for == "any" or self._incoming)):
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._cond.wait(remaining)
                taken, tokens = [], 0
                while self._queue and (not taken or tokens + self._queue[0].tokens
                                       <= GATHER_BUDGETS * self.cfg.max_batch_tokens):
                    taken.append(self._queue.popleft())
                    tokens += taken[-1].tokens
            for r in taken:
                self._queued_items -= len(r.items)
                self._queued_tokens -= r.tokens
            self._report_depth()
        # A request whose caller gave up (its future was cancelled) is dropped; the others can no longer be cancelled.
        return [r for r in taken if r.future.set_running_or_notify_cancel()]

    def _run(self) -> None:
        trim = HeapTrimmer()  # this thread's passes are what fragments the heap (a model process trims its own)
        while (taken := self._take()) is not None:
            self._score(taken)
            if self.process is None:
                trim()

    def _buckets(self, work: list[tuple[_Request, int]]) -> list[list[tuple[_Request, int]]]:
        """Cut (request, item) pairs, sorted by length, into forward passes (:func:`plan_passes`)."""
        ends = plan_passes([r.costs[i] for r, i in work], self.cfg.max_batch_tokens, self.pass_overhead_tokens)
        return [work[start:end] for start, end in zip([0] + ends[:-1], ends)]

    def _score(self, taken: list[_Request]) -> None:
        work = sorted(((r, i) for r in taken for i in range(len(r.items))), key=lambda w: w[0].costs[w[1]])
        if self.metrics is not None:
            now = time.monotonic()
            for r in taken:
                self.metrics.timed("queue", self.name, now - r.arrived)
        for batch in self._buckets(work):
            live = [w for w in batch if not w[0].future.done()]  # skip requests a failed pass already ended
            if not live:
                continue
            start = time.perf_counter()
            items = [r.items[i] for r, i in live]
            try:  # (B, H[·(K+1)])
                rows = forward_items(self.rm, items) if self.process is None else self.process.rows(items)
            except Exception as err:  # noqa: BLE001 — the error goes to the requests in this pass only
                for r in {id(r): r for r, _ in live}.values():
                    r.future.set_exception(err)
                continue
            if self.metrics is not None:
                self.metrics.forward(self.name, len(live), len(live) * max(r.costs[i] for r, i in live),
                                     time.perf_counter() - start)
            for (r, i), row in zip(live, rows):
                r.out[i] = row
                r.left -= 1
                if r.left == 0:
                    r.future.set_result(r.out)
