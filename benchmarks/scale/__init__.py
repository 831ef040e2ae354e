"""``bench_scale``'s measuring parts.

- ``partition``: the converted one-site federation at N images, and its bytes;
- ``memory``: a site's process tree memory (VmRSS, VmHWM) sampled, per phase of the job;
- ``cpu``: the same tree's CPU and page faults, children it has reaped included;
- ``site_job``: the real site over HTTP running one FedAvg job, timed and sampled;
- ``in_process``: the same site-function calls in this process (the baseline);
- ``render``: the report's sections.
"""
