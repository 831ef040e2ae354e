"""Secure aggregation by pairwise additive masking (Bonawitz et al. 2017, without the dropout-recovery shares).

Each site holds an X25519 key pair (its secret in the state dir, 0600). For a
round, the researcher names the cohort: every participating site's public key.
Sites ``i`` and ``j`` derive the same seed from ``X25519(sk_i, pk_j)`` (HKDF, bound
to the job, the round and the tensor), expand it into a uniform mask over
``Z/2^64``, and site ``i`` adds the mask when ``i < j`` and subtracts it otherwise.
Each site releases ``encode(n_i · w_i) + Σ masks`` in fixed point; in the sum over
the cohort the masks cancel, so the researcher learns ``Σ n_i · w_i`` (and the
public counts ``n_i``) but no single site's update. A site that drops out breaks
the cancellation: the researcher restarts the round with the survivors.

Example:
    >>> import numpy as np
    >>> keys = {name: generate_private_key() for name in ("a", "b", "c")}
    >>> cohort = {name: public_key_hex(key) for name, key in keys.items()}
    >>> updates = {"a": (np.array([1.0, -2.0]), 10), "b": (np.array([0.5, 0.5]), 30), "c": (np.array([3.0, 0.0]), 60)}
    >>> masked = {n: mask_weights({"w": u * c}, n, keys[n], cohort, context=b"job-1/round-0") for n, (u, c) in updates.items()}
    >>> total = unmask_sum([masked[n] for n in cohort])["w"]
    >>> np.allclose(total, sum(u * c for u, c in updates.values())), np.allclose(masked["a"]["w"], 1.0)
    (True, False)
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from datasite_setup import read_private_file, write_private_file

FRACTION_BITS = 24  # fixed point: 2^-24 resolution, |values| up to 2^39 before wrapping
KEY_FILE = "secure_aggregation_key"


def generate_private_key():
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    return X25519PrivateKey.generate()


def public_key_hex(private_key) -> str:
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    return private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw).hex()


def load_or_create_site_key(state_dir: Path):
    """The site's X25519 secret, generated once into ``<state_dir>/secure_aggregation_key`` (0600)."""
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    path = Path(state_dir) / KEY_FILE
    if not path.exists():
        key = X25519PrivateKey.generate()
        from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

        write_private_file(
            path, key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption()).hex().encode()
        )
    return X25519PrivateKey.from_private_bytes(
        bytes.fromhex(read_private_file(path, "secure aggregation key").decode().strip())
    )


def encode(values: np.ndarray) -> np.ndarray:
    """Fixed point in Z/2^64 (two's complement)."""
    return (
        np.round(np.asarray(values, dtype=np.float64) * 2.0**FRACTION_BITS).astype(np.int64).view(np.uint64)
    )


def decode(values: np.ndarray) -> np.ndarray:
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
    weighted: Mapping[str, np.ndarray], site: str, private_key, cohort: Mapping[str, str], *, context: bytes
) -> dict[str, np.ndarray]:
    """``encode(weighted) + Σ_j ±mask_ij`` for every float tensor; ``cohort`` maps site name → public key (hex)."""
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
    """Sum the cohort's masked tensors (mod 2^64) and decode: the masks cancel."""
    result = {}
    with np.errstate(over="ignore"):
        for name in masked[0]:
            total = np.zeros_like(np.asarray(masked[0][name], dtype=np.uint64))
            for item in masked:
                total = total + np.asarray(item[name], dtype=np.uint64)
            result[name] = decode(total)
    return result


def context_bytes(code_id: str, round_number: int, cohort: Mapping[str, str]) -> bytes:
    """Binds masks to the code, the round and the exact cohort (a restarted round gets fresh masks)."""
    members = ",".join(f"{name}={key}" for name, key in sorted(cohort.items()))
    return f"{code_id}/{round_number}/".encode() + hashlib.sha256(members.encode()).digest()
