"""A checkpoint gives the same reward to every program that reads it: rewardlab's scorer, plain transformers (the
README's snippet, run as written), OpenRLHF's reward-model loader (its contract rebuilt here: OpenRLHF is not
installable) and folders saved before the inference limit was recorded."""

import json
import re
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModel, AutoTokenizer

from rewardlab.data.encode import EncodingSpec, TextEncoder
from rewardlab.models.base import read_metadata, save_model
from rewardlab.scoring import RewardModel
from rewardlab.train.run import train

from conftest import CORPUS, tiny_config, write_jsonl

ROOT = Path(__file__).resolve().parents[1]
MAX_LENGTH = 32  # the training budget: 1.5x of it stays far under the tiny backbones' 512 positions
POSITIONS = 512  # max_position_embeddings of both tiny backbones
BACKBONES = ("tiny_bert", "tiny_llama")


def snippet(page: Path) -> str:
    """The plain-transformers code block of ``page`` (the README's "Without rewardlab", docs/checkpoints.md)."""
    blocks = re.findall(r"```python\n(.*?)```", page.read_text(), re.DOTALL)
    return next(b for b in blocks if "AutoModelForSequenceClassification.from_pretrained" in b)


def plain_reward(folder: Path, prompt: str, response: str) -> float:
    """The README's snippet, run as written on ``folder``."""
    scope = {"prompt": prompt, "response": response}
    with torch.no_grad():
        exec(snippet(ROOT / "README.md").replace('"runs/demo/model"', repr(str(folder))), scope)
    return float(scope["reward"])


def checkpoint(backbone: str, root: Path) -> Path:
    rows = [{"prompt": f"Question {i}: how do I do task {i}?", "chosen": f"Do step one, then step {i}, and check it.",
             "rejected": "I'm sorry, I can't help with that."} for i in range(16)]
    cfg = tiny_config(backbone, write_jsonl(root / "pairs.jsonl", rows), root / "run", max_steps=2)
    return train(replace(cfg, data=replace(cfg.data, max_length=MAX_LENGTH, max_prompt_tokens=16))).model_dir


@pytest.fixture(scope="module")
def folders(tiny_bert, tiny_llama, tmp_path_factory) -> dict[str, Path]:
    """A checkpoint trained by rewardlab (data.max_length=32) on each tiny backbone."""
    paths = {"tiny_bert": tiny_bert, "tiny_llama": tiny_llama}
    return {name: checkpoint(paths[name], tmp_path_factory.mktemp(name)) for name in BACKBONES}


def pair_of_length(tok, tokens: int, prompt_words: int = 4) -> tuple[str, str]:
    """A (prompt, response) whose joined text (prompt + "\\n" + response) is at least ``tokens`` long for ``tok``
    (special tokens included); the prompt is ``prompt_words`` long."""
    words = " ".join(CORPUS).split()
    prompt = " ".join(f"p{i}" for i in range(prompt_words)) + " why?"
    n = 1
    while len(tok(prompt + "\n" + " ".join(words[:n]))["input_ids"]) < tokens:
        n += 1
    return prompt, " ".join(words[:n])


