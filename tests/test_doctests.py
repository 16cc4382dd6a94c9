"""The examples in docstrings run and give what they show.

The modules are found, not listed: every module of the ``rewardlab`` package whose source has a
``>>>`` example, wherever refactoring moves it. Examples that need a trained model read it from the
name ``checkpoint``, which the test injects (a tiny text reward model trained here in seconds).
"""

import doctest
import importlib
import importlib.util
import pkgutil
import re
import sys
from pathlib import Path

import pytest

import rewardlab

from conftest import tiny_config, write_jsonl

NOT_IMPORTED = []  # packages walk_packages could not import: tested as modules (skipped for a missing optional package)


def _modules_with_examples() -> list[str]:
    names = []
    for info in pkgutil.walk_packages(rewardlab.__path__, "rewardlab.", onerror=NOT_IMPORTED.append):
        if info.name.rpartition(".")[2] == "__main__":  # importing it runs the command line
            continue
        spec = importlib.util.find_spec(info.name)
        if spec and spec.origin and spec.origin.endswith(".py") and ">>>" in Path(spec.origin).read_text("utf-8"):
            names.append(info.name)
    return names + [n for n in NOT_IMPORTED if n not in names]


MODULES = _modules_with_examples()

# Modules whose examples are all +SKIP today (a defect of their docstrings, not mended here), by last name so
# that a move keeps the entry: they xfail, and fail once their examples run, so that the entry goes.
ALL_SKIPPED: dict[str, str] = {}

# Names the examples may use without defining them, and the fixture that provides each.
INJECTED = {"checkpoint": "checkpoint"}


@pytest.fixture(scope="module")
def checkpoint(tiny_bert, tmp_path_factory) -> str:
    """A tiny two-attribute text reward model (correctness, helpfulness, then the aggregate), 4 steps trained."""
    from rewardlab.train.run import train

    d = tmp_path_factory.mktemp("doctest_model")
    rows = []
    for i in range(8):
        prompt = f"How do I do task {i}?"
        rows += [{"prompt": prompt, "response": f"Do step one, then step {i}.", "correctness": 5, "helpfulness": 5},
                 {"prompt": prompt, "response": f"Do step {i} twice.", "correctness": 1, "helpfulness": 4},
                 {"prompt": prompt, "response": "No.", "correctness": 3, "helpfulness": 1}]
    return str(train(tiny_config(tiny_bert, write_jsonl(d / "rated.jsonl", rows), d / "run", max_steps=4)).model_dir)


def _import(name: str):
    """The module, or a skip naming the optional package it needs; a missing rewardlab module is an error."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as err:
        if err.name and err.name.split(".")[0] != "rewardlab":
            pytest.skip(f"{name} needs the optional package {err.name}, which is not installed")
        raise


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name, request):
    module = _import(name)
    examples = [e for t in doctest.DocTestFinder().find(module) for e in t.examples]
    if not examples:
        pytest.skip(f"{name}: its '>>>' lines are not docstring examples")
    sources = "\n".join(e.source for e in examples)
    extra = {g: request.getfixturevalue(f) for g, f in INJECTED.items() if re.search(rf"\b{g}\b", sources)}
    result = doctest.testmod(module, extraglobs=extra, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples in {name} failed"
    # An example marked +SKIP is not attempted: a module whose examples are all skipped checks nothing.
    known = ALL_SKIPPED.get(name.rpartition(".")[2])
    if known:
        assert result.attempted == 0, f"{name}'s examples run now: remove it from ALL_SKIPPED"
        pytest.xfail(f"all {len(examples)} examples in {name} are skipped: {known}")
    assert result.attempted > 0, f"all {len(examples)} examples in {name} are skipped"


def test_discovery_finds_the_modules_with_examples():
    assert "rewardlab.losses" in MODULES and "rewardlab.__main__" not in MODULES
    assert len(MODULES) >= 15  # about 25 modules have examples; a walk that finds few is broken


@pytest.mark.parametrize("public", ["RewardModel", "RewardFunction"])
def test_the_scoring_examples_run_rather_than_skip(public):
    """The user-facing examples of scoring and reward functions run for real (on the injected checkpoint)."""
    module = sys.modules[getattr(rewardlab, public).__module__]
    assert module.__name__ in MODULES
    examples = [e for t in doctest.DocTestFinder().find(module) for e in t.examples]
    assert len(examples) >= 4
    assert not [e.source for e in examples if e.options.get(doctest.SKIP)]
    assert "+SKIP" not in Path(module.__file__).read_text("utf-8")
    assert any("checkpoint" in e.source for e in examples)  # they score with a real model
