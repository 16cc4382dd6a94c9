"""A reward model as a plain callable, for RL trainers that take reward functions (TRL's ``GRPOTrainer``).

    >>> reward = RewardFunction(checkpoint)  # a model folder such as "runs/demo/model", or "http://127.0.0.1:8000"
    >>> rewards = reward(prompts=["How do I boil an egg?"] * 2, completions=["Simmer it.", "No idea."])
    >>> len(rewards), all(isinstance(r, float) for r in rewards)  # one reward per completion
    (2, True)
    >>> reward.__name__  # TRL names the reward's column after it
    'rewardlab_reward'

Hand it to TRL's trainer as one of its reward functions (``policy`` being the model it trains)::

    from trl import GRPOTrainer
    trainer = GRPOTrainer(model=policy, reward_funcs=[reward], ...)

Prompts and completions are plain strings or conversations (lists of ``{"role", "content"}`` messages,
TRL's conversational form); conversations go through the reward model's own chat template, as its
training data did. Other keyword arguments (dataset columns, ``trainer_state`` ...) are accepted and ignored.

    >>> reward(prompts=[[{"role": "user", "content": "How do I boil an egg?"}]],
    ...        completions=[[{"role": "assistant", "content": "Simmer it."}]], trainer_state=None)  # doctest: +ELLIPSIS
    [...]

``normalize="prompt_mean"`` subtracts the mean reward of each prompt's completions in the call (GRPO's group
baseline); ``attribute`` returns one head of a multi-attribute model instead of the overall reward:

    >>> centred = RewardFunction(checkpoint, normalize="prompt_mean")
    >>> abs(sum(centred(prompts=["How do I boil an egg?"] * 2, completions=["Simmer it.", "No idea."]))) < 1e-9
    True
    >>> helpful = RewardFunction(checkpoint, attribute="helpfulness")
    >>> helpful(prompts=["How do I boil an egg?"], completions=["Simmer it."]) == [
    ...     helpful.reward_model.score_attributes("How do I boil an egg?", "Simmer it.")["helpfulness"]]
    True
    >>> RewardFunction(checkpoint, attribute="fluency")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: attribute='fluency' is not a head of ...; heads: correctness, helpfulness, aggregate
"""

from __future__ import annotations

from typing import Sequence


def _messages(value: str | Sequence[dict]) -> str | list[dict]:
    """Strings as they are; messages reduced to role and content (all the server accepts)."""
    if isinstance(value, str):
        return value
    return [{"role": m["role"], "content": m["content"]} for m in value]


class RewardFunction:
    """``(prompts, completions, **kwargs) -> list[float]`` from a local model folder or a server URL.

    Args:
        model_dir_or_url: a reward model folder / hub id (scored in this process), or the ``http(s)://``
            address of ``rewardlab serve``.
        normalize: ``none``, ``zscore``, ``sigmoid`` or ``prompt_mean`` (each reward minus the mean of the
            completions of the same prompt in this call).
        attribute: a head of a multi-attribute model to return instead of the aggregate.
        model: the served model's name (URL only; default: the server's default).
        device, batch_size: local scoring only.
        timeout: seconds per request (URL only).
    """

    __name__ = "rewardlab_reward"  # TRL names the reward column after this

    def __init__(self, model_dir_or_url: str, *, normalize: str = "none", attribute: str | None = None,
                 model: str | None = None, device: str | None = None, batch_size: int = 32, timeout: float = 180.0):
        from rewardlab.scoring import NORMALIZATIONS

        if normalize not in NORMALIZATIONS:
            raise ValueError(f"normalize={normalize!r}; choose one of {', '.join(NORMALIZATIONS)}")
        self.normalize, self.attribute, self.batch_size = normalize, attribute, batch_size
        self.source = model_dir_or_url
        if model_dir_or_url.startswith(("http://", "https://")):
            from rewardlab.serve.client import RewardClient

            self.client, self.reward_model = RewardClient(model_dir_or_url, model=model, timeout=timeout), None
        else:
            from rewardlab.scoring import RewardModel

            self.client, self.reward_model = None, RewardModel.from_pretrained(model_dir_or_url, device=device)
            heads = self.reward_model.heads
            if attribute is not None and attribute not in heads:
                raise ValueError(f"attribute={attribute!r} is not a head of {model_dir_or_url}; heads: "
                                 f"{', '.join(heads)}")

    def __call__(self, prompts: Sequence, completions: Sequence, **kwargs) -> list[float]:
        if len(prompts) != len(completions):
            raise ValueError(f"got {len(prompts)} prompts but {len(completions)} completions")
        if not prompts:
            return []
        if self.client is not None:
            return self.client.score([_messages(p) for p in prompts], [_messages(c) for c in completions],
                                     normalize=self.normalize, attribute=self.attribute)
        from rewardlab.scoring import render_item

        rm = self.reward_model
        texts = [render_item(rm.processor.render_chat, p, c) for p, c in zip(prompts, completions)]
        ps, rs = [t[0] for t in texts], [t[1] for t in texts]
        rows = rm.score_heads(ps, rs, batch_size=self.batch_size, normalize=self.normalize)  # (N, H)
        column = rm.heads.index(self.attribute) if self.attribute else -1
        return rows[:, column].tolist()

    def __repr__(self) -> str:
        return f"RewardFunction({self.source!r}, normalize={self.normalize!r})"
