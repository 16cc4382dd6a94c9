import pytest

from rewardlab.config import DataConfig, ExperimentConfig, TrainConfig, apply_overrides, describe, load_config


def test_defaults_are_valid_and_documented():
    cfg = ExperimentConfig()
    assert cfg.data.train == "default" and cfg.model.backbone == "minilm"
    rows = describe()
    assert all(help_text for _, _, help_text in rows), [n for n, _, h in rows if not h]
    assert "train.lr_head" in {name for name, _, _ in rows}


@pytest.mark.parametrize("build, message", [
    (lambda: TrainConfig(batch_size="8"), r"^train.batch_size='8' should be of type int$"),
    (lambda: TrainConfig(lr_head="1e-4"), r"^train.lr_head='1e-4' should be of type float$"),
    (lambda: TrainConfig(group_by_length=1), r"^train.group_by_length=1 should be of type bool$"),
    (lambda: DataConfig(columns=[("prompt", "q")]), r"^data.columns=.* should be of type dict$"),
    (lambda: ExperimentConfig(train={"epochs": 2}), r"^train=\{'epochs': 2\} should be of type TrainConfig$"),
])
def test_configs_built_in_python_check_their_types_naming_the_option(build, message):
    with pytest.raises(ValueError, match=message):
        build()
    assert TrainConfig(lr_head=1, epochs=2).lr_head == 1  # an int is a float


def test_overrides_coerce_types():
    cfg = load_config(None, ["train.lr_head=1e-3", "train.epochs=2", "train.group_by_length=false",
                             "data.columns={prompt: question}", "train.log_with=tensorboard,wandb"])
    assert cfg.train.lr_head == pytest.approx(1e-3) and isinstance(cfg.train.epochs, float)
    assert cfg.train.group_by_length is False
    assert cfg.data.columns == {"prompt": "question"}
    assert cfg.train.log_with == ["tensorboard", "wandb"]


def test_head_learning_rate_is_ten_times_the_backbones_unless_set():
    assert load_config(None, ["train.lr_backbone=3e-5"]).train.head_lr == pytest.approx(3e-4)
    assert load_config(None, ["train.lr_backbone=3e-5", "train.lr_head=1e-4"]).train.head_lr == pytest.approx(1e-4)


def test_yaml_file_and_override_precedence(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text("train:\n  epochs: 3\n  batch_size: 8\n")
    cfg = load_config(path, ["train.epochs=5"])
    assert (cfg.train.epochs, cfg.train.batch_size) == (5.0, 8)


@pytest.mark.parametrize("override, match", [
    ("train.lr_head=-1", r"train.lr_head=-1.* must be > 0"),
    ("train.schedule=exp", r"train.schedule='exp' is not valid; choose one of cosine, linear, constant"),
    ("train.loss=bt", r"train.loss='bt' is not valid; choose one of .*bradley_terry"),
    ("train.contrastive_temperature=0", r"train.contrastive_temperature=0.* must be > 0"),
    ("train.contrastive_negatives=all", r"train.contrastive_negatives='all' is not valid; choose one of batch, comparison"),
    ("data.on_bad_row=ignore", r"data.on_bad_row='ignore' is not valid"),
    ("data.max_prompt_tokens=300", r"data.max_prompt_tokens=300 must be in \[0, max_length\)"),
    ("train.epochs=many", r"train.epochs='many' should be of type float"),
    ("train.nonsense=1", r"unknown config key train.nonsense; valid keys here: .*batch_size"),
    ("model.dropout=1.5", r"model.dropout=1.5 must be in \[0, 1\), or -1 to keep the backbone's own"),
    ("model.backbone=", r"model.backbone is empty: name a registry backbone"),
    ("model.backbone=' '", r"model.backbone is empty"),
])
def test_bad_values_name_the_field(override, match):
    with pytest.raises(ValueError, match=match):
        load_config(None, [override])


def test_malformed_override_missing_file_and_broken_yaml(tmp_path):
    with pytest.raises(ValueError, match="must look like section.key=value"):
        apply_overrides({}, ["train.epochs"])
    with pytest.raises(ValueError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("train:\n  epochs: 2\n  lr_head: [1e-3\n")
    with pytest.raises(ValueError, match=r"^config file .*bad.yaml:4: not valid YAML: expected ',' or ']'"):
        load_config(tmp_path / "bad.yaml")


def test_configs_are_frozen():
    with pytest.raises(Exception):
        TrainConfig().epochs = 3  # type: ignore[misc]
    with pytest.raises(TypeError):
        DataConfig("default")  # keyword-only
