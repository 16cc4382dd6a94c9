"""Candidates to rank, and the answers people give, saved to disk as each one is given.

The rankings file is exactly the ``rankings`` format ``rewardlab train`` reads: one row per
(labeler, prompt) answer, ``{"prompt", "responses", "ranks", "labeler", "item", ...}`` (1 = best, equal ranks
are ties). Skipped and flagged prompts go to a sidecar file (``<out stem>.skipped.jsonl``) so that training
never sees them. Both files are rewritten whole through a temporary file, fsync and rename on every answer:
a crash or a killed server leaves the previous or the new version, never half of one, and a changed answer
replaces the old row instead of adding a second. On start the store reads both back and resumes.
"""

from __future__ import annotations

import json
import os
import random
import threading
from dataclasses import dataclass
from pathlib import Path

from rewardlab.contracts.schema import DataError
from rewardlab.data.fields import list_field, text_field
from rewardlab.data.sources import read_rows

ACTIONS = ("rank", "skip", "flag")


@dataclass(frozen=True)
class Candidate:
    """One prompt and its K >= 2 distinct responses; ``extra`` holds the row's other columns."""

    index: int
    prompt: str
    responses: tuple[str, ...]
    extra: dict


def read_candidates(path: str | Path) -> list[Candidate]:
    """Rows written by ``rewardlab generate`` (or any data file with ``prompt`` and ``responses`` columns)."""
    out: list[Candidate] = []
    for where, row in read_rows(str(path)):
        prompt, responses = text_field(row, "prompt", where), list_field(row, "responses", where)
        if len(responses) < 2:
            raise DataError(where, "responses", f"needs at least 2 responses to rank, got {len(responses)}")
        for j, r in enumerate(responses):
            if not isinstance(r, str) or not r.strip():
                raise DataError(where, f"responses[{j}]", f"expected non-empty text, got {r!r:.60}")
        if len(set(responses)) != len(responses):
            raise DataError(where, "responses", "contains the same response twice; regenerate it or drop one")
        extra = {k: v for k, v in row.items() if k not in ("prompt", "responses", "ranks", "labeler", "item")}
        out.append(Candidate(len(out), prompt, tuple(responses), extra))
    if not out:
        raise ValueError(f"{path}: no candidates (the file is empty); write them with `rewardlab generate`")
    return out


def check_ranks(ranks: object, k: int) -> list[int]:
    """Ranks of K responses (1 = best) with ties allowed: each of 1..m used, no gaps (dense ranking)."""
    if not isinstance(ranks, list) or len(ranks) != k or not all(
            isinstance(r, int) and not isinstance(r, bool) for r in ranks):
        raise ValueError(f"ranks {ranks!r:.80} must be a list of {k} integers, one per response")
    if sorted(set(ranks)) != list(range(1, max(ranks) + 1)):
        raise ValueError(f"ranks {ranks} are not a ranking of {k} responses: use 1 (best) up to at most {k}, "
                         "every rank from 1 up to the worst used at least once (equal ranks are ties)")
    return list(ranks)


def display_order(labeler: str, item: int, k: int) -> list[int]:
    """A fixed shuffle of the responses per (labeler, item), so position does not hint at the policy's order."""
    order = list(range(k))
    random.Random(f"{labeler}\x00{item}").shuffle(order)
    return order


