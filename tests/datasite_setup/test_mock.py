"""Mock twins: they look like the private partition to code, and are generated without its pixels."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from datasite_setup.convert.client_data import ClientPartition, SplitData, load_client_partition
from datasite_setup.site.mock import mock_partition
from tests.datasite_setup.test_client_data import CLIENTS, shared_digits

MAX_ABS_CORRELATION = 0.8


@pytest.fixture(scope="module")
def partitions(tmp_path_factory: pytest.TempPathFactory) -> dict[str, ClientPartition]:
    out = shared_digits(tmp_path_factory)
    return {name: load_client_partition(out / "clients" / name) for name in CLIENTS}


def all_images(partition: ClientPartition) -> np.ndarray:
    return np.concatenate([data.images for data in partition.splits.values()])


def as_bytes(partition: ClientPartition) -> dict:
    return {
        split: (
            data.images.tobytes(),
            data.images.shape,
            data.labels.tobytes(),
            tuple(data.sample_ids),
            tuple(data.group_ids),
        )
        for split, data in partition.splits.items()
    }


def with_pixels(partition: ClientPartition, seed: int) -> ClientPartition:
    """The same partition with every image replaced by random pixels."""
    rng = np.random.default_rng(seed)
    splits = {
        split: replace(data, images=rng.integers(0, 256, data.images.shape, dtype=np.uint8))
        for split, data in partition.splits.items()
    }
    return replace(partition, splits=splits)


def test_same_shapes_dtypes_and_label_counts(partitions: dict[str, ClientPartition]) -> None:
    for private in partitions.values():
        mock = mock_partition(private)
        assert (mock.name, mock.image_size, mock.channels, mock.label_names) == (
            private.name,
            private.image_size,
            private.channels,
            private.label_names,
        )
        assert set(mock.splits) == set(private.splits)
        for split, data in private.splits.items():
            fake = mock.splits[split]
            assert (
                fake.images.shape == data.images.shape and fake.images.dtype == data.images.dtype == np.uint8
            )
            assert fake.labels.shape == data.labels.shape and fake.labels.dtype == data.labels.dtype
            assert len(fake.sample_ids) == len(fake.group_ids) == len(data.labels)
        assert mock.label_counts == private.label_counts
        assert list(mock.metadata_table()) == list(private.metadata_table())


def test_deterministic_per_client_name(partitions: dict[str, ClientPartition]) -> None:
    private = partitions["client_0"]
    assert as_bytes(mock_partition(private)) == as_bytes(mock_partition(private))
    assert as_bytes(mock_partition(private, seed=7)) == as_bytes(mock_partition(private, seed=7))
    assert as_bytes(mock_partition(private, seed=7)) != as_bytes(mock_partition(private))


def test_different_clients_get_different_mocks(partitions: dict[str, ClientPartition]) -> None:
    private = partitions["client_0"]
    renamed = replace(private, name="client_x")
    a, b = mock_partition(private), mock_partition(renamed)
    assert not np.array_equal(a.splits["train"].images, b.splits["train"].images)
    assert set(a.splits["train"].sample_ids).isdisjoint(b.splits["train"].sample_ids)
    mocks = [all_images(mock_partition(p)) for p in partitions.values()]
    assert len({m.tobytes() for m in mocks}) == len(mocks)


def test_mock_pseudonyms_never_equal_private_ones(partitions: dict[str, ClientPartition]) -> None:
    for private in partitions.values():
        table, fake = private.metadata_table(), mock_partition(private).metadata_table()
        real_ids = set(table["sample_id"]) | set(table["group_id"])
        assert real_ids.isdisjoint(fake["sample_id"])
        assert real_ids.isdisjoint(fake["group_id"])
        assert len(set(fake["sample_id"])) == len(fake["sample_id"]), "mock sample ids are unique"


def test_not_derived_from_private_pixels(partitions: dict[str, ClientPartition]) -> None:
    for private in partitions.values():
        expected = as_bytes(mock_partition(private))
        for seed in (1, 2):
            scrambled = with_pixels(private, seed)
            assert not np.array_equal(all_images(scrambled), all_images(private))
            assert as_bytes(mock_partition(scrambled)) == expected


def test_no_mock_image_equals_or_resembles_a_private_one(partitions: dict[str, ClientPartition]) -> None:
    for private in partitions.values():
        real = all_images(private).reshape(len(all_images(private)), -1).astype(np.float64)
        fake = all_images(mock_partition(private)).reshape(len(real), -1).astype(np.float64)
        assert {row.tobytes() for row in real}.isdisjoint(row.tobytes() for row in fake)

        def standardise(x: np.ndarray) -> np.ndarray:
            centred = x - x.mean(axis=1, keepdims=True)
            return centred / np.maximum(np.linalg.norm(centred, axis=1, keepdims=True), 1e-9)

        correlation = standardise(fake) @ standardise(real).T  # Pearson r of every (mock, private) pair
        assert correlation.shape == (len(fake), len(real))
        assert np.abs(correlation).max() < MAX_ABS_CORRELATION, private.name


def test_mock_images_are_not_constant(partitions: dict[str, ClientPartition]) -> None:
    """A mock that is all zeros would pass the resemblance test; make sure it has texture and label structure."""
    mock = mock_partition(partitions["client_0"])
    images, labels = mock.splits["train"].images.astype(np.float64), mock.splits["train"].labels
    assert images.std() > 20
    means = np.stack([images[labels == label].mean(axis=0) for label in np.unique(labels)])
    assert np.abs(means[0] - means[1]).mean() > 5, "each label has its own pattern"


def synthetic(channels: int, size: int, counts: dict[str, int], labels: int = 3) -> ClientPartition:
    rng = np.random.default_rng(0)
    splits = {
        split: SplitData(
            rng.integers(0, 256, (n, channels, size, size), dtype=np.uint8),
            rng.integers(0, labels, n).astype(np.int64),
            [f"{i:020x}" for i in range(n)],
            [f"{i:020x}" for i in range(n)],
        )
        for split, n in counts.items()
    }
    return ClientPartition("site", size, channels, [str(i) for i in range(labels)], splits, "v1", {})


@pytest.mark.parametrize(("channels", "size"), [(3, 32), (1, 5), (3, 7)])
def test_rgb_odd_sizes_and_empty_splits(channels: int, size: int) -> None:
    private = synthetic(
        channels, size, {"train": 1030, "val": 0}
    )  # > one 512-image batch, and an empty split
    mock = mock_partition(private)
    assert mock.splits["train"].images.shape == (1030, channels, size, size)
    assert mock.splits["val"].images.shape == (0, channels, size, size)
    assert mock.label_counts == private.label_counts
    assert mock.version == private.version
