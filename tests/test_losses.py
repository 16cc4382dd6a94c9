import math

import pytest
import torch

from rewardlab.data.collate import PairTable
from rewardlab.losses import LOSSES, bradley_terry, bt_margin, focal, get_loss, label_smoothing, \
    reward_centering_penalty, weighted_mean


def sig(x):
    return 1 / (1 + math.exp(-x))


def table(n, **columns):
    return PairTable.of(n, **columns)


def test_bradley_terry_closed_form_per_pair():
    c, r = torch.tensor([2.0, 0.0]), torch.tensor([0.0, 1.0])
    per_pair = bradley_terry(c, r, table(2))
    assert per_pair.shape == (2,)
    assert per_pair.tolist() == pytest.approx([-math.log(sig(2.0)), -math.log(sig(-1.0))], rel=1e-6)


def test_margin_shifts_the_target():
    c, r = torch.tensor([1.0]), torch.tensor([0.0])
    assert bt_margin(c, r, table(1, margin=[2.0]), margin_scale=0.5).item() == pytest.approx(
        -math.log(sig(1.0 - 1.0)), rel=1e-6)


def test_label_smoothing_closed_form_and_limit():
    c, r, t = torch.tensor([1.5]), torch.tensor([0.0]), table(1)
    expected = -(0.9 * math.log(sig(1.5)) + 0.1 * math.log(sig(-1.5)))
    assert label_smoothing(c, r, t, label_smoothing=0.1).item() == pytest.approx(expected, rel=1e-6)
    assert label_smoothing(c, r, t, label_smoothing=0.0).item() == pytest.approx(bradley_terry(c, r, t).item())


def test_focal_down_weights_easy_pairs():
    easy, hard = torch.tensor([5.0]), torch.tensor([-1.0])
    zero, t = torch.zeros(1), table(1)
    p = sig(5.0)
    assert focal(easy, zero, t, focal_gamma=2.0).item() == pytest.approx(-((1 - p) ** 2) * math.log(p), rel=1e-5)
    ratio_focal = focal(easy, zero, t).item() / focal(hard, zero, t).item()
    ratio_bt = bradley_terry(easy, zero, t).item() / bradley_terry(hard, zero, t).item()
    assert ratio_focal < ratio_bt
    assert focal(easy, zero, t, focal_gamma=0.0).item() == pytest.approx(bradley_terry(easy, zero, t).item())


def test_gradients_push_chosen_up_and_rejected_down():
    for name, fn in LOSSES.items():
        c = torch.tensor([0.3], requires_grad=True)
        r = torch.tensor([0.1], requires_grad=True)
        fn(c, r, table(1)).sum().backward()
        assert c.grad.item() < 0 < r.grad.item(), name


def test_weighted_mean_closed_form_and_zero_weight():
    per_pair = torch.tensor([1.0, 3.0, 100.0])
    assert weighted_mean(per_pair, torch.tensor([1.0, 1.0, 0.0])).item() == pytest.approx(2.0)
    assert weighted_mean(per_pair, torch.tensor([3.0, 1.0, 0.0])).item() == pytest.approx(1.5)
    # doubling every weight changes nothing: weights are relative
    assert weighted_mean(per_pair, torch.tensor([2.0, 2.0, 2.0])).item() == pytest.approx(per_pair.mean().item())


def test_centering_penalty():
    assert reward_centering_penalty(torch.tensor([1.0, -3.0])).item() == pytest.approx(5.0)


def test_unknown_loss_lists_valid_names():
    with pytest.raises(ValueError, match="unknown loss 'hinge'; valid losses: bradley_terry, bt_margin"):
        get_loss("hinge")
