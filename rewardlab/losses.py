"""Pairwise reward losses: pure functions of gathered pair rewards, kept in a registry.

Every loss takes the rewards of the preferred (``chosen``) and the other
(``rejected``) item of P judgements, each read on the judgement's own head, plus
the batch's :class:`~rewardlab.contracts.batch.PairTable` (margin, tie, labeler, ...),
and returns the P per-pair terms. :func:`weighted_mean` reduces them with the
pairs' weights. Names are looked up with :func:`get_loss`; an unknown name raises.

Outcome losses (``rao_kupper``, ``davidson``, ``three_class``) are the negative
log-likelihood of the observed outcome (i wins, or a tie) under the model's
:mod:`~rewardlab.models.outcomes` model, whose tie parameter is learned with it.
:func:`build_pair_loss` turns any name into the trainer's ``(judged, pairs) -> (P,)``.

Example:
    >>> import torch
    >>> from rewardlab.contracts.batch import PairTable
    >>> chosen, rejected = torch.tensor([2.0, 0.0]), torch.tensor([0.0, 0.0])
    >>> round(bradley_terry(chosen, rejected, PairTable.of(2)).mean().item(), 4)  # (-log σ(2) - log σ(0)) / 2
    0.41
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from rewardlab.contracts.batch import Judged, PairTable
from rewardlab.contracts.registry import LOSSES

LossFn = Callable[..., torch.Tensor]


def bradley_terry(chosen: torch.Tensor, rejected: torch.Tensor, pairs: PairTable, **_: float) -> torch.Tensor:
    """-log σ(r_c - r_r) per pair. Shapes: (P,), (P,) -> (P,)."""
    return -F.logsigmoid(chosen - rejected)


def bt_margin(chosen: torch.Tensor, rejected: torch.Tensor, pairs: PairTable, *, margin_scale: float = 1.0,
              **_: float) -> torch.Tensor:
    """-log σ(r_c - r_r - s·m): the preferred response must win by the rating gap m (Llama-2 style)."""
    return -F.logsigmoid(chosen - rejected - margin_scale * pairs.margin)


def label_smoothing(chosen: torch.Tensor, rejected: torch.Tensor, pairs: PairTable, *,
                    label_smoothing: float = 0.1, **_: float) -> torch.Tensor:
    """BT against a soft target: -(1-ε) log σ(d) - ε log σ(-d), for noisy labels."""
    diff = chosen - rejected
    return -(1.0 - label_smoothing) * F.logsigmoid(diff) - label_smoothing * F.logsigmoid(-diff)


def focal(chosen: torch.Tensor, rejected: torch.Tensor, pairs: PairTable, *, focal_gamma: float = 2.0,
          **_: float) -> torch.Tensor:
    """-(1-p)^γ log p with p = σ(r_c - r_r): down-weights pairs the model already gets right."""
    log_p = F.logsigmoid(chosen - rejected)
    return -((1.0 - log_p.exp()) ** focal_gamma) * log_p


def contrastive(chosen: torch.Tensor, rejected: torch.Tensor, pairs: PairTable, *,
                contrastive_temperature: float = 1.0, contrastive_negatives: str = "batch",
                **_: float) -> torch.Tensor:
    """InfoNCE: the preferred reward against several beaten ones, -log e^(c/τ) / (e^(c/τ) + Σ_n e^(r_n/τ)).

    A pair's negatives are the items its preferred item beats in the batch (its own rejected one, and
    every other one it is preferred to: a ranking's winner meets everything ranked below it, as in
    Plackett–Luce) and, with ``contrastive_negatives="batch"``, every item rejected in another
    comparison of the batch (in-batch negatives across prompts); each item once, on the pair's head.
    ``"comparison"`` keeps to the pair's own comparison, so on plain pairs it is Bradley–Terry at
    temperature τ. Tie pairs have no preferred side: each meets only its partner. Negatives come
    from one process's batch.
    """
    c, r = chosen.float() / contrastive_temperature, rejected.float() / contrastive_temperature
    beaten = (pairs.i[:, None] == pairs.i[None, :]) & ~pairs.tie[None, :]  # [p, q]: q's rejected item lost to p's
    if contrastive_negatives == "batch":
        beaten |= (pairs.comparison[:, None] != pairs.comparison[None, :]) & ~pairs.tie[None, :]
    beaten &= (pairs.head[:, None] == pairs.head[None, :]) & (pairs.j[None, :] != pairs.i[:, None]) & ~pairs.tie[:, None]
    beaten |= torch.eye(len(pairs), dtype=torch.bool, device=c.device)  # a pair's own rejected item, ties too
    same_item = (pairs.j[:, None] == pairs.j[None, :]) & (pairs.head[:, None] == pairs.head[None, :])
    earlier = torch.ones_like(same_item).triu(1)  # [q', q]: q' < q
    repeat = (beaten.float() @ (same_item & earlier).float()) > 0  # q's item already counted for p
    negatives = r[None, :].masked_fill(~beaten | repeat, float("-inf"))
    return torch.logsumexp(torch.cat([c[:, None], negatives], dim=1), dim=1) - c


def weighted_mean(per_pair: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Σ w·ℓ / Σ w over the pairs: (P,), (P,) -> ()."""
    return (per_pair * weight).sum() / weight.sum().clamp_min(1e-12)


