"""Experiments: orchestrations of many runs through the one runner (ablations, baselines, ensembles)."""
