"""Real datasites over HTTP: secure defaults, least privilege, durability, idempotent ingest."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import re
import shutil
import time

import numpy as np
import pytest
import syft as sy
from nacl.signing import SigningKey
from syft.server.credentials import SyftSigningKey
from syft.service.user.user_roles import ServiceRole
from syft.types.errors import SyftException

from datasite_setup.convert.federated_format import CLIENTS_DIR, load_federation
from datasite_setup.dataset_contract import parse_dataset_info
from datasite_setup.site.datasite import ID_FILE, KEY_FILE
from datasite_setup.site.serve import INGEST_JOURNAL
from datasite_setup.site.site_admin import dataset_summaries, ensure_researcher, login
from tests.support.datasites import convert_sample

RESEARCHER_PASSWORD = "researcher-pass-1234"


def quiet_login(url: str, email: str, password: str):
    with contextlib.redirect_stdout(io.StringIO()):
        return sy.login(url=url, email=email, password=password)


def metadata(url: str) -> dict:
    import urllib.request

    with urllib.request.urlopen(f"{url}/api/v2/metadata", timeout=5) as response:
        return json.loads(response.read())


@pytest.fixture
def site(site_factory, sample_federation):
    return site_factory("client_0", sample_federation / CLIENTS_DIR / "client_0")


@pytest.fixture
def postgres_site(site_factory, sample_federation, postgres_database):
    return site_factory(
        "client_0", sample_federation / CLIENTS_DIR / "client_0", env={"FEDIMG_DB_URL": postgres_database}
    )


@pytest.fixture
def researcher(site):
    return add_researcher(site)


def add_researcher(site):
    admin = login(site.url, site.admin)
    ensure_researcher(admin, email="ada@university.example", name="Ada", password=RESEARCHER_PASSWORD)
    return quiet_login(site.url, "ada@university.example", RESEARCHER_PASSWORD)


def submit_label_count(client, labels_asset):
    @sy.syft_function_single_use(labels=labels_asset)
    def count_labels(labels):
        import numpy as np

        return np.bincount(labels, minlength=10)

    with contextlib.redirect_stdout(io.StringIO()):
        return client.code.request_code_execution(count_labels)


def test_site_key_is_random_not_name_derived_and_persisted(site) -> None:
    key_file = site.state_dir / KEY_FILE
    assert oct(key_file.stat().st_mode & 0o777) == "0o600"
    named = SyftSigningKey(signing_key=SigningKey(hashlib.sha256(site.name.encode()).digest()))
    stored = SyftSigningKey.from_string(key_file.read_text().strip())
    served = metadata(site.url)
    assert served["verify_key"] == str(stored.verify_key)
    assert served["verify_key"] != str(named.verify_key)
    assert served["id"] == (site.state_dir / ID_FILE).read_text().strip()
    site.restart()
    assert metadata(site.url)["verify_key"] == str(stored.verify_key)


def test_default_credentials_never_work_and_admin_file_is_private(site) -> None:
    with pytest.raises(SyftException):
        quiet_login(site.url, "info@openmined.org", "changethis")
    credentials_file = site.state_dir / "admin-credentials.json"
    assert oct(credentials_file.stat().st_mode & 0o777) == "0o600"
    assert site.admin.password not in site.log()
    admin = login(site.url, site.admin)
    assert [user.email for user in admin.users.get_all()] == [site.admin.email]
    assert admin.settings.get().signup_enabled is False


def test_guest_cannot_sign_up_and_wrong_password_is_refused(site) -> None:
    with contextlib.redirect_stdout(io.StringIO()):
        guest = sy.login_as_guest(url=site.url)
    try:
        answer: object = guest.datasets.get_all()
    except Exception as exc:  # noqa: BLE001 - PySyft's client fails in its own ways: nothing is served
        answer = exc
    assert "code 403" in str(answer), answer  # its API description is refused: not even an empty list
    with pytest.raises(SyftException, match="no permission to create an account"):
        guest.register(
            name="Eve",
            email="eve@evil.example",
            password="eve-password-123",
            password_verify="eve-password-123",
        )
    with pytest.raises(SyftException):
        quiet_login(site.url, site.admin.email, "wrong-password-123")


def test_an_unknown_email_and_a_wrong_password_get_the_same_answer(site) -> None:
    """No account enumeration: PySyft 0.9.5 says "not found" for an unknown e-mail; fedimg's sites do not."""
    answers = []
    for email in (site.admin.email, "nobody@nowhere.example"):
        with pytest.raises(SyftException) as refused:
            quiet_login(site.url, email, "wrong-password-123")
        answers.append(str(refused.value.public_message))
    assert answers[0] == answers[1] == "Invalid credentials.", answers


