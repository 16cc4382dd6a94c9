"""``evaluate(model, data, out)``: stream, score, summarise, check, plot and report; ``evaluate_folds`` does it
for each model of a cross-validation run."""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
from accelerate import PartialState
from accelerate.utils import parse_flag_from_env

from rewardlab.config import DataConfig, load_config
from rewardlab.contracts.schema import Comparison
from rewardlab.data.load import LoadReport, iter_comparisons, load_comparisons
from rewardlab.data.splits import kfold_splits, split_by_group
from rewardlab.data.stepwise import is_stepwise
from rewardlab.evaluation import plots as P
from rewardlab.evaluation.benchmark_report import benchmark_lines, group_lines, outcome_line
from rewardlab.evaluation.benchmarks import benchmark_extras, three_way_block
from rewardlab.evaluation.calibration import fit_temperature, store_temperature
from rewardlab.evaluation.ensemble import ensemble_breakdown
from rewardlab.evaluation.invariance import run_invariance_checks
from rewardlab.evaluation.personal import labeler_breakdown, plot_gains
from rewardlab.evaluation.predict import ScoredPairs, pair_margins, score_stream
from rewardlab.evaluation.report import render_report
from rewardlab.evaluation.steps import evaluate_stepwise, summary_lines
from rewardlab.evaluation.summary import fold_summary, summarize
from rewardlab.metrics.pairwise import expected_calibration_error
from rewardlab.scoring import RewardModel

INVARIANCE_SAMPLE = 16


@dataclass
class EvalResult:
    out_dir: Path
    metrics: dict

    def summary(self) -> str:
        if "per_fold" in self.metrics:  # evaluate_folds
            return self._fold_summary()
        if "first_error" in self.metrics:  # a process reward model on stepwise data
            return summary_lines(self.metrics)
        o = self.metrics["overall"]

        def f(key: str) -> str:
            m = o[key]
            return "–" if m["value"] is None else f"{m['value']:.3f} [{m['ci95'][0]:.3f}, {m['ci95'][1]:.3f}]"

        lines = [f"pairs: {self.metrics['pairs']}", f"accuracy: {f('accuracy')}", f"roc_auc: {f('roc_auc')}",
                 f"log_loss: {f('log_loss')}", f"ece: {f('ece')}", f"brier: {f('brier')}"]
        lb = self.metrics["length_bias"]
        if "length_balanced_accuracy" in lb:
            value = lb["length_balanced_accuracy"]["value"]
            lines.append(f"length-balanced accuracy: {'–' if value is None else f'{value:.3f}'} "
                         f"(prefers the longer reply in {lb['model_prefers_longer_rate']:.0%} of pairs)")
        lines += group_lines(self.metrics)
        for name, m in self.metrics.get("attributes", {}).items():
            lines.append(f"  {name}: accuracy {m['accuracy']['value']:.3f} ({m['pairs']} pairs)")
        if "ensemble" in self.metrics:
            e = self.metrics["ensemble"]
            lines.append(f"ensemble of {e['members']}: accuracy {e['accuracy']:.3f} (members "
                         f"{', '.join(f'{a:.3f}' for a in e['member_accuracy'])}); std finds errors with AUROC "
                         f"{e['std_auroc_for_errors']}; without the 25 % most uncertain: "
                         f"{e['accuracy_without_most_uncertain_25pct']:.3f}")
        if self.metrics.get("personal", {}).get("labelers"):
            o = self.metrics["personal"]["overall"]
            lines.append(f"labelers: own reward {o['accuracy']:.3f} vs population {o['population_accuracy']:.3f}; "
                         f"{o['labelers_gaining']} gain, {o['labelers_losing']} lose, {o['labelers_equal']} equal")
        if "outcomes" in self.metrics:
            lines.append(outcome_line(self.metrics["outcomes"]))
        lines += benchmark_lines(self.metrics)
        if "ranking" in self.metrics:
            lines.append(f"spearman: {self.metrics['ranking']['spearman']['value']}")
        failed = [c["check"] for c in self.metrics.get("invariance", []) if not c["passed"]]
        lines.append("invariance: " + ("FAILED " + ", ".join(failed) if failed else "all passed"))
        lines.append(f"written to: {self.out_dir} (metrics.json, predictions.jsonl"
                     + (", report.html)" if (self.out_dir / "report.html").exists() else ")"))
        return "\n".join(lines)

    def _fold_summary(self) -> str:
        m = self.metrics
        lines = [f"{m['folds']} folds, held out: {m['held_out']}; "
                 f"{sum(f['pairs'] for f in m['per_fold'])} pairs evaluated in all"]
        lines += [f"{name}: {mean:.4f} ± {m['std'][name]:.4f} (mean ± sd over folds)"
                  for name, mean in m["mean"].items() if name != "pairs"]
        lines.append(f"written to: {self.out_dir} (cv_metrics.json, fold-<k>/)")
        return "\n".join(lines)


