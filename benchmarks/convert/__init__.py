"""``bench_convert``'s measuring part: the contenders, measured in subprocesses (``contenders``)."""
