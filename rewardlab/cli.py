"""Command line: a thin shell over the library.

    rewardlab train --config cfg.yaml [--data FILE] [--out DIR] [--set train.epochs=2 ...] [--resume]
    rewardlab eval  --model DIR --data FILE [--out DIR] [--group-by FIELD ...]
    rewardlab score --model DIR --data FILE --out FILE [--normalize zscore]
    rewardlab calibrate --model DIR --data FILE
    rewardlab adapt --model DIR --data FILE --labeler ID
    rewardlab compare EVAL_DIR EVAL_DIR ...
    rewardlab demo  [--task text|image] [--out runs/demo]
    rewardlab tune  --config cfg.yaml --space space.yaml --trials N [--storage URL] [--study NAME] [--refit]
    rewardlab generate --policy MODEL --prompts prompts.txt --n 4 [--temperature 0.7,1.0] --out candidates.jsonl
    rewardlab label --data candidates.jsonl --out rankings.jsonl [--port 8765] [--labeler NAME] [--model RM]
    rewardlab best-of-n --policy MODEL --model RM --prompts prompts.txt --n 8 [--out best.jsonl]
    rewardlab serve --model DIR [--model NAME=DIR ...] [--host 127.0.0.1] [--port 8000]

User mistakes (bad config, bad data) print one line naming what and where, and
exit with status 2; no traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from rewardlab.config import describe, load_config


def positive_int(text: str) -> int:
    """argparse type: a whole number >= 1 (a batch or chunk of 0 would silently do nothing)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def _add_data_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="File or hf:NAME to read (same forms as data.train).")
    p.add_argument("--format", default="auto", help="Row format (auto, pairs, implicit_prompt, chat, rankings, ratings, item_ratings, ab).")
    p.add_argument("--on-bad-row", choices=("error", "skip"), default="error",
                   help="Stop at the first invalid row, or skip and report invalid rows.")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="data.KEY=VALUE",
                   help="Override a data option, e.g. --set data.min_rating_diff=2.")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rewardlab", description=__doc__.split("\n\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="Log more.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="Train a reward model.")
    p.add_argument("--config", help="YAML config (see `rewardlab options`).")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="Override a config value; repeatable.")
    p.add_argument("--resume", action="store_true", help="Continue the run in train.output_dir from its last state.")
    p.add_argument("--data", help="Shortcut for --set data.train=FILE.")
    p.add_argument("--eval-data", help="Shortcut for --set data.eval=FILE.")
    p.add_argument("--out", help="Shortcut for --set train.output_dir=DIR.")
    p.add_argument("--on-bad-row", choices=("error", "skip"), help="Shortcut for --set data.on_bad_row=...")

    p = sub.add_parser("eval", help="Evaluate a reward model on preference data.")
    p.add_argument("--model", required=True, help="rewardlab checkpoint, HF folder or hub id; or the output folder "
                   "of a cross-validation run (train with data.folds): each fold's model is evaluated, on its own "
                   "held-out fold when --data is the data it was cross-validated on.")
    _add_data_options(p)
    p.add_argument("--out", help="Output folder (default: <model>/../eval).")
    p.add_argument("--group-by", nargs="*", default=[], help="Fields to break metrics down by.")
    p.add_argument("--batch-size", type=positive_int, default=32)
    p.add_argument("--no-plots", action="store_true", help="Skip plots and the HTML report.")
    p.add_argument("--chunk-size", type=positive_int, default=512, help="Comparisons per chunk (the unit each process "
                   "of `accelerate launch` takes in turn).")

    p = sub.add_parser("score", help="Score (prompt, response) rows and write them with their rewards.")
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True, help="JSONL/JSON/CSV/Parquet rows with prompt and response "
                   "(or chosen/rejected) columns.")
    p.add_argument("--out", required=True, help="JSONL file to write.")
    p.add_argument("--normalize", choices=("none", "zscore", "sigmoid", "prompt_mean"), default="none",
                   help="zscore: with the training rewards' mean and std stored in the checkpoint; prompt_mean: "
                   "each reward minus the mean reward of every response in the file to the same prompt.")
    p.add_argument("--batch-size", type=positive_int, default=32)
    p.add_argument("--resume", action="store_true", help="Continue an interrupted run: chunks already written are "
                   "kept, not rescored.")
    p.add_argument("--chunk-size", type=positive_int, default=1024,
                   help="Rows per chunk (the unit of sharding and resume).")

    p = sub.add_parser("calibrate", help="Fit a temperature on validation data and store it with the model.")
    p.add_argument("--model", required=True, help="Local model folder (the temperature is written into it).")
    _add_data_options(p)
    p.add_argument("--holdout", type=float, default=0.5,
                   help="Fraction of prompts held out to report ECE after fitting (0 = report on the fit data).")

    p = sub.add_parser("adapt", help="Onboard a new labeler into a personalised model from a few of their "
                       "judgements (trains only that labeler's parameters).")
    p.add_argument("--model", required=True, help="A personalised model folder.")
    _add_data_options(p)
    p.add_argument("--labeler", required=True, help="The new labeler's id.")
    p.add_argument("--out", help="Where to write the model with the new labeler (default: replace --model).")
    p.add_argument("--steps", type=positive_int, default=100, help="Full-batch Adam steps.")
    p.add_argument("--lr", type=float, default=0.05)

    p = sub.add_parser("compare", help="Put several evaluation folders side by side.")
    p.add_argument("runs", nargs="+", help="Folders written by `rewardlab eval`.")
    p.add_argument("--out", default="runs/compare", help="Where compare.md and the reliability overlay go.")

    p = sub.add_parser("demo", help="Train on the embedded data with the embedded backbone, evaluate, report.")
    p.add_argument("--task", choices=("text", "image"), default="text",
                   help="text: MiniLM on the embedded preference pairs; image: a multi-attribute image+text model "
                   "on generated pictures, beside a text-blind control.")
    p.add_argument("--out", help="Output folder (default runs/demo, or runs/demo-image for --task image).")
    p.add_argument("--set", dest="overrides", action="append", default=[])

    _add_preference_loop_parsers(sub)
    _add_serve_parser(sub)

    p = sub.add_parser("tune", help="Search hyperparameters with Optuna; workers running the same command "
                       "share one study.")
    p.add_argument("--config", help="Base YAML config (as for train).")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="Override a base config value (trials and best.yaml); repeatable.")
    p.add_argument("--trial-set", dest="trial_overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="Override for trials only, e.g. train.max_steps=200 or data.max_examples=2000; --refit "
                   "and best.yaml leave it out.")
    p.add_argument("--space", required=True, help="YAML: dotted option -> {type: float|int|categorical, low, "
                   "high, log, step, choices}.")
    p.add_argument("--trials", type=positive_int, required=True, help="Trials in the study, over all workers.")
    p.add_argument("--metric", dest="metrics", action="append", default=[], metavar="NAME",
                   help="Validation metric to optimise (default accuracy); repeat for several objectives.")
    p.add_argument("--pruner", choices=("none", "median", "hyperband"),
                   help="Stop unpromising trials early (default median with one metric).")
    p.add_argument("--storage", help="sqlite:///FILE, postgresql://..., mysql+pymysql://... or journal:FILE "
                   "(default: sqlite in --out).")
    p.add_argument("--study", default="rewardlab", help="Study name the workers share.")
    p.add_argument("--out", help="Folder for trials, best.yaml and the report (default runs/tune/STUDY).")
    p.add_argument("--timeout", type=float, help="Seconds after which this worker starts no new trial.")
    p.add_argument("--seed", type=int, help="Sampler seed (give each worker its own, or none).")
    p.add_argument("--heartbeat", type=positive_int, default=60,
                   help="Seconds between heartbeats; a trial silent for twice that is failed and retried.")
    p.add_argument("--save-models", action="store_true", help="Keep each trial's model (off: saves disk).")
    p.add_argument("--refit", action="store_true", help="Then train best.yaml in full.")

    sub.add_parser("options", help="List every config option with its default and help.")
    sub.add_parser("backbones", help="List registered backbones.")
    sub.add_parser("kinds", help="List registered model kinds.")
    sub.add_parser("losses", help="List registered losses.")
    return parser


