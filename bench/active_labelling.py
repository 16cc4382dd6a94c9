"""Label what the model is unsure of: uncertain against random selection, simulated on real preferences.

    python bench/active_labelling.py                       # both data sets, 5 seeds; ~5 min on 2 cores
    python bench/active_labelling.py --data hh --seeds 0 1 # a quick look

A labeller is simulated by the data's own label: each round the selection picks ``--batch`` unlabelled
pairs from the pool, "asks" for their labels (reads them), and the reward model is refitted on every label
so far; held-out accuracy is measured after each round. Rows, all with the same backbone, head, budget and
seeds (the first ``--batch`` labels are a random draw for every row):

- ``random``: ``rewardlab label --select random``, a seeded shuffle;
- ``uncertain``: ``--select uncertain`` with a single model: the pairs with the smallest reward margin first;
- ``uncertain (ensemble)``: ``--select uncertain`` with a 5-member bootstrap ensemble: the largest spread
  of the members' margins first.

The ordering is rewardlab's own (``rewardlab.label.selection``). The reward model is a Bradley–Terry
linear head on frozen MiniLM features (mean-pooled, prompt tail + response, 256 tokens, the prompt cut
from the left), refitted from scratch each round (scikit-learn's logistic regression on feature
differences, no intercept, L2 ``C``): fine-tuning MiniLM every round for every row and seed would take
hours on 2 cores, and selection needs only a model that ranks the pool. Features are computed once and
cached under ``runs/active-labelling``.

Data (read in place from ``../shared/data``, never copied here): ``hh``, HH-RLHF harmless-base dev pairs
split 80 / 20 by pair (the split of ``bench/compare_trl.py``); ``llmfao``, LLMFAO crowd majorities split
80 / 20 by pair (``bench/length_bias.py``). The table goes to ``docs/results/active-labelling.md``.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
from compare_trl import hh_pairs  # noqa: E402
from length_bias import llmfao_pairs  # noqa: E402

from rewardlab.label.selection import margin_uncertainty, selection_order, spread_uncertainty  # noqa: E402

CACHE = ROOT.parent / "runs" / "active-labelling"
ROWS = ("random", "uncertain", "uncertain (ensemble)")
MEMBERS = 5


def embed(texts: list[str], batch: int = 64) -> np.ndarray:
    """Mean-pooled, unit-length MiniLM features of ``texts``, cached on disk by their digest."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    from rewardlab.models.backbones import resolve_backbone

    key = hashlib.blake2b("\x1e".join(texts).encode(), digest_size=12).hexdigest()
    path = CACHE / f"features-{key}.npy"
    if path.exists():
        return np.load(path)
    folder = resolve_backbone("minilm")
    tok = AutoTokenizer.from_pretrained(folder, truncation_side="left")
    model = AutoModel.from_pretrained(folder).eval()
    out = []
    with torch.inference_mode():
        for i in range(0, len(texts), batch):
            enc = tok(texts[i:i + batch], padding=True, truncation=True, max_length=256, return_tensors="pt")
            hidden = model(**enc).last_hidden_state                      # (B, T, D)
            mask = enc["attention_mask"].unsqueeze(-1).float()
            pooled = (hidden * mask).sum(1) / mask.sum(1)
            out.append(torch.nn.functional.normalize(pooled, dim=-1).numpy())
    features = np.concatenate(out)
    CACHE.mkdir(parents=True, exist_ok=True)
    np.save(path, features)
    return features


