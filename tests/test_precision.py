"""mixed_precision=auto: a measured choice that never costs the model its weights; fused kernels (Liger)."""

import pytest
import torch

from rewardlab.config import ModelConfig, load_config
from rewardlab.data.encode import EncodingSpec, TextEncoder, TextItems
from rewardlab.models.text import build_text_model
from rewardlab.train import precision
from rewardlab.train.precision import choose_precision, cpu_has_native_bf16, probe


NEVER = lambda device, n: (_ for _ in ()).throw(AssertionError("no probe expected"))  # noqa: E731


def test_requested_precision_is_kept_and_auto_without_native_bf16_is_fp32(monkeypatch):
    monkeypatch.setattr(precision, "process_precision", lambda: None)  # as a process's first run
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    model = torch.nn.Linear(2, 1)
    assert choose_precision("bf16", model, NEVER, torch.device("cpu"))[0] == "bf16"
    choice, info = choose_precision("auto", model, NEVER, torch.device("cpu"))
    assert choice == "no" and "no native bf16 here" in info["rule"]
    assert load_config(None, ["train.mixed_precision=no"]).train.mixed_precision == "no"  # YAML `no` stays text


def test_native_bf16_is_read_from_the_cpu_flags():
    assert cpu_has_native_bf16("processor : 0\nflags\t\t: fpu sse avx512f avx512_bf16 avx512_vnni\n")
    assert cpu_has_native_bf16("flags : fpu amx_bf16 amx_tile\n")
    assert not cpu_has_native_bf16("flags : fpu avx2 avx512f avx512bw\nbugs : avx512_bf16\n")


def test_a_cpu_with_native_bf16_probes_two_comparisons_and_a_tiny_model_stays_fp32(monkeypatch, tiny_bert):
    monkeypatch.setattr(precision, "process_precision", lambda: None)
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    model, tok = build_text_model(ModelConfig(backbone=tiny_bert))
    processor = TextItems(TextEncoder(tok, EncodingSpec(max_length=32)))
    asked = []

    def inputs(device, n):
        asked.append(n)
        items, _ = processor.encode_items(["q"] * 4, ["a b c", "d", "e f", "g"])
        return processor.collate(items[: 2 * n])

    choice, info = choose_precision("auto", model, inputs, torch.device("cpu"))
    assert asked == [precision.CPU_PROBE_COMPARISONS]
    assert choice == "no" and "fp32 without probing bf16" in info["rule"] and set(info["seconds_per_step"]) == {"no"}


@pytest.mark.parametrize("fp32,bf16,expected", [(1.0, 0.9, "no"), (1.0, 0.7, "bf16"), (0.01, 0.001, "no")])
def test_on_cpu_bf16_must_win_by_the_margin(monkeypatch, fp32, bf16, expected):
    monkeypatch.setattr(precision, "_seconds_per_step",
                        lambda model, inputs, device, dtype, *a, **k: fp32 if dtype is None else bf16)
    choice, info = probe(torch.nn.Linear(2, 1), {}, torch.device("cpu"), margin=precision.CPU_MARGIN,
                         min_seconds=precision.MIN_PROBE_SECONDS)
    assert choice == expected
    assert (set(info["seconds_per_step"]) == {"no"}) == (fp32 < precision.MIN_PROBE_SECONDS)


def test_auto_keeps_the_precision_this_process_already_trained_with():
    from accelerate import Accelerator

    Accelerator(cpu=True, mixed_precision="no")  # an earlier run in this process (a fold, a member, a trial)
    choice, info = choose_precision("auto", torch.nn.Linear(2, 1), NEVER, torch.device("cuda"))
    assert choice == "no" and "as this process trained before" in info["rule"]


def test_probe_times_both_and_leaves_the_model_as_it_was(tiny_bert):
    model, tok = build_text_model(ModelConfig(backbone=tiny_bert))
    items, _ = TextItems(TextEncoder(tok, EncodingSpec(max_length=32))).encode_items(["q"] * 4, ["a b c", "d", "e f", "g"])
    inputs = TextItems(TextEncoder(tok, EncodingSpec(max_length=32))).collate(items)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    choice, info = probe(model, inputs, torch.device("cpu"))
    assert choice in ("no", "bf16") and set(info["seconds_per_step"]) == {"no", "bf16"}
    assert choice == min(info["seconds_per_step"], key=info["seconds_per_step"].get)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert all(p.grad is None for p in model.parameters())


