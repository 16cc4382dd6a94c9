"""A run's data, made ready for its model: load or split, the kind's own preparation, personalisation, encoding.

:func:`prepare_data` decides everything the model is built for (its kind, outcome model,
attribute heads and labelers) from the comparisons; :func:`encode_training_data` turns them
into what the collator batches. Both report what they did in ``reports`` (metrics.json's ``data``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from rewardlab.config import ExperimentConfig
from rewardlab.contracts.batch import ItemProcessor
from rewardlab.contracts.schema import Comparison
from rewardlab.data.balance import balance_pairs
from rewardlab.data.collate import encode_comparisons
from rewardlab.data.load import load_comparisons
from rewardlab.data.splits import split_by_group, stratified_group_split
from rewardlab.losses import outcome_model_for
from rewardlab.models.base import ModelKind, get_kind
from rewardlab.models.personal import PersonalItems, add_labeler_tokens, labeler_table, personalize


@dataclass
class Prepared:
    """What a run trains on and what its model is built for.

    ``processor`` is the kind's own; :meth:`item_processor` is the one that encodes the data
    (it carries each item's labeler for personalised models). ``labelers`` is None for
    population models; ``labeler_pairs`` counts each labeler's training pairs.
    """

    kind: ModelKind
    outcome: str
    processor: ItemProcessor
    train: list[Comparison]
    eval: list[Comparison]
    reports: dict
    attributes: list[str]
    labelers: list[str] | None = None
    labeler_pairs: dict[str, int] = field(default_factory=dict)
    token_ids: list[int] = field(default_factory=list)

    def item_processor(self, cfg: ExperimentConfig) -> ItemProcessor:
        if self.labelers is None:
            return self.processor
        return PersonalItems(self.processor, cfg.model.personalization, self.token_ids,
                             dropout=cfg.model.labeler_dropout, seed=cfg.train.seed)


def prepare_data(cfg: ExperimentConfig, *, data: tuple[list[Comparison], list[Comparison]] | None = None,
                 labelers: Sequence[str] | None = None) -> Prepared:
    """Load (or take ``data``: a fold's (train, eval)), check and personalise the comparisons of a run."""
    kind = get_kind(cfg.model.kind)
    outcome = outcome_of(kind, cfg.train.loss)
    processor = kind.processor(cfg)
    if data is None:
        train_comps, eval_comps, reports = load_training_data(cfg, processor)
    else:
        (train_comps, eval_comps), reports = data, {"train_source": {"source": cfg.data.train, "folds": cfg.data.folds}}
    _check_length_options(cfg, kind)
    if kind.prepare is not None:
        train_comps, eval_comps = [kind.prepare(c) for c in train_comps], [kind.prepare(c) for c in eval_comps]
    prepared = Prepared(kind=kind, outcome=outcome, processor=processor, train=train_comps, eval=eval_comps,
                        reports=reports, attributes=[])
    if cfg.model.personalization != "none":
        _personalise(cfg, prepared, labelers)
    prepared.attributes = attributes_of(prepared.train, cfg)
    unseen = sorted({p.attribute for c in prepared.eval for p in c.pairs} - {None, *prepared.attributes})
    if unseen:
        raise ValueError(f"the evaluation data rates attribute {unseen[0]!r}, which no training pair rates; "
                         f"the model's heads: {', '.join(prepared.attributes) or 'one reward'}")
    if cfg.model.personalization == "tokens":
        prepared.token_ids = add_labeler_tokens(processor.tokenizer, prepared.labelers)
    return prepared


def _check_length_options(cfg: ExperimentConfig, kind: ModelKind) -> None:
    length_options = [name for name, on in (("train.debias", cfg.train.debias), ("train.length_penalty",
                                             cfg.train.length_penalty > 0), ("train.length_matched",
                                             cfg.train.length_matched)) if on]
    if kind.prepare is not None and length_options:
        raise ValueError(f"{length_options[0]} reads each response's length, and model.kind={kind.name} scores two "
                         "responses at once: use it with a kind that scores each response (text, multimodal)")


def _personalise(cfg: ExperimentConfig, prepared: Prepared, labelers: Sequence[str] | None) -> None:
    """Give the labelers with enough pairs their index, and tag every response with its labeler's."""
    prepared.labelers = labelers_of(cfg, prepared.train, prepared.eval, prepared.reports, labelers)
    index = {u: i for i, u in enumerate(prepared.labelers)}
    prepared.train = [personalize(c, index) for c in prepared.train]
    prepared.eval = [personalize(c, index) for c in prepared.eval]
    prepared.labeler_pairs = labeler_table(prepared.train, 1)[1]


def load_training_data(cfg: ExperimentConfig, processor: ItemProcessor):
    """(train, eval) comparisons and the load reports of each source."""
    render = processor.render_chat
    train, train_report = load_comparisons(cfg.data.train, cfg.data, render_chat=render)
    reports = {"train_source": train_report.__dict__}
    if cfg.data.eval:
        evaluation, eval_report = load_comparisons(cfg.data.eval, cfg.data, render_chat=render)
        reports["eval_source"] = eval_report.__dict__
    else:
        split = stratified_group_split if cfg.data.stratify else split_by_group
        train, evaluation = split(train, cfg.data.eval_fraction, split_by=cfg.data.split_by, seed=cfg.data.seed)
    if not train:
        raise ValueError(f"no training data left after holding out data.eval_fraction={cfg.data.eval_fraction} "
                         f"of {cfg.data.train}; lower it or give data.eval")
    return train, evaluation, reports


def attributes_of(comparisons: list[Comparison], cfg: ExperimentConfig) -> list[str]:
    """The rating dimensions the data judges, in ``data.attributes`` order (else sorted); empty: one reward."""
    found = {p.attribute for c in comparisons for p in c.pairs if p.attribute is not None}
    order = [a for a in cfg.data.attributes if a in found]
    return order + sorted(found - set(order))


def outcome_of(kind: ModelKind, loss: str) -> str:
    """The outcome model a run trains: the kind's own (pairwise kinds), else the loss's; they must agree."""
    wanted = outcome_model_for(loss)
    if kind.outcome is not None and wanted != kind.outcome:
        raise ValueError(f"model.kind={kind.name} predicts outcomes with {kind.outcome}: set train.loss={kind.outcome} "
                         f"(got {loss!r})")
    if kind.outcome is None and wanted == "three_class":
        raise ValueError(f"train.loss=three_class needs a pairwise model kind (e.g. model.kind=cross_encoder), whose items "
                         f"are ordered pairs; model.kind={kind.name} scores single responses: use rao_kupper or "
                         "davidson for ties")
    return wanted


def labelers_of(cfg: ExperimentConfig, train_comps: list[Comparison], eval_comps: list[Comparison],
                reports: dict, labelers: Sequence[str] | None = None) -> list[str]:
    """The labelers that get parameters of their own (>= model.min_labeler_pairs training pairs, unless
    ``labelers`` fixes the table); reports coverage."""
    found, counts = labeler_table(train_comps, cfg.model.min_labeler_pairs)
    labelers = found if labelers is None else list(labelers)
    if not labelers:
        raise ValueError(f"model.personalization={cfg.model.personalization}: no labeler has "
                         f"model.min_labeler_pairs={cfg.model.min_labeler_pairs} training pairs"
                         + ("" if counts else " (the data has no labeler column; map yours with data.columns)"))
    known = set(labelers)
    eval_labelers = {c.labeler for c in eval_comps if c.labeler is not None}
    reports["labelers"] = {
        "mode": cfg.model.personalization, "personal": len(labelers), "population_only": len(set(counts) - known),
        "train_pairs_personal": sum(n for u, n in counts.items() if u in known),
        "train_pairs_population": sum(len(c.pairs) for c in train_comps if c.labeler not in known),
        "eval_labelers_known": len(eval_labelers & known), "eval_labelers_unknown": len(eval_labelers - known)}
    return labelers


def encode_training_data(cfg: ExperimentConfig, processor: ItemProcessor, train_comps: list[Comparison],
                         eval_comps: list[Comparison], reports: dict, *, verbose: bool = True):
    """Encode the loaded data; returns (train, eval) encoded comparisons and the data report."""
    train_comps = balance_pairs(train_comps, cfg.train.balance)
    train_enc, train_trunc = encode_comparisons(train_comps, processor)
    eval_enc, eval_trunc = encode_comparisons(eval_comps, processor)
    reports.update(train_comparisons=len(train_comps), eval_comparisons=len(eval_comps),
                   train_pairs=sum(len(c.pairs) for c in train_comps),
                   eval_pairs=sum(len(c.pairs) for c in eval_comps),
                   truncated_sequences={"train": train_trunc, "eval": eval_trunc, "max_length": cfg.data.max_length})
    if verbose:
        print(f"data: {reports['train_pairs']} train pairs / {reports['eval_pairs']} eval pairs; "
              f"truncated sequences: {train_trunc} train, {eval_trunc} eval (max_length={cfg.data.max_length})")
        for key in ("train_source", "eval_source"):
            if key in reports and reports[key].get("skipped"):
                print(f"warning: skipped {reports[key]['skipped']} bad rows in {reports[key]['source']}: "
                      + " | ".join(reports[key]["reasons"]))
    return train_enc, eval_enc, reports
