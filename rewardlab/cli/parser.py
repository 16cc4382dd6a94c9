"""The argparse tree of ``rewardlab``: one subparser per command.

Options of a config dataclass are generated from its fields (:mod:`rewardlab.cli.config_parsers`); the
commands here take files, folders and ``--set`` overrides of the experiment config, written by hand.
"""

from __future__ import annotations

import argparse

from rewardlab.cli.config_parsers import (
    add_generation_parsers,
    add_serve_parser,
    add_tune_parser,
)
from rewardlab.cli.flags import positive_int

DESCRIPTION = "Command line: a thin shell over the library."


def build_parser() -> argparse.ArgumentParser:
    """The parser of every ``rewardlab`` command (builds without importing torch)."""
    parser = argparse.ArgumentParser(prog="rewardlab", description=DESCRIPTION)
    parser.add_argument("-v", "--verbose", action="store_true", help="Log more.")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_train_parser(sub)
    _add_eval_parsers(sub)
    _add_model_data_parsers(sub)
    _add_demo_parser(sub)
    add_generation_parsers(sub)
    add_serve_parser(sub)
    add_tune_parser(sub)
    sub.add_parser("options", help="List every config option with its default and help.")
    sub.add_parser("backbones", help="List registered backbones.")
    sub.add_parser("kinds", help="List registered model kinds.")
    sub.add_parser("losses", help="List registered losses.")
    return parser


def _add_data_options(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument("--data", required=required, help="File or hf:NAME to read (same forms as data.train).")
    p.add_argument("--format", default="auto", help="Row format (auto, pairs, implicit_prompt, chat, rankings, "
                   "ratings, item_ratings, ab).")
    p.add_argument("--on-bad-row", choices=("error", "skip"), default="error",
                   help="Stop at the first invalid row, or skip and report invalid rows.")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="data.KEY=VALUE",
                   help="Override a data option, e.g. --set data.min_rating_diff=2.")


def _add_train_parser(sub) -> None:
    p = sub.add_parser("train", help="Train a reward model.")
    p.add_argument("--config", help="YAML config (see `rewardlab options`).")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="Override a config value; repeatable.")
    p.add_argument("--resume", action="store_true", help="Continue the run in train.output_dir from its last state.")
    p.add_argument("--data", help="Shortcut for --set data.train=FILE.")
    p.add_argument("--eval-data", help="Shortcut for --set data.eval=FILE.")
    p.add_argument("--out", help="Shortcut for --set train.output_dir=DIR.")
    p.add_argument("--on-bad-row", choices=("error", "skip"), help="Shortcut for --set data.on_bad_row=...")


def _add_eval_parsers(sub) -> None:
    """``eval`` and ``score``: run a model over a data file."""
    p = sub.add_parser("eval", help="Evaluate a reward model on preference data.")
    p.add_argument("--model", required=True, action="append", help="rewardlab checkpoint, HF folder or hub id; or "
                   "the output folder of a cross-validation run (train with data.folds): each fold's model is "
                   "evaluated, on its own held-out fold when --data is the data it was cross-validated on. Repeat "
                   "to evaluate several models and write one table of them (--compare-out).")
    _add_data_options(p, required=False)
    p.add_argument("--suite", action="append", default=[], metavar="NAME", help="A known benchmark instead of --data "
                   "(rewardbench, rewardbench2, llmbar, pandalm, mtbench_human, judgebench), downloaded from the hub; "
                   "offline, the error says which path to pass with --data. Repeatable.")
    p.add_argument("--out", help="Output folder (default: <model>/../eval/<data name>/, one folder per data set).")
    p.add_argument("--compare-out", default="runs/compare", help="Where the table across models and data sets goes "
                   "when several are evaluated (benchmarks.md, benchmarks.html).")
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


def _add_model_data_parsers(sub) -> None:
    """``calibrate``, ``adapt`` and ``compare``: change or compare models with a little data."""
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

    p = sub.add_parser("compare", help="Put evaluations side by side: one table across models and benchmarks.")
    p.add_argument("runs", nargs="+", help="Folders written by `rewardlab eval`, or run folders: every "
                   "metrics.json below them is read.")
    p.add_argument("--out", default="runs/compare", help="Where benchmarks.md / .html (and, for two or more eval "
                   "folders, compare.md and the reliability overlay) go.")


def _add_demo_parser(sub) -> None:
    p = sub.add_parser("demo", help="Train on the embedded data with the embedded backbone, evaluate, report.")
    p.add_argument("--task", choices=("text", "image", "prm"), default="text",
                   help="text: MiniLM on the embedded preference pairs; image: a multi-attribute image+text model "
                   "on generated pictures, beside a text-blind control; prm: a process reward model on generated "
                   "step-by-step solutions.")
    p.add_argument("--out", help="Output folder (default runs/demo, or runs/demo-<task> for the others).")
    p.add_argument("--set", dest="overrides", action="append", default=[])
