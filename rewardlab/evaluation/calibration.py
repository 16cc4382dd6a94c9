"""Temperature scaling: fit T so that σ(margin / T) is a calibrated preference probability."""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path

import numpy as np
from scipy.optimize import minimize_scalar

from rewardlab.metrics.pairwise import pairwise_log_loss
from rewardlab.models.base import CONFIG_KEY

T_BOUNDS = (1e-2, 1e2)


def fit_temperature(margins: np.ndarray) -> float:
    """The T in [0.01, 100] minimising the Bradley–Terry log-loss of ``margins`` (chosen - rejected)."""
    margins = np.asarray(margins, dtype=np.float64)
    if not len(margins):
        raise ValueError("cannot fit a temperature on no pairs")
    result = minimize_scalar(lambda log_t: pairwise_log_loss(margins, math.exp(log_t)),
                             bounds=tuple(math.log(b) for b in T_BOUNDS), method="bounded",
                             options={"xatol": 1e-6})
    return float(math.exp(result.x))


def store_temperature(model_dir: str | Path, temperature: float, info: dict) -> None:
    """Write T (and how it was fitted) into the checkpoint's config.json, atomically."""
    config = Path(model_dir) / "config.json"
    if not config.is_file():
        raise ValueError(f"{model_dir} is not a local model folder with a config.json; calibration is stored "
                         "in the folder, so download the model first")
    data = json.loads(config.read_text())
    block = data.get(CONFIG_KEY) or {}
    block.update(temperature=temperature, calibration=info)
    data[CONFIG_KEY] = block
    fd, tmp = tempfile.mkstemp(dir=config.parent, prefix=".config.json.")
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh, indent=2)
    os.replace(tmp, config)
