"""Put several evaluations side by side: a table and overlaid reliability diagrams."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from rewardlab.evaluation.plots import reliability_diagram

COLUMNS = ("accuracy", "roc_auc", "log_loss", "brier", "ece", "f1", "accuracy_top10")


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
    lines = ["| run | pairs | " + " | ".join(COLUMNS) + " |", "|---" * (len(COLUMNS) + 2) + "|"]
    for name, m in evals.items():
        cells = []
        for col in COLUMNS:
            v = m["overall"].get(col, {}).get("value")
            cells.append("–" if v is None else f"{v:.3f}")
        lines.append(f"| {name} | {m['pairs']} | " + " | ".join(cells) + " |")
    table = "\n".join(lines)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "compare.md").write_text(table + "\n")
    reliability_diagram({name: m["calibration"]["bins_uniform"] for name, m in evals.items()},
                        out_dir / "compare_reliability.png")
    return table
