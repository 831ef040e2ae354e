"""Connect to every hospital's datasite as a researcher and explore what is there (mocks only).

Examples
--------
In a notebook, with the credentials file ``fedimg up`` wrote:

>>> from researcher import Federation
>>> federation = Federation.from_credentials(
...     "state/secrets/researchers/ada@university.example.json"
... )  # doctest: +SKIP
>>> federation.summary()  # sites, datasets, counts per split  # doctest: +SKIP
>>> federation.show_mocks(per_site=8)  # a grid of mock images per site  # doctest: +SKIP
>>> images, labels = federation.mock_arrays("hospital_a", "train")  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from datasite_setup import DATASET_PREFIX, parse_dataset_info

ASSETS = ("train_images", "train_labels", "val_images", "val_labels")
_Result = TypeVar("_Result")


class FederationError(Exception):
    """The federation cannot be used as asked (site unreachable, datasets inconsistent…).

    The message says which site.
    """


@dataclass
class Site:
    """One connected datasite: its client, its fedimg dataset and that dataset's description.

    Parameters
    ----------
    name : str
        The site's name in the federation, e.g. ``"hospital_a"``.
    url : str
        Where its datasite answers.
    client : Any
        The researcher's logged-in PySyft client.
    dataset : Any
        The site's fedimg dataset (PySyft).
    info : dict
        The dataset's description (``label_map``, ``image``, ``split_counts``, ``label_counts``...).

    Examples
    --------
    >>> site = Site("hospital_a", "http://127.0.0.1:18081", None, None, {"label_map": {"dog": 1, "cat": 0}})
    >>> site.label_names
    ['cat', 'dog']
    """

    name: str
    url: str
    client: Any
    dataset: Any
    info: dict

    def asset(self, name: str) -> Any:
        """The dataset's asset ``name``, one of ``ASSETS`` (``train_images``, ``train_labels``...)."""
        return self.dataset.assets[name]

    @property
    def label_names(self) -> list[str]:
        """The label names, in label-index order."""
        return sorted(self.info["label_map"], key=self.info["label_map"].get)


def _quiet(call: Callable[..., _Result], *args: Any, **kwargs: Any) -> _Result:
    with contextlib.redirect_stdout(io.StringIO()):
        return call(*args, **kwargs)


