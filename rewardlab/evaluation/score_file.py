"""``rewardlab score``: add rewards to rows of (prompt, response) or (prompt, chosen, rejected).

Inputs stream through in chunks of :data:`CHUNK` rows, so files larger than memory
are fine. Under ``accelerate launch`` each of the N processes scores every N-th
chunk into its own shard file; the main process then merges the shards into one
output in input order. Every chunk is appended whole and flushed, and a shard that
finished says so, so a run that was interrupted resumes (``resume=True``) from the
last complete chunk of each shard without rescoring what is already written. The
output appears only when every row is scored (written to a temporary name, then
renamed).
"""

from __future__ import annotations

import itertools
import json
import os
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


def _score_chunk(model: RewardModel, chunk: list[tuple[str, dict]], normalize: str, batch_size: int) -> list[str]:
    """The chunk's rows as JSON lines with ``<column>_score`` (and, for multi-head models, ``<column>_scores``)."""
    prompts, texts, labelers = [], [], []
    for where, row in chunk:
        prompt = text_field(row, "prompt", where)
        for col in _targets(row, where):
            prompts.append(prompt)
            texts.append(text_field(row, col, where))
            labelers.append(row.get("labeler") if "personalization" in model.metadata else None)
    scores = iter(model.score_heads(prompts, texts, batch_size=batch_size, normalize=normalize, labeler=labelers))
    lines = []
    for where, row in chunk:
        scored = dict(row)
        for col in _targets(row, where):
            heads = next(scores)
            scored[f"{col}_score"] = float(heads[-1])
            if len(model.heads) > 1:
                scored[f"{col}_scores"] = dict(zip(model.heads, heads.tolist()))
        lines.append(json.dumps(scored, ensure_ascii=False) + "\n")
    return lines


def _complete_chunks(shard: Path, resume: bool, chunk_size: int) -> int:
    """Chunks already written whole to ``shard`` (a torn last chunk is cut off); 0 and a fresh file otherwise."""
    if not resume or not shard.exists():
        shard.write_text("")
        return 0
    with shard.open("rb") as fh:
        lines = fh.read().split(b"\n")[:-1]  # the text after the last newline is a torn line
    keep = len(lines) // chunk_size
    with shard.open("wb") as fh:
        fh.writelines(line + b"\n" for line in lines[: keep * chunk_size])
    return keep


def score_rows(model: RewardModel, rows: Iterable[tuple[str, dict]], out: Path, *, normalize: str = "none",
               batch_size: int = 32, resume: bool = False, process_index: int = 0, num_processes: int = 1,
               wait=lambda: None, chunk_size: int = CHUNK) -> int:
    """Stream ``rows``, score this process's chunks into its shard, merge the shards; returns the rows written.

    ``wait`` is a barrier across the processes (``PartialState().wait_for_everyone``); the main process
    (index 0) merges. With ``resume``, chunks a previous run wrote whole are kept, not rescored; resume with
    the same ``chunk_size`` and number of processes.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    shard = out.with_name(f".{out.name}.shard-{process_index}-of-{num_processes}")
    done = shard.with_name(shard.name + ".done")
    if not (resume and done.exists()):
        done.unlink(missing_ok=True)
        skip = _complete_chunks(shard, resume, chunk_size)
        chunks = iter(lambda it=iter(rows): list(itertools.islice(it, chunk_size)), [])
        with shard.open("a") as fh:
            for k, chunk in enumerate(chunks):
                mine = k % num_processes == process_index
                if not mine or k // num_processes < skip:
                    continue
                fh.write("".join(_score_chunk(model, chunk, normalize, batch_size)))
                fh.flush()
                os.fsync(fh.fileno())
        done.write_text("ok\n")
    wait()
    n = 0
    if process_index == 0:
        shards = [out.with_name(f".{out.name}.shard-{r}-of-{num_processes}") for r in range(num_processes)]
        tmp = out.with_name(f".{out.name}.tmp")
        handles = [s.open() for s in shards]
        try:
            with tmp.open("w") as fh:
                for k in itertools.count():
                    lines = list(itertools.islice(handles[k % num_processes], chunk_size))
                    if not lines:
                        break
                    fh.writelines(lines)
                    n += len(lines)
        finally:
            for h in handles:
                h.close()
        tmp.replace(out)
        for s in shards:
            s.unlink()
            s.with_name(s.name + ".done").unlink()
    wait()
    return n
