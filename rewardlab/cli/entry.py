"""``main``: parse, run one command, turn a user's mistake into one line and exit status 2."""

from __future__ import annotations

import logging
import sys

from rewardlab.cli import commands, data_commands, train_commands
from rewardlab.cli.parser import build_parser

COMMANDS = {
    "train": train_commands.cmd_train, "eval": data_commands.cmd_eval, "score": data_commands.cmd_score,
    "demo": train_commands.cmd_demo, "calibrate": data_commands.cmd_calibrate, "adapt": data_commands.cmd_adapt,
    "compare": data_commands.cmd_compare, "tune": train_commands.cmd_tune, "generate": commands.cmd_generate,
    "label": commands.cmd_label, "best-of-n": commands.cmd_best_of_n, "serve": commands.cmd_serve,
    "options": commands.cmd_options, "backbones": commands.cmd_backbones, "kinds": commands.cmd_kinds,
    "losses": commands.cmd_losses,
}


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
    """Run ``rewardlab ARGV``; returns the exit status (2: a user mistake, 130: interrupted)."""
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
