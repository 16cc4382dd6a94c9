"""A reward model as a plain callable, for RL trainers that take reward functions (TRL's ``GRPOTrainer``).

    >>> reward = RewardFunction(checkpoint)  # a model folder such as "runs/demo/model", or "http://127.0.0.1:8000"
    >>> rewards = reward(prompts=["How do I boil an egg?"] * 2, completions=["Simmer it.", "No idea."])
    >>> len(rewards), all(isinstance(r, float) for r in rewards)  # one reward per completion
    (2, True)
    >>> reward.__name__ == Path(checkpoint).parent.name  # TRL logs it as rewards/<name>: "demo" for runs/demo/model
    True
    >>> RewardFunction(checkpoint, name="helpful").__name__  # a name of your own
    'helpful'

Hand it to TRL's trainer as one of its reward functions (``policy`` being the model it trains); two
reward models log as two curves, each under its function's name::

    from trl import GRPOTrainer
    trainer = GRPOTrainer(model=policy, reward_funcs=[RewardFunction("runs/helpful/model"),
                                                      RewardFunction("runs/harmless/model")], ...)

Prompts and completions are plain strings or conversations (lists of ``{"role", "content"}`` messages,
TRL's conversational form, or OpenAI's messages: ``name`` is ignored, tool calls are refused); conversations
go through the reward model's own chat template, as its training data did, exactly as
:meth:`RewardModel.score <rewardlab.scoring.RewardModel.score>` renders them. Other keyword arguments (dataset
columns, ``trainer_state`` ...) are accepted and ignored.

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

import re
from pathlib import Path
from typing import Sequence
from urllib.parse import urlsplit

NAME = re.compile(r"[\w.\-]+")  # what a reward's name may be: TRL logs it as rewards/<name>/mean


def default_name(model_dir_or_url: str, *, model: str | None = None, attribute: str | None = None,
                 normalize: str = "none") -> str:
    """The name a :class:`RewardFunction` logs under when not given one: the model, then the settings.

    The model is a folder's name (its run's name for a run's ``model`` folder, ``runs/demo/model`` -> ``demo``),
    a hub id's last part (as TRL names a reward model it loads itself), or a server's host and port, then the
    served model's name where one is given (never the URL's user or password). ``attribute`` and a
    ``normalize`` other than ``none`` follow, so one model's heads and normalisations log apart.

        >>> default_name("runs/helpful/model", attribute="helpfulness", normalize="zscore")
        'helpful_helpfulness_zscore'
        >>> default_name("http://127.0.0.1:8000", model="harmless"), default_name("org/rm-deberta")
        ('127.0.0.1_8000_harmless', 'rm-deberta')
    """
    if model_dir_or_url.startswith(("http://", "https://")):
        url = urlsplit(model_dir_or_url)
        base = "_".join(str(x) for x in (url.hostname, url.port, url.path.strip("/"), model) if x not in (None, ""))
    else:
        path = Path(model_dir_or_url)
        path = path.resolve() if path.is_dir() else path
        base = path.parent.name if path.name == "model" and path.parent.name else path.name
    parts = [base, attribute or "", "" if normalize == "none" else normalize]
    return "_".join(p for p in (re.sub(r"[^\w.\-]+", "_", x).strip("_") for x in parts) if p) or "reward"


class RewardFunction:
    """``(prompts, completions, **kwargs) -> list[float]`` from a local model folder or a server URL.

    Args:
        model_dir_or_url: a reward model folder / hub id (scored in this process), or the ``http(s)://``
            address of ``rewardlab serve``.
        normalize: ``none``, ``zscore``, ``sigmoid`` or ``prompt_mean`` (each reward minus the mean of the
            completions of the same prompt in this call).
        attribute: a head of a multi-attribute model to return instead of the aggregate.
        model: the served model's name (URL only; default: the server's default).
        name: the function's ``__name__``, which TRL's ``GRPOTrainer`` logs its rewards under
            (``rewards/<name>/mean``): letters, digits, ``_``, ``.`` and ``-``. Default:
            :func:`default_name`, distinct for different models, heads and normalisations; two functions
            over the same model with the same settings share it (they compute the same reward): name
            them to tell them apart.
        device, batch_size: local scoring only.
        timeout: seconds per request (URL only).
    """

    def __init__(self, model_dir_or_url: str, *, normalize: str = "none", attribute: str | None = None,
                 model: str | None = None, name: str | None = None, device: str | None = None,
                 batch_size: int = 32, timeout: float = 180.0):
        from rewardlab.scoring import NORMALIZATIONS

        if normalize not in NORMALIZATIONS:
            raise ValueError(f"normalize={normalize!r}; choose one of {', '.join(NORMALIZATIONS)}")
        if name is not None and not isinstance(name, str):
            raise TypeError(f"name must be a string, got {type(name).__name__}")
        if name is not None and not NAME.fullmatch(name):
            raise ValueError(f"name={name!r}: a reward function's name is one or more letters, digits, '_', '.' or "
                             "'-' (TRL logs its rewards as rewards/<name>/mean)")
        self.normalize, self.attribute, self.batch_size = normalize, attribute, batch_size
        self.source = model_dir_or_url
        # what TRL logs the rewards under (trl.trainer.utils.get_callable_name reads __name__)
        self.__name__ = name or default_name(model_dir_or_url, model=model, attribute=attribute, normalize=normalize)
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
            from rewardlab.scoring_inputs import chat_messages

            def wire(value, field: str, i: int):  # messages checked and reduced to role and content here
                return chat_messages(value, field, where=f"item {i}") if isinstance(value, list) else value

            return self.client.score([wire(p, "prompt", i) for i, p in enumerate(prompts)],
                                     [wire(c, "response", i) for i, c in enumerate(completions)],
                                     normalize=self.normalize, attribute=self.attribute)
        rm = self.reward_model
        rows = rm.score_heads(list(prompts), list(completions), batch_size=self.batch_size,
                              normalize=self.normalize)  # (N, H); message lists rendered by its chat template
        column = rm.heads.index(self.attribute) if self.attribute else -1
        return rows[:, column].tolist()

    def __repr__(self) -> str:
        return f"RewardFunction({self.source!r}, normalize={self.normalize!r}, name={self.__name__!r})"
