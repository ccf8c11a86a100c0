"""Deciding the unmatched entries in a second process (reskontro.transfer.decide_worker): the file,
the journal and what stays pending must be exactly what one process makes, and a child that
fails must cost time, never a decision."""
from __future__ import annotations

import hashlib
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import text

import reskontro.transfer.decide_worker as decide_worker
import reskontro.transfer.export as export_module
import reskontro.transfer.helpers as helpers_module
from reskontro.site import Site
from test_export import cli, customer, import_records, invoice, make_site

NOW = datetime(2026, 11, 29, 18, 0, tzinfo=ZoneInfo("Europe/Oslo"))


def _site_with_sample(tmp_path: Path, name: str) -> Path:
    site = make_site(tmp_path, name)
    ledger = tmp_path / f"{name}.jsonl"
    cli(site, "sample", "--customers", "300", "--seed", "11", "--out", str(ledger))
    cli(site, "import", str(ledger))
    # one customer with unmatched entries only in the child's half and matched ones in ours:
    # it must still go once
    import_records(site, [customer("CX"), invoice("X1", "CX", "100.00"), invoice("X2", "CX", "50.00")])
    return site


def _outcome(site: Path, backlog: bool) -> tuple:
    s = Site.open(site)
    r = export_module.export(s.config, s.db, s.rules, backlog=backlog, now=NOW)
    assert r.path is not None, r.problems
    with s.db.connect() as conn:
        rows = {t: sorted(conn.execute(text(q)).all()) for t, q in (
            ("items", "select kind, id, version, members from file_items"),
            ("pending", "select kind, id from pending"),
            ("sent", "select kind, id, version, state from sent"))}
    s.db.dispose()
    return hashlib.sha256(r.path.read_bytes()).hexdigest(), r.entries, r.customers, rows


@pytest.mark.parametrize("backlog", [True, False], ids=["backlog", "first-daily"])
def test_two_processes_make_the_same_file_and_journal_as_one(tmp_path, monkeypatch, backlog):
    monkeypatch.setattr(helpers_module, "PARALLEL_DECIDE_FROM", 10**9)
    alone = _outcome(_site_with_sample(tmp_path, "alone"), backlog)
    started = []
    real = decide_worker.DecideWorker.__init__

    def spy(self, *a, **kw):
        started.append(a)
        real(self, *a, **kw)
    monkeypatch.setattr(decide_worker.DecideWorker, "__init__", spy)
    monkeypatch.setattr(helpers_module, "PARALLEL_DECIDE_FROM", 0)
    split = _outcome(_site_with_sample(tmp_path, "split"), backlog)
    assert len(started) == 1, "the second process decided the unmatched entries"
    assert alone[1] > 100 and alone[2] > 50          # a real file, not an empty one
    assert split == alone


@pytest.mark.parametrize("python, says", [
    ("false", "the decide process failed"),                 # starts, exits 1 at once
    ("/nonexistent/python", "could not start reskontro.transfer.decide_worker"),   # cannot start
])
def test_a_child_that_fails_leaves_the_work_to_the_export(tmp_path, monkeypatch, caplog, python, says):
    import reskontro.transfer.helper_process as helper_process
    monkeypatch.setattr(helpers_module, "PARALLEL_DECIDE_FROM", 10**9)
    alone = _outcome(_site_with_sample(tmp_path, "alone"), True)
    monkeypatch.setattr(helpers_module, "PARALLEL_DECIDE_FROM", 0)
    monkeypatch.setattr(helper_process.sys, "executable", python)
    failed = _outcome(_site_with_sample(tmp_path, "failed"), True)
    assert says in caplog.text
    assert failed == alone


def test_an_answer_without_its_end_is_refused_not_half_used(tmp_path):
    worker = decide_worker.DecideWorker.__new__(decide_worker.DecideWorker)
    worker._out = (tmp_path / "answer").open("w+b")
    import pickle
    pickle.dump(("items", [("entry", "E1", "v", None)]), worker._out)
    worker._out.seek(0)
    with pytest.raises(RuntimeError, match="ends early"):
        list(worker._records())
    worker._out.close()
