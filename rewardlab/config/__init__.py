"""Typed configuration: one frozen dataclass per concern, loaded from YAML plus overrides.

Every option is documented once, in its field's ``help`` metadata; the CLI prints
these strings (``rewardlab train --help-config``). ``__post_init__`` rejects bad
values naming the field and the value.
"""

from rewardlab.config.load import ExperimentConfig, apply_overrides, describe, from_dict, load_config, parse_yaml
from rewardlab.config.options import check_types, field_default, option, positive
from rewardlab.config.sections import JUDGE_PLACEHOLDERS, JUDGE_TEMPLATE, DataConfig, ModelConfig, MultimodalConfig
from rewardlab.config.train import TrainConfig

__all__ = ["DataConfig", "ExperimentConfig", "JUDGE_PLACEHOLDERS", "JUDGE_TEMPLATE", "ModelConfig", "MultimodalConfig",
           "TrainConfig", "apply_overrides", "check_types", "describe", "field_default", "from_dict", "load_config",
           "option", "parse_yaml", "positive"]
