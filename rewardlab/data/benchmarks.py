"""The public preference benchmarks, each read exactly as its authors distribute it.

One row format per benchmark, registered in :data:`rewardlab.contracts.registry.DATA_FORMATS` under the
names of :data:`BENCHMARKS` and auto-detected from the fields (:func:`detect_benchmark`). Every row becomes
one :class:`Comparison` whose ``meta`` carries ``benchmark``, ``subset`` (where the benchmark has subsets)
and ``id`` (where the row has one); rows judged by position (A / B) also carry ``outcome`` (``a`` / ``b`` /
``tie``) with the responses in the file's order, as the ``ab`` format does.

Example:
    >>> row = {"question": "2+2?", "response_A": "4", "response_B": "5", "label": "A>B", "source": "livebench-math"}
    >>> c = from_judgebench(row, "jb.jsonl:1", FormatContext())
    >>> c.pairs[0].winner, c.meta["subset"], c.meta["outcome"]
    (0, 'livebench-math', 'a')
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from pathlib import PurePath

from rewardlab.contracts.schema import Comparison, DataError, Pair, unicode_problem
from rewardlab.data.ab import outcome_pair, winner_outcome
from rewardlab.data.fields import FormatContext, carried_fields, list_field, message_list, text_field


@dataclass(frozen=True)
class Benchmark:
    """Where a benchmark comes from: ``source`` is what ``data.train`` / ``--data`` takes online (``None``
    where the hub holds no copy ``datasets`` can load), ``split`` its ``data.hf_split``; ``offline`` says how
    to get the files and what path to pass."""

    name: str
    title: str
    source: str | None
    split: str
    licence: str
    homepage: str
    offline: str


BENCHMARKS: dict[str, Benchmark] = {b.name: b for b in (
    Benchmark("rewardbench", "RewardBench", "hf:allenai/reward-bench", "filtered", "ODC-BY",
              "https://github.com/allenai/reward-bench",
              "download data/filtered-*.parquet from huggingface.co/datasets/allenai/reward-bench; pass that file"),
    Benchmark("rewardbench2", "RewardBench 2", "hf:allenai/reward-bench-2", "test", "ODC-BY",
              "https://github.com/allenai/reward-bench",
              "download data/test-*.parquet from huggingface.co/datasets/allenai/reward-bench-2; pass that file"),
    Benchmark("llmbar", "LLMBar", None, "", "MIT", "https://github.com/princeton-nlp/LLMBar",
              "git clone https://github.com/princeton-nlp/LLMBar; pass LLMBar/Dataset/LLMBar (every dataset.json "
              "below it is read)"),
    Benchmark("pandalm", "PandaLM test set", None, "", "Apache-2.0", "https://github.com/WeOpenML/PandaLM",
              "download data/testset-v1.json from github.com/WeOpenML/PandaLM; pass that file"),
    Benchmark("mtbench_human", "MT-Bench human judgements", "hf:lmsys/mt_bench_human_judgments", "human",
              "CC-BY-4.0", "https://huggingface.co/datasets/lmsys/mt_bench_human_judgments",
              "download data/human-*.parquet from huggingface.co/datasets/lmsys/mt_bench_human_judgments; pass "
              "that file"),
    Benchmark("judgebench", "JudgeBench", "hf:ScalerLab/JudgeBench", "gpt", "MIT",
              "https://github.com/ScalerLab/JudgeBench",
              "git clone https://github.com/ScalerLab/JudgeBench; pass data/dataset=judgebench,response_model="
              "gpt-4o-2024-05-13.jsonl"),
)}

# The fields that identify each benchmark (all must be present), checked in this order.
SIGNATURES = (
    ("rewardbench2", {"chosen", "rejected", "num_correct"}),
    ("rewardbench", {"chosen", "rejected", "subset", "chosen_model"}),
    ("llmbar", {"output_1", "output_2", "label"}),
    ("pandalm", {"response1", "response2", "annotator1"}),
    ("mtbench_human", {"conversation_a", "conversation_b", "winner"}),
    ("judgebench", {"response_A", "response_B", "label"}),
)
LLMBAR_ROOTS = ("Natural", "Adversarial")  # a dataset.json's subset is its folder path from one of these
JUDGEBENCH_CATEGORIES = ("mmlu-pro", "livebench-reasoning", "livebench-math", "livecodebench")  # run_judge.py
PANDALM_OUTCOMES = {0: "tie", 1: "a", 2: "b"}


def detect_benchmark(keys: set) -> str | None:
    """The benchmark whose identifying fields a row has, or None."""
    return next((name for name, fields in SIGNATURES if fields <= keys), None)


def _required(row: dict, name: str, where: str) -> object:
    if name not in row or row[name] is None:
        raise DataError(where, name, f"missing column; the row has {', '.join(map(str, row)) or 'no columns'}")
    return row[name]


def _texts(row: dict, name: str, where: str) -> list[str]:
    """A non-empty list of non-empty texts."""
    values = list_field(row, name, where)
    if not values:
        raise DataError(where, name, "expected at least one response, got an empty list")
    for i, value in enumerate(values):
        if not isinstance(value, str) or not value.strip():
            raise DataError(where, f"{name}[{i}]", f"expected non-empty text, got {value!r:.60}")
        if problem := unicode_problem(value):
            raise DataError(where, f"{name}[{i}]", problem)
    return values


def _whole(value: object, where: str, name: str) -> int:
    """A whole number from an integer, an integral float or its decimal text ("2")."""
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise DataError(where, name, f"expected a whole number, got {value!r:.60}")
    return value


def _small_int(value: object, where: str, name: str, allowed: tuple[int, ...]) -> int:
    """One of ``allowed`` (see :func:`_whole`)."""
    try:
        number = _whole(value, where, name)
    except DataError:
        number = None
    if number not in allowed:
        raise DataError(where, name, f"expected one of {', '.join(map(str, allowed))}, got {value!r:.60}")
    return number


def _comparison(row: dict, where: str, prompt: str, responses: list[str], pairs: list[Pair], used: set,
                meta: dict) -> Comparison:
    carried = carried_fields(row, used, where)
    carried["meta"] = {**carried["meta"], **{k: v for k, v in meta.items() if v is not None}}
    return Comparison(prompt=prompt, responses=tuple(responses), pairs=tuple(pairs), source=where, **carried)


def _ab(row: dict, where: str, prompt: str, a: str, b: tuple[str, str], outcome: str, used: set, meta: dict
        ) -> Comparison:
    """A comparison of responses (A, B) in the file's order, judged ``outcome``; ``b`` is (B's column, B)."""
    b_field, b = b
    if a == b and outcome != "tie":
        raise DataError(where, b_field, "the same text as the other response, yet one is said to be better")
    return _comparison(row, where, prompt, [a, b], [outcome_pair(outcome)], used, {**meta, "outcome": outcome})


# ----------------------------------------------------------------------------- RewardBench v1 and 2


def from_rewardbench(row: dict, where: str, ctx: FormatContext) -> Comparison:
    """RewardBench (v1): ``prompt, chosen, rejected, chosen_model, rejected_model, subset, id``."""
    prompt, subset = text_field(row, "prompt", where), text_field(row, "subset", where)
    chosen, rejected = text_field(row, "chosen", where), text_field(row, "rejected", where)
    if chosen == rejected:
        raise DataError(where, "rejected", "identical to 'chosen': a pair needs two different responses")
    return _comparison(row, where, prompt, [chosen, rejected], [Pair(0, 1)], {"prompt", "chosen", "rejected"},
                       {"benchmark": "rewardbench", "subset": subset, "id": row.get("id")})


def ties_sample(row_id: object, where: str) -> tuple[str, int]:
    """(``ref`` | ``tied``, prompt id) from a RewardBench 2 Ties id such as ``"tied:12"``: the authors score a
    prompt's ``ref`` sample (one correct answer) against its ``tied`` sample (several)."""
    kind, _, number = str(row_id).partition(":")
    if kind not in ("ref", "tied") or not number.strip().isdigit():
        raise DataError(where, "id", f"a Ties id is 'ref:N' or 'tied:N', got {row_id!r:.60}")
    return kind, int(number)


