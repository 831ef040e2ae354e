"""``bench_privacy``'s report below its opening lines: what was measured, the tables, the observations."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

from benchmarks.harness import pm, table
from benchmarks.privacy.mechanisms import dp_sgd_profile

SCHEME_LABELS = {"iid": "IID", "dirichlet": "Dirichlet"}
# the tables' columns
DP_SGD_COLUMNS = (
    "scheme, ε, δ, rounds (runs), local epochs, batch, lr, clip C, sample rate q, steps per call, "
    "noise multiplier z (hospitals), ε accounted (max), noise / C per step, test accuracy (%), per seed, "
    "val accuracy (%), gap to no DP (points)"
).split(", ")
UPDATE_COLUMNS = (
    "rounds (runs), scheme, ε, δ, noise multiplier z, clip C, ε accounted, noise / C per round, "
    "test accuracy (%), per seed, gap to no DP (points)"
).split(", ")
CONTEXT_COLUMNS = (
    "rounds (runs), ε, noise multiplier z, ε accounted, noise / C per round, test accuracy (%), per seed, "
    "gap to no DP (points)"
).split(", ")
# How DP_SGD_PROFILES were chosen (the report quotes it)
DP_SGD_TUNING = (
    "chosen on seed 0's IID partition only, by the federated **val** accuracy of the final model (the "
    "hospitals' val splits, what a researcher sees; never the test set), one noise draw per setting. At "
    "ε = 4, among 76 settings: SGD at C = 1 over rounds {10, 20, 30, 40, 60} × local epochs {1, 2} × "
    "batch {32, 64, 128, all ≈ 230} × lr {0.25 … 2}; momentum 0.9 (lr 0.05–0.2) and 0.5 (lr 0.25); C ∈ "
    "{0.1, 0.3, 0.5, 3} with lr scaled; Adam (lr 0.002–0.01): best val 84.4 % (the default settings; a "
    "dozen others within 3 points; Adam and momentum 0.9 worse). At ε = 8, 5 variants of it (batch "
    "32/64, lr 0.25–1, momentum 0.5): all within 2 points, the default kept. At ε = 1 the default "
    "learns nothing (z ≈ 15); among 45 settings (rounds {5 … 40} × batch {64, 128, all} × lr {0.1 … 2}, "
    "2 local epochs, momentum 0.5) full batches (q = 1) with fewer rounds were best: val 51 %, single "
    "draws varying by ±10 points. The tuning runs are not charged to any privacy budget here; at real "
    "sites they would be"
)


def _entry(results: Any, rounds: int, scheme: str, kind: str, epsilon: float | None = None) -> dict | None:
    return results.summary.get(f"{rounds}|{scheme}|{kind}|{'' if epsilon is None else f'{epsilon:g}'}")


def _scheme_label(s: dict, scheme: str) -> str:
    return SCHEME_LABELS[scheme] + (f" α={s['alpha']:g}" if scheme == "dirichlet" else "")


def _per_seed(entry: dict) -> str:
    return ", ".join(f"{a:.1f}" for a in entry["per_seed"])


def _titled(title: str, header: Sequence[str], alignment: str, rows: list) -> list[str]:
    return [title, "", *table(header, alignment, rows)]


def _span(values: Sequence[float], spec: str) -> str:
    low, high = min(values), max(values)
    return f"{low:{spec}}" if low == high else f"{low:{spec}}–{high:{spec}}"


# --- what was measured -------------------------------------------------------------------------------------


def _profile_text(profile: dict) -> str:
    return (
        f"R = {profile['rounds']}, {profile['local_epochs']} local epoch(s), batch {profile['batch_size']}, "
        f"lr {profile['lr']:g}, momentum {profile['momentum']:g}, C = {profile['clip']:g}"
    )


def _dp_sgd_bullets(s: dict) -> list[str]:
    profiles = "; ".join(
        f"{'other ε and clip only' if key == 'default' else f'ε = {key}'}: **{_profile_text(value)}**"
        for key, value in s["dp_sgd_profiles"].items()
    )
    return [
        '- **DP-SGD** (`mechanism = "dp-sgd"`, the sites\' default), as a site runs it: every training call '
        "of the generated site function gets the `privacy` settings a site's release hook hands it "
        "(`policies.enforcement`) and trains with `policies.dp_sgd.train_private`: Poisson sampling at "
        "q = batch / n, local epochs · ⌈n / batch⌉ steps per call, per-example gradients clipped to L2 norm "
        "C, N(0, (zC)²) noise on their sum, divided by q·n; z = `dp_sgd_noise_multiplier(ε, δ, q, steps per "
        "call × (R + 1))` per hospital (its own n), so that all R + 1 approved runs meet (ε, δ); *ε "
        "accounted* = `epsilon_of([(z, q, steps × (R + 1))], δ)`, the largest over the hospitals. The "
        "sampling and noise come from a seeded generator instead of the site's `secrets` one. Buffers are "
        "released at their global values; the model has none",
        f"- **DP-SGD settings** (SGD; C = max_grad_norm): {profiles}; {DP_SGD_TUNING}. *DP-SGD clip only* is "
        "the default settings with z = 0. *noise / C per step*: z·√parameters / (q·n), the expected L2 norm "
        "of one step's noise in a hospital's averaged gradient, in units of C (mean over hospitals)",
    ]


def method_lines(results: Any) -> list[str]:
    """The bullets that say what was measured and how.

    Parameters
    ----------
    results : bench_privacy.Results
        The run's results.

    Returns
    -------
    list[str]
        The bullets.
    """
    s, first = results.settings, results.runs[0]
    schemes = " and ".join(
        f"`--scheme {x}`" + (f" `--alpha {s['alpha']:g}`" if x == "dirichlet" else "") for x in s["schemes"]
    )
    clips = []
    for key, value in results.clip.items():
        rounds, scheme = key.split("|")
        clips.append(f"R = {rounds} {SCHEME_LABELS[scheme]}: **C = {value['C']:g}** ({value['source']})")
    return [
        "- **Data** (`bench_fedavg`'s protocol and helpers): scikit-learn's 1,797 digits; per seed a "
        f"held-out stratified test set of {s['test_fraction']:.0%} ({first['test_samples']} images; the "
        f"largest class is {100 * first['majority_share']:.1f} % of it: chance level) and a training pool "
        f"converted with `fedimg convert` into {s['hospitals']} hospitals, {schemes}, {s['size']} px "
        f"grayscale, val fraction {s['val_fraction']:g}",
        f"- **Model and training**: `SmallCNN(width={s['width']})` ({results.parameters:,} float "
        f"parameters), SGD lr {s['lr']:g} momentum {s['momentum']:g}, batch {s['batch_size']}, "
        f"{s['local_epochs']} local epoch(s) per round; FedAvg calls the generated site function (the code "
        "the sites run) for every hospital in this process, then `researcher.aggregation.fedavg`; test "
        "accuracy of the final model",
        *(_dp_sgd_bullets(s) if s.get("dp_sgd") else []),
        '- **Update-level DP** (`mechanism = "update"`), as a site\'s release hook applies it '
        "(`policies.enforcement`): per job of R rounds, z = `noise_multiplier_for(ε, δ, R + 1)` (R training "
        "calls + the final evaluation are the runs the owner approves); every training call's weights go "
        "through `privatize_update(global, new, max_update_norm=C, noise_multiplier=z)` (the update clipped "
        "to L2 norm C, then N(0, (2zC)²) on every float parameter; the noise is drawn from a seeded "
        f"generator instead of the site's `secrets` one) before FedAvg; δ = {s['delta']:g}. *ε accounted* "
        "= `epsilon_of([z] × (R + 1), δ)`, the RDP accountant a site's ledger charges",
        "- **Clipping norm C**, per rounds setting and scheme: the median unclipped update norm of seed 0's "
        f"no-DP run, to two significant digits, kept for the other seeds (as a site's policy would be): "
        f"{'; '.join(clips)}. "
        "Once an update is clipped, the noise grows with C as fast as the signal does, so a larger C only "
        "adds noise; a smaller one only throws signal away. *Clip only* is the same C with z = 0",
        "- **noise / C** (update-level): the expected L2 norm of the noise in one round's averaged update "
        "(sample-weighted over the hospitals) divided by C, the largest norm a clipped update can have: "
        "2z·√(parameters · Σnᵢ²) / Σnᵢ",
        f"- **Seeds**: {s['seeds']} (each redraws the test split, the partition, the initial weights and the "
        "noise); mean ± standard deviation; gap = no DP − with DP, paired by seed, in points (positive: DP "
        "is worse); DP-SGD's gap is to the no-DP run of the most rounds",
    ]


# --- the tables --------------------------------------------------------------------------------------------


def headline_table(results: Any, heading: str) -> list[str]:
    """Test accuracy per ε, one column per mechanism (and rounds setting)."""
    s = results.settings
    columns = [("DP-SGD", None)] + [("update", rounds) for rounds in s["rounds"]]
    profiles = s["dp_sgd_profiles"]

    def accuracy(
        kind: str, rounds: int | None, scheme: str, dp_sgd_kind: str, update_kind: str, epsilon
    ) -> str:
        if kind == "DP-SGD":
            rounds, chosen = dp_sgd_profile(profiles, epsilon)["rounds"], dp_sgd_kind
        else:
            chosen = update_kind
        return pm(_entry(results, rounds, scheme, chosen, epsilon)["accuracy"])

    header = ["scheme", "ε"] + [
        "DP-SGD (its settings per ε)" if kind == "DP-SGD" else f"update-level, R = {rounds}"
        for kind, rounds in columns
    ]
    rows = []
    for scheme in s["schemes"]:
        label = _scheme_label(s, scheme)
        plain = [
            pm(_entry(results, rounds, scheme, "no DP")["accuracy"]) if kind == "update" else "—"
            for kind, rounds in columns
        ]
        rows.append([label, "∞ (no DP)", *plain])
        clipped = [
            accuracy(kind, rounds, scheme, "DP-SGD clip only", "clip only", None) for kind, rounds in columns
        ]
        rows.append([label, "∞ (clip only)", *clipped])
        for epsilon in sorted(s["epsilons"], reverse=True):
            cells = [accuracy(kind, rounds, scheme, "DP-SGD", "DP", epsilon) for kind, rounds in columns]
            rows.append([label, f"**{epsilon:g}**", f"**{cells[0]}**", *cells[1:]])
    return [
        *_titled(
            f"{heading}# Test accuracy (%) per ε and mechanism", header, "lr" + "r" * len(columns), rows
        ),
        "",
    ]


def dp_sgd_table(results: Any, heading: str) -> list[str]:
    """Per scheme and ε: DP-SGD's settings, the hospitals' q, steps and z, ε accounted, accuracy."""
    s = results.settings
    rows = []
    for scheme in s["schemes"]:
        label = _scheme_label(s, scheme)
        for epsilon in [None, *sorted(s["epsilons"], reverse=True)]:
            profile = dp_sgd_profile(s["dp_sgd_profiles"], epsilon)
            settings = [f"{profile['rounds']} ({profile['rounds'] + 1})", profile["local_epochs"]]
            settings += [profile["batch_size"], f"{profile['lr']:g}", f"{profile['clip']:g}"]
            if epsilon is None:
                entry = _entry(results, profile["rounds"], scheme, "DP-SGD clip only")
                cells = [label, "∞ (clip only)", "—", *settings, "—", "—", 0, "—", 0, pm(entry["accuracy"])]
            else:
                entry = _entry(results, profile["rounds"], scheme, "DP-SGD", epsilon)
                hospitals = [
                    p
                    for key, value in results.dp_sgd_calibration.items()
                    if key.startswith(f"{scheme}|") and key.endswith(f"|{epsilon:g}")
                    for p in value
                ]
                cells = [label, f"**{epsilon:g}**", f"{s['delta']:g}", *settings]
                cells += [_span([p["sample_rate"] for p in hospitals], ".3f")]
                cells += [_span([p["steps"] for p in hospitals], "d")]
                cells += [_span([p["noise_multiplier"] for p in hospitals], ".3f")]
                cells += [
                    f"{max(p['epsilon_accounted'] for p in hospitals):.2f}",
                    f"{entry['noise_to_clip']:.1f}",
                ]
                cells += [f"**{pm(entry['accuracy'])}**"]
            rows.append([*cells, _per_seed(entry), pm(entry["val_accuracy"]), pm(entry["gap"])])
    return [
        *_titled(f'{heading}# DP-SGD (`mechanism = "dp-sgd"`)', DP_SGD_COLUMNS, "lrrrrrrrrrrrrrlrr", rows),
        "",
    ]


def update_level_table(results: Any, heading: str) -> list[str]:
    """Per rounds setting, scheme and ε: z, C, ε accounted, noise / C, accuracy and the gap to no DP."""
    s = results.settings
    rows = []
    for rounds in s["rounds"]:
        for scheme in s["schemes"]:
            clip = results.clip[f"{rounds}|{scheme}"]["C"]
            prefix = [f"{rounds} ({rounds + 1})", _scheme_label(s, scheme)]
            plain = _entry(results, rounds, scheme, "no DP")
            rows.append(
                [*prefix, "∞ (no DP)", "—", "—", "—", "—", "—", pm(plain["accuracy"]), _per_seed(plain), "—"]
            )
            clipped = _entry(results, rounds, scheme, "clip only")
            rows.append(
                [*prefix, "∞ (clip only)", "—", 0, f"{clip:g}", "—", 0]
                + [pm(clipped["accuracy"]), _per_seed(clipped), pm(clipped["gap"])]
            )
            for epsilon in sorted(s["epsilons"], reverse=True):
                entry = _entry(results, rounds, scheme, "DP", epsilon)
                cal = results.calibration[f"{rounds}|{epsilon:g}"]
                rows.append(
                    [
                        *prefix,
                        f"**{epsilon:g}**",
                        f"{s['delta']:g}",
                        f"{cal['noise_multiplier']:.3f}",
                        f"{clip:g}",
                    ]
                    + [f"{cal['epsilon_accounted']:.2f}", f"{entry['noise_to_clip']:.0f}"]
                    + [f"**{pm(entry['accuracy'])}**", _per_seed(entry), pm(entry["gap"])]
                )
    return _titled(
        f'{heading}# Update-level DP (`mechanism = "update"`)', UPDATE_COLUMNS, "rlrrrrrrrlr", rows
    )


def context_table(results: Any) -> list[str]:
    """IID at the context ε: how large ε must be before accuracy comes back (nothing without them)."""
    s = results.settings
    if not (s["context_epsilons"] and "iid" in s["schemes"]):
        return []
    rows = []
    for rounds in s["rounds"]:
        for epsilon in s["context_epsilons"]:
            entry = _entry(results, rounds, "iid", "context", epsilon)
            cal = results.calibration[f"{rounds}|{epsilon:g}"]
            z = f"{cal['noise_multiplier']:.4f}{'¹' if cal['loose'] else ''}"
            rows.append(
                [f"{rounds} ({rounds + 1})", f"{epsilon:g}", z, f"{cal['epsilon_accounted']:.1f}"]
                + [f"{entry['noise_to_clip']:.1f}", pm(entry["accuracy"]), _per_seed(entry), pm(entry["gap"])]
            )
    lines = [
        "",
        "Context (IID; not a privacy anyone would sign off): how large ε must be before accuracy comes back, "
        "with the IID C of the same rounds",
        "",
        *table(CONTEXT_COLUMNS, "rrrrrrlr", rows),
    ]
    if any(results.calibration[f"{r}|{e:g}"]["loose"] for r in s["rounds"] for e in s["context_epsilons"]):
        lines += [
            "",
            "¹ Opacus's best RDP order is its smallest one here: the bound is loose, a smaller z would meet "
            "the same ε.",
        ]
    return lines


# --- what it shows -----------------------------------------------------------------------------------------


def _norms_line(results: Any) -> str:
    s = results.settings
    norms = []
    for rounds in s["rounds"]:
        for scheme in s["schemes"]:
            plain = _entry(results, rounds, scheme, "no DP")
            dp = [_entry(results, rounds, scheme, "DP", e) for e in s["epsilons"]]
            shares = sorted({round(100 * entry["clipped_share"]) for entry in dp})
            dp_norm = statistics.median(entry["median_update_norm"] for entry in dp)
            clip_only = 100 * _entry(results, rounds, scheme, "clip only")["clipped_share"]
            dp_shares = "–".join(map(str, shares[:: max(len(shares) - 1, 1)]))
            norms.append(
                f"R = {rounds} {SCHEME_LABELS[scheme]}: median unclipped norm "
                f"{plain['median_update_norm']:.2f} without DP; {clip_only:.0f} % of updates clipped with "
                f"clipping only, {dp_shares} % with DP (median norm {dp_norm:.3g})"
            )
    return (
        "- **Update norms**: "
        + "; ".join(norms)
        + ". With DP, every update after the first round starts from a noisy global model far from any good "
        "one, so it is large and clipped (first-round updates start from the clean initial weights)"
    )


def observation_lines(results: Any) -> list[str]:
    """What the figures show: update norms, the best of each mechanism, where accuracy comes back, time."""
    s = results.settings
    best = max((e for e in results.summary.values() if e["kind"] == "DP"), key=lambda e: e["accuracy"][0])
    chance = 100 * results.runs[0]["majority_share"]
    lines = [
        _norms_line(results),
        f"- **Best update-level DP at ε ≤ {max(s['epsilons']):g}**: {pm(best['accuracy'])} % (R = "
        f"{best['rounds']}, {SCHEME_LABELS[best['scheme']]}, ε = {best['epsilon']:g}); "
        f"chance is {chance:.1f} %",
    ]
    if s["context_epsilons"] and "iid" in s["schemes"]:
        back = []
        for rounds in s["rounds"]:
            gaps = {e: _entry(results, rounds, "iid", "context", e)["gap"][0] for e in s["context_epsilons"]}
            within = [e for e, gap in gaps.items() if gap <= 5.0]
            back.append(
                f"R = {rounds}: "
                + (f"ε = {min(within):g}" if within else f"not even at ε = {max(s['context_epsilons']):g}")
            )
        lines.append("- **Within 5 points of no DP (IID)**: " + "; ".join(back))
    if s.get("dp_sgd"):
        dp_sgd = [e for e in results.summary.values() if e["kind"] == "DP-SGD"]
        best_sgd = max(dp_sgd, key=lambda e: e["accuracy"][0])
        worst_sgd = min(dp_sgd, key=lambda e: e["accuracy"][0])
        lines.append(
            f"- **DP-SGD**: from {pm(worst_sgd['accuracy'])} % ({SCHEME_LABELS[worst_sgd['scheme']]}, "
            f"ε = {worst_sgd['epsilon']:g}) to {pm(best_sgd['accuracy'])} % "
            f"({SCHEME_LABELS[best_sgd['scheme']]}, ε = {best_sgd['epsilon']:g}), where the update-level "
            f"mechanism reaches at most {pm(best['accuracy'])} %: per-example clipping bounds one example's "
            "influence on each step, and Poisson subsampling amplifies the privacy of every step, so far "
            "less noise per step buys the same ε"
        )
    lines.append(
        f"- **Time**: {len(results.runs)} FedAvg runs in {results.seconds:.0f} s on one torch thread"
    )
    return lines


def body_lines(results: Any, heading: str) -> list[str]:
    """Everything below the report's opening lines.

    Parameters
    ----------
    results : bench_privacy.Results
        The run's results.
    heading : str
        The report's heading marks (its sections go one level below).

    Returns
    -------
    list[str]
        The lines.
    """
    dp_sgd = results.settings.get("dp_sgd")
    return [
        *method_lines(results),
        "",
        *(headline_table(results, heading) if dp_sgd else []),
        *(dp_sgd_table(results, heading) if dp_sgd else []),
        *update_level_table(results, heading),
        *context_table(results),
        "",
        *observation_lines(results),
    ]
