"""The demo model and a tie-aware model on the public benchmarks that may be read here: LLMBar, PandaLM, JudgeBench.

    python bench/public_benchmarks.py --from-mirrors             # this machine's copies; ~40 min on 2 shared cores
    python bench/public_benchmarks.py --llmbar LLMBar --pandalm testset-v1.json \\
        --judgebench "dataset=judgebench,response_model=gpt-4o-2024-05-13.jsonl"     # your clones
    python bench/public_benchmarks.py --from-mirrors --limit 20 --tie-max-train 200  # a smoke run

Data, each optional and read as distributed (``docs/benchmarks.md``): ``--llmbar`` the LLMBar repository or its
``Dataset/LLMBar`` folder (MIT; every ``dataset.json`` below, subsets Natural and Adversarial/*), ``--pandalm``
its ``data/testset-v1.json`` (Apache-2.0; three annotators, ties kept), ``--judgebench`` its GPT-4o file (MIT on
the hub; subsets its four categories). ``--from-mirrors`` extracts the three from ``/work/.mirror`` (this
project's machine) into ``--work``; ``--limit N`` keeps the first N rows of each file. Nothing is written into
the repository.

Models: the demo model (``rewardlab demo``: MiniLM, Bradley–Terry, on the embedded pairs; or ``--demo-model``)
and a tie-aware Bradley–Terry model, ``train.loss=davidson``, trained with ``bench/ties.py``'s own recipe and
defaults on LLMFAO's crowd A / B / tie judgements (3,000 training judgements, the Davidson row of
docs/results/ties.md; or ``--tie-model``). Both are scored by ``rewardlab eval`` (both ``--model`` per data set)
and ``rewardlab compare`` writes the table across them (``<work>/compare/benchmarks.md`` and ``.html``).

Printed table, one row per benchmark and subset: pairs (decided pairs: PandaLM's ties are left out of
accuracy), each model's pairwise accuracy, and the length-only rules on the same pairs (*prefer longer*,
*prefer shorter*: accuracy over the pairs whose lengths differ). PandaLM lines: annotator agreement
(pairwise, each annotator with the majority) beside each model's three-way agreement with the majority; the
three-way block (accuracy, macro-F1, tie F1, log-loss beside the evaluation data's class prior and the
training data's tie rate). The tie model's log-loss on 400 held-out LLMFAO judgements checks the recipe.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from argparse import Namespace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
import ties

MIRRORS = Path("/work/.mirror")
MIRRORED = {"llmbar": ("princeton-nlp+LLMBar", "Dataset/LLMBar"),
            "pandalm": ("WeOpenML+PandaLM", "data/testset-v1.json"),
            "judgebench": ("ScalerLab+JudgeBench", "data/dataset=judgebench,response_model=gpt-4o-2024-05-13.jsonl")}
# bench/ties.py's defaults: its Davidson row (docs/results/ties.md)
TIE_RECIPE = {"root": ties.LLMFAO, "seed": 0, "test_fraction": 0.2, "max_train": 3000, "max_test": 400,
              "judge_max_train": 96, "epochs": 1.0, "batch_size": 16, "lr": 5e-5, "lr_head": 1e-2, "max_length": 256,
              "max_prompt_tokens": 64}
NAMES = {"demo": "demo (MiniLM, BT)", "tie": "tie-aware (MiniLM, Davidson)"}


def rlab(*argv: str) -> None:
    print("$ rewardlab " + " ".join(argv), flush=True)
    subprocess.run([sys.executable, "-m", "rewardlab", *argv], check=True, cwd=ROOT)


def from_mirrors(work: Path) -> dict[str, Path]:
    """The three benchmarks extracted from the bare mirrors (``git archive``), and the commits read."""
    out = {}
    for name, (repo, path) in MIRRORED.items():
        git = ["git", f"--git-dir={MIRRORS / repo / 'repo'}"]
        dest = work / "src" / name
        dest.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run([*git, "archive", "HEAD", path], check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
        commit = subprocess.run([*git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True).stdout
        print(f"{name}: {repo} at {commit.strip()}")
        out[name] = dest / path
    return out


def truncate(src: Path, dst: Path, limit: int) -> Path:
    """The first ``limit`` rows of each file (every LLMBar ``dataset.json`` of a folder)."""
    for f in sorted(src.rglob("dataset.json")) if src.is_dir() else [src]:
        to = dst / f.relative_to(src) if src.is_dir() else dst
        to.parent.mkdir(parents=True, exist_ok=True)
        text = f.read_text(encoding="utf-8")
        to.write_text("".join(text.splitlines(keepends=True)[:limit]) if f.suffix == ".jsonl" else
                      json.dumps(json.loads(text)[:limit], ensure_ascii=False), encoding="utf-8")
    return dst


def tie_model(work: Path, max_train: int) -> tuple[Path, str]:
    """Train ``bench/ties.py``'s Davidson model; its held-out LLMFAO log-loss as a check of the recipe."""
    from rewardlab.metrics.outcomes import outcome_metrics

    args = Namespace(**{**TIE_RECIPE, "max_train": max_train})
    data = ties.load_data(args, work)
    pred = ties.run_model("davidson", data, args, work)
    m = outcome_metrics(pred["probs"], ties.labels_of(data["test"]))
    nu = (pred.get("outcome") or {}).get("nu")
    return work / "davidson" / "model", (
        f"tie-aware model: trained on {ties.describe(data['train'])} in {pred['train_s']:.0f} s; on "
        f"{ties.describe(data['test'])} held out: log-loss {m['log_loss']:.4f}, accuracy {m['accuracy']:.3f}"
        + (f", learned nu {nu:.3f}" if nu is not None else ""))


