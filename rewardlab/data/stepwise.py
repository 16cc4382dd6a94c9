"""Stepwise data for process reward models: rows → :class:`~rewardlab.contracts.steps.Solution`, with the bad-row
policy and a report.

Three row shapes, told apart by their columns (``data.columns`` renames yours first):

- TRL's stepwise supervision: ``prompt``, ``completions`` (or ``steps``): the steps, ``labels``: one boolean (or
  0 / 1) per step, True = correct;
- Math-Shepherd: ``input``, the problem and its steps, each step ending in ``data.step_tag`` (``ки``), and ``label``,
  the same text with ``+`` or ``-`` in each tag's place; the prompt is the text before ``Step 1:`` (else before the
  first step's line);
- PRM800K-style ratings: ``prompt``, ``completions`` (or ``steps``), ``ratings``: 1 good, -1 bad, 0 neutral
  (``data.neutral_step`` says which neutral is); also PRM800K's own nested rows (``question.problem`` and
  ``label.steps``), whose trajectory is each step's chosen completion (a labeler's own step counts as good) up to
  the first step no completion was chosen for, which ends it with its first -1 completion if it has one.

A bad row raises :class:`~rewardlab.contracts.schema.DataError` naming file, row and field, or is skipped and
counted under ``data.on_bad_row=skip``.

Example:
    >>> opts = StepOptions()
    >>> s = solution_from_row({"prompt": "2+2?", "completions": ["2+2 = 5", "So 5."], "labels": [0, 0]}, "f:1", opts)
    >>> s.steps, s.labels, s.first_error
    (('2+2 = 5', 'So 5.'), (False, False), 0)
    >>> s = solution_from_row({"input": "1+1? Step 1: 1+1 = 2 ки\\nStep 2: Done. ки",
    ...                        "label": "1+1? Step 1: 1+1 = 2 +\\nStep 2: Done. -"}, "f:2", opts)
    >>> s.prompt, s.steps, s.labels
    ('1+1?', ('Step 1: 1+1 = 2', 'Step 2: Done.'), (True, False))
"""

from __future__ import annotations

import itertools
import logging
import re
from dataclasses import dataclass

import numpy as np

from rewardlab.config import DataConfig
from rewardlab.contracts.schema import DataError, unicode_problem
from rewardlab.contracts.steps import Solution
from rewardlab.data.fields import FormatContext, list_field, text_field
from rewardlab.data.formats import detect_format
from rewardlab.data.load import LoadReport, _map_columns
from rewardlab.data.sources import read_rows

log = logging.getLogger(__name__)
STEPWISE = "stepwise"  # the data.format name


@dataclass(frozen=True)
class StepOptions:
    """What a row needs from the config: the Math-Shepherd step tag and what a neutral (0) rating counts as."""

    step_tag: str = "ки"
    neutral_step: str = "good"

    @classmethod
    def from_data_config(cls, cfg: DataConfig) -> "StepOptions":
        return cls(step_tag=cfg.step_tag, neutral_step=cfg.neutral_step)


# ----------------------------------------------------------------------------- fields


def step_texts(values: list, where: str, name: str) -> tuple[str, ...]:
    """Non-empty step texts; an empty list, a non-text or a blank step is a DataError naming ``name[i]``."""
    if not values:
        raise DataError(where, name, "no steps: a solution needs at least one")
    for i, step in enumerate(values):
        if not isinstance(step, str):
            raise DataError(where, f"{name}[{i}]", f"expected text, got {type(step).__name__} {step!r:.60}")
        if not step.strip():
            raise DataError(where, f"{name}[{i}]", "empty step")
        if problem := unicode_problem(step):
            raise DataError(where, f"{name}[{i}]", problem)
    return tuple(values)


def step_label(value: object, where: str, name: str) -> bool:
    """A boolean label: true / false, or 1 / 0 (also 1.0 / 0.0)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    hint = " (PRM800K-style -1 / 0 / 1 ratings go in a 'ratings' column)" if value == -1 else ""
    raise DataError(where, name, f"expected a boolean or 0 / 1, got {value!r:.60}{hint}")


def step_rating(value: object, where: str, name: str, neutral: str) -> bool:
    """A -1 / 0 / 1 rating as a label: 1 good, -1 bad, 0 as ``neutral`` says."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value not in (-1, 0, 1):
        raise DataError(where, name, f"expected a rating -1, 0 or 1, got {value!r:.60}")
    return value == 1 or (value == 0 and neutral == "good")


def _aligned(steps: tuple[str, ...], labels: list, where: str, steps_name: str, labels_name: str) -> None:
    if len(labels) != len(steps):
        raise DataError(where, labels_name, f"has {len(labels)} values for {len(steps)} steps in {steps_name!r}")


def _meta(row: dict, used: set[str]) -> dict:
    return {k: v for k, v in row.items() if k not in used}


# ----------------------------------------------------------------------------- row shapes