def _help(config_cls, name: str) -> str:
    """An option's help, from its config field (the one place it is documented)."""
    import dataclasses

    f = {f.name: f for f in dataclasses.fields(config_cls)}[name]
    default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
    return f"{f.metadata['help']} (default: {default})"


def _add_preference_loop_parsers(sub) -> None:
    from rewardlab.best_of_n import BestOfNConfig
    from rewardlab.generate import GenerateConfig

    p = sub.add_parser("generate", help="Sample K responses per prompt from a causal LM, for people to rank.")
    p.add_argument("--policy", default=GenerateConfig.policy, help=_help(GenerateConfig, "policy"))
    p.add_argument("--prompts", required=True, help="Prompts: .txt (one per line) or .jsonl (a 'prompt' field).")
    p.add_argument("--out", required=True, help="JSONL to write; an existing one is continued.")
    p.add_argument("--n", type=positive_int, default=GenerateConfig.n, help=_help(GenerateConfig, "n"))
    p.add_argument("--temperature", default=",".join(map(str, GenerateConfig.temperatures)),
                   help=_help(GenerateConfig, "temperatures"))
    for name in ("top_p", "max_new_tokens", "seed", "batch_size", "max_retries"):
        default = getattr(GenerateConfig, name)
        p.add_argument(f"--{name.replace('_', '-')}", type=type(default), default=default,
                       help=_help(GenerateConfig, name))

    p = sub.add_parser("label", help="Rank candidates in the browser (a page served on 127.0.0.1).")
    p.add_argument("--data", required=True, help="Candidates JSONL (from `rewardlab generate`).")
    p.add_argument("--out", required=True, help="Rankings JSONL; answers already in it are kept and resumed.")
    p.add_argument("--port", type=int, default=8765, help="Port on 127.0.0.1 (0 = any free port).")
    p.add_argument("--labeler", default=None, help="Default labeler name (the page can change it; default: $USER).")
    p.add_argument("--model", help="Reward model whose order is shown after each answer, with the agreement.")

    p = sub.add_parser("best-of-n", help="Sample N per prompt, keep the best by reward, report the gain.")
    p.add_argument("--policy", default=BestOfNConfig.policy, help=_help(BestOfNConfig, "policy"))
    p.add_argument("--model", required=True, help="Reward model folder.")
    p.add_argument("--prompts", required=True, help="Prompts: .txt (one per line) or .jsonl (a 'prompt' field).")
    p.add_argument("--out", help="JSONL with each prompt's best response, greedy response, samples and rewards.")
    for name in ("n", "temperature", "top_p", "max_new_tokens", "seed", "batch_size"):
        default = getattr(BestOfNConfig, name)
        p.add_argument(f"--{name.replace('_', '-')}", type=type(default), default=default,
                       help=_help(BestOfNConfig, name))


