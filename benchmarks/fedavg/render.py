"""``bench_fedavg``'s report sections: the accuracy part's tables and the overhead part's."""

from __future__ import annotations

import statistics
from typing import Any

from benchmarks.fedavg.accuracy import DIRICHLET_TARGET, IID_TARGET, SCHEMES, checkpoints
from benchmarks.fedavg.overhead import CALIBRATION_TARGET_SECONDS, CONTEXT_ROUNDS, threads_text
from benchmarks.harness import format_load, pm, table

# --- accuracy ----------------------------------------------------------------------------------------------


def _accuracy_method_lines(s: dict, first: dict, fedprox: bool) -> list[str]:
    """The bullets that say what the accuracy part measured and how."""
    epochs = s["rounds"] * s["local_epochs"]
    return [
        "- **Data**: scikit-learn's 1,797 digits (8×8 scans). Per seed: a held-out test set of "
        f"{s['test_fraction']:.0%} ({first['test_samples']} images; stratified by label, `split_train_val`) "
        f"and a training pool of {first['pool_samples']}, converted with `fedimg convert` "
        f"(`--clients {s['hospitals']} --size {s['size']} --mode L --val-fraction {s['val_fraction']:g}`, "
        f"each image its own group) into {s['hospitals']} hospitals, `--scheme iid` and "
        f"`--scheme dirichlet --alpha {s['alpha']:g}`; the test images go through the same `standardise` "
        f"(8 → {s['size']} px, bicubic)",
        f"- **Model and optimiser**: `SmallCNN(width={s['width']})`, SGD lr {s['lr']:g}, momentum "
        f"{s['momentum']:g}, batch {s['batch_size']}, cross-entropy; every seed redraws the test split, the "
        "partition and the initial weights (shared by both contenders)",
        f"- **FedAvg**: {s['rounds']} rounds × {s['local_epochs']} local epoch(s); each round calls the "
        "generated site function (`build_site_function`, the code the sites run) for every hospital in this "
        "process, then `researcher.aggregation.fedavg` (sample-weighted); no HTTP (the transport does not "
        "change the arithmetic)"
        + (f"; **FedProx** (context): the same with μ = {s['fedprox_mu']:g}" if fedprox else ""),
        "- **Centralised**: the same site function, one call on the union of the hospitals' train splits for "
        f"{epochs} epochs (= rounds × local epochs); the val splits are used by neither",
        f"- **Seeds**: {s['seeds']}; mean ± standard deviation over seeds; accuracy on the held-out test "
        "set, in %; gap = centralised − FedAvg, in points (positive: FedAvg is worse)",
    ]


def _gap_table(summary: dict, s: dict, fedprox: bool) -> list[str]:
    """Per scheme: the mean accuracies, the gap, and the target it is judged by."""
    header = ["scheme", "centralised acc (%)", "FedAvg acc (%)", "gap (points)", "target", "result"]
    rows = []
    for scheme, limit, label in (
        ("iid", IID_TARGET, "IID"),
        ("dirichlet", DIRICHLET_TARGET, f"Dirichlet α={s['alpha']:g}"),
    ):
        entry = summary[scheme]
        result = "PASS" if entry["fedavg_gap"][0] <= limit else "MISS"
        cells = [label, pm(entry["centralised"]), pm(entry["fedavg"]), pm(entry["fedavg_gap"])]
        cells += [f"≤ {limit:g}", f"**{result}**"]
        rows.append(cells + ([pm(entry["fedprox"]), pm(entry["fedprox_gap"])] if fedprox else []))
    fedprox_columns = ["FedProx acc (%)", "FedProx gap"] if fedprox else []
    return table(header + fedprox_columns, "lrrrrc" + "rr" * fedprox, rows)


