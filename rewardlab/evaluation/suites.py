"""``rewardlab eval --suite NAME``: a known benchmark by name, downloaded from the hub when online; offline,
the error says where to get its files and which path to pass instead. Also where an evaluation is written
when no ``--out`` is given (one folder per data set, so a second one never overwrites the first)."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from rewardlab.data.benchmarks import BENCHMARKS, Benchmark
from rewardlab.data.sources import read_rows


def suite(name: str) -> Benchmark:
    """The known benchmark ``name``; ``ValueError`` lists the valid names."""
    if name not in BENCHMARKS:
        raise ValueError(f"unknown suite {name!r}; known: {', '.join(BENCHMARKS)}")
    return BENCHMARKS[name]


def open_suite(name: str) -> Benchmark:
    """The benchmark ``name``, its hub copy reachable (the first row read, so the download happens here).

    Raises:
        ValueError: no hub copy, or it cannot be downloaded (offline, ``datasets`` missing, hub refused):
            the message names the error, where to get the files and the ``--data`` path to pass.
    """
    b = suite(name)
    if b.source is None:
        raise ValueError(f"--suite {name}: {b.title} has no hub copy that `datasets` can load; {b.offline} "
                         f"with --data (and --format {name})")
    try:
        next(read_rows(b.source, hf_split=b.split, limit=1), None)
    except Exception as err:  # noqa: BLE001  offline, requests / huggingface_hub / datasets raise their own kinds
        raise ValueError(f"--suite {name}: could not read {b.source} ({type(err).__name__}: {err}). Offline, "
                         f"{b.offline} with --data (and --format {name})") from None
    return b


def data_name(data: str) -> str:
    """A folder name for a data set: the suite or hub name, or the file's (folder's) name without suffix."""
    if data.startswith("hf:"):
        stem = data[3:]
    else:
        path = Path(data)
        stem = path.name if path.is_dir() else path.name.split(".")[0]
    return re.sub(r"[^A-Za-z0-9_.-]+", "--", stem).strip("-.") or "data"


def default_eval_folder(base: Path, data: str) -> Path:
    """``base/<data name>``; where that folder holds the evaluation of another data set with the same name,
    ``base/<data name>-<hash of the data's path>``, so no evaluation overwrites one of other data."""
    folder = base / data_name(data)
    written = [f for f in (folder / "metrics.json", folder / "cv_metrics.json") if f.is_file()]
    try:
        previous = json.loads(written[0].read_text()).get("data") if written else None
    except (OSError, ValueError):
        previous = None
    if previous in (None, data):
        return folder
    return base / f"{folder.name}-{hashlib.sha1(data.encode()).hexdigest()[:8]}"
