"""Read-only memory maps of a site's partition: written at ingest, checksummed, owner-only, crash-safe."""

from __future__ import annotations

import gc
import json
import os
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from datasite_setup.convert.client_data import load_client_partition
from datasite_setup.convert.federated_format import CLIENTS_DIR
from datasite_setup.errors import FedimgError
from datasite_setup.site import asset_maps
from datasite_setup.site.asset_maps import (
    INDEX_FILE,
    MAPS_DIR,
    load_asset_index,
    open_map,
    verify_asset_maps,
    write_asset_maps,
)
from datasite_setup.site.credentials import Credentials
from datasite_setup.site.ingest import admin_context, ingest_partition, list_datasets, partition_arrays
from datasite_setup.site.mock import mock_partition


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def sample_assets(seed: int = 0) -> dict[str, tuple[str, np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (7, 3, 5, 5), dtype=np.uint8)
    labels = rng.integers(0, 4, 7).astype(np.int64)
    return {
        "train_images": (f"id-images-{seed}", images, images[::-1].copy()),
        "train_labels": (f"id-labels-{seed}", labels, np.roll(labels, 1)),
        "scores": (f"id-scores-{seed}", rng.random(3).astype(np.float32), np.zeros(3, np.float32)),
        "names": (f"id-names-{seed}", np.array(["a", "b"]), np.array(["c", "d"])),
        "flags": (f"id-flags-{seed}", np.array([True, False]), np.array([False, False])),
    }


def flip_last_byte(path: Path) -> None:
    with open(path, "r+b") as handle:
        handle.seek(-1, os.SEEK_END)
        last = handle.read(1)[0]
        handle.seek(-1, os.SEEK_END)
        handle.write(bytes([last ^ 0xFF]))


def files_in(state: Path) -> set[str]:
    return {path.name for path in (state / MAPS_DIR).iterdir()}


# --- write, load, open -------------------------------------------------------------------------


def test_numeric_assets_are_written_as_npy_files_equal_to_the_arrays(tmp_path: Path) -> None:
    assets = sample_assets()
    entries = write_asset_maps(tmp_path, "fedimg-a-v1", assets)
    assert [entry.asset for entry in entries] == ["train_images", "train_labels", "scores", "flags"]
    for entry in entries:
        action_id, private, mock = assets[entry.asset]
        assert entry.action_id == action_id and entry.dataset == "fedimg-a-v1"
        assert entry.shape == private.shape and np.dtype(entry.dtype) == private.dtype
        # plain .npy files any numpy reads without pickle, exactly the arrays
        np.testing.assert_array_equal(np.load(entry.private, allow_pickle=False), private)
        np.testing.assert_array_equal(np.load(entry.mock, allow_pickle=False), mock)
        assert entry.private.parent == tmp_path / MAPS_DIR
    assert load_asset_index(tmp_path) == {entry.action_id: entry for entry in entries}
    assert verify_asset_maps(tmp_path) == []


def test_a_non_contiguous_array_is_written_in_c_order(tmp_path: Path) -> None:
    private = np.arange(24, dtype=np.int16).reshape(4, 6).T  # Fortran-ordered view
    (entry,) = write_asset_maps(tmp_path, "fedimg-a-v1", {"x": ("id-x", private, private + 1)})
    loaded = open_map(entry)
    assert loaded.flags.c_contiguous
    np.testing.assert_array_equal(loaded, private)
    assert verify_asset_maps(tmp_path) == []


def test_files_are_owner_only_in_an_owner_only_folder(tmp_path: Path) -> None:
    (tmp_path / MAPS_DIR).mkdir(mode=0o755)
    (tmp_path / MAPS_DIR).chmod(0o755)  # a folder left with a wider mode is narrowed
    entries = write_asset_maps(tmp_path, "fedimg-a-v1", sample_assets())
    assert mode(tmp_path / MAPS_DIR) == 0o700
    assert mode(tmp_path / MAPS_DIR / INDEX_FILE) == 0o600
    for entry in entries:
        assert mode(entry.private) == 0o600 and mode(entry.mock) == 0o600


def test_open_map_is_a_read_only_memory_map(tmp_path: Path) -> None:
    entries = write_asset_maps(tmp_path, "fedimg-a-v1", sample_assets())
    images = open_map(entries[0])
    assert isinstance(images, np.memmap)
    with pytest.raises(ValueError, match="read-only"):
        images[0, 0, 0, 0] = 1
    np.testing.assert_array_equal(open_map(entries[0], mock=True), sample_assets()["train_images"][2])


def test_open_map_refuses_a_file_that_disagrees_with_the_index(tmp_path: Path) -> None:
    (entry,) = write_asset_maps(tmp_path, "fedimg-a-v1", {"x": ("id-x", np.arange(4), np.arange(4))})
    np.save(entry.private, np.arange(5))
    with pytest.raises(FedimgError, match=f"{entry.private}.*the index says"):
        open_map(entry)


def test_a_mock_of_another_shape_or_dtype_is_refused(tmp_path: Path) -> None:
    with pytest.raises(FedimgError, match="fedimg-a-v1/x: the mock must have"):
        write_asset_maps(tmp_path, "fedimg-a-v1", {"x": ("id", np.arange(4), np.arange(3))})
    with pytest.raises(FedimgError, match="the mock must have"):
        write_asset_maps(tmp_path, "fedimg-a-v1", {"x": ("id", np.arange(4), np.arange(4.0))})


@pytest.mark.parametrize("dataset", ["../escape", "a/b", "", "a--b", ".hidden"])
def test_a_name_that_cannot_be_a_file_name_is_refused(tmp_path: Path, dataset: str) -> None:
    with pytest.raises(FedimgError, match="not usable"):
        write_asset_maps(tmp_path, dataset, {"x": ("id", np.arange(4), np.arange(4))})
    assert not (tmp_path / "escape").exists()


def test_progress_sees_every_chunk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(asset_maps, "CHUNK_BYTES", 64)
    seen: dict = {}

    def progress(items, *, total, description):
        seen["total"], seen["description"] = total, description
        seen["count"] = 0
        for item in items:
            seen["count"] += 1
            yield item

    entries = write_asset_maps(tmp_path, "fedimg-a-v1", sample_assets(), progress=progress)
    assert seen["total"] == seen["count"] > 2 * len(entries)  # the 525-byte image arrays take 9 chunks each
    assert seen["description"] == "Writing memory maps"
    assert verify_asset_maps(tmp_path) == []
    np.testing.assert_array_equal(open_map(entries[0]), sample_assets()["train_images"][1])


# --- index and verification ----------------------------------------------------------------------


def test_no_index_is_an_empty_index_and_a_verification_problem(tmp_path: Path) -> None:
    assert load_asset_index(tmp_path) == {}
    (problem,) = verify_asset_maps(tmp_path)
    assert str(tmp_path / MAPS_DIR / INDEX_FILE) in problem and "no asset-map index" in problem


@pytest.mark.parametrize(
    "corrupt",
    [
        lambda record: "{not json",
        lambda record: json.dumps(record | {"format": "something-else"}),
        lambda record: json.dumps(record | {"version": 99}),
        lambda record: json.dumps({k: v for k, v in record.items() if k != "maps"}),
        lambda record: json.dumps(record | {"maps": [record["maps"][0] | {"private": "../../etc/passwd"}]}),
        lambda record: json.dumps(record | {"maps": [record["maps"][0] | {"dtype": "O"}]}),
        lambda record: json.dumps(record | {"maps": [record["maps"][0] | {"shape": [-1]}]}),
        lambda record: json.dumps(record | {"maps": [{"asset": "x"}]}),
        lambda record: json.dumps([record]),
    ],
)
def test_a_malformed_index_is_an_error_naming_the_file_and_the_fix(tmp_path: Path, corrupt) -> None:
    write_asset_maps(tmp_path, "fedimg-a-v1", sample_assets())
    index = tmp_path / MAPS_DIR / INDEX_FILE
    index.write_text(corrupt(json.loads(index.read_text())))
    with pytest.raises(FedimgError) as raised:
        load_asset_index(tmp_path)
    message = str(raised.value)
    assert message.startswith(f"{index}: malformed asset-map index")
    assert "run `fedimg datasite serve` again to rewrite the maps" in message
    assert verify_asset_maps(tmp_path) == [message]


def test_verification_finds_a_flipped_byte(tmp_path: Path) -> None:
    entries = write_asset_maps(tmp_path, "fedimg-a-v1", sample_assets())
    flip_last_byte(entries[1].mock)
    (problem,) = verify_asset_maps(tmp_path)
    assert problem.startswith(f"{entries[1].mock}: sha256 differs from the index")


def test_verification_finds_a_missing_or_truncated_file(tmp_path: Path) -> None:
    entries = write_asset_maps(tmp_path, "fedimg-a-v1", sample_assets())
    entries[0].private.unlink()
    with open(entries[1].private, "r+b") as handle:
        handle.truncate(entries[1].private.stat().st_size - 8)
    problems = verify_asset_maps(tmp_path)
    assert any(p.startswith(f"{entries[0].private}: missing") for p in problems)
    assert any(p.startswith(f"{entries[1].private}: ") and "bytes, expected" in p for p in problems)
    assert any(p.startswith(f"{entries[1].private}: sha256 differs") for p in problems)


def test_verification_finds_a_file_with_another_header(tmp_path: Path) -> None:
    entries = write_asset_maps(tmp_path, "fedimg-a-v1", sample_assets())
    with open(entries[1].private, "wb") as handle:  # same bytes of data, another shape
        np.save(handle, np.zeros((1, 7), np.int64))
    problems = verify_asset_maps(tmp_path)
    assert any(p.startswith(f"{entries[1].private}: header says (1, 7)") for p in problems)
    (entries[1].private).write_bytes(b"not a npy file at all")
    assert any("not a .npy file" in p for p in verify_asset_maps(tmp_path))


def test_verification_finds_permissions_wider_than_owner_only(tmp_path: Path) -> None:
    entries = write_asset_maps(tmp_path, "fedimg-a-v1", sample_assets())
    entries[2].private.chmod(0o640)
    (tmp_path / MAPS_DIR).chmod(0o750)
    (tmp_path / MAPS_DIR / INDEX_FILE).chmod(0o604)
    problems = verify_asset_maps(tmp_path)
    assert f"{entries[2].private}: mode 640, wider than 600; run 'chmod 600 {entries[2].private}'" in problems
    assert any(p.startswith(f"{tmp_path / MAPS_DIR}: mode 750") for p in problems)
    assert any(p.startswith(f"{tmp_path / MAPS_DIR / INDEX_FILE}: mode 604") for p in problems)
    assert len(problems) == 3


# --- crash safety and replacing an older version ------------------------------------------------------


def test_a_new_dataset_replaces_the_old_ones_files_once_its_index_is_in_place(tmp_path: Path) -> None:
    old = write_asset_maps(tmp_path, "fedimg-a-v1", sample_assets(0))
    new = write_asset_maps(tmp_path, "fedimg-a-v2", sample_assets(1))
    assert files_in(tmp_path) == {INDEX_FILE} | {e.private.name for e in new} | {e.mock.name for e in new}
    assert not any(entry.private.exists() or entry.mock.exists() for entry in old)
    assert {entry.dataset for entry in load_asset_index(tmp_path).values()} == {"fedimg-a-v2"}


def test_rewriting_the_same_dataset_uses_new_file_names(tmp_path: Path) -> None:
    first = write_asset_maps(tmp_path, "fedimg-a-v1", sample_assets())
    second = write_asset_maps(tmp_path, "fedimg-a-v1", sample_assets())
    assert not {e.private for e in first} & {e.private for e in second}
    assert verify_asset_maps(tmp_path) == []


def test_a_write_killed_before_its_index_leaves_the_previous_maps_intact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = write_asset_maps(tmp_path, "fedimg-a-v1", sample_assets(0))
    index_bytes = (tmp_path / MAPS_DIR / INDEX_FILE).read_bytes()

    def killed(*args, **kwargs):
        raise RuntimeError("killed")

    monkeypatch.setattr(asset_maps, "_write_index", killed)
    with pytest.raises(RuntimeError, match="killed"):
        write_asset_maps(tmp_path, "fedimg-a-v2", sample_assets(1))
    assert (tmp_path / MAPS_DIR / INDEX_FILE).read_bytes() == index_bytes
    assert load_asset_index(tmp_path) == {entry.action_id: entry for entry in before}
    assert verify_asset_maps(tmp_path) == []
    monkeypatch.undo()
    after = write_asset_maps(tmp_path, "fedimg-a-v2", sample_assets(1))  # the next write cleans up
    assert files_in(tmp_path) == {INDEX_FILE} | {e.private.name for e in after} | {e.mock.name for e in after}


def test_a_write_killed_in_the_middle_of_a_file_leaves_the_previous_maps_intact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = write_asset_maps(tmp_path, "fedimg-a-v1", sample_assets(0))
    real_chunks = asset_maps._npy_chunks
    calls = {"n": 0}

    def dies_in_second_file(array):
        calls["n"] += 1
        for number, chunk in enumerate(real_chunks(array)):
            if calls["n"] == 2 and number == 3:
                raise OSError("No space left on device")
            yield chunk

    monkeypatch.setattr(asset_maps, "CHUNK_BYTES", 64)
    monkeypatch.setattr(asset_maps, "_npy_chunks", dies_in_second_file)
    with pytest.raises(OSError, match="No space"):
        write_asset_maps(tmp_path, "fedimg-a-v2", sample_assets(1))
    assert calls["n"] == 2  # it died in the second file, the first one complete
    assert load_asset_index(tmp_path) == {entry.action_id: entry for entry in before}
    assert verify_asset_maps(tmp_path) == []
    assert not [name for name in files_in(tmp_path) if name.endswith(".tmp")]  # the partial file is gone


# --- ingest keeps the maps of a real datasite up to date ----------------------------------------------


@pytest.fixture(scope="module")
def client_dir(sample_federation: Path) -> Path:
    return sample_federation / CLIENTS_DIR / "client_0"


@pytest.fixture(scope="module")
def datasite(tmp_path_factory: pytest.TempPathFactory, client_dir: Path) -> Iterator[tuple]:
    """An in-process datasite with client_0 ingested (maps in ``first_state``), and that first result."""
    from syft.client.api import APIRegistry
    from syft.server.server import AuthServerContextRegistry

    from datasite_setup.site.datasite import open_datasite

    root = tmp_path_factory.mktemp("maps-site")
    worker = open_datasite("client_0", root / "site", Credentials("admin@site.example", "admin-pass-123456"))
    first_state = root / "first-state"
    result = ingest_partition(worker, client_dir, state_dir=first_state)
    yield worker, result, first_state
    worker.stop()
    engine = getattr(getattr(worker, "db", None), "engine", None)
    if engine is not None:
        engine.dispose()
    for key in [k for k in APIRegistry.__api_registry__ if k[0] == worker.id]:
        del APIRegistry.__api_registry__[key]
    prefix = f"{worker.id}-"
    for key in [k for k in AuthServerContextRegistry.__server_context_registry__ if k.startswith(prefix)]:
        del AuthServerContextRegistry.__server_context_registry__[key]
    gc.collect()


def copy_of_first_maps(datasite: tuple, tmp_path: Path) -> Path:
    """A state dir holding a copy of the maps the first ingest wrote (modes and mtimes kept)."""
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    shutil.copytree(datasite[2] / MAPS_DIR, state / MAPS_DIR)
    index = state / MAPS_DIR / INDEX_FILE  # the index names files by name: the copy is self-contained
    assert all(entry.private.parent == state / MAPS_DIR for entry in load_asset_index(state).values())
    assert index.exists()
    return state


def stored_mock(worker, action_id: str) -> np.ndarray:
    """An asset's mock as syft itself serves it (its action service, the decorated path)."""
    from syft.service.action.action_object import TwinMode
    from syft.types.uid import UID

    found = worker.services.action._get(admin_context(worker), UID(action_id), twin_mode=TwinMode.MOCK)
    return np.asarray(found.unwrap().syft_action_data)


def assert_maps_hold_the_partition(worker, state: Path, client_dir: Path, dataset: str) -> None:
    partition = partition_arrays(load_client_partition(client_dir))
    assets = {asset.name: str(asset.action_id) for asset in list_datasets(worker)[dataset].asset_list}
    index = load_asset_index(state)
    assert {entry.asset: action_id for action_id, entry in index.items()} == {
        name: assets[name] for name in partition
    }
    assert "metadata" in assets and all(entry.asset != "metadata" for entry in index.values())
    for action_id, entry in index.items():
        assert entry.dataset == dataset
        np.testing.assert_array_equal(open_map(entry), partition[entry.asset])
        np.testing.assert_array_equal(open_map(entry, mock=True), stored_mock(worker, action_id))
    assert verify_asset_maps(state) == []


def test_the_first_ingest_writes_maps_of_every_numeric_asset(datasite, client_dir: Path) -> None:
    worker, result, state = datasite
    assert result.created and result.maps_written
    assert set(partition_arrays(load_client_partition(client_dir))) == {
        "train_images",
        "train_labels",
        "val_images",
        "val_labels",
    }
    assert_maps_hold_the_partition(worker, state, client_dir, result.dataset)


def test_the_index_uses_the_action_ids_syft_input_policies_hold(datasite) -> None:
    from syft.service.policy.policy import user_code_arg2id

    worker, result, state = datasite
    index = load_asset_index(state)
    for asset in list_datasets(worker)[result.dataset].asset_list:
        if asset.name != "metadata":
            assert index[str(user_code_arg2id(asset))].asset == asset.name


def test_the_mock_maps_are_the_generated_mocks(datasite, client_dir: Path) -> None:
    _, _, state = datasite
    mocks = partition_arrays(mock_partition(load_client_partition(client_dir)))
    for entry in load_asset_index(state).values():
        np.testing.assert_array_equal(open_map(entry, mock=True), mocks[entry.asset])


def test_the_maps_are_owner_only(datasite) -> None:
    _, _, state = datasite
    assert mode(state / MAPS_DIR) == 0o700 and mode(state / MAPS_DIR / INDEX_FILE) == 0o600
    for entry in load_asset_index(state).values():
        assert mode(entry.private) == 0o600 and mode(entry.mock) == 0o600


def test_ingesting_the_same_version_again_leaves_the_maps_alone(datasite, client_dir, tmp_path) -> None:
    worker = datasite[0]
    state = copy_of_first_maps(datasite, tmp_path)
    before = {path.name: path.stat().st_mtime_ns for path in (state / MAPS_DIR).iterdir()}
    again = ingest_partition(worker, client_dir, state_dir=state)
    assert not again.created and not again.maps_written
    assert {path.name: path.stat().st_mtime_ns for path in (state / MAPS_DIR).iterdir()} == before


def test_a_corrupted_map_is_rewritten_by_the_next_ingest(datasite, client_dir, tmp_path) -> None:
    worker, result, _ = datasite
    state = copy_of_first_maps(datasite, tmp_path)
    images = next(entry for entry in load_asset_index(state).values() if entry.asset == "train_images")
    flip_last_byte(images.private)
    assert verify_asset_maps(state) == [
        f"{images.private}: sha256 differs from the index (the file changed); "
        "run `fedimg datasite serve` again to rewrite the maps"
    ]
    again = ingest_partition(worker, client_dir, state_dir=state)
    assert again.maps_written and not again.created
    assert not images.private.exists()  # replaced by a new file, named by the new index
    assert_maps_hold_the_partition(worker, state, client_dir, result.dataset)


def test_a_deleted_index_is_rewritten_from_the_stored_mocks(datasite, client_dir, tmp_path) -> None:
    worker, result, _ = datasite
    state = copy_of_first_maps(datasite, tmp_path)
    (state / MAPS_DIR / INDEX_FILE).unlink()
    again = ingest_partition(worker, client_dir, state_dir=state)
    assert again.maps_written
    assert_maps_hold_the_partition(worker, state, client_dir, result.dataset)
    assert len(files_in(state)) == 1 + 2 * 4  # the unindexed old files were removed


def test_an_index_of_other_assets_or_a_malformed_one_is_rewritten(datasite, client_dir, tmp_path) -> None:
    worker, result, _ = datasite
    state = tmp_path / "state"
    write_asset_maps(state, result.dataset, sample_assets())  # same dataset name, other action ids
    assert ingest_partition(worker, client_dir, state_dir=state).maps_written
    assert_maps_hold_the_partition(worker, state, client_dir, result.dataset)
    (state / MAPS_DIR / INDEX_FILE).write_text("[]")
    assert ingest_partition(worker, client_dir, state_dir=state).maps_written
    assert_maps_hold_the_partition(worker, state, client_dir, result.dataset)


def test_without_a_state_dir_no_maps_are_written(datasite, client_dir, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = ingest_partition(datasite[0], client_dir)
    assert not result.maps_written and list(tmp_path.iterdir()) == []


def test_stored_mocks_read_both_inline_and_blob_stored_mocks(datasite, client_dir: Path) -> None:
    """syft keeps arrays over 1 MB in its blob store and smaller ones inline: both are read back exactly."""
    from datasite_setup.convert.client_data import ClientPartition, SplitData
    from datasite_setup.site.ingest import _stored_mocks, build_dataset, upload_server_side

    worker = datasite[0]
    small = load_client_partition(client_dir)
    splits = {
        split: SplitData(np.tile(data.images, (1, 1, 3, 3)), data.labels, data.sample_ids, data.group_ids)
        for split, data in small.splits.items()
    }
    big = ClientPartition(
        "bigclient", 48, 1, small.label_names, splits, "big1", small.federation
    )  # train images: 1.6 MB, in the blob store
    mock = mock_partition(big)
    upload_server_side(worker, build_dataset(big, mock))
    (dataset,) = [d for name, d in list_datasets(worker).items() if name.startswith("fedimg-bigclient-")]
    action_ids = {
        asset.name: str(asset.action_id) for asset in dataset.asset_list if asset.name != "metadata"
    }
    assert mock.splits["train"].images.nbytes > 2**20 > mock.splits["val"].images.nbytes
    from syft.types.uid import UID

    def blob_of(name: str):
        twin = worker.services.action.stash.get(uid=UID(action_ids[name]), credentials=worker.verify_key)
        return twin.unwrap().mock_obj.syft_blob_storage_entry_id

    assert blob_of("train_images") is not None and blob_of("val_labels") is None  # both routes are taken
    read = _stored_mocks(worker, action_ids)
    expected = partition_arrays(mock)
    for name, action_id in action_ids.items():
        np.testing.assert_array_equal(read[name], expected[name])
        np.testing.assert_array_equal(read[name], stored_mock(worker, action_id))
