"""``bench_fedavg``'s measuring parts.

- ``accuracy``: FedAvg against centralised training on the digits;
- ``overhead``: a round over HTTP datasites against the same training in one process;
- ``sites``: the HTTP datasites and the timed job they run;
- ``render``: the report's accuracy and overhead sections.
"""