def _add_serve_parser(sub) -> None:
    from rewardlab.serve.config import BatcherConfig, ServeConfig

    p = sub.add_parser("serve", help="Serve reward scores over HTTP (POST /v1/score, OpenRLHF's /get_reward).")
    p.add_argument("--model", dest="models", action="append", required=True, metavar="[NAME=]DIR",
                   help="Reward model folder, optionally named; repeat to serve several (the first is the default).")
    p.add_argument("--device", help="cuda or cpu (default: cuda when available).")
    for name in ("host", "port", "max_items", "max_text_chars", "max_body_bytes", "openrlhf_normalize"):
        default = getattr(ServeConfig, name)
        p.add_argument(f"--{name.replace('_', '-')}", type=type(default), default=default,
                       help=_help(ServeConfig, name))
    for name in ("max_batch_tokens", "max_wait_ms", "wait_for", "max_queue_items"):
        default = getattr(BatcherConfig, name)
        p.add_argument(f"--{name.replace('_', '-')}", type=type(default), default=default,
                       help=_help(BatcherConfig, name))
    p.add_argument("--pass-overhead-tokens", type=int, help=_help(BatcherConfig, "pass_overhead_tokens"))
    p.add_argument("--no-batching", action="store_true", help="Give each request its own forward passes "
                   "(the baseline of the load test).")
    p.add_argument("--model-process", action="store_true", help=_help(ServeConfig, "model_process"))


