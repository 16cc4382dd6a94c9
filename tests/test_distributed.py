import json
import os
import shutil
import signal
import socket
import subprocess
import sys

import psutil
import torch
import yaml

from rewardlab.scoring import RewardModel


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_two(*args: str, timeout: float = 300, script: str | None = None) -> subprocess.CompletedProcess:
    """``python -m rewardlab ARGS`` (or ``python SCRIPT ARGS``) in two CPU processes (gloo) under
    ``accelerate launch``.

    `accelerate launch --cpu --num_processes 2` starts a single process (multi-CPU there means mpirun);
    --multi_gpu with ACCELERATE_USE_CPU=true starts 2 ranks that Accelerate joins over gloo (MULTI_CPU).
    CUDA_VISIBLE_DEVICES="": on a GPU machine the ranks would otherwise take GPUs (and NCCL) despite USE_CPU.
    A run that hangs fails with every rank's Python stacks (faulthandler, on SIGABRT), not a bare timeout.
    """
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "ACCELERATE_USE_CPU": "true",
           "CUDA_VISIBLE_DEVICES": "", "PYTHONFAULTHANDLER": "1"}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port",
           str(_free_port()), *([script] if script else ["-m", "rewardlab"]), *args]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        for rank in psutil.Process(proc.pid).children(recursive=True):
            rank.send_signal(signal.SIGABRT)
        try:
            out, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        stacks = err[max(err.find("Fatal Python error"), 0):]  # faulthandler's dumps, then the launcher's report
        raise AssertionError(f"the two processes did not finish in {timeout:.0f} s; their stacks:\n"
                             f"{stacks[:12000]}\nstdout:\n{out[-2000:]}") from None
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def _config(tiny_bert: str, pairs_file, out, data: dict | None = None, **train) -> dict:
    """A tiny run's config as YAML data (1 epoch, 4 pairs a process-batch); ``data`` and ``train`` add or replace."""
    return {"model": {"backbone": tiny_bert},
            "data": {"train": str(pairs_file), "max_length": 64, "max_prompt_tokens": 32, **(data or {})},
            "train": {"output_dir": str(out), "epochs": 1, "batch_size": 4, "progress": False, "log_with": [],
                      **train}}


