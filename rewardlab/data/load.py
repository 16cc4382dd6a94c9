"""Source → validated comparisons, with the bad-row policy and a report of what was dropped."""

from __future__ import annotations

import hashlib
import itertools
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

from rewardlab.config import DataConfig
from rewardlab.contracts.schema import Comparison, DataError, response_key
from rewardlab.data.fields import FormatContext, Renderer, render_plain
from rewardlab.data.formats import GROUPED_FORMATS, detect_format, get_format
from rewardlab.data.item_ratings import group_rated_items, infer_attributes, rated_item
from rewardlab.data.sources import DEFAULT_DATA, read_rows

log = logging.getLogger(__name__)
MAX_REASONS = 5


@dataclass
class LoadReport:
    """What happened to every row of a source: nothing is dropped without being counted here."""

    source: str
    rows: int = 0
    comparisons: int = 0
    pairs: int = 0
    skipped: int = 0
    no_preference: int = 0
    repeated: int = 0  # pairs judging the same prompt and responses as an earlier row (kept: repeated="keep")
    reasons: list[str] = field(default_factory=list)

    def note_skip(self, err: DataError) -> None:
        self.skipped += 1
        if len(self.reasons) < MAX_REASONS:
            self.reasons.append(str(err))

    def summary(self) -> str:
        text = f"{self.source}: {self.rows} rows -> {self.comparisons} comparisons, {self.pairs} pairs"
        if self.no_preference:
            text += f"; {self.no_preference} rows had no scores far enough apart to form a pair"
        if self.repeated:
            text += f"; {self.repeated} pairs repeat an earlier one (kept: separate judgements)"
        if self.skipped:
            text += f"; skipped {self.skipped} bad rows, e.g. " + " | ".join(self.reasons)
        return text


def _map_columns(row: dict, columns: dict) -> dict:
    """Rename the user's columns to ours: ``columns`` maps our name -> their name."""
    if not columns:
        return row
    out = {k: v for k, v in row.items() if k not in columns.values()}
    for ours, theirs in columns.items():
        if theirs in row:
            out[ours] = row[theirs]
    return out


def _pair_keys(comparison: Comparison) -> list[bytes]:
    """One identity per judgement: the same two responses may be judged per attribute and per labeler.

    A 16-byte digest keeps duplicate detection cheap on data that does not fit in memory.
    """
    return [hashlib.blake2b("\x1f".join((pair.prompt, response_key(pair.chosen), response_key(pair.rejected),
                                         str(pair.attribute), str(pair.labeler))).encode(), digest_size=16).digest()
            for pair in comparison.iter_pairs()]


def _context(source: str, cfg: DataConfig, render_chat: Renderer, first_row: dict) -> FormatContext:
    base_dir = None if source.startswith("hf:") or source == DEFAULT_DATA else Path(source).resolve().parent
    attributes = tuple(cfg.attributes) or infer_attributes(first_row)
    return FormatContext(min_rating_diff=cfg.min_rating_diff, assistant_marker=cfg.assistant_marker,
                         render_chat=render_chat, base_dir=base_dir, attributes=attributes,
                         rating_range=tuple(cfg.rating_range), aggregate_pairs=cfg.aggregate_pairs,
                         extra={"winner_codes": dict(cfg.winner_codes)})


def _candidates(rows: Iterable[tuple[str, dict]], fmt: str, ctx: FormatContext, report: LoadReport
                ) -> Iterator[tuple[str, Comparison | None | DataError]]:
    """(location, comparison / None for no preference / the row's DataError) for each row or group."""
    if fmt in GROUPED_FORMATS:
        items = []
        for where, row in rows:
            report.rows += 1
            try:
                items.append(rated_item(row, where, ctx))
            except DataError as err:
                yield where, err
        for result in group_rated_items(items, ctx):
            yield (result.source if isinstance(result, Comparison) else ""), result
        return
    convert = get_format(fmt)
    for where, row in rows:
        report.rows += 1
        try:
            yield where, convert(row, where, ctx)
        except DataError as err:
            yield where, err


def iter_comparisons(
    source: str, cfg: DataConfig, report: LoadReport, *, render_chat: Renderer = render_plain,
    repeated: str = "refuse",
) -> Iterator[Comparison]:
    """Stream ``source`` as validated :class:`Comparison` objects, counting every row in ``report``.

    Invalid rows raise :class:`DataError` (``on_bad_row='error'``) or are skipped and
    counted (``'skip'``). A repeated pair (same prompt, chosen and rejected as an
    earlier row) counts as an invalid row with ``repeated="refuse"`` (training: the same
    example twice); with ``"keep"`` (evaluation: a separate judgement of the same two
    responses) it is kept and counted in ``report.repeated``.
    """
    if repeated not in ("refuse", "keep"):
        raise ValueError(f"repeated={repeated!r} must be 'refuse' or 'keep'")
    rows = ((where, _map_columns(raw, cfg.columns))
            for where, raw in read_rows(source, hf_split=cfg.hf_split, limit=cfg.max_examples))
    first = next(rows, None)
    if first is None:
        raise DataError(source, None, "no rows")
    rows = itertools.chain([first], rows)
    fmt = cfg.format if cfg.format != "auto" else detect_format(first[1], first[0])
    ctx = _context(source, cfg, render_chat, first[1])
    seen: dict[bytes, str] = {}
    for where, comparison in _candidates(rows, fmt, ctx, report):
        try:
            if isinstance(comparison, DataError):
                raise comparison
            if comparison is None:
                report.no_preference += 1
                continue
            keys = _pair_keys(comparison)
            repeats = [key for key in keys if key in seen]
            if repeats and repeated == "refuse":
                raise DataError(where, None, f"duplicate of the pair at {seen[repeats[0]]}")
            report.repeated += len(repeats)
            seen.update((key, where) for key in keys if key not in seen)
        except DataError as err:
            if cfg.on_bad_row == "error":
                raise err from None
            report.note_skip(err)
            continue
        report.comparisons += 1
        report.pairs += len(comparison.pairs)
        yield comparison
    if report.comparisons == 0:
        raise DataError(source, None, "no usable preference pairs: " + report.summary())
    if report.skipped:
        log.warning(report.summary())


def load_comparisons(
    source: str, cfg: DataConfig, *, render_chat: Renderer = render_plain, repeated: str = "refuse"
) -> tuple[list[Comparison], LoadReport]:
    """All comparisons of ``source`` in a list, and the :class:`LoadReport` (see :func:`iter_comparisons`)."""
    report = LoadReport(source=source)
    return list(iter_comparisons(source, cfg, report, render_chat=render_chat, repeated=repeated)), report
