"""Human-readable views of a federation: the per-client table, ``report.md`` and the label plot.

Everything here reads ``federation.json`` only, so it names no file and shows
no pseudonym: the counts are all a reader needs to judge a partition.
"""

from __future__ import annotations

import io
from pathlib import Path

from rich import box
from rich.console import Console
from rich.table import Table

from datasite_setup.convert.federated_format import PLOT_FILE, REPORT_FILE, SPLITS, write_bytes
from datasite_setup.terminal import print_table


def label_names(federation: dict) -> list[str]:
    return sorted(federation["label_map"], key=federation["label_map"].get)


def client_table(federation: dict) -> Table:
    """One row per client and split: samples per label, total and groups."""
    labels = label_names(federation)
    table = Table(
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        padding=(0, 1),
        title=f"{federation['totals']['num_samples']} samples in {federation['totals']['num_clients']} clients ({federation['partition']['scheme']})",
    )
    for column in ("client", "split", "groups", "total", *labels):
        text = column in ("client", "split")
        table.add_column(column, justify="left" if text else "right", no_wrap=True)
    for name, client in federation["clients"].items():
        for split in SPLITS:
            counts = client["label_counts"][split]
            groups = str(client["num_groups"]) if split == SPLITS[0] else ""
            table.add_row(
                name if split == SPLITS[0] else "",
                split,
                groups,
                str(client["split_counts"][split]),
                *(str(counts[label]) for label in labels),
            )
        table.add_section()
    return table


def print_client_table(console: Console, federation: dict) -> None:
    print_table(console, client_table(federation))


def render_report_markdown(federation: dict) -> str:
    """``report.md``: what was converted, how it was split, and what was rejected or skipped."""
    labels = label_names(federation)
    partition, inputs, image = federation["partition"], federation["inputs"], federation["image"]
    lines = [
        "# Federated dataset report",
        "",
        f"- format: {federation['format']} v{federation['schema_version']}, written by fedimg {federation['tool']['version']}",
        f"- images: {image['size']}x{image['size']} {image['mode']} PNG, resize policy {image['resize']}",
        f"- partition: {' '.join(filter(None, (partition['scheme'], _params(partition['params']))))}, seed {partition['seed']}, "
        f"val fraction {partition['val_fraction']}, group-aware",
        f"- inputs: {inputs['files_seen']} files seen, {inputs['accepted']} accepted, "
        f"{sum(inputs['quarantined'].values())} quarantined, {sum(inputs['skipped'].values())} skipped",
    ]
    if "reassigned_groups" in partition:
        lines.append(
            f"- natural partition: {partition['reassigned_groups']} groups ({partition['reassigned_samples']} samples) moved so no group spans two clients"
        )
    lines += [
        "",
        "## Samples per client, split and label",
        "",
        "| client | split | " + " | ".join(labels) + " | total | groups |",
    ]
    lines.append("|" + "---|" * (len(labels) + 4))
    for name, client in federation["clients"].items():
        for split in SPLITS:
            counts = [str(client["label_counts"][split][label]) for label in labels]
            lines.append(
                f"| {name} | {split} | "
                + " | ".join(counts)
                + f" | {client['split_counts'][split]} | {client['num_groups']} |"
            )
    lines += ["", "![label distribution](label_distribution.png)", ""]
    lines += _reason_section("Quarantined inputs (see quarantine.jsonl)", inputs["quarantined"])
    lines += _reason_section("Skipped files", inputs["skipped"])
    return "\n".join(lines) + "\n"


def _params(params: dict) -> str:
    return "(" + ", ".join(f"{key}={value}" for key, value in sorted(params.items())) + ")" if params else ""


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


def plot_label_distribution(federation: dict, path: Path) -> None:
    """Stacked bars of samples per label for every client (as Flower Datasets' label-distribution plot)."""
    write_bytes(path, render_label_distribution(federation))


def render_label_distribution(federation: dict) -> bytes:
    """The plot as PNG bytes; identical for identical federations (no timestamp, fixed size)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    labels, clients = label_names(federation), list(federation["clients"])
    figure = Figure(figsize=(max(5.0, 1.0 + 0.6 * len(clients)), 4.0), dpi=100)
    axes = figure.add_subplot()
    bottom = [0] * len(clients)
    colours = matplotlib.colormaps["tab20" if len(labels) > 10 else "tab10"]
    for i, label in enumerate(labels):
        heights = [sum(federation["clients"][c]["label_counts"][s][label] for s in SPLITS) for c in clients]
        axes.bar(clients, heights, bottom=bottom, label=label, color=colours(i % colours.N))
        bottom = [b + h for b, h in zip(bottom, heights)]
    axes.set_xlabel("client")
    axes.set_ylabel("samples")
    axes.set_title(f"Label distribution per client ({federation['partition']['scheme']})")
    axes.legend(title="label", bbox_to_anchor=(1.02, 1), loc="upper left", fontsize="small")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()


def write_report_files(out: Path, federation: dict) -> None:
    """Write ``report.md`` and ``label_distribution.png`` into ``out``."""
    write_bytes(out / REPORT_FILE, render_report_markdown(federation).encode("utf-8"))
    plot_label_distribution(federation, out / PLOT_FILE)
