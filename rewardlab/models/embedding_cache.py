"""An on-disk cache of frozen-tower outputs, so training epochs never run the towers.

Layout: ``ROOT/<namespace digest>/`` holds ``namespace.json`` (what the entries were
computed with: backbone, a digest of the tower's weights, preprocessing) and
shards ``shard-<id>.safetensors``, each with a JSON index ``shard-<id>.json`` of
the entries it holds. A shard and its index are written to temporary names and
renamed, index last, so a crash or two processes filling one cache at once never
leave a half-written entry visible: the worst case is an entry computed twice.

An entry is a small dict of tensors (e.g. ``tokens`` (T, D) and ``pooled`` (D,)) under
a string key such as ``image/<content digest>/v0``. Entries are stored as float16:
they are read back through this cache everywhere (training, evaluation, scoring),
and features computed on the fly are rounded the same way, so every path sees the
same numbers.

Example::

    cache = EmbeddingCache(Path("~/.cache/rewardlab/embeddings"), {"backbone": "dual", ...})
    fill(cache, keys, compute=lambda batch: {k: {...} for k in batch}, batch_size=32)
    entries = cache.get(keys)
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from pathlib import Path
from typing import Callable, Sequence

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from tqdm.auto import tqdm

STORE_DTYPE = torch.float16
SHARD_ENTRIES = 512  # entries per shard written by one fill


def store_rounding(t: torch.Tensor) -> torch.Tensor:
    """What a float tensor becomes after a round trip through the cache (float16, back to float32)."""
    return t.to(STORE_DTYPE).float()


class EmbeddingCache:
    """Entries keyed by strings, stored in safetensors shards under a namespace of ``root``.

    Args:
        root: the cache folder (shared by every backbone and setting).
        namespace: everything the entries depend on besides their key; its digest names the subfolder.
        writable: ``False`` never writes (scoring); misses are then computed and kept in memory only.
    """

    def __init__(self, root: str | Path, namespace: dict, *, writable: bool = True):
        text = json.dumps(namespace, sort_keys=True)
        self.dir = Path(root).expanduser() / hashlib.blake2b(text.encode(), digest_size=10).hexdigest()
        self.namespace, self.writable = namespace, writable
        self._where: dict[str, str] = {}  # entry key -> shard name
        self._indexed: set[str] = set()  # shards whose index was read
        self._readers: dict[str, object] = {}  # open shards (memory-mapped)
        self._names: dict[str, dict[str, list[str]]] = {}  # shard -> entry key -> its field names
        self._memory: dict[str, dict[str, torch.Tensor]] = {}  # misses of a read-only cache
        if writable:
            self.dir.mkdir(parents=True, exist_ok=True)
            meta = self.dir / "namespace.json"
            if not meta.exists():
                _write_atomically(meta, text.encode())
        self.refresh()

    def refresh(self) -> None:
        """Re-read the shard indexes (another process may have added shards)."""
        if not self.dir.is_dir():
            return
        for index in sorted(self.dir.glob("shard-*.json")):
            shard = index.stem
            if shard in self._indexed or not (self.dir / f"{shard}.safetensors").exists():
                continue
            self._indexed.add(shard)
            for key in json.loads(index.read_text()):
                self._where.setdefault(key, shard)

    def __contains__(self, key: str) -> bool:
        return key in self._where or key in self._memory

    def __len__(self) -> int:
        return len(set(self._where) | set(self._memory))

    def missing(self, keys: Sequence[str]) -> list[str]:
        """The keys not cached yet, each once, in order."""
        return [k for k in dict.fromkeys(keys) if k not in self]

    def get(self, keys: Sequence[str]) -> list[dict[str, torch.Tensor]]:
        """The entries of ``keys`` (float32 tensors); raises ``KeyError`` for a missing one."""
        out = []
        for key in keys:
            if key in self._memory:
                out.append(self._memory[key])
                continue
            shard = self._where[key]
            if shard not in self._readers:
                self._readers[shard] = self._open(shard)
            reader = self._readers[shard]
            names = self._names.setdefault(shard, {})
            if not names:
                for full in reader.keys():
                    entry, _, field = full.rpartition("::")
                    names.setdefault(entry, []).append(field)
            out.append({field: reader.get_tensor(f"{key}::{field}").float() for field in names[key]})
        return out

    def _open(self, shard: str):
        path = self.dir / f"{shard}.safetensors"
        try:
            return safe_open(str(path), framework="pt")
        except SafetensorError as err:
            raise ValueError(f"{path}: a cached embedding shard is damaged ({err}); delete {self.dir} and it is "
                             "computed again") from None

    def put(self, entries: dict[str, dict[str, torch.Tensor]]) -> None:
        """Store entries: a new shard when writable, else in memory for this process only."""
        if not entries:
            return
        if not self.writable:
            with torch.inference_mode(False):  # plain tensors, usable outside inference mode too
                self._memory.update({k: {f: store_rounding(t.clone()) for f, t in v.items()}
                                     for k, v in entries.items()})
            return
        shard = f"shard-{uuid.uuid4().hex[:16]}"
        tensors = {f"{key}::{field}": t.detach().to(STORE_DTYPE).contiguous().cpu()
                   for key, fields in entries.items() for field, t in fields.items()}
        tmp = self.dir / f".{shard}.safetensors.tmp"
        save_file(tensors, str(tmp), metadata={"format": "pt"})
        os.replace(tmp, self.dir / f"{shard}.safetensors")
        _write_atomically(self.dir / f"{shard}.json", json.dumps(sorted(entries)).encode())
        self._indexed.add(shard)
        for key in entries:
            self._where[key] = shard


def _write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def fill(cache: EmbeddingCache, keys: Sequence[str],
         compute: Callable[[list[str]], dict[str, dict[str, torch.Tensor]]], *, batch_size: int,
         desc: str = "caching", progress: bool = True) -> int:
    """Compute and store every missing key, ``batch_size`` at a time, under ``torch.inference_mode``.

    ``compute(keys)`` returns ``{key: {field: tensor}}`` for a batch. Returns how many were computed.
    """
    todo = cache.missing(keys)
    if not todo:
        return 0
    pending: dict[str, dict[str, torch.Tensor]] = {}
    with torch.inference_mode(), tqdm(total=len(todo), desc=desc, unit="item", disable=not progress,
                                      dynamic_ncols=True) as bar:
        for start in range(0, len(todo), batch_size):
            batch = todo[start: start + batch_size]
            pending.update(compute(batch))
            bar.update(len(batch))
            if len(pending) >= SHARD_ENTRIES:
                cache.put(pending)
                pending = {}
    cache.put(pending)
    return len(todo)
