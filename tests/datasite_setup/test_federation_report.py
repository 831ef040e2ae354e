"""``report.md``, the per-client table and ``label_distribution.png``: complete, anonymous, deterministic."""

from __future__ import annotations

import io
import json
import subprocess
from pathlib import Path

import pytest
from PIL import Image
from rich.console import Console

from datasite_setup.convert.federation_report import (
    print_client_table,
    render_label_distribution,
    render_report_markdown,
)
from datasite_setup.convert.pipeline import convert
from tests.datasite_setup.test_convert import (
    SECRET,
    csv_options,
    fedimg_command,
    make_csv_dataset,
    read_outputs,
    run_cli,
    subprocess_env,
)

LABELS = ["benign", "malignant", "normal"]


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> dict:
    base = tmp_path_factory.mktemp("report")
    dataset = make_csv_dataset(base / "src", patients=15)
    outs = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FEDIMG_SECRET", SECRET)
        outs["stratified"] = base / "stratified"
        convert(csv_options(dataset, outs["stratified"], "stratified", num_clients=3))
        outs["natural"] = base / "natural"
        convert(csv_options(dataset, outs["natural"], "natural"))
        outs["shards"] = base / "shards"
        convert(csv_options(dataset, outs["shards"], "shards", num_clients=3, shards_per_client=1))
    return {"dataset": dataset, **outs}


def federation(out: Path) -> dict:
    return json.loads((out / "federation.json").read_text())


def markdown_rows(report: str) -> dict[tuple[str, str], dict[str, str]]:
    """The per-client table of report.md: (client, split) -> column -> cell."""
    lines = [line for line in report.splitlines() if line.startswith("|")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    table = {}
    for line in lines[2:]:
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if len(cells) != len(header):
            break  # the next table (reasons) starts
        row = dict(zip(header, cells, strict=True))
        table[(row["client"], row["split"])] = row
    return table


@pytest.mark.parametrize("scheme", ["stratified", "natural", "shards"])
def test_report_md_table_has_every_client_split_and_label_count(converted: dict, scheme: str) -> None:
    out = converted[scheme]
    fed = federation(out)
    report = (out / "report.md").read_text(encoding="utf-8")
    assert report == render_report_markdown(fed)
    table = markdown_rows(report)
    assert set(table) == {(client, split) for client in fed["clients"] for split in ("train", "val")}
    for client, data in fed["clients"].items():
        for split in ("train", "val"):
            row = table[(client, split)]
            for label in LABELS:
                assert int(row[label]) == data["label_counts"][split][label]
            assert int(row["total"]) == data["split_counts"][split]
            assert int(row["groups"]) == data["num_groups"]
    assert (
        sum(int(row["total"]) for row in table.values())
        == fed["totals"]["num_samples"]
        == len(converted["dataset"].rows)
    )


def test_report_md_summarises_the_run(converted: dict) -> None:
    report = (converted["shards"] / "report.md").read_text()
    fed = federation(converted["shards"])
    assert "- partition: shards (shards_per_client=1), seed 0, val fraction 0.2, group-aware" in report
    assert "- images: 16x16 L PNG, resize policy letterbox" in report
    inputs = fed["inputs"]
    assert (
        f"- inputs: {inputs['files_seen']} files seen, {inputs['accepted']} accepted, 0 quarantined, 1 skipped"
        in report
    )
    assert "| labels_csv | 1 |" in report
    assert "## Quarantined inputs (see quarantine.jsonl)\n\nnone" in report
    assert "![label distribution](label_distribution.png)" in report
    natural = (converted["natural"] / "report.md").read_text()
    assert "- partition: natural (client_values=['site_a', 'site_b', 'site_c'])" in natural
    assert "0 groups (0 samples) moved" in natural
    stratified = (converted["stratified"] / "report.md").read_text()
    assert "- partition: stratified, seed 0," in stratified


def test_report_md_names_no_file_and_no_pseudonym(converted: dict) -> None:
    for scheme in ("stratified", "natural", "shards"):
        out = converted[scheme]
        report = (out / "report.md").read_text(encoding="utf-8")
        for rows in read_outputs(out).values():
            for row in rows:
                for secretish in (row.sample_id, row.group_id, row.source_hmac, row.file_name):
                    assert secretish not in report
        for source in converted["dataset"].rows:
            for part in source["path"].split("/"):
                assert part not in report
            assert source["patient_id"] not in report


def test_client_table_is_complete_at_any_terminal_width(converted: dict) -> None:
    fed = federation(converted["stratified"])
    for width in (30, 200):
        buffer = io.StringIO()
        print_client_table(Console(file=buffer, width=width, color_system=None), fed)
        text = buffer.getvalue()
        assert "…" not in text
        lines = text.splitlines()
        for client, data in fed["clients"].items():
            line = next(line for line in lines if line.split() and line.split()[0] == client)
            numbers = [int(cell) for cell in line.split()[2:]]
            assert numbers == [
                data["num_groups"],
                data["split_counts"]["train"],
                *(data["label_counts"]["train"][label] for label in LABELS),
            ]
        for label in LABELS:
            assert label in text
        assert f"{fed['totals']['num_samples']} samples in 3 clients (stratified)" in text


def test_plot_is_a_valid_png_and_deterministic(converted: dict) -> None:
    out = converted["stratified"]
    data = (out / "label_distribution.png").read_bytes()
    with Image.open(io.BytesIO(data)) as image:
        image.verify()
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "PNG" and image.width >= 300 and image.height >= 300
        assert "Software" not in image.info  # no tool/version/timestamp metadata
    fed = federation(out)
    assert render_label_distribution(fed) == data
    # The plot reflects the counts: another partition draws another picture.
    assert render_label_distribution(federation(converted["shards"])) != data


def test_fedimg_report_cli_prints_the_table_and_rewrites_the_plot_identically(
    converted: dict, tmp_path: Path
) -> None:
    import shutil

    out = tmp_path / "out"
    shutil.copytree(converted["natural"], out)
    written_by_convert = (out / "label_distribution.png").read_bytes()
    (out / "label_distribution.png").unlink()
    # In a fresh process, so determinism does not hinge on matplotlib state shared with convert.
    result = subprocess.run(
        [*fedimg_command(), "report", str(out)],
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert (out / "label_distribution.png").read_bytes() == written_by_convert
    for client in ("site_a", "site_b", "site_c"):
        assert client in result.stdout
    assert "label_distribution.png" in result.stdout


def test_fedimg_report_in_process_matches_and_exit_codes(converted: dict, tmp_path: Path) -> None:
    import shutil

    out = tmp_path / "out"
    shutil.copytree(converted["shards"], out)
    before = (out / "label_distribution.png").read_bytes()
    code, stdout, err = run_cli(["report", out])
    assert code == 0, err
    assert (out / "label_distribution.png").read_bytes() == before
    fed = federation(out)
    for client, data in fed["clients"].items():
        assert client in stdout
        assert str(data["split_counts"]["train"]) in stdout
    code, _, err = run_cli(["report", tmp_path / "nothing_here"])
    assert code == 2 and "federation.json" in err