def connect_site(name: str, url: str, email: str, password: str) -> Site:
    """Log in to one site and find its (single, current) fedimg dataset.

    Parameters
    ----------
    name : str
        The site's name in the federation.
    url : str
        Where its datasite answers.
    email, password : str
        The researcher's account at that site.

    Returns
    -------
    Site
        The connected site with its dataset and the dataset's description.

    Raises
    ------
    FederationError
        When the login fails, or the site does not hold exactly one fedimg dataset with a fedimg
        description.

    Examples
    --------
    >>> site = connect_site(
    ...     "hospital_a", "http://127.0.0.1:18081", "ada@university.example", "..."
    ... )  # doctest: +SKIP
    """
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
    """All sites a researcher can use, with their fedimg datasets.

    Parameters
    ----------
    sites : list of Site
        The connected sites; they must agree on the label map and the image spec.

    Raises
    ------
    FederationError
        When there is no site, or the sites disagree on the label map or the image spec.

    Examples
    --------
    >>> from types import SimpleNamespace
    >>> info = {
    ...     "label_map": {"cat": 0, "dog": 1},
    ...     "image": {"size": 32, "mode": "L"},
    ...     "split_counts": {"train": 8, "val": 2},
    ...     "label_counts": {"train": [5, 3], "val": [1, 1]},
    ... }
    >>> dataset = SimpleNamespace(name="fedimg-hospital_a-0123456789ab")
    >>> federation = Federation([Site("hospital_a", "http://127.0.0.1:18081", None, dataset, info)])
    >>> federation.names, federation.label_names, federation.image_spec
    (['hospital_a'], ['cat', 'dog'], {'size': 32, 'mode': 'L'})
    >>> federation.summary()[["site", "split", "samples", "cat", "dog"]].values.tolist()
    [['hospital_a', 'train', 8, 5, 3], ['hospital_a', 'val', 2, 1, 1]]
    """

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
        """Connect with a researcher credentials file written by ``fedimg up``.

        Parameters
        ----------
        path : str or Path
            The credentials file: the researcher's email, and one URL and password per site.
        sites : list of str, optional
            Connect to these sites only (default: every site in the file).

        Returns
        -------
        Federation
            The connected sites.

        Raises
        ------
        FederationError
            When the file has no credentials for a site asked for, or a site cannot be used.

        Examples
        --------
        >>> federation = Federation.from_credentials(
        ...     "state/secrets/researchers/ada@university.example.json", sites=["hospital_a", "hospital_b"]
        ... )  # doctest: +SKIP
        """
        document = json.loads(Path(path).read_text())
        wanted = sites or sorted(document["sites"])
        missing = sorted(set(wanted) - set(document["sites"]))
        if missing:
            raise FederationError(f"{path}: no credentials for site(s) {missing}")
        email = document["email"]
        connected = []
        for name in wanted:
            credentials = document["sites"][name]
            connected.append(connect_site(name, credentials["url"], email, credentials["password"]))
        return cls(connected)

    @classmethod
    def from_urls(cls, sites: dict[str, str], email: str, passwords: dict[str, str]) -> Federation:
        """Connect to ``{name: url}`` with one password per site.

        Parameters
        ----------
        sites : dict of str to str
            Site name → datasite URL.
        email : str
            The researcher's account (the same at every site).
        passwords : dict of str to str
            Site name → the researcher's password there.

        Returns
        -------
        Federation
            The connected sites.

        Examples
        --------
        >>> federation = Federation.from_urls(
        ...     {"hospital_a": "http://127.0.0.1:18081"}, "ada@university.example", {"hospital_a": "..."}
        ... )  # doctest: +SKIP
        """
        return cls([connect_site(name, url, email, passwords[name]) for name, url in sites.items()])

    @property
    def names(self) -> list[str]:
        """The site names, in the order the sites were given."""
        return list(self.sites)

    @property
    def label_map(self) -> dict[str, int]:
        """Label name → label index (the same at every site)."""
        return next(iter(self.sites.values())).info["label_map"]

    @property
    def label_names(self) -> list[str]:
        """The label names, in label-index order."""
        return sorted(self.label_map, key=self.label_map.__getitem__)

    @property
    def image_spec(self) -> dict:
        """The sites' image format, e.g. ``{"size": 32, "mode": "L"}``."""
        return next(iter(self.sites.values())).info["image"]

    def summary(self) -> Any:
        """A table (pandas) of sites, datasets and per-split, per-label counts.

        Returns
        -------
        pandas.DataFrame
            One row per site and split: ``site``, ``dataset``, ``split``, ``samples`` and one column
            per label.
        """
        import pandas as pd

        rows = []
        for site in self.sites.values():
            for split, count in site.info["split_counts"].items():
                # label_counts comes from the site's description: zip as the table always did
                per_label = dict(zip(self.label_names, site.info["label_counts"][split], strict=False))
                row = {"site": site.name, "dataset": site.dataset.name, "split": split, "samples": count}
                rows.append({**row, **per_label})
        return pd.DataFrame(rows)

    def mock_arrays(self, site: str, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
        """The mock images and labels of one site and split.

        Parameters
        ----------
        site : str
            The site's name.
        split : {"train", "val"}, default "train"
            Which split's mocks.

        Returns
        -------
        tuple of (ndarray, ndarray)
            Images ``(N, C, H, W)`` uint8 and labels ``(N,)``: generated, no real pixels.
        """
        target = self.sites[site]
        images = np.asarray(target.asset(f"{split}_images").mock)
        labels = np.asarray(target.asset(f"{split}_labels").mock)
        return images, labels

    def show_mocks(self, per_site: int = 8, split: str = "train") -> Any:
        """A matplotlib figure: ``per_site`` mock images of every site, titled with their labels.

        Parameters
        ----------
        per_site : int, default 8
            How many images per site (one row per site).
        split : {"train", "val"}, default "train"
            Which split's mocks.

        Returns
        -------
        matplotlib.figure.Figure
            The grid of images.
        """
        import matplotlib.pyplot as plt

        size = (1.2 * per_site, 1.4 * len(self.sites))
        figure, axes = plt.subplots(len(self.sites), per_site, figsize=size, squeeze=False)
        for row, name in enumerate(self.sites):
            images, labels = self.mock_arrays(name, split)
            for column in range(per_site):
                axis = axes[row][column]
                axis.axis("off")
                if column < len(images):
                    image = images[column].transpose(1, 2, 0)
                    pixels = image[..., 0] if image.shape[2] == 1 else image
                    axis.imshow(pixels, cmap="gray", vmin=0, vmax=255)
                    axis.set_title(self.label_names[labels[column]], fontsize=7)
            first_axis = axes[row][0]
            first_axis.text(
                -0.1, 0.5, name, transform=first_axis.transAxes, ha="right", va="center", fontsize=8
            )
        figure.suptitle(f"mock {split} images (generated, no real pixels)")
        return figure
