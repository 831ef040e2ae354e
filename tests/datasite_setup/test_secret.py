"""The federation secret: where it comes from, how its file is created and guarded."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from datasite_setup.convert.secret import (
    MIN_SECRET_BYTES,
    SECRET_ENV,
    SECRET_FILE_ENV,
    default_secret_path,
    load_secret,
)
from datasite_setup.errors import FedimgError


def write_secret(path: Path, content: str, mode: int = 0o600) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content)
    path.chmod(mode)
    return path


def file_mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_fixture_sets_a_test_secret_and_isolates_the_config_dir(
    federation_secret: str, tmp_path: Path
) -> None:
    assert len(federation_secret) == 64 and int(federation_secret, 16) >= 0
    assert os.environ[SECRET_ENV] == federation_secret
    assert SECRET_FILE_ENV not in os.environ
    config = Path(os.environ["XDG_CONFIG_HOME"])
    assert Path.home() / ".config" != config
    assert default_secret_path() == config / "fedimg" / "secret"
    assert load_secret() == federation_secret.encode()
    assert not default_secret_path().exists(), "the environment secret needs no file"


def test_argument_beats_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    argument = write_secret(tmp_path / "arg", "a" * 40 + "\n")
    env_file = write_secret(tmp_path / "env", "b" * 40)
    monkeypatch.setenv(SECRET_FILE_ENV, str(env_file))
    assert load_secret(argument) == b"a" * 40


def test_secret_env_beats_secret_file_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, federation_secret: str
) -> None:
    monkeypatch.setenv(SECRET_FILE_ENV, str(write_secret(tmp_path / "env", "b" * 40)))
    assert load_secret() == federation_secret.encode()


def test_secret_file_env_beats_default_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SECRET_ENV)
    write_secret(default_secret_path(), "d" * 40)
    monkeypatch.setenv(SECRET_FILE_ENV, str(write_secret(tmp_path / "env", "  " + "e" * 40 + "\n\n")))
    assert load_secret() == b"e" * 40


def test_empty_secret_env_falls_through(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SECRET_ENV, "")
    write_secret(default_secret_path(), "d" * 40)
    assert load_secret() == b"d" * 40


def test_default_file_is_created_0600_on_first_use_and_reused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SECRET_ENV)
    path = default_secret_path()
    assert not path.exists()
    first = load_secret()
    assert path.is_file()
    assert file_mode(path) == 0o600
    assert file_mode(path.parent) & 0o077 == 0
    text = path.read_text()
    assert text.endswith("\n") and len(text.strip()) == 64 and int(text, 16) >= 0
    assert first == text.strip().encode()
    assert load_secret() == first
    assert file_mode(path) == 0o600


def test_default_path_falls_back_to_home_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("XDG_CONFIG_HOME")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_secret_path() == tmp_path / ".config" / "fedimg" / "secret"


def test_distinct_config_homes_give_distinct_secrets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SECRET_ENV)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "one"))
    one = load_secret()
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "two"))
    assert load_secret() != one


def test_secret_file_env_that_does_not_exist_is_created_0600(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(SECRET_ENV)
    path = tmp_path / "new" / "secret"
    monkeypatch.setenv(SECRET_FILE_ENV, str(path))
    secret = load_secret()
    assert file_mode(path) == 0o600 and len(secret) == 64
    assert not default_secret_path().exists()


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660, 0o606, 0o666, 0o610])
def test_loose_permissions_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: int) -> None:
    path = write_secret(tmp_path / "secret", "s" * 40, mode)
    with pytest.raises(FedimgError) as info:
        load_secret(path)
    message = str(info.value)
    assert str(path) in message and f"chmod 600 {path}" in message
    monkeypatch.delenv(SECRET_ENV)
    monkeypatch.setenv(SECRET_FILE_ENV, str(path))
    with pytest.raises(FedimgError, match="readable by others"):
        load_secret()


def test_loose_default_file_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SECRET_ENV)
    write_secret(default_secret_path(), "s" * 40, 0o644)
    with pytest.raises(FedimgError, match="chmod 600"):
        load_secret()


@pytest.mark.parametrize("mode", [0o600, 0o400])
def test_owner_only_permissions_are_accepted(tmp_path: Path, mode: int) -> None:
    assert load_secret(write_secret(tmp_path / "secret", "s" * 40, mode)) == b"s" * 40


def test_too_short_environment_secret_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SECRET_ENV, "x" * (MIN_SECRET_BYTES - 1))
    with pytest.raises(FedimgError) as info:
        load_secret()
    assert f"${SECRET_ENV}" in str(info.value) and "too short" in str(info.value)
    monkeypatch.setenv(SECRET_ENV, "x" * MIN_SECRET_BYTES)
    assert load_secret() == b"x" * MIN_SECRET_BYTES


def test_too_short_file_secret_is_refused(tmp_path: Path) -> None:
    path = write_secret(tmp_path / "secret", "short\n")
    with pytest.raises(FedimgError) as info:
        load_secret(path)
    assert str(path) in str(info.value) and "too short" in str(info.value)
    with pytest.raises(FedimgError, match="too short"):
        load_secret(write_secret(tmp_path / "blank", "   \n"))


def test_a_secret_path_that_cannot_be_a_file_is_a_usage_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(SECRET_ENV)
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("x")
    monkeypatch.setenv(SECRET_FILE_ENV, str(blocker / "secret"))
    with pytest.raises(FedimgError) as info:
        load_secret()
    assert str(blocker / "secret") in str(info.value) and SECRET_FILE_ENV in str(info.value)
    directory = tmp_path / "a_dir"
    directory.mkdir(mode=0o700)
    directory.chmod(0o700)
    with pytest.raises(FedimgError, match="cannot be created or read"):
        load_secret(directory)