def _cmd_serve(args) -> int:
    from rewardlab.serve.app import serve
    from rewardlab.serve.config import BatcherConfig, ServeConfig

    batcher = BatcherConfig(batching=not args.no_batching, max_batch_tokens=args.max_batch_tokens,
                            max_wait_ms=args.max_wait_ms, wait_for=args.wait_for,
                            max_queue_items=args.max_queue_items, pass_overhead_tokens=args.pass_overhead_tokens)
    cfg = ServeConfig(host=args.host, port=args.port, max_items=args.max_items, max_text_chars=args.max_text_chars,
                      max_body_bytes=args.max_body_bytes, openrlhf_normalize=args.openrlhf_normalize, batcher=batcher,
                      model_process=args.model_process)
    serve(args.models, cfg, device=args.device, announce=lambda text: print(text, flush=True))
    return 0


def _cmd_generate(args) -> int:
    from rewardlab.generate import GenerateConfig, generate_candidates, parse_temperatures

    cfg = GenerateConfig(policy=args.policy, n=args.n, temperatures=parse_temperatures(args.temperature),
                         top_p=args.top_p, max_new_tokens=args.max_new_tokens, seed=args.seed,
                         batch_size=args.batch_size, max_retries=args.max_retries)
    c = generate_candidates(cfg, args.prompts, args.out)
    print(f"{c['written']} prompts written, {c['resumed']} already there, of {c['prompts']} -> {args.out}; "
          f"{c['regenerated']} empty or repeated responses regenerated, {c['dropped_duplicates']} dropped"
          + (f"; {c['not_written']} prompts left out (fewer than 2 distinct responses)" if c["not_written"] else ""))
    return 0


def _cmd_label(args) -> int:
    import getpass

    from rewardlab.label.server import serve

    try:
        labeler = args.labeler or getpass.getuser()
    except (KeyError, OSError):  # no login name (some containers)
        labeler = "anonymous"
    serve(args.data, args.out, port=args.port, labeler=labeler, model=args.model,
          announce=lambda text: print(text, flush=True))
    return 0


def _cmd_best_of_n(args) -> int:
    from rewardlab.best_of_n import BestOfNConfig, best_of_n
    from rewardlab.scoring import RewardModel

    cfg = BestOfNConfig(policy=args.policy, n=args.n, temperature=args.temperature, top_p=args.top_p,
                        max_new_tokens=args.max_new_tokens, seed=args.seed, batch_size=args.batch_size)
    result = best_of_n(cfg, RewardModel.from_pretrained(args.model), args.prompts, out=args.out)
    print(result.summary() + (f"\nwritten to {args.out}" if args.out else ""))
    return 0


def _cmd_train(args) -> int:
    from rewardlab.train.run import train

    shortcuts = {"data.on_bad_row": args.on_bad_row, "data.train": args.data, "data.eval": args.eval_data,
                 "train.output_dir": args.out}
    # Shortcuts come first so an explicit --set of the same key wins.
    overrides = [f"{key}={value}" for key, value in shortcuts.items() if value] + list(args.overrides)
    cfg = load_config(args.config, overrides)
    if cfg.data.folds > 1:
        from rewardlab.train.run import cross_validate

        cv = cross_validate(cfg)
        if _main_process():
            for name in ("accuracy", "log_loss", "three_way_accuracy", "three_way_log_loss"):
                if name in cv["mean"]:
                    print(f"{name}: {cv['mean'][name]:.4f} ± {cv['std'][name]:.4f} over {cv['folds']} folds")
            print(f"per-fold models and metrics: {cfg.train.output_dir}/fold-*/; summary: "
                  f"{cfg.train.output_dir}/cv_metrics.json")
        return 0
    if cfg.train.ensemble_size > 1:
        from rewardlab.train.ensemble import train_ensemble

        result = train_ensemble(cfg)
        if _main_process():
            if m := result.metrics.get("eval"):
                members = ", ".join(f"{a:.3f}" for a in m["member_accuracy"])
                print(f"ensemble of {m['members']}: accuracy {m['accuracy']:.3f} (members {members}); "
                      f"uncertainty finds errors with AUROC {m['std_auroc_for_errors']}")
            print(f"model: {result.model_dir}")
        return 0
    result = train(cfg, resume=args.resume)
    if _main_process():
        _print_metrics(result.metrics)
        print(f"model: {result.model_dir}\nmetrics: {Path(cfg.train.output_dir) / 'metrics.json'}")
    return 0