def reward_centering_penalty(rewards: torch.Tensor) -> torch.Tensor:
    """Mean squared reward (N,) -> (); added with a small weight it keeps rewards near 0 (Eisenstein et al.)."""
    return rewards.pow(2).mean()


def margin_feature_slope(rewards: torch.Tensor, pairs: PairTable, feature: torch.Tensor) -> torch.Tensor:
    """The squared slope of reward margins on feature gaps over a batch's pairs -> ().

    ``rewards`` (N, H) are read on each pair's head, ``feature`` (N,) is an item feature
    (log length). With d = r_i - r_j and g = f_i - f_j per pair, the least-squares slope
    through the origin is β = Σ d·g / Σ g²: reward gained per unit of feature gap, the
    same whichever item of a pair is written first. Penalising β² asks the margins not to
    follow the feature. Through the origin, not centred: a pair's margin is the
    difference of two rewards, so a reward that ignores the feature has E[β] = 0 when
    quality and feature are independent, whereas centring over the batch's pairs would
    pull on a quality-only model wherever the kinds of pairs differ in their gaps. A
    correlation would be scale-free, but its gradient grows as 1 / |d|, so at
    initialisation (margins near 0) it swamps the preference loss; β's does not.
    0 where the gaps are all 0 (equal lengths, images).

    Example:
        >>> pairs = PairTable.of(2)
        >>> r = torch.tensor([[3.], [1.], [0.], [1.]])   # margins 2 and -1
        >>> f = torch.tensor([2., 0., 0., 1.])           # gaps 2 and -1: margin = 1.0 x gap
        >>> float(margin_feature_slope(r, pairs, f))
        1.0
    """
    margin = (rewards[pairs.i, pairs.head] - rewards[pairs.j, pairs.head]).float()
    gap = (feature[pairs.i] - feature[pairs.j]).float()
    energy = gap.pow(2).sum()
    if len(pairs) == 0 or float(energy) < 1e-8:
        return rewards.new_zeros(())
    return ((margin * gap).sum() / energy) ** 2


@dataclass(frozen=True)
class OutcomeLoss:
    """A loss that is each judged pair's negative log-likelihood under the outcome model named ``outcome``
    (rewardlab.models.outcomes), whose tie parameter is learned with it."""

    outcome: str
    help: str


RAO_KUPPER = OutcomeLoss("rao_kupper", "Tie-aware Bradley-Terry (Rao-Kupper): P(tie) from a learned threshold on "
                                       "the reward gap.")
