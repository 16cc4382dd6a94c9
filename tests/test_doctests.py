"""The examples in docstrings run and give what they show."""

import doctest
import importlib

import pytest

MODULES = ["rewardlab.config", "rewardlab.data.augment", "rewardlab.data.balance", "rewardlab.data.collate", "rewardlab.data.encode",
           "rewardlab.data.image_items", "rewardlab.data.images", "rewardlab.data.sampling", "rewardlab.data.schema",
           "rewardlab.losses", "rewardlab.models.backbones", "rewardlab.models.base", "rewardlab.models.outcomes", "rewardlab.models.pairwise", "rewardlab.evaluation.outcomes", "rewardlab.ratings",
           "rewardlab.reward_function", "rewardlab.scoring", "rewardlab.serve.client"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples in {name} failed"