def _main_process() -> bool:
    """Whether this process reports: the main one under ``accelerate launch``, the only one otherwise."""
    from accelerate import PartialState

    return PartialState().is_main_process


def _print_metrics(metrics: dict) -> None:
    for split in ("train", "eval"):
        if split in metrics:
            m = metrics[split]
            print(f"{split:>5}: accuracy {m['accuracy']:.3f}  log-loss {m['log_loss']:.3f}  "
                  f"mean margin {m['mean_margin']:.3f}  ({m['pairs']} pairs)")


def _data_config(args):
    overrides = [f"data.format={args.format}", f"data.on_bad_row={args.on_bad_row}"] + list(args.overrides)
    return load_config(None, overrides).data


def _cmd_eval(args) -> int:
    from rewardlab.evaluation.run import evaluate

    folds = (Path(args.model) / "cv_metrics.json").is_file()  # a cross-validation run: every fold's model
    if args.out:
        out = Path(args.out)
    elif folds:
        out = Path(args.model) / "eval"
    elif Path(args.model).is_dir():
        out = Path(args.model).resolve().parent / "eval"
    else:  # a hub id
        out = Path("runs") / f"eval-{args.model.replace('/', '--')}"
    options = dict(data_cfg=_data_config(args), group_by=args.group_by, batch_size=args.batch_size,
                   plots=not args.no_plots, chunk_size=args.chunk_size)
    if folds:
        from rewardlab.evaluation.run import evaluate_folds

        result = evaluate_folds(args.model, args.data, out, **options)
    else:
        result = evaluate(args.model, args.data, out, **options)
    if result.metrics:  # under accelerate launch, the main process reports
        print(result.summary())
    return 0


def _cmd_score(args) -> int:
    from rewardlab.data.sources import read_rows
    from rewardlab.evaluation.score_file import score_rows

    from rewardlab.scoring import RewardModel

    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    state = PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))  # one shard per process under accelerate
    model = RewardModel.from_pretrained(args.model, device=str(state.device))
    n = score_rows(model, read_rows(args.data), Path(args.out), normalize=args.normalize, batch_size=args.batch_size,
                   resume=args.resume, process_index=state.process_index, num_processes=state.num_processes,
                   wait=state.wait_for_everyone, chunk_size=args.chunk_size)
    if state.is_main_process:
        print(f"scored {n} rows -> {args.out}" + (f" ({state.num_processes} processes)" if state.num_processes > 1
                                                   else ""))
    return 0


def _cmd_calibrate(args) -> int:
    from rewardlab.evaluation.run import calibrate

    info = calibrate(args.model, args.data, data_cfg=_data_config(args), holdout=args.holdout)
    print(f"temperature {info['temperature']:.4f} (fitted on {info['fit_pairs']} pairs); ECE on "
          f"{info['check_pairs']} pairs: {info['ece_before']:.4f} before -> {info['ece_after']:.4f} after; "
          f"stored in {args.model}/config.json")
    return 0


def _cmd_adapt(args) -> int:
    from rewardlab.adapt import adapt

    r = adapt(args.model, args.data, args.labeler, args.out, data_cfg=_data_config(args), steps=args.steps, lr=args.lr)
    print(f"labeler {r.labeler!r}: {r.pairs} judgements, accuracy on them {r.accuracy_before:.3f} (population) -> "
          f"{r.accuracy_after:.3f} (personal), {r.seconds:.1f} s; written to {r.model_dir}")
    return 0