def test_a_compiled_run_trains_and_saves_plain_weights(tiny_bert, pairs_file, tmp_path):
    import numpy as np
    from safetensors.torch import load_file

    from conftest import tiny_config
    from rewardlab.scoring import RewardModel
    from rewardlab.train.run import train

    compiled = train(tiny_config(tiny_bert, pairs_file, tmp_path / "c", compile=True, max_steps=4))
    eager = train(tiny_config(tiny_bert, pairs_file, tmp_path / "e", max_steps=4))
    keys = load_file(str(compiled.model_dir / "model.safetensors")).keys()
    assert keys == load_file(str(eager.model_dir / "model.safetensors")).keys()  # no `_orig_mod.` prefixes
    assert np.isfinite(compiled.metrics["eval"]["log_loss"])
    prompts, texts = ["Question number 1: how do I do task 1?"] * 2, ["Do step one, then step 1.", "Nope 1."]
    rm = RewardModel.from_pretrained(str(compiled.model_dir), device="cpu")
    scores = rm.score_batch(prompts, texts)
    # inference through the compiled graph matches eager (dropout is off in eval mode)
    batch = rm.processor.collate(rm.processor.encode_items(prompts, texts)[0])
    with torch.inference_mode():
        graph = torch.compile(rm.model, dynamic=True)(**batch)[:, -1]
    torch.testing.assert_close(graph, torch.tensor(scores, dtype=graph.dtype), atol=1e-4, rtol=0)


def test_liger_kernels_are_refused_off_cuda(tiny_bert):
    from transformers import AutoModelForSequenceClassification

    from rewardlab.train.kernels import apply_liger

    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert)
    with pytest.raises(ValueError, match="Triton GPU kernels, and this run is on cpu; set train.liger_kernel=false"):
        apply_liger(model, torch.device("cpu"))


def _fake_liger(monkeypatch) -> list[dict]:
    """Install a stand-in for liger-kernel (Triton, CUDA only) with liger-kernel 0.8's contract; returns its calls.

    As in Liger, ``MODEL_TYPE_TO_APPLY_LIGER_FN`` maps model types to ``apply_liger_kernel_to_<type>(rope=True,
    cross_entropy=False, fused_linear_cross_entropy=True, rms_norm=True, swiglu=True, model=None)`` (the fused
    LM loss is on by default), and ``_apply_liger_kernel_to_instance(model, **kwargs)`` calls the model type's
    function with the keyword arguments it accepts, silently dropping the others. On an instance, the fused
    LM loss replaces the model's forward with a causal-LM one (here: failing as Liger's does on a model
    without ``lm_head``), and the kernels go into the instance's norms and MLPs (here: the modules' own
    forward, counted, so outputs stay the same and each patched module shows that it ran).
    """
    import inspect
    import sys
    import types

    calls = []

    def lm_loss_forward(self, *args, **kwargs):
        raise AttributeError(f"'{type(self).__name__}' object has no attribute 'lm_head' (Liger's fused LM loss)")

    def kernel(module, name):
        inner = module.forward
        module.liger_kernel, module.liger_runs = name, 0

        def forward(*args, **kwargs):
            module.liger_runs += 1
            return inner(*args, **kwargs)

        module.forward = forward

    def for_type(model_type):
        def apply(rope=True, cross_entropy=False, fused_linear_cross_entropy=True, rms_norm=True, swiglu=True,
                  model=None):
            calls.append({"type": model_type, "model": model, "rope": rope, "cross_entropy": cross_entropy,
                          "fused_linear_cross_entropy": fused_linear_cross_entropy, "rms_norm": rms_norm,
                          "swiglu": swiglu})
            if fused_linear_cross_entropy and model is not None:
                model.forward = types.MethodType(lm_loss_forward, model)
            if model is not None:
                base = getattr(model, model.base_model_prefix, model)
                if rms_norm:
                    kernel(base.norm, "rms_norm")
                for layer in base.layers:
                    if swiglu:
                        kernel(layer.mlp, "swiglu")
                    if rms_norm:
                        kernel(layer.input_layernorm, "rms_norm")
                        kernel(layer.post_attention_layernorm, "rms_norm")
        return apply

    table = {"llama": for_type("llama"), "qwen2": for_type("qwen2")}

    def apply_to_instance(model, **kwargs):  # liger-kernel 0.8's, less its logging
        model_type = getattr(model, "config", None) and getattr(model.config, "model_type", None)
        if not model_type or model_type not in table:
            return
        fn = table[model_type]
        fn(model=model, **{k: v for k, v in kwargs.items() if k in inspect.signature(fn).parameters})

    patch = types.ModuleType("liger_kernel.transformers.monkey_patch")
    patch.MODEL_TYPE_TO_APPLY_LIGER_FN, patch._apply_liger_kernel_to_instance = table, apply_to_instance
    package = types.ModuleType("liger_kernel.transformers")
    package.monkey_patch = patch
    monkeypatch.setitem(sys.modules, "liger_kernel", types.ModuleType("liger_kernel"))
    monkeypatch.setitem(sys.modules, "liger_kernel.transformers", package)
    monkeypatch.setitem(sys.modules, "liger_kernel.transformers.monkey_patch", patch)
    return calls


