"""One self-contained ``report.html``: headline numbers, plots (embedded), worst errors, config.

Every piece of user text is HTML-escaped; images are inlined as base64 so the
page can be mailed or archived as one file.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Sequence

from rewardlab.evaluation.benchmark_report import benchmark_html, group_rows, outcome_line

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2rem auto;max-width:1100px;color:#222;padding:0 1rem}
h1{font-size:1.6rem;margin-bottom:.2rem} h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #ddd}
.sub{color:#666;margin-top:0} .cards{display:flex;flex-wrap:wrap;gap:.8rem}
.card{border:1px solid #ddd;border-radius:8px;padding:.6rem 1rem;min-width:130px}
.card .v{font-size:1.5rem;font-weight:600} .card .l{color:#666;font-size:.85rem} .card .ci{color:#888;font-size:.75rem}
table{border-collapse:collapse;font-size:.85rem;margin:.5rem 0} td,th{border:1px solid #ddd;padding:.3rem .5rem;vertical-align:top}
th{background:#f6f6f6;text-align:left} .pass{color:#1a7f37;font-weight:600} .fail{color:#cf222e;font-weight:600}
img{max-width:100%;margin:.5rem 0} pre{background:#f6f6f6;padding:.8rem;overflow:auto;font-size:.8rem}
.txt{max-width:360px;white-space:pre-wrap;word-break:break-word}
.steps td.p{text-align:right;font-variant-numeric:tabular-nums}
.steps tr.flag td:first-child{border-left:3px solid #cf222e}
"""

HEADLINE = [("accuracy", "pairwise accuracy"), ("roc_auc", "ROC-AUC"), ("log_loss", "log-loss"),
            ("brier", "Brier"), ("ece", "ECE (equal width)"), ("f1", "F1"),
            ("accuracy_top10", "accuracy, top 10 % |margin|")]


def _fmt(x) -> str:
    return "–" if x is None else f"{x:.3f}" if isinstance(x, float) else html.escape(str(x))


def _img(path: Path | None, alt: str) -> str:
    if path is None or not Path(path).is_file():
        return ""
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _cards(overall: dict, headline: Sequence[tuple[str, str]] = HEADLINE) -> str:
    cards = []
    for key, label in headline:
        m = overall.get(key)
        if not m:
            continue
        lo, hi = m["ci95"]
        ci = f"95% CI {_fmt(lo)}–{_fmt(hi)}" if lo is not None else ""
        cards.append(f'<div class="card" id="m-{key}"><div class="v">{_fmt(m["value"])}</div>'
                     f'<div class="l">{label}</div><div class="ci">{ci}</div></div>')
    return '<div class="cards">' + "".join(cards) + "</div>"


