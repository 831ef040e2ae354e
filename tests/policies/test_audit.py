"""The chained audit log: intact logs verify, every kind of tampering is named by line, appends are safe across processes."""

from __future__ import annotations

import doctest
import json
import multiprocessing
import stat
from pathlib import Path

import pytest

import policies.audit
from policies.audit import GENESIS, AuditLog, verify_audit_log


def _log(tmp_path: Path, n: int = 5) -> AuditLog:
    log = AuditLog(tmp_path / "audit" / "audit.jsonl")
    for i in range(n):
        log.append("request", request_id=f"r{i}", requester="ada@university.example", n=i)
    return log


def _lines(log: AuditLog) -> list[str]:
    return log.path.read_text(encoding="utf-8").splitlines()


def _write(log: AuditLog, lines: list[str]) -> None:
    log.path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def _problem_lines(log: AuditLog) -> list[int]:
    return [p.line for p in verify_audit_log(log.path)]


def test_append_and_verify_intact(tmp_path: Path) -> None:
    log = _log(tmp_path)
    assert verify_audit_log(log.path) == []
    records = log.records()
    assert [r["seq"] for r in records] == [0, 1, 2, 3, 4]
    assert records[0]["prev"] == GENESIS
    assert all(b["prev"] == a["hash"] for a, b in zip(records, records[1:], strict=False))
    assert records[2]["request_id"] == "r2" and records[2]["event"] == "request"
    head = json.loads(log.head_path.read_text())
    assert head == {"hash": records[-1]["hash"], "count": 5}


def test_empty_and_missing_log_verify(tmp_path: Path) -> None:
    assert verify_audit_log(tmp_path / "none.jsonl") == []
    assert AuditLog(tmp_path / "none.jsonl").records() == []