def pair_features(pairs: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """(chosen features, rejected features), each (P, D)."""
    texts = [p["prompt"][-1000:] + r for p in pairs for r in (p["chosen"], p["rejected"])]
    f = embed(texts)
    return f[0::2], f[1::2]


def fit(chosen: np.ndarray, rejected: np.ndarray, c: float) -> np.ndarray:
    """A Bradley–Terry linear head: w with P(chosen ≻ rejected) = σ(w·(φc − φr)); both orders, no intercept."""
    d = chosen - rejected
    x, y = np.concatenate([d, -d]), np.r_[np.ones(len(d)), np.zeros(len(d))]
    return LogisticRegression(C=c, fit_intercept=False, max_iter=1000).fit(x, y).coef_[0]


def next_batch(row: str, labelled: list[int], pool: np.ndarray, chosen: np.ndarray, rejected: np.ndarray,
               size: int, c: float, rng: np.random.Generator) -> list[int]:
    """The next ``size`` pool pairs to label under selection ``row`` (the model refitted on ``labelled``)."""
    left = np.setdiff1d(pool, labelled)
    if row == "random":
        order = selection_order(np.zeros(len(left)), seed=int(rng.integers(1 << 31)))
    elif row == "uncertain":
        w = fit(chosen[labelled], rejected[labelled], c)
        order = selection_order(margin_uncertainty(np.c_[chosen[left] @ w, rejected[left] @ w]), seed=0)
    else:
        members = []
        for _ in range(MEMBERS):
            boot = rng.choice(labelled, size=len(labelled))
            members.append(fit(chosen[boot], rejected[boot], c))
        w = np.stack(members, 1)                                          # (D, M)
        rewards = np.stack([chosen[left] @ w, rejected[left] @ w], -1)   # (P, M, 2)
        order = selection_order(spread_uncertainty(list(rewards)), seed=0)
    return left[order[:size]].tolist()


def curve(row: str, train: tuple, test: tuple, args, seed: int) -> list[float]:
    """Held-out accuracy after each round, from ``--batch`` labels to ``--max-labels``."""
    chosen, rejected = train
    rng = np.random.default_rng(seed)
    pool = np.arange(len(chosen))
    labelled = rng.choice(pool, size=args.batch, replace=False).tolist()
    accuracies = []
    while True:
        w = fit(chosen[labelled], rejected[labelled], args.c)
        accuracies.append(float(np.mean((test[0] - test[1]) @ w > 0)))
        if len(labelled) >= args.max_labels:
            return accuracies
        labelled += next_batch(row, labelled, pool, chosen, rejected, args.batch, args.c, rng)


def labels_to_reach(mean_curve: np.ndarray, target: float, counts: list[int]) -> int | None:
    hit = np.nonzero(mean_curve >= target)[0]
    return counts[hit[0]] if len(hit) else None


def run(data: str, args) -> str:
    train_pairs, test_pairs = hh_pairs(None) if data == "hh" else llmfao_pairs()
    started = time.time()
    train, test = pair_features(train_pairs), pair_features(test_pairs)
    curves = {row: np.array([curve(row, train, test, args, s) for s in args.seeds]) for row in ROWS}
    counts = list(range(args.batch, args.max_labels + 1, args.batch))
    target = curves["random"].mean(0)[-1]
    lines = [f"### {data}: {len(train_pairs)} pool pairs, {len(test_pairs)} held out; seeds {args.seeds}; "
             f"{time.time() - started:.0f} s", "",
             "| labels | " + " | ".join(ROWS) + " |", "|---|" + "---|" * len(ROWS)]
    shown = sorted({0, len(counts) - 1, *range(0, len(counts), max(1, len(counts) // 8))})
    for i in shown:
        cells = [f"{curves[r][:, i].mean():.3f} ± {curves[r][:, i].std():.3f}" for r in ROWS]
        lines.append(f"| {counts[i]} | " + " | ".join(cells) + " |")
    reach = {r: labels_to_reach(curves[r].mean(0), target, counts) for r in ROWS}
    lines += ["", f"Labels to reach random selection's final accuracy ({target:.3f} at {counts[-1]} labels): "
              + "; ".join(f"{r} {'not reached' if n is None else n}" for r, n in reach.items()) + "."]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", nargs="+", default=["hh", "llmfao"], choices=["hh", "llmfao"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    p.add_argument("--batch", type=int, default=25, help="labels asked for per round (and the random start)")
    p.add_argument("--max-labels", type=int, default=500)
    p.add_argument("--c", type=float, default=1.0, help="the head's inverse L2 strength (every row)")
    args = p.parse_args()
    for data in args.data:
        print(run(data, args), "\n", flush=True)


if __name__ == "__main__":
    main()