@pytest.mark.parametrize("backbone", BACKBONES)
def test_plain_transformers_gives_rewardlabs_score_past_the_training_length(folders, backbone):
    folder = folders[backbone]
    rm = RewardModel.from_pretrained(str(folder), device="cpu")
    tok = AutoTokenizer.from_pretrained(folder)
    prompt, response = pair_of_length(tok, MAX_LENGTH * 3 // 2)
    assert rm.score(prompt, response) == pytest.approx(plain_reward(folder, prompt, response), abs=1e-5)
    ids = tok(prompt + "\n" + response, truncation=True)["input_ids"]
    assert MAX_LENGTH * 3 // 2 <= len(ids) < MAX_LENGTH * 2
    (item,), truncated = rm.processor.encode_items([prompt], [response])
    assert list(item[0]) == ids and truncated == 0  # the whole text: not cut to the training budget
    encoding = read_metadata(folder)["encoding"]
    assert encoding["max_length"] == MAX_LENGTH and encoding["inference_max_length"] == POSITIONS
    settings = json.loads((folder / "tokenizer_config.json").read_text())
    assert settings["model_max_length"] == POSITIONS and settings["truncation_side"] == "left"
    (cut,), truncated = TextEncoder(tok, EncodingSpec(**encoding)).encode([prompt], [response])
    assert len(cut["input_ids"]) == MAX_LENGTH and truncated == 1  # what training (and scoring, before) read


@pytest.mark.parametrize("backbone", BACKBONES)
def test_past_the_backbones_limit_a_text_loses_its_start(folders, backbone):
    folder = folders[backbone]
    rm = RewardModel.from_pretrained(str(folder), device="cpu")
    tok = AutoTokenizer.from_pretrained(folder)
    prompt, response = pair_of_length(tok, POSITIONS + 40, prompt_words=60)
    text = prompt + "\n" + response
    ids = tok(text, truncation=True)["input_ids"]
    whole = tok(text, add_special_tokens=False)["input_ids"]
    special = tok("")["input_ids"]  # [CLS] [SEP] for BERT, none for the tiny Llama
    assert len(ids) == POSITIONS and ids == special[:1] + whole[-(POSITIONS - len(special)):] + special[1:]
    reward = rm.score(prompt, response)
    assert reward == pytest.approx(plain_reward(folder, prompt, response), abs=1e-5)
    assert rm.score_batch([prompt], [response]) == pytest.approx([reward], abs=1e-6)
    items, truncated = rm.processor.encode_items([prompt, "why?"], [response, "because."])
    assert truncated == 1 and list(items[0][0]) == ids  # the server reports the cut
    # the prompt's start is gone: changing it changes nothing; the response's end is read
    assert rm.score("p00" + prompt[2:], response) == reward
    (item,), _ = rm.processor.encode_items([prompt], [response + " blue"])
    assert list(item[0]) != ids and list(item[0])[-len(special[1:]) - 1] == tok(" blue", add_special_tokens=False)[
        "input_ids"][-1]


def as_saved_before(folder: Path, backbone: str, out: Path) -> Path:
    """``folder`` as rewardlab wrote it before the inference limit was recorded: the encoding has the training
    spec only, the tokenizer config is the backbone's, config.json has no top-level mean / std."""
    shutil.copytree(folder, out)
    config = json.loads((out / "config.json").read_text())
    for key in ("mean", "std", "value_head_prefix"):
        config.pop(key, None)
    del config["rewardlab"]["encoding"]["inference_max_length"]
    (out / "config.json").write_text(json.dumps(config))
    settings = json.loads((out / "tokenizer_config.json").read_text())
    settings.pop("truncation_side")
    original = json.loads((Path(backbone) / "tokenizer_config.json").read_text()).get("model_max_length")
    settings["model_max_length"] = original if original is not None else int(1e30)
    (out / "tokenizer_config.json").write_text(json.dumps(settings))
    return out


@pytest.mark.parametrize("backbone", BACKBONES)
def test_a_checkpoint_saved_before_reads_up_to_its_backbones_limit(folders, backbone, request, tmp_path):
    """Old folders score by the same rule: their limit is worked out on load (config.max_position_embeddings, and
    the tokenizer's model_max_length where it is a real number: MiniLM's 512, the tiny Llama's unknown)."""
    old = as_saved_before(folders[backbone], request.getfixturevalue(backbone), tmp_path / "old")
    rm = RewardModel.from_pretrained(str(old), device="cpu")
    new = RewardModel.from_pretrained(str(folders[backbone]), device="cpu")
    assert "inference_max_length" not in rm.metadata["encoding"]
    assert rm.processor.encoder.max_length == POSITIONS
    tok = AutoTokenizer.from_pretrained(old)
    pairs = [pair_of_length(tok, MAX_LENGTH * 3 // 2), pair_of_length(tok, POSITIONS + 40, prompt_words=60)]
    prompts, responses = [p for p, _ in pairs], [r for _, r in pairs]
    assert rm.score_batch(prompts, responses) == pytest.approx(new.score_batch(prompts, responses), abs=1e-6)
    assert rm.score(*pairs[0]) == pytest.approx(plain_reward(old, *pairs[0]), abs=1e-5)
    # saved again (as `rewardlab adapt` does), it records the limit, the tokenizer's cut and OpenRLHF's statistics
    keep = {k: v for k, v in rm.metadata.items() if k not in ("kind", "heads", "outcome")}
    again = save_model(rm.model, rm.processor, tmp_path / "again", keep, kind="text")
    assert read_metadata(again)["encoding"]["inference_max_length"] == POSITIONS
    assert json.loads((again / "tokenizer_config.json").read_text())["truncation_side"] == "left"
    assert ("mean" in json.loads((again / "config.json").read_text())) == (backbone == "tiny_llama")


def test_openrlhf_reads_a_decoder_checkpoint_as_it_is(folders):
    """OpenRLHF's ``get_llm_for_sequence_regression(path, "reward", normalize_reward=True)`` (openrlhf/models/
    model.py): the base model under its ``base_model_prefix`` and a bias-free ``Linear(hidden, 1)`` named
    ``value_head_prefix`` (config first, else "score"); the reward is read at the last token whose attention mask
    is 1, with position ids ``cumsum(mask) - 1``, and normalised as ``(r - config.mean) / config.std``."""
    folder = folders["tiny_llama"]
    config = json.loads((folder / "config.json").read_text())
    meta = config["rewardlab"]
    assert (config["mean"], config["std"]) == (meta["reward_mean"], meta["reward_std"])
    head = config.get("value_head_prefix", "score")
    hf_config = AutoConfig.from_pretrained(folder)
    base_class = AutoModel._model_mapping[type(hf_config)]  # LlamaModel
    prefix = base_class.__base__.base_model_prefix  # "model"
    base = base_class(hf_config).eval()
    state = load_file(folder / "model.safetensors")
    assert set(state) == {f"{prefix}.{k}" for k in base.state_dict()} | {f"{head}.weight"}
    assert state[f"{head}.weight"].shape == (1, hf_config.hidden_size)
    base.load_state_dict({k[len(prefix) + 1:]: v for k, v in state.items() if k.startswith(f"{prefix}.")})
    value_head = torch.nn.Linear(hf_config.hidden_size, 1, bias=False)
    value_head.weight.data.copy_(state[f"{head}.weight"])

    tok = AutoTokenizer.from_pretrained(folder)
    tok.padding_side = "right"
    prompts = ["Why is the sky blue?", "How do I do task 3?", "Hi "]
    responses = ["Because of scattering.", "Do step one, then step 3, and check it.", "I'm sorry, I can't help."]
    texts = [p + r if p[-1].isspace() else p + "\n" + r for p, r in zip(prompts, responses)]
    batch = tok(texts, padding=True, truncation=True, return_tensors="pt")
    mask = batch["attention_mask"]
    assert (mask == 0).any()  # right-padded
    with torch.no_grad():  # RewardModel.forward of openrlhf/models/model.py, without packing
        eos_indices = mask.size(1) - 1 - mask.long().fliplr().argmax(dim=1, keepdim=True)
        position_ids = mask.long().cumsum(-1) - 1
        position_ids.masked_fill_(mask == 0, 1)
        hidden = base(batch["input_ids"], attention_mask=mask, position_ids=position_ids)["last_hidden_state"]
        reward = value_head(hidden).squeeze(-1).gather(dim=1, index=eos_indices).squeeze(1)
        normalized = (reward - config["mean"]) / config["std"]
    rm = RewardModel.from_pretrained(str(folder), device="cpu")
    assert reward.tolist() == pytest.approx(rm.score_batch(prompts, responses), abs=1e-5)
    assert normalized.tolist() == pytest.approx(rm.score_batch(prompts, responses, normalize="zscore"), abs=1e-5)


def test_an_encoder_checkpoint_does_not_pretend_to_be_openrlhfs(folders):
    """BERT's classifier reads [CLS] through its pooler: OpenRLHF's last-token ``score`` head is not in the folder,
    and no top-level statistics invite its loader."""
    folder = folders["tiny_bert"]
    config = json.loads((folder / "config.json").read_text())
    assert "mean" not in config and "value_head_prefix" not in config
    assert "score.weight" not in load_file(folder / "model.safetensors")


def test_the_docs_show_the_snippet_the_tests_run():
    assert snippet(ROOT / "docs" / "checkpoints.md") == snippet(ROOT / "README.md")
