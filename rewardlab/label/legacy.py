"""JSONL beside the store: reading the rankings files earlier versions wrote, and writing them as an export.

Before the database, ``rewardlab label --out rankings.jsonl`` kept answers in that file and skipped or flagged
prompts in ``rankings.skipped.jsonl``. Such an ``--out`` still works: the store is ``rankings.sqlite`` beside
it, the answers already in the two files are imported into it once, and both files are rewritten from the
store after every answer, so ``rewardlab train --data rankings.jsonl`` reads what it always read.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path

from rewardlab.contracts.schema import DataError
from rewardlab.label.candidates import Candidate, check_ranks

try:
    import fcntl
except ImportError:  # Windows: one writer per export file
    fcntl = None


def sidecar_of(out: Path) -> Path:
    """Where skipped and flagged prompts go beside a rankings file: ``<stem>.skipped.jsonl``."""
    return out.with_name(f"{out.name.removesuffix('.jsonl')}.skipped.jsonl")


def _read_jsonl(path: Path) -> list[dict]:
    if not path.exists():
        return []
    rows = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{path}:{i}", None, f"not valid JSON ({err.msg}); was it edited by hand?") from None
            if not isinstance(row, dict):
                raise DataError(f"{path}:{i}", None, f"expected a JSON object, got {type(row).__name__}")
            rows.append(row)
    return rows


def legacy_answers(out: Path, candidates: list[Candidate]) -> list[dict]:
    """The answers in an old ``--out`` rankings file and its sidecar, checked against the candidates:
    ``{"labeler", "item", "action", "ranks", "note"}`` each, in the order they were written."""
    found = []
    for path in (out, sidecar_of(out)):
        for n, row in enumerate(_read_jsonl(path), 1):
            item, labeler = row.get("item"), row.get("labeler")
            if isinstance(item, bool) or not isinstance(item, int) or not 0 <= item < len(candidates) or \
                    candidates[item].prompt != row.get("prompt"):
                raise ValueError(f"{path}:{n} does not belong to these candidates (item {item!r}); "
                                 "label into a new --out")
            if not isinstance(labeler, str) or not labeler.strip():
                raise DataError(f"{path}:{n}", "labeler", f"expected a name, got {labeler!r:.40}")
            action = "rank" if path == out else row.get("action")
            if action not in ("rank", "skip", "flag"):
                raise DataError(f"{path}:{n}", "action", f"expected skip or flag, got {action!r:.40}")
            try:
                ranks = check_ranks(row.get("ranks"), len(candidates[item].responses)) if action == "rank" else None
            except ValueError as err:
                raise DataError(f"{path}:{n}", "ranks", str(err)) from None
            found.append({"labeler": labeler.strip(), "item": item, "action": action, "ranks": ranks,
                          "note": str(row.get("note") or "")})
    return found


def write_atomically(path: Path, rows: list[dict]) -> None:
    """All of ``rows`` as JSONL, or the file as it was: a temporary file, fsync, rename, fsync of the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    with contextlib.suppress(OSError):  # the rename itself must survive a power cut too
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


@contextlib.contextmanager
def export_lock(path: Path):
    """One writer of ``path`` at a time across processes, so the last export written is the newest one: each
    writer reads the store after taking the lock, hence after every answer committed before it."""
    if fcntl is None:
        yield
        return
    with open(path.with_name(f".{path.name}.lock"), "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def write_mirror(out: Path, rankings: list[dict], set_aside: list[dict]) -> None:
    """The rankings file and (when there is something in it, or it exists) its skipped / flagged sidecar."""
    write_atomically(out, rankings)
    sidecar = sidecar_of(out)
    if set_aside or sidecar.exists():
        write_atomically(sidecar, set_aside)