def test_unknown_event_is_refused(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.jsonl")
    with pytest.raises(ValueError, match="unknown audit event"):
        log.append("coffee")
    assert not log.path.exists()


def test_edited_value_is_detected_on_its_line(tmp_path: Path) -> None:
    log = _log(tmp_path)
    lines = _lines(log)
    record = json.loads(lines[2])
    record["requester"] = "mallory@evil.example"
    lines[2] = json.dumps(record, sort_keys=True)
    _write(log, lines)
    problems = verify_audit_log(log.path)
    assert [p.line for p in problems] == [3]
    assert "edited" in problems[0].message


def test_edited_value_with_recomputed_hash_breaks_the_chain_after_it(tmp_path: Path) -> None:
    log = _log(tmp_path)
    lines = _lines(log)
    record = json.loads(lines[1])
    record["n"] = 99
    record["hash"] = policies.audit._line_hash(record)  # a forger who knows the hash rule
    lines[1] = json.dumps(record, sort_keys=True)
    _write(log, lines)
    problems = verify_audit_log(log.path)
    assert 3 in [p.line for p in problems]
    assert any("chain broken" in p.message for p in problems)


def test_removed_middle_line(tmp_path: Path) -> None:
    log = _log(tmp_path)
    lines = _lines(log)
    del lines[2]
    _write(log, lines)
    problems = verify_audit_log(log.path)
    assert problems
    assert problems[0].line == 3 and "chain broken" in problems[0].message
    assert any("ends early or late" in p.message for p in problems)


def test_removed_last_line_is_caught_by_the_head_file(tmp_path: Path) -> None:
    log = _log(tmp_path)
    _write(log, _lines(log)[:-1])
    problems = verify_audit_log(log.path)
    assert len(problems) == 1
    assert problems[0].line == 4
    assert "4 lines, 5 were written" in problems[0].message


def test_truncated_to_nothing(tmp_path: Path) -> None:
    log = _log(tmp_path)
    log.path.write_text("")
    problems = verify_audit_log(log.path)
    assert problems and "0 lines, 5 were written" in problems[0].message


def test_reordered_lines(tmp_path: Path) -> None:
    log = _log(tmp_path)
    lines = _lines(log)
    lines[1], lines[2] = lines[2], lines[1]
    _write(log, lines)
    problem_lines = _problem_lines(log)
    assert 2 in problem_lines and 3 in problem_lines
    assert all("chain broken" in p.message or "sequence" in p.message for p in verify_audit_log(log.path))


def test_inserted_forged_line(tmp_path: Path) -> None:
    log = _log(tmp_path)
    lines = _lines(log)
    previous = json.loads(lines[1])
    forged = {
        "seq": 2,
        "time": previous["time"],
        "event": "decision",
        "request_id": "r1",
        "decision": "approved",
        "prev": previous["hash"],
    }
    forged["hash"] = policies.audit._line_hash(forged)  # internally consistent, chained to line 2
    lines.insert(2, json.dumps(forged, sort_keys=True))
    _write(log, lines)
    problems = verify_audit_log(log.path)
    assert 2 not in [p.line for p in problems] and 3 not in [
        p.line for p in problems
    ]  # the forged line itself looks fine
    assert 4 in [p.line for p in problems]  # but the genuine line after it no longer chains
    assert any("ends early or late" in p.message for p in problems)


def test_forged_line_appended_at_the_end(tmp_path: Path) -> None:
    log = _log(tmp_path)
    last = log.records()[-1]
    forged = {"seq": 5, "time": last["time"], "event": "release", "code_id": "x", "prev": last["hash"]}
    forged["hash"] = policies.audit._line_hash(forged)
    with log.path.open("a") as handle:
        handle.write(json.dumps(forged, sort_keys=True) + "\n")
    problems = verify_audit_log(log.path)
    assert [p.line for p in problems] == [6]
    assert "6 lines, 5 were written" in problems[0].message


@pytest.mark.parametrize("garbage", ["not json at all {", "42", "[1, 2]", '"a string"', "null"])
def test_non_json_or_non_object_line(tmp_path: Path, garbage: str) -> None:
    log = _log(tmp_path)
    lines = _lines(log)
    lines[2] = garbage
    _write(log, lines)
    problems = verify_audit_log(log.path)
    assert problems[0].line == 3 and "JSON" in problems[0].message
    assert 4 in [p.line for p in problems]  # the next line's chain points at the replaced line


def test_file_modes(tmp_path: Path) -> None:
    log = _log(tmp_path, 2)
    assert stat.S_IMODE(log.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(log.head_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(log.path.parent.stat().st_mode) == 0o700
    assert not log.head_path.with_name(log.head_path.name + ".tmp").exists()


def _append_many(path: str, worker: int, count: int) -> None:
    log = AuditLog(Path(path))
    for i in range(count):
        log.append("execution", worker=worker, run=i)


def test_concurrent_appends_from_processes_keep_the_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    workers, count = 4, 25
    context = multiprocessing.get_context("fork")
    processes = [context.Process(target=_append_many, args=(str(path), w, count)) for w in range(workers)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(60)
        assert process.exitcode == 0
    assert verify_audit_log(path) == []
    records = AuditLog(path).records()
    assert len(records) == workers * count
    assert sorted((r["worker"], r["run"]) for r in records) == [
        (w, i) for w in range(workers) for i in range(count)
    ]


def test_module_doctest() -> None:
    result = doctest.testmod(policies.audit)
    assert result.attempted > 0 and result.failed == 0


@pytest.mark.parametrize("head", ["garbage", "[]", '{"hash": "x"}'])
def test_damaged_head_file_is_reported_not_a_crash(tmp_path: Path, head: str) -> None:
    log = _log(tmp_path, 3)
    log.head_path.write_text(head)
    problems = verify_audit_log(log.path)
    assert problems and "head file" in problems[-1].message


def test_deleted_head_file_is_reported(tmp_path: Path) -> None:
    log = _log(tmp_path, 3)
    log.head_path.unlink()
    problems = verify_audit_log(log.path)
    assert problems and "3 lines, 0 were written" in problems[-1].message


class _KilledBeforeTheHead(AuditLog):
    """A writer killed after its line is written and before the head is (the test_crash_resume race)."""

    def _write_head(self, last_hash: str, count: int, pending: str | None = None) -> None:
        if pending is None:
            raise KeyboardInterrupt("killed")
        super()._write_head(last_hash, count, pending)


def test_a_record_written_just_before_a_crash_is_adopted_not_a_broken_chain(tmp_path: Path) -> None:
    log = _log(tmp_path, 3)
    with pytest.raises(KeyboardInterrupt):
        _KilledBeforeTheHead(log.path).append("started", run_id="r")
    assert len(_lines(log)) == 4
    assert verify_audit_log(log.path) == []  # the head named it as being written
    log.append("aborted", run_id="r")  # the site, started again
    assert [r["event"] for r in log.records()][-2:] == ["started", "aborted"]
    assert verify_audit_log(log.path) == []


def test_a_line_torn_by_a_crash_is_removed_by_the_next_append(tmp_path: Path) -> None:
    log = _log(tmp_path, 3)
    with pytest.raises(KeyboardInterrupt):
        _KilledBeforeTheHead(log.path).append("started", run_id="r")
    lines = _lines(log)
    log.path.write_text("".join(line + "\n" for line in lines[:3]) + lines[3][:40], encoding="utf-8")
    assert verify_audit_log(log.path) != []  # torn: reported until the site writes again
    log.append("aborted", run_id="r")
    assert [r["event"] for r in log.records()] == ["request"] * 3 + ["aborted"]
    assert verify_audit_log(log.path) == []


def test_a_line_appended_by_someone_else_after_a_crash_is_still_reported(tmp_path: Path) -> None:
    log = _log(tmp_path, 3)
    with pytest.raises(KeyboardInterrupt):
        _KilledBeforeTheHead(log.path).append("started", run_id="r")
    lines = _lines(log)
    forged = {"seq": 3, "time": 0, "event": "release", "code_id": "x", "prev": log.records()[2]["hash"]}
    forged["hash"] = policies.audit._line_hash(forged)
    _write(log, [*lines[:3], json.dumps(forged, sort_keys=True)])
    assert verify_audit_log(log.path) != []
    log.append("aborted", run_id="r")  # not adopted: it is not the line the head named
    assert verify_audit_log(log.path) != []
