"""The server's counters and histograms, kept and exposed by ``prometheus_client`` (``GET /metrics``).

Each :class:`Metrics` has a registry of its own (several apps in one process, as in the tests, do not share
series). Series, all prefixed ``rewardlab_``:

- ``requests_total{endpoint, status}`` and ``request_seconds{endpoint}`` (histogram) per HTTP request;
- ``items_total{model}``: items scored;
- ``batch_items{model}`` and ``batch_tokens{model}`` (histograms): items and padded tokens per forward pass;
- ``encode_seconds{model}``, ``queue_seconds{model}`` and ``forward_seconds{model}`` (histograms): where a
  request's time goes: tokenising its items, waiting for a forward pass (per request), and each pass (collate,
  forward, rewards back to the host);
- ``queue_items{model}`` (gauge): items waiting for a forward pass;
- ``rejected_total{model, reason}``: requests turned away by the batcher (``overload``, ``shutdown``);
- ``truncated_items_total{endpoint}``: items the model's own rule truncated (over its token limit; with
  ``--on-long truncate``, texts over ``--max-text-chars`` on the engine and OpenRLHF endpoints too).

Every series lives in the server's main process, with ``--model-process`` too: the batcher there times each
forward pass around its call to the worker process, and the worker records nothing, so no
``PROMETHEUS_MULTIPROC_DIR`` is needed (uvicorn runs one server process).
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
ITEM_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
TOKEN_BUCKETS = (64, 256, 1024, 4096, 16384, 65536, 262144)
STAGES = {"encode": "Seconds a request's items took to tokenise.",
          "queue": "Seconds a request waited for its first forward pass.",
          "forward": "Seconds per forward pass (collate, forward, rewards to the host)."}


class Metrics:
    """The series above in a registry of their own; ``prometheus_client`` makes each update thread-safe (the
    event loop records requests, the batcher threads forward passes)."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self):
        self.registry = r = CollectorRegistry()
        p = "rewardlab_"
        self.requests = Counter(f"{p}requests", "HTTP requests by endpoint and status.", ["endpoint", "status"],
                                registry=r)
        self.latency = Histogram(f"{p}request_seconds", "Request latency in seconds.", ["endpoint"],
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.items = Counter(f"{p}items", "Items scored.", ["model"], registry=r)
        self.batch_items = Histogram(f"{p}batch_items", "Items per forward pass.", ["model"], buckets=ITEM_BUCKETS,
                                     registry=r)
        self.batch_tokens = Histogram(f"{p}batch_tokens", "Padded tokens per forward pass.", ["model"],
                                      buckets=TOKEN_BUCKETS, registry=r)
        self.seconds = {stage: Histogram(f"{p}{stage}_seconds", text, ["model"], buckets=LATENCY_BUCKETS, registry=r)
                        for stage, text in STAGES.items()}
        self.queue = Gauge(f"{p}queue_items", "Items waiting for a forward pass.", ["model"], registry=r)
        self.rejected = Counter(f"{p}rejected", "Requests turned away by the batcher.", ["model", "reason"],
                                registry=r)
        self.truncated_items = Counter(f"{p}truncated_items", "Items the model's own rule truncated.", ["endpoint"],
                                       registry=r)

    def request(self, endpoint: str, status: int, seconds: float) -> None:
        self.requests.labels(endpoint, str(status)).inc()
        self.latency.labels(endpoint).observe(seconds)

    def forward(self, model: str, items: int, padded_tokens: int, seconds: float) -> None:
        self.items.labels(model).inc(items)
        self.batch_items.labels(model).observe(items)
        self.batch_tokens.labels(model).observe(padded_tokens)
        self.seconds["forward"].labels(model).observe(seconds)

    def timed(self, stage: str, model: str, seconds: float) -> None:
        """One request's time in ``stage`` (``encode`` or ``queue``)."""
        self.seconds[stage].labels(model).observe(seconds)

    def queue_depth(self, model: str, items: int) -> None:
        self.queue.labels(model).set(items)

    def reject(self, model: str, reason: str) -> None:
        self.rejected.labels(model, reason).inc()

    def truncated(self, endpoint: str, items: int) -> None:
        """``items`` of a request to ``endpoint`` were truncated (the series appears at the first request)."""
        self.truncated_items.labels(endpoint).inc(items)

    def render(self) -> bytes:
        """Every series in Prometheus' text format (:attr:`content_type`)."""
        return generate_latest(self.registry)
