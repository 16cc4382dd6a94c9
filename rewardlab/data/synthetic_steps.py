"""A generated stepwise data set: arithmetic and unit-conversion chains, some with an injected slip.

The project ships no third-party solutions, so ``rewardlab demo --task prm`` and the PRM benchmark make
their own. Two kinds of problem, drawn half and half:

- **arithmetic**: ``"Compute 17 + 25 * 3 - 8."``; one step per operation in the order of precedence
  (``25 * 3 = 75``, ``17 + 75 = 92``, ``92 - 8 = 84``), then ``The answer is 84.``;
- **units**: ``"Convert 7 km to cm."``; one step per hop of a unit chain (``7 km = 7 * 1000 m = 7000 m``,
  ``7000 m = 7000 * 100 cm = 700000 cm``), then ``The answer is 700000 cm.``

A solution with a mistake gets one wrong result at a step drawn uniformly among its computing steps; every
later step computes correctly *from the wrong value* (the error is carried forward, as a real solver would),
so the final answer is wrong too. Labels follow Math-Shepherd's convention: a step is wrong if it is the
first wrong step or comes after it, whether or not its own arithmetic is right; so ``first_error`` is the
injected step, and the last step's label is the solution's correctness.

Why a model must read the numbers: wording is drawn independently of the mistake (the same templates, in the
same proportions, for right and wrong steps), and a wrong result differs from the right one in one
significant digit only, keeping its number of digits and its trailing zeros; so a wrong step has the length
and form of a right one, and only recomputing it tells them apart. Integers only, never negative.

Example:
    >>> s = make_solutions(4, seed=0)
    >>> len(s), all(len(x.steps) == len(x.labels) for x in s)
    (4, True)
    >>> make_solutions(4, seed=0) == s
    True
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from rewardlab.contracts.steps import Solution

# Chains of units, each with the factor from one unit to the next.
UNIT_CHAINS: tuple[tuple[tuple[str, int], ...], ...] = (
    (("km", 1000), ("m", 100), ("cm", 10), ("mm", 1)),
    (("weeks", 7), ("days", 24), ("hours", 60), ("minutes", 60), ("seconds", 1)),
    (("tonnes", 1000), ("kg", 1000), ("g", 1000), ("mg", 1)),
)
OPERATIONS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}

ARITHMETIC_PROMPTS = ("Compute {e}.", "What is {e}?", "Evaluate {e}.", "Work out {e} step by step.")
ARITHMETIC_STEPS = ("{a} {op} {b} = {c}", "{a} {op} {b} = {c}.", "Next, {a} {op} {b} = {c}.", "{a} {op} {b} gives {c}.")
UNIT_PROMPTS = ("Convert {v} {u} to {w}.", "How many {w} are in {v} {u}?", "Express {v} {u} in {w}.")
UNIT_STEPS = ("{v} {u} = {v} * {f} {w} = {r} {w}", "Multiply by {f}: {v} {u} = {r} {w}.",
              "{v} {u} times {f} gives {r} {w}.")
ANSWERS = ("The answer is {r}.", "So the result is {r}.", "Final answer: {r}.")


def wrong_number(right: int, rng: np.random.Generator) -> int:
    """``right`` with one significant digit changed: same number of digits, same trailing zeros.

    >>> wrong_number(7000, np.random.default_rng(0)) % 1000, len(str(wrong_number(84, np.random.default_rng(1))))
    (0, 2)
    """
    digits = str(right)
    significant = len(digits.rstrip("0")) or 1  # 0 itself: its one digit
    pos = int(rng.integers(0, significant))
    choices = [d for d in "0123456789" if d != digits[pos]
               and not (pos == 0 and d == "0" and len(digits) > 1)  # no leading zero
               and not (pos == significant - 1 and d == "0" and right)]  # no new trailing zero
    new = digits[:pos] + choices[int(rng.integers(0, len(choices)))] + digits[pos + 1:]
    return int(new)


def _arithmetic_problem(rng: np.random.Generator) -> tuple[str, tuple]:
    """A prompt and its operands and operators, every intermediate value (in precedence order) positive."""
    while True:
        n = int(rng.integers(3, 5))
        operands = [int(x) for x in rng.integers(2, 30, n)]
        ops = [str(o) for o in rng.choice(list(OPERATIONS), n - 1)]
        if all(v > 0 for v in _reduce(operands, ops, None, rng)[1]):
            expression = " ".join(f"{x} {o}" for x, o in zip(operands, ops)) + f" {operands[-1]}"
            return _pick(ARITHMETIC_PROMPTS, rng).format(e=expression), (operands, ops)


def _reduce(operands: list[int], ops: list[str], error_at: int | None, rng: np.random.Generator
            ) -> tuple[list[tuple[int, str, int, int]], list[int]]:
    """The steps (a, op, b, result) that evaluate the expression, * before + and -, left to right; at step
    ``error_at`` the result is replaced by a wrong number, which later steps then use. Also the results."""
    values, ops = list(operands), list(ops)
    steps = []
    while ops:
        k = ops.index("*") if "*" in ops else 0
        a, op, b = values[k], ops[k], values[k + 1]
        result = OPERATIONS[op](a, b)
        if len(steps) == error_at:
            result = wrong_number(result, rng)
        steps.append((a, op, b, result))
        values[k:k + 2], ops[k:k + 1] = [result], []
    return steps, [s[3] for s in steps]


def _pick(templates: Sequence[str], rng: np.random.Generator) -> str:
    return templates[int(rng.integers(0, len(templates)))]


def _arithmetic_steps(problem: tuple, rng: np.random.Generator, wrong: bool) -> tuple[list[str], int | None]:
    operands, ops = problem
    for _ in range(100):
        error_at = int(rng.integers(0, len(ops))) if wrong else None
        steps, results = _reduce(operands, ops, error_at, rng)
        if all(v > 0 for v in results):  # the carried error may not make a value negative
            break
    else:  # a slip at the last step is never carried: always valid
        steps, results = _reduce(operands, ops, error_at := len(ops) - 1, rng)
    texts = [_pick(ARITHMETIC_STEPS, rng).format(a=a, op=op, b=b, c=c) for a, op, b, c in steps]
    texts.append(_pick(ANSWERS, rng).format(r=results[-1]))
    return texts, error_at


def _unit_problem(rng: np.random.Generator) -> tuple[str, tuple]:
    chain = UNIT_CHAINS[int(rng.integers(0, len(UNIT_CHAINS)))]
    hops = int(rng.integers(2, min(4, len(chain))))
    start = int(rng.integers(0, len(chain) - hops))
    value = int(rng.integers(2, 100))
    prompt = _pick(UNIT_PROMPTS, rng).format(v=value, u=chain[start][0], w=chain[start + hops][0])
    return prompt, (chain[start: start + hops + 1], value)


def _unit_steps(problem: tuple, rng: np.random.Generator, wrong: bool) -> tuple[list[str], int | None]:
    chain, value = problem
    hops = len(chain) - 1
    error_at = int(rng.integers(0, hops)) if wrong else None
    texts = []
    for k in range(hops):
        (unit, factor), target = chain[k], chain[k + 1][0]
        result = value * factor
        if k == error_at:
            result = wrong_number(result, rng)
        texts.append(_pick(UNIT_STEPS, rng).format(v=value, u=unit, f=factor, r=result, w=target))
        value = result
    texts.append(_pick(ANSWERS, rng).format(r=f"{value} {chain[-1][0]}"))
    return texts, error_at


TASKS = {"arithmetic": (_arithmetic_problem, _arithmetic_steps), "units": (_unit_problem, _unit_steps)}


def _solution(task: str, prompt: str, problem: tuple, rng: np.random.Generator, wrong: bool, source: str
              ) -> Solution:
    steps, error_at = TASKS[task][1](problem, rng, wrong)
    labels = tuple(error_at is None or k < error_at for k in range(len(steps)))
    return Solution(prompt, tuple(steps), labels, source=source, meta={"task": task})


def make_solutions(n: int, *, seed: int, error_rate: float = 0.5) -> list[Solution]:
    """``n`` generated solutions, half arithmetic and half unit conversion (each drawn at random); each has an
    injected mistake with probability ``error_rate``. The same seed gives the same solutions.

    ``meta`` holds ``task`` (``"arithmetic"`` or ``"units"``); ``source`` is ``synthetic:<seed>:<i>``.
    """
    if n < 0 or not 0.0 <= error_rate <= 1.0:
        raise ValueError(f"make_solutions(n={n}, error_rate={error_rate}): n must be >= 0 and error_rate in [0, 1]")
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        task = "arithmetic" if rng.random() < 0.5 else "units"
        wrong = bool(rng.random() < error_rate)
        prompt, problem = TASKS[task][0](rng)
        out.append(_solution(task, prompt, problem, rng, wrong, f"synthetic:{seed}:{i}"))
    return out


def make_candidates(n: int, k: int, *, seed: int, correct: int = 1) -> list[list[Solution]]:
    """``n`` problems with ``k`` candidate solutions each, ``correct`` of them right and the rest with a slip, in
    random order: what best-of-n picks from. Candidates differ in wording and in where the slip is."""
    if not 0 <= correct <= k:
        raise ValueError(f"make_candidates(k={k}, correct={correct}): need 0 <= correct <= k")
    rng = np.random.default_rng([seed, 1])
    out = []
    for i in range(n):
        task = "arithmetic" if rng.random() < 0.5 else "units"
        prompt, problem = TASKS[task][0](rng)
        group = [_solution(task, prompt, problem, rng, j >= correct, f"synthetic:{seed}:{i}:{j}") for j in range(k)]
        out.append([group[j] for j in rng.permutation(k)])
    return out


def write_stepwise_jsonl(path: str | Path, solutions: Sequence[Solution]) -> Path:
    """Write ``solutions`` as TRL stepwise-supervision rows ``{"prompt", "completions", "labels"}`` (plus the
    solution's ``meta`` columns), one JSON object per line."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for s in solutions:
            row = {"prompt": s.prompt, "completions": list(s.steps), "labels": list(s.labels), **s.meta}
            fh.write(json.dumps(row) + "\n")
    return path
