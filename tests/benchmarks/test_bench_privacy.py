"""Smoke tests of the differential-privacy benchmark: it runs end to end on a tiny budget and writes its report.

No accuracy or timing is asserted: a benchmark's figures belong in its report, not in a test.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from benchmarks import bench_privacy
from benchmarks.harness.reporting import ENTRY_HEADING, record_report
from benchmarks.privacy import mechanisms
from policies.privacy import epsilon_of, noise_multiplier_for, privatize_update


def test_calibration_is_the_sites_own() -> None:
    # The job's limit is rounds + 1: the noise multiplier a site's release hook would use, and the ε its ledger would charge.
    calibration = mechanisms.calibrate(4.0, 1e-5, rounds=5)
    assert calibration["noise_multiplier"] == noise_multiplier_for(4.0, 1e-5, 6)
    assert calibration["epsilon_accounted"] == pytest.approx(
        epsilon_of([calibration["noise_multiplier"]] * 6, 1e-5)
    )
    assert calibration["epsilon_accounted"] <= 4.0 + 0.01


def test_update_norm_is_what_privatize_update_clips() -> None:
    rng = np.random.default_rng(0)
    old = {
        "w": rng.normal(size=(3, 4)).astype(np.float32),
        "b": np.zeros(3, dtype=np.float32),
        "n": np.array(5, dtype=np.int64),
    }
    new = {"w": old["w"] + 2.0, "b": old["b"] + 1.0, "n": np.array(9, dtype=np.int64)}
    norm = mechanisms.update_norm(old, new)
    assert norm == pytest.approx(np.sqrt(12 * 4.0 + 3 * 1.0), rel=1e-6)
    assert mechanisms.float_parameters(old) == 15
    clipped = privatize_update(old, new, max_update_norm=norm / 2, noise_multiplier=0.0)
    assert mechanisms.update_norm(old, clipped) == pytest.approx(norm / 2, rel=1e-5)
    assert clipped["n"] == old["n"]  # integer buffers are not released
    # Equal sizes: the FedAvg of k noisy releases has 1/√k of one release's noise.
    assert mechanisms.noise_to_clip(1.0, [10] * 4, 100) == pytest.approx(2 * np.sqrt(100) / 2)


def test_quick_run_writes_a_report_and_records_it(tmp_path: Path, capsys) -> None:
    report = tmp_path / "report.md"
    work = tmp_path / "work"

    code = bench_privacy.main(["--quick", "--workdir", str(work), "--report", str(report)])

    assert code == 0
    text = report.read_text()
    assert "**Machine**" in text and "opacus" in text and "Load average" in text and "Quick mode" in text
    assert (
        "| IID |" in text
        and "| Dirichlet α=0.5 |" in text
        and "∞ (no DP)" in text
        and "∞ (clip only)" in text
    )
    for epsilon in ("1", "4", "8"):
        assert f"| **{epsilon}** | 1e-05 |" in text
    assert (
        "Test accuracy (%) per ε and mechanism" in text
        and "| scheme | ε | DP-SGD (its settings per ε) | update-level, R = 2 |" in text
    )
    assert "DP-SGD settings" in text and "noise multiplier z (hospitals)" in text
    assert "Context (IID" in text and "Within 5 points of no DP" in text
    assert "| rounds (runs) | scheme | ε | δ | noise multiplier z | clip C |" in capsys.readouterr().out

    data = json.loads(report.with_suffix(".json").read_text())
    runs = data["runs"]
    kinds = [(r["scheme"], r["kind"], r["epsilon"]) for r in runs]

    def dp_sgd(scheme: str) -> list[tuple]:
        return [
            (scheme, "DP-SGD clip only", None),
            (scheme, "DP-SGD", 1.0),
            (scheme, "DP-SGD", 4.0),
            (scheme, "DP-SGD", 8.0),
        ]

    assert kinds == [
        ("iid", "no DP", None), ("iid", "clip only", None), ("iid", "DP", 1.0), ("iid", "DP", 4.0), ("iid", "DP", 8.0), ("iid", "context", 64.0), *dp_sgd("iid"),
        ("dirichlet", "no DP", None), ("dirichlet", "clip only", None), ("dirichlet", "DP", 1.0), ("dirichlet", "DP", 4.0), ("dirichlet", "DP", 8.0), *dp_sgd("dirichlet"),
    ]  # fmt: skip
    for run in runs:
        assert 0 <= run["accuracy"] <= 1 and run["rounds"] == 2 and len(run["train_sizes"]) == 5
        assert run["median_update_norm"] > 0
    assert set(data["clip"]) == {"2|iid", "2|dirichlet"}
    # DP-SGD: each hospital's z is the site's own calibration for its n, and meets ε over the job's R + 1 runs
    for key, hospitals in data["dp_sgd_calibration"].items():
        scheme, _, epsilon = key.split("|")
        for hospital in hospitals:
            profile = mechanisms.dp_sgd_profile(data["settings"]["dp_sgd_profiles"], float(epsilon))
            assert profile["rounds"] == 2  # --quick
            expected = mechanisms.dp_sgd_privacy(
                hospital["n"],
                float(epsilon),
                1e-5,
                batch_size=profile["batch_size"],
                local_epochs=profile["local_epochs"],
                rounds=2,
                max_grad_norm=profile["clip"],
            )
            assert hospital == pytest.approx(expected) and hospital["epsilon_accounted"] <= float(epsilon)
    for run in runs:
        if run["kind"].startswith("DP-SGD"):
            assert run["clip"] == 1.0 and 0 <= run["val_accuracy"] <= 1
    assert data["summary"]["2|iid|DP-SGD|4"]["gap"][0] == pytest.approx(
        data["summary"]["2|iid|no DP|"]["accuracy"][0] - data["summary"]["2|iid|DP-SGD|4"]["accuracy"][0]
    )
    # C is the no-DP run's median update norm, to two significant digits; every update-level DP run of the scheme uses it.
    for scheme in ("iid", "dirichlet"):
        plain = next(r for r in runs if r["scheme"] == scheme and r["kind"] == "no DP")
        assert data["clip"][f"2|{scheme}"]["C"] == float(f"{plain['median_update_norm']:.2g}")
        assert {
            r["clip"] for r in runs if r["scheme"] == scheme and r["kind"] in ("clip only", "DP", "context")
        } == {data["clip"][f"2|{scheme}"]["C"]}
    # More privacy, more noise: z falls as ε grows.
    multipliers = [data["calibration"][f"2|{e}"]["noise_multiplier"] for e in ("1", "4", "8", "64")]
    assert multipliers == sorted(multipliers, reverse=True)
    entry = data["summary"]["2|iid|DP|8"]
    plain = data["summary"]["2|iid|no DP|"]
    assert entry["gap"][0] == pytest.approx(plain["accuracy"][0] - entry["accuracy"][0])

    # --record appends a "Differential privacy" section, then inserts newer reports (one heading level down) at its top, keeping everything else
    # (report.record_report).
    results_file = tmp_path / "RESULTS.md"
    results = bench_privacy.Results(**{k: tuple(v) if k.startswith("load") else v for k, v in data.items()})
    results_file.write_text(
        "# Benchmark results\n\nintro\n\n<!-- another benchmark's marker -->\n\n## another benchmark's entry\n"
    )
    record_report(
        bench_privacy.render_report(results, heading=ENTRY_HEADING), bench_privacy.SECTION, results_file
    )
    first = results_file.read_text()
    assert (
        first.index("## another benchmark's entry")
        < first.index(bench_privacy.SECTION.heading)
        < first.index(bench_privacy.SECTION.marker)
    )
    results.started = "newer"
    record_report(
        bench_privacy.render_report(results, heading=ENTRY_HEADING), bench_privacy.SECTION, results_file
    )
    second = results_file.read_text()
    assert (
        second.count(bench_privacy.SECTION.heading + "\n") == 1
        and second.count("### Differential privacy: FedAvg accuracy") == 2
    )
    assert (
        second.index(bench_privacy.SECTION.marker)
        < second.index("— newer")
        < second.index(f"— {data['started']}")
    )
    assert second.startswith(first.split(bench_privacy.SECTION.marker)[0])


def test_arguments_are_checked() -> None:
    with pytest.raises(SystemExit):
        bench_privacy.parse_args(["--rounds", "0"])
    with pytest.raises(SystemExit):
        bench_privacy.parse_args(["--epsilons", "-1"])
    with pytest.raises(SystemExit):
        bench_privacy.parse_args(["--size", "10"])
    for wrong in (
        '{"default": {"clip": 0}}',
        '{"1": {"batch_size": 0}}',
        '{"1": {"rounds": 2.5}}',
        '{"1": {"width": 8}}',
        "[1]",
        "{",
    ):
        with pytest.raises(SystemExit):
            bench_privacy.parse_args(["--dp-sgd-settings", wrong])
    settings = bench_privacy.parse_args(["--context-epsilons", "none", "--iid-only", "--record"])
    assert (
        settings.context_epsilons == []
        and settings.schemes == ["iid"]
        and settings.rounds == [20, 5]
        and settings.wait_load == 2.0
    )
    assert settings.dp_sgd and settings.dp_sgd_profiles == bench_privacy.DP_SGD_PROFILES
    merged = bench_privacy.parse_args(["--dp-sgd-settings", '{"1": {"rounds": 7}}']).dp_sgd_profiles
    assert (
        merged["1"] == {**bench_privacy.DP_SGD_PROFILES["1"], "rounds": 7}
        and mechanisms.dp_sgd_profile(merged, 1.0)["rounds"] == 7
    )
    assert (
        mechanisms.dp_sgd_profile(merged, 4.0) == merged["default"] == mechanisms.dp_sgd_profile(merged, None)
    )
    assert not bench_privacy.parse_args(["--no-dp-sgd"]).dp_sgd
