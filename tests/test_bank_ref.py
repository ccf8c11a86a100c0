"""One bank payment is one entry: the payments the service books from bank files, and the same
payments (or the same matches) coming back in the ERP's own export.

Built on the ledger of test_payments_booking (see its docstring): after `post`, the service has
booked BP(*1001) on I1 (new match MI1), BP(*1002) on I2 (MI2, 299.50 still open), BP(*1006) on
I6 (MI6) and BP(*1007) into the ERP's match M7 {I7, K7}.
"""
from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

from sqlalchemy import select

from reskontro.ledger import schema as s
from clirun import cli, flat  # noqa: E402
from test_payments_booking import (BP, PAYMENTS, Ledger, bank, entries_of, kid10,  # noqa: F401
                                   ledger, matches_of, posted)


def erp_file(tmp_path: Path, name: str, *records: dict) -> Path:
    path = tmp_path / name
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n", encoding="utf-8")
    return path


def erp_payment(eid: str, amount: str, bank_ref: str | None, *, customer: str = "C1", **more) -> dict:
    rec = {"record": "entry", "id": eid, "customer_id": customer, "type": "payment",
           "document_no": f"BILAG-{eid}", "document_date": "2026-11-21", "amount": amount,
           "currency": "NOK", "text": "Bankinnbetaling", **more}
    if bank_ref is not None:
        rec["bank_ref"] = bank_ref
    return rec


def entry_ids(lg: Ledger) -> set[str]:
    with lg.db.connect() as conn:
        return set(conn.execute(select(s.entries.c.id)).scalars())


def versions(lg: Ledger) -> dict[str, str]:
    with lg.db.connect() as conn:
        return dict(conn.execute(select(s.entries.c.id, s.entries.c.version)).all())


def explain(lg: Ledger, eid: str) -> dict:
    r = cli(lg.site, "explain", eid, "--json")
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def imported(lg: Ledger, path: Path):
    """`reskontro import`: done; exit status 3 when it holds an entry for a person (a note)."""
    r = cli(lg.site, "import", str(path))
    assert r.exit_code == (3 if "held: " in r.stderr else 0), r.output
    return r


# --- a match the service grew, imported again from the ERP ------------------------------------

def test_the_erps_older_copy_of_a_grown_match_keeps_the_payment_booked_into_it(posted: Ledger, tmp_path: Path) -> None:
    """M7 is the ERP's {I7, K7}; the service grew it with BP(*1007) and Lowell has that. The
    ERP, which does not know the bank payment, exports M7 as it has it. Before this change the
    import replaced M7's membership: the payment fell out and was held (match-lost-member)."""
    posted.export_and_deliver()
    pid = BP["*1007"]
    assert posted.receiver.matches["M7"] == frozenset({"I7", "K7", pid})
    imported(posted, erp_file(tmp_path, "erp.jsonl", {"record": "match", "id": "M7", "entries": ["I7", "K7"]}))

    assert posted.members("M7") == {"I7", "K7", pid}
    for eid in ("I7", "K7", pid):
        assert explain(posted, eid)["decision"] == "transfer", eid
    root = posted.export_and_deliver()
    assert entries_of(root) == {} and matches_of(root) == {}
    assert posted.receiver.open_balances()["I7"] == Decimal("0.00")


def test_the_erps_copy_of_a_grown_match_before_it_was_sent_keeps_the_payment_too(posted: Ledger, tmp_path: Path) -> None:
    pid = BP["*1007"]
    imported(posted, erp_file(tmp_path, "erp.jsonl", {"record": "match", "id": "M7", "entries": ["I7", "K7"]}))
    assert posted.members("M7") == {"I7", "K7", pid}
    root = posted.export_and_deliver()
    assert matches_of(root)["M7"] == {"I7", "K7", pid}
    assert pid in entries_of(root)


