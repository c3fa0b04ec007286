"""Reproducible performance measurements of the pipeline and their recorded results.

``python -m benchmarks.run`` (``make bench``, ``make bench-quick``) measures the loader, the
training step, whole-case inference and preprocessing side by side on one synthetic cohort and
writes ``benchmarks/results/<machine>-<date>.json``; see ``benchmarks/README.md``.
"""
