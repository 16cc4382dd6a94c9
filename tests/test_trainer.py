"""The Trainer on its own: a linear reward over 2-d points, a real loss, in-memory data, no ``train(cfg)``.

Every item is a point (x, y); in each comparison the preferred point has the larger x, so the data is
separable by the reward r = w·p + b with w = (1, 0). The model starts from the opposite direction,
w = (-1, 0): evaluation first finds every pair wrong, then, after training, every pair right.
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from torch import nn

from rewardlab.config import TrainConfig
from rewardlab.contracts.schema import Pair
from rewardlab.data.collate import EncodedComparison, PreferenceCollator
from rewardlab.losses import build_pair_loss
from rewardlab.models.base import RewardNet
from rewardlab.train.trainer import Trainer

LR = 0.5


class Points:
    """Item processor: items are the points themselves; each costs 1."""

    def encode_items(self, prompts, responses):
        return [tuple(map(float, r)) for r in responses], 0

    def cost(self, item):
        return 1

    def collate(self, items):
        return {"x": torch.tensor(items, dtype=torch.float32)}


class LinearReward(RewardNet):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(2, 1)
        with torch.no_grad():
            self.linear.weight.copy_(torch.tensor([[-1.0, 0.0]]))  # prefers the smaller x: always wrong
            self.linear.bias.zero_()

    def forward(self, x):  # (N, 2) -> (N, 1)
        return self.linear(x)


def comparisons(n: int, seed: int) -> list:
    """``n`` comparisons of two points: the winner's x in [0.5, 1.5], the loser's in [-1.5, -0.5]; y is noise."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        winner = (float(rng.uniform(0.5, 1.5)), float(rng.normal()))
        loser = (float(rng.uniform(-1.5, -0.5)), float(rng.normal()))
        out.append(EncodedComparison(items=(winner, loser), costs=(1, 1), pairs=(Pair(0, 1),), index=i))
    return out


def bt_loss(weight: torch.Tensor, bias: torch.Tensor, data) -> torch.Tensor:
    """Mean Bradley–Terry loss -log σ(r_w - r_l) of the linear reward (weight, bias) over ``data``, by hand."""
    w = torch.tensor([c.items[0] for c in data])
    l = torch.tensor([c.items[1] for c in data])
    return -F.logsigmoid((w @ weight.T + bias) - (l @ weight.T + bias)).mean()


def make_trainer(tmp_path, train_data, eval_data, **cfg) -> tuple[Trainer, LinearReward]:
    torch.manual_seed(0)
    model = LinearReward()
    cfg = TrainConfig(**{"batch_size": len(train_data), "max_steps": 1, "max_grad_norm": 0.0, "warmup_ratio": 0.0,
                         "progress": False, "log_with": [], "output_dir": str(tmp_path), **cfg})
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    trainer = Trainer(accelerator=Accelerator(), model=model, loss_fn=build_pair_loss("bradley_terry"),
                      optimizer=optimizer, scheduler_factory=lambda o, n: torch.optim.lr_scheduler.LambdaLR(o, lambda s: 1.0),
                      train_data=train_data, eval_data=eval_data, collator=PreferenceCollator(Points()), cfg=cfg,
                      output_dir=tmp_path)
    return trainer, model


def test_each_step_is_one_sgd_step_on_the_batch_bradley_terry_loss(tmp_path):
    data = comparisons(16, seed=0)
    trainer, model = make_trainer(tmp_path, data, [], max_steps=2)  # one batch a step: all 16 comparisons
    expected, losses = [(model.linear.weight.detach().clone(), model.linear.bias.detach().clone())], []
    for _ in range(2):  # the two steps by hand: θ ← θ - lr · ∇ mean -log σ(r_w - r_l)
        w, b = (t.clone().requires_grad_() for t in expected[-1])
        loss = bt_loss(w, b, data)
        gw, gb = torch.autograd.grad(loss, (w, b))
        expected.append(((w - LR * gw).detach(), (b - LR * gb).detach()))
        losses.append(loss.item())
    state = trainer.train()
    assert state.step == 2 and state.pairs_seen == 32
    raw = trainer.raw_model.linear
    assert not torch.equal(raw.weight.detach(), expected[0][0])  # the parameters changed ...
    torch.testing.assert_close(raw.weight.detach(), expected[2][0])  # ... by exactly two gradient steps
    torch.testing.assert_close(raw.bias.detach(), expected[2][1])
    assert state.history[-1]["kind"] == "train"
    assert state.history[-1]["loss"] == pytest.approx(np.mean(losses), rel=1e-5)  # the steps' mean loss
    assert losses[1] < losses[0]


def test_training_learns_the_separable_preference_and_evaluation_sees_it(tmp_path):
    train_data, eval_data = comparisons(32, seed=1), comparisons(12, seed=2)
    trainer, model = make_trainer(tmp_path, train_data, eval_data, batch_size=8, max_steps=20, eval_every=10)
    before = trainer.evaluate()
    assert before["pairs"] == 12 and before["accuracy"] == 0.0  # the wrong direction: every pair wrong
    loss_before = bt_loss(model.linear.weight.detach(), model.linear.bias.detach(), train_data).item()

    steps = []  # (mode, normalizer given, grad enabled) of every _step call: training and evaluation share it
    inner = trainer._step
    trainer._step = lambda batch, normalizer=None, model=None: (
        steps.append(("train" if trainer.model.training else "eval", normalizer is not None, torch.is_grad_enabled()))
        or inner(batch, normalizer, model))
    state = trainer.train()

    raw = trainer.raw_model.linear
    loss_after = bt_loss(raw.weight.detach(), raw.bias.detach(), train_data).item()
    assert loss_after < 0.5 * loss_before  # the loss fell on the separable problem
    assert raw.weight[0, 0] > 0  # the reward now grows with x
    after = trainer.evaluate()
    assert after["accuracy"] == 1.0 and after["mean_margin"] > 0
    evals = [h for h in state.history if h["kind"] == "eval"]
    assert [h["step"] for h in evals] == [10, 20] and evals[-1]["accuracy"] == 1.0
    assert state.best_metric == 1.0 and state.best_step == 10
    # 20 training micro-batches with the step's pair weight as normalizer and gradients, and the evaluations'
    # batches through the same _step, in eval mode without gradients
    assert steps.count(("train", True, True)) == 20
    assert steps.count(("eval", False, False)) >= 2 and len(steps) == 20 + steps.count(("eval", False, False))


def test_predict_reads_each_pair_on_the_model_rewards(tmp_path):
    data = comparisons(6, seed=3)
    trainer, model = make_trainer(tmp_path, data, data)
    trainer.model.train()
    pred = trainer.predict(data)
    w, b = model.linear.weight.detach().double(), model.linear.bias.detach().double()
    expected_chosen = [(torch.tensor(c.items[0], dtype=torch.float64) @ w.T + b).item() for c in data]
    expected_rejected = [(torch.tensor(c.items[1], dtype=torch.float64) @ w.T + b).item() for c in data]
    assert pred.comparison.tolist() == list(range(6)) and not pred.tie.any()
    np.testing.assert_allclose(pred.chosen, expected_chosen, rtol=1e-5)
    np.testing.assert_allclose(pred.rejected, expected_rejected, rtol=1e-5)
    # Bradley–Terry: log P(first wins) = log σ(r_w - r_l)
    margin = torch.tensor(expected_chosen) - torch.tensor(expected_rejected)
    np.testing.assert_allclose(pred.log_probs[:, 0], F.logsigmoid(margin).numpy(), rtol=1e-5)
    assert trainer.model.training  # predict puts the model back in the mode it found it in
