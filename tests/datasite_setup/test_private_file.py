"""Secret files: written atomically with mode 0600 in a 0700 folder; loose ones are refused on read."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from datasite_setup.errors import FedimgError
from datasite_setup.private_file import read_private_file, write_private_file


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_write_is_0600_and_creates_a_0700_parent(tmp_path: Path) -> None:
    path = tmp_path / "new" / "folder" / "secret.json"
    write_private_file(path, b"s3cret")
    assert path.read_bytes() == b"s3cret"
    assert mode(path) == 0o600
    assert mode(path.parent) == 0o700
    assert read_private_file(path, "secret") == b"s3cret"


def test_mode_does_not_depend_on_the_umask(tmp_path: Path) -> None:
    previous = os.umask(0)
    try:
        write_private_file(tmp_path / "d" / "secret", b"x")
    finally:
        os.umask(previous)
    assert mode(tmp_path / "d" / "secret") == 0o600
    assert mode(tmp_path / "d") == 0o700


def test_refuses_to_overwrite_unless_replace(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    write_private_file(path, b"first")
    with pytest.raises(FedimgError, match="already exists") as info:
        write_private_file(path, b"second")
    assert str(path) in str(info.value)
    assert path.read_bytes() == b"first"

    write_private_file(path, b"second", replace=True)
    assert path.read_bytes() == b"second" and mode(path) == 0o600


def test_replace_tightens_a_loose_file(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_bytes(b"old")
    path.chmod(0o644)
    write_private_file(path, b"new", replace=True)
    assert mode(path) == 0o600 and path.read_bytes() == b"new"


def test_write_is_atomic_no_partial_file_or_leftover(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "secret"
    write_private_file(path, b"old content")

    def failing_replace(src, dst):  # the write got as far as the temporary file, then failed
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError):
        write_private_file(path, b"new content", replace=True)
    monkeypatch.undo()
    assert path.read_bytes() == b"old content"
    assert [p.name for p in tmp_path.iterdir()] == ["secret"], "the temporary file must be removed"


def test_write_goes_through_a_temporary_file_renamed_into_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []
    real_replace = os.replace

    def spy(src, dst):
        calls.append((Path(src), Path(dst), Path(src).read_bytes(), mode(Path(src))))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    path = tmp_path / "secret"
    write_private_file(path, b"payload")
    [(src, dst, data, src_mode)] = calls
    assert dst == path and src != path and src.parent == path.parent
    assert data == b"payload" and src_mode == 0o600, "complete and private before it gets its name"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["secret"]


@pytest.mark.parametrize("loose", [0o640, 0o604, 0o660, 0o644, 0o610, 0o601])
def test_read_refuses_group_or_world_access(tmp_path: Path, loose: int) -> None:
    path = tmp_path / "secret"
    write_private_file(path, b"x")
    path.chmod(loose)
    with pytest.raises(FedimgError) as info:
        read_private_file(path, "credentials file")
    message = str(info.value)
    assert "chmod 600" in message and str(path) in message and "credentials file" in message


@pytest.mark.parametrize("tight", [0o600, 0o400])
def test_read_accepts_owner_only(tmp_path: Path, tight: int) -> None:
    path = tmp_path / "secret"
    path.write_bytes(b"ok")
    path.chmod(tight)
    assert read_private_file(path, "secret") == b"ok"
