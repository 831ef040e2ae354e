"""Pairwise masking: the sum is exact (to fixed point), a single masked update looks uniform."""

from __future__ import annotations

import doctest

import numpy as np
import pytest

import policies.secure_aggregation as secure_aggregation
from policies.secure_aggregation import (
    context_bytes,
    decode,
    encode,
    generate_private_key,
    mask_weights,
    public_key_hex,
    unmask_sum,
)


def test_docstring_example() -> None:
    assert doctest.testmod(secure_aggregation).failed == 0


@pytest.fixture
def cohort():
    keys = {name: generate_private_key() for name in ("hospital_a", "hospital_b", "hospital_c", "hospital_d")}
    return keys, {name: public_key_hex(key) for name, key in keys.items()}


def test_unmasked_sum_equals_the_plain_sum(cohort) -> None:
    keys, public = cohort
    rng = np.random.default_rng(0)
    updates = {
        name: {"conv.weight": rng.normal(0, 50, (8, 3, 3, 3)), "bias": rng.normal(0, 1, 8)} for name in keys
    }
    context = context_bytes("code-1", 3, public)
    masked = [mask_weights(updates[name], name, keys[name], public, context=context) for name in keys]
    total = unmask_sum(masked)
    for tensor in ("conv.weight", "bias"):
        plain = sum(updates[name][tensor] for name in keys)
        assert np.max(np.abs(total[tensor] - plain)) <= len(keys) * 2.0**-24
    assert all(m["bias"].dtype == np.uint64 for m in masked)


def test_one_masked_update_is_indistinguishable_from_uniform(cohort) -> None:
    keys, public = cohort
    update = {"w": np.zeros(200_000)}  # the most structured input there is
    masked = mask_weights(update, "hospital_b", keys["hospital_b"], public, context=b"ctx")["w"]
    # the top byte of a uniform 64-bit value is uniform over 256 values: chi-square test
    top = (masked >> np.uint64(56)).astype(np.int64)
    counts = np.bincount(top, minlength=256)
    expected = len(top) / 256
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 340  # 255 d.o.f.: p ~ 0.0003; a non-uniform mask fails by orders of magnitude
    bits = np.unpackbits(masked.view(np.uint8))
    assert abs(bits.mean() - 0.5) < 0.002
    assert not np.allclose(decode(masked), 0.0)


def test_masks_depend_on_the_round_and_the_cohort(cohort) -> None:
    keys, public = cohort
    update = {"w": np.ones(16)}
    first = mask_weights(
        update, "hospital_a", keys["hospital_a"], public, context=context_bytes("c", 0, public)
    )["w"]
    again = mask_weights(
        update, "hospital_a", keys["hospital_a"], public, context=context_bytes("c", 0, public)
    )["w"]
    next_round = mask_weights(
        update, "hospital_a", keys["hospital_a"], public, context=context_bytes("c", 1, public)
    )["w"]
    assert np.array_equal(first, again) and not np.array_equal(first, next_round)


def test_a_dropout_leaves_garbage_not_a_site_update(cohort) -> None:
    keys, public = cohort
    updates = {name: {"w": np.full(1000, float(i))} for i, name in enumerate(keys)}
    masked = [mask_weights(updates[name], name, keys[name], public, context=b"r") for name in keys]
    partial = unmask_sum(masked[:-1])["w"]  # hospital_d dropped out
    assert not np.allclose(partial, sum(updates[name]["w"] for name in list(keys)[:-1]))


def test_a_site_must_be_in_the_cohort_with_its_own_key(cohort) -> None:
    keys, public = cohort
    with pytest.raises(ValueError, match="not in the cohort"):
        mask_weights(
            {"w": np.ones(2)},
            "hospital_a",
            keys["hospital_a"],
            {**public, "hospital_a": public["hospital_b"]},
            context=b"x",
        )


def test_fixed_point_round_trip() -> None:
    values = np.array([-1234.5, 0.0, 3.25e-6, 8.0e9])
    assert np.allclose(decode(encode(values)), values, atol=2.0**-24)