def test_dataset_has_private_assets_with_mock_twins(site, sample_federation) -> None:
    admin = login(site.url, site.admin)
    (dataset,) = admin.datasets
    info = parse_dataset_info(dataset.description.text)
    federation = load_federation(sample_federation)
    client = federation["clients"]["client_0"]
    assert info["split_counts"] == client["split_counts"]
    assert info["label_map"] == federation["label_map"]
    assert info["image"] == {"size": 16, "mode": "L", "channels": 1, "layout": "NCHW", "dtype": "uint8"}
    assert [asset.name for asset in dataset.assets] == [
        "train_images",
        "train_labels",
        "val_images",
        "val_labels",
        "metadata",
    ]
    for asset in dataset.assets:
        private, mock = asset.data, asset.mock
        assert type(private) is type(mock)
        assert np.shape(private) == np.shape(mock)
    images = dataset.assets["train_images"]
    assert images.data.dtype == images.mock.dtype == np.uint8
    assert not np.array_equal(images.data, images.mock)
    labels = dataset.assets["train_labels"]
    assert sorted(labels.data.tolist()) == sorted(labels.mock.tolist())
    assert set(dataset.assets["metadata"].data.columns) == {"sample_id", "group_id", "label", "split"}
    assert not set(dataset.assets["metadata"].data["sample_id"]) & set(
        dataset.assets["metadata"].mock["sample_id"]
    )


def test_researcher_sees_mocks_but_not_private_data_users_or_approvals(site, researcher) -> None:
    (dataset,) = researcher.datasets
    images = dataset.assets["train_images"]
    assert images.mock.shape[1:] == (1, 16, 16)
    with contextlib.redirect_stdout(io.StringIO()):
        assert images.data is None
    with pytest.raises(AttributeError):
        researcher.users.get_all()
    request = submit_label_count(researcher, dataset.assets["train_labels"])
    with pytest.raises(AttributeError):
        request.approve()
    with pytest.raises(SyftException, match="waiting for approval"):
        researcher.code.count_labels(labels=dataset.assets["train_labels"])
    admin = login(site.url, site.admin)
    assert {user.email: user.role for user in admin.users.get_all()}[
        "ada@university.example"
    ] == ServiceRole.DATA_SCIENTIST


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_everything_survives_sigkill(backend, request, tmp_path) -> None:
    from researcher import FedAvgJob, Federation
    from researcher.models import SmallCNN

    site = request.getfixturevalue("site" if backend == "sqlite" else "postgres_site")
    add_researcher(site)
    if backend == "postgresql":
        password = site.env["FEDIMG_DB_URL"].split(":")[2].split("@")[0]
        assert password not in site.log()
        assert not list((site.state_dir / "db").iterdir()), "PostgreSQL site wrote a SQLite database"
    federation = Federation.from_urls(
        {site.name: site.url}, "ada@university.example", {site.name: RESEARCHER_PASSWORD}
    )
    job = FedAvgJob(
        SmallCNN,
        name="durable",
        rounds=1,
        min_sites=1,
        model_kwargs=dict(channels=1, image_size=16, num_classes=10, width=4),
    )
    job.submit(federation)
    admin = login(site.url, site.admin)
    (request_,) = admin.requests
    with contextlib.redirect_stdout(io.StringIO()):
        request_.approve()
    first = job._call_sites(
        federation, job.site_function(federation).name, [site.name], job.initial_weights(), 0
    )[site.name]
    assert "weights" in first, first
    before = {
        "datasets": [d.name for d in admin.datasets],
        "users": sorted(u.email for u in admin.users.get_all()),
        "request": (str(request_.id), str(admin.requests[0].status)),
    }
    site.kill()
    site.start()
    admin = login(site.url, site.admin)
    after = {
        "datasets": [d.name for d in admin.datasets],
        "users": sorted(u.email for u in admin.users.get_all()),
        "request": (str(admin.requests[0].id), str(admin.requests[0].status)),
    }
    assert after == before
    assert "APPROVED" in after["request"][1]
    (code,) = admin.code
    assert len(code.output_history) == 1
    stored = code.output_history[0].outputs[0].get()
    assert np.array_equal(stored["val"]["confusion"], first["val"]["confusion"])
    # the execution count survived too: one run left (the final evaluation), then refused
    federation = Federation.from_urls(
        {site.name: site.url}, "ada@university.example", {site.name: RESEARCHER_PASSWORD}
    )
    name = job.site_function(federation).name
    assert "val" in job._call_sites(federation, name, [site.name], first["weights"], 1)[site.name]
    refused = job._call_sites(federation, name, [site.name], first["weights"], 1)[site.name]
    assert "error" in refused and (
        "run 2 of the 2 times" in refused["error"]
        or "not valid" in refused["error"]
        or "denied" in refused["error"].lower()
    ), refused


