"""The page's kept answers (reskontro/web/answers.py): a whole-ledger answer is computed once
and kept while the store is unchanged; a commit by anyone makes it stale; a slow new answer
leaves the last one on the page (with its time), and none at all says 'computing'."""
from __future__ import annotations

import threading
from pathlib import Path

import pytest

from reskontro.web.answers import Answers, SitePool
from test_export import customer, import_records, invoice, make_site  # noqa: E402


@pytest.fixture
def site(tmp_path: Path) -> Path:
    site = make_site(tmp_path)
    import_records(site, [customer("C1"), invoice("I1", "C1", "100.00")])
    return site



def test_an_answer_is_kept_until_the_store_changes(site: Path) -> None:
    answers = Answers(SitePool(site), wait=30)
    calls = []

    def count(s) -> int:
        calls.append(1)
        with s.db.connect() as conn:
            return conn.exec_driver_sql("SELECT count(*) FROM entries").scalar()

    first = answers.get("n", count)
    assert first.value == 1 and len(calls) == 1
    again = answers.get("n", count)
    assert again.value == 1 and again.current and len(calls) == 1          # nothing changed: kept
    import_records(site, [invoice("I2", "C1", "50.00")])                      # another process commits
    fresh = answers.get("n", count)
    assert fresh.value == 2 and fresh.current and len(calls) == 2
    answers.close()


def test_a_slow_answer_leaves_the_last_one_on_the_page(site: Path) -> None:
    answers = Answers(SitePool(site), wait=30)
    gate = threading.Event()
    assert answers.get("v", lambda s: "old").value == "old"
    answers.wait = 0.05
    import_records(site, [invoice("I2", "C1", "50.00")])

    def slow(s) -> str:
        gate.wait(30)                   # held until the test has looked
        return "new"

    shown = answers.get("v", slow)
    assert shown.value == "old" and not shown.current and shown.refreshing
    gate.set()
    for _ in range(200):
        got = answers.get("v", slow)
        if got.value == "new":
            break
        threading.Event().wait(0.05)    # polling for the background answer
    assert got.value == "new" and got.current
    answers.close()


def test_before_the_first_answer_the_page_says_it_is_computing(site: Path) -> None:
    answers = Answers(SitePool(site), wait=0.01)
    gate = threading.Event()
    got = answers.get("v", lambda s: gate.wait(30) and "done")
    assert got.value is None and got.refreshing and got.at is None
    gate.set()


def test_an_answer_that_fails_is_raised_to_the_page(site: Path) -> None:
    answers = Answers(SitePool(site), wait=30)

    def broken(s):
        raise RuntimeError("the store is damaged")

    with pytest.raises(RuntimeError, match="damaged"):
        answers.get("x", broken)
