"""DeepSpeed ZeRO through Accelerate, on one CPU process (Accelerate runs DeepSpeed over several processes on
GPUs only): rewardlab's config drives the engine, the run trains as plain AdamW does, and its safetensors
resume states resume exactly, under ZeRO or without it."""

import json
import os
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

STATES = ("trainable", "optimizer", "ema")
CONFIGS = Path(__file__).resolve().parents[1] / "rewardlab" / "configs"


def _config(tiny_bert, pairs_file, out, **train) -> dict:
    # max_grad_norm so small that every step is clipped to gradients near Adam's eps: an engine that ignored it
    # would not train as the plain run does.
    return {"model": {"backbone": tiny_bert},
            "data": {"train": str(pairs_file), "max_length": 64, "max_prompt_tokens": 32},
            "train": {"output_dir": str(out), "epochs": 2, "batch_size": 4, "grad_accum": 2, "progress": False,
                      "log_with": [], "lr_backbone": 1e-3, "lr_head": 1e-2, "warmup_ratio": 0.0, "save_every": 2,
                      "save_total_limit": 4, "max_grad_norm": 1e-6, "mixed_precision": "no", **train}}


def _start(cfg: dict, tmp_path, name: str, *args: str, stage: int | None = None) -> subprocess.Popen:
    """``rewardlab train`` on one CPU process: plain, or under ``accelerate launch`` with the shipped ZeRO-STAGE
    config (a GPU machine too trains on its CPU here, so the runs compare). One thread each: two runs that do
    not depend on each other go side by side."""
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    launch = [] if stage is None else [
        "-m", "accelerate.commands.launch", "--config_file", str(CONFIGS / f"accelerate_zero{stage}.yaml"),
        "--num_processes", "1", "--mixed_precision", "no"]
    with open(tmp_path / f"{name}.log", "w") as log:  # a file, not a pipe: a full pipe would stall the run
        return subprocess.Popen([sys.executable, *launch, "-m", "rewardlab", "train", "--config", str(path), *args],
                                env=env, stdout=log, stderr=subprocess.STDOUT)


def _wait(*procs: subprocess.Popen) -> None:
    for proc in procs:
        proc.wait(timeout=300)
        log = Path(proc.args[proc.args.index("--config") + 1]).with_suffix(".log")
        assert proc.returncode == 0, log.read_text()[-3000:]


def _assert_same(a_dir, b_dir, names, atol):
    for name in names:
        a, b = load_file(a_dir / f"{name}.safetensors"), load_file(b_dir / f"{name}.safetensors")
        assert a.keys() == b.keys(), name
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=0, atol=atol, msg=f"{name}: {k}")


@pytest.mark.parametrize("stage,ema", [(2, 0.5), (3, 0.0)])
def test_zero_trains_like_adamw_and_resumes_exactly_from_its_safetensors_states(tiny_bert, pairs_file, tmp_path,
                                                                                  stage, ema):
    pytest.importorskip("deepspeed", reason="DeepSpeed is not installed (pip install rewardlab[deepspeed])")
    plain, whole = tmp_path / "plain", tmp_path / "whole"
    _wait(_start(_config(tiny_bert, pairs_file, plain, ema_decay=ema), tmp_path, "plain"),
          _start(_config(tiny_bert, pairs_file, whole, ema_decay=ema), tmp_path, "whole", stage=stage))
    metrics = json.loads((whole / "metrics.json").read_text())
    assert metrics["steps"] == 8 and metrics["eval"]["pairs"] == 8  # 32 pairs, 2 micro-batches of 4 a step
    assert metrics["data"]["distributed"] == {"type": "DEEPSPEED", "processes": 1, "zero_stage": stage}
    # The engine took rewardlab's micro-batch, accumulation (a step = two micro-batches), clipping and learning
    # rates: the model is plain AdamW's (stage 3 sums its flat partitions in another order: 1e-5).
    final = whole / "states" / "step-00000008"
    _assert_same(plain / "model", whole / "model", ["model"], atol=1e-4)
    _assert_same(plain / "states" / "step-00000008", final, [s for s in STATES if ema or s != "ema"], atol=1e-4)
    # A plain transformers checkpoint of whole weights
    from transformers import AutoModelForSequenceClassification

    hf = AutoModelForSequenceClassification.from_pretrained(whole / "model")
    assert hf.bert.embeddings.word_embeddings.weight.shape[0] > 1000

    # Interrupted after step 4: resumed under ZeRO in a fresh folder, the same states and model to the last bit;
    # and (once: the layout is the same for every stage) without DeepSpeed, as the state holds whole weights and
    # Adam moments, as a plain run's does
    resumed, bare = tmp_path / "resumed", tmp_path / "bare"
    runs = [(resumed, stage)] + ([(bare, None)] if stage == 2 else [])
    for folder, _ in runs:
        shutil.copytree(whole / "states" / "step-00000004", folder / "states" / "step-00000004")
    _wait(*[_start(_config(tiny_bert, pairs_file, folder, ema_decay=ema), tmp_path, folder.name, "--resume",
                   stage=on) for folder, on in runs])
    names = [s for s in STATES if ema or s != "ema"]
    _assert_same(final, resumed / "states" / "step-00000008", names, atol=1e-6)
    _assert_same(whole / "model", resumed / "model", ["model"], atol=1e-6)
    assert json.loads((resumed / "metrics.json").read_text())["eval"] == metrics["eval"]
    if stage == 2:
        _assert_same(whole / "model", bare / "model", ["model"], atol=1e-4)


def _fake_accelerator(ds_config: dict, processes: int = 2):
    plugin = types.SimpleNamespace(deepspeed_config=ds_config)
    return types.SimpleNamespace(state=types.SimpleNamespace(deepspeed_plugin=plugin), num_processes=processes)


def test_zero_config_takes_rewardlabs_batch_and_clipping_and_refuses_its_own_optimiser():
    from rewardlab.config import TrainConfig
    from rewardlab.train import zero

    ds = {"zero_optimization": {"stage": 2}, "train_micro_batch_size_per_gpu": "auto", "gradient_clipping": "auto"}
    zero.configure(_fake_accelerator(ds), TrainConfig(batch_size=8, grad_accum=4, max_grad_norm=0.3))
    assert ds["train_micro_batch_size_per_gpu"] == 8 and ds["train_batch_size"] == 16
    assert ds["gradient_accumulation_steps"] == 1  # rewardlab's loop accumulates and marks the boundary
    assert ds["gradient_clipping"] == 0.3
    with pytest.raises(ValueError, match="sets optimizer and scheduler: rewardlab builds the optimiser"):
        zero.configure(_fake_accelerator({"optimizer": {"type": "Adam"}, "scheduler": {"type": "WarmupLR"}}),
                       TrainConfig())
    with pytest.raises(ValueError, match="offloads the optimiser to cpu: not supported"):
        zero.configure(_fake_accelerator({"zero_optimization": {"stage": 3, "offload_optimizer": {"device": "cpu"}}}),
                       TrainConfig())


def test_zero_refuses_zero_dimensional_parameters_naming_them():
    from rewardlab.models.outcomes import RaoKupper
    from rewardlab.train import zero

    zero.check_model(torch.nn.Linear(2, 1))
    with pytest.raises(ValueError, match=r"zero-dimensional parameters \(raw_eta; a tie-aware loss's tie parameter"):
        zero.check_model(RaoKupper())