def _tiny_qwen2():
    from transformers import Qwen2Config, Qwen2ForSequenceClassification

    torch.manual_seed(0)
    return Qwen2ForSequenceClassification(Qwen2Config(vocab_size=64, hidden_size=16, intermediate_size=32,
                                                      num_hidden_layers=2, num_attention_heads=2,
                                                      num_key_value_heads=2, num_labels=1, pad_token_id=0)).eval()


def test_liger_kernels_patch_each_supported_backbone_without_the_lm_loss(tiny_llama, monkeypatch):
    from transformers import BertConfig, BertModel

    from rewardlab.train.kernels import apply_liger

    calls = _fake_liger(monkeypatch)
    model, tok = build_text_model(ModelConfig(backbone=tiny_llama))  # a rewardlab reward model on a Llama
    model.eval()
    proc = TextItems(TextEncoder(tok, EncodingSpec(max_length=32)))
    inputs = proc.collate(proc.encode_items(["q", "why?"], ["a b c", "because it is"])[0])
    with torch.no_grad():
        before = model(**inputs)
    assert apply_liger(model, torch.device("cuda")) == ["llama"]
    # One call, on the outermost transformers model (not its inner LlamaModel), with the LM losses off and
    # Liger's defaults for the kernels.
    assert [c["model"] for c in calls] == [model.hf_model]
    assert {k: v for k, v in calls[0].items() if k not in ("type", "model")} == {
        "rope": True, "cross_entropy": False, "fused_linear_cross_entropy": False, "rms_norm": True, "swiglu": True}
    # The reward model still scores as it did (Liger's LM-loss forward would have replaced it), through the
    # patched modules of its own backbone.
    with torch.no_grad():
        after = model(**inputs)
    assert torch.equal(before, after)
    patched = [m for m in model.modules() if hasattr(m, "liger_kernel")]
    assert len(patched) == 3 * model.hf_model.config.num_hidden_layers + 1 and all(m.liger_runs for m in patched)

    # Several backbones in one model (towers): each supported one is patched, each with its own type; others
    # are left as they are.
    calls.clear()
    qwen2 = _tiny_qwen2()
    bert = BertModel(BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                intermediate_size=32))
    towers = torch.nn.ModuleDict({"text": model, "bert": bert, "qwen2": qwen2, "fusion": torch.nn.Linear(2, 1)})
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        qwen2_before = qwen2(input_ids=ids).logits
    assert apply_liger(towers, torch.device("cuda")) == ["llama", "qwen2"]
    assert [(c["type"], c["model"]) for c in calls] == [("llama", model.hf_model), ("qwen2", qwen2)]
    assert not any(c["fused_linear_cross_entropy"] or c["cross_entropy"] for c in calls)
    with torch.no_grad():
        assert torch.equal(qwen2(input_ids=ids).logits, qwen2_before)
    assert not any(hasattr(m, "liger_kernel") for m in bert.modules())


def test_liger_kernels_refuse_models_they_cannot_patch_with_a_clear_error(monkeypatch):
    import sys

    from transformers import BertConfig, BertModel

    from rewardlab.train.kernels import apply_liger

    calls = _fake_liger(monkeypatch)
    bert = BertModel(BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                intermediate_size=32))
    with pytest.raises(ValueError, match=r"no kernels for this model's backbone \(bert\); it supports llama, qwen2$"):
        apply_liger(torch.nn.ModuleDict({"backbone": bert, "head": torch.nn.Linear(16, 1)}), torch.device("cuda"))
    with pytest.raises(ValueError, match=r"no kernels for this model's backbone \(none\)"):
        apply_liger(torch.nn.Linear(2, 1), torch.device("cuda"))
    assert calls == []
    # without liger-kernel installed (as on CPU machines), the error says what to install
    monkeypatch.setitem(sys.modules, "liger_kernel", None)
    monkeypatch.setitem(sys.modules, "liger_kernel.transformers", None)
    with pytest.raises(ValueError, match=r"train.liger_kernel=true needs the liger-kernel package "
                                         r"\(pip install liger-kernel\)"):
        apply_liger(_tiny_qwen2(), torch.device("cuda"))