def _seed_table(runs: list[dict], fedprox: bool) -> list[str]:
    """Per seed and scheme: the hospitals' sizes and label skew, and both contenders' accuracy."""
    header = ["seed", "scheme", "hospitals' train sizes", "top label's share per hospital"]
    header += ["centralised (%)", "FedAvg (%)", "gap"] + (["FedProx (%)"] if fedprox else [])
    rows = []
    for run in runs:
        hospitals = run["hospitals"]
        central, fed = 100 * run["centralised"]["accuracy"], 100 * run["fedavg"]["accuracy"]
        cells = [run["seed"], run["scheme"], ", ".join(map(str, hospitals["train_sizes"]))]
        cells += [", ".join(f"{v:.0%}" for v in hospitals["top_label_share"])]
        cells += [f"{central:.2f}", f"{fed:.2f}", f"{central - fed:+.2f}"]
        rows.append(cells + ([f"{100 * run['fedprox']['accuracy']:.2f}"] if fedprox else []))
    return table(header, "rlllrrr" + "r" * fedprox, rows)


def _budget_table(summary: dict, s: dict, labels: dict) -> list[str]:
    """The gap after R/4, R/2 and R rounds, against centralised training for as many epochs."""
    header = ["rounds", "epochs"]
    for scheme in SCHEMES:
        header += [f"{labels[scheme]}: centralised (%)", "FedAvg (%)", "gap"]
    rows = []
    for rounds in checkpoints(s["rounds"]):
        cells = [rounds, summary["iid"]["budgets"][str(rounds)]["epochs"]]
        for scheme in SCHEMES:
            budget = summary[scheme]["budgets"][str(rounds)]
            cells += [pm(budget["centralised"]), pm(budget["fedavg"]), pm(budget["gap"])]
        rows.append(cells)
    return table(header, "rr" + "rrr" * len(SCHEMES), rows)


