"""``bench_scale``'s report sections: what was measured, one column per partition size, how to read it."""

from __future__ import annotations

from typing import Any

from benchmarks.harness import table

MIB = 2**20


def _mib(value: float) -> str:
    """Bytes in MiB: whole MiB, or two decimals below 10 MiB (the smoke run's partitions).

    Examples
    --------
    >>> _mib(3 * MIB / 4), _mib(2500 * MIB)
    ('0.75', '2,500')
    """
    return f"{value / MIB:,.0f}" if abs(value) >= 10 * MIB else f"{value / MIB:.2f}"


def _label(entry: dict) -> str:
    return f"{entry['images']:,} × {entry['size']} px"


def method_lines(settings: dict, job: dict) -> list[str]:
    """The bullets saying what was measured and how.

    Parameters
    ----------
    settings : dict
        The run's settings (the JSON twin's).
    job : dict
        The job's description (``bench_scale.job_description``).

    Returns
    -------
    list[str]
        Markdown bullets.

    Examples
    --------
    >>> lines = method_lines({"site_threads": 1, "repeats": 3, "sandbox": "default"},
    ...                      {"model": "SmallCNN(width=8)", "rounds": 1, "local_epochs": 1, "batch_size": 64,
    ...                       "classes": 4, "function_sha256": "ab" * 32})
    >>> "no `[sandbox]` section" in lines[-1]
    True
    """
    sandbox = settings["sandbox"]
    policy = (
        "no `policy.toml` (no `[sandbox]` section: the site's default)"
        if sandbox == "default"
        else f'`[sandbox] mode = "{sandbox}"` in the site\'s `policy.toml`'
    )
    return [
        "- **Site**: one `fedimg datasite serve` subprocess over HTTP on loopback per partition size, one "
        "after the other, each on a fresh state dir (SQLite, on-disk blobs); it ingests its partition "
        "(generated shape images, four classes, converted by `fedimg convert --clients 1 --mode RGB`, "
        f"train/val 80/20), then serves. torch on {settings['site_threads']} thread(s) at the site "
        "(`OMP_NUM_THREADS`), in its sandbox workers (`fedimg datasite serve --threads`) and in the baseline",
        f"- **Job** (the same at every size; site function sha256 `{job['function_sha256'][:12]}`): "
        f"`FedAvgJob({job['model']})`, {job['rounds']} training round × {job['local_epochs']} local "
        f"epoch, batch {job['batch_size']}, {job['classes']} classes; submitted by a researcher, "
        "approved by the owner (`code_requests.approve`), then run: one training call and the final "
        "evaluation-only call. A call's seconds are the researcher's (`FedAvgJob._call_sites`: asset "
        "lookup, request, execution, result)",
        "- **Baseline**: the same rendered site function called in this process on the partition's "
        "arrays read from disk (`load_client_partition`, not timed in the call): the training call "
        f"once, the evaluation-only call {settings['repeats']} time(s) (median), after an untimed "
        "warm-up. **Fixed overhead** = the call over HTTP − the same call in one process",
        "- **Memory**: the site's process tree (the site and any children, e.g. sandbox workers) from "
        "`/proc/<pid>/status`: *idle* is the median summed `VmRSS` over 1 s after ingest and login; "
        "*peak* is the larger of the summed `VmRSS` sampled every 50 ms during the job and the site "
        "process's `VmHWM` (reset with `clear_refs` when the job starts); growth = peak − idle, "
        "against the partition's bytes (the private uint8 images and int64 labels, train + val)",
        f"- **Sandbox mode**: `{sandbox}`: {policy}",
    ]


