"""What every model kind provides, and the registry that finds kinds by name.

The contract:

- a :class:`RewardNet` maps a batch's items to rewards (N, H): ``forward(**items)``,
  where ``items`` is what the kind's :class:`~rewardlab.data.collate.ItemProcessor`
  collates; ``heads`` names the H columns and the last one is always the overall
  (aggregate) reward — for a plain reward model it is the only one;
- ``outcome`` (a :mod:`~rewardlab.models.outcomes` model) turns the rewards of a
  judged pair into P(i wins), P(j wins), P(tie); Bradley–Terry unless the loss is
  tie-aware or the kind is pairwise (its tie parameter is a model parameter);
- ``parameter_groups()`` names its trainable parameters by component (``backbone``,
  ``head``, ...) so each component gets its own learning rate;
- a :class:`ModelKind` makes the processor (it is needed to read the data: chat
  templates live in tokenizers), builds a fresh model for the attributes found in
  the data, saves a trained one into a folder and loads it back. Folders hold ``config.json`` with our
  metadata under ``"rewardlab"`` (``kind`` included) and safetensors weights only.

The trainer, the scorer and the evaluator only use this contract; no kind is
special-cased anywhere else.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, Sequence

import torch
from torch import nn

from rewardlab.models.outcomes import BradleyTerry, OutcomeModel, outcome_to_metadata

if TYPE_CHECKING:
    from rewardlab.config import ExperimentConfig

CONFIG_KEY = "rewardlab"  # our metadata lives under this key of config.json
AGGREGATE = "aggregate"  # the last head's name in multi-head models


class RewardNet(nn.Module):
    """Base of every model kind. ``forward(**items) -> rewards (N, H)``; ``heads[-1]`` is the aggregate.

    A judgement reads ``head_width`` columns from its head on: one reward, or the three A / B / tie
    logits of pairwise kinds, whose heads are then groups of three columns, the aggregate's last.
    """

    heads: tuple[str, ...] = ("reward",)
    head_width: int = 1

    @property
    def outcome(self) -> OutcomeModel:
        """How a judged pair's rewards become outcome probabilities (Bradley–Terry by default)."""
        module = self._modules.get("outcome_model")
        return module if module is not None else _BRADLEY_TERRY

    def set_outcome(self, outcome: OutcomeModel) -> None:
        """Attach an outcome model; its parameters (a tie parameter) train and save with the model."""
        self.outcome_model = outcome

    def penalty(self, batch: dict) -> torch.Tensor | None:
        """The model's own extra loss term for its last training forward pass over ``batch`` (e.g. the
        disentangled reward's slope penalty, see rewardlab.models.debias); None: none."""
        return None

    def head_layer(self) -> nn.Module:
        """The final layer mapping features (N, [L,] D) to rewards; personalisation conditions its input."""
        raise NotImplementedError(f"{type(self).__name__} does not expose its reward layer, so it cannot be "
                                  "personalised (model.personalization)")

    def head_index(self) -> dict[str | None, int]:
        """Attribute name → its (first) reward column; ``None`` (an overall judgement) → the aggregate's."""
        index: dict[str | None, int] = {name: i for i, name in enumerate(self.heads)}
        index[None] = len(self.heads) - self.head_width
        return index

    def parameter_groups(self) -> dict[str, list[tuple[str, nn.Parameter]]]:
        """Trainable ``(name, parameter)`` lists by component; the default puts all in ``head``."""
        return {"head": [(n, p) for n, p in self.named_parameters() if p.requires_grad]}


@dataclass(frozen=True)
class ModelKind:
    """How one kind of reward model is built, saved and loaded.

    Attributes:
        name: the registry name, saved in the checkpoint as ``rewardlab.kind``.
        processor: ``cfg -> processor``, the kind's ItemProcessor (with ``render_chat``).
        build: ``(cfg, attributes, processor) -> model`` for training; ``attributes``
            are the rating dimensions found in the training data (empty: one reward).
        save: ``(model, processor, folder, metadata)`` writes a finished model into an
            empty ``folder`` (the caller makes it atomic).
        load: ``(path, device, dtype) -> (model, processor, metadata)``.
        help: one line for ``rewardlab kinds``.
        prepare: ``comparison -> comparison`` applied to every comparison before encoding
            (pairwise kinds turn each judged pair into its two ordered-pair items); None: as is.
        outcome: the outcome model the kind's outputs need (``three_class`` for pairwise
            kinds); None: any, chosen by the loss.
        member_heads: ``build`` takes ensemble member heads (``member-00`` …) as attributes, so
            ``train.ensemble_shared_backbone`` can make one model of K members.
    """

    name: str
    processor: Callable[["ExperimentConfig"], object]
    build: Callable[["ExperimentConfig", Sequence[str], object], RewardNet]
    save: Callable[[RewardNet, object, Path, dict], None]
    load: Callable[[str, torch.device, "torch.dtype | None"], tuple[RewardNet, object, dict]]
    help: str = ""
    prepare: Callable[[object], object] | None = None
    outcome: str | None = None
    member_heads: bool = True


