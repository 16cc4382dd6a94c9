"""One Million Impressions faces: a multi-attribute image reward model vs ridge vs the noise ceiling.

    python bench/omi_faces.py                       # all 34 attributes, 80/20 split by face, seed 0
    python bench/omi_faces.py --epochs 8 --seed 1

Data: ``../shared/data/omi`` (1,004 faces, 34 attributes; CC BY-NC-SA 4.0: benchmarks only, never
committed). Faces are split 80/20 *by face*; every held-out pair compares two held-out faces, ordered
by their mean ratings (pairs with equal means left out). Three rows, measured in one run on the same
pairs:

(a) rewardlab's multi-attribute model: the `multimodal` kind on the `dual` backbone with frozen,
    cached EfficientNet-Lite0 features, attention fusion over its spatial tokens (averaged 2x2, one joint
    self-attention layer: ``--token-pool``, ``--layers``), one head per attribute,
    trained on pairs of training faces
    (faces grouped at random into comparisons of ``--group-size``; pairs where the means differ by at
    least ``--min-diff``);
(b) ridge regression on the same cached embeddings, predicting each attribute's mean (alpha chosen by
    cross-validation on the training faces);
(c) the noise ceiling: each face's individual ratings split in two at random; the means of one half
    order the pairs, the means of the other half are the truth. It uses half the ratings on each side,
    so it is a conservative estimate of how well the full means can be predicted.

It also times training with a cold and a warm embedding cache (epochs after the cache is built never
run the image tower) and prints a later epoch's time as a share of the first's (which builds the cache).
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OMI = ROOT.parent / "shared" / "data" / "omi"
FOCUS = ("attractive", "smart", "trustworthy", "dominant", "happy", "age")
PROMPT = "a face"


# ----------------------------------------------------------------------------- data


def read_means(path: Path) -> tuple[np.ndarray, list[str], np.ndarray]:
    """(face ids (F,), attribute names (A,), means (F, A))."""
    with path.open() as fh:
        rows = list(csv.reader(fh))
    attributes = rows[0][1:]
    faces = np.array([int(r[0]) for r in rows[1:]])
    means = np.array([[float(x) if x else np.nan for x in r[1:]] for r in rows[1:]])
    return faces, attributes, means


def read_individual(path: Path, faces: np.ndarray, attributes: list[str]) -> dict[tuple[int, int], np.ndarray]:
    """Individual first ratings ('normal', not repeats) per (face row, attribute column)."""
    face_row = {f: i for i, f in enumerate(faces)}
    attr_col = {a: j for j, a in enumerate(attributes)}
    out: dict[tuple[int, int], list[float]] = {}
    with gzip.open(path, "rt") as fh:
        for r in csv.DictReader(fh):
            face = int(r["stimulus"])
            if r["rating_type"] != "normal" or r["attribute"] not in attr_col or face not in face_row:
                continue  # repeats, and stimuli without a mean row
            out.setdefault((face_row[face], attr_col[r["attribute"]]), []).append(float(r["rating"]))
    return {k: np.asarray(v) for k, v in out.items()}


def split_faces(n: int, seed: int, test_fraction: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
    order = np.random.default_rng(seed).permutation(n)
    cut = int(round(n * test_fraction))
    return np.sort(order[cut:]), np.sort(order[:cut])


def pairwise_accuracy(pred: np.ndarray, truth: np.ndarray, rows: np.ndarray) -> float:
    """Share of pairs of ``rows`` (both orders counted once) that ``pred`` orders as ``truth`` does.

    Pairs tied in ``truth`` are left out; a tie in ``pred`` counts half.
    """
    i, j = np.triu_indices(len(rows), k=1)
    t = np.sign(truth[rows[i]] - truth[rows[j]])
    p = np.sign(pred[rows[i]] - pred[rows[j]])
    keep = (t != 0) & np.isfinite(t) & np.isfinite(p)
    return float(np.mean((p[keep] == t[keep]) + 0.5 * (p[keep] == 0)))


def noise_ceiling(individual: dict, n_faces: int, n_attrs: int, test: np.ndarray, seed: int) -> np.ndarray:
    """Per attribute: split-half agreement of the held-out pairs' order (A,)."""
    rng = np.random.default_rng(seed)
    half_a = np.full((n_faces, n_attrs), np.nan)
    half_b = np.full((n_faces, n_attrs), np.nan)
    for (f, a), ratings in individual.items():
        if len(ratings) < 2:
            continue
        perm = rng.permutation(len(ratings))
        half_a[f, a] = ratings[perm[: len(ratings) // 2]].mean()
        half_b[f, a] = ratings[perm[len(ratings) // 2:]].mean()
    return np.array([pairwise_accuracy(half_a[:, a], half_b[:, a], test) for a in range(n_attrs)])


def ridge_predictions(features: np.ndarray, means: np.ndarray, train: np.ndarray) -> np.ndarray:
    """Ridge (alpha by leave-one-out CV) from features to each attribute's mean; predictions for every face."""
    from sklearn.linear_model import RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    out = np.full(means.shape, np.nan)
    for a in range(means.shape[1]):
        ok = train[np.isfinite(means[train, a])]
        model = make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-1, 5, 13)))
        model.fit(features[ok], means[ok, a])
        out[:, a] = model.predict(features)
    return out


# ----------------------------------------------------------------------------- rewardlab


def write_item_ratings(path: Path, faces: np.ndarray, rows: np.ndarray, attributes: list[str], means: np.ndarray,
                       group_size: int, seed: int) -> None:
    """item_ratings rows, one per face, cut into random groups: each group is one comparison."""
    order = np.random.default_rng(seed).permutation(rows)
    with path.open("w") as fh:
        for k, r in enumerate(order):
            row = {"prompt": PROMPT, "image": str(OMI / "images" / f"{faces[r]}.jpg"), "group": f"g{k // group_size}"}
            row.update({a: float(means[r, j]) for j, a in enumerate(attributes) if np.isfinite(means[r, j])})
            fh.write(json.dumps(row) + "\n")


def rewardlab_config(data: Path, out: Path, attributes: list[str], args: argparse.Namespace, cache_dir: Path):
    from rewardlab.config import load_config

    return load_config(None, [
        "model.kind=multimodal", "model.backbone=dual", f"multimodal.fusion={args.fusion}",
        f"multimodal.token_pool={args.token_pool}", f"multimodal.layers={args.layers}",
        "multimodal.freeze_towers=true", "multimodal.cache=true", f"multimodal.cache_dir={cache_dir}",
        f"multimodal.image_size={args.image_size}", f"data.train={data}", "data.eval_fraction=0.1",
        "data.split_by=group", f"data.attributes=[{', '.join(attributes)}]", f"data.min_rating_diff={args.min_diff}",
        "data.aggregate_pairs=false", f"train.output_dir={out}", f"train.epochs={args.epochs}",
        f"train.batch_size={args.batch_size}", f"train.lr_head={args.lr}", f"train.lr_fusion={args.lr}",
        "train.balance=attribute", "train.log_with=[]", "train.progress=false", f"train.seed={args.seed}",
        "train.metric_for_best=log_loss",
        "train.schedule=cosine",  # the default when the README table was measured
        *args.overrides,
    ])


def rewardlab_row(faces, attributes, means, train_rows, test_rows, args, work: Path) -> dict:
    """Train on training faces (cold cache, then again warm), score every face; per-attribute scores (F, A)."""
    from rewardlab.scoring import RewardModel
    from rewardlab.train.run import train

    data = work / "train.jsonl"
    write_item_ratings(data, faces, train_rows, attributes, means, args.group_size, args.seed)
    cache_dir = work / "cache"
    timings = {}
    for name in ("cold", "warm"):
        start = time.perf_counter()
        result = train(rewardlab_config(data, work / f"run-{name}", attributes, args, cache_dir))
        timings[f"{name}_cache_train_s"] = time.perf_counter() - start
        timings[f"{name}_cache_loop_s"] = result.metrics["train_seconds"]
        timings[f"{name}_cache_epochs_s"] = sum(result.metrics[k] for k in ("train_seconds", "eval_seconds",
                                                                             "save_seconds"))
    # A later epoch: the warm run's epochs (steps, evaluation, resume states) over their number. The first
    # epoch with a cold cache: that, plus the cache build (the cold run's extra time over the warm one).
    timings["later_epoch_s"] = timings["warm_cache_epochs_s"] / args.epochs
    timings["cache_build_s"] = timings["cold_cache_train_s"] - timings["warm_cache_train_s"]
    timings["later_over_first"] = timings["later_epoch_s"] / (timings["cache_build_s"] + timings["later_epoch_s"])
    rm = RewardModel.from_pretrained(str(result.model_dir), device="cpu")
    images = [str(OMI / "images" / f"{f}.jpg") for f in faces]
    scores = rm.score_heads([PROMPT] * len(images), images, batch_size=128)
    head = {h: k for k, h in enumerate(rm.heads)}
    return {"scores": np.stack([scores[:, head[a]] for a in attributes], 1), "timings": timings, "model": rm,
            "images": images}


def cached_features(rm, images: list[str], chunk: int = 256) -> np.ndarray:
    """The frozen image tower's pooled features of each image (F, D), read from the model's embedding cache."""
    out = []
    for start in range(0, len(images), chunk):
        part = images[start: start + chunk]
        items, _ = rm.processor.encode_items([PROMPT] * len(part), part)
        out.append(rm.processor.collate(items)["image_pooled"].float().numpy())
    return np.concatenate(out)


# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=float, default=15)
    parser.add_argument("--batch-size", type=int, default=1, help="comparisons (groups of faces) per step")
    parser.add_argument("--group-size", type=int, default=32)
    parser.add_argument("--min-diff", type=float, default=0.5, help="rating gap (0-100 scale) that forms a pair")
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--fusion", default="attention", help="attention reads the 7x7 spatial tokens; concat only "
                        "the pooled vector (faster epochs)")
    parser.add_argument("--token-pool", type=int, default=2, help="attention reads the 7x7 tokens averaged in k x k "
                        "windows (2: 4x4); 1 reads all 49")
    parser.add_argument("--layers", type=int, default=1, help="self-attention layers over the joint tokens")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--out", default="runs/bench-omi")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="Any other rewardlab option for row (a).")
    args = parser.parse_args(argv)
    if not OMI.is_dir():
        print(f"{OMI} is missing: this benchmark reads the OMI data from ../shared/data/omi", file=sys.stderr)
        return 2

    faces, attributes, means = read_means(OMI / "attribute_means.csv")
    train_rows, test_rows = split_faces(len(faces), args.seed)
    individual = read_individual(OMI / "attribute_ratings.csv.gz", faces, attributes)
    ceiling = noise_ceiling(individual, len(faces), len(attributes), test_rows, args.seed)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out) as tmp:
        ours = rewardlab_row(faces, attributes, means, train_rows, test_rows, args, Path(tmp))
        features = cached_features(ours["model"], ours["images"])
    ridge = ridge_predictions(features, means, train_rows)
    acc = {name: np.array([pairwise_accuracy(pred[:, a], means[:, a], test_rows) for a in range(len(attributes))])
           for name, pred in (("rewardlab", ours["scores"]), ("ridge", ridge))}

    print(f"\nOMI faces: {len(train_rows)} train / {len(test_rows)} held-out faces (split by face, seed {args.seed}); "
          f"held-out pairs per attribute: {len(test_rows) * (len(test_rows) - 1) // 2} (ties left out)")
    print("| attribute | rewardlab (a) | ridge (b) | noise ceiling (c) | (a) share of (c) above chance |")
    print("|---|---|---|---|---|")
    index = {a: j for j, a in enumerate(attributes)}
    rows = [(a, index[a]) for a in FOCUS] + [("mean over 34", None)]
    table = {}
    for name, j in rows:
        a_, b_, c_ = ((v.mean() if j is None else v[j]) for v in (acc["rewardlab"], acc["ridge"], ceiling))
        share = (a_ - 0.5) / (c_ - 0.5) if c_ > 0.5 else float("nan")
        table[name] = {"rewardlab": a_, "ridge": b_, "ceiling": c_}
        print(f"| {name} | {a_:.3f} | {b_:.3f} | {c_:.3f} | {share:.0%} |")
    t = ours["timings"]
    print(f"\ntraining loop with a cold cache (image tower runs once per image): {t['cold_cache_train_s']:.1f} s in all, "
          f"{t['cold_cache_loop_s']:.1f} s of epochs; warm cache: {t['warm_cache_train_s']:.1f} s in all, "
          f"{t['warm_cache_loop_s']:.1f} s of epochs")
    print(f"a later epoch (steps, evaluation and resume state): {t['later_epoch_s']:.2f} s; the first, with the cache "
          f"build ({t['cache_build_s']:.1f} s): {t['cache_build_s'] + t['later_epoch_s']:.1f} s; "
          f"later / first: {t['later_over_first']:.1%}")
    (out / "results.json").write_text(json.dumps({"table": table, "timings": t, "args": vars(args),
                                                  "per_attribute": {k: dict(zip(attributes, v.tolist()))
                                                                    for k, v in {**acc, "ceiling": ceiling}.items()}},
                                                 indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
