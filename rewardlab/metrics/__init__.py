"""Metrics: pure functions of arrays. ``pairwise`` reads per-pair margins (accuracy, log-loss, calibration,
intervals); ``outcomes`` reads three-way A / B / tie probabilities."""