def _config_text(model_path: str) -> str | None:
    for candidate in (Path(model_path) / "rewardlab.yaml", Path(model_path).parent / "config.yaml"):
        if candidate.is_file():
            return candidate.read_text()
    return None


def _reliability_curves(metrics: dict, margins: np.ndarray) -> dict[str, list[dict]]:
    """The model's reliability curve, and the uncalibrated one beside it when a temperature was fitted."""
    t = metrics["temperature"]
    if t == 1.0:
        return {"model": metrics["calibration"]["bins_uniform"]}
    return {"uncalibrated (T=1)": expected_calibration_error(margins, temperature=1.0)[1],
            f"calibrated (T={t:.2f})": metrics["calibration"]["bins_uniform"]}


def _score_sharded(model: RewardModel, comparisons, out_dir: Path, state, **kwargs) -> ScoredPairs | None:
    """Each process scores every N-th chunk; the main process merges the columns and predictions in input order
    (every process returns after the merge; only the main one gets the merged columns)."""
    rank, n = state.process_index, state.num_processes
    shard = score_stream(model, comparisons, out_dir / f".predictions.shard-{rank}", process_index=rank,
                         num_processes=n, **kwargs)
    (out_dir / f".scored.shard-{rank}.json").write_text(json.dumps(shard.to_json()))
    state.wait_for_everyone()
    merged = None
    if state.is_main_process:
        shards = [json.loads((out_dir / f".scored.shard-{r}.json").read_text()) for r in range(n)]
        merged = ScoredPairs.merge(shards)
        handles = [(out_dir / f".predictions.shard-{r}").open() for r in range(n)]
        written = [0] * n
        with (out_dir / "predictions.jsonl").open("w") as fh:  # the same chunk order, by decided pairs per chunk
            for k in itertools.count():
                r = k % n
                if k // n >= len(shards[r]["boundaries"]):
                    break
                end = shards[r]["boundaries"][k // n]["chosen"]
                fh.writelines(itertools.islice(handles[r], end - written[r]))
                written[r] = end
        for r, h in enumerate(handles):
            h.close()
            (out_dir / f".predictions.shard-{r}").unlink()
            (out_dir / f".scored.shard-{r}.json").unlink()
    state.wait_for_everyone()
    return merged


def _check_group_by(group_by: Sequence[str], scored: ScoredPairs, sample: Sequence[Comparison], data: str) -> None:
    """A group_by field that no comparison has is a typo, not a breakdown into one group."""
    for name in group_by:
        if scored.fields[name] and all(v is None for v in scored.fields[name]):
            present = sorted({k for c in sample for k in ("labeler", "attribute", "group") if c.field_value(k)}
                             | {k for c in sample for k in c.meta})
            raise ValueError(f"group_by {name!r}: no comparison of {data} has this field; fields there: "
                             f"{', '.join(['prompt', *present])}")


def evaluate(model_path: str, data: str, out_dir: Path, *, data_cfg: DataConfig | None = None,
             group_by: Sequence[str] = (), batch_size: int = 32, plots: bool = True, n_boot: int = 1000,
             progress: bool = True, model: RewardModel | None = None, chunk_size: int = 512,
             comparisons: Sequence[Comparison] | None = None) -> EvalResult:
    """Evaluate a reward model on preference data and write metrics, predictions, plots and a report.

    ``comparisons``, when given, are evaluated instead of reading ``data`` (which then only names them).
    """
    data_cfg = data_cfg or DataConfig()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    state = PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))  # under accelerate launch: one shard each
    model = model or RewardModel.from_pretrained(model_path, device=str(state.device) if state.num_processes > 1
                                                 else None)
    if comparisons is None and is_stepwise(data_cfg, data):  # a label per step: a process reward model's data
        metrics = evaluate_stepwise(model, data, out_dir, data_cfg=data_cfg, batch_size=batch_size, plots=plots,
                                    n_boot=n_boot)
        return EvalResult(out_dir, {"model": str(model_path), **metrics})
    report = LoadReport(source=data)

    def read(into: LoadReport) -> Iterator[Comparison]:
        if comparisons is not None:
            return iter(comparisons)
        return iter_comparisons(data, data_cfg, into, render_chat=model.processor.render_chat, repeated="keep")

    stream = read(report)
    first = list(itertools.islice(stream, INVARIANCE_SAMPLE))
    options = dict(group_by=group_by, batch_size=batch_size, min_rating_diff=data_cfg.min_rating_diff,
                   progress=progress, chunk_size=chunk_size)
    if state.num_processes == 1:
        scored = score_stream(model, itertools.chain(first, stream), out_dir / "predictions.jsonl", **options)
    else:
        scored = _score_sharded(model, itertools.chain(first, stream), out_dir, state, **options)
        if not state.is_main_process:
            return EvalResult(out_dir=out_dir, metrics={})
    _check_group_by(group_by, scored, first, data)
    metrics = {"model": str(model_path), "data": data, **summarize(scored, temperature=model.temperature,
                                                                   group_by=group_by, n_boot=n_boot)}
    if (outcomes := three_way_block(scored, model, model_path)) is not None:
        metrics["outcomes"] = outcomes
    metrics.update(benchmark_extras(model, scored, first, lambda: read(LoadReport(source=data)),
                                    batch_size=batch_size, n_boot=n_boot))
    if model.is_ensemble:  # the ensemble against its members, and whether its uncertainty finds its errors
        metrics["ensemble"] = ensemble_breakdown(model, list(read(LoadReport(source=data))), batch_size=batch_size)
    if model.personalized:  # each labeler's own reward against the population reward
        metrics["personal"] = labeler_breakdown(model, list(read(LoadReport(source=data))), batch_size=batch_size,
                                                n_boot=n_boot)
    if "debias" in model.metadata:  # trained with train.debias: say which reward these scores are
        metrics["length_bias"]["debias"] = model.metadata["debias"]
    triples = [(c.prompt, c.responses[p.winner], c.responses[p.loser]) for c in first for p in c.pairs[:1]
               if not p.tie]
    single = model.kind.prepare is None  # the checks score single responses
    metrics["invariance"] = run_invariance_checks(model, *zip(*triples)) if triples and single else []
    metrics["data_report"] = report.__dict__
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    if plots:
        figures = {
            "reliability": P.reliability_diagram(_reliability_curves(metrics, scored.margins),
                                                 out_dir / "reliability.png"),
            "rewards": P.reward_distributions(scored.chosen, scored.rejected, out_dir / "rewards.png"),
            "training": P.training_curves(P.read_history(Path(model_path).parent / "history.jsonl"),
                                          out_dir / "training_curves.png"),
        }
        for name, groups in metrics["groups"].items():
            figures[f"group_{name}"] = P.group_accuracy(name, groups, out_dir / f"accuracy_by_{name}.png")
        if metrics.get("personal", {}).get("labelers"):
            figures["labelers"] = plot_gains(metrics["personal"], out_dir / "labeler_gains.png")
        if "outcomes" in metrics:
            figures["outcome_reliability"] = P.plot_outcome_reliability(metrics["outcomes"],
                                                                        out_dir / "outcome_reliability.png")
            figures["confusion"] = P.plot_confusion(metrics["outcomes"], out_dir / "confusion.png")
        if "attributes" in metrics:
            figures["attributes"] = P.group_accuracy("attribute", metrics["attributes"],
                                                     out_dir / "accuracy_by_attribute.png")
        render_report(out_dir / "report.html", metrics=metrics, plots=figures, worst=scored.worst,
                      config_text=_config_text(model_path), title=f"Reward model evaluation: {Path(model_path).name}")
    return EvalResult(out_dir=out_dir, metrics=metrics)


