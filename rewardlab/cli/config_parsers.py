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
    p.add_argument("--data", help="Candidates JSONL (from `rewardlab generate`); needed to start a new store.")
    p.add_argument("--out", help="The label store: a .sqlite file (default: <data>.labels.sqlite beside the "
                   "candidates), a PostgreSQL URL, or a rankings .jsonl (the store is then the .sqlite beside it; "
                   "answers already in the .jsonl are imported once and it is kept up to date).")
    p.add_argument("--export", metavar="FILE", help="Write the store's rankings to this JSONL (what `rewardlab "
                   "train` reads) and exit, serving nothing.")
    p.add_argument("--port", type=int, default=8765, help="Port on 127.0.0.1 (0 = any free port).")
    p.add_argument("--labeler", default=None, help="Default labeler name (a name given in the page's address or "
                   "remembered by the browser comes first; default: $USER).")
    p.add_argument("--model", help="Reward model whose order is shown after each answer, with the agreement.")
    p.add_argument("--per-prompt", type=positive_int, default=None, metavar="K", help="Show each prompt to at most "
                   "K labelers (default: everyone sees every prompt); implies --shuffle.")
    p.add_argument("--shuffle", action="store_true", help="Each labeler meets the prompts in an order of their own "
                   "(fixed per name) instead of the file's order.")
    p.add_argument("--checks", metavar="FILE", help="Known-answer check items (prompt, responses, ranks) mixed into "
                   "every labeler's queue; /api/agreement reports each labeler's agreement with them.")
    p.add_argument("--check-every", type=positive_int, default=10, metavar="N",
                   help="One check item after every N prompts.")
    p.add_argument("--select", choices=("random", "uncertain", "disagree"), help="Order the queue: the prompts "
                   "the reward model is least sure of first (an ensemble's spread, or a single model's smallest "
                   "margin), those labelers disagree on most first, or at random (default: the file's order).")
    p.add_argument("--retrain-every", type=positive_int, metavar="N", help="With --select uncertain: after every "
                   "N answers, train a model on the rankings so far in the background and reorder.")
    p.add_argument("--train-config", metavar="YAML", help="The `rewardlab train` config --retrain-every uses "
                   "(its data.train is the store's rankings).")

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