def test_serving_again_adds_nothing_and_a_changed_partition_replaces_the_old_version(
    site_factory, sample_federation, tmp_path
) -> None:
    data = tmp_path / "out"
    shutil.copytree(sample_federation, data)
    site = site_factory("client_1", data / CLIENTS_DIR / "client_1")
    first = [d.name for d in login(site.url, site.admin).datasets]
    site.restart()
    assert [d.name for d in login(site.url, site.admin).datasets] == first
    site.stop()
    convert_sample(data, seed=1)  # same clients, different partition: a new version
    site.start()
    admin = login(site.url, site.admin)
    (dataset,) = admin.datasets
    assert dataset.name != first[0] and dataset.name.startswith("fedimg-client_1-")
    assert (
        dataset_summaries(admin)[0].split_counts
        == load_federation(data)["clients"]["client_1"]["split_counts"]
    )


def test_ingest_killed_halfway_leaves_no_dataset(site_factory, tmp_path) -> None:
    data = convert_sample(tmp_path / "big", clients=1, size=96)  # ~16 MB of arrays: ingest takes a moment
    site = site_factory("client_0", data / CLIENTS_DIR / "client_0", wait=False)
    blobs = site.state_dir / "blob"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (blobs.is_dir() and any(blobs.iterdir())):
        time.sleep(0.02)
    site.kill()
    assert any(blobs.iterdir()), "the ingest never started writing blobs"
    assert (site.state_dir / INGEST_JOURNAL).is_file()
    site.start()
    admin = login(site.url, site.admin)
    (dataset,) = admin.datasets
    # the killed upload's blob files are gone: a complete ingest of this partition writes 4 (the arrays over 1 MB)
    assert len(list(blobs.iterdir())) == 4 and not (site.state_dir / INGEST_JOURNAL).exists()
    assert re.search(
        r"removed [1-9]\d* blob file\(s\) of an ingest of fedimg-client_0-\w+ that was interrupted",
        site.log(),
    ), site.log()
    assert [asset.name for asset in dataset.assets] == [
        "train_images",
        "train_labels",
        "val_images",
        "val_labels",
        "metadata",
    ]
    assert (
        dataset.assets["train_images"].data.shape[0]
        == load_federation(data)["clients"]["client_0"]["split_counts"]["train"]
    )
    # killed after the dataset record was written, before the journal went: the complete upload's blobs stay
    site.stop()
    (site.state_dir / INGEST_JOURNAL).write_text(json.dumps({"dataset": dataset.name, "blob_files": []}))
    site.start()
    (again,) = login(site.url, site.admin).datasets
    assert (
        again.name == dataset.name
        and len(list(blobs.iterdir())) == 4
        and not (site.state_dir / INGEST_JOURNAL).exists()
    )
    assert again.assets["val_images"].data.shape == dataset.assets["val_images"].data.shape