def _cell(x: float | None) -> str:
    return "–" if x is None or math.isnan(x) else f"{x:.3f}"


def report(evals: list[dict]) -> list[str]:
    """The transposed compare table (rows: benchmark / subset), then PandaLM's agreement and three-way lines."""
    from rewardlab.evaluation.tables import benchmark_table

    pairs = {}
    for m in evals:
        label = m["benchmark"]["benchmarks"][0]
        pairs[label] = m["pairs"]
        pairs.update({f"{label}/{s}": g["pairs"] for s, g in m.get("groups", {}).get("subset", {}).items()})
    t = benchmark_table(evals, subsets=True)
    rows = [*t.rows, *((f"*{r}*", v) for r, v in t.reference)]
    lines = ["| benchmark / subset | pairs | " + " | ".join(r for r, _ in rows) + " |", "|---" * (len(rows) + 2) + "|"]
    lines += [f"| {c} | {pairs.get(c, '')} | " + " | ".join(_cell(v[k]) for _, v in rows) + " |"
              for k, c in enumerate(t.columns)]
    annotated = [m for m in evals if "annotators" in m["benchmark"]]
    if annotated:
        a = annotated[0]["benchmark"]["annotators"]
        each = ", ".join(f"{x:.3f}" for x in a["per_annotator_with_majority"])
        lines += ["", (f"PandaLM annotators ({a['items_with_majority']} of {a['items']} items have a majority): "
                       f"pairwise agreement {a['pairwise_agreement']:.3f}; each with the majority {each}")]
    for m in annotated:
        agree = m["benchmark"]["annotators"]["model_with_majority"]
        line = f"{m['model']} on PandaLM: agreement with the majority {agree:.3f}"
        if o := m.get("outcomes"):  # the three-way block (the data has ties, or the model predicts them)
            loss = "n/a (predicts no ties)" if "log_loss_note" in o else f"{o['log_loss']:.4f}"
            t = o.get("training_prior")
            line += (f"; three-way accuracy {o['accuracy']:.3f}, macro-F1 {o['macro_f1']:.3f}, tie F1 "
                     f"{o['per_class']['tie']['f1']:.3f}, log-loss {loss} (eval-data class prior "
                     f"{o['class_prior_log_loss']:.4f}" + (f", training tie rate {t['tie']:.3f}: {t['log_loss']:.4f}"
                                                            if t else "") + f", uniform {o['uniform_log_loss']:.4f})")
        lines.append(line)
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--llmbar", type=Path, help="LLMBar clone (or its Dataset/LLMBar)")
    parser.add_argument("--pandalm", type=Path, help="PandaLM's data/testset-v1.json")
    parser.add_argument("--judgebench", type=Path, help="JudgeBench's GPT-4o jsonl")
    parser.add_argument("--from-mirrors", action="store_true", help=f"extract all three from {MIRRORS}")
    parser.add_argument("--work", type=Path, default=Path("/tmp/public-bench"), help="models, evaluations, tables")
    parser.add_argument("--demo-model", type=Path, help="reuse this demo checkpoint instead of training one")
    parser.add_argument("--tie-model", type=Path, help="reuse this tie-aware checkpoint instead of training one")
    parser.add_argument("--tie-max-train", type=int, default=TIE_RECIPE["max_train"], help="LLMFAO training "
                        "judgements of the tie-aware model (bench/ties.py's default)")
    parser.add_argument("--limit", type=int, help="first N rows of each benchmark file (a smoke run)")
    args = parser.parse_args(argv)
    work = args.work.resolve()
    if work.is_relative_to(ROOT):
        parser.error("--work must lie outside the repository (nothing from the benchmarks may be committed)")
    sets = from_mirrors(work) if args.from_mirrors else {}
    sets.update({n: p for n in MIRRORED if (p := getattr(args, n)) is not None})
    if not sets:
        parser.error("give --from-mirrors or at least one of --llmbar, --pandalm, --judgebench")
    if "llmbar" in sets and (sets["llmbar"] / "Dataset" / "LLMBar").is_dir():
        sets["llmbar"] = sets["llmbar"] / "Dataset" / "LLMBar"  # the repository root: only LLMBar's own subsets
    if args.limit:
        sets = {n: truncate(p, work / "limited" / n / p.name, args.limit) for n, p in sets.items()}

    started, notes = time.perf_counter(), []
    demo = args.demo_model
    if demo is None:
        rlab("demo", "--out", str(work / "demo"))
        demo = work / "demo" / "model"
    tie = args.tie_model
    if tie is None:
        tie, note = tie_model(work / "tie", args.tie_max_train)
        notes.append(note)
    trained = time.perf_counter()

    from rewardlab.evaluation.suites import default_eval_folder
    from rewardlab.evaluation.tables import find_evals

    folders = []
    for name, path in sets.items():
        rlab("eval", "--model", str(demo), "--model", str(tie), "--data", str(path), "--format", name,
             "--compare-out", str(work / "compare" / name))
        folders += [default_eval_folder(Path(m).resolve().parent / "eval", str(path)) for m in (demo, tie)]
    rlab("compare", *map(str, folders), "--out", str(work / "compare"))
    evals = find_evals(folders)
    for m in evals:
        m["model"] = NAMES["demo" if Path(m["model"]).resolve() == Path(demo).resolve() else "tie"]
    lines = report(evals) + [""] + notes
    lines.append(f"training {trained - started:.0f} s, evaluation {time.perf_counter() - trained:.0f} s; "
                 f"table also in {work / 'compare' / 'benchmarks.md'} and .html")
    print("\n" + "\n".join(lines))
    (work / "public_benchmarks.md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
