"""Secure aggregation by pairwise additive masking.

Bonawitz et al. 2017, without the dropout-recovery shares.

Each site holds an X25519 key pair (its secret in the state dir, 0600). For a
round, the researcher names the cohort: every participating site's public key.
Sites ``i`` and ``j`` derive the same seed from ``X25519(sk_i, pk_j)`` (HKDF, bound
to the job, the round and the tensor), expand it into a uniform mask over
``Z/2^64``, and site ``i`` adds the mask when ``i < j`` and subtracts it otherwise.
Each site releases ``encode(n_i · w_i) + Σ masks`` in fixed point; in the sum over
the cohort the masks cancel, so the researcher learns ``Σ n_i · w_i`` (and the
public counts ``n_i``) but no single site's update. A site that drops out breaks
the cancellation: the researcher restarts the round with the survivors.

Examples
--------
>>> import numpy as np
>>> keys = {name: generate_private_key() for name in ("a", "b", "c")}
>>> cohort = {name: public_key_hex(key) for name, key in keys.items()}
>>> weighted = {"a": np.array([10.0, -20.0]), "b": np.array([15.0, 15.0]), "c": np.array([180.0, 0.0])}
>>> context = b"job-1/round-0"
>>> masked = {n: mask_weights({"w": weighted[n]}, n, keys[n], cohort, context=context) for n in cohort}
>>> total = unmask_sum(list(masked.values()))["w"]
>>> np.allclose(total, sum(weighted.values())), np.allclose(decode(masked["a"]["w"]), weighted["a"])
(True, False)
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from datasite_setup import read_private_file, write_private_file

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

FRACTION_BITS = 24  # fixed point: 2^-24 resolution, |values| up to 2^39 before wrapping
KEY_FILE = "secure_aggregation_key"


def generate_private_key() -> X25519PrivateKey:
    """A fresh X25519 private key (tests and examples; a site keeps one: ``load_or_create_site_key``).

    Examples
    --------
    >>> len(public_key_hex(generate_private_key()))
    64
    """
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    return X25519PrivateKey.generate()


def public_key_hex(private_key: X25519PrivateKey) -> str:
    """The public half of ``private_key``, as 64 hex digits (what a cohort and a site policy list).

    Parameters
    ----------
    private_key : X25519PrivateKey
        A site's key.

    Returns
    -------
    str
        The raw 32-byte public key in hex.

    Examples
    --------
    >>> key = generate_private_key()
    >>> public_key_hex(key) == public_key_hex(key), len(public_key_hex(key))
    (True, 64)
    """
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    return private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw).hex()


def load_or_create_site_key(state_dir: Path) -> X25519PrivateKey:
    """The site's X25519 secret, generated once into ``<state_dir>/secure_aggregation_key`` (0600).

    Parameters
    ----------
    state_dir : Path
        The site's state folder.

    Returns
    -------
    X25519PrivateKey
        The same key at every call (and across restarts) for the same ``state_dir``.

    Examples
    --------
    >>> import tempfile
    >>> state_dir = Path(tempfile.mkdtemp())
    >>> first = load_or_create_site_key(state_dir)
    >>> public_key_hex(first) == public_key_hex(load_or_create_site_key(state_dir))
    True
    """
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

    path = Path(state_dir) / KEY_FILE
    if not path.exists():
        key = X25519PrivateKey.generate()
        secret = key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
        write_private_file(path, secret.hex().encode())
    secret_hex = read_private_file(path, "secure aggregation key").decode().strip()
    return X25519PrivateKey.from_private_bytes(bytes.fromhex(secret_hex))


def encode(values: np.ndarray) -> np.ndarray:
    """Fixed point in Z/2^64 (two's complement), ``FRACTION_BITS`` fractional bits.

    Examples
    --------
    >>> decode(encode(np.array([1.5, -2.25]))).tolist()
    [1.5, -2.25]
    """
    scaled = np.round(np.asarray(values, dtype=np.float64) * 2.0**FRACTION_BITS)
    return scaled.astype(np.int64).view(np.uint64)


def decode(values: np.ndarray) -> np.ndarray:
    """The floats that ``encode`` turned into fixed point (sums of encodings decode to sums)."""
    return np.asarray(values, dtype=np.uint64).view(np.int64).astype(np.float64) / 2.0**FRACTION_BITS


def _pair_mask(shared_secret: bytes, context: bytes, name: str, shape: tuple[int, ...]) -> np.ndarray:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    seed = HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=None,
        info=b"fedimg-secagg\x00" + context + b"\x00" + name.encode(),
    ).derive(shared_secret)
    generator = np.random.Generator(np.random.PCG64(int.from_bytes(seed, "big")))
    return (
        generator.bit_generator.random_raw(int(np.prod(shape, dtype=np.int64)))
        .astype(np.uint64)
        .reshape(shape)
    )


def mask_weights(
    weighted: Mapping[str, np.ndarray],
    site: str,
    private_key: X25519PrivateKey,
    cohort: Mapping[str, str],
    *,
    context: bytes,
) -> dict[str, np.ndarray]:
    """Mask a site's sample-weighted tensors: ``encode(weighted) + Σ_j ±mask_ij`` for every tensor.

    Parameters
    ----------
    weighted : Mapping of str to ndarray
        The site's tensors, already multiplied by its sample count.
    site : str
        This site's name in the cohort.
    private_key : X25519PrivateKey
        This site's key; its public half must be ``cohort[site]``.
    cohort : Mapping of str to str
        Every site of the round → its public key (hex).
    context : bytes
        What the masks are bound to (``context_bytes``): a new context gives new masks.

    Returns
    -------
    dict of str to ndarray
        uint64 tensors; only their sum over the whole cohort decodes to something meaningful.

    Raises
    ------
    ValueError
        When ``site`` is not in ``cohort`` with its own public key.

    Examples
    --------
    See the module's example: three sites mask, the researcher's ``unmask_sum`` recovers the sum.
    """
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

    if site not in cohort or cohort[site] != public_key_hex(private_key):
        raise ValueError(f"site {site} is not in the cohort with its own public key")
    secrets = {
        peer: private_key.exchange(X25519PublicKey.from_public_bytes(bytes.fromhex(key)))
        for peer, key in cohort.items()
        if peer != site
    }
    masked = {}
    with np.errstate(over="ignore"):
        for name, value in weighted.items():
            total = encode(value)
            for peer, secret in secrets.items():
                mask = _pair_mask(secret, context, name, total.shape)
                total = total + mask if site < peer else total - mask
            masked[name] = total
    return masked


def unmask_sum(masked: list[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Sum the cohort's masked tensors (mod 2^64) and decode: the masks cancel.

    Parameters
    ----------
    masked : list of Mapping of str to ndarray
        One ``mask_weights`` output per site of the cohort, all of it.

    Returns
    -------
    dict of str to ndarray
        The sum of the sites' (weighted) tensors, as float64.

    Examples
    --------
    >>> unmask_sum([{"w": encode(np.array([1.0, 2.0]))}, {"w": encode(np.array([0.5, -4.0]))}])["w"].tolist()
    [1.5, -2.0]
    """
    result = {}
    with np.errstate(over="ignore"):
        for name in masked[0]:
            total = np.zeros_like(np.asarray(masked[0][name], dtype=np.uint64))
            for item in masked:
                total = total + np.asarray(item[name], dtype=np.uint64)
            result[name] = decode(total)
    return result


def context_bytes(code_id: str, round_number: int, cohort: Mapping[str, str]) -> bytes:
    """The context masks are bound to: the code, the round and the exact cohort.

    A restarted round (a smaller cohort) gets fresh masks.

    Parameters
    ----------
    code_id : str
        The approved code's id.
    round_number : int
        The round.
    cohort : Mapping of str to str
        Every site of the round → its public key (hex).

    Returns
    -------
    bytes
        ``"<code_id>/<round>/"`` followed by the sha256 of the sorted cohort.

    Examples
    --------
    >>> context = context_bytes("c0de", 2, {"b": "22", "a": "11"})
    >>> context[:7], context == context_bytes("c0de", 2, {"a": "11", "b": "22"}), len(context)
    (b'c0de/2/', True, 39)
    """
    members = ",".join(f"{name}={key}" for name, key in sorted(cohort.items()))
    return f"{code_id}/{round_number}/".encode() + hashlib.sha256(members.encode()).digest()
