"""Ranking candidates in the browser: the answer store and the local web server (``rewardlab label``)."""

from rewardlab.label.store import LabelStore, check_ranks, read_candidates

__all__ = ["LabelStore", "check_ranks", "read_candidates"]