def _table(header: Sequence[str], rows: Sequence[Sequence]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _acc_rows(groups: dict) -> list[list]:
    return [[name, g["pairs"], g["accuracy"]["value"], g["accuracy"]["ci95"][0], g["accuracy"]["ci95"][1],
             g["log_loss"]["value"]] for name, g in groups.items()]


def render_report(path: Path, *, metrics: dict, plots: dict[str, Path | None], worst: list[dict],
                  config_text: str | None, title: str) -> Path:
    """Write the report page to ``path``."""
    parts = [f"<h1>{html.escape(title)}</h1>",
             f'<p class="sub">{metrics["pairs"]} pairs from {html.escape(str(metrics.get("data", "")))}; '
             f'model {html.escape(str(metrics.get("model", "")))}; temperature {_fmt(metrics["temperature"])}</p>',
             _cards(metrics["overall"])]
    hc = metrics["high_confidence"]
    parts.append("<h2>Confidence</h2>" + _table(["subset", "pairs", "coverage", "accuracy"], [
        [k, v["pairs"], v["coverage"], v["accuracy"]] for k, v in hc.items()]))
    parts.append(_img(plots.get("reliability"), "reliability diagram") + _img(plots.get("rewards"), "rewards"))
    if "ranking" in metrics:
        r = metrics["ranking"]
        parts.append("<h2>Ranking agreement</h2>" + _table(["metric", "value", "CI low", "CI high"], [
            [k, r[k]["value"], *r[k]["ci95"]] for k in ("spearman", "kendall")]))
    lb = metrics["length_bias"]
    cases = {k: lb[k] for k in ("longer_preferred", "shorter_preferred", "equal_length") if k in lb}
    parts.append("<h2>Length bias</h2><p>Accuracy when the longer response is preferred vs. when the shorter "
                 f"one is; the model prefers the longer response in {_fmt(lb.get('model_prefers_longer_rate'))} "
                 "of pairs.</p>" + _table(["case", "pairs", "accuracy", "CI low", "CI high", "log-loss"],
                                          _acc_rows(cases)))
    if "debias" in lb:
        weights = ", ".join(f"{k} {v:+.3f}" for k, v in lb["debias"]["nuisance_weights"].items())
        parts.append(f"<p>Trained with <code>train.debias</code> ({html.escape(weights)} reward per unit of log "
                     f"feature in training): these scores are the {html.escape(lb['debias']['scores'])}.</p>")
    if "length_balanced_accuracy" in lb:
        lba, rules, corr = lb["length_balanced_accuracy"], lb["length_only_rules"], lb["reward_length_correlation"]
        parts.append(f"<p>Length-balanced accuracy (mean of the two rows above; 0.5 for any rule that reads only "
                     f"length): <b>{_fmt(lba['value'])}</b> [{_fmt(lba['ci95'][0])}, {_fmt(lba['ci95'][1])}]. "
                     f"Length-only rules on this data: prefer longer {_fmt(rules['prefer_longer'])}, prefer shorter "
                     f"{_fmt(rules['prefer_shorter'])}. Reward–length correlation: Pearson {_fmt(corr['pearson'])}, "
                     f"Spearman {_fmt(corr['spearman'])}.</p>"
                     + _table(["length ratio", "pairs", "accuracy", "CI low", "CI high", "log-loss"],
                              _acc_rows(lb["by_length_ratio"])))
    if metrics["ties"]["pairs"]:
        parts.append(f"<p>{metrics['ties']['pairs']} pairs are ties in the data (excluded from accuracy); mean "
                     f"|margin| on them {_fmt(metrics['ties']['mean_abs_margin'])}.</p>")
    for name, groups in metrics["groups"].items():
        header, rows = group_rows(groups)
        parts.append(f"<h2>By {html.escape(name)}</h2><p>Beside each accuracy, the length-only rules on the same "
                     "pairs (those whose lengths differ).</p>" + _img(plots.get(f"group_{name}"), f"accuracy by {name}")
                     + _table([name, *header[1:]], rows))
    if "outcomes" in metrics:
        parts.append(f"<h2>A / B / tie</h2><p>{html.escape(outcome_line(metrics['outcomes']))}</p>")
    parts.append(benchmark_html(metrics))
    if "sections" in metrics:
        s = metrics["sections"]
        parts.append(f"<h2>Sections ({html.escape(s['field'])})</h2><p>Aggregate (mean over sections): "
                     f"<b>{_fmt(s['aggregate'])}</b></p>" + _table(
                         ["section", "pairs", "accuracy"], [[k, v["pairs"], v["accuracy"]]
                                                            for k, v in s["per_section"].items()]))
    if metrics.get("invariance"):
        parts.append("<h2>Invariance checks</h2>" + "<table><tr><th>check</th><th>result</th><th>max deviation"
                     "</th><th>what</th></tr>" + "".join(
                         f'<tr><td>{c["check"]}</td><td class="{"pass" if c["passed"] else "fail"}">'
                         f'{"pass" if c["passed"] else "FAIL"}</td><td>{c["max_deviation"]:.2e}</td>'
                         f'<td>{html.escape(c["what"])}</td></tr>' for c in metrics["invariance"]) + "</table>")
    if plots.get("training"):
        parts.append("<h2>Training</h2>" + _img(plots["training"], "training curves"))
    parts.append("<h2>Most confident errors</h2>" + (_table(
        ["P(chosen)", "prompt", "chosen (human)", "rejected", "source"],
        [[w["probability"], _clip(w["prompt"]), _clip(w["chosen"]), _clip(w["rejected"]), w["source"]]
         for w in worst]).replace("<td>", '<td class="txt">') if worst else "<p>No errors.</p>"))
    if config_text:
        parts.append("<h2>Training config</h2><pre>" + html.escape(config_text) + "</pre>")
    page = (f"<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{CSS}</style></head><body>{''.join(parts)}</body></html>")
    path.write_text(page, encoding="utf-8")
    return path


def _clip(text: str, n: int = 600) -> str:
    return text if len(text) <= n else text[:n] + " …"


# ----------------------------------------------------------------------------- process reward models

STEP_HEADLINE = [("step_accuracy", "step accuracy"), ("wrong_step_f1", "wrong-step F1"), ("roc_auc", "ROC-AUC"),
                 ("ece", "ECE (equal width)"), ("first_error_f1", "first-error F1"),
                 ("solution_min", "solution accuracy (min)")]


def render_solution_steps(prompt: str, steps: Sequence[str], probabilities: Sequence[float],
                          labels: Sequence[bool] | None = None, threshold: float = 0.5) -> str:
    """One solution as an HTML table: each step with its P(correct) on a red (0) to green (1) background, its
    label (✓ right, ✗ wrong) when given, and a red bar at the first step below ``threshold``. Text is escaped."""
    flagged = next((i for i, p in enumerate(probabilities) if p < threshold), None)
    rows = []
    for i, (step, p) in enumerate(zip(steps, probabilities)):
        mark = "" if labels is None else '<td class="pass">✓</td>' if labels[i] else '<td class="fail">✗</td>'
        flag = ' class="flag"' if i == flagged else ""
        rows.append(f'<tr{flag}><td>{i + 1}</td><td class="txt">'
                    f'{html.escape(step)}</td><td class="p" style="background:hsl({120 * float(p):.0f},70%,85%)">'
                    f"{float(p):.3f}</td>{mark}</tr>")
    head = "<th>step</th><th>text</th><th>P(correct)</th>" + ("" if labels is None else "<th>label</th>")
    return (f'<div class="solution"><p class="txt"><b>Problem:</b> {html.escape(prompt)}</p>'
            f'<table class="steps"><tr>{head}</tr>{"".join(rows)}</table></div>')


def render_steps_report(path: Path, *, metrics: dict, plots: dict[str, Path | None], examples: Sequence[dict],
                        title: str) -> Path:
    """Write the page of a process reward model's evaluation (:func:`rewardlab.evaluation.steps.evaluate_solutions`):
    headline cards, first-error and solution-level tables with baselines, reliability plot, example solutions."""
    c = metrics["counts"]
    cards = {**metrics["steps"], "first_error_f1": metrics["first_error"]["f1"],
             "solution_min": metrics["solution_accuracy"]["min"]}
    acc = [[name, m["value"], *m["ci95"]] for name, m in metrics["solution_accuracy"].items()]
    base = [[name, m["value"], *m["ci95"]] for name, m in metrics["baselines"].items()]
    fe = [[name, m["value"], *m["ci95"]] for name, m in metrics["first_error"].items()]
    parts = [f"<h1>{html.escape(title)}</h1>",
             (f'<p class="sub">{c["solutions"]} solutions ({c["solutions_with_error"]} with an error), '
              f'{c["steps"]} steps ({c["wrong_steps"]} wrong); threshold {_fmt(metrics["threshold"])}</p>'),
             _cards(cards, STEP_HEADLINE),
             "<h2>First error (ProcessBench)</h2>" + _table(["metric", "value", "CI low", "CI high"], fe),
             "<h2>Solution accuracy from step rewards</h2>" + _table(["aggregate", "accuracy", "CI low", "CI high"],
                                                                     acc)
             + _table(["baseline", "accuracy", "CI low", "CI high"], base),
             _img(plots.get("reliability"), "reliability of step probabilities"), "<h2>Example solutions</h2>"]
    parts += [render_solution_steps(e["prompt"], e["steps"], e["probabilities"], e.get("labels"),
                                    metrics["threshold"]) for e in examples]
    page = (f"<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{CSS}</style></head><body>{''.join(parts)}</body></html>")
    path.write_text(page, encoding="utf-8")
    return path
