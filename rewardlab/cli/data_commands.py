"""Commands over a model and a data file: ``eval``, ``score``, ``calibrate``, ``adapt``, ``compare``.

Each parses, makes one library call, prints.
"""

from __future__ import annotations

from pathlib import Path

from rewardlab.config import load_config


def _data_config(args):
    overrides = [f"data.format={args.format}", f"data.on_bad_row={args.on_bad_row}"] + list(args.overrides)
    return load_config(None, overrides).data


def _eval_base(model: str, folds: bool) -> Path:
    """Where ``eval`` writes without ``--out`` (one folder per data set below): beside the model, in a
    cross-validation run's folder, or under runs/ for a hub id."""
    if folds:
        return Path(model) / "eval"
    if Path(model).is_dir():
        return Path(model).resolve().parent / "eval"
    return Path("runs") / f"eval-{model.replace('/', '--')}"  # a hub id


def _eval_sets(args) -> list[tuple[str, object]]:
    """(data, data config) per data set to evaluate: --data, or each --suite's hub copy and format."""
    from rewardlab.evaluation.suites import open_suite

    if bool(args.data) == bool(args.suite):
        raise ValueError("give either --data FILE or --suite NAME")
    if args.data:
        return [(args.data, _data_config(args))]
    sets = []
    for name in args.suite:
        b = open_suite(name)
        overrides = [f"data.format={name}", f"data.hf_split={b.split}", f"data.on_bad_row={args.on_bad_row}"]
        sets.append((b.source, load_config(None, overrides + list(args.overrides)).data))
    return sets


def cmd_eval(args) -> int:
    from rewardlab.evaluation.run import evaluate, evaluate_folds
    from rewardlab.evaluation.suites import default_eval_folder
    from rewardlab.evaluation.tables import write_tables

    sets = _eval_sets(args)
    if args.out and len(args.model) * len(sets) > 1:
        raise ValueError("--out names one folder; with several models or data sets leave it out (each is written "
                         "to <model>/../eval/<data name>/)")
    written = []
    for model in args.model:
        folds = (Path(model) / "cv_metrics.json").is_file()  # a cross-validation run: every fold's model
        for data, data_cfg in sets:
            out = Path(args.out) if args.out else default_eval_folder(_eval_base(model, folds), data)
            options = {"data_cfg": data_cfg, "group_by": args.group_by, "batch_size": args.batch_size,
                       "plots": not args.no_plots, "chunk_size": args.chunk_size}
            result = (evaluate_folds if folds else evaluate)(model, data, out, **options)
            if result.metrics:  # under accelerate launch, the main process reports
                print(result.summary())
                written += [result.metrics] if "overall" in result.metrics else []
    if len(written) > 1:
        text, md, page = write_tables(written, Path(args.compare_out))
        print(f"\n{text}\ntable written to {md} and {page}")
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
    from rewardlab.evaluation.tables import find_evals, write_tables

    text, md, page = write_tables(find_evals(args.runs), Path(args.out))
    print(f"{text}\nwritten to {md} and {page}")
    if len(args.runs) > 1 and all((Path(r) / "metrics.json").is_file() for r in args.runs):
        print(compare(args.runs, Path(args.out)))
        print(f"written to {args.out}/compare.md and {args.out}/compare_reliability.png")
    return 0
