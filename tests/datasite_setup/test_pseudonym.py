"""Keyed pseudonyms (HMAC-SHA256, 80 bits hex)."""

from __future__ import annotations

import hashlib
import hmac
import re

import pytest

from datasite_setup.convert.pseudonym import PSEUDONYM_HEX_CHARS, Pseudonymiser
from datasite_setup.convert.secret import load_secret

HEX20 = re.compile(r"[0-9a-f]{20}")
SOURCE_SHA = hashlib.sha256(b"some image bytes").hexdigest()


@pytest.fixture
def pseudonyms(federation_secret: str) -> Pseudonymiser:
    return Pseudonymiser(load_secret())


def reference(secret: bytes, namespace: str, value: str) -> str:
    return hmac.new(secret, namespace.encode() + b"\x00" + value.encode(), hashlib.sha256).hexdigest()[:20]


def test_pseudonyms_are_twenty_lower_case_hex_chars(pseudonyms: Pseudonymiser) -> None:
    assert PSEUDONYM_HEX_CHARS == 20
    for value in (pseudonyms.sample_id(SOURCE_SHA), pseudonyms.group_id("P00017"), pseudonyms.fingerprint()):
        assert HEX20.fullmatch(value), value


def test_pseudonyms_are_the_documented_hmac(pseudonyms: Pseudonymiser, federation_secret: str) -> None:
    secret = federation_secret.encode()
    assert pseudonyms.sample_id(SOURCE_SHA) == reference(secret, "sample", SOURCE_SHA)
    assert pseudonyms.group_id("P00017") == reference(secret, "group", "P00017")
    assert pseudonyms.fingerprint() == reference(secret, "fingerprint", "fedimg")
    assert pseudonyms.group_id("Jürgen Müller") == reference(secret, "group", "Jürgen Müller")


def test_pseudonyms_are_deterministic(federation_secret: str) -> None:
    one, two = Pseudonymiser(federation_secret.encode()), Pseudonymiser(federation_secret.encode())
    assert one.sample_id(SOURCE_SHA) == two.sample_id(SOURCE_SHA) == one.sample_id(SOURCE_SHA)
    assert one.group_id("P1") == two.group_id("P1")
    assert one.fingerprint() == two.fingerprint()


def test_pseudonyms_differ_by_secret(pseudonyms: Pseudonymiser) -> None:
    other = Pseudonymiser(b"another secret of enough length")
    assert other.sample_id(SOURCE_SHA) != pseudonyms.sample_id(SOURCE_SHA)
    assert other.group_id("P1") != pseudonyms.group_id("P1")
    assert other.fingerprint() != pseudonyms.fingerprint()


def test_pseudonyms_differ_by_namespace(pseudonyms: Pseudonymiser) -> None:
    assert pseudonyms.sample_id("P1") != pseudonyms.group_id("P1")
    assert pseudonyms.sample_id("fedimg") != pseudonyms.fingerprint()
    assert pseudonyms.group_id("fedimg") != pseudonyms.fingerprint()


def test_pseudonyms_differ_by_value_and_reveal_nothing(pseudonyms: Pseudonymiser) -> None:
    samples = {pseudonyms.sample_id(hashlib.sha256(str(i).encode()).hexdigest()) for i in range(500)}
    groups = {pseudonyms.group_id(f"P{i:05d}") for i in range(500)}
    assert len(samples) == 500 and len(groups) == 500
    assert pseudonyms.group_id("P00001") != pseudonyms.group_id("P00001 ")
    assert "P00017" not in pseudonyms.group_id("P00017")
    assert SOURCE_SHA[:20] != pseudonyms.sample_id(SOURCE_SHA)


def test_namespace_separator_prevents_ambiguity(pseudonyms: Pseudonymiser) -> None:
    # "sample" + "\x00" + value: a value cannot shift bytes between namespace and value.
    assert pseudonyms.group_id("x") != pseudonyms._derive("grou", "px")