def accuracy_section(results: Any, heading: str) -> list[str]:
    """The report's section on ``results.accuracy``, headed ``heading`` (one level below the report's)."""
    s, accuracy = results.settings, results.accuracy
    summary, runs = accuracy["summary"], accuracy["runs"]
    fedprox = s["fedprox_mu"] > 0
    labels = {"iid": "IID", "dirichlet": f"Dirichlet α={s['alpha']:g}"}
    quarter = max(1, s["rounds"] // 4)
    fedavg_seconds = statistics.median(r["fedavg"]["seconds"] for r in runs)
    centralised_seconds = statistics.median(r["centralised"]["seconds"] for r in runs)
    convergence = ", ".join(
        f"{pm(summary[scheme]['val_last_quarter_change'])} points ({labels[scheme]})" for scheme in SCHEMES
    )
    return [
        f"{heading} Accuracy: FedAvg vs centralised training on the digits",
        "",
        *_accuracy_method_lines(s, runs[0], fedprox),
        "",
        *_gap_table(summary, s, fedprox),
        "",
        *_seed_table(runs, fedprox),
        "",
        "Gap by budget (the FedAvg run's test accuracy after R rounds; centralised trained afresh for "
        "R × local epochs epochs):",
        "",
        *_budget_table(summary, s, labels),
        "",
        "- **Convergence**: the hospitals' pooled val accuracy (the job's own metric, not the test set) "
        f"moved by {convergence} over FedAvg's last {quarter} round(s)",
        f"- **Time** (torch on one thread in this part): a FedAvg run takes {fedavg_seconds:.1f} s "
        "in-process (with a test evaluation after every round), the centralised runs at every budget "
        f"{centralised_seconds:.1f} s (medians)",
    ]


# --- overhead ----------------------------------------------------------------------------------------------


def _overhead_method_lines(s: dict, o: dict, cores: int) -> list[str]:
    """The bullets that say what the overhead part measured and how."""
    names, calibration = o["sites"], o["calibration"]
    default, at_site = o["default_threads"], o["site_threads"]
    sizes = ", ".join(f"{name} {counts['train']}/{counts['val']}" for name, counts in o["partitions"].items())
    if calibration:
        trials = ", ".join(
            f"{seconds:.3f} s on {threads_text(int(count))}"
            for count, seconds in calibration["trials"].items()
        )
        epochs = (
            f"; local epochs calibrated so the largest site's call takes ~{CALIBRATION_TARGET_SECONDS:g} s "
            f"in-process on the faster thread setting (an epoch on {calibration['site']}: {trials})"
        )
    else:
        epochs = " (set by --overhead-epochs)"
    sandbox, unconfined = o.get("sandbox"), o.get("unconfined")
    if sandbox and unconfined:
        threads = f'`[sandbox] mode = "on"`, `threads = {at_site}`'
        where = (
            f"**sandbox on**: every call runs in a confined worker process ({threads} in every site's "
            f"`policy.toml`), torch on **{threads_text(at_site)} per site** (the worker's; its environment "
            f"is empty, so `OMP_NUM_THREADS={at_site}` pins only the site process)"
        )
        jobs = "both HTTP jobs"
    else:  # a report from before the sandbox: one job, the sites pinned through the environment
        where = f"torch on **{threads_text(at_site)} per site** (`OMP_NUM_THREADS={at_site}`)"
        jobs = "the HTTP job"
    lines = [
        f"- **Data**: the digits (synthetic patients kept whole) converted into {len(names)} clients at "
        f"{o['image_size']} px grayscale (train/val: {sizes})",
        f"- **Job**: `FedAvgJob(SmallCNN(width={s['width']}))`, {o['rounds']} training round(s) + the final "
        f"evaluation, {o['local_epochs']} local epochs, SGD lr {s['lr']:g} momentum {s['momentum']:g}, "
        f"batch {s['batch_size']}" + epochs,
        f"- **Over HTTP**: {len(names)} `fedimg datasite serve` subprocesses on 127.0.0.1 (SQLite, on-disk "
        f"blobs; started in {o['sites_start_seconds']:.0f} s), {where}, a researcher account, `job.submit`, "
        "every owner approves "
        "(`datasite_setup.site.code_requests.approve`), `job.run`. A round is the job's own round "
        "(`FedAvgJob._run_round`, timed from outside): the global weights go to every site, the sites "
        "evaluate and train **in parallel** (one thread per site at the researcher), the results come back, "
        "FedAvg, checkpoint",
        "- **In one process** (the baseline): the same generated function on the same partitions, the "
        f"{len(names)} sites' calls **one after another**, FedAvg between rounds; with torch on its default "
        f"{threads_text(default)}"
        + (f" and on {threads_text(at_site)} (as at each site)" if at_site != default else "")
        + f", each before and after {jobs}; the baseline is the faster setting "
        "(median round of both runs)",
        f"- **Cores**: {cores} usable for {len(names)} site processes. torch's default in every process is "
        f"{threads_text(default)}: {len(names)} sites would run {len(names) * default} busy-waiting OpenMP "
        f"threads on {cores} cores, so the sites get {threads_text(at_site)} each (one site per machine, "
        "as in a real federation, has no such contention); a context line shows the other setting",
        f"- **Same work**: final val accuracy over HTTP {o['http_final_accuracy']:.2%}"
        + (f" (sandbox off {unconfined['http_final_accuracy']:.2%})" if unconfined else "")
        + f" vs in-process on {threads_text(at_site)} {o['local_final_accuracy']:.2%}; load average around "
        f"the part: {format_load(o['load_start'])} → {format_load(o['load_end'])}",
    ]
    if sandbox and unconfined:
        lines.insert(
            3,
            f'- **Sandbox off** (the comparison): the same sites restarted with `[sandbox] mode = "off"` '
            f"(calls in the site process, torch pinned by `OMP_NUM_THREADS={at_site}`; started in "
            f"{unconfined['sites_start_seconds']:.0f} s), the same job under another name, right after the "
            "sandbox-on job (both between the in-process runs before and after)",
        )
    return lines


def _rounds_table(o: dict, summary: dict) -> list[str]:
    """Every round of the HTTP job beside the same round in one process (and in the sandbox-off job)."""
    off = {r["round"]: r["seconds"] for r in o["unconfined"]["http_rounds"]} if "unconfined" in o else None
    header = ["round", "over HTTP (s)", "in one process (s)", "ratio"]
    header += ["sandbox off (s)", "ratio, sandbox off"] if off is not None else []
    header += ["call phase (s)"]
    header += [
        "researcher after calls (s)",
        "CPU at sites (s)",
        "researcher CPU (s)",
        "other processes' CPU (s)",
    ]
    chosen = o["local"][summary["baseline"]]
    rows = []
    for http in o["http_rounds"]:
        local = statistics.median(r["seconds"] for r in chosen if r["round"] == http["round"])
        first = ", first" if http["round"] == 0 else ""
        kind = (
            f"{http['round']} (training{first})" if http["training"] else f"{http['round']} (evaluation only)"
        )
        cells = [kind, f"{http['seconds']:.2f}", f"{local:.2f}", f"{http['seconds'] / local:.2f}×"]
        if off is not None:
            cells += [f"{off[http['round']]:.2f}", f"{off[http['round']] / local:.2f}×"]
        cells += [f"{http['call_phase_seconds']:.2f}", f"{http['seconds'] - http['call_phase_seconds']:.2f}"]
        cells += [
            f"{http[key]:.1f}" for key in ("sites_cpu_seconds", "researcher_cpu_seconds", "other_cpu_seconds")
        ]
        rows.append(cells)
    return table(header, "l" + "r" * (len(header) - 1), rows)


def _ratio_line(summary: dict) -> str:
    """The target's ratio, the cold first round's, and every in-process baseline's."""
    others = "; ".join(
        f"on {threads_text(int(key.rsplit('_', 1)[1]))}: {b['round_seconds']:.2f} s per round "
        f"({', '.join(f'{v:.2f}' for v in b['round_runs'])}), {b['ratio']:.2f}×"
        for key, b in summary["baselines"].items()
    )
    rounds = (
        "warm training round (rounds 1…, the first is cold)"
        if summary["http_warm_rounds"]
        else "training round (only the cold first)"
    )
    label = "Ratio, sandbox on (the target's)" if "unconfined" in summary else "Ratio"
    return (
        f"- **{label}**: median {rounds} {summary['http_round_seconds']:.2f} s over HTTP (rounds: "
        f"{', '.join(f'{v:.2f}' for v in summary['http_round_runs'])}) vs "
        f"{summary['local_round_seconds']:.2f} s in one process on "
        f"{threads_text(summary['baseline_threads'])}: **{summary['ratio']:.2f}×**; the first round (cold: "
        f"the sites load the approved code) {summary['http_first_round_seconds']:.2f} s, "
        f"{summary['first_round_ratio']:.2f}×. "
        f"In-process baselines, {others}: the faster one is the baseline"
    )


def _unconfined_ratio_line(off: dict) -> str:
    """The sandbox-off job's ratio against the same baseline."""
    rounds = "warm training round" if off["http_warm_rounds"] else "training round (only the cold first)"
    return (
        f"- **Ratio, sandbox off**: median {rounds} {off['http_round_seconds']:.2f} s over HTTP (rounds: "
        f"{', '.join(f'{v:.2f}' for v in off['http_round_runs'])}) vs the same baseline "
        f"{off['local_round_seconds']:.2f} s: **{off['ratio']:.2f}×**; the first round "
        f"{off['http_first_round_seconds']:.2f} s, {off['first_round_ratio']:.2f}×; the sites used "
        f"{off['http_sites_user_seconds']:.2f} s user + {off['http_sites_system_seconds']:.2f} s system CPU "
        "per round"
    )


def _sandbox_table(costs: dict, names: list[str], off: dict) -> list[str]:
    """What the sandbox costs: its fixed costs per job (the sites' logs) and its cost per call (on − off)."""
    per_site = ", ".join(
        f"{name} {costs['sites'][name]['spawn_seconds']:.2f} / {costs['sites'][name]['wait_seconds']:.3f} / "
        f"{costs['sites'][name]['setup_seconds']:.3f}"
        for name in names
    )
    rows = [
        (
            "the worker's spawn: a clean interpreter, torch imported, waiting warm (**off the critical "
            "path**: started when the site came up or when the previous job took the spare)",
            f"{costs['spawn_seconds']:.2f}",
            "per job, the site's log (median over sites)",
        ),
        (
            "the job's wait for that warm worker (on the first call's path)",
            f"{costs['wait_seconds']:.3f}",
            "per job, the site's log",
        ),
        (
            "the job's setup: map its inputs, confine itself (Landlock, seccomp, rlimits), compile the code "
            "(on the first call's path)",
            f"{costs['setup_seconds']:.3f}",
            "per job, the site's log",
        ),
        (
            "the first (cold) training round: sandbox on − sandbox off",
            f"{costs['first_round_seconds']:+.2f}",
            "per job, wall time",
        ),
        (
            "**per call**: the median "
            + ("warm training round" if off["http_warm_rounds"] else "training round (only the cold first)")
            + ", sandbox on − sandbox off",
            f"**{costs['per_call_seconds']:+.2f}**",
            f"wall time (the ratio {costs['per_call_ratio_points']:+.2f})",
        ),
        (
            "an evaluation-only call: sandbox on − sandbox off",
            f"{costs['eval_call_seconds']:+.2f}",
            "per call, the researcher's view",
        ),
    ]
    return [
        "What the sandbox costs (seconds; per site, spawn / wait / setup: " + per_site + "):",
        "",
        *table(("what", "seconds", "measured how"), "lrl", rows),
    ]


def _time_table(summary: dict, at_site: int, cores: int) -> list[str]:
    """Where the time of a training round goes: CPU of the sites and the researcher, fixed costs, phases."""
    slowest = max(summary["http_site_seconds"].values())
    baseline = threads_text(summary["baseline_threads"])
    faults = summary["http_sites_minor_faults"] / 1e6
    rows = [
        (
            f"the baseline: the sites' calls one after another in one process ({baseline})",
            f"{summary['local_round_seconds']:.2f}",
            "wall time",
        )
    ]
    same = summary.get("site_threads")
    if same:
        rows.append(
            (
                f"the same calls in one process on {threads_text(at_site)} (CPU)",
                f"{same['private_round_cpu_seconds']:.2f}",
                "CPU time",
            )
        )
    rows += [
        (
            "CPU the sites used: user",
            f"{summary['http_sites_user_seconds']:.2f}",
            "psutil, the site processes"
            + (" and their sandbox workers (reaped ones too)" if "unconfined" in summary else ""),
        ),
        (
            f"CPU the sites used: system ({faults:.2f} M minor page faults)",
            f"{summary['http_sites_system_seconds']:.2f}",
            "psutil, `/proc/PID/stat`",
        ),
        (
            "CPU the researcher used (HTTP client, (de)serialising, FedAvg, checkpoint)",
            f"{summary['http_researcher_cpu_seconds']:.2f}",
            "process time",
        ),
        (
            f"lower bound on the round: all that CPU spread over {cores} cores",
            f"{summary['cpu_bound_seconds']:.2f}",
            "(sites + researcher CPU) ÷ cores",
        ),
        (
            "a call's fixed cost (evaluation-only round over HTTP − in-process: transport, syft's checks, "
            "assets, results)",
            f"{summary['fixed_call_seconds']:.2f}",
            "per call, paid in parallel",
        ),
        (
            f"the call phase (all sites in parallel; slowest site {slowest:.2f})",
            f"{summary['http_call_phase_seconds']:.2f}",
            "wall time",
        ),
        (
            "the researcher after the calls (FedAvg, checkpoint)",
            f"{summary['researcher_after_calls_seconds']:.2f}",
            "wall time",
        ),
        ("**the round over HTTP**", f"**{summary['http_round_seconds']:.2f}**", "wall time"),
    ]
    return table(("what", "seconds", "measured how"), "lrl", rows)


def _reading_line(summary: dict) -> str:
    """What the table says about the sites' CPU against the same calls in one process."""
    same = summary.get("site_threads")
    expected = same["private_round_cpu_seconds"] if same else float("nan")
    return (
        f"- **Reading it**: the sites' user CPU is {summary['http_sites_user_seconds'] / expected:.2f}× what "
        f"the same calls take in one process ({expected:.2f} CPU-seconds); their system CPU "
        f"{summary['http_sites_system_seconds']:.2f} s ({summary['http_sites_minor_faults'] / 1e6:.2f} M "
        "page faults per round). The sites run each approved call once: PySyft 0.9.5 would run it again on "
        "the mock twins (doubling the work; `policies.enforcement` skips that run), and glibc would fault "
        "freed training buffers in again after ingest (`datasite_setup.site.heap`; both fixed at commit "
        "eecba71, measured at 4.8–7.1× before). Other processes took "
        f"{summary['http_other_cpu_seconds']:.1f} CPU-seconds per round"
    )


def _context_lines(o: dict, summary: dict) -> list[str]:
    """One line a context run: its warm round against the baseline, and the sites' CPU."""
    lines = []
    for context, c in zip(o.get("contexts", []), summary.get("contexts", []), strict=True):
        env = ", ".join(f"`{k}={v}`" for k, v in context["env"].items())
        if "policy" in context:  # since the sandbox: the workers' threads come from the policy
            sandbox = ", ".join(context["policy"].splitlines()[1:])
            env += f" and `[sandbox] {sandbox}`"
        warm = "warm (second) training round" if c["http_warm_rounds"] else "(cold, only) training round"
        per_site = ", ".join(f"{name} {seconds:.2f} s" for name, seconds in c["http_site_seconds"].items())
        lines.append(
            f"- **Context: {context['label']}** (not the target: the sites restarted with {env}, a "
            f"{CONTEXT_ROUNDS}-round job of the same configuration, final val accuracy "
            f"{context['http_final_accuracy']:.2%}): the {warm} took {c['http_round_seconds']:.2f} s, "
            f"**{c['ratio']:.2f}×** the baseline; the sites used {c['http_sites_user_seconds']:.1f} s user + "
            f"{c['http_sites_system_seconds']:.1f} s system CPU ({c['http_sites_minor_faults'] / 1e6:.2f} M "
            f"minor faults); per site over HTTP {per_site}; an evaluation-only call "
            f"{c['http_eval_call_seconds']:.2f} s"
        )
    return lines


def overhead_section(results: Any, heading: str) -> list[str]:
    """The report's section on ``results.overhead``, headed ``heading`` (one level below the report's)."""
    s, o = results.settings, results.overhead
    summary, names, ser = o["summary"], o["sites"], o["serialisation"]
    cores = results.machine["usable_cpus"]
    off = summary.get("unconfined")
    site_rows = [
        (name, f"{summary['local_site_seconds'][name]:.2f}", f"{summary['http_site_seconds'][name]:.2f}")
        + ((f"{off['http_site_seconds'][name]:.2f}",) if off else ())
        for name in names
    ]
    site_header: tuple[str, ...] = (
        "site",
        "training call in one process (s)",
        "the same call over HTTP, seen by the researcher (s)",
    )
    if off:
        site_header = (*site_header[:2], "over HTTP, sandbox on (s)", "over HTTP, sandbox off (s)")
    sandbox_lines = (
        [_unconfined_ratio_line(off), "", *_sandbox_table(summary["sandbox"], names, off)] if off else []
    )
    return [
        f"{heading} Overhead: a round over {len(names)} HTTP datasites "
        "vs the same local training in one process",
        "",
        *_overhead_method_lines(s, o, cores),
        "",
        *_rounds_table(o, summary),
        "",
        *table(site_header, "l" + "r" * (len(site_header) - 1), site_rows),
        "",
        _ratio_line(summary),
        *sandbox_lines,
        "",
        "Where the time goes, per training round"
        + (" with the sandbox on" if off else "")
        + " (medians; CPU in CPU-seconds):",
        "",
        *_time_table(summary, o["site_threads"], cores),
        "",
        _reading_line(summary),
        *_context_lines(o, summary),
        "- **Payload** (syft serialisation, in-process): the global weights "
        f"{ser['weights']['bytes'] / 1e3:.0f} kB ({ser['weights']['array_bytes'] / 1e3:.0f} kB of arrays), "
        f"serialise + deserialise {1e3 * ser['weights']['seconds']:.1f} ms; "
        f"a site's output {ser['output']['bytes'] / 1e3:.0f} kB, "
        f"{1e3 * ser['output']['seconds']:.1f} ms: negligible against the round",
    ]
