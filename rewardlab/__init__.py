"""rewardlab: learn reward models from human preferences, evaluate them honestly, serve their scores."""

from rewardlab.config import DataConfig, ExperimentConfig, ModelConfig, TrainConfig, load_config
from rewardlab.contracts.schema import Comparison, DataError, PreferencePair

__version__ = "0.1.0"

__all__ = ["Comparison", "DataConfig", "DataError", "ExperimentConfig", "ModelConfig", "PreferencePair",
           "RewardFunction", "RewardModel", "TrainConfig", "load_config", "train"]


def __getattr__(name: str):
    # Heavy imports (torch, transformers) only when these are used.
    if name == "RewardModel":
        from rewardlab.scoring import RewardModel

        return RewardModel
    if name == "RewardFunction":
        from rewardlab.reward_function import RewardFunction

        return RewardFunction
    if name == "train":
        from rewardlab.train.run import train

        return train
    raise AttributeError(name)
