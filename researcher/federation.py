"""Connect to every hospital's datasite as a researcher and explore what is there (mocks only).

Example (in a notebook)::

    from researcher import Federation
    federation = Federation.from_credentials("state/secrets/researchers/ada@university.example.json")
    federation.summary()                   # sites, datasets, counts per split
    federation.show_mocks(per_site=8)      # a grid of mock images per site
    images, labels = federation.mock_arrays("hospital_a", "train")
"""

from __future__ import annotations

import contextlib
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from datasite_setup import DATASET_PREFIX, parse_dataset_info

ASSETS = ("train_images", "train_labels", "val_images", "val_labels")


class FederationError(Exception):
    """The federation cannot be used as asked (site unreachable, datasets inconsistent…); the message says which site."""


@dataclass
class Site:
    """One connected datasite: its client, its fedimg dataset and that dataset's description."""

    name: str
    url: str
    client: Any
    dataset: Any
    info: dict

    def asset(self, name: str) -> Any:
        return self.dataset.assets[name]

    @property
    def label_names(self) -> list[str]:
        return sorted(self.info["label_map"], key=self.info["label_map"].get)


def _quiet(call, *args, **kwargs):
    with contextlib.redirect_stdout(io.StringIO()):
        return call(*args, **kwargs)


def connect_site(name: str, url: str, email: str, password: str) -> Site:
    """Log in to one site and find its (single, current) fedimg dataset."""
    import syft as sy

    try:
        client = _quiet(sy.login, url=url, email=email, password=password)
    except Exception as exc:
        raise FederationError(f"site {name} ({url}): cannot log in as {email}: {exc}") from exc
    datasets = [d for d in client.datasets if d.name.startswith(DATASET_PREFIX)]
    if len(datasets) != 1:
        raise FederationError(
            f"site {name} ({url}): expected one fedimg dataset, found {[d.name for d in datasets]}"
        )
    dataset = datasets[0]
    description = (
        dataset.description.text if hasattr(dataset.description, "text") else str(dataset.description)
    )
    info = parse_dataset_info(description)
    if info is None:
        raise FederationError(f"site {name}: dataset {dataset.name} has no fedimg description")
    return Site(name, url, client, dataset, info)


class Federation:
    """All sites a researcher can use, with their fedimg datasets."""

    def __init__(self, sites: list[Site]) -> None:
        if not sites:
            raise FederationError("a federation needs at least one site")
        self.sites = {site.name: site for site in sites}
        maps = {site.name: site.info["label_map"] for site in sites}
        if len({json.dumps(m, sort_keys=True) for m in maps.values()}) != 1:
            raise FederationError(f"sites disagree on the label map: {maps}")
        images = {site.name: site.info["image"] for site in sites}
        if len({json.dumps(i, sort_keys=True) for i in images.values()}) != 1:
            raise FederationError(f"sites disagree on the image spec: {images}")

    @classmethod
    def from_credentials(cls, path: str | Path, *, sites: list[str] | None = None) -> Federation:
        """Connect with a researcher credentials file written by ``fedimg up`` (one URL and password per site)."""
        document = json.loads(Path(path).read_text())
        wanted = sites or sorted(document["sites"])
        missing = sorted(set(wanted) - set(document["sites"]))
        if missing:
            raise FederationError(f"{path}: no credentials for site(s) {missing}")
        return cls(
            [
                connect_site(
                    name,
                    document["sites"][name]["url"],
                    document["email"],
                    document["sites"][name]["password"],
                )
                for name in wanted
            ]
        )

    @classmethod
    def from_urls(cls, sites: dict[str, str], email: str, passwords: dict[str, str]) -> Federation:
        """Connect to ``{name: url}`` with one password per site."""
        return cls([connect_site(name, url, email, passwords[name]) for name, url in sites.items()])

    @property
    def names(self) -> list[str]:
        return list(self.sites)

    @property
    def label_map(self) -> dict[str, int]:
        return next(iter(self.sites.values())).info["label_map"]

    @property
    def label_names(self) -> list[str]:
        return sorted(self.label_map, key=self.label_map.get)

    @property
    def image_spec(self) -> dict:
        return next(iter(self.sites.values())).info["image"]

    def summary(self) -> Any:
        """A table (pandas) of sites, datasets and per-split, per-label counts."""
        import pandas as pd

        rows = []
        for site in self.sites.values():
            for split, count in site.info["split_counts"].items():
                rows.append(
                    {
                        "site": site.name,
                        "dataset": site.dataset.name,
                        "split": split,
                        "samples": count,
                        **dict(zip(self.label_names, site.info["label_counts"][split])),
                    }
                )
        return pd.DataFrame(rows)

    def mock_arrays(self, site: str, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
        """The mock images ``(N, C, H, W)`` uint8 and labels ``(N,)`` of one site and split."""
        target = self.sites[site]
        return np.asarray(target.asset(f"{split}_images").mock), np.asarray(
            target.asset(f"{split}_labels").mock
        )

    def show_mocks(self, per_site: int = 8, split: str = "train") -> Any:
        """A matplotlib figure: ``per_site`` mock images of every site, titled with their labels."""
        import matplotlib.pyplot as plt

        figure, axes = plt.subplots(
            len(self.sites), per_site, figsize=(1.2 * per_site, 1.4 * len(self.sites)), squeeze=False
        )
        for row, name in enumerate(self.sites):
            images, labels = self.mock_arrays(name, split)
            for column in range(per_site):
                axis = axes[row][column]
                axis.axis("off")
                if column < len(images):
                    image = images[column].transpose(1, 2, 0)
                    axis.imshow(
                        image[..., 0] if image.shape[2] == 1 else image, cmap="gray", vmin=0, vmax=255
                    )
                    axis.set_title(self.label_names[labels[column]], fontsize=7)
            axes[row][0].text(
                -0.1, 0.5, name, transform=axes[row][0].transAxes, ha="right", va="center", fontsize=8
            )
        figure.suptitle(f"mock {split} images (generated, no real pixels)")
        return figure
