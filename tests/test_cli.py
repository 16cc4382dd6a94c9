import json
import subprocess
import sys

import pytest

from rewardlab.cli import main

from conftest import write_jsonl


def run_cli(*args) -> subprocess.CompletedProcess:
    return run_clis(args)[0]


def run_clis(*commands) -> list[subprocess.CompletedProcess]:
    """Each command line as its own ``python -m rewardlab`` process, all at once (each spends seconds importing)."""
    procs = [subprocess.Popen([sys.executable, "-m", "rewardlab", *args], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for args in commands]
    done = []
    for args, proc in zip(commands, procs):
        out, err = proc.communicate(timeout=600)
        done.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    return done


@pytest.fixture(scope="module")
def cli_model(tiny_bert, tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    rows = [{"question": f"q{i}", "good": f"a helpful answer {i}", "bad": "no."} for i in range(10)]
    data = write_jsonl(d / "p.jsonl", rows)
    (d / "cfg.yaml").write_text(f"""
model: {{backbone: {tiny_bert}}}
data: {{train: {data}, max_length: 64, max_prompt_tokens: 32, columns: {{prompt: question, chosen: good, rejected: bad}}}}
train: {{output_dir: {d / 'run'}, max_steps: 2, batch_size: 4, progress: false, log_with: []}}
""")
    assert main(["train", "--config", str(d / "cfg.yaml"), "--set", "train.lr_head=1e-3"]) == 0
    return d


def test_train_writes_model_and_metrics(cli_model, capsys):
    assert (cli_model / "run" / "model" / "model.safetensors").exists()
    metrics = json.loads((cli_model / "run" / "metrics.json").read_text())
    assert metrics["steps"] == 2 and metrics["data"]["train_source"]["rows"] == 10


def test_score_command_adds_scores(cli_model, tmp_path, capsys):
    rows = write_jsonl(tmp_path / "in.jsonl", [{"prompt": "q1", "response": "a helpful answer 1", "id": 7},
                                               {"prompt": "q2", "chosen": "a", "rejected": "b"}])
    assert main(["score", "--model", str(cli_model / "run" / "model"), "--data", str(rows),
                 "--out", str(tmp_path / "out.jsonl"), "--normalize", "zscore"]) == 0
    out = [json.loads(l) for l in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert out[0]["id"] == 7 and isinstance(out[0]["response_score"], float)
    assert {"chosen_score", "rejected_score"} <= set(out[1])
    assert "scored 2 rows" in capsys.readouterr().out


def test_eval_and_calibrate_commands(cli_model, tmp_path, capsys):
    data = write_jsonl(tmp_path / "e.jsonl", [{"prompt": f"q{i}", "chosen": f"a helpful answer {i}", "rejected": "no.",
                                               "labeler": "u1" if i % 2 else "u2"} for i in range(8)])
    model = str(cli_model / "run" / "model")
    assert main(["eval", "--model", model, "--data", str(data), "--out", str(tmp_path / "ev"),
                 "--group-by", "labeler"]) == 0
    printed = capsys.readouterr().out
    assert "accuracy:" in printed and "invariance: all passed" in printed
    assert (tmp_path / "ev" / "report.html").exists()
    import shutil

    shutil.copytree(model, tmp_path / "m")
    assert main(["calibrate", "--model", str(tmp_path / "m"), "--data", str(data), "--holdout", "0"]) == 0
    assert "ECE on 8 pairs" in capsys.readouterr().out


def test_user_errors_are_one_line_without_traceback(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "p", "chosen": "a", "rejected": "a"}\n')
    data, epochs, model, flag = run_clis(
        ("train", "--set", f"data.train={bad}", "--set", "train.output_dir=" + str(tmp_path / "o")),
        ("train", "--set", "train.epochs=0"),
        ("eval", "--model", str(tmp_path), "--data", str(bad)),
        ("score", "--model", str(tmp_path), "--data", str(bad), "--out", "x", "--chunk-size", "0"))
    assert data.returncode == 2 and "Traceback" not in data.stderr
    assert data.stderr.strip() == (f"rewardlab train: error: {bad}:1, field 'rejected': identical to 'chosen': "
                                   "a pair needs two different responses")
    assert epochs.returncode == 2 and "train.epochs=0.0 must be > 0" in epochs.stderr
    assert "Traceback" not in epochs.stderr
    assert model.returncode != 0 and "Traceback" not in model.stderr
    assert flag.returncode == 2 and "argument --chunk-size: 0 must be at least 1" in flag.stderr


def test_listing_commands(capsys):
    assert main(["losses"]) == 0 and "bradley_terry:" in capsys.readouterr().out
    assert main(["backbones"]) == 0 and "minilm" in capsys.readouterr().out
    assert main(["options"]) == 0 and "train.lr_head = None" in capsys.readouterr().out


def test_train_takes_data_and_out_shortcuts(tiny_bert, tmp_path, capsys):
    data = write_jsonl(tmp_path / "p.jsonl", [{"prompt": f"q{i}", "chosen": f"a helpful answer {i}",
                                               "rejected": "no."} for i in range(10)])
    assert main(["train", "--data", str(data), "--eval-data", str(data), "--out", str(tmp_path / "run"),
                 "--set", f"model.backbone={tiny_bert}", "--set", "train.max_steps=1", "--set", "train.progress=false",
                 "--set", "train.log_with=[]", "--set", "train.mixed_precision=no", "--set", "data.max_length=32"]) == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["data"]["eval_source"]["source"] == str(data) and metrics["steps"] == 1


def test_a_binary_data_file_names_the_file_and_byte_offset(tiny_bert, tmp_path, capsys):
    path = tmp_path / "data.jsonl"
    first = b'{"prompt": "q", "chosen": "a", "rejected": "b"}\n'
    path.write_bytes(first + b'{"prompt": "\xa7\x00\xff"}\n')
    assert main(["train", "--data", str(path), "--set", f"model.backbone={tiny_bert}"]) == 2
    err = capsys.readouterr().err
    offset = len(first) + len(b'{"prompt": "')
    assert f"{path}: not UTF-8 text: byte 0xa7 at byte offset {offset} cannot be decoded" in err
    assert "Traceback" not in err


# --------------------------------------------------------------------------- flags generated from config fields


def _leaf_fields(cls):
    import dataclasses
    import typing

    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            yield from _leaf_fields(hints[f.name])
        else:
            yield f


def _subparser(command: str):
    import argparse

    from rewardlab.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[command]


def _config_commands():
    from rewardlab.best_of_n import BestOfNConfig
    from rewardlab.generate import GenerateConfig
    from rewardlab.serve.config import ServeConfig
    from rewardlab.tune import TuneSettings

    return [("serve", ServeConfig), ("generate", GenerateConfig), ("best-of-n", BestOfNConfig),
            ("tune", TuneSettings)]


def test_every_config_field_is_a_flag_whose_help_is_the_fields():
    """The config field is the one place an option is documented: each has a flag, and the flag's help is the
    field's help, followed at most by a note on its default."""
    import re

    for command, cls in _config_commands():
        actions = {a.dest: a for a in _subparser(command)._actions}
        for f in _leaf_fields(cls):
            text = f.metadata.get("help", "")
            where = f"{cls.__name__}.{f.name}"
            assert text.strip(), f"{where} has no help metadata"
            assert not re.search(r"#\d|\bbench|README", text), f"{where}: help names a benchmark or issue: {text}"
            assert f.name in actions, f"`rewardlab {command}` has no flag for {where}"
            shown = actions[f.name].help
            assert shown.startswith(text), f"{where}: flag help {shown!r} is not the field's {text!r}"
            assert re.fullmatch(r"( \((default: .+|on unless --no-[a-z-]+ is given)\))?", shown[len(text):]), shown


def test_generated_flags_build_the_configs_with_their_defaults():
    from rewardlab.cli import build_parser
    from rewardlab.cli.config_parsers import BEST_OF_N_FLAGS, GENERATE_FLAGS, SERVE_FLAGS
    from rewardlab.cli.flags import config_from_args
    from rewardlab.generate import GenerateConfig
    from rewardlab.serve.config import BatcherConfig, ServeConfig

    parse = build_parser().parse_args
    assert config_from_args(ServeConfig, parse(["serve", "--model", "m"]), SERVE_FLAGS) == ServeConfig()
    args = parse(["serve", "--model", "m", "--no-batching", "--max-wait-ms", "2", "--pass-overhead-tokens", "0",
                  "--model-process", "--port", "0"])
    assert config_from_args(ServeConfig, args, SERVE_FLAGS) == ServeConfig(
        port=0, model_process=True, batcher=BatcherConfig(batching=False, max_wait_ms=2.0, pass_overhead_tokens=0))
    args = parse(["generate", "--prompts", "p.txt", "--out", "o.jsonl"])
    assert config_from_args(GenerateConfig, args, GENERATE_FLAGS) == GenerateConfig()
    args = parse(["generate", "--prompts", "p.txt", "--out", "o.jsonl", "--temperature", "0.5,1", "--n", "3",
                  "--no-progress"])
    assert config_from_args(GenerateConfig, args, GENERATE_FLAGS) == GenerateConfig(
        n=3, temperatures=(0.5, 1.0), progress=False)
    from rewardlab.best_of_n import BestOfNConfig

    args = parse(["best-of-n", "--model", "rm", "--prompts", "p.txt", "--top-p", "0.9"])
    assert config_from_args(BestOfNConfig, args, BEST_OF_N_FLAGS) == BestOfNConfig(top_p=0.9)


def test_tune_flags_keep_the_command_line_defaults():
    from rewardlab.cli import build_parser
    from rewardlab.cli.config_parsers import TUNE_FLAGS
    from rewardlab.cli.flags import config_from_args
    from rewardlab.tune import TuneSettings

    args = build_parser().parse_args(["tune", "--space", "s.yaml", "--trials", "3", "--study", "x"])
    settings = config_from_args(TuneSettings, args, TUNE_FLAGS, out=args.out or f"runs/tune/{args.study}")
    assert settings == TuneSettings(space="s.yaml", trials=3, study="x", out="runs/tune/x")
    args = build_parser().parse_args(["tune", "--space", "s.yaml", "--trials", "3", "--metric", "log_loss",
                                      "--metric", "accuracy", "--set", "a.b=1", "--trial-set", "c.d=2",
                                      "--pruner", "none", "--save-models", "--pruner-startup-trials", "5"])
    settings = config_from_args(TuneSettings, args, TUNE_FLAGS)
    assert settings.metrics == ("log_loss", "accuracy") and settings.overrides == ("a.b=1",)
    assert settings.trial_overrides == ("c.d=2",) and settings.pruner == "none" and settings.save_models
    assert settings.pruner_startup_trials == 5


def test_flag_mistakes_exit_2_in_one_line(capsys):
    proc = run_cli("generate", "--prompts", "p.txt", "--out", "o.jsonl", "--temperature", "warm")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == ("rewardlab generate: error: --temperature 'warm': expected numbers separated by "
                                   "commas, e.g. 0.7,1.0")
    proc = run_cli("tune", "--space", "s.yaml", "--trials", "0")
    assert proc.returncode == 2 and "argument --trials: 0 must be at least 1" in proc.stderr


def test_help_builds_without_torch():
    code = "import sys; from rewardlab.cli import build_parser; build_parser(); print('torch' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.stdout.strip() == "False", proc.stderr
