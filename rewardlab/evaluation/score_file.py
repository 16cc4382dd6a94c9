"""``rewardlab score``: add rewards to rows of (prompt, response) or (prompt, chosen, rejected)."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Iterable

from rewardlab.data.formats import text_field
from rewardlab.data.schema import DataError
from rewardlab.scoring import RewardModel

CHUNK = 1024


def _targets(row: dict, where: str) -> list[str]:
    if "response" in row:
        return ["response"]
    if "chosen" in row and "rejected" in row:
        return ["chosen", "rejected"]
    raise DataError(where, None, "expected a 'response' column, or 'chosen' and 'rejected' columns")


def score_rows(model: RewardModel, rows: Iterable[tuple[str, dict]], out: Path, *, normalize: str = "none",
               batch_size: int = 32) -> int:
    """Stream rows, score them in chunks, write each row with ``<column>_score`` added; returns the count.

    Multi-attribute models also add ``<column>_scores``: every head's score by name.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    n = 0
    it = iter(rows)
    with tmp.open("w") as fh:
        while chunk := list(itertools.islice(it, CHUNK)):
            prompts, texts = [], []
            for where, row in chunk:
                prompt = text_field(row, "prompt", where)
                for col in _targets(row, where):
                    prompts.append(prompt)
                    texts.append(text_field(row, col, where))
            scores = iter(model.score_heads(prompts, texts, batch_size=batch_size, normalize=normalize))
            for where, row in chunk:
                scored = dict(row)
                for col in _targets(row, where):
                    heads = next(scores)
                    scored[f"{col}_score"] = float(heads[-1])
                    if len(model.heads) > 1:
                        scored[f"{col}_scores"] = dict(zip(model.heads, heads.tolist()))
                fh.write(json.dumps(scored, ensure_ascii=False) + "\n")
                n += 1
    tmp.replace(out)
    return n
