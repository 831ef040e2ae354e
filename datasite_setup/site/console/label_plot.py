"""The label-distribution plot as inline SVG: one group of bars per label, one bar per split.

No plotting library (the console imports neither matplotlib nor PySyft, and the page
loads nothing from outside): a few rectangles and texts, every label escaped. The
numbers are also in the page's table; the SVG has a title and description for
screen readers.
"""

from __future__ import annotations

import html
from collections.abc import Mapping

SPLIT_COLOURS = ("#1f5fa8", "#d9822b", "#3a8f4b", "#8a4fa8")  # colour-blind-distinguishable, in split order
BAR_W, GAP, HEIGHT, LEFT, BOTTOM, TOP = 14, 10, 160, 44, 36, 24


def label_plot_svg(labels: Mapping[str, Mapping[str, int]], title: str = "Images per label and split") -> str:
    """An ``<svg class="label-plot">`` bar chart of image counts per label, one bar per split.

    Parameters
    ----------
    labels : mapping
        ``{split: {label: count}}``.
    title : str
        The chart's title (read by screen readers, shown as a tooltip).

    Returns
    -------
    str
        The SVG element, safe to insert in a page as is (every text escaped).

    Examples
    --------
    >>> svg = label_plot_svg({"train": {"0": 40, "1": 35}, "val": {"0": 10, "1": 9}})
    >>> svg.startswith('<svg class="label-plot"'), svg.count("<rect class=\\"bar\\""), "<script>" in svg
    (True, 4, False)
    >>> "&lt;b&gt;" in label_plot_svg({"train": {"<b>": 1}})
    True
    """
    splits = list(labels)
    names = sorted({str(label) for counts in labels.values() for label in counts}, key=label_order)
    peak = max([1, *(int(n) for counts in labels.values() for n in counts.values())])
    group = max(1, len(splits)) * BAR_W + GAP
    width = LEFT + max(1, len(names)) * group + GAP + 110  # room on the right for the legend
    height = TOP + HEIGHT + BOTTOM
    parts = [
        f'<svg class="label-plot" xmlns="http://www.w3.org/2000/svg" role="img" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}">',
        f"<title>{_text(title)}</title>",
        f"<desc>{_text(_description(labels, names))}</desc>",
        f'<line class="axis" x1="{LEFT}" y1="{TOP + HEIGHT}" x2="{width - 110}" y2="{TOP + HEIGHT}"/>',
        f'<text class="tick" x="{LEFT - 6}" y="{TOP + 4}" text-anchor="end">{peak:,}</text>',
        f'<text class="tick" x="{LEFT - 6}" y="{TOP + HEIGHT}" text-anchor="end">0</text>',
    ]
    for index, name in enumerate(names):
        x0 = LEFT + GAP + index * group
        for column, split in enumerate(splits):
            count = int({str(k): v for k, v in labels[split].items()}.get(name, 0))
            bar = round(HEIGHT * count / peak, 1)
            colour = SPLIT_COLOURS[column % len(SPLIT_COLOURS)]
            tip = _text(f"{split}, label {name}: {count:,}")
            parts.append(
                f'<rect class="bar" x="{x0 + column * BAR_W}" y="{TOP + HEIGHT - bar}" width="{BAR_W - 2}" '
                f'height="{bar}" fill="{colour}"><title>{tip}</title></rect>'
            )
        centre = x0 + (group - GAP) / 2
        parts.append(
            f'<text class="label" x="{centre}" y="{TOP + HEIGHT + 16}" '
            f'text-anchor="middle">{_text(name)}</text>'
        )
    for column, split in enumerate(splits):
        y = TOP + 14 + column * 18
        colour = SPLIT_COLOURS[column % len(SPLIT_COLOURS)]
        parts.append(f'<rect x="{width - 100}" y="{y - 10}" width="12" height="12" fill="{colour}"/>')
        parts.append(f'<text class="legend" x="{width - 84}" y="{y}">{_text(split)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def label_order(label: str) -> tuple[int, float, str]:
    """A sort key: numeric labels in numeric order (2 before 10), then the others alphabetically.

    Examples
    --------
    >>> sorted(["10", "cat", "2"], key=label_order)
    ['2', '10', 'cat']
    """
    try:
        return (0, float(label), label)
    except ValueError:
        return (1, 0.0, label)


def _description(labels: Mapping[str, Mapping[str, int]], names: list[str]) -> str:
    totals = ", ".join(
        f"{split}: {sum(int(n) for n in counts.values()):,} images" for split, counts in labels.items()
    )
    return f"{len(names)} labels; {totals}" if labels else "no images"


def _text(value: str) -> str:
    return html.escape(str(value), quote=True)
