"""`reskontro find` and ledger.search: entries, customers and bank payments by every identifier,
prefix and any case, exact first; "did you mean" for near misses; every lookup a range scan
of an index (never a scan of a table); the indexes added to a store made before them."""
from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import event

from reskontro import services
from reskontro.ledger.search import anchors, find, variants
from reskontro.site import Site
from test_export import cli, customer, flat, import_records, invoice, make_site, payment, valid_kid

KID85 = valid_kid("8500000")


@pytest.fixture
def site(tmp_path: Path) -> Path:
    site = make_site(tmp_path)
    import_records(site, [
        customer("C1", "Øyvind Ås"), customer("K-77", "Kari Nordmann"), customer("c2", "Åse Berg"),
        invoice("I85", "C1", "100.00", document_no="F85", kid=KID85),
        invoice("I850", "C1", "200.00", document_no="F850"),
        invoice("I9", "K-77", "5.00", document_no="X-9"),
        payment("P85", "C1", "-50.00", document_no="B-1", kid=KID85),
    ])
    return site


def test_entries_by_id_document_number_and_kid_any_case_exact_first(site: Path) -> None:
    s = Site.open(site)
    f = services.find(s, "f85")
    assert [(h.id, h.found_by) for h in f.entries] == [("I85", "document_no"), ("I850", "document_no")]
    hit = f.entries[0]
    assert (hit.customer_id, hit.customer_name, str(hit.amount), hit.kid) == ("C1", "Øyvind Ås", "100.00", KID85)
    f = services.find(s, "i85")
    assert [(h.id, h.found_by) for h in f.entries] == [("I85", "id"), ("I850", "id")]
    f = services.find(s, KID85[:5])
    assert [(h.id, h.found_by) for h in f.entries] == [("I85", "kid"), ("P85", "kid")]
    f = services.find(s, "I850")                               # exact: only it
    assert [h.id for h in f.entries] == ["I850"] and not f.customers


@pytest.mark.parametrize("text, expect", [
    ("øyvind", ["C1"]), ("ØYVIND Å", ["C1"]), ("øyvind ås", ["C1"]),   # SQLite folds ASCII only: both cases tried
    ("åse", ["c2"]), ("ÅSE B", ["c2"]),
    ("kari", ["K-77"]), ("k-7", ["K-77"]), ("C", ["C1", "c2"]),
])
def test_customers_by_id_or_name_prefix_in_any_case(site: Path, text: str, expect: list[str]) -> None:
    f = services.find(Site.open(site), text)
    assert sorted(h.id for h in f.customers) == sorted(expect)
    assert f.suggestions == []


def test_a_near_miss_gets_did_you_mean_and_nothing_found_exits_1(site: Path) -> None:
    s = Site.open(site)
    f = services.find(s, "Kari Nordnann")
    assert f.empty and f.suggestions[0] == "Kari Nordmann"
    f = services.find(s, "F58")                               # two letters swapped
    assert f.empty and "F85" in f.suggestions
    r = cli(site, "find", "Kari Nordnann", code=1)
    assert flat(r.stderr).startswith("error: nothing found for 'Kari Nordnann'")
    assert "did you mean: Kari Nordmann" in flat(r.stderr)
    assert services.find(s, "qqqqqqqq").suggestions == []


def test_limit_cuts_each_kind_and_says_so(site: Path) -> None:
    f = services.find(Site.open(site), "i", limit=2)
    assert len(f.entries) == 2 and f.truncated
    assert not services.find(Site.open(site), "i", limit=20).truncated


def test_find_json_and_table(site: Path) -> None:
    doc = json.loads(cli(site, "find", "F85", "--json").stdout)
    assert [e["id"] for e in doc["entries"]] == ["I85", "I850"]
    assert doc["entries"][0]["amount"] == "100.00" and doc["entries"][0]["found_by"] == "document_no"
    assert doc["customers"] == [] and doc["suggestions"] == [] and doc["truncated"] is False
    table = flat(cli(site, "find", "kari", "--plain").stdout)
    assert "K-77\tKari Nordmann" in cli(site, "find", "kari", "--plain").stdout and "name" in table


