import math

import pytest
import torch

from rewardlab.losses import LOSSES, bradley_terry, bt_margin, focal, get_loss, label_smoothing, \
    reward_centering_penalty


def sig(x):
    return 1 / (1 + math.exp(-x))


def test_bradley_terry_closed_form():
    c, r, m = torch.tensor([2.0, 0.0]), torch.tensor([0.0, 1.0]), torch.zeros(2)
    expected = (-math.log(sig(2.0)) - math.log(sig(-1.0))) / 2
    assert bradley_terry(c, r, m).item() == pytest.approx(expected, rel=1e-6)


def test_margin_shifts_the_target():
    c, r, m = torch.tensor([1.0]), torch.tensor([0.0]), torch.tensor([2.0])
    assert bt_margin(c, r, m, margin_scale=0.5).item() == pytest.approx(-math.log(sig(1.0 - 1.0)), rel=1e-6)


def test_label_smoothing_closed_form_and_limit():
    c, r, m = torch.tensor([1.5]), torch.tensor([0.0]), torch.zeros(1)
    expected = -(0.9 * math.log(sig(1.5)) + 0.1 * math.log(sig(-1.5)))
    assert label_smoothing(c, r, m, label_smoothing=0.1).item() == pytest.approx(expected, rel=1e-6)
    assert label_smoothing(c, r, m, label_smoothing=0.0).item() == pytest.approx(bradley_terry(c, r, m).item())


def test_focal_down_weights_easy_pairs():
    easy, hard = torch.tensor([5.0]), torch.tensor([-1.0])
    zero = torch.zeros(1)
    p = sig(5.0)
    assert focal(easy, zero, zero, focal_gamma=2.0).item() == pytest.approx(-((1 - p) ** 2) * math.log(p), rel=1e-5)
    ratio_focal = focal(easy, zero, zero).item() / focal(hard, zero, zero).item()
    ratio_bt = bradley_terry(easy, zero, zero).item() / bradley_terry(hard, zero, zero).item()
    assert ratio_focal < ratio_bt
    assert focal(easy, zero, zero, focal_gamma=0.0).item() == pytest.approx(bradley_terry(easy, zero, zero).item())


def test_gradients_push_chosen_up_and_rejected_down():
    for name, fn in LOSSES.items():
        c = torch.tensor([0.3], requires_grad=True)
        r = torch.tensor([0.1], requires_grad=True)
        fn(c, r, torch.zeros(1)).backward()
        assert c.grad.item() < 0 < r.grad.item(), name


def test_centering_penalty():
    assert reward_centering_penalty(torch.tensor([1.0, -3.0])).item() == pytest.approx(5.0)


def test_unknown_loss_lists_valid_names():
    with pytest.raises(ValueError, match="unknown loss 'hinge'; valid losses: bradley_terry, bt_margin"):
        get_loss("hinge")