def from_rewardbench2(row: dict, where: str, ctx: FormatContext) -> Comparison:
    """RewardBench 2: ``id, prompt, chosen: [..], rejected: [..], num_correct, subset``.

    Responses are the chosen ones (the first ``num_correct``), then the rejected ones; one pair per (chosen,
    rejected), so "every chosen beats every rejected" can be checked per prompt. Ties rows also carry
    ``sample_type`` (``ref`` / ``tied``) and ``prompt_id`` from their id, which the Ties score pairs up.
    """
    prompt, subset = text_field(row, "prompt", where), text_field(row, "subset", where)
    chosen, rejected = _texts(row, "chosen", where), _texts(row, "rejected", where)
    num_correct = _required(row, "num_correct", where)
    if isinstance(num_correct, bool) or num_correct != len(chosen):
        raise DataError(where, "num_correct", f"is {num_correct!r:.60}, but 'chosen' holds {len(chosen)} responses")
    if both := set(chosen) & set(rejected):
        raise DataError(where, "rejected", f"also among 'chosen': {next(iter(both))!r:.60}")
    meta = {"benchmark": "rewardbench2", "subset": subset, "id": row.get("id"), "num_correct": len(chosen)}
    if subset.lower() == "ties":
        meta["sample_type"], meta["prompt_id"] = ties_sample(_required(row, "id", where), where)
    pairs = [Pair(i, len(chosen) + j) for i in range(len(chosen)) for j in range(len(rejected))]
    return _comparison(row, where, prompt, chosen + rejected, pairs, {"prompt", "chosen", "rejected", "num_correct"},
                       meta)