DAVIDSON = OutcomeLoss("davidson", "Tie-aware Bradley-Terry (Davidson): P(tie) proportional to a learned nu times "
                                   "sqrt(p_i p_j).")
THREE_CLASS = OutcomeLoss("three_class", "Cross-entropy over A / B / tie for pairwise models (cross-encoder, LLM "
                                         "judge), both orders averaged.")


# ----------------------------------------------------------------------------- per-step losses (process rewards)


def step_bce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of each step: -log σ(z) for a correct step, -log σ(-z) for a wrong one, z the logit of
    P(step is correct). Shapes: (S,), (S,) -> (S,).

    Example:
        >>> [round(x, 4) for x in step_bce(torch.tensor([0.0, 2.0]), torch.tensor([True, False])).tolist()]
        [0.6931, 2.1269]
    """
    return F.binary_cross_entropy_with_logits(logits.float(), labels.float(), reduction="none")


def first_error_prefix(labels: torch.Tensor, solution: torch.Tensor) -> torch.Tensor:
    """Each solution's steps up to and including its first wrong one (all of a correct solution's). ``labels``
    (S,) bool, True = correct; ``solution`` (S,) the solution of each step, non-decreasing (steps in order).

    Example:
        >>> first_error_prefix(torch.tensor([True, False, True, True, True]), torch.tensor([0, 0, 0, 1, 1])).tolist()
        [True, True, False, True, True]
    """
    wrong = (~labels.bool()).long()
    seen = torch.cumsum(wrong, 0) - wrong  # wrong steps strictly before each step, counted from the start
    first = torch.searchsorted(solution.contiguous(), solution.contiguous())  # each solution's first step
    return (seen - seen[first]) == 0


def last_steps(solution: torch.Tensor) -> torch.Tensor:
    """Each solution's last step: (S,) non-decreasing solution ids -> (S,) bool.

    Example:
        >>> last_steps(torch.tensor([0, 0, 1, 2, 2])).tolist()
        [False, True, True, False, True]
    """
    return torch.cat([solution[1:] != solution[:-1], solution.new_ones(1, dtype=torch.bool)])


def class_weights(labels: torch.Tensor, rule: str) -> tuple[float, float]:
    """(weight of a wrong step, weight of a correct step) under ``rule``: ``none`` (1, 1), ``auto`` (inverse class
    frequency, N / (2 N_class), so both classes weigh the same in total) or a number (the wrong steps' weight).

    Example:
        >>> class_weights(torch.tensor([True, True, True, False]), "auto")
        (2.0, 0.6666666666666666)
    """
    if rule == "none":
        return 1.0, 1.0
    if rule != "auto":
        return float(rule), 1.0
    n, correct = len(labels), int(labels.bool().sum())
    if correct in (0, n):  # one class only: nothing to balance
        return 1.0, 1.0
    return n / (2 * (n - correct)), n / (2 * correct)


@dataclass(frozen=True)
class StepLoss:
    """A per-step loss of process reward models: :func:`step_bce` over the steps ``steps`` selects (``all``,
    ``prefix``: up to and including the first wrong step, ``last``: each solution's last step), each weighted by its
    class weight. It never serves as a pairwise loss (:func:`build_pair_loss` refuses it)."""

    steps: str
    help: str

    def weights(self, labels: torch.Tensor, solution: torch.Tensor, class_weight: tuple[float, float] = (1.0, 1.0)
                ) -> torch.Tensor:
        """(S,) weight of each step: its class weight where the loss reads it, else 0."""
        chosen = {"all": torch.ones_like(labels, dtype=torch.bool), "prefix": first_error_prefix(labels, solution),
                  "last": last_steps(solution)}[self.steps]
        wrong, right = class_weight
        return torch.where(labels.bool(), right, wrong).float() * chosen

    def __call__(self, logits: torch.Tensor, labels: torch.Tensor, solution: torch.Tensor,
                 class_weight: tuple[float, float] = (1.0, 1.0)) -> torch.Tensor:
        """The weighted mean Σ w·ℓ / Σ w over the steps: (S,), (S,), (S,) -> ()."""
        return weighted_mean(step_bce(logits, labels), self.weights(labels, solution, class_weight).to(logits.device))


STEP_BCE = StepLoss("all", "Per-step binary cross-entropy of a process reward model over every step.")
STEP_BCE_PREFIX = StepLoss("prefix", "Per-step binary cross-entropy over the steps up to and including the first "
                                     "wrong one (later steps build on a mistake; their labels say little).")
STEP_BCE_LAST = StepLoss("last", "Binary cross-entropy of each solution's last step only (outcome supervision read "
                                 "at the last step, TRL's train_on_last_step_only).")


def is_step_loss(name: str) -> bool:
    """Whether the loss ``name`` is a per-step loss (process reward models) rather than a pairwise one."""
    return isinstance(get_loss(name), StepLoss)


def loss_names() -> list[str]:
    return LOSSES.names()


def get_loss(name: str) -> LossFn | OutcomeLoss:
    """The loss registered under ``name`` (:data:`rewardlab.contracts.registry.LOSSES`); raises ``ValueError``
    listing valid names."""
    return LOSSES.get(name)


def describe_loss(name: str) -> str:
    """One line saying what the loss ``name`` does."""
    loss = get_loss(name)
    text = loss.help if isinstance(loss, (OutcomeLoss, StepLoss)) else (loss.__doc__ or "").strip()
    return text.splitlines()[0] if text else ""


def outcome_model_for(loss: str) -> str:
    """The outcome model a loss trains: its own likelihood for outcome losses, Bradley–Terry otherwise."""
    entry = get_loss(loss)
    return entry.outcome if isinstance(entry, OutcomeLoss) else "bradley_terry"


def outcome_nll(judged: Judged, pairs: PairTable) -> torch.Tensor:
    """-log P(observed outcome): class 0 (the pair's first item won) or 2 (a tie). (P, 3) -> (P,)."""
    observed = torch.where(pairs.tie, 2, 0)
    return -judged.log_probs.gather(1, observed[:, None]).squeeze(1)


def build_pair_loss(name: str, **params: float | str) -> Callable[[Judged, PairTable], torch.Tensor]:
    """The trainer's loss: ``(judged, pairs) -> (P,)`` per-pair terms, for any loss name.

    Scalar losses see each pair's two scores; a tie pair (which has no preferred side) gets
    the mean of both orders, ½ (ℓ(r_i, r_j) + ℓ(r_j, r_i)), which is smallest at equal
    rewards. Outcome losses are :func:`outcome_nll`.

    Example:
        >>> from rewardlab.models.outcomes import BradleyTerry
        >>> loss = build_pair_loss("bradley_terry")
        >>> judged = BradleyTerry()(torch.tensor([[1.0], [0.0]]), PairTable.of(2, i=[0, 0], j=[1, 1], tie=[0, 1]))
        >>> [round(x, 4) for x in loss(judged, PairTable.of(2, tie=[0, 1])).tolist()]  # -log σ(1); ½(-log σ(1) - log σ(-1))
        [0.3133, 0.8133]
    """
    fn = get_loss(name)
    if isinstance(fn, OutcomeLoss):
        return outcome_nll
    if isinstance(fn, StepLoss):
        raise ValueError(f"train.loss={name} is a per-step loss for process reward models (stepwise data, "
                         "model.kind=prm); for comparisons choose a pairwise loss: " + ", ".join(
                             n for n in loss_names() if not is_step_loss(n)))

    def pair_loss(judged: Judged, pairs: PairTable) -> torch.Tensor:
        forward = fn(judged.chosen, judged.rejected, pairs, **params)
        if not bool(pairs.tie.any()):
            return forward
        backward = fn(judged.rejected, judged.chosen, pairs, **params)
        return torch.where(pairs.tie, (forward + backward) / 2, forward)

    return pair_loss
