"""Stepwise examples for process reward models: a solution cut into steps, each judged right or wrong.

A :class:`Solution` is what every stepwise format (TRL's stepwise supervision, Math-Shepherd,
PRM800K) is converted to, what a process reward model trains on, and what its evaluation
reads. A process reward model gives one probability per step, P(step is correct).

Example:
    >>> s = Solution("2+3*4?", ("3*4 = 12", "2+12 = 15", "So 15."), (True, False, False))
    >>> s.first_error, s.correct
    (1, False)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping


@dataclass(frozen=True)
class Solution:
    """One prompt and a step-by-step solution with a label per step.

    Attributes:
        prompt: the problem (already rendered to text).
        steps: the solution's steps, in order, each non-empty.
        labels: one per step, True where the step is correct.
        source: ``file:row`` where it came from, for error messages.
        meta: the row's other columns (subset, task, ...), for breakdowns.
    """

    prompt: str
    steps: tuple[str, ...]
    labels: tuple[bool, ...]
    source: str = ""
    meta: Mapping[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        assert self.steps and len(self.steps) == len(self.labels), "a solution needs one label per step"

    @property
    def first_error(self) -> int | None:
        """Index of the first wrong step; None when every step is correct (ProcessBench's -1)."""
        return next((i for i, ok in enumerate(self.labels) if not ok), None)

    @property
    def correct(self) -> bool:
        """A solution is correct when none of its steps is wrong."""
        return self.first_error is None