def from_step_lists(row: dict, where: str, opts: StepOptions) -> Solution:
    """``prompt``, ``completions`` or ``steps``, and ``labels`` (booleans, 0 / 1) or ``ratings`` (-1 / 0 / 1)."""
    prompt = text_field(row, "prompt", where)
    steps_name = "completions" if "completions" in row else "steps"
    steps = step_texts(list_field(row, steps_name, where), where, steps_name)
    if "labels" in row:
        values = list_field(row, "labels", where)
        _aligned(steps, values, where, steps_name, "labels")
        labels = tuple(step_label(v, where, f"labels[{i}]") for i, v in enumerate(values))
    else:
        values = list_field(row, "ratings", where)
        _aligned(steps, values, where, steps_name, "ratings")
        labels = tuple(step_rating(v, where, f"ratings[{i}]", opts.neutral_step) for i, v in enumerate(values))
    used = {"prompt", steps_name, "labels", "ratings"}
    return Solution(prompt, steps, labels, source=where, meta=_meta(row, used))


_FIRST_STEP = re.compile(r"[Ss]tep 1\s*:")


def split_prompt(text: str, where: str) -> tuple[str, str]:
    """Math-Shepherd's first chunk (problem, then the first step) as (prompt, first step): the step starts at
    ``Step 1:``, else after the last line break."""
    found = _FIRST_STEP.search(text)
    cut = found.start() if found else text.rstrip().rfind("\n") + 1
    prompt, step = text[:cut].strip(), text[cut:].strip()
    if not prompt or not step:
        raise DataError(where, "input", "cannot tell the problem from the first step: expected 'Step 1:' or a line "
                        "break between them")
    return prompt, step


def from_math_shepherd(row: dict, where: str, opts: StepOptions) -> Solution:
    """``input`` with a step tag after each step, ``label`` the same text with ``+`` / ``-`` for each tag."""
    text, marked = text_field(row, "input", where), text_field(row, "label", where)
    chunks = text.split(opts.step_tag)
    if len(chunks) < 2:
        raise DataError(where, "input", f"no steps: no step tag {opts.step_tag!r} in the text (data.step_tag)")
    if chunks[-1].strip():
        raise DataError(where, "input", f"text after the last step tag {opts.step_tag!r}: every step must end with "
                        "the tag")
    labels, at = [], 0
    for k, chunk in enumerate(chunks):
        if marked[at: at + len(chunk)] != chunk:
            raise DataError(where, "label", f"differs from 'input' near character {at}: it must be the same text with "
                            f"+ or - in place of each {opts.step_tag!r}")
        at += len(chunk)
        if k < len(chunks) - 1:
            if marked[at: at + 1] not in ("+", "-"):
                raise DataError(where, "label", f"step {k + 1}: expected + or - in place of the step tag, got "
                                f"{marked[at: at + 1]!r}")
            labels.append(marked[at] == "+")
            at += 1
    if at != len(marked):
        raise DataError(where, "label", "is longer than 'input' with its tags replaced")
    prompt, first = split_prompt(chunks[0], where)
    steps = step_texts([first, *(c.strip() for c in chunks[1:-1])], where, "input")
    return Solution(prompt, steps, tuple(labels), source=where, meta=_meta(row, {"input", "label"}))


def _prm800k_steps(label: dict, where: str) -> tuple[list[str], list[object]]:
    """PRM800K's trajectory: (step texts, ratings), a human-written step rated 1."""
    texts: list[str] = []
    ratings: list[object] = []
    for i, step in enumerate(list_field(label, "steps", where)):
        name = f"label.steps[{i}]"
        if not isinstance(step, dict):
            raise DataError(where, name, f"expected an object, got {type(step).__name__}")
        completions, chosen = step.get("completions") or [], step.get("chosen_completion")
        human = step.get("human_completion")
        if chosen is not None:
            if not isinstance(chosen, int) or not 0 <= chosen < len(completions):
                raise DataError(where, f"{name}.chosen_completion", f"{chosen!r} names no completion")
            texts.append(completions[chosen].get("text"))
            ratings.append(completions[chosen].get("rating"))
        elif human is not None:
            texts.append(human.get("text") if isinstance(human, dict) else human)
            ratings.append(1)
        else:  # labelling ended here: with the first wrong completion, if there is one
            wrong = [c for c in completions if isinstance(c, dict) and c.get("rating") == -1]
            if wrong:
                texts.append(wrong[0].get("text"))
                ratings.append(-1)
            break
    return texts, ratings


def from_prm800k(row: dict, where: str, opts: StepOptions) -> Solution:
    """PRM800K's nested rows: ``question.problem`` and ``label.steps``."""
    question = row.get("question")
    if not isinstance(question, dict):
        raise DataError(where, "question", "expected an object with the 'problem'")
    prompt = text_field(question, "problem", where)
    texts, ratings = _prm800k_steps(row["label"], where)
    steps = step_texts(texts, where, "label.steps")
    labels = tuple(step_rating(v, where, f"label.steps[{i}].rating", opts.neutral_step) for i, v in enumerate(ratings))
    return Solution(prompt, steps, labels, source=where, meta=_meta(row, {"question", "label"}))


