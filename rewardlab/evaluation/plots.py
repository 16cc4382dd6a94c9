"""PNG plots for the report: training curves, reliability, reward distributions, per-group accuracy."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from rewardlab.contracts.schema import OUTCOMES

_STYLE = {"figure.dpi": 110, "axes.spines.top": False, "axes.spines.right": False, "axes.grid": True,
          "grid.alpha": 0.3, "font.size": 9}


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def read_history(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def training_curves(history: list[dict], path: Path) -> Path | None:
    """Train loss and validation accuracy / log-loss against step."""
    train = [r for r in history if r.get("kind") == "train" and "loss" in r]
    evals = [r for r in history if r.get("kind") == "eval" and "accuracy" in r]
    if not train and not evals:
        return None
    with plt.rc_context(_STYLE):
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(8, 3))
        if train:
            ax1.plot([r["step"] for r in train], [r["loss"] for r in train], label="train loss")
        if evals:
            ax1.plot([r["step"] for r in evals], [r["log_loss"] for r in evals], "o-", label="eval log-loss")
            ax2.plot([r["step"] for r in evals], [r["accuracy"] for r in evals], "o-", color="C2")
        ax1.set(xlabel="step", ylabel="loss", title="Loss")
        ax1.legend()
        ax2.set(xlabel="step", ylabel="pairwise accuracy", title="Validation accuracy", ylim=(0, 1.02))
        return _save(fig, path)


def reliability_diagram(curves: dict[str, list[dict]], path: Path) -> Path:
    """Accuracy against confidence per bin, one line per curve (e.g. before / after calibration, or runs)."""
    with plt.rc_context(_STYLE):
        fig, ax = plt.subplots(figsize=(4.2, 4))
        ax.plot([0.5, 1], [0.5, 1], "--", color="grey", label="perfect calibration")
        for i, (name, bins) in enumerate(curves.items()):
            ax.plot([b["confidence"] for b in bins], [b["accuracy"] for b in bins], "o-", color=f"C{i}", label=name)
        ax.set(xlabel="confidence max(p, 1-p)", ylabel="accuracy", title="Reliability", xlim=(0.48, 1.02),
               ylim=(0, 1.02))
        ax.legend(loc="lower right")
        return _save(fig, path)


def reward_distributions(chosen: Sequence[float], rejected: Sequence[float], path: Path) -> Path:
    with plt.rc_context(_STYLE):
        fig, ax = plt.subplots(figsize=(5, 3))
        both = np.concatenate([chosen, rejected])
        bins = np.linspace(both.min(), both.max() + 1e-9, 30)
        ax.hist(chosen, bins=bins, alpha=0.6, label="chosen", color="C2")
        ax.hist(rejected, bins=bins, alpha=0.6, label="rejected", color="C3")
        ax.set(xlabel="reward", ylabel="responses", title="Rewards of chosen vs rejected responses")
        ax.legend()
        return _save(fig, path)


def group_accuracy(name: str, groups: dict[str, dict], path: Path) -> Path:
    """Bars of per-group accuracy with their 95 % intervals."""
    labels = list(groups)
    acc = np.array([groups[g]["accuracy"]["value"] for g in labels])
    lo = np.array([groups[g]["accuracy"]["ci95"][0] for g in labels], dtype=float)
    hi = np.array([groups[g]["accuracy"]["ci95"][1] for g in labels], dtype=float)
    err = np.nan_to_num(np.vstack([acc - lo, hi - acc]), nan=0.0).clip(min=0)
    with plt.rc_context(_STYLE):
        fig, ax = plt.subplots(figsize=(max(4, 0.6 * len(labels) + 2), 3))
        ax.bar(range(len(labels)), acc, yerr=err, capsize=3, color="C0")
        ax.set_xticks(range(len(labels)), [f"{g}\n(n={groups[g]['pairs']})" for g in labels],
                      rotation=30 if len(labels) > 6 else 0, ha="right" if len(labels) > 6 else "center")
        ax.axhline(0.5, color="grey", linestyle="--", linewidth=1)
        ax.set(ylabel="pairwise accuracy", ylim=(0, 1.05), title=f"Accuracy by {name}")
        return _save(fig, path)


# ----------------------------------------------------------------------------- A / B / tie outcomes


def plot_outcome_reliability(metrics: dict, path: str | Path) -> Path:
    """One-vs-rest reliability curves of a, b and tie (from :func:`outcome_metrics`) against the diagonal."""
    with plt.rc_context(_STYLE):
        fig, ax = plt.subplots(figsize=(4.2, 4))
        ax.plot([0, 1], [0, 1], "--", color="grey", label="perfect calibration")
        for i, name in enumerate(OUTCOMES):
            bins = metrics["reliability"][name]
            ax.plot([b["mean_confidence"] for b in bins], [b["frequency"] for b in bins], "o-", color=f"C{i}",
                    label=f"{name} (ECE {metrics['ece_per_class'][name]:.3f})")
        ax.set(xlabel="predicted probability", ylabel="observed frequency", title="Reliability (one vs rest)",
               xlim=(-0.02, 1.02), ylim=(-0.02, 1.02))
        ax.legend(loc="upper left")
        return _save(fig, Path(path))


def plot_confusion(metrics: dict, path: str | Path) -> Path:
    """The 3×3 confusion matrix (rows true, columns predicted) from :func:`outcome_metrics`, with counts."""
    confusion = np.asarray(metrics["confusion"])
    with plt.rc_context(_STYLE):
        fig, ax = plt.subplots(figsize=(3.8, 3.4))
        image = ax.imshow(confusion, cmap="Blues", vmin=0)
        ax.grid(False)
        for (row, col), count in np.ndenumerate(confusion):
            dark = count > confusion.max() / 2
            ax.text(col, row, str(count), ha="center", va="center", color="white" if dark else "black")
        ax.set_xticks(range(len(OUTCOMES)), OUTCOMES)
        ax.set_yticks(range(len(OUTCOMES)), OUTCOMES)
        ax.set(xlabel="predicted", ylabel="true", title=f"Confusion (n={confusion.sum()})")
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
        return _save(fig, Path(path))