def sizes_table(entries: list[dict]) -> list[str]:
    """One column per partition size: the calls, their overhead, the site's CPU and memory.

    Parameters
    ----------
    entries : list[dict]
        The run's ``sizes`` entries (each with its ``summary``).

    Returns
    -------
    list[str]
        A markdown table.
    """

    def line(what: str, key: Any) -> list[str]:
        return [what, *(key(e) for e in entries)]

    rows = [
        line("train / val images", lambda e: f"{e['partition']['train']:,} / {e['partition']['val']:,}"),
        line("partition (private arrays, MiB)", lambda e: _mib(e["partition"]["bytes"])),
        line("site start, ingest included (s)", lambda e: f"{e['site']['start_seconds']:.1f}"),
        line("training call over HTTP (s)", lambda e: f"{e['summary']['training_http_seconds']:.2f}"),
        line("training call in one process (s)", lambda e: f"{e['summary']['training_local_seconds']:.2f}"),
        line("training call overhead (s)", lambda e: f"{e['summary']['training_overhead_seconds']:.2f}"),
        line(
            "evaluation-only call over HTTP (s)", lambda e: f"{e['summary']['evaluation_http_seconds']:.2f}"
        ),
        line(
            "evaluation-only call in one process (s; runs)",
            lambda e: (
                f"{e['summary']['evaluation_local_seconds']:.2f} ("
                + ", ".join(f"{v:.2f}" for v in e["in_process"]["evaluation_runs"])
                + ")"
            ),
        ),
        line(
            "**fixed overhead of a call** (s)",
            lambda e: f"**{e['summary']['evaluation_overhead_seconds']:.2f}**",
        ),
        line(
            "fixed overhead per 100 MiB of partition (s)",
            lambda e: f"{e['summary']['overhead_seconds_per_100_mib']:.2f}",
        ),
        line(
            "site CPU in the evaluation-only call, user + system (s)",
            lambda e: (
                f"{e['summary']['evaluation_site_user_seconds']:.1f} + "
                f"{e['summary']['evaluation_site_system_seconds']:.1f}"
            ),
        ),
        line(
            "minor page faults at the site in that call (M)",
            lambda e: f"{e['summary']['evaluation_site_minor_faults'] / 1e6:.2f}",
        ),
        line(
            "other processes' CPU during the calls, training / evaluation (s)",
            lambda e: (
                f"{e['summary']['training_other_cpu_seconds']:.1f} / "
                f"{e['summary']['evaluation_other_cpu_seconds']:.1f}"
            ),
        ),
        line("site RSS idle after ingest (MiB)", lambda e: _mib(e["summary"]["idle_rss_bytes"])),
        line(
            "site RSS peak during the job (MiB; sampled tree / site VmHWM)",
            lambda e: (
                f"{_mib(e['summary']['peak_rss_bytes'])} ({_mib(e['site']['memory']['peak_bytes'])} / "
                f"{_mib(e['site']['memory']['site_high_water_bytes'])})"
            ),
        ),
        line(
            "**RSS growth during the job** (MiB; × partition)",
            lambda e: f"**{_mib(e['summary']['growth_bytes'])}** ({e['summary']['growth_ratio']:.2f}×)",
        ),
        line(
            "growth at the peak by kind (MiB): workers anonymous + mapped files; site anonymous + mapped "
            "files",
            lambda e: _parts(e["summary"].get("growth_parts") or {}),
        ),
        line(
            "peak by phase (MiB)",
            lambda e: "; ".join(
                f"{phase} {_mib(p['peak_bytes'])}" for phase, p in e["site"]["memory"]["phases"].items()
            ),
        ),
        line("site RSS after the job (MiB)", lambda e: _mib(e["site"]["retained_rss_bytes"])),
        line(
            "processes in the site's tree (idle / at the peak / seen)",
            lambda e: (
                f"{e['site']['idle_processes']} / {e['site']['memory']['peak_processes']} / "
                f"{e['site']['memory']['processes_seen']}"
            ),
        ),
        line(
            "final val accuracy, site / one process",
            lambda e: f"{e['summary']['site_val_accuracy']:.3f} / {e['in_process']['val_accuracy']:.3f}",
        ),
        line(
            "partition read from disk in one process (s)", lambda e: f"{e['in_process']['load_seconds']:.1f}"
        ),
    ]
    header = ["", *(_label(e) for e in entries)]
    return table(header, "l" + "r" * len(entries), rows)


def _parts(growth: dict) -> str:
    """A peak's growth by kind, the workers' first (anonymous: heap and tensors; files: maps and code).

    Examples
    --------
    >>> _parts({"children": {"RssAnon": 60 * MIB, "RssFile": 25 * MIB, "RssShmem": 0},
    ...         "site": {"RssAnon": 2 * MIB, "RssFile": 0, "RssShmem": 0}})
    '60 + 25; 2.00 + 0.00'
    >>> _parts({})
    '—'
    """
    if not growth:
        return "—"
    kinds = [growth[group] for group in ("children", "site")]
    return "; ".join(f"{_mib(k['RssAnon'])} + {_mib(k['RssFile'] + k.get('RssShmem', 0))}" for k in kinds)


def skipped_lines(skipped: list[dict]) -> list[str]:
    """A bullet per size that was asked for and not measured (``--large`` that did not fit).

    Examples
    --------
    >>> skipped_lines([{"images": 5000, "size": 224, "reason": "not enough memory"}])
    ['- **Skipped** 5,000 × 224 px: not enough memory']
    """
    return [f"- **Skipped** {e['images']:,} × {e['size']} px: {e['reason']}" for e in skipped]


def reading_lines(entries: list[dict]) -> list[str]:
    """What the figures say: how the fixed overhead and the memory grow with the partition.

    Parameters
    ----------
    entries : list[dict]
        The measured sizes (at least one).

    Returns
    -------
    list[str]
        Markdown bullets.
    """
    if len(entries) < 2:
        return []
    small, big = entries[0]["summary"], entries[1]["summary"]
    data = (entries[1]["partition"]["bytes"] - entries[0]["partition"]["bytes"]) / MIB
    extra = big["evaluation_overhead_seconds"] - small["evaluation_overhead_seconds"]
    rate = (
        f"one more second per {data / extra:,.1f} MiB of partition"
        if extra > 0 and data > 0
        else "it does not grow with the partition"
    )
    return [
        f"- **Reading it**: from {_label(entries[0])} to {_label(entries[1])} the partition grows by "
        f"{_mib(data * MIB)} MiB and a call's fixed overhead by {extra:.2f} s ({rate}); RSS growth during "
        "the job is "
        f"{small['growth_ratio']:.2f}× and {big['growth_ratio']:.2f}× the partition. A fixed overhead "
        "that grows with the data means every call re-reads (deserialises) the partition; with the "
        "sandbox's read-only memory maps it should stay flat and the growth should stay near the model's "
        "and one batch's memory",
    ]