def solution_from_row(row: dict, where: str, opts: StepOptions) -> Solution:
    """One row of any stepwise shape as a :class:`Solution` (the shape is told by its columns)."""
    if isinstance(row.get("label"), dict):
        return from_prm800k(row, where, opts)
    if "input" in row:
        return from_math_shepherd(row, where, opts)
    if not {"completions", "steps"} & set(row):
        raise DataError(where, "completions", "missing column: stepwise rows hold prompt / completions / labels "
                        "(or ratings), or Math-Shepherd's input / label (map yours with data.columns)")
    if not {"labels", "ratings"} & set(row):
        raise DataError(where, "labels", "missing column: one label per step (labels: booleans; ratings: -1 / 0 / 1)")
    return from_step_lists(row, where, opts)


def from_stepwise(row: dict, where: str, ctx: FormatContext):
    """The ``stepwise`` entry of the comparison formats: its rows are solutions with per-step labels, which train
    and evaluate process reward models (``rewardlab train`` picks ``model.kind=prm`` for them) and are read by
    :func:`load_solutions`; as comparisons they are an error."""
    raise DataError(where, None, "a stepwise row (a solution with a label per step) is no comparison: it trains a "
                    "process reward model (model.kind=prm), which `rewardlab train` picks for stepwise data")


# ----------------------------------------------------------------------------- loading


@dataclass
class StepLoadReport(LoadReport):
    """A :class:`LoadReport` with the solutions and steps read."""

    solutions: int = 0
    steps: int = 0
    wrong_steps: int = 0

    def summary(self) -> str:
        text = (f"{self.source}: {self.rows} rows -> {self.solutions} solutions, {self.steps} steps "
                f"({self.wrong_steps} wrong)")
        if self.skipped:
            text += f"; skipped {self.skipped} bad rows, e.g. " + " | ".join(self.reasons)
        return text


def is_stepwise(cfg: DataConfig, source: str | None = None) -> bool:
    """Whether ``source`` (default ``data.train``) holds stepwise data: ``data.format=stepwise``, or with ``auto`` its
    first row looks like one (a source it cannot read or tell is left to the loaders to report)."""
    if cfg.format != "auto":
        return cfg.format == STEPWISE
    try:
        first = next(read_rows(source or cfg.train, hf_split=cfg.hf_split, limit=1), None)
        return first is not None and detect_format(_map_columns(first[1], cfg.columns), first[0]) == STEPWISE
    except (DataError, ValueError, OSError):
        return False


def load_solutions(source: str, cfg: DataConfig) -> tuple[list[Solution], StepLoadReport]:
    """Every solution of ``source`` and a report of what was read and skipped (``data.on_bad_row``)."""
    report, opts, out = StepLoadReport(source=source), StepOptions.from_data_config(cfg), []
    rows = read_rows(source, hf_split=cfg.hf_split, limit=cfg.max_examples)
    first = next(rows, None)
    if first is None:
        raise DataError(source, None, "no rows")
    if cfg.format not in ("auto", STEPWISE):
        raise ValueError(f"data.format={cfg.format} holds comparisons; process reward models read stepwise data "
                         "(data.format=stepwise or auto)")
    for where, raw in itertools.chain([first], rows):
        report.rows += 1
        try:
            solution = solution_from_row(_map_columns(raw, cfg.columns), where, opts)
        except DataError as err:
            if cfg.on_bad_row == "error":
                raise
            report.note_skip(err)
            continue
        out.append(solution)
        report.solutions += 1
        report.steps += len(solution.steps)
        report.wrong_steps += len(solution.steps) - sum(solution.labels)
    if not out:
        raise DataError(source, None, "no usable solutions: " + report.summary())
    if report.skipped:
        log.warning(report.summary())
    return out, report


def split_solutions(solutions: list[Solution], eval_fraction: float, *, split_by: str = "prompt", seed: int = 0
                    ) -> tuple[list[Solution], list[Solution]]:
    """(train, eval) with every solution of a prompt (``split_by=prompt``, or a ``meta`` column; ``pair``: each
    solution alone) on one side; groups are shuffled with ``seed`` and held out until ``eval_fraction`` is."""
    keys = [s.source if split_by == "pair" else s.prompt if split_by == "prompt" else s.meta.get(split_by)
            for s in solutions]
    if split_by not in ("pair", "prompt") and all(k is None for k in keys):
        raise ValueError(f"cannot split by {split_by!r}: no solution has that column (data.split_by)")
    groups = sorted({repr(k) for k in keys})
    held: set[str] = set()
    count, target = 0, eval_fraction * len(solutions)
    sizes = {g: 0 for g in groups}
    for k in keys:
        sizes[repr(k)] += 1
    for i in np.random.default_rng(seed).permutation(len(groups)):
        if count >= target:
            break
        held.add(groups[i])
        count += sizes[groups[i]]
    return ([s for s, k in zip(solutions, keys) if repr(k) not in held],
            [s for s, k in zip(solutions, keys) if repr(k) in held])
