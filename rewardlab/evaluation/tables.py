"""One table across models and benchmarks, from the ``metrics.json`` of finished evaluations.

Rows are models, columns the data sets (each benchmark's own headline score: RewardBench's section mean,
RewardBench 2's best-of-N mean over subsets, else pairwise accuracy) and, with ``subsets``, each subset's
accuracy; the length-only rules (prefer longer, prefer shorter) follow as reference rows on the same pairs.

Example:
    >>> m = {"model": "rm", "data": "d.jsonl", "overall": {"accuracy": {"value": 0.75}}, "groups": {},
    ...      "length_bias": {"length_only_rules": {"prefer_longer": 0.5, "prefer_shorter": 0.5}}}
    >>> print(to_markdown(benchmark_table([m])))
    | model | d |
    |---|---|
    | rm | 0.750 |
    | *prefer longer* | 0.500 |
    | *prefer shorter* | 0.500 |
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rewardlab.metrics.benchmarks import rewardbench_sections

RULES = ("prefer_longer", "prefer_shorter")


@dataclass(frozen=True)
class Table:
    """Column names, then rows of (label, cells); ``reference`` rows are the length-only rules."""

    columns: list[str]
    rows: list[tuple[str, list[float | None]]]
    reference: list[tuple[str, list[float | None]]]


def find_evals(folders: Sequence[str | Path]) -> list[dict]:
    """Every evaluation's metrics.json in or below ``folders`` (an eval folder, or a run folder whose
    ``eval/<data>/`` folders hold one each); ``ValueError`` names a folder that holds none."""
    out = []
    for folder in map(Path, folders):
        own = folder / "metrics.json"
        files = [own] if own.is_file() else sorted(folder.rglob("metrics.json"))
        found = [m for m in (json.loads(f.read_text()) for f in files) if "overall" in m]
        if not found:
            raise ValueError(f"{folder}: no evaluation metrics.json in or below it (run `rewardlab eval` first)")
        out += found
    return out


def _data_label(m: dict) -> str:
    names = m.get("benchmark", {}).get("benchmarks") or []
    return names[0] if len(names) == 1 else Path(str(m.get("data", "?")).removeprefix("hf:")).name.split(".")[0]


def _headline(m: dict) -> tuple[float | None, dict[str, float | None]]:
    """The data set's own score for the model, and for each length-only rule."""
    b = m.get("benchmark", {})
    subsets = m.get("groups", {}).get("subset", {})
    rule_acc = {r: {s: g.get("length_rules", {}).get(r, {}).get("value") for s, g in subsets.items()} for r in RULES}
    if "rewardbench" in b:
        rules = {r: rewardbench_sections({s: v for s, v in acc.items() if v is not None})["score"]
                 for r, acc in rule_acc.items()}
        return b["rewardbench"]["score"], rules
    if "best_of_n" in b:  # the rules' best-of-N is not derived from pairs: left empty
        return b["best_of_n"]["mean_over_subsets"], dict.fromkeys(RULES)
    rules = m.get("length_bias", {}).get("length_only_rules", {})
    return m["overall"]["accuracy"]["value"], {r: rules.get(r) for r in RULES}


def benchmark_table(evals: Sequence[dict], *, subsets: bool = False) -> Table:
    """Rows = models (in first-seen order), columns = data sets (and their subsets with ``subsets``)."""
    cells: dict[tuple[str, str], float | None] = {}
    reference: dict[tuple[str, str], float | None] = {}
    models, columns = [], []
    for m in evals:
        model, data = str(m.get("model", "?")), _data_label(m)
        models += [model] if model not in models else []
        score, rules = _headline(m)
        found = [(data, score, rules)]
        if subsets:
            for s, g in m.get("groups", {}).get("subset", {}).items():
                lr = g.get("length_rules", {})
                found.append((f"{data}/{s}", g["accuracy"]["value"], {r: lr.get(r, {}).get("value") for r in RULES}))
        for column, value, rule_values in found:
            columns += [column] if column not in columns else []
            cells[model, column] = value
            for r, v in rule_values.items():
                reference.setdefault((r, column), v)
    rows = [(model, [cells.get((model, c)) for c in columns]) for model in models]
    ref = [(r.replace("_", " "), [reference.get((r, c)) for c in columns]) for r in RULES]
    return Table(columns=columns, rows=rows, reference=ref)


def _cell(x: float | None) -> str:
    return "–" if x is None or math.isnan(x) else f"{x:.3f}"


def to_markdown(table: Table) -> str:
    lines = ["| model | " + " | ".join(table.columns) + " |", "|---" * (len(table.columns) + 1) + "|"]
    lines += [f"| {label} | " + " | ".join(map(_cell, values)) + " |" for label, values in table.rows]
    lines += [f"| *{label}* | " + " | ".join(map(_cell, values)) + " |" for label, values in table.reference]
    return "\n".join(lines)


def to_html(table: Table, title: str = "Models across benchmarks") -> str:
    """A self-contained page with the table; the length-only rules in italics below the models."""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in ["model", *table.columns])
    body = "".join(f"<tr><td>{html.escape(label)}</td>" + "".join(f"<td>{_cell(v)}</td>" for v in values) + "</tr>"
                   for label, values in table.rows)
    body += "".join(f"<tr><td><i>{html.escape(label)}</i></td>" + "".join(f"<td><i>{_cell(v)}</i></td>"
                                                                          for v in values) + "</tr>"
                    for label, values in table.reference)
    return (f"<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            "<style>body{font-family:system-ui,sans-serif;margin:2rem}table{border-collapse:collapse}"
            "td,th{border:1px solid #ddd;padding:.3rem .5rem}th{background:#f6f6f6}</style></head><body>"
            f"<h1>{html.escape(title)}</h1><table><tr>{head}</tr>{body}</table><p>Italic rows: the length-only rules "
            "on the same pairs, for reference.</p></body></html>")


def write_tables(evals: Sequence[dict], out_dir: Path, *, subsets: bool = True) -> tuple[str, Path, Path]:
    """Write ``benchmarks.md`` and ``benchmarks.html`` into ``out_dir``; returns the markdown and both paths."""
    table = benchmark_table(evals, subsets=subsets)
    out_dir.mkdir(parents=True, exist_ok=True)
    md, page = out_dir / "benchmarks.md", out_dir / "benchmarks.html"
    text = to_markdown(table)
    md.write_text(text + "\n")
    page.write_text(to_html(table), encoding="utf-8")
    return text, md, page
