"""Put several evaluations side by side: a table and overlaid reliability diagrams."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from rewardlab.evaluation.plots import reliability_diagram

COLUMNS = ("accuracy", "roc_auc", "log_loss", "brier", "ece", "f1", "accuracy_top10")
LENGTH_COLUMNS = ("length_balanced_accuracy", "prefers_longer", "reward_length_spearman")


def _length_cells(m: dict) -> list[float | None]:
    lb = m.get("length_bias", {})
    return [lb.get("length_balanced_accuracy", {}).get("value"), lb.get("model_prefers_longer_rate"),
            lb.get("reward_length_correlation", {}).get("spearman")]


def load_eval(run: str | Path) -> dict:
    """metrics.json of an eval folder (or of ``RUN/eval`` for a training run folder)."""
    run = Path(run)
    for candidate in (run / "metrics.json", run / "eval" / "metrics.json"):
        if candidate.is_file():
            data = json.loads(candidate.read_text())
            if "overall" in data:
                return data
    raise ValueError(f"{run}: no evaluation metrics.json found (run `rewardlab eval` first)")


def compare(runs: Sequence[str | Path], out_dir: Path) -> str:
    """Markdown table of headline metrics per run; writes it and the reliability overlay to ``out_dir``."""
    if len(runs) < 2:
        raise ValueError("compare needs at least two evaluation folders")
    evals = {str(r): load_eval(r) for r in runs}
    header = COLUMNS + LENGTH_COLUMNS
    lines = ["| run | pairs | " + " | ".join(header) + " |", "|---" * (len(header) + 2) + "|"]
    for name, m in evals.items():
        values = [m["overall"].get(col, {}).get("value") for col in COLUMNS] + _length_cells(m)
        cells = ["–" if v is None or v != v else f"{v:.3f}" for v in values]
        lines.append(f"| {name} | {m['pairs']} | " + " | ".join(cells) + " |")
    table = "\n".join(lines)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "compare.md").write_text(table + "\n")
    reliability_diagram({name: m["calibration"]["bins_uniform"] for name, m in evals.items()},
                        out_dir / "compare_reliability.png")
    return table
