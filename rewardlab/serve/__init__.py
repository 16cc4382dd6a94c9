"""Serve reward scores over HTTP to RLHF loops: the app, the service under it, its dynamic batcher, metrics
and a client.

See :mod:`rewardlab.serve.app` for the endpoints, and :mod:`rewardlab.serve.service` for what they compute
(no HTTP there: :class:`~rewardlab.serve.service.RewardService` scores validated requests without FastAPI).
Importing this package needs FastAPI only when ``create_app`` / ``serve`` are used; the client needs nothing
beyond the standard library.
"""

from __future__ import annotations

__all__ = ["BatcherConfig", "RewardClient", "RewardService", "ServeConfig", "create_app", "serve"]


def __getattr__(name: str):
    if name in ("create_app", "serve"):
        from rewardlab.serve import app

        return getattr(app, name)
    if name in ("BatcherConfig", "ServeConfig"):
        from rewardlab.serve import config

        return getattr(config, name)
    if name == "RewardService":
        from rewardlab.serve.service import RewardService

        return RewardService
    if name == "RewardClient":
        from rewardlab.serve.client import RewardClient

        return RewardClient
    raise AttributeError(name)
