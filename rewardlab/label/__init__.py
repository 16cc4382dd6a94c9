"""Ranking candidates in the browser: the answer store and the local web server (``rewardlab label``)."""

from rewardlab.label.candidates import check_ranks, read_candidates
from rewardlab.label.queue import Assignment
from rewardlab.label.store import LabelStore

__all__ = ["Assignment", "LabelStore", "check_ranks", "read_candidates"]