def _cmd_compare(args) -> int:
    from rewardlab.evaluation.compare import compare

    print(compare(args.runs, Path(args.out)))
    print(f"written to {args.out}/compare.md and {args.out}/compare_reliability.png")
    return 0


def _cmd_demo(args) -> int:
    if args.task == "image":
        from rewardlab.demo_image import run_image_demo

        run_image_demo(Path(args.out or "runs/demo-image"), args.overrides)
        return 0
    from rewardlab.demo import run_demo

    run_demo(Path(args.out or "runs/demo"), args.overrides)
    return 0


def _cmd_tune(args) -> int:
    from rewardlab.tune import TuneSettings, run_tune

    settings = TuneSettings(
        space=args.space, trials=args.trials, config=args.config, overrides=tuple(args.overrides),
        trial_overrides=tuple(args.trial_overrides), out=args.out or f"runs/tune/{args.study}",
        storage=args.storage, study=args.study, metrics=tuple(args.metrics or ["accuracy"]), pruner=args.pruner,
        timeout=args.timeout, seed=args.seed, heartbeat=args.heartbeat, save_models=args.save_models,
        refit=args.refit)
    result = run_tune(settings)
    if result.refit is not None:
        _print_metrics(result.refit.metrics)
        print(f"model: {result.refit.model_dir}")
    return 0


def _cmd_options(args) -> int:
    for name, default, help_text in describe():
        print(f"{name} = {default!r}\n    {help_text}")
    return 0


def _cmd_backbones(args) -> int:
    from rewardlab.models.backbones import list_backbones

    print("\n".join(list_backbones()))
    return 0


def _cmd_kinds(args) -> int:
    from rewardlab.models.base import get_kind, list_kinds

    for name in list_kinds():
        print(f"{name}: {get_kind(name).help}")
    return 0


def _cmd_losses(args) -> int:
    from rewardlab.losses import LOSSES, OUTCOME_LOSS_HELP, loss_names

    for name in loss_names():
        text = OUTCOME_LOSS_HELP[name] if name in OUTCOME_LOSS_HELP else (LOSSES[name].__doc__ or "").strip()
        print(f"{name}: {text.splitlines()[0]}")
    return 0


COMMANDS = {"train": _cmd_train, "eval": _cmd_eval, "score": _cmd_score, "demo": _cmd_demo,
            "calibrate": _cmd_calibrate, "adapt": _cmd_adapt, "compare": _cmd_compare, "tune": _cmd_tune, "generate": _cmd_generate, "label": _cmd_label,
            "best-of-n": _cmd_best_of_n, "serve": _cmd_serve,
            "options": _cmd_options, "backbones": _cmd_backbones, "kinds": _cmd_kinds, "losses": _cmd_losses}


def _quiet_transformers() -> None:
    """Hide load reports and weight-loading bars: the demo's output should be ours."""
    import os

    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:
        pass


def _leave_process_group() -> None:
    """End the process group that ``accelerate launch`` joined, once the command has succeeded on every process.

    Library calls (``train``, ``evaluate``, ``score_rows``) leave it up: cross-validation and ensembles train
    on it again. Here no DDP wrapper is left, so the group dies through its Python reference, which releases
    the GIL; destroyed from a wrapper's C++ reducer, it joined gloo's worker threads with the GIL held, and a
    worker still freeing a finished collective's Python tensors waited for it (a hang after training, about
    one two-process run in 80). After a failure the group stays: other processes may still be in a collective.
    """
    if "torch" not in sys.modules:  # a command that never loaded torch joined no group
        return
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    if not args.verbose:
        _quiet_transformers()
    try:
        code = COMMANDS[args.command](args)
        _leave_process_group()
        return code
    except (ValueError, OSError) as err:
        if args.verbose:
            raise
        print(f"rewardlab {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