def test_a_match_of_the_erps_own_for_the_same_invoice_joins_the_match_the_service_made(
        posted: Ledger, tmp_path: Path) -> None:
    """The service made MI2 {I2, BP(*1002)}. The ERP, unaware, credits the rest of I2 and
    exports its own match EM2 {I2, K2}. Before this change the import was refused (I2 is in
    MI2). Now EM2 is MI2 here: MI2 grows with K2, and the payment stays."""
    posted.export_and_deliver()
    credit = {"record": "entry", "id": "K2", "customer_id": "C1", "type": "credit_note", "document_no": "K2",
              "document_date": "2026-11-22", "amount": "-299.50", "currency": "NOK"}
    path = erp_file(tmp_path, "erp.jsonl", credit, {"record": "match", "id": "EM2", "entries": ["I2", "K2"]})
    imported(posted, path)
    assert posted.members("MI2") == {"I2", BP["*1002"], "K2"}
    assert posted.members("EM2") == set()
    root = posted.export_and_deliver()
    assert set(entries_of(root)) == {"K2"}
    assert matches_of(root) == {"MI2": {"I2", BP["*1002"], "K2"}}
    assert posted.receiver.open_balances()["I2"] == Decimal("0.00")

    again = cli(posted.site, "import", str(path))                      # the ERP's next export: the same
    assert again.exit_code == 0 and "0 / 0" in flat(again.stdout)
    assert posted.members("MI2") == {"I2", BP["*1002"], "K2"}


# --- the ERP's copy of a payment the service booked ----------------------------------------

def test_the_erps_copy_of_a_booked_payment_under_its_own_id_is_that_payment(posted: Ledger, tmp_path: Path) -> None:
    """The ERP books the bank payment *1001 too, as its entry E1001 with bank_ref *1001, in its
    own match EM1 with I1. That is BP(*1001) in MI1, not a second payment of 1000.00."""
    posted.export_and_deliver()
    pid = BP["*1001"]
    before = versions(posted)
    path = erp_file(tmp_path, "erp.jsonl", erp_payment("E1001", "-1000.00", "*1001"),
                    {"record": "match", "id": "EM1", "entries": ["I1", "E1001"]})
    imported(posted, path)

    assert "E1001" not in entry_ids(posted) and posted.members("EM1") == set()
    assert posted.members("MI1") == {"I1", pid}
    with posted.db.connect() as conn:
        assert set(conn.execute(select(s.aliases.c.kind, s.aliases.c.erp_id, s.aliases.c.target_id)).all()) == {
            ("entry", "E1001", pid), ("match", "EM1", "MI1")}
    assert versions(posted) == before                                   # the content agrees: same version
    assert explain(posted, "E1001")["entry"] == pid
    assert f"E1001 is the ERP's id of {pid}, booked here" in flat(cli(posted.site, "explain", "E1001").stdout)
    assert posted.open_in_store("I1") == Decimal("0.00")
    root = posted.export_and_deliver()
    assert entries_of(root) == {} and matches_of(root) == {}
    assert posted.receiver.open_balances()["I1"] == Decimal("0.00")

    # Later exports name E1001 without bank_ref, and a match by the ERP's id: both resolve.
    credit = {"record": "entry", "id": "X1", "customer_id": "C1", "type": "payout", "document_no": "X1",
              "document_date": "2026-11-23", "amount": "50.00", "currency": "NOK"}
    reversal = {"record": "entry", "id": "R1", "customer_id": "C1", "type": "reversal", "document_no": "R1",
                "document_date": "2026-11-23", "amount": "1000.00", "currency": "NOK", "reverses": "E1001"}
    later = erp_file(tmp_path, "later.jsonl", erp_payment("E1001", "-1000.00", None), credit, reversal,
                     {"record": "match", "id": "EM1", "entries": ["I1", "E1001", "X1"]})
    imported(posted, later)
    assert "E1001" not in entry_ids(posted)
    assert posted.members("MI1") == {"I1", pid, "X1"}
    assert posted.entry("R1")["reverses"] == pid
    assert (explain(posted, "R1")["rule"], explain(posted, pid)["decision"]) == ("reversed-payment", "transfer")


