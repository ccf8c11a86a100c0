"""The pre-send check in a second process (reskontro.transfer.check_worker): reading the file while it
is written, it must find exactly what the check in this process finds, including the errors
that need the file read a second time; a child that fails must never cost the check, and one
whose export is gone must stop."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from reskontro.transfer.check_worker import Announcing, CheckWorker
from reskontro.transfer.contract import check_transfer_file
from test_contract import XSD, customer, day_customers, day_entries, edit, invoice, render_day


def _through_worker(path: Path, db_url: str, xsd: Path = XSD, chunk: int = 4096):
    """Write `path`'s bytes as the export does: to a new file, announcing each chunk."""
    data = path.read_bytes()
    part = path.with_name(path.name + ".part")
    with CheckWorker(xsd) as worker, part.open("wb") as f:
        worker.begin(part, len(data), db_url)
        out = Announcing(f, worker)
        for i in range(0, len(data), chunk):
            out.write(data[i:i + chunk])
        f.flush()
        worker.done(f.tell())
        return worker.finish(), part


def _db(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'empty.db'}"


def _bad_files(tmp_path: Path) -> dict[str, Path]:
    entries = day_entries()
    entries[2] = replace(entries[2], kid="123456789")
    return {
        # a rule of the contract (not the XSD): a KID failing MOD10 and MOD11
        "kid": render_day(tmp_path / "kid", entries=entries),
        # an XSD error: the diagnosis reads the file a second time, by path
        "xsd": edit(render_day(tmp_path / "xsd"), ">-400.00<", ">-400.0<"),
        # repeated ids: confirmed by a second reading
        "duplicate": render_day(tmp_path / "dup", customers=day_customers() + [customer("C1")],
                                entries=day_entries() + [invoice("I5", "12.34", cur="SEK")]),
        "sequence": edit(render_day(tmp_path / "seq"), "<Sequence>1</Sequence>", "<Sequence>2</Sequence>"),
    }


def test_a_good_file_passes(tmp_path):
    errors, _part = _through_worker(render_day(tmp_path), _db(tmp_path))
    assert errors == []


@pytest.mark.parametrize("case", ["kid", "xsd", "duplicate", "sequence"])
def test_the_child_finds_what_the_check_here_finds(tmp_path, case):
    for d in ("kid", "xsd", "dup", "seq"):
        (tmp_path / d).mkdir()
    path = _bad_files(tmp_path)[case]
    errors, part = _through_worker(path, _db(tmp_path), chunk=1000)
    here = check_transfer_file(part, XSD)
    assert here, "the file should fail"
    assert errors == here
    assert all(e.file == part.name for e in errors)


def test_a_child_that_fails_answers_none_and_never_blocks_the_writer(tmp_path):
    missing = tmp_path / "no-such.xsd"             # the child dies at start-up
    path = render_day(tmp_path)
    big = path.read_bytes() * 200
    part = tmp_path / "big.xml.part"
    with CheckWorker(missing) as worker, part.open("wb") as f:
        worker.begin(part, len(big), _db(tmp_path))
        out = Announcing(f, worker)
        for i in range(0, len(big), 1 << 16):
            out.write(big[i:i + (1 << 16)])
        worker.done(len(big))
        assert worker.finish() is None
    assert part.stat().st_size == len(big)         # every byte reached the file


def test_a_child_that_cannot_start_answers_none(tmp_path, monkeypatch):
    import reskontro.transfer.helper_process as helper_process
    monkeypatch.setattr(helper_process.sys, "executable", "/nonexistent/python")
    path = render_day(tmp_path)
    errors, part = _through_worker(path, _db(tmp_path))
    assert errors is None and part.read_bytes() == path.read_bytes()


def test_a_child_whose_export_is_gone_stops(tmp_path):
    """Stdin ends before the file does (the export was killed): the child exits at once
    (status 3) instead of checking half a file."""
    path = render_day(tmp_path)
    data = path.read_bytes()
    part = tmp_path / "half.xml.part"
    part.write_bytes(data[:len(data) // 2])
    with CheckWorker(XSD) as worker:
        worker.begin(part, len(data), _db(tmp_path))
        worker.written(len(data) // 2)
        proc = worker._proc
        proc.stdin.close()
        assert proc.wait(timeout=60) == 3


def test_a_worker_never_given_a_file_ends_on_its_own():
    """The export died (or had nothing to check) before the job line: stdin ends, the child
    exits cleanly instead of waiting forever."""
    with CheckWorker(XSD) as worker:
        proc = worker._proc
        proc.stdin.close()
        assert proc.wait(timeout=60) == 0


def test_a_backlog_export_checks_in_the_child(tmp_path, monkeypatch):
    """A backlog that fails the check is refused by the child's answer, not the fallback."""
    from test_export import day_one, import_records, make_site

    import reskontro.transfer.export as export_module
    site = make_site(tmp_path)
    import_records(site, day_one())
    answers = []
    finish = CheckWorker.finish

    def spy(self):
        answers.append(finish(self))
        return answers[-1]
    monkeypatch.setattr(CheckWorker, "finish", spy)
    xsd = site / "templates" / "ledger-transfer-1.xsd"
    xsd.write_text(xsd.read_text(encoding="utf-8").replace(
        '<xs:maxLength value="100"/>', '<xs:maxLength value="5"/>', 1), encoding="utf-8")

    from reskontro.site import Site
    s = Site.open(site)
    result = export_module.export(s.config, s.db, s.rules, backlog=True)
    assert result.path is None and result.problems
    assert len(answers) == 1 and answers[0], "the child's answer decided"
    assert [str(e) for e in answers[0]] == list(result.problems)
