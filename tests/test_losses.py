import math

import pytest
import torch

from rewardlab.contracts.batch import PairTable
from rewardlab.losses import (OutcomeLoss, bradley_terry, bt_margin, build_pair_loss, contrastive, focal, get_loss,
                              label_smoothing, loss_names, reward_centering_penalty, weighted_mean, StepLoss)
from rewardlab.models.outcomes import BradleyTerry


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


def nce(c, negatives, t=1.0):
    return -math.log(math.exp(c / t) / (math.exp(c / t) + sum(math.exp(n / t) for n in negatives)))


def test_contrastive_meets_the_rejected_items_of_the_other_comparisons():
    c, r = torch.tensor([1.0, 0.5]), torch.tensor([0.0, 2.0])
    assert contrastive(c, r, table(2), contrastive_temperature=0.5).tolist() == pytest.approx(
        [nce(1.0, [0.0, 2.0], 0.5), nce(0.5, [2.0, 0.0], 0.5)], rel=1e-5)
    own = contrastive(c, r, table(2), contrastive_negatives="comparison", contrastive_temperature=0.5)
    assert own.tolist() == pytest.approx(bradley_terry(c / 0.5, r / 0.5, table(2)).tolist(), rel=1e-6)
    # an item preferred in one comparison and rejected in another is never its own negative
    shared = table(2, i=[0, 2], j=[1, 0], comparison=[0, 1])
    assert contrastive(torch.tensor([1.0, 2.0]), torch.tensor([0.0, 1.0]), shared).tolist() == pytest.approx(
        [nce(1.0, [0.0]), nce(2.0, [1.0, 0.0])], rel=1e-5)
    # another head's items are not negatives
    assert contrastive(c, r, table(2, head=[0, 1])).tolist() == pytest.approx(bradley_terry(c, r, table(2)).tolist())


def test_contrastive_on_a_ranking_meets_each_item_it_beats_once():
    reward = [3.0, 2.0, 1.0, 0.0, 0.5, -0.5]  # a ranking A > B > C > D of one comparison (all six pairs); E > F
    i, j = zip(*[(a, b) for a in range(4) for b in range(a + 1, 4)], (4, 5))
    pairs = table(7, i=i, j=j, comparison=[0] * 6 + [1])
    chosen, rejected = torch.tensor([reward[a] for a in i]), torch.tensor([reward[b] for b in j])
    # each of C and D is rejected in several rows, yet counted once; none of A above B is a negative of B
    expected = [nce(reward[a], reward[a + 1:4] + [-0.5]) for a in i[:6]] + [nce(0.5, [-0.5, 2.0, 1.0, 0.0])]
    assert contrastive(chosen, rejected, pairs).tolist() == pytest.approx(expected, rel=1e-5)
    within = contrastive(chosen, rejected, pairs, contrastive_negatives="comparison").tolist()
    assert within == pytest.approx([nce(reward[a], reward[a + 1:4]) for a in i[:6]] + [nce(0.5, [-0.5])], rel=1e-5)


def test_contrastive_tie_pairs_meet_only_their_partner_both_ways():
    pairs = table(3, tie=[False, True, False])
    judged = BradleyTerry()(torch.tensor([[1.0], [0.0], [0.3], [0.9], [2.0], [-1.0]]), pairs)
    per_pair = build_pair_loss("contrastive")(judged, pairs).tolist()
    assert per_pair[1] == pytest.approx((nce(0.3, [0.9]) + nce(0.9, [0.3])) / 2, rel=1e-5)
    assert per_pair[0] == pytest.approx(nce(1.0, [0.0, -1.0]), rel=1e-5)  # the tie pair's items are no negatives


def test_gradients_push_chosen_up_and_rejected_down():
    for name in loss_names():
        fn = get_loss(name)
        if isinstance(fn, (OutcomeLoss, StepLoss)):  # outcome losses: tests/test_ties.py; per-step: tests/test_prm.py
            continue
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
