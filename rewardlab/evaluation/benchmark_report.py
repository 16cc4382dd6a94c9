"""The printed summary lines and the report's HTML sections for per-subset results, benchmark scores,
position bias and the three-way block; each reads only ``metrics.json``'s dict."""

from __future__ import annotations

import html
import math

MAX_GROUP_LINES = 40  # per field, in the printed summary; metrics.json and the report have them all


def _num(x, digits: int = 3) -> str:
    return "–" if x is None or math.isnan(x) else f"{x:.{digits}f}"


def _ci(m: dict) -> str:
    lo, hi = m.get("ci95", (None, None))
    return f"{_num(m['value'])} [{_num(lo)}, {_num(hi)}]"


def _rules(g: dict) -> str:
    rules = g.get("length_rules", {})
    if not rules.get("pairs"):
        return ""
    return f"; prefer longer {_ci(rules['prefer_longer'])}, prefer shorter {_ci(rules['prefer_shorter'])}"


def group_lines(metrics: dict) -> list[str]:
    """Accuracy per value of each breakdown field, beside the length-only rules on the same pairs."""
    lines = []
    for name, groups in metrics.get("groups", {}).items():
        lines.append(f"by {name} (accuracy [95% CI]; length-only rules on the same pairs):")
        for value, g in list(groups.items())[:MAX_GROUP_LINES]:
            lines.append(f"  {value}: {_ci(g['accuracy'])} ({g['pairs']} pairs){_rules(g)}")
        if len(groups) > MAX_GROUP_LINES:
            lines.append(f"  ... {len(groups) - MAX_GROUP_LINES} more in metrics.json")
    return lines


def outcome_line(o: dict) -> str:
    """The A / B / tie line: log-loss beside the class priors, or why it does not apply."""
    loss = (f"log-loss n/a ({o['log_loss_note']})" if "log_loss_note" in o else
            f"log-loss {o['log_loss']:.4f}")
    prior = f"eval-data class prior {o['class_prior_log_loss']:.4f}"
    if "training_prior" in o:
        t = o["training_prior"]
        prior += f", training tie rate {t['tie']:.3f}: {t['log_loss']:.4f}"
    return (f"A / B / tie: accuracy {o['accuracy']:.3f}, {loss} ({prior}, uniform {o['uniform_log_loss']:.4f}), "
            f"macro-F1 {o['macro_f1']:.3f}, position consistency {o['position_consistency']:.3f}")


def benchmark_lines(metrics: dict) -> list[str]:
    """RewardBench sections, best-of-N, annotator agreement and position bias, where metrics has them."""
    lines = []
    b = metrics.get("benchmark", {})
    if "rewardbench" in b:
        rb = b["rewardbench"]
        parts = ", ".join(f"{n} {_num(s['score'])}" + ("" if s["complete"] else " (incomplete)")
                          for n, s in rb["sections"].items())
        lines.append(f"RewardBench score {_num(rb['score'])}: {parts}")
    if "best_of_n" in b:
        bon = b["best_of_n"]
        if "overall" in bon:
            lines.append(f"best-of-N accuracy (every chosen beats every rejected): {_ci(bon['overall'])} over "
                         f"{bon['overall']['prompts']} prompts")
        lines += [f"  {s}: {_ci(v)} ({v['prompts']} prompts)" for s, v in bon["subsets"].items()]
        if "ties" in bon:
            lines.append(f"  Ties score: {_num(bon['ties']['score'])}" + (f" ({bon['ties']['note']})"
                                                                          if "note" in bon["ties"] else ""))
        lines.append(f"  mean over subsets: {_num(bon['mean_over_subsets'])}")
    if "annotators" in b:
        a = b["annotators"]
        lines.append(f"annotators: pairwise agreement {_num(a['pairwise_agreement'])}; each with the majority "
                     + ", ".join(_num(x) for x in a["per_annotator_with_majority"])
                     + f"; model with the majority {_num(a.get('model_with_majority'))} "
                       f"({a['items_with_majority']} of {a['items']} items have a majority)")
    if "position_bias" in metrics and metrics["position_bias"].get("pairs"):
        p = metrics["position_bias"]
        lines.append(f"position bias (each order alone): accuracy {_num(p['accuracy_preferred_first'])} with the "
                     f"preferred response first, {_num(p['accuracy_preferred_second'])} second; verdict flips in "
                     f"{_num(p['flip_rate'])}; first position wins {_num(p['first_position_win_rate'])}")
    return lines


def _table(header, rows) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def group_rows(groups: dict) -> tuple[list[str], list[list]]:
    """A breakdown's table: accuracy with its interval beside both length-only rules."""
    header = ["value", "pairs", "accuracy [95% CI]", "log-loss", "prefer longer [95% CI]",
              "prefer shorter [95% CI]"]
    rows = []
    for value, g in groups.items():
        rules = g.get("length_rules", {})
        lengths = [_ci(rules[k]) for k in ("prefer_longer", "prefer_shorter")] if rules.get("pairs") else ["–", "–"]
        rows.append([value, g["pairs"], _ci(g["accuracy"]), _num(g["log_loss"]["value"]), *lengths])
    return header, rows


def benchmark_html(metrics: dict) -> str:
    """The report's benchmark sections (empty when metrics has none)."""
    parts = []
    b = metrics.get("benchmark", {})
    if "rewardbench" in b:
        rb = b["rewardbench"]
        parts.append(f"<h2>RewardBench</h2><p>Score (mean of the sections): <b>{_num(rb['score'])}</b>"
                     + ("" if rb["complete"] else f"; incomplete: {html.escape(', '.join(rb['incomplete_sections']))}")
                     + "</p>" + _table(["section", "score", "missing subsets"], [
                         [n, _num(s["score"]), ", ".join(s["missing"]) or "–"] for n, s in rb["sections"].items()]))
    if "best_of_n" in b:
        bon = b["best_of_n"]
        rows = [[s, v["prompts"], _ci(v)] for s, v in bon["subsets"].items()]
        if "overall" in bon:
            rows.append(["(all prompts)", bon["overall"]["prompts"], _ci(bon["overall"])])
        if "ties" in bon:
            rows.append(["Ties (its own score)", bon["ties"].get("ref_prompts", "–"), _num(bon["ties"]["score"])])
        parts.append("<h2>Best-of-N</h2><p>A prompt counts when every chosen response beats every rejected one; "
                     f"mean over subsets <b>{_num(bon['mean_over_subsets'])}</b>.</p>"
                     + _table(["subset", "prompts", "accuracy [95% CI]"], rows))
    if "annotators" in b:
        a = b["annotators"]
        rows = [[f"annotator {i + 1} with the majority", _num(x)]
                for i, x in enumerate(a["per_annotator_with_majority"])]
        rows += [["annotators, pairwise", _num(a["pairwise_agreement"])],
                 ["model with the majority", _num(a.get("model_with_majority"))]]
        parts.append(f"<h2>Annotator agreement</h2><p>{a['items_with_majority']} of {a['items']} items have a "
                     "majority label.</p>" + _table(["who", "agreement"], rows))
    if metrics.get("position_bias", {}).get("pairs"):
        p = metrics["position_bias"]
        parts.append("<h2>Position bias</h2>" + _table(["measure", "value"], [
            [k.replace("_", " "), _num(v)] for k, v in p.items() if k != "pairs"]))
    return "".join(parts)
