"""The options of a search: what ``rewardlab tune`` takes, its flags generated from these fields.

No Optuna here, so the command line builds its parser without the ``tune`` extra installed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rewardlab.config import option

PRUNERS = ("none", "median", "hyperband")


@dataclass(frozen=True, kw_only=True)
class TuneSettings:
    """What to search and how: each field is a flag of ``rewardlab tune`` (``overrides`` is ``--set``)."""

    config: str | None = option(None, "Base YAML config, as for `rewardlab train` (none: the built-in defaults).")
    overrides: tuple = option((), "Override a base config value, SECTION.KEY=VALUE; it applies to trials and "
                              "best.yaml alike. Repeatable.")
    trial_overrides: tuple = option((), "Override for trials only, SECTION.KEY=VALUE, e.g. train.max_steps=200 or "
                                    "data.max_examples=2000 (a quick budget per trial); --refit and best.yaml "
                                    "leave it out. Repeatable.")
    space: str = field(metadata={"help": "Search space YAML: dotted option -> {type: float|int|categorical, low, "
                                 "high, log, step, choices}."})
    trials: int = field(metadata={"help": "Trials in the study, over all workers (the study's budget, not one "
                                  "worker's)."})
    metrics: tuple = option(("accuracy",), "Validation metric to optimise, one the trainer reports (accuracy, "
                            "log_loss, ...); several make a multi-objective study. Repeatable.")
    pruner: str | None = option(None, "Stop unpromising trials early: none, median or hyperband (default: median "
                                "with one metric, none with several; Optuna cannot prune multi-objective studies).")
    pruner_startup_trials: int = option(3, "Median pruner: trials that must complete before it stops any.")
    storage: str | None = option(None, "Where the study lives, shared by the workers: sqlite:///FILE, "
                                 "postgresql://..., mysql+pymysql://... or journal:FILE (a file on a shared file "
                                 "system); default: sqlite in the output folder.")
    study: str = option("rewardlab", "Study name the workers share.")
    out: str = option("runs/tune", "Folder for trials, best.yaml and the report.")
    timeout: float | None = option(None, "Seconds after which this worker starts no new trial (none: no limit).")
    seed: int | None = option(None, "Sampler seed (give each worker its own, or none).")
    heartbeat: int = option(60, "Seconds between heartbeats; a trial silent for twice that is failed and retried.")
    save_models: bool = option(False, "Keep each trial's model (off: saves disk).")
    refit: bool = option(False, "Then train best.yaml in full.")

    def __post_init__(self) -> None:
        if self.trials < 0:
            raise ValueError(f"--trials={self.trials} must be >= 0")
        if self.pruner is not None and self.pruner not in PRUNERS:
            raise ValueError(f"--pruner={self.pruner!r}; choose one of {', '.join(PRUNERS)}")
        if self.heartbeat <= 0:
            raise ValueError(f"--heartbeat={self.heartbeat} must be > 0 seconds")
        if not self.metrics:
            raise ValueError("give at least one --metric")
