"""Resume states without pickle: tensors in safetensors, everything else in JSON.

A state folder holds the trainable weights, the optimiser and scheduler state,
the EMA shadow, every process's RNG state and the loop position, so that a
resumed run continues exactly where the interrupted one stopped. A sharded model
(FSDP, see :mod:`rewardlab.train.sharding`) has each process write its own slices
(``trainable-<rank>.safetensors`` and so on), which only the same number of
processes can read back. Folders are
written under a temporary name and renamed when complete, so a crash never
leaves a half-written state that looks valid.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from rewardlab.models.base import readable_weights
from rewardlab.train.sharding import local, local_tensor

STATE_PREFIX = "step-"


def _flatten_optimizer(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    tensors, scalars = {}, {}
    for pid, slots in state["state"].items():
        for key, value in slots.items():
            if torch.is_tensor(value):
                tensors[f"{pid}.{key}"] = local_tensor(value)
            else:
                scalars[f"{pid}.{key}"] = value
    groups = [{k: list(v) if isinstance(v, tuple) else v for k, v in g.items()} for g in state["param_groups"]]
    return tensors, {"scalars": scalars, "param_groups": groups}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict] = {}
    for flat, value in list(tensors.items()) + list(meta["scalars"].items()):
        pid, key = flat.split(".", 1)
        state.setdefault(int(pid), {})[key] = value
    groups = [{k: tuple(v) if k == "betas" else v for k, v in g.items()} for g in meta["param_groups"]]
    return {"state": state, "param_groups": groups}


def rng_state() -> tuple[dict[str, torch.Tensor], dict]:
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda.{i}"] = s
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    py = random.getstate()
    meta = {"numpy": [kind, keys.tolist(), pos, has_gauss, gauss], "python": [py[0], list(py[1]), py[2]]}
    return tensors, meta


def set_rng_state(tensors: dict[str, torch.Tensor], meta: dict) -> None:
    torch.set_rng_state(tensors["torch"])
    cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("cuda."))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    kind, keys, pos, has_gauss, gauss = meta["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = meta["python"]
    random.setstate((version, tuple(internal), gauss_next))


def _name(stem: str, shard: int | None) -> str:
    return f"{stem}.safetensors" if shard is None else f"{stem}-{shard}.safetensors"


def save_state(folder: Path, *, trainable: dict[str, torch.Tensor], optimizer: dict, scheduler: dict,
               ema: dict[str, torch.Tensor] | None, best: dict[str, torch.Tensor] | None, loop: dict,
               shard: int | None = None, shards: int | None = None) -> None:
    """Write a resume state into ``folder`` (created): the main process's whole state, or with ``shard`` set
    (a sharded model) this process's slices; ``state.json`` comes from shard 0 (or the main process) only."""
    folder.mkdir(parents=True, exist_ok=True)
    save_file(local(trainable), folder / _name("trainable", shard))
    opt_tensors, opt_meta = _flatten_optimizer(optimizer)
    save_file(opt_tensors, folder / _name("optimizer", shard))
    if ema is not None:
        save_file(local(ema), folder / _name("ema", shard))
    if best is not None:  # the best evaluation's weights, which the final model is made of
        save_file(local(best), folder / _name("best", shard))
    if not shard:
        (folder / "state.json").write_text(json.dumps(
            {"optimizer": opt_meta, "scheduler": scheduler, "loop": loop, "shards": shards}, indent=1))


def save_rng(folder: Path, rank: int) -> None:
    """Each process writes its own RNG state (dropout differs per process)."""
    tensors, meta = rng_state()
    save_file(tensors, folder / f"rng-{rank}.safetensors")
    (folder / f"rng-{rank}.json").write_text(json.dumps(meta))


def load_state(folder: Path, rank: int, processes: int = 1) -> dict:
    """Everything :func:`save_state` and :func:`save_rng` wrote, as tensors and plain values (for a sharded state,
    ``rank``'s slices).

    Raises:
        ValueError: a sharded state read by another number of processes than wrote it.
    """
    with readable_weights(folder):
        return _load_state(folder, rank, processes)


def _load_state(folder: Path, rank: int, processes: int) -> dict:
    meta = json.loads((folder / "state.json").read_text())
    shards = meta.get("shards")
    if shards is not None and shards != processes:
        raise ValueError(f"{folder} holds a model sharded over {shards} processes (train.fsdp); resume it with "
                         f"{shards} processes, not {processes}")
    shard = rank if shards is not None else None
    ema_file, best_file = folder / _name("ema", shard), folder / _name("best", shard)
    rng_file = folder / f"rng-{rank}.safetensors"
    if not rng_file.exists():  # resumed on more processes than saved: reuse rank 0's stream
        rng_file = folder / "rng-0.safetensors"
    return {
        "trainable": load_file(folder / _name("trainable", shard)),
        "optimizer": _unflatten_optimizer(load_file(folder / _name("optimizer", shard)), meta["optimizer"]),
        "scheduler": meta["scheduler"],
        "ema": load_file(ema_file) if ema_file.exists() else None,
        "best": load_file(best_file) if best_file.exists() else None,
        "loop": meta["loop"],
        "rng": (load_file(rng_file), json.loads(rng_file.with_suffix(".json").read_text())),
    }


def state_name(step: int) -> str:
    return f"{STATE_PREFIX}{step:08d}"


def latest_state(states_dir: Path) -> Path | None:
    """The newest complete state folder (temporary ones are ignored)."""
    if not states_dir.is_dir():
        return None
    done = sorted(p for p in states_dir.iterdir() if p.name.startswith(STATE_PREFIX) and (p / "state.json").exists())
    return done[-1] if done else None


def finalize(tmp: Path, final: Path, keep: int) -> None:
    """Rename a completed temporary state into place and prune old states, oldest first."""
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    states = sorted(p for p in final.parent.iterdir() if p.name.startswith(STATE_PREFIX))
    for old in states[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