def _write_atomically(path: Path, rows: list[dict]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        fh.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    try:  # the rename itself must survive a power cut too
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass


def _read_rows(path: Path) -> list[dict]:
    if not path.exists():
        return []
    rows = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise DataError(f"{path}:{i}", None, f"not valid JSON ({err.msg}); was it edited by hand?") from None
    return rows


class LabelStore:
    """Candidates plus every labeler's answers, kept on disk; safe to share between server threads."""

    def __init__(self, candidates: str | Path, out: str | Path):
        self.candidates_path = Path(candidates)
        self.candidates = read_candidates(candidates)
        self.out = Path(out)
        self.sidecar = self.out.with_name(f"{self.out.name.removesuffix('.jsonl')}.skipped.jsonl")
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        # (labeler, item) -> row, in the order answers were (last) given
        self._ranked = self._load(self.out)
        self._skipped = self._load(self.sidecar)

    def _load(self, path: Path) -> dict[tuple[str, int], dict]:
        rows = {}
        for n, row in enumerate(_read_rows(path), 1):
            item, labeler = row.get("item"), row.get("labeler")
            if not isinstance(item, int) or not 0 <= item < len(self.candidates) or \
                    self.candidates[item].prompt != row.get("prompt"):
                raise ValueError(f"{path}:{n} does not belong to these candidates (item {item!r}); "
                                 "label into a new --out")
            rows[(str(labeler), item)] = row
        return rows

    # ------------------------------------------------------------------ reading

    def answer_of(self, labeler: str, item: int) -> dict | None:
        return self._ranked.get((labeler, item)) or self._skipped.get((labeler, item))

    def ranked_rows(self, labeler: str) -> list[dict]:
        """This labeler's saved rankings."""
        return [row for (who, _), row in list(self._ranked.items()) if who == labeler]

    def progress(self, labeler: str) -> dict:
        ranked = sum(1 for (who, _) in self._ranked if who == labeler)
        skipped = [r for (who, _), r in self._skipped.items() if who == labeler]
        flagged = sum(1 for r in skipped if r["action"] == "flag")
        answered = ranked + len(skipped)
        return {"total": len(self.candidates), "answered": answered, "ranked": ranked,
                "skipped": len(skipped) - flagged, "flagged": flagged, "remaining": len(self.candidates) - answered}

    def next_item(self, labeler: str, after: int = -1) -> int | None:
        """The first item this labeler has not answered, looking after ``after`` first, then from the top."""
        n = len(self.candidates)
        for i in list(range(after + 1, n)) + list(range(0, after + 1)):
            if self.answer_of(labeler, i) is None:
                return i
        return None

    def item(self, labeler: str, index: int) -> dict:
        if not 0 <= index < len(self.candidates):
            raise ValueError(f"item {index} does not exist; there are {len(self.candidates)}")
        c = self.candidates[index]
        return {"item": index, "prompt": c.prompt, "responses": list(c.responses),
                "order": display_order(labeler, index, len(c.responses)), "answer": self.answer_of(labeler, index)}

    # ------------------------------------------------------------------ writing

    def answer(self, labeler: str, index: int, action: str, ranks: list | None = None, note: str = "") -> dict:
        """Save one answer (replacing this labeler's earlier answer to the item); returns the row written."""
        if not isinstance(labeler, str) or not labeler.strip():
            raise ValueError("labeler must be a non-empty name")
        labeler = labeler.strip()
        if action not in ACTIONS:
            raise ValueError(f"action {action!r} is not valid; choose one of {', '.join(ACTIONS)}")
        if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < len(self.candidates):
            raise ValueError(f"item {index!r} does not exist; there are {len(self.candidates)}")
        c = self.candidates[index]
        key = (labeler, index)
        if action == "rank":
            row = {"prompt": c.prompt, "responses": list(c.responses), "ranks": check_ranks(ranks, len(c.responses)),
                   "labeler": labeler, "item": index, **c.extra}
        else:
            row = {"prompt": c.prompt, "item": index, "labeler": labeler, "action": action, "note": str(note or "")}
        with self._lock:
            ranked, skipped = dict(self._ranked), dict(self._skipped)
            ranked.pop(key, None)
            skipped.pop(key, None)
            (ranked if action == "rank" else skipped)[key] = row
            if action == "rank" or key in self._ranked:
                _write_atomically(self.out, list(ranked.values()))
            if action != "rank" or key in self._skipped:
                _write_atomically(self.sidecar, list(skipped.values()))
            self._ranked, self._skipped = ranked, skipped
        return row
