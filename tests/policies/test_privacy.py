"""Differential privacy: calibration against Opacus's RDP accountant (update-level and DP-SGD), clipping and noise of
updates, the per-researcher ledger (and its migration from bare noise multipliers)."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import numpy as np
import pytest

from policies.privacy import (
    BudgetExceeded,
    PrivacyLedger,
    dp_sgd_noise_multiplier,
    epsilon_of,
    noise_multiplier_for,
    privatize_update,
)

DELTA = 1e-5
pytestmark = pytest.mark.filterwarnings(
    "ignore:Optimal order is the largest alpha"
)  # Opacus: the bound is conservative there


@pytest.mark.parametrize("epsilon, releases", [(1.0, 1), (4.0, 5), (2.0, 11)])
def test_noise_multiplier_meets_the_target(epsilon: float, releases: int) -> None:
    z = noise_multiplier_for(epsilon, DELTA, releases)
    spent = epsilon_of([z] * releases, DELTA)
    assert spent <= epsilon
    assert spent >= 0.95 * epsilon  # not needlessly noisy


def test_more_releases_or_a_smaller_epsilon_need_more_noise() -> None:
    by_releases = [noise_multiplier_for(4.0, DELTA, r) for r in (1, 3, 10)]
    assert by_releases == sorted(by_releases) and by_releases[0] < by_releases[-1]
    assert noise_multiplier_for(1.0, DELTA, 3) > noise_multiplier_for(4.0, DELTA, 3)


def test_epsilon_of_nothing_is_zero_and_grows_with_releases() -> None:
    assert epsilon_of([], DELTA) == 0.0
    one, two = epsilon_of([2.0], DELTA), epsilon_of([2.0, 2.0], DELTA)
    assert 0 < one < two


@pytest.mark.parametrize(
    "epsilon, sample_rate, steps", [(1.0, 64 / 230, 8 * 21), (4.0, 0.1, 500), (8.0, 0.5, 40)]
)
def test_dp_sgd_noise_multiplier_meets_the_target(epsilon: float, sample_rate: float, steps: int) -> None:
    z = dp_sgd_noise_multiplier(epsilon, DELTA, sample_rate, steps)
    spent = epsilon_of([(z, sample_rate, steps)], DELTA)
    assert 0.95 * epsilon <= spent <= epsilon


def test_subsampling_needs_less_noise_than_full_batch() -> None:
    assert dp_sgd_noise_multiplier(4.0, DELTA, 0.1, 100) < dp_sgd_noise_multiplier(4.0, DELTA, 1.0, 100)


def test_accounting_is_opacus_stepping_its_accountant() -> None:
    from opacus.accountants import RDPAccountant

    accountant = RDPAccountant()
    for z, q, steps in [(1.1, 0.2, 30), (3.0, 1.0, 1), (1.1, 0.2, 30)]:
        for _ in range(steps):
            accountant.step(noise_multiplier=z, sample_rate=q)
    ours = epsilon_of([(1.1, 0.2, 30), 3.0, (1.1, 0.2, 30)], DELTA)  # a bare number is one full-batch release
    assert ours == pytest.approx(accountant.get_epsilon(DELTA), rel=1e-12)


@pytest.mark.parametrize(
    "arguments",
    [
        (0.0, DELTA, 0.1, 10),
        (1.0, 1.0, 0.1, 10),
        (1.0, DELTA, 0.0, 10),
        (1.0, DELTA, 0.1, 0),
        (1.0, DELTA, 0.1, 2.5),
    ],
)
def test_dp_sgd_calibration_validates(arguments: tuple) -> None:
    with pytest.raises(ValueError, match="need epsilon > 0"):
        dp_sgd_noise_multiplier(*arguments)


def weights(rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {
        "conv.weight": rng.normal(size=(8, 1, 3, 3)),
        "conv.bias": rng.normal(size=8),
        "bn.num_batches_tracked": np.array(7, dtype=np.int64),
        "counts": np.array([1, 2, 3], dtype=np.int32),
    }


def update_norm(before: dict, after: dict) -> float:
    return float(
        np.sqrt(
            sum(float(((after[k] - before[k]) ** 2).sum()) for k in before if before[k].dtype.kind == "f")
        )
    )


def test_large_update_is_clipped_to_exactly_the_norm() -> None:
    rng = np.random.default_rng(0)
    old = weights(rng)
    new = {k: (v + 5 * rng.normal(size=v.shape) if v.dtype.kind == "f" else v + 100) for k, v in old.items()}
    assert update_norm(old, new) > 10
    released = privatize_update(old, new, max_update_norm=1.5, noise_multiplier=0.0)
    assert update_norm(old, released) == pytest.approx(1.5, rel=1e-12)
    # the direction of the update is kept: clipping only scales it
    direction = (new["conv.weight"] - old["conv.weight"]) / (released["conv.weight"] - old["conv.weight"])
    assert np.allclose(direction, direction.flat[0])


def test_small_update_is_left_alone_without_noise() -> None:
    rng = np.random.default_rng(1)
    old = weights(rng)
    new = {k: (v + 0.01 * rng.normal(size=v.shape) if v.dtype.kind == "f" else v) for k, v in old.items()}
    released = privatize_update(old, new, max_update_norm=10.0, noise_multiplier=0.0)
    for name in ("conv.weight", "conv.bias"):
        np.testing.assert_allclose(released[name], new[name], rtol=0, atol=1e-12)


def test_float32_weights_stay_float32_and_clipped() -> None:
    rng = np.random.default_rng(2)
    old = {"w": rng.normal(size=1000).astype(np.float32)}
    new = {"w": (old["w"] + 3).astype(np.float32)}
    released = privatize_update(old, new, max_update_norm=1.0, noise_multiplier=0.0)
    assert released["w"].dtype == np.float32
    assert update_norm(
        {"w": old["w"].astype(np.float64)}, {"w": released["w"].astype(np.float64)}
    ) == pytest.approx(1.0, rel=1e-5)


def test_integer_buffers_are_not_released() -> None:
    rng = np.random.default_rng(3)
    old = weights(rng)
    new = {k: (v if v.dtype.kind == "f" else v + 1000) for k, v in old.items()}
    released = privatize_update(
        old, new, max_update_norm=1.0, noise_multiplier=1.0, rng=np.random.default_rng(4)
    )
    for name in ("bn.num_batches_tracked", "counts"):
        assert released[name].dtype == old[name].dtype
        np.testing.assert_array_equal(released[name], old[name])
    assert released["counts"] is not old["counts"]  # a copy, not the caller's array
    assert list(released) == list(new)


@pytest.mark.parametrize("z, clip", [(0.5, 1.0), (2.0, 0.25), (1.3, 3.0)])
def test_noise_std_is_z_times_twice_the_clip(z: float, clip: float) -> None:
    size = 200_000
    old = {"w": np.zeros(size)}
    released = privatize_update(
        old, {"w": np.zeros(size)}, max_update_norm=clip, noise_multiplier=z, rng=np.random.default_rng(5)
    )
    noise = released["w"]
    assert abs(noise.mean()) < 5 * z * 2 * clip / np.sqrt(size)
    assert noise.std() == pytest.approx(z * 2 * clip, rel=0.01)  # std error of the std is ~0.16% here


def test_noise_is_added_after_clipping() -> None:
    size = 100_000
    old = {"w": np.zeros(size)}
    new = {"w": np.full(size, 10.0)}  # norm ~3162, clipped to 1: each entry 1/sqrt(size)
    released = privatize_update(
        old, new, max_update_norm=1.0, noise_multiplier=0.5, rng=np.random.default_rng(6)
    )
    assert released["w"].mean() == pytest.approx(1 / np.sqrt(size), abs=5 * 1.0 / np.sqrt(size))
    assert released["w"].std() == pytest.approx(1.0, rel=0.02)


def test_seeded_noise_is_reproducible_and_unseeded_is_not() -> None:
    old, new = {"w": np.zeros(50)}, {"w": np.ones(50)}
    a = privatize_update(old, new, max_update_norm=1.0, noise_multiplier=1.0, rng=np.random.default_rng(7))
    b = privatize_update(old, new, max_update_norm=1.0, noise_multiplier=1.0, rng=np.random.default_rng(7))
    np.testing.assert_array_equal(a["w"], b["w"])
    c = privatize_update(old, new, max_update_norm=1.0, noise_multiplier=1.0)
    d = privatize_update(old, new, max_update_norm=1.0, noise_multiplier=1.0)
    assert not np.array_equal(c["w"], d["w"])


Z = 3.0  # one release at z=3 costs ~1.5 epsilon at delta 1e-5


def affordable(budget: float) -> int:
    count = 0
    while epsilon_of([Z] * (count + 1), DELTA) <= budget:
        count += 1
    return count


def test_ledger_charges_until_the_budget_then_refuses_without_recording(tmp_path: Path) -> None:
    budget = 4.0
    expected = affordable(budget)
    assert expected >= 2
    ledger = PrivacyLedger(tmp_path / "state" / "privacy-ledger.json", DELTA)
    spent = [ledger.charge("ada", Z, budget) for _ in range(expected)]
    assert spent == sorted(spent) and spent[-1] <= budget
    assert spent[-1] == pytest.approx(epsilon_of([Z] * expected, DELTA))
    with pytest.raises(BudgetExceeded, match=r"above the budget 4\.0"):
        ledger.charge("ada", Z, budget)
    assert (
        json.loads(ledger.path.read_text())["ada"] == [[Z, 1.0, 1]] * expected
    )  # the refused release is not recorded
    assert ledger.spent("ada") == pytest.approx(spent[-1])
    with pytest.raises(BudgetExceeded):
        ledger.charge("ada", Z, budget)
    # the same release fits a larger budget
    assert ledger.charge("ada", Z, budget * 10) > spent[-1]


def test_ledger_persists_across_instances(tmp_path: Path) -> None:
    path = tmp_path / "privacy-ledger.json"
    first = PrivacyLedger(path, DELTA).charge("ada", Z, 100.0)
    again = PrivacyLedger(path, DELTA)
    assert again.spent("ada") == pytest.approx(first)
    second = again.charge("ada", Z, 100.0)
    assert PrivacyLedger(path, DELTA).spent("ada") == pytest.approx(second) and second > first
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_ledger_is_separate_per_researcher(tmp_path: Path) -> None:
    ledger = PrivacyLedger(tmp_path / "privacy-ledger.json", DELTA)
    budget = epsilon_of([Z], DELTA) + 1e-6  # room for exactly one release each
    ledger.charge("ada", Z, budget)
    with pytest.raises(BudgetExceeded):
        ledger.charge("ada", Z, budget)
    assert ledger.spent("grace") == 0.0
    ledger.charge("grace", Z, budget)
    assert ledger.spent("ada") == pytest.approx(ledger.spent("grace"))
    assert set(json.loads(ledger.path.read_text())) == {"ada", "grace"}


def test_ledger_charges_dp_sgd_releases_as_steps_at_a_sample_rate(tmp_path: Path) -> None:
    ledger = PrivacyLedger(tmp_path / "privacy-ledger.json", DELTA)
    first = ledger.charge("ada", 1.2, 100.0, sample_rate=0.25, steps=16)
    second = ledger.charge("ada", 1.2, 100.0, sample_rate=0.25, steps=16)
    assert first == pytest.approx(epsilon_of([(1.2, 0.25, 16)], DELTA))
    assert second == pytest.approx(epsilon_of([(1.2, 0.25, 32)], DELTA))
    assert json.loads(ledger.path.read_text())["ada"] == [[1.2, 0.25, 16], [1.2, 0.25, 16]]
    with pytest.raises(BudgetExceeded, match="spent so far"):
        ledger.charge("ada", 0.5, second + 0.01, sample_rate=0.25, steps=16)


def test_a_ledger_of_bare_noise_multipliers_is_read_as_full_batch_releases_and_migrated(
    tmp_path: Path,
) -> None:
    path = tmp_path / "privacy-ledger.json"
    path.write_text(json.dumps({"ada": [Z, Z], "grace": [Z]}))  # the format before DP-SGD
    ledger = PrivacyLedger(path, DELTA)
    assert ledger.spent("ada") == pytest.approx(epsilon_of([Z, Z], DELTA))
    after = ledger.charge("ada", 1.0, 100.0, sample_rate=0.5, steps=4)
    assert after == pytest.approx(epsilon_of([(Z, 1.0, 1), (Z, 1.0, 1), (1.0, 0.5, 4)], DELTA))
    assert json.loads(path.read_text()) == {
        "ada": [[Z, 1.0, 1], [Z, 1.0, 1], [1.0, 0.5, 4]],
        "grace": [[Z, 1.0, 1]],
    }