FOLD_METRICS = {"accuracy": ("overall", "accuracy", "value"), "roc_auc": ("overall", "roc_auc", "value"),
                "log_loss": ("overall", "log_loss", "value"), "ece": ("overall", "ece", "value"),
                "brier": ("overall", "brier", "value"), "three_way_accuracy": ("outcomes", "accuracy"),
                "three_way_log_loss": ("outcomes", "log_loss"), "three_way_macro_f1": ("outcomes", "macro_f1")}


def _headline(metrics: dict) -> dict:
    out = {}
    for name, path in FOLD_METRICS.items():
        value = metrics
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        if isinstance(value, (int, float)):
            out[name] = value
    return {"pairs": metrics["pairs"], **out}


def evaluate_folds(run_dir: str | Path, data: str, out_dir: Path, *, data_cfg: DataConfig | None = None,
                   **options) -> EvalResult:
    """Evaluate a cross-validation run (``train`` with ``data.folds`` = k, models under ``fold-<k>/model``).

    On the data the run was cross-validated on, each fold's model is evaluated on its own held-out
    fold (the same split: same reading options, ``data.split_by``, ``data.stratify`` and
    ``data.seed``, from the run's saved config), so every judgement is scored by a model that never
    trained on it. On any other data, every fold's model is evaluated on all of it. Writes each fold's
    evaluation under ``<out_dir>/fold-<k>`` and ``<out_dir>/cv_metrics.json`` (headline metrics per
    fold, their mean and standard deviation over folds).
    """
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    cfg = load_config(run_dir / "fold-0" / "config.yaml")
    models = [run_dir / f"fold-{k}" / "model" for k in range(cfg.data.folds)]
    missing = [str(m) for m in models if not m.is_dir()]
    if missing:
        raise ValueError(f"{run_dir}: a {cfg.data.folds}-fold run, but {missing[0]} is missing (was it cut short?)")
    first = RewardModel.from_pretrained(str(models[0]))
    own = Path(data).resolve() == Path(cfg.data.train).resolve()
    data_cfg = cfg.data if own else data_cfg or DataConfig()  # the run's own reading options on its own data
    if own:
        comps, report = load_comparisons(data, cfg.data, render_chat=first.processor.render_chat)
        parts = [held for _, held in kfold_splits(comps, cfg.data.folds, split_by=cfg.data.split_by,
                                                  stratify=cfg.data.stratify, seed=cfg.data.seed)]
    else:
        comps, report = load_comparisons(data, data_cfg, render_chat=first.processor.render_chat, repeated="keep")
        parts = [comps] * cfg.data.folds
    per_fold = []
    for k, (path, part) in enumerate(zip(models, parts)):
        model = first if k == 0 else RewardModel.from_pretrained(str(path))
        result = evaluate(str(path), data, out_dir / f"fold-{k}", data_cfg=data_cfg, model=model, comparisons=part,
                          **options)
        per_fold.append(_headline(result.metrics))
    metrics = {"model": str(run_dir), "data": data, "folds": cfg.data.folds,
               "held_out": "own fold" if own else "all data, every fold's model", "source": report.__dict__,
               "per_fold": per_fold, **fold_summary(per_fold)}
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "cv_metrics.json").write_text(json.dumps(metrics, indent=2))
    return EvalResult(out_dir=out_dir, metrics=metrics)