def test_the_erp_importing_our_bookings_and_exporting_them_back_changes_nothing(posted: Ledger, tmp_path: Path) -> None:
    """`reskontro bookings` is what the ERP imports to learn what the service booked; the ERP's
    next export carries those entries under the same ids (with its own document numbers and
    texts): they are the service's entries, not new ones."""
    posted.export_and_deliver()
    out = tmp_path / "bookings.jsonl"
    r = cli(posted.site, "bookings", "--out", str(out))
    assert r.exit_code == 0, r.output
    assert "Wrote 4 entries and 4 matches" in flat(r.stdout)
    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    entries = {r["id"]: r for r in records if r["record"] == "entry"}
    matches = {r["id"]: set(r["entries"]) for r in records if r["record"] == "match"}
    assert set(entries) == {BP[ref] for ref in ("*1001", "*1002", "*1006", "*1007")}
    p = entries[BP["*1002"]]
    assert p == {"record": "entry", "id": BP["*1002"], "customer_id": "C1", "type": "payment",
                 "document_no": "*1002", "document_date": "2026-11-20", "amount": "-200.50", "currency": "NOK",
                 "kid": kid10(2), "source": "Lowell", "text": "Innbetaling Kari Nordmann", "bank_ref": "*1002"}
    assert matches == {"MI1": {"I1", BP["*1001"]}, "MI2": {"I2", BP["*1002"]}, "MI6": {"I6", BP["*1006"]},
                       "M7": {"I7", "K7", BP["*1007"]}}
    assert flat(cli(posted.site, "bookings").stdout) == flat(out.read_text(encoding="utf-8"))   # same on stdout

    before = versions(posted)
    for rec in records:                                                 # the ERP's own numbering and texts
        if rec["record"] == "entry":
            rec.update(document_no=f"B-{rec['bank_ref'][1:]}", text="Bank", document_date="2026-11-21")
    back = erp_file(tmp_path, "erp.jsonl", *records)
    r = imported(posted, back)
    assert "0 / 0" in flat(r.stdout) and "4 entries are ones this service booked" in flat(r.stdout)
    assert versions(posted) == before
    root = posted.export_and_deliver()
    assert entries_of(root) == {} and matches_of(root) == {}


# --- the ERP's copy disagrees, or the ERP booked it first -----------------------------------

def test_the_erps_copy_that_disagrees_holds_the_payment_until_it_agrees(posted: Ledger, tmp_path: Path) -> None:
    pid = BP["*1001"]
    before = versions(posted)
    wrong = erp_file(tmp_path, "erp.jsonl", erp_payment("E1001", "-900.00", "*1001"))
    r = imported(posted, wrong)
    assert "held:" in flat(r.stderr) and "amount -900.00 (here -1000.00)" in flat(r.stderr)
    assert versions(posted) == before and "E1001" not in entry_ids(posted)   # the bank file's content stays
    got = explain(posted, pid)
    assert (got["decision"], got["rule"]) == ("hold", "bank-ref-conflict")
    assert got["detail"].startswith("erp.jsonl:1: the ERP's E1001 is this payment (*1001)")
    assert "amount -900.00 (here -1000.00)" in flat(cli(posted.site, "explain", pid).stdout)
    root = posted.export_and_deliver(held=True)
    assert pid not in entries_of(root) and "MI1" not in matches_of(root)
    assert posted.receiver.open_balances()["I1"] == Decimal("1000.00")

    imported(posted, erp_file(tmp_path, "fixed.jsonl", erp_payment("E1001", "-1000.00", "*1001")))
    got = explain(posted, pid)
    assert (got["decision"], got["detail"]) == ("transfer", None)
    root = posted.export_and_deliver()
    assert pid in entries_of(root) and matches_of(root)["MI1"] == {"I1", pid}
    assert posted.receiver.open_balances()["I1"] == Decimal("0.00")


def test_a_payment_the_erp_booked_first_is_not_booked_again(ledger: Ledger, tmp_path: Path) -> None:
    """The bank file is listed, not booked; the ERP's export brings the payment *1001 first."""
    imported(ledger, erp_file(tmp_path, "erp.jsonl", erp_payment("E1001", "-1000.00", "*1001"),
                              {"record": "match", "id": "EM1", "entries": ["I1", "E1001"]}))
    r = cli(ledger.site, "post")
    assert r.exit_code == 3, r.output                   # unmatched payments: a person is needed
    assert flat(r.stdout).startswith("Booked 3 payments; 2 invoices closed; 3 unmatched; "
                                     "1 booked in the ERP already (not booked again).")
    assert f"{BP['*1001']}: booked in the ERP as entry E1001" in flat(r.stdout)
    listed = ledger.payments()
    assert (listed["*1001"]["status"], listed["*1001"]["entry"]) == ("booked_in_erp", "E1001")
    assert (listed["*1002"]["status"], listed["*1002"]["entry"]) == ("matched", BP["*1002"])
    assert listed["*1004"]["entry"] is None                              # unmatched: no entry anywhere
    assert "*1001" not in ledger.payments("--unposted")
    assert ledger.entry(BP["*1001"]) is None and ledger.members("EM1") == {"I1", "E1001"}
    assert ledger.open_in_store("I1") == Decimal("0.00")
    root = ledger.export_and_deliver()
    assert "E1001" in entries_of(root) and BP["*1001"] not in entries_of(root)
    assert ledger.receiver.open_balances()["I1"] == Decimal("0.00")


