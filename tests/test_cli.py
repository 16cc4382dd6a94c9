import json
import subprocess
import sys

import pytest

from rewardlab.cli import main

from conftest import write_jsonl


def run_cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rewardlab", *args], capture_output=True, text=True, timeout=600)


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
    proc = run_cli("train", "--set", f"data.train={bad}", "--set", "train.output_dir=" + str(tmp_path / "o"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == (f"rewardlab train: error: {bad}:1, field 'rejected': identical to 'chosen': "
                                   "a pair needs two different responses")
    proc = run_cli("train", "--set", "train.epochs=0")
    assert proc.returncode == 2 and "train.epochs=0.0 must be > 0" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_cli("eval", "--model", str(tmp_path), "--data", str(bad))
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    proc = run_cli("score", "--model", str(tmp_path), "--data", str(bad), "--out", "x", "--chunk-size", "0")
    assert proc.returncode == 2 and "argument --chunk-size: 0 must be at least 1" in proc.stderr


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
