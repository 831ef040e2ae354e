"""``federation.toml``: defaults, relative paths, and an error naming the file and setting for every mistake."""

from __future__ import annotations

import os
from pathlib import Path
from textwrap import dedent

import pytest

from datasite_setup.errors import FedimgError
from datasite_setup.site.federation_config import LOOPBACK, load_federation_config

VALID = """
[federation]
data = "fed"
state_root = "state"

[[site]]
name = "hospital_a"
port = 8081

[[site]]
name = "hospital_b"
port = 8082
host = "0.0.0.0"
data = "elsewhere/b"
state_dir = "/var/lib/fedimg/b"
db_url_env = "HOSPITAL_B_DB_URL"

[[researcher]]
email = "ada@university.example"
name = "Ada Lovelace"

[[researcher]]
email = "alan@university.example"
sites = ["hospital_b"]
"""


def write_config(folder: Path, text: str, name: str = "federation.toml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(dedent(text), encoding="utf-8")
    return path


def load_error(path: Path) -> str:
    with pytest.raises(FedimgError) as info:
        load_federation_config(path)
    message = str(info.value)
    assert str(path) in message, f"the message must name the file: {message}"
    return message


def test_valid_file_defaults_and_relative_paths(tmp_path: Path) -> None:
    folder = tmp_path / "conf"
    path = write_config(folder, VALID)
    config = load_federation_config(path)

    assert config.path == path
    assert config.state_root == folder / "state"
    assert config.secrets_dir == folder / "state" / "secrets"
    assert config.run_file == folder / "state" / "run.json"
    assert [s.name for s in config.sites] == ["hospital_a", "hospital_b"]

    a, b = config.sites
    assert a.host == LOOPBACK == "127.0.0.1"
    assert a.port == 8081 and a.url == "http://127.0.0.1:8081"
    assert a.data == folder / "fed" / "clients" / "hospital_a"
    assert a.state_dir == folder / "state" / "hospital_a"
    assert a.db_url_env is None and a.db_url() is None

    assert b.host == "0.0.0.0" and b.url == "http://0.0.0.0:8082"
    assert b.data == folder / "elsewhere" / "b"
    assert b.state_dir == Path("/var/lib/fedimg/b")
    assert b.db_url_env == "HOSPITAL_B_DB_URL"
    assert config.site("hospital_b") is b

    ada, alan = config.researchers
    assert (ada.email, ada.name, ada.sites) == (
        "ada@university.example",
        "Ada Lovelace",
        ("hospital_a", "hospital_b"),
    )
    assert (alan.name, alan.sites) == ("alan", ("hospital_b",))


def test_relative_paths_follow_the_config_file_not_the_working_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "deep" / "conf"
    write_config(folder, VALID)
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    config = load_federation_config(Path(os.path.relpath(folder / "federation.toml", elsewhere)))
    assert config.sites[0].data.resolve() == (folder / "fed" / "clients" / "hospital_a").resolve()
    assert config.state_root.is_absolute() and config.state_root.resolve() == (folder / "state").resolve()
    assert all(site.data.is_absolute() and site.state_dir.is_absolute() for site in config.sites)


def test_defaults_without_a_federation_section(tmp_path: Path) -> None:
    path = write_config(
        tmp_path,
        """
        [[site]]
        name = "solo"
        port = 9000
        data = "clients/solo"
        """,
    )
    config = load_federation_config(path)
    assert config.state_root == tmp_path / "fedimg-state"
    assert config.secrets_dir == tmp_path / "fedimg-state" / "secrets"
    assert config.sites[0].state_dir == tmp_path / "fedimg-state" / "solo"
    assert config.sites[0].data == tmp_path / "clients" / "solo"
    assert config.researchers == ()


def test_explicit_secrets_dir(tmp_path: Path) -> None:
    path = write_config(
        tmp_path, VALID.replace('state_root = "state"', 'state_root = "state"\nsecrets_dir = "keys"')
    )
    assert load_federation_config(path).secrets_dir == tmp_path / "keys"


def test_unknown_site_lookup_names_the_file(tmp_path: Path) -> None:
    path = write_config(tmp_path, VALID)
    with pytest.raises(FedimgError, match="hospital_z") as info:
        load_federation_config(path).site("hospital_z")
    assert str(path) in str(info.value)


def test_db_url_comes_from_the_named_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    site = load_federation_config(write_config(tmp_path, VALID)).site("hospital_b")
    monkeypatch.setenv("HOSPITAL_B_DB_URL", "postgresql://b:pw@db/b")
    assert site.db_url() == "postgresql://b:pw@db/b"


@pytest.mark.parametrize("value", [None, ""])
def test_db_url_env_naming_an_unset_variable_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str | None
) -> None:
    site = load_federation_config(write_config(tmp_path, VALID)).site("hospital_b")
    if value is None:
        monkeypatch.delenv("HOSPITAL_B_DB_URL", raising=False)
    else:
        monkeypatch.setenv("HOSPITAL_B_DB_URL", value)
    with pytest.raises(FedimgError) as info:
        site.db_url()
    message = str(info.value)
    assert "HOSPITAL_B_DB_URL" in message and "db_url_env" in message and "hospital_b" in message