_BRADLEY_TERRY = BradleyTerry()

# Kinds are imported on first use, so the library core never imports what a kind needs.
_LAZY_KINDS: dict[str, str] = {"text": "rewardlab.models.text:TEXT_KIND",
                               "multimodal": "rewardlab.models.multimodal:MULTIMODAL_KIND",
                               "cross_encoder": "rewardlab.models.pairwise:CROSS_ENCODER_KIND",
                               "judge": "rewardlab.models.judge:JUDGE_KIND",
                               "ensemble": "rewardlab.models.ensemble:ENSEMBLE_KIND"}
_KINDS: dict[str, ModelKind] = {}


def register_kind(kind: ModelKind) -> ModelKind:
    _KINDS[kind.name] = kind
    return kind


def list_kinds() -> list[str]:
    return sorted(set(_LAZY_KINDS) | set(_KINDS))


def get_kind(name: str) -> ModelKind:
    """The kind registered under ``name``; raises ``ValueError`` listing valid names."""
    if name not in _KINDS and name in _LAZY_KINDS:
        module, attr = _LAZY_KINDS[name].split(":")
        register_kind(getattr(importlib.import_module(module), attr))
    if name not in _KINDS:
        raise ValueError(f"unknown model kind {name!r}; valid kinds: {', '.join(list_kinds())}")
    return _KINDS[name]


def save_atomically(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Run ``write(tmp)`` into a temporary sibling folder, then swap it into ``path``.

    A crash at any point leaves either the old folder or the new one, never a mix.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        write(tmp)
        old = path.with_name(f".{path.name}.old")
        if path.exists():
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def save_personal_part(model: RewardNet, processor: object, folder: Path, meta: dict) -> tuple[RewardNet, object]:
    """A personalised wrapper's user parameters go to ``folder`` and their description into ``meta``; returns
    the (model, processor) its kind saves: what it wraps (for any other model, the model itself)."""
    if not hasattr(model, "personal_state"):
        return model, processor
    from rewardlab.models.personal import save_personal

    meta["personalization"] = save_personal(model, folder)
    return model.base, processor.inner


def save_model(model: RewardNet, processor: object, path: str | Path, metadata: dict, *, kind: str,
               extra_files: dict[str, str] | None = None) -> Path:
    """Save a trained model with its kind's ``save``, atomically; ``extra_files`` are written beside it."""

    def write(tmp: Path) -> None:
        meta = {**metadata, "kind": kind, "heads": list(model.heads), "outcome": outcome_to_metadata(model.outcome)}
        base, base_processor = save_personal_part(model, processor, tmp, meta)
        if base is model and hasattr(model, "saved_part"):  # other wrappers say what the kind saves, and why
            base, base_processor, extra = model.saved_part(processor)
            meta.update(extra)
        get_kind(kind).save(base, base_processor, tmp, meta)
        for name, text in (extra_files or {}).items():
            (tmp / name).write_text(text)

    return save_atomically(path, write)


def check_source(name: str, what: str) -> None:
    """A local folder or file that exists, or a hub id (``org/model``, ``gpt2``). A path that names nothing is an
    error here rather than a hub lookup (which, offline, retries for half a minute and then speaks of the internet).

    Example:
        >>> check_source("/no/such/folder", "model")
        Traceback (most recent call last):
        ValueError: model '/no/such/folder': no such folder or file
    """
    path = Path(name).expanduser()
    if path.exists():
        return
    if path.is_absolute() or name.startswith((".", "~")) or name.count("/") > 1 or "\\" in name \
            or name.endswith(("/", ".gguf", ".safetensors", ".json")):
        raise ValueError(f"{what} {name!r}: no such folder or file")


def check_checkpoint(path: str | Path) -> None:
    """``path`` is a model folder (it has a config.json) or a hub id; a training run's folder says where its model
    is."""
    folder = Path(path).expanduser()
    if folder.is_dir() and not (folder / "config.json").is_file():
        hint = f"; a training run keeps its model in {folder / 'model'}" if (folder / "model" / "config.json"
                                                                              ).is_file() else ""
        raise ValueError(f"{path}: not a model folder (no config.json){hint}")
    check_source(str(path), "model")


@contextmanager
def readable_weights(where: str | Path) -> Iterator[None]:
    """Turns safetensors' error on a damaged or cut-short file, and the hub's on a model it cannot give, into one
    ValueError naming ``where``."""
    from safetensors import SafetensorError

    try:
        yield
    except SafetensorError as err:
        raise ValueError(f"{where}: a weights file is damaged or cut short ({err})") from None
    except OSError as err:
        if Path(where).expanduser().exists():
            raise
        first = next((line for line in str(err).splitlines() if line.strip()), type(err).__name__)
        raise ValueError(f"{where}: not a local folder, and the Hugging Face hub could not give it ({first})") \
            from None


def read_metadata(path: str | Path) -> dict:
    """The ``rewardlab`` block of a checkpoint's config.json ({} for foreign models)."""
    config = Path(path) / "config.json"
    if not config.is_file():
        return {}
    return json.loads(config.read_text()).get(CONFIG_KEY) or {}
