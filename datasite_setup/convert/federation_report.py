"""Human-readable views of a federation: the per-client table, ``report.md`` and the label plot.

Everything here reads ``federation.json`` only, so it names no file and shows
no pseudonym: the counts are all a reader needs to judge a partition.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table

from datasite_setup.convert.federated_format import PLOT_FILE, REPORT_FILE, SPLITS, write_bytes
from datasite_setup.terminal import print_table


def label_names(federation: dict[str, Any]) -> list[str]:
    """The federation's labels, in label-index order.

    Parameters
    ----------
    federation : dict
        The ``federation.json`` manifest.

    Returns
    -------
    list of str
        The keys of ``label_map``, sorted by their index.

    Examples
    --------
    >>> label_names({"label_map": {"normal": 1, "benign": 0, "malignant": 2}})
    ['benign', 'normal', 'malignant']
    """
    label_map = federation["label_map"]
    return sorted(label_map, key=label_map.get)


def client_table(federation: dict[str, Any]) -> Table:
    """One row per client and split: groups, total and samples per label.

    Parameters
    ----------
    federation : dict
        The ``federation.json`` manifest.

    Returns
    -------
    rich.table.Table
        The table, titled with the totals and the scheme.

    Examples
    --------
    >>> import io
    >>> from pathlib import Path
    >>> from PIL import Image
    >>> from rich.console import Console
    >>> from datasite_setup.convert.pipeline import ConvertOptions, convert
    >>> for i in range(8):
    ...     Path(f"src/{i % 2}").mkdir(parents=True, exist_ok=True)
    ...     Image.new("L", (8, 8), 30 * i).save(f"src/{i % 2}/{i}.png")
    >>> options = ConvertOptions(Path("src"), Path("fed_table"), "stratified", num_clients=2,
    ...                          val_fraction=0.25, secret_file=Path("secret"), show_progress=False)
    >>> console = Console(file=io.StringIO(), width=60)
    >>> console.print(client_table(convert(options).federation))
    >>> print(console.file.getvalue())
        8 samples in 2 clients (stratified)
     client     split   groups   total   0   1
     ─────────────────────────────────────────
     client_0   train        4       3   2   1
                val                  1   0   1
     client_1   train        4       3   2   1
                val                  1   0   1
    """
    totals = federation["totals"]
    scheme = federation["partition"]["scheme"]
    labels = label_names(federation)
    table = Table(
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        padding=(0, 1),
        title=f"{totals['num_samples']} samples in {totals['num_clients']} clients ({scheme})",
    )
    for column in ("client", "split", "groups", "total", *labels):
        text = column in ("client", "split")
        table.add_column(column, justify="left" if text else "right", no_wrap=True)
    for name, client in federation["clients"].items():
        for split in SPLITS:
            # The client's name and group count head its first split's row only.
            first = split == SPLITS[0]
            counts = client["label_counts"][split]
            table.add_row(
                name if first else "",
                split,
                str(client["num_groups"]) if first else "",
                str(client["split_counts"][split]),
                *(str(counts[label]) for label in labels),
            )
        table.add_section()
    return table


def print_client_table(console: Console, federation: dict[str, Any]) -> None:
    """Print ``client_table`` at its natural width (a narrow terminal scrolls, counts stay whole).

    Parameters
    ----------
    console : rich.console.Console
        Where to print.
    federation : dict
        The ``federation.json`` manifest.
    """
    print_table(console, client_table(federation))


def render_report_markdown(federation: dict[str, Any]) -> str:
    """``report.md``: what was converted, how it was split, and what was rejected or skipped.

    Parameters
    ----------
    federation : dict
        The ``federation.json`` manifest.

    Returns
    -------
    str
        The Markdown text; identical for identical manifests.

    Examples
    --------
    >>> from pathlib import Path
    >>> from PIL import Image
    >>> from datasite_setup.convert.pipeline import ConvertOptions, convert
    >>> for i in range(8):
    ...     Path(f"src/{i % 2}").mkdir(parents=True, exist_ok=True)
    ...     Image.new("L", (8, 8), 30 * i).save(f"src/{i % 2}/{i}.png")
    >>> options = ConvertOptions(Path("src"), Path("fed_report"), "stratified", num_clients=2,
    ...                          val_fraction=0.25, secret_file=Path("secret"), show_progress=False)
    >>> print(render_report_markdown(convert(options).federation))
    # Federated dataset report
    <BLANKLINE>
    - format: fedimg-federated v2, written by fedimg ...
    - images: 128x128 RGB PNG, resize policy letterbox
    - partition: stratified, seed 0, val fraction 0.25, group-aware
    - inputs: 8 files seen, 8 accepted, 0 quarantined, 0 skipped
    <BLANKLINE>
    ## Samples per client, split and label
    <BLANKLINE>
    | client | split | 0 | 1 | total | groups |
    |---|---|---|---|---|---|
    | client_0 | train | 2 | 1 | 3 | 4 |
    | client_0 | val | 0 | 1 | 1 | 4 |
    | client_1 | train | 2 | 1 | 3 | 4 |
    | client_1 | val | 0 | 1 | 1 | 4 |
    <BLANKLINE>
    ![label distribution](label_distribution.png)
    <BLANKLINE>
    ## Quarantined inputs (see quarantine.jsonl)
    <BLANKLINE>
    none
    <BLANKLINE>
    ## Skipped files
    <BLANKLINE>
    none
    <BLANKLINE>
    """
    labels = label_names(federation)
    partition, inputs, image = federation["partition"], federation["inputs"], federation["image"]
    written_by = f"written by fedimg {federation['tool']['version']}"
    scheme = " ".join(filter(None, (partition["scheme"], _params(partition["params"]))))
    quarantined, skipped = sum(inputs["quarantined"].values()), sum(inputs["skipped"].values())
    lines = [
        "# Federated dataset report",
        "",
        f"- format: {federation['format']} v{federation['schema_version']}, {written_by}",
        f"- images: {image['size']}x{image['size']} {image['mode']} PNG, resize policy {image['resize']}",
        f"- partition: {scheme}, seed {partition['seed']}, "
        f"val fraction {partition['val_fraction']}, group-aware",
        f"- inputs: {inputs['files_seen']} files seen, {inputs['accepted']} accepted, "
        f"{quarantined} quarantined, {skipped} skipped",
    ]
    if "reassigned_groups" in partition:
        moved = f"{partition['reassigned_groups']} groups ({partition['reassigned_samples']} samples)"
        lines.append(f"- natural partition: {moved} moved so no group spans two clients")
    lines += [
        "",
        "## Samples per client, split and label",
        "",
        "| client | split | " + " | ".join(labels) + " | total | groups |",
        "|" + "---|" * (len(labels) + 4),
    ]
    for name, client in federation["clients"].items():
        for split in SPLITS:
            counts = [str(client["label_counts"][split][label]) for label in labels]
            totals = f"{client['split_counts'][split]} | {client['num_groups']}"
            lines.append(f"| {name} | {split} | " + " | ".join(counts) + f" | {totals} |")
    lines += ["", "![label distribution](label_distribution.png)", ""]
    lines += _reason_section("Quarantined inputs (see quarantine.jsonl)", inputs["quarantined"])
    lines += _reason_section("Skipped files", inputs["skipped"])
    return "\n".join(lines) + "\n"


def _params(params: dict[str, Any]) -> str:
    if not params:
        return ""
    return "(" + ", ".join(f"{key}={value}" for key, value in sorted(params.items())) + ")"


def _reason_section(title: str, counts: dict[str, int]) -> list[str]:
    if not counts:
        return [f"## {title}", "", "none", ""]
    return [
        f"## {title}",
        "",
        "| reason | count |",
        "|---|---|",
        *(f"| {reason} | {n} |" for reason, n in counts.items()),
        "",
    ]


def plot_label_distribution(federation: dict[str, Any], path: Path) -> None:
    """Write ``render_label_distribution``'s plot to ``path``.

    Parameters
    ----------
    federation : dict
        The ``federation.json`` manifest.
    path : Path
        Where the PNG goes (folders are created).
    """
    write_bytes(path, render_label_distribution(federation))


def render_label_distribution(federation: dict[str, Any]) -> bytes:
    """Stacked bars of samples per label for every client (as Flower Datasets' label-distribution plot).

    Parameters
    ----------
    federation : dict
        The ``federation.json`` manifest.

    Returns
    -------
    bytes
        A PNG; identical for identical federations (no timestamp, fixed size).

    Examples
    --------
    >>> federation = {
    ...     "label_map": {"cat": 0, "dog": 1},
    ...     "partition": {"scheme": "iid"},
    ...     "clients": {
    ...         "a": {"label_counts": {"train": {"cat": 3, "dog": 1}, "val": {"cat": 1, "dog": 0}}},
    ...         "b": {"label_counts": {"train": {"cat": 1, "dog": 3}, "val": {"cat": 0, "dog": 1}}},
    ...     },
    ... }
    >>> png = render_label_distribution(federation)
    >>> png[:8] == b"\\x89PNG\\r\\n\\x1a\\n", png == render_label_distribution(federation)
    (True, True)
    """
    # Imported here: matplotlib takes a second to import, and only writing the plot needs it.
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    labels, clients = label_names(federation), list(federation["clients"])
    figure = Figure(figsize=(max(5.0, 1.0 + 0.6 * len(clients)), 4.0), dpi=100)
    axes = figure.add_subplot()
    bottom = [0] * len(clients)
    colours = matplotlib.colormaps["tab20" if len(labels) > 10 else "tab10"]
    for i, label in enumerate(labels):
        heights = [_samples_of_label(federation["clients"][client], label) for client in clients]
        axes.bar(clients, heights, bottom=bottom, label=label, color=colours(i % colours.N))
        bottom = [below + height for below, height in zip(bottom, heights, strict=True)]
    axes.set_xlabel("client")
    axes.set_ylabel("samples")
    axes.set_title(f"Label distribution per client ({federation['partition']['scheme']})")
    axes.legend(title="label", bbox_to_anchor=(1.02, 1), loc="upper left", fontsize="small")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()


def _samples_of_label(client: dict[str, Any], label: str) -> int:
    return sum(client["label_counts"][split][label] for split in SPLITS)


def write_report_files(out: Path, federation: dict[str, Any]) -> None:
    """Write ``report.md`` and ``label_distribution.png`` into ``out``.

    Parameters
    ----------
    out : Path
        The (partial) output folder.
    federation : dict
        Its ``federation.json`` manifest.
    """
    write_bytes(out / REPORT_FILE, render_report_markdown(federation).encode("utf-8"))
    plot_label_distribution(federation, out / PLOT_FILE)
