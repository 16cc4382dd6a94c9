"""``rewardlab label --select``: keep every labeler's queue in the selection's order, refitting the model as
labels come in.

The order (:mod:`rewardlab.label.selection`) is computed when the server starts and again:

- ``disagree``: after every answer (it reads only the store);
- ``uncertain`` with ``--retrain-every N``: after every N answers a model is trained on the rankings so far
  (``rewardlab train --config <--train-config>`` in a child process, in the background: the page never
  waits for it), loaded, and the prompts scored again. Until the first model exists (no ``--model``), the
  order is random. A retrain asked for while one runs is started when it ends.

Each round's rankings and model stay in ``<store>.rounds/round-N/`` (``labels.jsonl``, ``run/``).
"""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
from pathlib import Path
from typing import Callable

import numpy as np

from rewardlab.label.selection import SELECTIONS, queue_order
from rewardlab.label.store import LabelStore

log = logging.getLogger(__name__)


def train_in_child(config: Path, data: Path, out: Path) -> Path:
    """``rewardlab train --config config --data data --out out`` in a child process; the trained model's folder."""
    done = subprocess.run([sys.executable, "-m", "rewardlab", "train", "--config", str(config), "--data", str(data),
                           "--out", str(out)], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"retraining on {data} failed:\n{done.stderr[-2000:]}")
    return out / "model"


def load_reward_model(folder: Path):
    from rewardlab.scoring import RewardModel

    return RewardModel.from_pretrained(str(folder))


class Reorderer:
    """Sets ``store.order`` by selection ``mode`` and keeps it current (see the module's docstring)."""

    def __init__(self, store: LabelStore, mode: str, *, reward_model=None, retrain_every: int | None = None,
                 train_config: str | Path | None = None, seed: int = 0,
                 train: Callable[[Path, Path, Path], Path] = train_in_child,
                 load: Callable[[Path], object] = load_reward_model):
        if mode not in SELECTIONS:
            raise ValueError(f"--select {mode!r}: choose one of {', '.join(SELECTIONS)}")
        if retrain_every is not None and (mode != "uncertain" or train_config is None):
            raise ValueError("--retrain-every retrains the model --select uncertain reads: it needs --select "
                             "uncertain and --train-config (the YAML `rewardlab train` uses)")
        if mode == "uncertain" and reward_model is None and retrain_every is None:
            raise ValueError("--select uncertain needs a reward model: pass --model, or --retrain-every N with "
                             "--train-config to train one from the first N answers")
        self.store, self.mode, self.seed = store, mode, seed
        self.reward_model, self.retrain_every = reward_model, retrain_every
        self.train_config = Path(train_config) if train_config is not None else None
        self.train, self.load = train, load
        self.rounds = Path(f"{store.location}.rounds")
        self.answers = 0
        self.retrains = 0
        self._thread: threading.Thread | None = None
        self._again = False
        self._lock = threading.Lock()
        self.refresh()

    def order(self) -> list[int]:
        n = len(self.store.candidates)
        if self.mode == "disagree":
            ranked = self.store.rankings()
            return queue_order("disagree", n, rankings=[list(ranked.get(i, {}).values()) for i in range(n)],
                               seed=self.seed)
        if self.mode == "random" or self.reward_model is None:
            return queue_order("random", n, seed=self.seed)
        return queue_order("uncertain", n, seed=self.seed, **self._model_rewards())

    def _model_rewards(self) -> dict:
        """Per prompt, its responses' rewards (``rewards``), or for an ensemble every member's (``member_rewards``)."""
        items = self.store.candidates
        prompts = [c.prompt for c in items for _ in c.responses]
        responses = [r for c in items for r in c.responses]
        bounds = np.cumsum([0] + [len(c.responses) for c in items])
        if self.reward_model.is_ensemble:
            members = self.reward_model.member_scores(prompts, responses)[:, :, -1]  # (M, N)
            return {"member_rewards": [members[:, a:b] for a, b in zip(bounds[:-1], bounds[1:])]}
        rewards = self.reward_model.score_batch(prompts, responses)
        return {"rewards": [rewards[a:b] for a, b in zip(bounds[:-1], bounds[1:])]}

    def refresh(self) -> None:
        self.store.order = self.order()

    def answered(self) -> None:
        """Called after each answer: reorder, or start a retrain, when it is time."""
        with self._lock:
            self.answers += 1
            due = self.retrain_every is not None and self.answers % self.retrain_every == 0
        if self.mode == "disagree":
            self.refresh()
        if due:
            self._start_retrain()

    def _start_retrain(self) -> None:
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                self._again = True
                return
            self._thread = threading.Thread(target=self._retrain_loop, name="label-retrain", daemon=True)
            self._thread.start()

    def _retrain_loop(self) -> None:
        while True:
            try:
                self.retrain()
            except Exception as err:  # a failed round keeps the last order; the page goes on
                log.error("%s", err)
            with self._lock:
                if not self._again:
                    return
                self._again = False

    def retrain(self) -> Path:
        """Train on the rankings so far, load the model and reorder; the round's folder."""
        folder = self.rounds / f"round-{self.retrains + 1}"
        folder.mkdir(parents=True, exist_ok=True)
        data = folder / "labels.jsonl"
        self.store.export(data)
        model = self.load(self.train(self.train_config, data, folder / "run"))
        self.reward_model, self.retrains = model, self.retrains + 1
        self.refresh()
        log.info("retrained on %s; queue reordered", data)
        return folder

    def wait(self, timeout: float | None = None) -> None:
        """Until a running retrain (and one asked for meanwhile) has finished (for tests and shutdown)."""
        while (thread := self._thread) is not None and thread.is_alive():
            thread.join(timeout)
            if timeout is not None:
                return
