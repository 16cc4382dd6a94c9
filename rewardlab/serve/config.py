"""Options of the reward server: where it listens, what it accepts, how it batches.

Dataclasses only (no torch, no FastAPI), so the CLI can build its parser from them cheaply.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, kw_only=True)
class BatcherConfig:
    """How requests are merged into forward passes, and how much may wait."""

    batching: bool = field(default=True, metadata={
        "help": "Merge concurrent requests into shared forward passes; off: each request gets its own."})
    max_batch_tokens: int = field(default=8192, metadata={
        "help": "Padded tokens (items x longest item) per forward pass."})
    max_wait_ms: float = field(default=5.0, metadata={
        "help": "How long the oldest waiting request may wait for others to share its forward pass."})
    wait_for: str = field(default="incoming", metadata={
        "help": "What the oldest request waits up to max_wait_ms for: 'incoming' (requests for the model already "
        "being read and encoded; with none on the way its pass starts at once, so a lone client never waits) "
        "or 'any' (whatever arrives within max_wait_ms)."})
    max_queue_items: int = field(default=4096, metadata={
        "help": "Items allowed to wait; a request that would exceed it gets 503 with Retry-After."})
    pass_overhead_tokens: int | None = field(default=None, metadata={
        "help": "A forward pass's fixed cost, in padded tokens' worth of compute: the items taken, sorted by "
        "length, are cut into the passes with the fewest padded tokens plus this per pass. Default: 256 on "
        "CPU (where compute grows with padding), max_batch_tokens on GPUs and with batching off (as few passes as "
        "the budget allows)."})

    def __post_init__(self):
        for name in ("max_batch_tokens", "max_queue_items"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)!r}: must be at least 1")
        if self.pass_overhead_tokens is not None and self.pass_overhead_tokens < 0:
            raise ValueError(f"pass_overhead_tokens={self.pass_overhead_tokens!r}: must be >= 0")
        if self.wait_for not in ("incoming", "any"):
            raise ValueError(f"wait_for={self.wait_for!r}: must be 'incoming' or 'any'")
        if self.max_wait_ms < 0:
            raise ValueError(f"max_wait_ms={self.max_wait_ms!r}: must be >= 0")


@dataclass(frozen=True, kw_only=True)
class ServeConfig:
    """Where the server listens and what it accepts."""

    host: str = field(default="127.0.0.1", metadata={"help": "Address to listen on (0.0.0.0: every interface)."})
    port: int = field(default=8000, metadata={"help": "Port to listen on (0: any free port)."})
    max_items: int = field(default=1024, metadata={"help": "Items per request at most (413 beyond)."})
    max_text_chars: int = field(default=100_000, metadata={
        "help": "Characters per prompt or response at most (413 beyond)."})
    max_body_bytes: int = field(default=32 * 2**20, metadata={"help": "Request body size at most (413 beyond)."})
    model_process: bool = field(default=False, metadata={
        "help": "Run each model's forward passes in a process of its own, so they never wait for the GIL that "
                "HTTP handling and tokenising hold (the server keeps a CPU copy of each model for tokenising)."})
    openrlhf_normalize: str = field(default="none", metadata={
        "help": "Normalisation of /get_reward scores (none, zscore, sigmoid, prompt_mean)."})
    on_long: str = field(default="truncate", metadata={
        "help": "A text over max_text_chars on the endpoints other programs call as they are (OpenRLHF's "
                "/get_reward, the engines' /classify, /v1/classify, /pooling, /v1/embeddings): 'truncate' scores it "
                "as the model reads any long text (cut at its token limit by its own rule, counted in /metrics); "
                "'reject' refuses it with 413. /v1/score and /v1/compare always refuse it."})
    graceful_timeout: float | None = field(default=None, metadata={
        "help": "Seconds the server goes on scoring after SIGTERM or SIGINT: requests already received are "
                "scored, and those still queued when it runs out get 503 with Retry-After. Default: twice the time "
                "the queue at shutdown takes at the throughput of the forward passes so far (at most max_queue_items "
                "items wait), and at least 10 s; 0 answers every queued request at once."})
    batcher: BatcherConfig = field(default_factory=BatcherConfig, metadata={"help": "Dynamic batching options."})

    def __post_init__(self):
        from rewardlab.scoring import NORMALIZATIONS  # here: the CLI builds its parser without torch

        for name in ("max_items", "max_text_chars", "max_body_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)!r}: must be at least 1")
        if self.max_items > self.batcher.max_queue_items:
            raise ValueError(f"max_items={self.max_items} exceeds max_queue_items={self.batcher.max_queue_items}: "
                             "a full-size request could never be queued; raise max_queue_items")
        if self.on_long not in ("truncate", "reject"):
            raise ValueError(f"on_long={self.on_long!r}: must be 'truncate' or 'reject'")
        if self.graceful_timeout is not None and not self.graceful_timeout >= 0:
            raise ValueError(f"graceful_timeout={self.graceful_timeout!r}: must be >= 0 seconds (or unset: derived)")
        if self.openrlhf_normalize not in NORMALIZATIONS:
            raise ValueError(f"openrlhf_normalize={self.openrlhf_normalize!r}; choose one of "
                             f"{', '.join(NORMALIZATIONS)}")