SITE = '[[site]]\nname = "a"\nport = 8081\n'
FED = '[federation]\ndata = "fed"\n'


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(FED + SITE + "[extras]\nx = 1\n", ["unknown section", "extras"], id="unknown-section"),
        pytest.param(
            '[federation]\ndata = "fed"\nstate_rot = "s"\n' + SITE,
            ["unknown key", "state_rot", "[federation]"],
            id="unknown-federation-key",
        ),
        pytest.param(
            FED + SITE + 'hots = "0.0.0.0"\n', ["unknown key", "hots", "[site]"], id="unknown-site-key"
        ),
        pytest.param(
            FED + SITE + '[[researcher]]\nemail = "a@b.org"\nsite = ["a"]\n',
            ["unknown key", "'site'", "[researcher]"],
            id="unknown-researcher-key",
        ),
        pytest.param(FED + "[[site]]\nport = 8081\n", ["name"], id="missing-name"),
        pytest.param(
            FED + '[[site]]\nname = "../evil"\nport = 8081\n', ["../evil", "not allowed"], id="bad-name"
        ),
        pytest.param(FED + '[[site]]\nname = "a"\n', ["site a", "port", "None"], id="missing-port"),
        pytest.param(FED + '[[site]]\nname = "a"\nport = 0\n', ["site a", "port", "65535"], id="port-zero"),
        pytest.param(
            FED + '[[site]]\nname = "a"\nport = 65536\n', ["site a", "port", "65536"], id="port-too-big"
        ),
        pytest.param(
            FED + '[[site]]\nname = "a"\nport = "8081"\n', ["site a", "port", "'8081'"], id="port-string"
        ),
        pytest.param(FED + '[[site]]\nname = "a"\nport = true\n', ["site a", "port", "True"], id="port-bool"),
        pytest.param(FED + '[[site]]\nname = "a"\nport = 80.5\n', ["site a", "port"], id="port-float"),
        pytest.param(SITE, ["site a", "data"], id="no-data-dir"),
        pytest.param(FED, ["no [[site]]"], id="no-sites"),
        pytest.param(
            FED + SITE + SITE.replace("8081", "8082"), ["site name", "'a'", "twice"], id="duplicate-name"
        ),
        pytest.param(
            FED + SITE + SITE.replace('"a"', '"b"'),
            ["site address", "127.0.0.1:8081", "twice"],
            id="duplicate-address",
        ),
        pytest.param(
            FED + SITE + '[[researcher]]\nemail = "ada@x.org"\n[[researcher]]\nemail = "ada@x.org"\n',
            ["researcher email", "ada@x.org", "twice"],
            id="duplicate-researcher",
        ),
        pytest.param(
            FED + SITE + '[[researcher]]\nemail = "not-an-address"\n',
            ["researcher email", "not-an-address"],
            id="bad-email",
        ),
        pytest.param(
            FED + SITE + '[[researcher]]\nname = "Ada"\n', ["researcher email", "None"], id="missing-email"
        ),
        # Addresses PySyft's EmailStr refuses must fail here, not after the sites have started.
        pytest.param(
            FED + SITE + '[[researcher]]\nemail = "ada..l@x.org"\n',
            ["researcher email", "ada..l@x.org"],
            id="email-double-dot",
        ),
        pytest.param(
            FED + SITE + '[[researcher]]\nemail = "ada@uni_versity.org"\n',
            ["researcher email", "uni_versity"],
            id="email-underscore-domain",
        ),
        pytest.param(
            FED + SITE + '[[researcher]]\nemail = "ada@x.org"\nsites = ["z"]\n',
            ["researcher ada@x.org", "sites", "'z'"],
            id="unknown-researcher-site",
        ),
        pytest.param(
            FED + SITE + '[[researcher]]\nemail = "ada@x.org"\nsites = []\n',
            ["researcher ada@x.org", "sites"],
            id="empty-researcher-sites",
        ),
        pytest.param(
            FED + SITE + '[[researcher]]\nemail = "ada@x.org"\nsites = "a"\n',
            ["researcher ada@x.org", "sites"],
            id="sites-not-a-list",
        ),
        pytest.param(
            FED + SITE + 'db_url_env = "postgres://u:p@h/db"\n', ["site a", "db_url_env"], id="db-url-inline"
        ),
        pytest.param('federation = "x"\n' + SITE, ["[federation]", "table"], id="federation-not-a-table"),
        pytest.param(
            'site = {name = "a", port = 8081}\n' + FED, ["site", "array of tables"], id="site-not-an-array"
        ),
        pytest.param(FED + SITE + "port = [", ["not valid TOML"], id="invalid-toml"),
    ],
)
def test_errors_name_the_file_and_setting(tmp_path: Path, text: str, expected: list[str]) -> None:
    message = load_error(write_config(tmp_path, text))
    for fragment in expected:
        assert fragment in message, f"{fragment!r} not in {message!r}"


def test_missing_file(tmp_path: Path) -> None:
    assert "cannot be read" in load_error(tmp_path / "nope.toml")


def test_a_directory_is_not_a_config(tmp_path: Path) -> None:
    assert "cannot be read" in load_error(tmp_path)


def test_non_utf8_file_is_a_config_error_not_a_traceback(tmp_path: Path) -> None:
    path = tmp_path / "federation.toml"
    path.write_bytes(b'[federation]\ndata = "f\xe9d"\n')
    assert "UTF-8" in load_error(path)
