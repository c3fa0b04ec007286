"""Evaluation: per-case metrics under BraTS rules, ``evaluate``, the tables and plots, post-processing tuning, merging shards."""

__all__: list[str] = []
