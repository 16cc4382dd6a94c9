"""``rewardlab score``: add rewards to rows of (prompt, response) or (prompt, chosen, rejected).

Inputs stream through in chunks of :data:`CHUNK` rows, so files larger than memory
are fine. Under ``accelerate launch`` each of the N processes scores every N-th
chunk into its own shard file; the main process then merges the shards into one
output in input order. Every chunk is appended whole and flushed, and a shard that
finished says so, so a run that was interrupted resumes (``resume=True``) from the
last complete chunk of each shard without rescoring what is already written. The
output appears only when every row is scored (written to a temporary name, then
renamed). ``normalize="prompt_mean"`` centres each score on the mean score of the
whole file's responses to its prompt, in the merge: one pass to sum per prompt
(memory grows with the prompts, not the rows), one to write.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from rewardlab.contracts.schema import DataError
from rewardlab.data.fields import carried_name, text_field
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
            labelers.append(carried_name(row.get("labeler"), where, "labeler")
                            if model.personalized else None)
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


def _merged(shards: list[Path], chunk_size: int) -> Iterator[str]:
    """The shards' lines in input order (chunk k is in shard k mod len(shards))."""
    handles = [s.open() for s in shards]
    try:
        for k in itertools.count():
            lines = list(itertools.islice(handles[k % len(shards)], chunk_size))
            if not lines:
                return
            yield from lines
    finally:
        for h in handles:
            h.close()


def _prompt_key(prompt: str) -> bytes:
    return hashlib.blake2b(prompt.encode(), digest_size=16).digest()


def _prompt_means(lines: Iterable[str]) -> dict[bytes, np.ndarray]:
    """Each prompt's mean scores over every scored column of its rows: [aggregate, heads...], O(prompts) memory."""
    sums: dict[bytes, tuple[np.ndarray, int]] = {}
    for line in lines:
        row = json.loads(line)
        key = _prompt_key(row["prompt"])
        for col in _targets(row, ""):
            v = np.array([row[f"{col}_score"], *row.get(f"{col}_scores", {}).values()], dtype=np.float64)
            total, count = sums.get(key, (0.0, 0))
            sums[key] = (total + v, count + 1)
    return {k: total / count for k, (total, count) in sums.items()}


def _centred(line: str, means: dict[bytes, np.ndarray]) -> str:
    """A scored row with each score minus its prompt's mean (``normalize="prompt_mean"`` over the whole file)."""
    row = json.loads(line)
    mean = means[_prompt_key(row["prompt"])]
    for col in _targets(row, ""):
        row[f"{col}_score"] -= mean[0]
        if f"{col}_scores" in row:
            row[f"{col}_scores"] = {h: v - m for (h, v), m in zip(row[f"{col}_scores"].items(), mean[1:])}
    return json.dumps(row, ensure_ascii=False) + "\n"


def score_rows(model: RewardModel, rows: Iterable[tuple[str, dict]], out: Path, *, normalize: str = "none",
               batch_size: int = 32, resume: bool = False, process_index: int = 0, num_processes: int = 1,
               wait=lambda: None, chunk_size: int = CHUNK) -> int:
    """Stream ``rows``, score this process's chunks into its shard, merge the shards; returns the rows written.

    ``wait`` is a barrier across the processes (``PartialState().wait_for_everyone``); the main process
    (index 0) merges. With ``resume``, chunks a previous run wrote whole are kept, not rescored; resume with
    the same ``chunk_size`` and number of processes.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    chunk_normalize = "none" if normalize == "prompt_mean" else normalize  # centred once all rows are scored
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
                fh.write("".join(_score_chunk(model, chunk, chunk_normalize, batch_size)))
                fh.flush()
                os.fsync(fh.fileno())
        done.write_text("ok\n")
    wait()
    n = 0
    if process_index == 0:
        shards = [out.with_name(f".{out.name}.shard-{r}-of-{num_processes}") for r in range(num_processes)]
        tmp = out.with_name(f".{out.name}.tmp")
        means = _prompt_means(_merged(shards, chunk_size)) if normalize == "prompt_mean" else None
        with tmp.open("w") as fh:
            for line in _merged(shards, chunk_size):
                fh.write(line if means is None else _centred(line, means))
                n += 1
        tmp.replace(out)
        for s in shards:
            s.unlink()
            s.with_name(s.name + ".done").unlink()
    wait()
    return n
