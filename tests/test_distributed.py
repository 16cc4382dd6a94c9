import json
import os
import socket
import subprocess
import sys

import yaml

from rewardlab.scoring import RewardModel


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_cpu_processes_train_with_ddp(tiny_bert, pairs_file, tmp_path):
    out = tmp_path / "ddp"
    cfg = {"model": {"backbone": tiny_bert},
           "data": {"train": str(pairs_file), "max_length": 64, "max_prompt_tokens": 32},
           "train": {"output_dir": str(out), "epochs": 1, "batch_size": 4, "lr_backbone": 1e-3, "lr_head": 1e-3,
                     "progress": False, "log_with": [], "warmup_ratio": 0.0, "save_every": 2}}
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    # `accelerate launch --cpu --num_processes 2` starts a single process (multi-CPU there means mpirun);
    # --multi_gpu with ACCELERATE_USE_CPU=true starts 2 ranks that Accelerate joins over gloo (MULTI_CPU).
    # CUDA_VISIBLE_DEVICES="": on a GPU machine the ranks would otherwise take GPUs (and NCCL) despite USE_CPU.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "ACCELERATE_USE_CPU": "true",
           "CUDA_VISIBLE_DEVICES": ""}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port()),
           "-m", "rewardlab", "train", "--config", str(tmp_path / "cfg.yaml")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    # 32 train comparisons, 4 per process-batch, 2 processes -> 4 steps; eval gathered from both processes
    assert metrics["steps"] == 4
    assert metrics["eval"]["pairs"] == 8 and metrics["train"]["pairs"] == 32
    assert sorted(p.name for p in (out / "states").iterdir()) == ["step-00000002", "step-00000004"]
    assert {f.name for f in (out / "states" / "step-00000004").iterdir()} >= {"rng-0.json", "rng-1.json"}
    rm = RewardModel.from_pretrained(str(out / "model"), device="cpu")
    assert isinstance(rm.score("q", "a"), float)


def test_processes_that_fail_to_join_are_a_clear_error(tiny_bert, pairs_file, tmp_path, monkeypatch):
    from conftest import tiny_config
    from rewardlab.train.run import train

    monkeypatch.setenv("WORLD_SIZE", "2")  # as a launcher sets it, with no process group behind it
    with __import__("pytest").raises(ValueError, match="2 processes were launched but Accelerate joined 1"):
        train(tiny_config(tiny_bert, pairs_file, tmp_path / "x"))
