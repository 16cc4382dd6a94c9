"""``rewardlab demo --task image``: a multimodal reward model on generated pictures, beside a text-blind control.

Steps: draw the synthetic text-to-image preference set
(:func:`~rewardlab.data.synthetic_images.make_image_preferences`), split it by prompt,
train the ``dual`` backbone (EfficientNet-Lite0 + MiniLM, frozen, tower outputs
cached) with attention fusion and one head per attribute, evaluate it on the
held-out prompts, then train and evaluate the same model with every prompt
replaced by the empty text. Spatial layout, shapes, colours and texture can only
be judged against the prompt, so the control stays near chance there while the
fused model does not; fidelity (blur and noise) needs no prompt, and both learn it.
Settings: ``rewardlab/configs/demo_image.yaml`` plus overrides.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Sequence

from rewardlab.config import load_config
from rewardlab.data.load import load_comparisons
from rewardlab.data.synthetic_images import make_image_preferences
from rewardlab.demo import HELD_OUT, VALIDATION, split_three

N_PROMPTS, CANDIDATES, PICTURE_SIZE = 160, 6, 64
N_BOOT = 200  # bootstrap resamples for the confidence intervals (the evaluation's 1000 would double the demo's time)
RUNS = {"fused": [], "text_blind": ["multimodal.text_blind=true"]}


def _split(ratings: Path, data_cfg, seed: int) -> tuple[Path, Path, Path]:
    """``train``, ``validation`` and ``heldout`` rows of ``ratings`` (:func:`~rewardlab.demo.split_three` by
    prompt), written beside it so the relative image paths still resolve."""
    comparisons, _ = load_comparisons(str(ratings), data_cfg)
    parts = split_three(comparisons, seed)
    part_of = {c.group: k for k, part in enumerate(parts) for c in part}
    rows: list[list[str]] = [[], [], []]
    for line in ratings.read_text(encoding="utf-8").splitlines(keepends=True):
        rows[part_of[json.loads(line)["group"]]].append(line)
    paths = tuple(ratings.with_name(f"{name}.jsonl") for name in ("train", "validation", "heldout"))
    for path, part in zip(paths, rows):
        path.write_text("".join(part), encoding="utf-8")
    return paths


def run_image_demo(out: Path, overrides: Sequence[str] = (), *, n_prompts: int = N_PROMPTS,
                   candidates: int = CANDIDATES) -> dict:
    """Generate data, train and evaluate the fused model and the text-blind control; print and return
    ``{"attributes": {name: {"pairs", "fused", "text_blind"}}, "fused": metrics, "text_blind": metrics}``.

    Args:
        out: output folder (data, embedding cache, one folder per run with its model and evaluation).
        overrides: ``section.key=value`` config overrides, applied to both runs.
        n_prompts: generated prompts (20 % of them held out).
        candidates: pictures per prompt.
    """
    from rewardlab.evaluation.run import evaluate
    from rewardlab.train.run import train

    out = Path(out)
    config = Path(str(resources.files("rewardlab.configs") / "demo_image.yaml"))
    base = load_config(config, list(overrides))
    ratings = make_image_preferences(out / "data", n_prompts=n_prompts, candidates=candidates, size=PICTURE_SIZE,
                                     seed=base.data.seed)
    train_path, val_path, heldout_path = _split(ratings, base.data, base.data.seed)
    common = [f"data.train={train_path}", f"data.eval={val_path}", f"multimodal.cache_dir={out / 'cache'}"]
    print(f"rewardlab image demo: {n_prompts} prompts x {candidates} pictures ({PICTURE_SIZE} px), {HELD_OUT:.0%} of "
          f"the prompts held out, {VALIDATION:.0%} of the rest for validation; backbone {base.model.backbone}, "
          f"{base.multimodal.fusion} fusion, frozen cached towers")
    metrics = {}
    for name, extra in RUNS.items():
        cfg = load_config(config, [*common, f"train.output_dir={out / name}", *extra, *overrides])
        print(f"\n== {name.replace('_', '-')} model ==")
        result = train(cfg)
        evaluation = evaluate(str(result.model_dir), str(heldout_path), out / name / "eval", data_cfg=cfg.data,
                              progress=cfg.train.progress, n_boot=N_BOOT)
        metrics[name] = evaluation.metrics
    table = {attribute: {"pairs": m["pairs"], "fused": m["accuracy"]["value"],
                         "text_blind": metrics["text_blind"]["attributes"][attribute]["accuracy"]["value"]}
             for attribute, m in metrics["fused"]["attributes"].items()}
    print("\nheld-out accuracy per attribute (pairs)     fused   text-blind")
    for attribute, row in table.items():
        print(f"  {attribute:<14} ({row['pairs']:>5})                 {row['fused']:.3f}   {row['text_blind']:.3f}")
    print(f"  {'all pairs':<14} ({metrics['fused']['pairs']:>5})                 "
          f"{metrics['fused']['overall']['accuracy']['value']:.3f}   "
          f"{metrics['text_blind']['overall']['accuracy']['value']:.3f}")
    print(f"\nmodels and reports: {out / 'fused'}, {out / 'text_blind'}")
    return {"attributes": table, **metrics}
