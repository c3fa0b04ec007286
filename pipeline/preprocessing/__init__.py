"""Preprocessing: one case prepared for the network (the step training and inference share), and the memory-mapped cache."""

__all__: list[str] = []
