"""What every model kind provides, and the registry that finds kinds by name.

The contract:

- a :class:`RewardNet` maps a batch's items to rewards (N, H): ``forward(**items)``,
  where ``items`` is what the kind's :class:`~rewardlab.contracts.batch.ItemProcessor`
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

from rewardlab.contracts.registry import MODEL_KINDS
from rewardlab.models.outcomes import BradleyTerry, OutcomeModel, outcome_from_metadata, outcome_to_metadata

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

    def unwrap(self, processor: object, folder: Path) -> tuple["RewardNet", object, dict]:
        """What the kind saves of this model: ``(model, processor, metadata to store)``.

        A plain model is saved as it is. A wrapper (personalised, debiased) writes what is its own
        into ``folder``, returns what it wraps and says in the metadata how to rebuild itself: the
        loader of its metadata key in :data:`WRAPPERS` does so on load.
        """
        return self, processor, {}


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
        loads_wrappers: ``load`` rebuilds the wrappers of what it loads itself (an ensemble, of its
            members); otherwise :func:`load_model` rebuilds them from the metadata (:data:`WRAPPERS`).
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
    loads_wrappers: bool = False


_BRADLEY_TERRY = BradleyTerry()

def register_kind(kind: ModelKind) -> ModelKind:
    """Add a kind at run time (the built-in ones are listed in :data:`rewardlab.contracts.registry.MODEL_KINDS`)."""
    return MODEL_KINDS.register(kind.name, kind)


def list_kinds() -> list[str]:
    return MODEL_KINDS.names()


def get_kind(name: str) -> ModelKind:
    """The kind registered under ``name``; raises ``ValueError`` listing valid names."""
    return MODEL_KINDS.get(name)


def cache_root() -> Path:
    """``$XDG_CACHE_HOME/rewardlab`` (``~/.cache/rewardlab`` when unset): what rewardlab may rebuild, kept between
    runs (image embeddings, GGUF models as plain folders)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "rewardlab"


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


# A checkpoint's metadata key → the loader that rebuilds its wrapper around the loaded model, applied in this
# order: ``(model, processor, path, metadata) -> (model, processor, metadata)``. Imported on use, as kinds are.
WRAPPERS: dict[str, str] = {
    "personalization": "rewardlab.models.personal:load_wrapped",
    "ensemble_heads": "rewardlab.models.ensemble:load_head_ensemble",
}


def unwrap_for_saving(model: RewardNet, processor: object, folder: Path, meta: dict) -> tuple[RewardNet, object]:
    """Peel wrappers off ``model`` (each writes its own part into ``folder`` and ``meta``); returns what the kind
    saves."""
    while True:
        inner, inner_processor, extra = model.unwrap(processor, folder)
        meta.update(extra)
        if inner is model:
            return model, processor
        model, processor = inner, inner_processor


def rewrap(model: RewardNet, processor: object, path: str | Path, metadata: dict) -> tuple[RewardNet, object, dict]:
    """Rebuild the wrappers a checkpoint's ``metadata`` names around its loaded ``model`` (see :data:`WRAPPERS`)."""
    for key, target in WRAPPERS.items():
        if key in metadata:
            module, name = target.split(":")
            model, processor, metadata = getattr(importlib.import_module(module), name)(model, processor, path,
                                                                                           metadata)
    return model, processor, metadata


def load_model(path: str | Path, device: torch.device, dtype: torch.dtype | None = None
               ) -> tuple[RewardNet, object, dict]:
    """A checkpoint folder (or hub id) as (model, processor, metadata): its kind loads it, with its outcome model and
    wrappers; foreign Hugging Face models load by their architecture (:func:`foreign_kind`)."""
    check_checkpoint(path)
    kind = get_kind(read_metadata(path).get("kind") or foreign_kind(path))
    with readable_weights(path):
        model, processor, metadata = kind.load(str(path), device, dtype)
        if "outcome" in metadata:
            model.set_outcome(outcome_from_metadata(metadata["outcome"]).to(device))
        if not kind.loads_wrappers:
            model, processor, metadata = rewrap(model, processor, path, metadata)
    return model, processor, metadata


def save_model(model: RewardNet, processor: object, path: str | Path, metadata: dict, *, kind: str,
               extra_files: dict[str, str] | None = None) -> Path:
    """Save a trained model with its kind's ``save``, atomically; ``extra_files`` are written beside it."""

    def write(tmp: Path) -> None:
        meta = {**metadata, "kind": kind, "heads": list(model.heads), "outcome": outcome_to_metadata(model.outcome)}
        get_kind(kind).save(*unwrap_for_saving(model, processor, tmp, meta), tmp, meta)
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


def foreign_kind(path: str | Path) -> str:
    """The kind a folder rewardlab did not write loads as: ``prm`` for a token classifier (a process reward model,
    as TRL's PRMTrainer saves one), else ``text`` (a sequence classifier, or a backbone to read the reward from)."""
    config = Path(path) / "config.json"
    architectures = json.loads(config.read_text()).get("architectures") or [] if config.is_file() else []
    return "prm" if any(a.endswith("ForTokenClassification") for a in architectures) else "text"


def read_metadata(path: str | Path) -> dict:
    """The ``rewardlab`` block of a checkpoint's config.json ({} for foreign models)."""
    config = Path(path) / "config.json"
    if not config.is_file():
        return {}
    return json.loads(config.read_text()).get(CONFIG_KEY) or {}
