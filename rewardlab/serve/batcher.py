"""Dynamic batching: items of concurrent requests share length-bucketed forward passes.

One worker thread per served model owns the network. Requests put their encoded items on a bounded queue
and get a :class:`concurrent.futures.Future` of their rewards (n, H), in their own item order. The worker
waits at most ``max_wait_ms`` after the oldest waiting request arrived (or until ``max_batch_tokens``
tokens wait) for requests already on their way (:meth:`DynamicBatcher.incoming`: being encoded; with
``wait_for="any"``, for whatever arrives), so a lone client never waits. It then takes the queued
requests (up to :data:`GATHER_BUDGETS` budgets of tokens a round; a request larger than that a slice a round, so
the requests that arrive meanwhile are not held behind all of it), sorts their items by length and cuts them
into forward passes of at most ``max_batch_tokens`` padded tokens each (:func:`plan_passes`: the cuts with the
fewest padded tokens plus ``pass_overhead_tokens`` per pass, so short items are not padded to long ones where a
pass of their own costs less). Each request's future resolves as soon as its last item is scored.

Bounds: the queue holds at most ``max_queue_items`` items; beyond that :meth:`DynamicBatcher.submit`
raises :class:`Overloaded` (the app answers 503 with Retry-After) rather than queueing without limit.
A forward pass that fails fails only the requests with items in it. At shutdown :meth:`DynamicBatcher.drain`
gives the queue a deadline: requests already received are still taken and scored, and whatever has not been
scored when it passes fails with :class:`Overloaded` (503 with Retry-After, never a 500).
:meth:`DynamicBatcher.close` refuses new work, finishes what is queued, then stops the thread.

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
MIN_DRAIN_S = 10.0  # the least a derived drain deadline grants (requests still being read and encoded count too)
SHUTDOWN_RETRY_AFTER_S = 5.0  # what a request refused at shutdown is told to wait (another replica, or a restart)


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

    __slots__ = ("items", "costs", "tokens", "out", "left", "taken", "future", "arrived")

    def __init__(self, items: Sequence, costs: list[int], heads: int):
        self.items, self.costs = items, costs
        self.tokens = sum(costs)
        self.out = np.empty((len(items), heads), dtype=np.float64)  # (n, H)
        self.left = len(items)  # items not scored yet
        self.taken = 0  # items handed to a round so far: a large request is taken a slice at a time
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
        self._deadline: float | None = None  # set by drain(): monotonic time after which nothing more is scored
        self._drain_seconds = 0.0
        self._seconds_per_token: float | None = None  # forward seconds per padded token, averaged over recent passes
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
            if self._closing or self._expired():
                self._reject("shutdown")
                raise self._shutdown_error()
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
        """Refuse new requests, score those already queued (until a :meth:`drain` deadline), stop the worker."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join(timeout)

    def drain(self, timeout: float | None = None) -> float:
        """Begin a shutdown: requests keep coming from those already received and are scored until ``timeout``
        seconds from now (None: :meth:`drain_estimate`); then each one not yet scored fails with
        :class:`Overloaded` (reason ``shutdown``), and so does any submitted later. Returns the seconds granted."""
        with self._cond:
            seconds = self.drain_estimate() if timeout is None else timeout
            self._deadline, self._drain_seconds = time.monotonic() + seconds, seconds
            self._cond.notify()
        timer = threading.Timer(seconds, self._refuse_queued)  # at the deadline, even while a pass runs
        timer.daemon = True
        timer.start()
        return seconds

    def drain_estimate(self) -> float:
        """Twice the time the queued items take at the throughput of the passes so far (padded tokens x seconds per
        padded token), at least :data:`MIN_DRAIN_S`."""
        rate = self._seconds_per_token
        return MIN_DRAIN_S if rate is None else max(MIN_DRAIN_S, 2 * self._queued_tokens * rate)

    # ----------------------------------------------------------------------------- worker

    def _reject(self, reason: str) -> None:
        if self.metrics is not None:
            self.metrics.reject(self.name, reason)

    def _expired(self) -> bool:
        return self._deadline is not None and time.monotonic() >= self._deadline

    def _shutdown_error(self) -> Overloaded:
        why = (f"its drain time ({self._drain_seconds:g} s, --graceful-timeout) ran out before this request was "
               "scored" if self._deadline is not None else "it takes no new requests")
        return Overloaded(f"the server is shutting down and {why}; retry on another replica or after the restart",
                          SHUTDOWN_RETRY_AFTER_S, "shutdown")

    def _refuse_queued(self) -> None:
        """Fail every queued request with the shutdown error (the drain deadline has passed)."""
        with self._cond:
            refused, self._queue = list(self._queue), deque()
            self._queued_items = self._queued_tokens = 0
            self._report_depth()
            self._cond.notify()
        for r in refused:
            self._reject("shutdown")
            if not r.future.done():
                r.future.set_exception(self._shutdown_error())

    def _report_depth(self) -> None:
        if self.metrics is not None:
            self.metrics.queue_depth(self.name, self._queued_items)

    def _take(self) -> list[tuple[_Request, int]] | None:
        """Block until there is work; return the (request, item) pairs of the next round (None: closed and drained).

        A round holds up to :data:`GATHER_BUDGETS` budgets of tokens: whole requests in arrival order, then a slice
        of the oldest request too large for any round, which is taken a slice a round. So a request that arrives
        while a large one is scored waits one round, not the whole large request. With batching off a round is
        one request.
        """
        with self._cond:
            while not self._queue and not self._closing:
                self._cond.wait()
            if not self._queue:
                return None
            limit = GATHER_BUDGETS * self.cfg.max_batch_tokens if self.cfg.batching else float("inf")
            if self.cfg.batching:
                self._wait_for_company()
            work, tokens, large = [], 0, None
            for r in list(self._queue) if self.cfg.batching else [self._queue[0]]:
                rest = r.tokens - sum(r.costs[: r.taken])
                if rest > limit:
                    large = large or r
                elif tokens + rest > limit:
                    break
                else:
                    work = self._slice(r, limit - tokens, work)
                    tokens += rest
            if large is not None and (tokens < limit or not work):
                work = self._slice(large, limit - tokens, work)
            self._report_depth()
        return work

    def _slice(self, r: _Request, budget: float, work: list) -> list[tuple[_Request, int]]:
        """``work`` plus the next items of ``r`` that fit ``budget`` tokens (at least one where ``work`` is empty);
        ``r`` leaves the queue once all its items are taken, or when its caller gave up before it started (it can
        no longer be cancelled once started). The lock is held."""
        if r.future.done() or r.taken == 0 and not r.future.set_running_or_notify_cancel():
            self._queue.remove(r)
            self._dequeue(r, len(r.items) - r.taken)
            return work
        if r.taken == 0 and self.metrics is not None:
            self.metrics.timed("queue", self.name, time.monotonic() - r.arrived)
        end, used = r.taken, 0
        while end < len(r.items) and (used + r.costs[end] <= budget or not work and end == r.taken):
            used += r.costs[end]
            end += 1
        self._dequeue(r, end - r.taken)
        work = work + [(r, i) for i in range(r.taken, end)]
        r.taken = end
        if end == len(r.items):
            self._queue.remove(r)
        return work

    def _wait_for_company(self) -> None:
        """Hold the oldest request up to ``max_wait_ms`` for others (see ``wait_for``); the lock is held."""
        deadline = self._queue[0].arrived + self.cfg.max_wait_ms / 1000
        while (self._queued_tokens < self.cfg.max_batch_tokens and not self._closing
               and self._deadline is None and (self.cfg.wait_for == "any" or self._incoming)):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self._cond.wait(remaining)

    def _dequeue(self, r: _Request, n: int) -> None:
        """Count ``n`` more items of ``r`` as out of the queue (taken, or dropped); the lock is held."""
        self._queued_items -= n
        self._queued_tokens -= sum(r.costs[r.taken: r.taken + n])

    def _run(self) -> None:
        trim = HeapTrimmer()  # this thread's passes are what fragments the heap (a model process trims its own)
        while (work := self._take()) is not None:
            self._score(work)
            if self.process is None:
                trim()

    def _buckets(self, work: list[tuple[_Request, int]]) -> list[list[tuple[_Request, int]]]:
        """Cut (request, item) pairs, sorted by length, into forward passes (:func:`plan_passes`)."""
        ends = plan_passes([r.costs[i] for r, i in work], self.cfg.max_batch_tokens, self.pass_overhead_tokens)
        return [work[start:end] for start, end in zip([0] + ends[:-1], ends)]

    def _score(self, work: list[tuple[_Request, int]]) -> None:
        work = sorted(work, key=lambda w: w[0].costs[w[1]])
        for batch in self._buckets(work):
            live = [w for w in batch if not w[0].future.done()]  # skip requests a failed pass already ended
            if not live:
                continue
            if self._expired():  # the drain deadline passed during this round: what is left gets 503
                for r in {id(r): r for r, _ in live}.values():
                    self._reject("shutdown")
                    r.future.set_exception(self._shutdown_error())
                continue
            start = time.perf_counter()
            items = [r.items[i] for r, i in live]
            try:  # (B, H[·(K+1)])
                rows = forward_items(self.rm, items) if self.process is None else self.process.rows(items)
            except Exception as err:  # noqa: BLE001 — the error goes to the requests in this pass only
                for r in {id(r): r for r, _ in live}.values():
                    r.future.set_exception(err)
                continue
            seconds, padded = time.perf_counter() - start, len(live) * max(r.costs[i] for r, i in live)
            rate = seconds / max(padded, 1)
            self._seconds_per_token = rate if self._seconds_per_token is None else \
                0.8 * self._seconds_per_token + 0.2 * rate
            if self.metrics is not None:
                self.metrics.forward(self.name, len(live), padded, seconds)
            for (r, i), row in zip(live, rows):
                r.out[i] = row
                r.left -= 1
                if r.left == 0 and not r.future.done():
                    r.future.set_result(r.out)
