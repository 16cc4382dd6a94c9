"""Commands over a model and a data file: ``eval``, ``score``, ``calibrate``, ``adapt``, ``compare``.

Each parses, makes one library call, prints.
"""

from __future__ import annotations

from pathlib import Path

from rewardlab.config import load_config


def _data_config(args):
    overrides = [f"data.format={args.format}", f"data.on_bad_row={args.on_bad_row}"] + list(args.overrides)
    return load_config(None, overrides).data


def _eval_folder(model: str, folds: bool) -> Path:
    """Where ``eval`` writes without ``--out``: beside the model (in a cross-validation run's folder)."""
    if folds:
        return Path(model) / "eval"
    if Path(model).is_dir():
        return Path(model).resolve().parent / "eval"
    return Path("runs") / f"eval-{model.replace('/', '--')}"  # a hub id


def cmd_eval(args) -> int:
    from rewardlab.evaluation.run import evaluate, evaluate_folds

    folds = (Path(args.model) / "cv_metrics.json").is_file()  # a cross-validation run: every fold's model
    out = Path(args.out) if args.out else _eval_folder(args.model, folds)
    options = {"data_cfg": _data_config(args), "group_by": args.group_by, "batch_size": args.batch_size,
               "plots": not args.no_plots, "chunk_size": args.chunk_size}
    result = (evaluate_folds if folds else evaluate)(args.model, args.data, out, **options)
    if result.metrics:  # under accelerate launch, the main process reports
        print(result.summary())
    return 0


def cmd_score(args) -> int:
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    from rewardlab.data.sources import read_rows
    from rewardlab.evaluation.score_file import score_rows
    from rewardlab.scoring import RewardModel

    state = PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))  # one shard per process under accelerate
    model = RewardModel.from_pretrained(args.model, device=str(state.device))
    n = score_rows(model, read_rows(args.data), Path(args.out), normalize=args.normalize, batch_size=args.batch_size,
                   resume=args.resume, process_index=state.process_index, num_processes=state.num_processes,
                   wait=state.wait_for_everyone, chunk_size=args.chunk_size)
    if state.is_main_process:
        print(f"scored {n} rows -> {args.out}" + (f" ({state.num_processes} processes)" if state.num_processes > 1
                                                   else ""))
    return 0


def cmd_calibrate(args) -> int:
    from rewardlab.evaluation.run import calibrate

    info = calibrate(args.model, args.data, data_cfg=_data_config(args), holdout=args.holdout)
    print(f"temperature {info['temperature']:.4f} (fitted on {info['fit_pairs']} pairs); ECE on "
          f"{info['check_pairs']} pairs: {info['ece_before']:.4f} before -> {info['ece_after']:.4f} after; "
          f"stored in {args.model}/config.json")
    return 0


def cmd_adapt(args) -> int:
    from rewardlab.train.adapt import adapt

    r = adapt(args.model, args.data, args.labeler, args.out, data_cfg=_data_config(args), steps=args.steps, lr=args.lr)
    print(f"labeler {r.labeler!r}: {r.pairs} judgements, accuracy on them {r.accuracy_before:.3f} (population) -> "
          f"{r.accuracy_after:.3f} (personal), {r.seconds:.1f} s; written to {r.model_dir}")
    return 0


def cmd_compare(args) -> int:
    from rewardlab.evaluation.compare import compare

    print(compare(args.runs, Path(args.out)))
    print(f"written to {args.out}/compare.md and {args.out}/compare_reliability.png")
    return 0
