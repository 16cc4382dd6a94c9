"""Subcommands whose options are a config dataclass: serve, generate, best-of-n, tune (and label beside them).

Their flags are generated from the config's fields (:mod:`rewardlab.cli.flags`); the tables below list only
where a flag differs from what its field would give. Flags that are no config field (``--model``,
``--prompts``, ``--out``) are written here by hand.
"""

from __future__ import annotations

from rewardlab.best_of_n import BestOfNConfig
from rewardlab.cli.flags import Flag, add_config_flags, positive_int
from rewardlab.generate import GenerateConfig, parse_temperatures
from rewardlab.serve.config import ServeConfig
from rewardlab.tune.settings import PRUNERS, TuneSettings

SERVE_FLAGS: dict[str, Flag] = {}  # every serve flag is its field's (BatcherConfig's flattened in)
BEST_OF_N_FLAGS: dict[str, Flag] = {}
GENERATE_FLAGS = {
    "n": Flag(type=positive_int),
    "temperatures": Flag(name="--temperature", parse=parse_temperatures),  # --temperature 0.7,1.0
}
TUNE_FLAGS = {
    "overrides": Flag(name="--set", repeat=True, metavar="SECTION.KEY=VALUE"),
    "trial_overrides": Flag(name="--trial-set", repeat=True, metavar="SECTION.KEY=VALUE"),
    "trials": Flag(type=positive_int),
    "metrics": Flag(name="--metric", repeat=True, metavar="NAME"),
    "pruner": Flag(choices=PRUNERS),
    "out": Flag(default=None, shown_default="runs/tune/STUDY"),  # the command names the folder after the study
    "heartbeat": Flag(type=positive_int),
}

_PROMPTS_HELP = "Prompts: .txt (one per line) or .jsonl (a 'prompt' field)."


def add_generation_parsers(sub) -> None:
    """``generate``, ``label`` and ``best-of-n``: the preference-data loop."""
    p = sub.add_parser("generate", help="Sample K responses per prompt from a causal LM, for people to rank.")
    p.add_argument("--prompts", required=True, help=_PROMPTS_HELP)
    p.add_argument("--out", required=True, help="JSONL to write; an existing one is continued.")
    add_config_flags(p, GenerateConfig, GENERATE_FLAGS)

    p = sub.add_parser("label", help="Rank candidates in the browser (a page served on 127.0.0.1).")
    p.add_argument("--data", required=True, help="Candidates JSONL (from `rewardlab generate`).")
    p.add_argument("--out", required=True, help="Rankings JSONL; answers already in it are kept and resumed.")
    p.add_argument("--port", type=int, default=8765, help="Port on 127.0.0.1 (0 = any free port).")
    p.add_argument("--labeler", default=None, help="Default labeler name (the page can change it; default: $USER).")
    p.add_argument("--model", help="Reward model whose order is shown after each answer, with the agreement.")

    p = sub.add_parser("best-of-n", help="Sample N per prompt, keep the best by reward, report the gain.")
    p.add_argument("--model", required=True, help="Reward model folder.")
    p.add_argument("--prompts", required=True, help=_PROMPTS_HELP)
    p.add_argument("--out", help="JSONL with each prompt's best response, greedy response, samples and rewards.")
    add_config_flags(p, BestOfNConfig, BEST_OF_N_FLAGS)


def add_serve_parser(sub) -> None:
    p = sub.add_parser("serve", help="Serve reward scores over HTTP (POST /v1/score, OpenRLHF's /get_reward).")
    p.add_argument("--model", dest="models", action="append", required=True, metavar="[NAME=]DIR",
                   help="Reward model folder, optionally named; repeat to serve several (the first is the default).")
    p.add_argument("--device", help="cuda or cpu (default: cuda when available).")
    add_config_flags(p, ServeConfig, SERVE_FLAGS)


def add_tune_parser(sub) -> None:
    p = sub.add_parser("tune", help="Search hyperparameters with Optuna; workers running the same command "
                       "share one study.")
    add_config_flags(p, TuneSettings, TUNE_FLAGS)