# ----------------------------------------------------------------------------- LLMBar, PandaLM, JudgeBench


def llmbar_subset(where: str) -> str | None:
    """The subset a row's file names: its folder path from ``Natural`` or ``Adversarial`` (``Adversarial/Neighbor``
    for ``.../LLMBar/Adversarial/Neighbor/dataset.json:3``); else, for another ``dataset.json`` of the LLMBar
    repository (``CaseStudy/Base_9``), its folder's name; else None (hub rows, files renamed by a user)."""
    if where.startswith("hf:"):
        return None
    path = PurePath(where.rsplit(":", 1)[0])
    roots = [i for i, part in enumerate(path.parent.parts) if part in LLMBAR_ROOTS]
    if roots:
        return "/".join(path.parent.parts[roots[-1]:])
    return path.parent.name or None if path.name == "dataset.json" else None


def from_llmbar(row: dict, where: str, ctx: FormatContext) -> Comparison:
    """LLMBar: ``input, output_1, output_2, label`` (1 | 2), the subset named from the file's folder."""
    prompt = text_field(row, "input", where)
    a, b = text_field(row, "output_1", where), text_field(row, "output_2", where)
    outcome = "a" if _small_int(_required(row, "label", where), where, "label", (1, 2)) == 1 else "b"
    return _ab(row, where, prompt, a, ("output_2", b), outcome, {"input", "output_1", "output_2", "label"},
               {"benchmark": "llmbar", "subset": llmbar_subset(where)})


def pandalm_majority(votes: list[int]) -> str:
    """The outcome three PandaLM annotators' votes (0 = tie, 1, 2) give, by PandaLM's own rule
    (``get_majority_vote`` in its ``data/compute_metrics.py``): the most common vote, the first annotator's
    when all three differ."""
    counts = Counter(votes)
    return PANDALM_OUTCOMES[max(counts, key=lambda v: (counts[v], -votes.index(v)))]


def pandalm_response(row: dict, name: str, where: str) -> str:
    """A PandaLM response as text: empty text is kept (a model that answered nothing was judged too), and
    JSON ``true`` / ``false`` (how the file stores a model's answer "True") become "True" / "False"."""
    value = _required(row, name, where)
    if isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        raise DataError(where, name, f"expected text, got {type(value).__name__} {value!r:.60}")
    if problem := unicode_problem(value):
        raise DataError(where, name, problem)
    return value


def from_pandalm(row: dict, where: str, ctx: FormatContext) -> Comparison:
    """PandaLM test set: ``instruction, input, response1, response2, annotator1..3`` (0 = tie, 1, 2).

    The prompt is the instruction, then a blank line and the input where there is one (the file writes a
    missing input as "", null or NaN; one row has only an input). ``meta["annotators"]`` keeps the votes."""
    parts = []
    for name in ("instruction", "input"):
        value = _required(row, "instruction", where) if name == "instruction" else row.get(name)
        if isinstance(value, str) and value.strip():
            parts.append(text_field(row, name, where))
        elif not (value is None or isinstance(value, str) or (isinstance(value, float) and math.isnan(value))):
            raise DataError(where, name, f"expected text, got {type(value).__name__} {value!r:.60}")
    if not parts:
        raise DataError(where, "instruction", "empty text, and no input")
    prompt = "\n\n".join(parts)
    a, b = pandalm_response(row, "response1", where), pandalm_response(row, "response2", where)
    names = ("annotator1", "annotator2", "annotator3")
    votes = [_small_int(_required(row, n, where), where, n, (0, 1, 2)) for n in names]
    used = {"instruction", "input", "response1", "response2", "idx", *names}
    return _ab(row, where, prompt, a, ("response2", b), pandalm_majority(votes), used,
               {"benchmark": "pandalm", "id": row.get("idx"), "annotators": votes})


