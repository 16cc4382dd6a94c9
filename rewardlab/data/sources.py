"""Read raw rows from files or the Hugging Face hub.

Each source yields ``(location, row)`` where ``location`` is ``"file:row"``
(1-based line for JSONL, data row for CSV, index for JSON/Parquet/hub) so that
every later error can say exactly where the bad record is.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import zlib
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Iterator

from rewardlab.contracts.schema import DataError
from rewardlab.data.label_tables import read_store_rows, store_url

Row = dict
DEFAULT_DATA = "default"
_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")


def default_data_path() -> Path:
    """The embedded default data set (written for this project; ships with the package)."""
    return Path(str(resources.files("rewardlab.data") / "default_pairs.jsonl"))


def _open_binary(path: Path) -> io.BufferedIOBase:
    return gzip.open(path, "rb") if path.suffix == ".gz" else path.open("rb")


@contextmanager
def _unpacking(path: Path) -> Iterator[None]:
    """A file named .gz that is not gzip (or is cut short) fails as a DataError naming it."""
    try:
        yield
    except (gzip.BadGzipFile, EOFError, zlib.error) as err:
        raise DataError(str(path), None, f"not a readable gzip file ({err})") from None


def _decode(data: bytes, path: Path, offset: int) -> str:
    """UTF-8 text (the byte-order mark that Windows tools write at the start of a file dropped), or a
    DataError naming the file and the byte offset of the first bad byte."""
    try:
        return data.decode("utf-8-sig" if offset == 0 else "utf-8")
    except UnicodeDecodeError as err:
        at = offset + err.start
        kind = " (uncompressed)" if path.suffix == ".gz" else ""
        raise DataError(str(path), None, f"not UTF-8 text: byte 0x{data[err.start]:02x} at byte offset {at}{kind} "
                        "cannot be decoded; is this a binary file, or text in another encoding?") from None


def text_lines(path: Path) -> Iterator[str]:
    """The file's lines as text, decoded one by one so an error can name its byte offset."""
    offset = 0
    with _unpacking(path), _open_binary(path) as fh:
        for raw in fh:
            yield _decode(raw, path, offset)
            offset += len(raw)


def _kind(path: Path) -> str:
    name = path.name.lower().removesuffix(".gz")
    for suffix in _SUFFIXES:
        if name.endswith(suffix):
            return suffix
    raise DataError(str(path), None, f"unknown file type; use one of {', '.join(_SUFFIXES)} (optionally .gz)")


def _read_jsonl(path: Path) -> Iterator[tuple[str, Row]]:
    for line_no, line in enumerate(text_lines(path), start=1):
        if not line.strip():
            continue
        where = f"{path}:{line_no}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(where, None, f"not valid JSON ({err.msg} at column {err.colno})") from None
        if not isinstance(row, dict):
            raise DataError(where, None, f"expected a JSON object, got {type(row).__name__}")
        yield where, row


def _read_json(path: Path) -> Iterator[tuple[str, Row]]:
    with _unpacking(path), _open_binary(path) as fh:
        text = _decode(fh.read(), path, 0)
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}:{err.lineno}", None, f"not valid JSON ({err.msg})") from None
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]
    if not isinstance(data, list):
        raise DataError(str(path), None, "expected a JSON list of objects (or {\"data\": [...]})")
    for i, row in enumerate(data):
        if not isinstance(row, dict):
            raise DataError(f"{path}:{i}", None, f"expected a JSON object, got {type(row).__name__}")
        yield f"{path}:{i}", row


def _read_csv(path: Path) -> Iterator[tuple[str, Row]]:
    reader = csv.DictReader(text_lines(path))
    if reader.fieldnames is None:
        return
    for i, row in enumerate(reader, start=2):  # line 1 is the header
        if None in row:
            raise DataError(f"{path}:{i}", None, "more values than header columns")
        yield f"{path}:{i}", {k: _json_cell(v) for k, v in row.items()}


def _json_cell(value: str | None) -> object:
    """CSV cells holding JSON lists (rankings, ratings) are decoded; other text stays text."""
    if value is not None and value[:1] in "[{":
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            pass
    return value


def _read_parquet(path: Path) -> Iterator[tuple[str, Row]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as err:
        raise DataError(str(path), None, f"not a readable Parquet file ({err})") from None
    for i, row in enumerate(table.to_pylist()):
        yield f"{path}:{i}", row


def _read_hub(name: str, split: str) -> Iterator[tuple[str, Row]]:
    try:
        import datasets
    except ImportError:
        raise ValueError("reading 'hf:' sources needs the datasets package: pip install 'rewardlab[hub]'") from None
    dataset_name, _, config_name = name.partition(":")
    ds = datasets.load_dataset(dataset_name, config_name or None, split=split)
    for i, row in enumerate(ds):
        yield f"hf:{name}[{split}]:{i}", dict(row)


_READERS = {".jsonl": _read_jsonl, ".json": _read_json, ".csv": _read_csv, ".parquet": _read_parquet}


def _read_folder(folder: Path) -> Iterator[tuple[str, Row]]:
    """Every ``dataset.json`` (or .jsonl / .csv / .parquet) below ``folder``, in path order (LLMBar's layout:
    one file per subset folder); each row located in its own file."""
    files = sorted(p for p in folder.rglob("dataset.*") if p.is_file() and p.name.lower().removesuffix(".gz")
                   .removeprefix("dataset") in _SUFFIXES)
    if not files:
        raise DataError(str(folder), None, "a folder is read as every dataset.json below it (LLMBar's layout); "
                        "there is none here")
    for path in files:
        yield from _READERS[_kind(path)](path)


def read_rows(source: str, *, hf_split: str = "train", limit: int | None = None) -> Iterator[tuple[str, Row]]:
    """Yield ``(location, row)`` from a file path, a folder (every ``dataset.json`` below it, as LLMBar ships),
    ``hf:NAME[:CONFIG]``, ``default`` or a label store
    (``.sqlite`` / ``sqlite:PATH`` / ``postgresql://...``, see :mod:`rewardlab.data.label_tables`)."""
    if source.startswith("hf:"):
        rows = _read_hub(source[3:], hf_split)
    elif store_url(source) is not None:  # a `rewardlab label` store: its rankings
        rows = read_store_rows(source)
    else:
        path = default_data_path() if source == DEFAULT_DATA else Path(source)
        if path.is_dir():
            rows = _read_folder(path)
        elif not path.is_file():
            raise DataError(str(path), None, "file does not exist")
        else:
            rows = _READERS[_kind(path)](path)
    for n, item in enumerate(rows):
        if limit is not None and n >= limit:
            return
        yield item
