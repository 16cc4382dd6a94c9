"""Commands that run a model for people or programs (``serve``, ``generate``, ``label``, ``best-of-n``), and
the listings (``options``, ``backbones``, ``kinds``, ``losses``). Each parses, makes one library call, prints."""

from __future__ import annotations

from rewardlab.cli.config_parsers import BEST_OF_N_FLAGS, GENERATE_FLAGS, SERVE_FLAGS
from rewardlab.cli.flags import config_from_args
from rewardlab.config import describe


def _announce(text: str) -> None:
    print(text, flush=True)


def cmd_serve(args) -> int:
    from rewardlab.serve.app import serve
    from rewardlab.serve.config import ServeConfig

    cfg = config_from_args(ServeConfig, args, SERVE_FLAGS)
    serve(args.models, cfg, device=args.device, announce=_announce)
    return 0


def cmd_generate(args) -> int:
    from rewardlab.generate import GenerateConfig, generate_candidates

    cfg = config_from_args(GenerateConfig, args, GENERATE_FLAGS)
    c = generate_candidates(cfg, args.prompts, args.out)
    print(f"{c['written']} prompts written, {c['resumed']} already there, of {c['prompts']} -> {args.out}; "
          f"{c['regenerated']} empty or repeated responses regenerated, {c['dropped_duplicates']} dropped"
          + (f"; {c['not_written']} prompts left out (fewer than 2 distinct responses)" if c["not_written"] else ""))
    return 0


def cmd_label(args) -> int:
    import getpass

    from rewardlab.label import Assignment, LabelStore
    from rewardlab.label.server import serve

    assignment = Assignment(per_prompt=args.per_prompt, shuffle=args.shuffle, check_every=args.check_every)
    if args.export:
        store = LabelStore(args.data, args.out, checks=args.checks, assignment=assignment)
        try:
            n = store.export(args.export)
        finally:
            store.close()
        print(f"{n} rankings from {store.location} written to {args.export}")
        return 0
    try:
        labeler = args.labeler or getpass.getuser()
    except (KeyError, OSError):  # no login name (some containers)
        labeler = "anonymous"
    serve(args.data, args.out, port=args.port, labeler=labeler, model=args.model, checks=args.checks,
          assignment=assignment, select=args.select, retrain_every=args.retrain_every,
          train_config=args.train_config, announce=_announce)
    return 0


def cmd_best_of_n(args) -> int:
    from rewardlab.best_of_n import BestOfNConfig, best_of_n
    from rewardlab.scoring import RewardModel

    cfg = config_from_args(BestOfNConfig, args, BEST_OF_N_FLAGS)
    result = best_of_n(cfg, RewardModel.from_pretrained(args.model), args.prompts, out=args.out)
    print(result.summary() + (f"\nwritten to {args.out}" if args.out else ""))
    return 0


def cmd_options(args) -> int:
    for name, default, help_text in describe():
        print(f"{name} = {default!r}\n    {help_text}")
    return 0


def cmd_backbones(args) -> int:
    from rewardlab.models.backbones import list_backbones

    print("\n".join(list_backbones()))
    return 0


def cmd_kinds(args) -> int:
    from rewardlab.models.base import get_kind, list_kinds

    for name in list_kinds():
        print(f"{name}: {get_kind(name).help}")
    return 0


def cmd_losses(args) -> int:
    from rewardlab.losses import describe_loss, loss_names

    for name in loss_names():
        print(f"{name}: {describe_loss(name)}")
    return 0
