"""Keyed pseudonyms (HMAC-SHA256) for samples and groups.

Without the federation secret a pseudonym cannot be linked back to a file or a
patient; with it, the same input always gets the same pseudonym, so a re-run is
reproducible and a data owner can re-identify a sample when they must. The
``source_hmac`` column of ``metadata.csv`` is keyed the same way: a plain hash
of the source file would link each pseudonym to its original for anyone who
holds the originals, without the secret.
"""

from __future__ import annotations

import hashlib
import hmac

PSEUDONYM_HEX_CHARS = 20  # 80 bits: collision-free in practice for any realistic collection


class Pseudonymiser:
    """Derives ``sample_id``/``group_id`` pseudonyms from a federation secret.

    Each pseudonym is the first ``PSEUDONYM_HEX_CHARS`` hex digits of an HMAC-SHA256
    keyed by the secret, over a namespace (sample, group) and the value.

    Parameters
    ----------
    secret : bytes
        The federation secret (``load_secret``).

    Examples
    --------
    >>> p = Pseudonymiser(b"0123456789abcdef0123")
    >>> p.sample_id("9f86d081") == p.sample_id("9f86d081")
    True
    >>> len(p.group_id("patient-17"))
    20
    >>> p.group_id("17") == Pseudonymiser(b"another secret, other ids").group_id("17")
    False
    """

    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def _derive(self, namespace: str, value: str) -> str:
        message = f"{namespace}\x00{value}".encode()
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()[:PSEUDONYM_HEX_CHARS]

    def sample_id(self, source_sha256: str) -> str:
        """Pseudonym of one image, from the sha256 of its source bytes.

        Parameters
        ----------
        source_sha256 : str
            Hex sha256 of the source file.

        Returns
        -------
        str
            20 hex digits.
        """
        return self._derive("sample", source_sha256)

    def group_id(self, group_key: str) -> str:
        """Pseudonym of a group (patient).

        Parameters
        ----------
        group_key : str
            The raw id from the labels CSV (or the sample's own key when it has none).

        Returns
        -------
        str
            20 hex digits.
        """
        return self._derive("group", group_key)

    def source_hmac(self, source_sha256: str) -> str:
        """The ``source_hmac`` of an image: finds its original for whoever holds the secret and the originals.

        Parameters
        ----------
        source_sha256 : str
            Hex sha256 of the source file (``sha256_file`` of the original).

        Returns
        -------
        str
            64 hex digits: the full HMAC-SHA256 over the ``source`` namespace.

        Examples
        --------
        >>> p = Pseudonymiser(b"0123456789abcdef0123")
        >>> digest = p.source_hmac("9f86d081")
        >>> len(digest), digest == Pseudonymiser(b"another secret, other ids").source_hmac("9f86d081")
        (64, False)
        """
        message = f"source\x00{source_sha256}".encode()
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()

    def fingerprint(self) -> str:
        """A public id of the secret, so two outputs can be told to share (or not) a secret.

        Returns
        -------
        str
            20 hex digits; recorded in ``federation.json``.
        """
        return self._derive("fingerprint", "fedimg")
