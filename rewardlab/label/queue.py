"""Which prompt a labeler sees next: their queue (the order they meet the prompts) and the pick from it.

A queue is a list of item numbers. :func:`labeler_queue` builds it: the candidates in file order, or (with
``shuffle``, which ``per_prompt`` implies) in an order of this labeler's own, seeded by their name, so that
with ``per_prompt`` early prompts do not take all the labels; known-answer check items are mixed in, one
after every ``check_every`` prompts. :func:`pick_next` walks it. Another way to order the queue (by the
reward model's uncertainty, by disagreement: :mod:`rewardlab.label.selection`) is passed in as ``order``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class Assignment:
    """Who sees which prompt, and in what order."""

    per_prompt: int | None = None  # show each prompt to at most this many labelers (None: to everyone)
    shuffle: bool = False          # each labeler meets the prompts in an order of their own
    check_every: int = 10          # one known-answer check item after every this many prompts

    def __post_init__(self):
        if self.per_prompt is not None and (isinstance(self.per_prompt, bool) or not isinstance(
                self.per_prompt, int) or self.per_prompt < 1):
            raise ValueError(f"--per-prompt {self.per_prompt!r} must be an integer >= 1 (labelers per prompt)")
        if isinstance(self.check_every, bool) or not isinstance(self.check_every, int) or self.check_every < 1:
            raise ValueError(f"--check-every {self.check_every!r} must be an integer >= 1")

    @property
    def shuffled(self) -> bool:
        return self.shuffle or self.per_prompt is not None


def labeler_queue(labeler: str, prompts: int, checks: list[int], assignment: Assignment,
                  order: list[int] | None = None) -> list[int]:
    """Item numbers 0..prompts-1 in the order ``labeler`` meets them, with the check items mixed in.

    ``order`` (from ``--select``, :mod:`rewardlab.label.selection`) replaces the file's order and the shuffle.

    >>> labeler_queue("ann", 4, [4], Assignment(check_every=2))
    [0, 1, 4, 2, 3]
    """
    if order is not None:
        order = list(order)
    else:
        order = list(range(prompts))
        if assignment.shuffled:
            random.Random(f"queue\x00{labeler}").shuffle(order)
    check_order = list(checks)
    random.Random(f"checks\x00{labeler}").shuffle(check_order)
    queue: list[int] = []
    for n, item in enumerate(order, 1):
        queue.append(item)
        if check_order and n % assignment.check_every == 0:
            queue.append(check_order.pop())
    return queue


def _rotated(queue: list[int], after: int) -> list[int]:
    """The queue from just after ``after`` round to ``after`` itself (the whole queue when it is absent)."""
    if after not in queue:
        return queue
    at = queue.index(after) + 1
    return queue[at:] + queue[:at]


def pick_next(queue: list[int], after: int, *, answered: set[int], skipped: set[int], full: set[int],
              revisit: bool = True) -> tuple[int | None, bool]:
    """``(item, revisiting)``: the first item after ``after`` (then from the top) the labeler has neither
    answered nor skipped and that is not ``full`` (enough other labelers answered it); when none is left and
    ``revisit``, the first one they skipped. ``(None, False)`` when nothing is left."""
    order = _rotated(queue, after)
    for item in order:
        if item not in answered and item not in skipped and item not in full:
            return item, False
    if revisit:
        for item in order:
            if item in skipped and item not in answered and item not in full:
                return item, True
    return None, False


def previous_in(queue: list[int], before: int) -> int | None:
    """The item before ``before`` in the queue (the last one when ``before`` is not in it)."""
    if not queue:
        return None
    if before not in queue:
        return queue[-1]
    at = queue.index(before)
    return queue[at - 1] if at > 0 else None