def test_two_cpu_processes_train_with_ddp(tiny_bert, pairs_file, tmp_path):
    out = tmp_path / "ddp"
    cfg = _config(tiny_bert, pairs_file, out, lr_backbone=1e-3, lr_head=1e-3, warmup_ratio=0.0, save_every=2)
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    # The CLI, with a count of the DDP wrappers still alive when it destroys the process group. A wrapper's
    # C++ reducer that outlives the group's Python reference destroys the group with the GIL held, joining
    # gloo's worker threads while one of them may wait for the GIL: a hang after training (about one run in
    # 80 when train() destroyed the group itself).
    (tmp_path / "cli.py").write_text(
        "import gc, sys, torch\n"
        "import torch.distributed as dist\n"
        "from rewardlab.cli import main\n"
        "destroy = dist.destroy_process_group\n"
        "def counted(*args):\n"
        "    gc.collect()\n"
        "    n = sum(isinstance(o, torch.nn.parallel.DistributedDataParallel) for o in gc.get_objects())\n"
        "    print(f'rank {dist.get_rank()}: {n} DDP wrappers when the group is destroyed', flush=True)\n"
        "    destroy(*args)\n"
        "dist.destroy_process_group = counted\n"
        "sys.exit(main(sys.argv[1:]))\n")
    proc = launch_two("train", "--config", str(tmp_path / "cfg.yaml"), script=str(tmp_path / "cli.py"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "rank 0: 0 DDP wrappers when the group is destroyed" in proc.stdout
    assert "rank 1: 0 DDP wrappers when the group is destroyed" in proc.stdout
    assert proc.stdout.count("metrics: ") == 1  # one report, from the main process
    metrics = json.loads((out / "metrics.json").read_text())
    # 32 train comparisons, 4 per process-batch, 2 processes -> 4 steps; eval gathered from both processes
    assert metrics["steps"] == 4
    assert metrics["eval"]["pairs"] == 8 and metrics["train"]["pairs"] == 32
    assert metrics["data"]["distributed"] == {"type": "MULTI_CPU", "processes": 2}
    assert sorted(p.name for p in (out / "states").iterdir()) == ["step-00000002", "step-00000004"]
    assert {f.name for f in (out / "states" / "step-00000004").iterdir()} >= {"rng-0.json", "rng-1.json"}
    rm = RewardModel.from_pretrained(str(out / "model"), device="cpu")
    assert isinstance(rm.score("q", "a"), float)


def test_an_eval_set_smaller_than_the_processes_does_not_hang_ddp(tiny_bert, pairs_file, tmp_path):
    # One eval comparison on two processes: the second has nothing to score. Through DDP, the first forward
    # after a training step broadcasts the buffers; that collective went unmatched and both processes hung.
    one = tmp_path / "one.jsonl"
    one.write_text(pairs_file.read_text().splitlines()[0] + "\n")
    out = tmp_path / "run"
    cfg = _config(tiny_bert, pairs_file, out, data={"eval": str(one)}, eval_every=2, save_model=False)
    proc = _train_two(cfg, tmp_path, "one", timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["eval"]["pairs"] == 1 and metrics["train"]["pairs"] == 40
    history = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    assert [r["step"] for r in history if r["kind"] == "eval"] == [2, 4, 5]  # during training and at its end


def test_cross_validation_trains_fold_after_fold_on_two_processes(tiny_bert, pairs_file, tmp_path):
    # Each fold is a train() on the same process group: the first fold used to destroy it, and the second
    # stopped with "Default process group has not been initialized".
    out = tmp_path / "cv"
    cfg = _config(tiny_bert, pairs_file, out, data={"folds": 2}, save_model=False)
    proc = _train_two(cfg, tmp_path, "cv", timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "cv_metrics.json").read_text())
    assert summary["folds"] == 2 and [f["pairs"] for f in summary["per_fold"]] == [20, 20]
    assert proc.stdout.count("over 2 folds") == 2  # accuracy and log-loss, from the main process only


def _train_two(cfg: dict, tmp_path, name: str, *extra: str, timeout: float = 300) -> subprocess.CompletedProcess:
    (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(cfg))
    return launch_two("train", "--config", str(tmp_path / f"{name}.yaml"), *extra, timeout=timeout)


def test_fsdp_on_two_cpu_processes_writes_sharded_states_and_resumes_exactly(tiny_bert, pairs_file, tmp_path):
    from safetensors.torch import load_file

    def config(out):
        return _config(tiny_bert, pairs_file, out, epochs=2, lr_backbone=1e-3, lr_head=1e-3, warmup_ratio=0.0,
                       save_every=2, fsdp=True, ema_decay=0.5, save_total_limit=4)

    whole = tmp_path / "whole"
    proc = _train_two(config(whole), tmp_path, "whole")
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((whole / "metrics.json").read_text())
    assert metrics["steps"] == 8 and metrics["eval"]["pairs"] == 8  # 32 comparisons, 4 per process-batch, 2 epochs
    state = whole / "states" / "step-00000004"
    assert json.loads((state / "state.json").read_text())["shards"] == 2
    halves = [load_file(state / f"trainable-{r}.safetensors") for r in (0, 1)]
    full = load_file(whole / "model" / "model.safetensors")
    # each process wrote its own half (dim 0) of every weight; together they are the whole
    word = next(k for k in halves[0] if k.endswith("word_embeddings.weight"))
    vocab = full["bert.embeddings.word_embeddings.weight"].shape[0]
    assert halves[0][word].shape[0] == halves[1][word].shape[0] == vocab // 2
    assert not torch.equal(halves[0][word], halves[1][word])
    # the saved model is a plain checkpoint of the whole weights
    rm = RewardModel.from_pretrained(str(whole / "model"), device="cpu")
    assert isinstance(rm.score("q", "a"), float)

    # resume from step 4 in a fresh folder: the same model as the uninterrupted run
    resumed = tmp_path / "resumed"
    shutil.copytree(state, resumed / "states" / state.name)
    proc = _train_two(config(resumed), tmp_path, "resumed", "--resume")
    assert proc.returncode == 0, proc.stderr[-3000:]
    # the last state (weights, Adam moments, EMA: each process's slices) and the saved model are the same
    for name in ("trainable-0", "trainable-1", "optimizer-0", "optimizer-1", "ema-0", "ema-1", "../../model/model"):
        a, b = (load_file(run / "states" / "step-00000008" / f"{name}.safetensors") for run in (whole, resumed))
        assert a.keys() == b.keys()
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6, msg=f"{name}: {k}")


def test_processes_that_fail_to_join_are_a_clear_error(tiny_bert, pairs_file, tmp_path, monkeypatch):
    from conftest import tiny_config
    from rewardlab.train.run import train

    monkeypatch.setenv("WORLD_SIZE", "2")  # as a launcher sets it, with no process group behind it
    with __import__("pytest").raises(ValueError, match="2 processes were launched but Accelerate joined 1"):
        train(tiny_config(tiny_bert, pairs_file, tmp_path / "x"))


def _score_rows_file(tmp_path, n=45):
    rows = [{"prompt": f"q{i}", "response": f"answer number {i} " * (1 + i % 5), "id": i} for i in range(n)]
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_two_processes_score_shards_merged_in_input_order(tiny_bert, tmp_path):
    data = _score_rows_file(tmp_path)
    proc = launch_two("score", "--model", tiny_bert, "--data", str(data), "--out", str(tmp_path / "two.jsonl"),
                      "--chunk-size", "8")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "scored 45 rows" in proc.stdout and "(2 processes)" in proc.stdout
    from rewardlab.cli import main

    assert main(["score", "--model", tiny_bert, "--data", str(data), "--out", str(tmp_path / "one.jsonl")]) == 0
    two = [json.loads(x) for x in (tmp_path / "two.jsonl").read_text().splitlines()]
    one = [json.loads(x) for x in (tmp_path / "one.jsonl").read_text().splitlines()]
    assert [r["id"] for r in two] == list(range(45))  # input order
    assert [r["response_score"] for r in two] == [__import__("pytest").approx(r["response_score"], abs=1e-5) for r in one]
    assert not list(tmp_path.glob(".two.jsonl*"))  # shards cleaned up


def test_an_interrupted_scoring_run_resumes_without_rescoring(tiny_bert, tmp_path):
    import pytest

    from rewardlab.data.sources import read_rows
    from rewardlab.evaluation.score_file import score_rows

    data = _score_rows_file(tmp_path)
    rm = RewardModel.from_pretrained(tiny_bert, device="cpu")
    calls = []
    original = rm.score_heads

    def dying(prompts, *args, **kwargs):
        if len(calls) == 3:
            raise KeyboardInterrupt  # killed while scoring the 4th chunk
        calls.append(len(prompts))
        return original(prompts, *args, **kwargs)

    rm.score_heads = dying
    out = tmp_path / "scored.jsonl"
    with pytest.raises(KeyboardInterrupt):
        score_rows(rm, read_rows(str(data)), out, chunk_size=8)
    assert not out.exists() and len(calls) == 3
    shard = tmp_path / ".scored.jsonl.shard-0-of-1"
    with shard.open("a") as fh:
        fh.write('{"torn": ')  # a chunk cut mid-write
    calls.clear()
    rm.score_heads = lambda prompts, *a, **k: (calls.append(len(prompts)), original(prompts, *a, **k))[1]
    assert score_rows(rm, read_rows(str(data)), out, chunk_size=8, resume=True) == 45
    assert calls == [8, 8, 5]  # only the 3 chunks not yet written
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == list(range(45))
    fresh = tmp_path / "fresh.jsonl"
    score_rows(RewardModel.from_pretrained(tiny_bert, device="cpu"), read_rows(str(data)), fresh, chunk_size=8)
    assert [r["response_score"] for r in rows] == pytest.approx(
        [json.loads(x)["response_score"] for x in fresh.read_text().splitlines()], abs=1e-6)


def test_prompt_mean_centres_each_score_on_its_prompts_responses_across_chunks(tiny_bert, tmp_path):
    import numpy as np
    import pytest

    from rewardlab.data.sources import read_rows
    from rewardlab.evaluation.score_file import score_rows

    rows = [{"prompt": f"q{i % 4}", "response": f"answer number {i} " * (1 + i % 3), "id": i} for i in range(18)]
    rows.append({"prompt": "q0", "chosen": "a long and careful answer", "rejected": "no"})
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    rm = RewardModel.from_pretrained(tiny_bert, device="cpu")
    read = lambda path: [json.loads(x) for x in path.read_text().splitlines()]  # noqa: E731
    score_rows(rm, read_rows(str(data)), tmp_path / "raw.jsonl", chunk_size=5)
    assert score_rows(rm, read_rows(str(data)), tmp_path / "centred.jsonl", chunk_size=5,
                      normalize="prompt_mean") == 19
    raw, centred = read(tmp_path / "raw.jsonl"), read(tmp_path / "centred.jsonl")
    scores = lambda table: [(r["prompt"], r[f"{c}_score"]) for r in table  # noqa: E731
                            for c in ("response", "chosen", "rejected") if f"{c}_score" in r]
    by_prompt: dict[str, list[float]] = {}
    for prompt, score in scores(raw):  # each prompt's items lie in several chunks of 5
        by_prompt.setdefault(prompt, []).append(score)
    expected = [score - np.mean(by_prompt[prompt]) for prompt, score in scores(raw)]
    assert [score for _, score in scores(centred)] == pytest.approx(expected, abs=1e-9)
    assert len(by_prompt["q0"]) == 7 and min(abs(np.mean(v)) for v in by_prompt.values()) > 1e-3  # not a no-op
    assert [r["id"] for r in centred[:18]] == list(range(18)) and not list(tmp_path.glob(".centred*"))


def test_two_processes_evaluate_shards_into_the_same_metrics_and_predictions(tiny_bert, pairs_file, tmp_path):
    common = ["--model", tiny_bert, "--data", str(pairs_file), "--group-by", "category", "--no-plots",
              "--chunk-size", "7"]
    proc = launch_two("eval", *common, "--out", str(tmp_path / "two"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("pairs: 40") == 1  # one report, from the main process
    from rewardlab.cli import main

    assert main(["eval", *common, "--out", str(tmp_path / "one")]) == 0
    one, two = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("one", "two"))
    assert two["pairs"] == one["pairs"] == 40
    for key in ("accuracy", "roc_auc", "log_loss"):
        assert two["overall"][key]["value"] == __import__("pytest").approx(one["overall"][key]["value"], abs=1e-5)
        assert two["overall"][key]["ci95"] == __import__("pytest").approx(one["overall"][key]["ci95"], abs=1e-5)
    assert two["groups"].keys() == one["groups"].keys()
    lines = [[json.loads(x)["source"] for x in (tmp_path / d / "predictions.jsonl").read_text().splitlines()]
             for d in ("one", "two")]
    assert lines[0] == lines[1]  # input order
    assert not list((tmp_path / "two").glob(".*shard*"))


def test_fsdp_needs_several_processes_and_a_sharded_state_as_many(tiny_bert, pairs_file, tmp_path):
    import pytest
    from conftest import tiny_config
    from rewardlab.train import checkpoint as ckpt
    from rewardlab.train.run import train

    with pytest.raises(ValueError, match="shards the model over several processes, and this run has one"):
        train(tiny_config(tiny_bert, pairs_file, tmp_path / "x", fsdp=True))
    folder = tmp_path / "state"
    ckpt.save_state(folder, trainable={"w": torch.ones(2)}, optimizer={"state": {}, "param_groups": []}, scheduler={},
                    ema=None, best=None, loop={}, shard=0, shards=2)
    assert (folder / "trainable-0.safetensors").exists() and not (folder / "trainable.safetensors").exists()
    with pytest.raises(ValueError, match="sharded over 2 processes .* resume it with 2 processes, not 1"):
        ckpt.load_state(folder, 0, 1)
