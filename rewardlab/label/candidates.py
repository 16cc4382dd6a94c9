"""What people rank: candidate rows (a prompt and K >= 2 distinct responses), known-answer check items,
rankings checked, and the fingerprint that ties a label store to one candidates file."""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass
from pathlib import Path

from rewardlab.contracts.schema import DataError
from rewardlab.data.fields import list_field, text_field
from rewardlab.data.sources import read_rows

ANSWER_FIELDS = ("prompt", "responses", "ranks", "labeler", "item")


@dataclass(frozen=True)
class Candidate:
    """One prompt and its K >= 2 distinct responses; ``extra`` holds the row's other columns.

    A check item also has ``known_ranks``: the ranking a careful labeler gives (1 = best)."""

    index: int
    prompt: str
    responses: tuple[str, ...]
    extra: dict
    known_ranks: tuple[int, ...] | None = None


def check_ranks(ranks: object, k: int) -> list[int]:
    """Ranks of K responses (1 = best) with ties allowed: each of 1..m used, no gaps (dense ranking)."""
    if not isinstance(ranks, list) or len(ranks) != k or not all(
            isinstance(r, int) and not isinstance(r, bool) for r in ranks):
        raise ValueError(f"ranks {ranks!r:.80} must be a list of {k} integers, one per response")
    if sorted(set(ranks)) != list(range(1, max(ranks) + 1)):
        raise ValueError(f"ranks {ranks} are not a ranking of {k} responses: use 1 (best) up to at most {k}, "
                         "every rank from 1 up to the worst used at least once (equal ranks are ties)")
    return list(ranks)


def _candidate(where: str, row: dict, index: int, *, known: bool) -> Candidate:
    prompt, responses = text_field(row, "prompt", where), list_field(row, "responses", where)
    if len(responses) < 2:
        raise DataError(where, "responses", f"needs at least 2 responses to rank, got {len(responses)}")
    for j, r in enumerate(responses):
        if not isinstance(r, str) or not r.strip():
            raise DataError(where, f"responses[{j}]", f"expected non-empty text, got {r!r:.60}")
    if len(set(responses)) != len(responses):
        raise DataError(where, "responses", "contains the same response twice; regenerate it or drop one")
    known_ranks = None
    if known:
        if "ranks" not in row:
            raise DataError(where, "ranks", "a check item needs its known ranking (1 = best), e.g. [2, 1, 3]")
        try:
            known_ranks = tuple(check_ranks(row["ranks"], len(responses)))
        except ValueError as err:
            raise DataError(where, "ranks", str(err)) from None
    extra = {k: v for k, v in row.items() if k not in ANSWER_FIELDS}
    return Candidate(index, prompt, tuple(responses), extra, known_ranks)


def read_candidates(path: str | Path, *, checks: bool = False, start: int = 0) -> list[Candidate]:
    """Rows written by ``rewardlab generate`` (or any data file with ``prompt`` and ``responses`` columns).

    With ``checks``, rows of known-answer check items: each also has ``ranks``, numbered from ``start``."""
    out = [_candidate(where, row, start + n, known=checks) for n, (where, row) in enumerate(read_rows(str(path)))]
    if not out:
        raise ValueError(f"{path}: no {'check items' if checks else 'candidates'} (the file is empty); "
                         + ("each row needs prompt, responses and ranks" if checks else
                            "write them with `rewardlab generate`"))
    return out


def fingerprint(candidates: list[Candidate]) -> str:
    """A digest of the prompts and responses (in order) that answers refer to by item number."""
    digest = hashlib.sha256()
    for c in candidates:
        digest.update(json.dumps([c.prompt, list(c.responses), c.known_ranks], ensure_ascii=False).encode())
    return digest.hexdigest()


def display_order(labeler: str, item: int, k: int) -> list[int]:
    """A fixed shuffle of the responses per (labeler, item), so position does not hint at the policy's order."""
    order = list(range(k))
    random.Random(f"{labeler}\x00{item}").shuffle(order)
    return order