def judgebench_outcome(value: object, where: str) -> str:
    """``a`` for JudgeBench's label ``"A>B"``, ``b`` for ``"B>A"``."""
    if isinstance(value, str) and value.strip() in ("A>B", "B>A"):
        return "a" if value.strip() == "A>B" else "b"
    raise DataError(where, "label", f"expected 'A>B' or 'B>A', got {value!r:.60}")


def judgebench_subset(source: object) -> str | None:
    """JudgeBench's category of a ``source``: the prefix its authors report by (mmlu-pro-law -> mmlu-pro)."""
    if not isinstance(source, str) or not source:
        return None
    return next((c for c in JUDGEBENCH_CATEGORIES if source.startswith(c)), source)


def from_judgebench(row: dict, where: str, ctx: FormatContext) -> Comparison:
    """JudgeBench: ``pair_id, source, question, response_A, response_B, label`` ("A>B" | "B>A")."""
    prompt = text_field(row, "question", where)
    a, b = text_field(row, "response_A", where), text_field(row, "response_B", where)
    outcome = judgebench_outcome(_required(row, "label", where), where)
    meta = {"benchmark": "judgebench", "subset": judgebench_subset(row.get("source")), "id": row.get("pair_id")}
    return _ab(row, where, prompt, a, ("response_B", b), outcome, {"question", "response_A", "response_B", "label",
                                                                   "pair_id"}, meta)


# ----------------------------------------------------------------------------- MT-Bench human judgements


def _conversation(row: dict, name: str, where: str) -> list[dict]:
    return [{"role": m["role"], "content": m["content"]} for m in message_list(_required(row, name, where), where, name)]


def _up_to_turn(messages: list[dict], turn: int | None, where: str, name: str) -> list[dict]:
    """The messages up to the ``turn``-th assistant message (the last one when ``turn`` is None)."""
    answers = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    if not answers:
        raise DataError(where, name, "has no assistant message to judge")
    if turn is not None and not 1 <= turn <= len(answers):
        raise DataError(where, "turn", f"is {turn}, but '{name}' has {len(answers)} assistant turns")
    return messages[:answers[(turn or len(answers)) - 1] + 1]


def from_mtbench_human(row: dict, where: str, ctx: FormatContext) -> Comparison:
    """MT-Bench human judgements: ``question_id, model_a, model_b, winner, judge, conversation_a / _b, turn``.

    The judged responses are each conversation's ``turn``-th assistant message. Each model saw its own earlier
    answers, so the prompt is the history both conversations share (rendered as the ``chat`` format does) and
    each response the rest of its conversation up to the judged turn: at turn 1 the prompt is the question
    and the responses the two answers. ``judge`` is the labeler; ``tie (bothbad)`` is a tie (``winner`` kept)."""
    turn = row.get("turn")
    turn = None if turn is None else _whole(turn, where, "turn")
    convs = [_up_to_turn(_conversation(row, n, where), turn, where, n) for n in ("conversation_a", "conversation_b")]
    outcome = winner_outcome(_required(row, "winner", where), where, {})
    shared = 0
    while shared < min(len(c) for c in convs) - 1 and convs[0][shared] == convs[1][shared]:
        shared += 1
    history = convs[0][:shared]
    prompt = ctx.render_chat(history, True)
    responses = []
    for name, conv in zip(("conversation_a", "conversation_b"), convs):
        full = ctx.render_chat(conv, False)
        text = full[len(prompt):] if full.startswith(prompt) else "\n".join(m["content"] for m in conv[shared:])
        if not text.strip():
            raise DataError(where, name, "empty response")
        responses.append(text)
    labelled = dict(row, labeler=row.get("labeler", row.get("judge")))
    subset = None if turn is None else f"turn {turn}"
    return _ab(labelled, where, prompt, responses[0], ("conversation_b", responses[1]), outcome,
               {"conversation_a", "conversation_b", "judge"}, {"benchmark": "mtbench_human", "subset": subset})
