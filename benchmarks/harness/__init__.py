"""The benchmarks' shared harness: everything a benchmark does around what it measures.

- ``benchmark``: a benchmark's shared options and settings (``--workdir``, ``--report``,
  ``--record``, ``--quick``, ``--seed``, ``--wait-load``), its flow (parse → run, waiting
  for a quiet machine and noting the load around the measured part → render → write and
  record) and its report's opening lines;
- ``machine``: the machine and its load (the "Machine", "Load average", "Waited" and
  "Other load" lines);
- ``reporting``: the report and its ``.json`` twin, the benchmark's section of RESULTS.md;
- ``figures``: markdown tables, the targets table, mean ± standard deviation;
- ``instruments``: measuring a subprocess (wall time, CPU, peak RSS of its tree), a
  process tree's CPU and page faults, and this process's;
- ``pysyft``: PySyft in the benchmark's process, imported cleanly and kept quiet;
- ``scratch``: scratch outputs, warm inputs and the fixed federation secret.

Benchmarks import these names from ``benchmarks.harness`` (the ``bench_*.py`` entry modules
as ``harness.<name>``), never from its modules.
"""

from benchmarks.harness.benchmark import (
    Benchmark,
    BenchmarkError,
    LoadLimits,
    RunOptions,
    SeedOption,
    WaitOptions,
    chosen,
    measuring,
)
from benchmarks.harness.figures import markdown, mean_std, pm, ratio_target, row, rule, table, targets_table
from benchmarks.harness.instruments import (
    SAMPLE_INTERVAL,
    Measured,
    Stopwatch,
    process_tree_usage,
    run_measured,
)
from benchmarks.harness.machine import (
    BUSY_NOTE,
    contention,
    cpu_snapshot,
    format_load,
    machine_info,
    package_versions,
)
from benchmarks.harness.pysyft import SYFT_PACKAGES, prepare_syft_import, quiet
from benchmarks.harness.reporting import ENTRY_HEADING, ReportHeader, ResultsSection, record_report
from benchmarks.harness.scratch import BENCH_SECRET, clean, secret_file, warm_page_cache

__all__ = [
    "BENCH_SECRET",
    "BUSY_NOTE",
    "ENTRY_HEADING",
    "SAMPLE_INTERVAL",
    "SYFT_PACKAGES",
    "Benchmark",
    "BenchmarkError",
    "LoadLimits",
    "Measured",
    "ReportHeader",
    "ResultsSection",
    "RunOptions",
    "SeedOption",
    "Stopwatch",
    "WaitOptions",
    "chosen",
    "clean",
    "contention",
    "cpu_snapshot",
    "format_load",
    "machine_info",
    "markdown",
    "mean_std",
    "measuring",
    "package_versions",
    "pm",
    "prepare_syft_import",
    "process_tree_usage",
    "quiet",
    "ratio_target",
    "record_report",
    "row",
    "rule",
    "run_measured",
    "secret_file",
    "table",
    "targets_table",
    "warm_page_cache",
]
