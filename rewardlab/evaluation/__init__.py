"""Evaluation: metrics with intervals, calibration, invariance checks, plots and an HTML report."""
