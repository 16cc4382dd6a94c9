"""LLMFAO crowd and GPT-4 judgements as ``ab``-format rows (prompt, response_a, response_b, winner).

    python bench/llmfao_data.py --out runs/llmfao     # writes crowd.jsonl and gpt4.jsonl, prints counts

Data: ``../shared/data/llmfao`` (CC BY 4.0; read in place, never committed): 8,931 A / B / tie judgements
by 124 crowd workers of 2,139 response pairs, and one GPT-4 judgement per pair. ``crowd-comparisons.csv``
(``id,prompt,model_x,model_y,worker,winner,left,right``; ``winner`` is left / right / tie, left =
``model_x``) is joined on ``id`` with ``pairs-crowd.jsonl`` (``text`` the prompt, ``result_x`` /
``result_y`` the responses). Each row keeps ``labeler`` (``worker<N>``, or ``gpt4``), ``group`` (the
pair ``id``: split by it, ``data.split_by=group``, so that all judgements of a pair stay on one side)
and ``model_a`` / ``model_b`` (model names, for model-level ratings).

1,208 crowd rows judge a pair where one response is empty (only whitespace); rewardlab rejects an
empty response, so load them with ``data.on_bad_row=skip`` (it counts them) or pass ``skip_empty=True``.
Some pair ids hold the same two texts as another id (models that answered identically), so a worker
can judge the same texts twice: the loader calls those duplicates (about 120 crowd and 123 GPT-4 rows).
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path
from typing import Iterable

ROOT = Path(__file__).resolve().parents[1]
LLMFAO = Path("../shared/data/llmfao")
WINNERS = {"left": "a", "right": "b", "tie": "tie"}


def _pairs(root: Path) -> dict[str, dict]:
    with (root / "pairs-crowd.jsonl").open() as fh:
        return {str(pair["id"]): pair for pair in map(json.loads, fh)}


def _rows(root: Path, comparisons_file: str, *, ties: bool, skip_empty: bool) -> list[dict]:
    pairs = _pairs(root)
    rows = []
    with (root / comparisons_file).open(newline="") as fh:
        for line, judgement in enumerate(csv.DictReader(fh), start=2):  # line 1 is the header
            where = f"{root / comparisons_file}:{line}"
            pair = pairs.get(judgement["id"])
            if pair is None:
                raise ValueError(f"{where}: pair id {judgement['id']} is not in pairs-crowd.jsonl")
            if str(pair["model_x"]) != judgement["model_x"] or str(pair["model_y"]) != judgement["model_y"]:
                raise ValueError(f"{where}: models {judgement['model_x']} / {judgement['model_y']} differ from "
                                 f"pairs-crowd.jsonl ({pair['model_x']} / {pair['model_y']})")
            if judgement["winner"] not in WINNERS:
                raise ValueError(f"{where}: winner {judgement['winner']!r} is not one of {', '.join(WINNERS)}")
            winner = WINNERS[judgement["winner"]]
            a, b = pair["result_x"] or "", pair["result_y"] or ""
            if (winner == "tie" and not ties) or (skip_empty and not (a.strip() and b.strip())):
                continue
            rows.append({"prompt": pair["text"], "response_a": a, "response_b": b, "winner": winner,
                         "labeler": f"worker{judgement['worker']}" if "worker" in judgement else "gpt4",
                         "group": str(judgement["id"]), "model_a": judgement["left"], "model_b": judgement["right"]})
    return rows


def load_llmfao(root: Path = LLMFAO, *, ties: bool = True, skip_empty: bool = False) -> list[dict]:
    """The crowd judgements as ``ab`` rows, in file order.

    Args:
        root: the ``llmfao`` folder (default: ``../shared/data/llmfao``, from the project root).
        ties: keep tie judgements (about 39 % of them); false drops them.
        skip_empty: drop judgements of a pair with an empty (whitespace-only) response.
    """
    return _rows(Path(root), "crowd-comparisons.csv", ties=ties, skip_empty=skip_empty)


def load_llmfao_gpt4(root: Path = LLMFAO, *, ties: bool = True, skip_empty: bool = False) -> list[dict]:
    """GPT-4's judgement of each pair as ``ab`` rows (``labeler`` = ``gpt4``); arguments as :func:`load_llmfao`."""
    return _rows(Path(root), "gpt4-crowd-comparisons.csv", ties=ties, skip_empty=skip_empty)


def write_jsonl(rows: Iterable[dict], path: Path) -> Path:
    """Write ``rows`` one JSON object per line (``rewardlab train data.train=PATH`` reads it as ``ab``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as fh:
        fh.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", type=Path, default=ROOT.parent / "shared" / "data" / "llmfao")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "llmfao")
    parser.add_argument("--no-ties", action="store_true", help="drop tie judgements")
    parser.add_argument("--skip-empty", action="store_true", help="drop pairs with an empty response")
    args = parser.parse_args()
    for name, load in (("crowd", load_llmfao), ("gpt4", load_llmfao_gpt4)):
        rows = load(args.root, ties=not args.no_ties, skip_empty=args.skip_empty)
        path = write_jsonl(rows, args.out / f"{name}.jsonl")
        ties = sum(r["winner"] == "tie" for r in rows)
        print(f"{path}: {len(rows)} rows, {len({r['labeler'] for r in rows})} labelers, "
              f"{len({r['group'] for r in rows})} pairs, {ties / max(len(rows), 1):.1%} ties")


if __name__ == "__main__":
    main()
