"""``rewardlab tune``: a tiny search, workers sharing one study (journal file, PostgreSQL), pruning, errors."""

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml

from rewardlab.cli import main
from rewardlab.tune import JournalHeartbeatStorage, TuneSettings, run_tune
from rewardlab.tune.search import _make_pruner

from conftest import write_jsonl

GOOD, BAD = 1e-2, 1e-7  # backbone learning rates: log-loss ~0.01 vs ~0.69 after 12 steps


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models gain nothing from threads, and on a busy 2-core machine contending threads are 10x slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def setup(tiny_bert, tmp_path):
    """Base config, a one-parameter space (backbone learning rate) and easy data: long helpful vs curt answers."""
    rows = [{"prompt": f"Question {i}: what about topic {i}?", "chosen": f"A clear and helpful answer about topic {i}.",
             "rejected": f"No idea {i}."} for i in range(48)]
    cfg = {"model": {"backbone": tiny_bert},
           "data": {"train": str(write_jsonl(tmp_path / "pairs.jsonl", rows)), "max_length": 64,
                    "max_prompt_tokens": 32},
           "train": {"batch_size": 8, "lr_head": 1e-3, "schedule": "constant", "warmup_ratio": 0.0,
                     "max_steps": 12, "eval_every": 2, "progress": False, "log_with": []}}
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    (tmp_path / "space.yaml").write_text("train.lr_backbone: {type: float, low: 1.0e-7, high: 3.0e-2, log: true}\n")
    return tmp_path


def _settings(tmp: Path, **kw) -> TuneSettings:
    return TuneSettings(**{"space": str(tmp / "space.yaml"), "config": str(tmp / "cfg.yaml"), "out": str(tmp / "out"),
                           "metrics": ("log_loss",), "study": "s", **kw})


def _worker_cmd(tmp: Path, seed: int, *args: str) -> list[str]:
    return [sys.executable, "-m", "rewardlab", "tune", "--config", str(tmp / "cfg.yaml"), "--space",
            str(tmp / "space.yaml"), "--metric", "log_loss", "--pruner", "none", "--study", "shared", "--out",
            str(tmp / "out"), "--seed", str(seed), "--trial-set", "train.max_steps=4", *args]


