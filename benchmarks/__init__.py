"""Speed, accuracy and scale benchmarks. Each one writes a report; none is a timed test.

Run from the repository root, e.g. ``python -m benchmarks.bench_convert``; see
``benchmarks/README.md``. Recorded figures live in ``benchmarks/RESULTS.md``. Each
``bench_*.py`` holds what it measures; what they all do around it is ``benchmarks.harness``.
"""
