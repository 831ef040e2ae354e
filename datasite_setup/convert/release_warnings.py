"""Clients too small to release anything: the converter's and ``verify``'s warning.

A site whose training or validation split has fewer than its release minimum
(``[release] min_samples``, default ``RELEASE_MIN_SAMPLES``) refuses every job's
output. Such a client is valid federated format, so this is a warning, not a
problem: it names the clients, their split sizes, the minimum and the fix.
"""

from __future__ import annotations

import math
from typing import Any

from datasite_setup.release_minimum import RELEASE_MIN_SAMPLES

_LISTED = 8  # clients named one by one; the rest are counted


def small_client_warnings(federation: dict[str, Any], minimum: int = RELEASE_MIN_SAMPLES) -> list[str]:
    """Warnings for the clients whose train or val split is below ``minimum``.

    Parameters
    ----------
    federation : dict
        A ``federation.json`` manifest (``clients.<name>.split_counts``, ``partition.val_fraction``).
    minimum : int, default RELEASE_MIN_SAMPLES
        The sites' release minimum (``[release] min_samples``).

    Returns
    -------
    list of str
        One message naming the clients (train/val counts), the minimum and the fix; empty when every
        client reaches the minimum.

    Examples
    --------
    >>> federation = {
    ...     "partition": {"val_fraction": 0.2},
    ...     "clients": {"a": {"split_counts": {"train": 2, "val": 0}},
    ...                 "b": {"split_counts": {"train": 80, "val": 20}}},
    ... }
    >>> print(small_client_warnings(federation)[0])
    1 of 2 clients have fewer than 20 training or validation samples, the sites' default release minimum
    ([release] min_samples): their sites will release nothing: a (train 2, val 0). Use fewer clients
    (at most 1 for 102 images with --val-fraction 0.2).
    >>> small_client_warnings(federation, minimum=1)
    ['1 of 2 clients have fewer than 1 training or validation samples, ...']
    """
    clients = federation.get("clients", {})
    small = {
        name: (counts.get("train", 0), counts.get("val", 0))
        for name, client in clients.items()
        for counts in [client.get("split_counts", {})]
        if min(counts.get("train", 0), counts.get("val", 0)) < minimum
    }
    if not small:
        return []
    listed = ", ".join(
        f"{name} (train {train}, val {val})" for name, (train, val) in list(small.items())[:_LISTED]
    )
    if len(small) > _LISTED:
        listed += f" and {len(small) - _LISTED} more"
    default = (
        "the sites' default release minimum" if minimum == RELEASE_MIN_SAMPLES else "the release minimum"
    )
    return [
        f"{len(small)} of {len(clients)} clients have fewer than {minimum} training or validation samples, "
        f"{default} ([release] min_samples): their sites will release nothing: {listed}. "
        f"{_fix(federation, minimum)}"
    ]


def _fix(federation: dict[str, Any], minimum: int) -> str:
    val_fraction = float(federation.get("partition", {}).get("val_fraction", 0.2))
    if val_fraction <= 0:
        return (
            "With --val-fraction 0 no client has validation samples: convert again with --val-fraction 0.2."
        )
    images = sum(
        sum(client.get("split_counts", {}).values()) for client in federation.get("clients", {}).values()
    )
    # A client needs about minimum / share samples for its smaller split to reach the minimum.
    per_client = math.ceil(minimum / min(val_fraction, 1 - val_fraction))
    most = max(1, images // per_client)
    fewer = f"Use fewer clients (at most {most} for {images} images with --val-fraction {val_fraction:g})"
    if len(federation.get("clients", {})) > most:
        return fewer + "."
    # Enough images overall: the scheme's skew made these clients small.
    return fewer + " or sizes less skewed (a larger --alpha or --min-partition-size, or --scheme stratified)."
