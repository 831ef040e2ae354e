"""The contract between a site and its researchers about a site's dataset: its name and its description.

A site names the dataset it ingests ``fedimg-<client>-<version>`` and embeds a
machine-readable ``dataset_info`` (image spec, label map, per-split label counts,
the site's public facts) in the dataset's description. The site writes both
(``datasite_setup.site.ingest``); the researcher's client reads them
(``researcher.federation``). Both sides import this module, which imports nothing
of either.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

__all__ = ["DATASET_PREFIX", "DESCRIPTION_MARKER", "describe_dataset", "parse_dataset_info"]

DATASET_PREFIX = "fedimg-"
DESCRIPTION_MARKER = "fedimg-dataset-info"


def describe_dataset(info: dict[str, Any], label_names: Sequence[str]) -> str:
    """The dataset description a site publishes: one readable paragraph, then ``info`` as a JSON block.

    Parameters
    ----------
    info : dict
        The partition's ``dataset_info`` (``client``, ``image``, ``split_counts``, ...).
    label_names : sequence of str
        The label names, in label-index order.

    Returns
    -------
    str
        Markdown text; ``parse_dataset_info`` reads ``info`` back from it.

    Examples
    --------
    >>> info = {"client": "a", "image": {"size": 32, "mode": "L"}, "split_counts": {"train": 8, "val": 2}}
    >>> parse_dataset_info(describe_dataset(info, ["cat", "dog"])) == info
    True
    """
    image, counts = info["image"], info["split_counts"]
    images = f"{image['size']}x{image['size']} {image['mode']} images"
    return (
        f"Federated image partition of {info['client']}: {images}, "
        f"labels {', '.join(label_names)}; "
        f"train {counts['train']}, val {counts['val']}. "
        "Mocks are generated (same shapes and label counts, no real pixels).\n\n"
        f"```{DESCRIPTION_MARKER}\n{json.dumps(info, indent=1, sort_keys=True)}\n```\n"
    )


def parse_dataset_info(description: str) -> dict[str, Any] | None:
    """The ``dataset_info`` embedded in a dataset description.

    Parameters
    ----------
    description : str
        A dataset's description text, as the site published it.

    Returns
    -------
    dict or None
        The info, or None for a dataset fedimg did not write.

    Examples
    --------
    >>> parse_dataset_info("a dataset someone else uploaded") is None
    True
    """
    start = description.find(f"```{DESCRIPTION_MARKER}\n")
    if start < 0:
        return None
    body = description[start + len(DESCRIPTION_MARKER) + 4 :]
    info: dict[str, Any] = json.loads(body[: body.index("```")])
    return info