def test_a_second_entry_for_a_bank_payment_is_held_as_a_duplicate(posted: Ledger, tmp_path: Path) -> None:
    # The ERP exported its copy before it carried the bank's reference: an entry of its own.
    imported(posted, erp_file(tmp_path, "first.jsonl", erp_payment("E1001", "-1000.00", None)))
    r = imported(posted, erp_file(tmp_path, "second.jsonl", erp_payment("E1001", "-1000.00", "*1001")))
    assert f"bank payment *1001 is already entry {BP['*1001']}" in flat(r.stderr)
    got = explain(posted, "E1001")
    assert (got["decision"], got["rule"]) == ("hold", "bank-ref-conflict")
    assert posted.entry("E1001")["bank_ref"] is None                     # one entry per bank reference
    assert explain(posted, BP["*1001"])["decision"] == "transfer"
    root = posted.export_and_deliver(held=True)
    assert "E1001" not in entries_of(root) and BP["*1001"] in entries_of(root)

    # Two entries of one file for one bank payment: the file is refused, with the line.
    both = erp_file(tmp_path, "both.jsonl", erp_payment("E1", "-50.00", "*7"), erp_payment("E2", "-50.00", "*7"))
    r = cli(posted.site, "import", str(both))
    assert r.exit_code == 1
    assert "both.jsonl:2: bank_ref: entry 'E1' has '*7' too; one bank payment is one entry" in flat(r.stderr)
    # The ERP's id and the service's id of one payment in two matches of one file: refused.
    twice = erp_file(tmp_path, "twice.jsonl", erp_payment("E1002", "-200.50", "*1002"),
                     {"record": "match", "id": "EMa", "entries": ["I3", "E1002"]},
                     {"record": "match", "id": "EMb", "entries": ["I4", BP["*1002"]]})
    r = cli(posted.site, "import", str(twice))
    assert r.exit_code == 1
    assert (f"twice.jsonl:3: entries: '{BP['*1002']}' is in match 'EMa' too (under another id); "
            "an entry belongs to at most one match") in flat(r.stderr)


# --- the ERP moves a payment the service booked --------------------------------------------

def _move_to_i3(lg: Ledger, tmp_path: Path) -> None:
    imported(lg, erp_file(tmp_path, "move.jsonl", erp_payment("E1001", "-1000.00", "*1001"),
                          {"record": "match", "id": "EM3", "entries": ["I3", "E1001"]}))


def test_before_lowell_has_it_the_erp_relinks_a_booked_payment_and_correct_payment_refuses(
        posted: Ledger, tmp_path: Path) -> None:
    pid = BP["*1001"]
    with posted.db.connect() as conn:
        before = conn.execute(select(s.entries.c.id, s.entries.c.match_id).order_by(s.entries.c.id)).all()
    r = cli(posted.site, "correct-payment", pid, "--to", "I3")
    assert r.exit_code == 1
    message = flat(r.stderr)
    assert message.startswith(f"error: {pid} never reached Lowell (no version of it is delivered or in flight)")
    assert "re-link it in the ERP" in message and "nothing was created" in message
    with posted.db.connect() as conn:
        assert conn.execute(select(s.entries.c.id, s.entries.c.match_id).order_by(s.entries.c.id)).all() == before

    _move_to_i3(posted, tmp_path)                                        # the whole fix
    assert posted.members("EM3") == {"I3", pid} and posted.members("MI1") == {"I1"}
    root = posted.export_and_deliver()
    assert matches_of(root)["EM3"] == {"I3", pid} and "MI1" not in matches_of(root)
    balances = posted.receiver.open_balances()
    assert (balances["I1"], balances["I3"]) == (Decimal("1000.00"), Decimal("0.00"))


