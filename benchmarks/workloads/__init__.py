"""Inputs more than one benchmark measures on.

- ``images``: distinct 256-px RGB JPEGs generated from scikit-learn's digits
  (``bench_convert``, and ``bench_ingest`` after converting them);
- ``digits``: the digits accuracy protocol — held-out test set, hospitals made by
  ``fedimg convert``, the job's site function (``bench_fedavg``, ``bench_privacy``).
"""