def _run_workers(cmds: list[list[str]]) -> list[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    procs = [subprocess.Popen(c, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for c in cmds]
    outputs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outputs):
        assert p.returncode == 0, out[-2000:] + err[-3000:]
    return [out for out, _ in outputs]


def _assert_each_trial_ran_once(study: optuna.Study, outputs: list[str], trials: int, out: Path) -> None:
    complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert sorted(t.number for t in complete) == list(range(trials))
    # Two workers asking for the last trial at once: the later one gives it back, marked, without training.
    assert all(t.user_attrs.get("rewardlab:surplus") for t in study.trials if t.number >= trials)
    ran = [int(n) for o in outputs for n in re.findall(r"^trial (\d+) complete", o, re.M)]
    assert sorted(ran) == list(range(trials))  # each once, by exactly one worker
    folders = sorted((out / "trials").iterdir())
    assert [json.loads((f / "trial.json").read_text())["state"] for f in folders] == ["complete"] * trials
    assert {t.user_attrs["worker"] for t in complete} <= {json.loads((f / "trial.json").read_text())["worker"]
                                                          for f in folders}


def test_tiny_search_finds_a_learning_rate_clearly_better_than_a_bad_one(setup, capsys):
    out = setup / "out"
    out.mkdir()
    seeded = optuna.create_study(storage=f"sqlite:///{out / 'study.db'}", study_name="s", direction="minimize")
    seeded.enqueue_trial({"train.lr_backbone": BAD})  # trial 0: the bad learning rate, for comparison
    code = main(["tune", "--config", str(setup / "cfg.yaml"), "--space", str(setup / "space.yaml"), "--trials", "3",
                 "--metric", "log_loss", "--pruner", "none", "--study", "s", "--out", str(out), "--seed", "4",
                 "--refit"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{out / 'study.db'}")
    bad = study.trials[0]
    assert bad.params["train.lr_backbone"] == BAD and bad.value > 0.68
    assert study.best_value < bad.value - 0.3 and study.best_params["train.lr_backbone"] > 1e-3
    # Trial folders: config, metrics, history; no model and no resume states (save disk).
    trial_dir = out / "trials" / f"trial-{study.best_trial.number:04d}"
    assert {p.name for p in trial_dir.iterdir()} == {"config.yaml", "metrics.json", "history.jsonl", "trial.json"}
    # best.yaml is a full config `rewardlab train` runs as is: --refit trained it, without the trial budget.
    best = yaml.safe_load((out / "best.yaml").read_text())
    assert best["train"]["lr_backbone"] == study.best_params["train.lr_backbone"]
    assert best["train"]["output_dir"] == str(out / "best") and best["train"]["save_model"] is True
    assert (out / "best" / "model" / "model.safetensors").is_file()
    assert json.loads((out / "best" / "metrics.json").read_text())["eval"]["log_loss"] < 0.3
    report = (out / "report" / "report.html").read_text()
    for name in ("history", "importances", "parallel", "slice", "intermediate"):
        assert (out / "report" / f"{name}.png").stat().st_size > 1000
    assert report.count('src="data:image/png;base64,') == 5 and "<img" in report and 'src="http' not in report
    assert f"best trial {study.best_trial.number}: log_loss" in printed and "refit:" in printed


def test_two_worker_processes_share_one_journal_study_and_run_each_trial_once(setup):
    storage = f"journal:{setup / 'study.journal'}"
    outputs = _run_workers([_worker_cmd(setup, seed, "--trials", "5", "--storage", storage) for seed in (1, 2)])
    study = optuna.load_study(study_name="shared", storage=JournalHeartbeatStorage(
        str(setup / "study.journal"), heartbeat_interval=60, grace_period=120))
    _assert_each_trial_ran_once(study, outputs, 5, setup / "out")
    assert (setup / "out" / "best.yaml").is_file() and (setup / "out" / "report" / "report.html").is_file()


def test_pruning_stops_a_hopeless_trial_early(setup, capsys):
    out = setup / "out"
    out.mkdir()
    seeded = optuna.create_study(storage=f"sqlite:///{out / 'study.db'}", study_name="s", direction="minimize")
    for lr in (GOOD, GOOD, BAD):  # two trials to compare with, then a hopeless one
        seeded.enqueue_trial({"train.lr_backbone": lr})
    result = run_tune(_settings(setup, trials=3, pruner="median", pruner_startup_trials=2))
    hopeless = result.study.trials[2]
    assert [t.state.name for t in result.study.trials] == ["COMPLETE", "COMPLETE", "PRUNED"]
    assert hopeless.user_attrs["pruned_at_step"] < 12 and max(hopeless.intermediate_values) < 12
    record = json.loads((out / "trials" / "trial-0002" / "trial.json").read_text())
    assert record["state"] == "pruned" and "log_loss" in record["reason"]
    assert re.search(r"^trial 2 pruned: log_loss 0\.69\d+ at step \d+", capsys.readouterr().out, re.M)
    assert isinstance(_make_pruner(_settings(setup, trials=1, pruner="hyperband")), optuna.pruners.HyperbandPruner)


def test_several_objectives_give_a_pareto_front(setup):
    result = run_tune(_settings(setup, trials=2, metrics=("accuracy", "log_loss"), seed=0,
                                trial_overrides=("train.max_steps=4",)))
    assert [d.name for d in result.study.directions] == ["MAXIMIZE", "MINIMIZE"]
    assert result.study.metric_names == ["accuracy", "log_loss"]
    assert (setup / "out" / "report" / "pareto.png").is_file()
    assert json.loads((setup / "out" / "trials" / "trial-0000" / "trial.json").read_text())["values"].keys() == {
        "accuracy", "log_loss"}
    # --trial-set is a trial budget: trials ran 4 steps, best.yaml keeps the base config's 12
    assert json.loads((setup / "out" / "trials" / "trial-0000" / "metrics.json").read_text())["steps"] == 4
    assert yaml.safe_load(result.best_config.read_text())["train"]["max_steps"] == 12


@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used with Study.optimize")
def test_a_dead_workers_trial_is_failed_by_heartbeat_and_retried(setup):
    journal = setup / "study.journal"
    storage = JournalHeartbeatStorage(str(journal), heartbeat_interval=1, grace_period=2)
    study = optuna.create_study(storage=storage, study_name="s", direction="minimize")
    dist = optuna.distributions.FloatDistribution(1e-7, 3e-2, log=True)
    orphan = study.ask({"train.lr_backbone": dist})  # a worker took this trial, then was killed
    storage.set_trial_system_attr(orphan._trial_id, "rewardlab:heartbeat", time.time() - 60)
    time.sleep(2.1)  # its start time is past the grace period too
    result = run_tune(_settings(setup, trials=2, storage=f"journal:{journal}", heartbeat=1, pruner="none",
                                trial_overrides=("train.max_steps=2",)))
    states = [(t.number, t.state.name) for t in result.study.trials]
    assert states == [(0, "FAIL"), (1, "COMPLETE"), (2, "COMPLETE")]
    retry = result.study.trials[1]
    assert retry.system_attrs["failed_trial"] == 0 and retry.params == orphan.params


@pytest.mark.parametrize("space, args, message", [
    ("train.lr_bakbone: {type: float, low: 1.0e-6, high: 1.0e-4}", [],
     r"unknown option 'train.lr_bakbone'; did you mean train.lr_backbone"),
    ("train.lr_backbone: {type: float, low: 1.0e-4, high: 1.0e-6}", [], r"bad range low=0.0001, high=1e-06"),
    ("train.lr_backbone: {type: float, low: 0, high: 1.0e-4, log: true}", [], r"log scale needs low > 0"),
    ("train.lr_backbone: {type: gaussian}", [], r"type='gaussian'; choose float, int or categorical"),
    ("model.lora_dropout: {type: float, low: 0.0, high: 1.5}", [], r"model.lora_dropout=1.5 is not a valid value"),
    ("train.loss: [bradley_terry, hinge]", [], r"train.loss='hinge' is not a valid value.*choose one of"),
    ("train.lr_backbone: [1.0e-5]", ["--metric", "ndcg"], r"--metric ndcg: the trainer does not report it"),
    ("train.lr_backbone: [1.0e-5]", ["--metric", "accuracy", "--metric", "log_loss", "--pruner", "median"],
     r"--pruner median needs a single --metric"),
    ("train.lr_backbone: [1.0e-5]", ["--storage", "postgresql://nobody@127.0.0.1:{port}/db"],
     r"cannot open study storage postgresql://nobody@127.0.0.1:\d+/db: OperationalError: .*failed"),
    ("train.lr_backbone: [1.0e-5]", ["--storage", "study.txt"], r"give a SQLAlchemy URL .* or a journal file"),
])
def test_mistakes_are_one_clear_line(tmp_path, capsys, space, args, message):
    (tmp_path / "space.yaml").write_text(space)
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code = main(["tune", "--space", str(tmp_path / "space.yaml"), "--trials", "1", "--out", str(tmp_path / "out"),
                 *[a.format(port=port) for a in args]])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert re.search(message, err), err


# --------------------------------------------------------------------------- PostgreSQL (`postgres_url`: conftest)


def test_two_workers_share_one_study_in_postgresql(setup, postgres_url):
    outputs = _run_workers([_worker_cmd(setup, seed, "--trials", "4", "--storage", postgres_url) for seed in (1, 2)])
    study = optuna.load_study(study_name="shared", storage=postgres_url)
    _assert_each_trial_ran_once(study, outputs, 4, setup / "out")