def test_once_lowell_has_it_the_erp_moving_a_booked_payment_is_held_and_correct_payment_is_the_fix(
        posted: Ledger, tmp_path: Path) -> None:
    pid = BP["*1001"]
    assert cli(posted.site, "export").exit_code == 0                    # in flight: it has reached Lowell
    _move_to_i3(posted, tmp_path)                                        # a removal Lowell never accepts
    assert posted.members("EM3") == {"I3", pid} and posted.members("MI1") == {"I1"}
    for eid in (pid, "I1"):
        got = explain(posted, eid)
        assert (got["decision"], got["rule"]) == ("hold", "match-lost-member"), eid
    assert "payout linked to the invoice and the payment" in explain(posted, "I1")["reason"]

    # Restored in the ERP (which knows MI1 from `reskontro bookings`), then corrected here.
    imported(posted, erp_file(tmp_path, "restore.jsonl", {"record": "match", "id": "MI1", "entries": ["I1", "E1001"]}))
    assert posted.members("MI1") == {"I1", pid}
    assert explain(posted, pid)["decision"] == "transfer"
    r = cli(posted.site, "correct-payment", "E1001", "--to", "I3")        # the ERP's id names it too
    assert r.exit_code == 0, r.output
    assert posted.members("MI1") == {"I1", pid, f"U{pid}"} and posted.members("EM3") == {"I3", f"N{pid}"}
    assert posted.entry(f"U{pid}")["origin"] == posted.entry(f"N{pid}")["origin"] == "correction"


def test_correct_payment_help_says_what_it_creates_and_refuses(posted: Ledger) -> None:
    text = flat(cli(posted.site, "correct-payment", "--help").stdout)
    for words in ("U<PAYMENT>", "N<PAYMENT>", "M<INVOICE>", "payment's customer", "right invoice's customer",
                  "never reached Lowell", "re-linking it in the ERP is the whole fix", "exit status 1"):
        assert words in text, words


# --- a store from before this change --------------------------------------------------------

def test_a_store_from_before_gets_the_new_columns_and_knows_what_it_booked(posted: Ledger, tmp_path: Path) -> None:
    import sqlite3
    db = posted.site / "reskontro.db"
    assert db.is_file()
    con = sqlite3.connect(db)
    con.execute("DROP INDEX ix_entries_bank_ref")
    for col in ("bank_ref", "origin", "bank_ref_conflict"):
        con.execute(f"ALTER TABLE entries DROP COLUMN {col}")
    con.execute("DROP TABLE aliases")
    con.commit()
    con.close()

    assert posted.entry(BP["*1007"])["origin"] == "bank"                # added and filled in on open
    assert posted.entry(BP["*1007"])["bank_ref"] == "*1007" and posted.entry("I7")["origin"] is None
    con = sqlite3.connect(db)
    assert "ix_entries_bank_ref" in {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    con.close()
    imported(posted, erp_file(tmp_path, "erp.jsonl", {"record": "match", "id": "M7", "entries": ["I7", "K7"]}))
    assert posted.members("M7") == {"I7", "K7", BP["*1007"]}


def test_bank_ref_in_a_csv_export(posted: Ledger, tmp_path: Path) -> None:
    path = tmp_path / "entries.csv"
    path.write_text("id,customer_id,type,document_no,document_date,amount,currency,bank_ref\n"
                    "E1006,C1,payment,B-1006,2026-11-21,-750.00,NOK,*1006\n", encoding="utf-8")
    r = imported(posted, path)
    assert "1 entry is one this service booked" in flat(r.stdout)
    assert "E1006" not in entry_ids(posted) and posted.members("MI6") == {"I6", BP["*1006"]}
    long = tmp_path / "long.csv"
    long.write_text("id,customer_id,type,document_no,document_date,amount,bank_ref\n"
                    f"E9,C1,payment,B-9,2026-11-21,-1.00,{'9' * 121}\n", encoding="utf-8")
    r = cli(posted.site, "import", str(long))
    assert r.exit_code == 1 and "long.csv:2: bank_ref: longer than 120 characters" in flat(r.stderr)


def test_the_service_s_entry_is_never_overwritten_by_an_import(posted: Ledger, tmp_path: Path) -> None:
    """The ERP gives BP(*1002) under the service's id with the bank reference of *1001 and
    another amount: the service's entry keeps its content and is held, never replaced."""
    pid = BP["*1002"]
    before = versions(posted)
    r = imported(posted, erp_file(tmp_path, "erp.jsonl", erp_payment(pid, "-1000.00", "*1001")))
    assert versions(posted) == before
    assert (posted.entry(pid)["bank_ref"], posted.entry(pid)["amount_ore"]) == ("*1002", -20050)
    got = explain(posted, pid)
    assert (got["decision"], got["rule"]) == ("hold", "bank-ref-conflict")
    assert "amount -1000.00 (here -200.50); bank_ref *1001 (here *1002)" in got["detail"]
    assert "held:" in flat(r.stderr)
