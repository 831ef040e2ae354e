"""Contained execution: approved code runs in a confined worker process, never in the site's own.

``runner.WorkerPool`` starts workers (``worker``) from a clean interpreter; each
confines itself (``confine``: rlimits, ``landlock``, ``seccomp``) before it sees
researcher code, reads its inputs through read-only memory maps, and talks to the
site only in ``wire``'s format.
"""
