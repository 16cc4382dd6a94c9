"""The server's counters and histograms, rendered in Prometheus' text exposition format (``GET /metrics``).

Kept by hand (a few dicts under one lock) rather than through ``prometheus_client``: the server needs eight
series, and one dependency fewer. Series, all prefixed ``rewardlab_``:

- ``requests_total{endpoint, status}`` and ``request_seconds{endpoint}`` (histogram) per HTTP request;
- ``items_total{model}``: items scored;
- ``batch_items{model}`` and ``batch_tokens{model}`` (histograms): items and padded tokens per forward pass;
- ``encode_seconds{model}``, ``queue_seconds{model}`` and ``forward_seconds{model}`` (histograms): where a
  request's time goes: tokenising its items, waiting for a forward pass (per request), and each pass (collate,
  forward, rewards back to the host);
- ``queue_items{model}`` (gauge): items waiting for a forward pass;
- ``rejected_total{model, reason}``: requests turned away by the batcher (``overload``, ``shutdown``).
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections import defaultdict
from typing import Sequence

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
ITEM_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
TOKEN_BUCKETS = (64, 256, 1024, 4096, 16384, 65536, 262144)


class Histogram:
    """Cumulative-bucket histogram: ``observe(v)``; ``lines(name, labels)`` renders it."""

    def __init__(self, buckets: Sequence[float]):
        self.buckets = tuple(buckets)
        self.counts = [0] * (len(self.buckets) + 1)  # the last slot is +Inf
        self.total = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.buckets, value)] += 1
        self.total += value
        self.count += 1

    def lines(self, name: str, labels: str) -> list[str]:
        sep = "," if labels else ""
        out, running = [], 0
        for bound, n in zip((*self.buckets, "+Inf"), self.counts):
            running += n
            out.append(f'{name}_bucket{{{labels}{sep}le="{bound}"}} {running}')
        out.append(f"{name}_sum{{{labels}}} {self.total:.6g}")
        out.append(f"{name}_count{{{labels}}} {self.count}")
        return out


def _labels(**kv: str) -> str:
    return ",".join(f'{k}="{v}"' for k, v in kv.items())


class Metrics:
    """Thread-safe: the event loop records requests, the batcher threads record forward passes."""

    def __init__(self):
        self._lock = threading.Lock()
        self.requests: dict[tuple[str, int], int] = defaultdict(int)
        self.latency: dict[str, Histogram] = defaultdict(lambda: Histogram(LATENCY_BUCKETS))
        self.items: dict[str, int] = defaultdict(int)
        self.batch_items: dict[str, Histogram] = defaultdict(lambda: Histogram(ITEM_BUCKETS))
        self.batch_tokens: dict[str, Histogram] = defaultdict(lambda: Histogram(TOKEN_BUCKETS))
        self.seconds: dict[tuple[str, str], Histogram] = defaultdict(lambda: Histogram(LATENCY_BUCKETS))
        self.queue: dict[str, int] = defaultdict(int)
        self.rejected: dict[tuple[str, str], int] = defaultdict(int)

    def request(self, endpoint: str, status: int, seconds: float) -> None:
        with self._lock:
            self.requests[endpoint, status] += 1
            self.latency[endpoint].observe(seconds)

    def forward(self, model: str, items: int, padded_tokens: int, seconds: float) -> None:
        with self._lock:
            self.items[model] += items
            self.batch_items[model].observe(items)
            self.batch_tokens[model].observe(padded_tokens)
            self.seconds["forward", model].observe(seconds)

    def timed(self, stage: str, model: str, seconds: float) -> None:
        """One request's time in ``stage`` (``encode`` or ``queue``)."""
        with self._lock:
            self.seconds[stage, model].observe(seconds)

    def queue_depth(self, model: str, items: int) -> None:
        with self._lock:
            self.queue[model] = items

    def reject(self, model: str, reason: str) -> None:
        with self._lock:
            self.rejected[model, reason] += 1

    def render(self) -> str:
        """All series in the text exposition format (version 0.0.4)."""
        p = "rewardlab_"
        with self._lock:
            lines = [f"# HELP {p}requests_total HTTP requests by endpoint and status.",
                     f"# TYPE {p}requests_total counter"]
            lines += [f"{p}requests_total{{{_labels(endpoint=e, status=str(s))}}} {n}"
                      for (e, s), n in sorted(self.requests.items())]
            lines += [f"# HELP {p}request_seconds Request latency in seconds.", f"# TYPE {p}request_seconds histogram"]
            for e, h in sorted(self.latency.items()):
                lines += h.lines(f"{p}request_seconds", _labels(endpoint=e))
            lines += [f"# HELP {p}items_total Items scored.", f"# TYPE {p}items_total counter"]
            lines += [f"{p}items_total{{{_labels(model=m)}}} {n}" for m, n in sorted(self.items.items())]
            lines += [f"# HELP {p}batch_items Items per forward pass.", f"# TYPE {p}batch_items histogram"]
            for m, h in sorted(self.batch_items.items()):
                lines += h.lines(f"{p}batch_items", _labels(model=m))
            lines += [f"# HELP {p}batch_tokens Padded tokens per forward pass.", f"# TYPE {p}batch_tokens histogram"]
            for m, h in sorted(self.batch_tokens.items()):
                lines += h.lines(f"{p}batch_tokens", _labels(model=m))
            for stage, what in (("encode", "Seconds a request's items took to tokenise."),
                                ("queue", "Seconds a request waited for its first forward pass."),
                                ("forward", "Seconds per forward pass (collate, forward, rewards to the host).")):
                lines += [f"# HELP {p}{stage}_seconds {what}", f"# TYPE {p}{stage}_seconds histogram"]
                for (st, m), h in sorted(self.seconds.items()):
                    if st == stage:
                        lines += h.lines(f"{p}{stage}_seconds", _labels(model=m))
            lines += [f"# HELP {p}queue_items Items waiting for a forward pass.", f"# TYPE {p}queue_items gauge"]
            lines += [f"{p}queue_items{{{_labels(model=m)}}} {n}" for m, n in sorted(self.queue.items())]
            lines += [f"# HELP {p}rejected_total Requests turned away by the batcher.",
                      f"# TYPE {p}rejected_total counter"]
            lines += [f"{p}rejected_total{{{_labels(model=m, reason=r)}}} {n}"
                      for (m, r), n in sorted(self.rejected.items())]
        return "\n".join(lines) + "\n"