def test_bank_payments_by_id_archive_reference_and_kid(tmp_path: Path) -> None:
    from test_payments_booking import BP, LEDGER, PAYMENTS, Ledger, kid10   # noqa: F401
    site = make_site(tmp_path)
    import_records(site, LEDGER)
    lg = Ledger(site, None)
    lg.drop("CREMUL_1.DAT", [PAYMENTS["*1099"]], "B1")
    s = Site.open(site)
    pid = BP["*1099"]
    for text in (pid, pid.lower(), pid[:6], "*1099", kid10(99)):
        f = services.find(s, text)
        assert [p.id for p in f.payments] == [pid], text
        assert f.payments[0].status == "unposted" and str(f.payments[0].amount) == "50.00"


# --- the queries' indexes ----------------------------------------------------------------------
def _plans(db, fn) -> list[str]:
    """Every SELECT `fn` runs, through EXPLAIN QUERY PLAN: the plan lines."""
    seen: list[tuple[str, object]] = []

    def grab(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith("SELECT"):
            seen.append((statement, parameters))
    event.listen(db, "before_cursor_execute", grab)
    try:
        fn()
    finally:
        event.remove(db, "before_cursor_execute", grab)
    assert seen
    lines = []
    with db.connect() as conn:
        for statement, params in seen:
            lines += [r[-1] for r in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, params)]
    return lines


@pytest.mark.parametrize("text", ["f85", "øyvind", "k-7", KID85[:4], "Kari Nordnann", "F58", "BP12"])
def test_every_lookup_is_an_index_range_never_a_table_scan(site: Path, text: str) -> None:
    s = Site.open(site)
    with s.db.connect() as conn:
        lines = _plans(s.db, lambda: find(conn, text))
    scans = [line for line in lines if re.match(r"SCAN (entries|customers|bank_payments|aliases)\b", line)]
    assert scans == [], lines
    assert any("ix_entries_document_no_lower" in line for line in lines)
    assert any("ix_customers_name_lower" in line for line in lines)


def test_variants_and_anchors_are_bounded() -> None:
    assert variants("F85") == ["f85"]
    assert sorted(variants("øy å")) == sorted(["øy å", "Øy å", "øy Å", "Øy Å"])
    assert len(variants("æøåæøå")) == 8
    assert len(anchors("abcdefghijklmnop")) <= 10 and "f85" in anchors("f58")


# --- a store from before the indexes ----------------------------------------------------------
NEW_INDEXES = {"ix_entries_id_lower", "ix_entries_document_no_lower", "ix_customers_id_lower",
               "ix_customers_name_lower", "ix_bank_payments_status", "ix_bank_payments_invoice",
               "ix_bank_payments_kid", "ix_actions_payment", "ix_actions_invoice"}


def test_a_store_from_before_gets_the_indexes_and_tables_in_place(site: Path) -> None:
    db = site / "reskontro.db"
    con = sqlite3.connect(db)
    for name in NEW_INDEXES - {"ix_actions_payment", "ix_actions_invoice"}:
        con.execute(f"DROP INDEX {name}")
    for table in ("actions", "receipts", "sent_content"):
        con.execute(f"DROP TABLE {table}")
    con.commit()
    assert not NEW_INDEXES & {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    con.close()
    doctor = flat(cli(site, "doctor", "--no-sftp", code=1).stdout)
    assert "schema: older than this version (no actions, index ix_" in doctor   # seen missing
    assert [h.id for h in services.find(Site.open(site), "f85").entries] == ["I85", "I850"]   # upgraded on open
    con = sqlite3.connect(db)
    names = {r[0] for r in con.execute("SELECT name FROM sqlite_master")}
    con.close()
    assert NEW_INDEXES | {"actions", "receipts", "sent_content"} <= names
    doctor = flat(cli(site, "doctor", "--no-sftp", code=1).stdout)
    assert "ok schema: current" in doctor, doctor
