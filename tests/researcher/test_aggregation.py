"""FedAvg and FedAvgM arithmetic against hand-computed values."""

from __future__ import annotations

import doctest

import numpy as np
import pytest

import researcher.aggregation as aggregation
from researcher.aggregation import ServerMomentum, fedavg


def test_docstring_example() -> None:
    assert doctest.testmod(aggregation).failed == 0


def test_fedavg_is_the_sample_weighted_mean() -> None:
    a = {"w": np.array([[1.0, 2.0], [3.0, 4.0]], dtype=np.float32), "b": np.array([0.0], dtype=np.float32)}
    b = {"w": np.array([[5.0, 6.0], [7.0, 8.0]], dtype=np.float32), "b": np.array([10.0], dtype=np.float32)}
    c = {"w": np.zeros((2, 2), dtype=np.float32), "b": np.array([-2.0], dtype=np.float32)}
    result = fedavg([(a, 10), (b, 30), (c, 60)])
    # by hand: w = (10*a + 30*b + 60*c) / 100
    assert np.allclose(result["w"], [[1.6, 2.0], [2.4, 2.8]])
    assert np.allclose(result["b"], [(0 * 10 + 10 * 30 - 2 * 60) / 100])
    assert result["w"].dtype == np.float32


def test_fedavg_keeps_integer_buffers_unaveraged() -> None:
    def update(n: int) -> dict[str, np.ndarray]:
        return {"num_batches_tracked": np.array(n, dtype=np.int64), "w": np.array([float(n)])}

    result = fedavg([(update(3), 1), (update(7), 1)])
    assert result["num_batches_tracked"] == 7 and result["num_batches_tracked"].dtype == np.int64
    assert result["w"].tolist() == [5.0]


def test_fedavg_rejects_mismatched_or_empty_updates() -> None:
    with pytest.raises(ValueError, match="at least one update"):
        fedavg([])
    with pytest.raises(ValueError, match="different parameters"):
        fedavg([({"a": np.zeros(1)}, 1), ({"b": np.zeros(1)}, 1)])
    with pytest.raises(ValueError, match="no samples"):
        fedavg([({"a": np.zeros(1)}, 0)])


def test_server_momentum() -> None:
    momentum = ServerMomentum(beta=0.5, lr=1.0)
    current = {"w": np.array([1.0])}
    first = momentum.step(current, {"w": np.array([0.0])})  # delta 1, v = 1 → 0
    assert first["w"].tolist() == [0.0]
    second = momentum.step(first, {"w": np.array([-1.0])})  # delta 1, v = 0.5*1 + 1 = 1.5 → -1.5
    assert second["w"].tolist() == [-1.5]
    plain = ServerMomentum(beta=0.0).step(current, {"w": np.array([0.25])})
    assert plain["w"].tolist() == [0.25]
    with pytest.raises(ValueError):
        ServerMomentum(beta=1.0)
