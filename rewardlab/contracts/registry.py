"""Named registries: what a config option may name, known without importing what each entry needs.

An entry is registered as ``"module:attribute"`` and imported on first use, so ``config``
validates ``model.kind`` or ``train.loss`` without importing torch, and the library core
never imports what one kind needs. Adding a model kind or a loss is one line here
(plus the code it points to); :meth:`Registry.register` adds entries at run time
(plugins, tests), which the config then accepts too.

Example:
    >>> sizes = Registry("size", {"small": "math:pi"})
    >>> sizes.names(), round(sizes.get("small"), 2)
    (['small'], 3.14)
    >>> sizes.get("huge")
    Traceback (most recent call last):
    ValueError: unknown size 'huge'; valid sizes: small
"""

from __future__ import annotations

import importlib
from typing import Generic, Mapping, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Names → entries, each given as an object or as a lazily imported ``"module:attribute"``."""

    def __init__(self, what: str, lazy: Mapping[str, str] | None = None, *, plural: str | None = None):
        self.what, self.plural = what, plural or f"{what}s"
        self._lazy = dict(lazy or {})
        self._entries: dict[str, T] = {}

    def register(self, name: str, entry: T) -> T:
        self._entries[name] = entry
        return entry

    def names(self) -> list[str]:
        return sorted(set(self._lazy) | set(self._entries))

    def get(self, name: str) -> T:
        """The entry registered under ``name``; raises ``ValueError`` listing the valid names."""
        if name not in self._entries and name in self._lazy:
            module, attribute = self._lazy[name].split(":")
            self._entries[name] = getattr(importlib.import_module(module), attribute)
        if name not in self._entries:
            raise ValueError(f"unknown {self.what} {name!r}; valid {self.plural}: {', '.join(self.names())}")
        return self._entries[name]


MODEL_KINDS: Registry = Registry("model kind", plural="kinds", lazy={
    "text": "rewardlab.models.text:TEXT_KIND",
    "multimodal": "rewardlab.models.multimodal:MULTIMODAL_KIND",
    "cross_encoder": "rewardlab.models.pairwise:CROSS_ENCODER_KIND",
    "judge": "rewardlab.models.judge:JUDGE_KIND",
    "ensemble": "rewardlab.models.ensemble:ENSEMBLE_KIND",
    "prm": "rewardlab.models.prm:PRM_KIND",
})

# Pairwise losses (rewardlab.losses): per-pair functions of the two scores, or outcome losses, the
# negative log-likelihood of a judged pair's outcome under the outcome model of the same name.
LOSSES: Registry = Registry("loss", plural="losses", lazy={
    "bradley_terry": "rewardlab.losses:bradley_terry",
    "bt_margin": "rewardlab.losses:bt_margin",
    "label_smoothing": "rewardlab.losses:label_smoothing",
    "focal": "rewardlab.losses:focal",
    "contrastive": "rewardlab.losses:contrastive",
    "rao_kupper": "rewardlab.losses:RAO_KUPPER",
    "davidson": "rewardlab.losses:DAVIDSON",
    "three_class": "rewardlab.losses:THREE_CLASS",
    # per-step losses of process reward models (rewardlab.losses.StepLoss): step probabilities against step labels
    "step_bce": "rewardlab.losses:STEP_BCE",
    "step_bce_prefix": "rewardlab.losses:STEP_BCE_PREFIX",
    "step_bce_last": "rewardlab.losses:STEP_BCE_LAST",
})

# Row formats (rewardlab.data): each turns one raw row into a Comparison. item_ratings rows hold one
# response each and are grouped by prompt before they become comparisons.
DATA_FORMATS: Registry = Registry("data format", plural="formats", lazy={
    "pairs": "rewardlab.data.formats:from_pairs",
    "implicit_prompt": "rewardlab.data.formats:from_implicit_prompt",
    "chat": "rewardlab.data.formats:from_chat",
    "rankings": "rewardlab.data.formats:from_rankings",
    "ratings": "rewardlab.data.formats:from_ratings",
    "ab": "rewardlab.data.ab:from_ab",
    "item_ratings": "rewardlab.data.item_ratings:rated_item",
    # public benchmarks, each read as its authors distribute it (rewardlab.data.benchmarks)
    "rewardbench": "rewardlab.data.benchmarks:from_rewardbench",
    "rewardbench2": "rewardlab.data.benchmarks:from_rewardbench2",
    "llmbar": "rewardlab.data.benchmarks:from_llmbar",
    "pandalm": "rewardlab.data.benchmarks:from_pandalm",
    "mtbench_human": "rewardlab.data.benchmarks:from_mtbench_human",
    "judgebench": "rewardlab.data.benchmarks:from_judgebench",
    "stepwise": "rewardlab.data.stepwise:from_stepwise",  # solutions, not comparisons: rewardlab.data.stepwise
})