def calibrate(model_path: str, data: str, *, data_cfg: DataConfig | None = None, holdout: float = 0.5,
              seed: int = 0) -> dict:
    """Fit a temperature on (part of) ``data``, store it in the model, report ECE before and after.

    With ``holdout`` > 0 the data is split by prompt: T is fitted on one part and the
    ECE is reported on the other, so the "after" number is not measured on the data it was fitted to.
    """
    data_cfg = data_cfg or DataConfig()
    model = RewardModel.from_pretrained(model_path)
    comps = list(iter_comparisons(data, data_cfg, LoadReport(source=data),
                                  render_chat=model.processor.render_chat))
    fit_part, check_part = split_by_group(comps, holdout, split_by=data_cfg.split_by, seed=seed) if holdout else (
        comps, comps)
    if not fit_part or not check_part:
        raise ValueError(f"too little data to hold out {holdout:.0%} for checking; use --holdout 0")

    fit_m, check_m = pair_margins(model, fit_part), pair_margins(model, check_part)
    temperature = fit_temperature(fit_m)
    info = {"fitted_on": data, "fit_pairs": int(len(fit_m)), "check_pairs": int(len(check_m)),
            "ece_before": expected_calibration_error(check_m, temperature=model.temperature)[0],
            "ece_after": expected_calibration_error(check_m, temperature=temperature)[0],
            "previous_temperature": model.temperature}
    store_temperature(model_path, temperature, info)
    return {"temperature": temperature, **info}
