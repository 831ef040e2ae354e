"""``bench_ingest``'s measuring parts.

- ``partition``: the partition it uploads, and the datasets built from it;
- ``ways``: the ways it is put into a datasite, each timed and checked.
"""
