"""Reward models: the :class:`~rewardlab.models.base.RewardNet` contract, the kinds that implement it (text,
multimodal, cross-encoder, judge, ensemble) and the wrappers that add to any kind (personalised, debiased)."""
