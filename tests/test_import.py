"""`reskontro import`: CSV and JSON Lines into the store, idempotent and all-or-nothing per file."""
from __future__ import annotations

import csv
import io
import json
import re
import sqlite3
from dataclasses import replace
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from reskontro.ledger import schema as s
from reskontro.adapters.ledger_import import (CUSTOMER_FIELDS, CUSTOMER_ROW, ENTRY_FIELDS, ENTRY_ROW, MAX_SHOWN,
                                              Problems, read_ledger_file, read_records)
from reskontro.cli import main
from reskontro.domain import Address, Customer, Entry, InputError, Match
from reskontro.ledger.importer import CUSTOMER_COLS, ENTRY_COLS, import_files
from reskontro.site import init_site
from reskontro.ledger.store import Ledger, open_engine, row_entry

# --- the ledger the tests import, as domain objects ------------------------------------------
C1 = Customer("C1", "Kari Nordmann", "private", Address(("Storgata 1", "Oppgang B"), "0150", "OSLO", "NO"),
              email="kari@example.no", phone="+47 41234567")
C2 = Customer("C2", "Ås & Sønn AS", "business", Address(("Postboks 12", "Bryggen", "c/o Hansa"), "5003", "BERGEN", "NO"),
              org_no="923609016", factoring_default=True)
C3 = Customer("C3", "Sven Svensson", None, Address(("Drottninggatan 5",), "111 51", "STOCKHOLM", "SE"))
I1 = Entry("I1", "C1", "invoice", "F1", date(2026, 9, 1), Decimal("1234.50"), due_date=date(2026, 9, 15),
           kid="0000001000000013", status="invoiced", factoring=False, dunning_level=2, text="Faktura 1 – strøm")
I2 = Entry("I2", "C2", "invoice", "F2", date(2026, 9, 2), Decimal("98765432.10"), currency="SEK",
           due_date=date(2026, 10, 2), status="draft")
P1 = Entry("P1", "C1", "payment", "P1", date(2026, 9, 10), Decimal("-1234.50"), kid="0000001000000013", source="Lowell")
P2 = Entry("P2", "C2", "payment", "P2", date(2026, 9, 11), Decimal("-0.10"))
V1 = Entry("V1", "C1", "manual_voucher", "V1", date(2026, 9, 12), Decimal("-0.05"), opt_out=True, text="Tap på fordring")
R1 = Entry("R1", "C2", "reversal", "R1", date(2026, 9, 13), Decimal("0.10"), reverses="P2")
K1 = Entry("K1", "C3", "credit_note", "K1", date(2026, 9, 14), Decimal("-100.00"))
CUSTOMERS = [C1, C2, C3]
ENTRIES = [I1, I2, P1, P2, V1, R1, K1]
MATCHES = [Match("M1", ("I1", "P1", "V1"))]


def _s(v) -> str | None:
    if v is None:
        return None
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, Decimal):
        return f"{v:.2f}"
    return str(v)


def customer_record(c: Customer) -> dict:
    lines = list(c.address.lines) + [None] * 3
    rec = {"id": c.id, "name": c.name, "type": c.type, "org_no": c.org_no, "address1": lines[0],
           "address2": lines[1], "address3": lines[2], "post_code": c.address.post_code,
           "city": c.address.city, "country": c.address.country, "email": c.email, "phone": c.phone,
           "factoring_default": c.factoring_default}
    return {k: v for k, v in rec.items() if v is not None}


def entry_record(e: Entry) -> dict:
    rec = {"id": e.id, "customer_id": e.customer_id, "type": e.type, "document_no": e.document_no,
           "document_date": e.document_date.isoformat(), "due_date": e.due_date and e.due_date.isoformat(),
           "amount": f"{e.amount:.2f}", "currency": e.currency, "kid": e.kid, "status": e.status,
           "factoring": e.factoring, "opt_out": e.opt_out or None, "reverses": e.reverses,
           "source": e.source, "dunning_level": str(e.dunning_level) if e.dunning_level else None,
           "text": e.text}
    return {k: v for k, v in rec.items() if v is not None}


def jsonl(customers=(), entries=(), matches=(), extra: list[str] = ()) -> str:
    out = [json.dumps({"record": "customer", **customer_record(c)}, ensure_ascii=False) for c in customers]
    out += [json.dumps({"record": "entry", **entry_record(e)}, ensure_ascii=False) for e in entries]
    out += [json.dumps({"record": "match", "id": m.id, "entries": list(m.entry_ids)}) for m in matches]
    return "\n".join(out + list(extra)) + "\n"


CUSTOMER_HEADER = "id,name,type,org_no,address1,address2,address3,post_code,city,country,email,phone,factoring_default"
ENTRY_HEADER = ("id,customer_id,type,document_no,document_date,due_date,amount,currency,kid,status,factoring,"
                "opt_out,reverses,source,dunning_level,text")


def csv_text(header: str, records: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=header.split(","), lineterminator="\n")
    w.writeheader()
    for r in records:
        w.writerow({k: _s(v) or "" for k, v in r.items()})
    return buf.getvalue()


def matches_csv(matches) -> str:
    return "match_id,entry_id\n" + "".join(f"{m.id},{e}\n" for m in matches for e in m.entry_ids)


# --- store helpers -----------------------------------------------------------------------------
@pytest.fixture
def db(tmp_path: Path):
    path = tmp_path / "ledger.db"
    engine = open_engine(f"sqlite:///{path}")
    engine.path = path
    yield engine
    engine.dispose()


def dump(engine) -> str:
    """Every table's content, as SQL text (sqlite3's own dump)."""
    con = sqlite3.connect(engine.path)
    try:
        return "\n".join(con.iterdump())
    finally:
        con.close()


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def pending(engine, kind: str) -> set[str]:
    with engine.connect() as conn:
        return set(conn.execute(select(s.pending.c.id).where(s.pending.c.kind == kind)).scalars())


def clear_pending(engine) -> None:
    with engine.begin() as conn:
        conn.execute(s.pending.delete())


def assert_store_holds_the_ledger(engine) -> None:
    with engine.connect() as conn:
        ledger = Ledger(conn)
        for c in CUSTOMERS:
            assert ledger.customer(c.id) == c
        for e in ENTRIES:
            got = ledger.entry(e.id)
            assert got == e
            assert str(got.amount) == f"{e.amount:.2f}"             # exact, two places
            assert isinstance(got.amount, Decimal)
        rows = {r.id: r for r in conn.execute(select(s.entries))}
        assert {k: row_entry(r) for k, r in rows.items()} == {e.id: e for e in ENTRIES}
        assert rows["I1"].amount_ore == 123450 and rows["P2"].amount_ore == -10
        assert rows["I2"].amount_ore == 9876543210
        assert {r.id for r in ledger.match_members("M1")} == {"I1", "P1", "V1"}
        assert ledger.match_of("I2") is None
        assert ledger.count(s.customers) == 3 and ledger.count(s.entries) == 7 and ledger.count(s.matches) == 1


# --- round trips --------------------------------------------------------------------------------
def test_jsonl_round_trip(db, tmp_path: Path) -> None:
    path = write(tmp_path, "ledger.jsonl", jsonl(CUSTOMERS, ENTRIES, MATCHES))
    batch = read_ledger_file(path)
    assert batch.customers == CUSTOMERS and batch.entries == ENTRIES and batch.matches == MATCHES
    [res] = import_files(db, [path])
    assert (res.customers, res.entries, res.matches) == ((3, 0), (7, 0), (1, 0))
    assert_store_holds_the_ledger(db)
    assert pending(db, "customer") == {"C1", "C2", "C3"}
    assert pending(db, "entry") == {e.id for e in ENTRIES}
    assert pending(db, "match") == {"M1"}


def test_csv_round_trip(db, tmp_path: Path) -> None:
    files = [write(tmp_path, "kunder.csv", csv_text(CUSTOMER_HEADER, [customer_record(c) for c in CUSTOMERS])),
             write(tmp_path, "poster.csv", csv_text(ENTRY_HEADER, [entry_record(e) for e in ENTRIES])),
             write(tmp_path, "koblinger.csv", matches_csv(MATCHES))]
    assert read_ledger_file(files[0]).customers == CUSTOMERS
    assert read_ledger_file(files[1]).entries == ENTRIES
    assert read_ledger_file(files[2]).matches == MATCHES
    results = import_files(db, files)
    assert [(r.customers, r.entries, r.matches) for r in results] == [
        ((3, 0), (0, 0), (0, 0)), ((0, 0), (7, 0), (0, 0)), ((0, 0), (0, 0), (1, 0))]
    assert_store_holds_the_ledger(db)


def test_csv_header_decides_the_kind_whatever_the_column_order(tmp_path: Path) -> None:
    text = "entry_id,match_id\nI1,M1\nP1,M1\n"
    assert read_ledger_file(write(tmp_path, "x.csv", text)).matches == [Match("M1", ("I1", "P1"))]
    text = "city,post_code,name,id\nOSLO,0150,Kari,C9\n"
    [c] = read_ledger_file(write(tmp_path, "y.csv", text)).customers
    assert (c.id, c.name, c.address.post_code, c.address.city, c.type) == ("C9", "Kari", "0150", "OSLO", None)
    with pytest.raises(InputError, match=r"^z\.csv:1: header foo,bar is none of"):
        read_ledger_file(write(tmp_path, "z.csv", "foo,bar\n1,2\n"))


def test_csv_norwegian_spellings(tmp_path: Path) -> None:
    """Decimal comma (as the only separator), ja/nei flags, BOM from Excel."""
    text = ("\ufeff" + ENTRY_HEADER + "\n"
            'I7,C1,invoice,F7,2026-09-01,2026-09-15,"1234,50",nok,,invoiced,nei,,,,,\n'
            "V7,C1,manual_voucher,V7,2026-09-01,,-5,NOK,,,,ja,,,,\n")
    i7, v7 = read_ledger_file(write(tmp_path, "e.csv", text)).entries
    assert (i7.amount, str(i7.amount), i7.currency, i7.factoring) == (Decimal("1234.50"), "1234.50", "NOK", False)
    assert (str(v7.amount), v7.opt_out, v7.factoring) == ("-5.00", True, None)


# --- idempotence ---------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["jsonl", "csv"])
def test_second_import_changes_nothing(db, tmp_path: Path, kind: str) -> None:
    if kind == "jsonl":
        files = [write(tmp_path, "ledger.jsonl", jsonl(CUSTOMERS, ENTRIES, MATCHES))]
    else:
        files = [write(tmp_path, "c.csv", csv_text(CUSTOMER_HEADER, [customer_record(c) for c in CUSTOMERS])),
                 write(tmp_path, "e.csv", csv_text(ENTRY_HEADER, [entry_record(e) for e in ENTRIES])),
                 write(tmp_path, "m.csv", matches_csv(MATCHES))]
    import_files(db, files)
    clear_pending(db)          # as after a delivered run: only what changes becomes pending again
    before = dump(db)
    again = import_files(db, files)
    assert all(r.unchanged for r in again)
    assert [(r.customers, r.entries, r.matches) for r in again] == [((0, 0), (0, 0), (0, 0))] * len(files)
    assert dump(db) == before
    assert "INSERT INTO \"entries\"" in before            # the dump does show the content


# --- all or nothing --------------------------------------------------------------------------------
BASE_C = Customer("C0", "Ola Nordmann", "private", Address(("Kirkeveien 2",), "5003", "BERGEN"))
BASE_I = Entry("I0", "C0", "invoice", "F0", date(2026, 8, 1), Decimal("500.00"), due_date=date(2026, 8, 15),
               status="invoiced")
BASE_P = Entry("P0", "C0", "payment", "P0", date(2026, 8, 5), Decimal("-500.00"))
BASE_M = Match("M0", ("I0", "P0"))


def entry_line(**fields) -> str:
    rec = {"record": "entry", "customer_id": "CN", "document_date": "2026-09-01", "amount": "10.00",
           "document_no": "D", **fields}
    return json.dumps({k: v for k, v in rec.items() if v is not None})


# (bad line, the field the message must name, a phrase of the message)
BAD_JSONL = {
    "bad date": (entry_line(id="EB", type="payment", document_date="2026-02-30"), "document_date", "is not a date"),
    "three decimals": (entry_line(id="EB", type="payment", amount="10.005"), "amount", "at most two decimals"),
    "unknown type": (entry_line(id="EB", type="invoise"), "type", "'invoise' is not one of"),
    "draft payment": (entry_line(id="EB", type="payment", status="draft"), "status", "only invoices have a status"),
    "invoice without due date": (entry_line(id="EB", type="invoice", status="invoiced"), "due_date", "required for invoices"),
    "unknown customer": (entry_line(id="EB", type="payment", customer_id="NOBODY"), "customer_id", "unknown customer 'NOBODY'"),
    "match with unknown entry": ('{"record": "match", "id": "MB", "entries": ["EN9", "GHOST"]}', "entries", "unknown entry 'GHOST'"),
    "entry in two matches in the file": ('{"record": "match", "id": "MB", "entries": ["EN1", "EN2"]}', "entries",
                                         "'EN1' is already in match 'MN'"),
    "entry in a stored match": ('{"record": "match", "id": "MB", "entries": ["EN9", "P0"]}', "entries", "'P0' is in match 'M0'"),
    "JSON float amount": ('{"record": "entry", "id": "EB", "customer_id": "CN", "type": "payment", "document_no": "D",'
                          ' "document_date": "2026-09-01", "amount": 10.50}', "amount", "must be a string"),
    "reversal of nothing": (entry_line(id="EB", type="reversal", reverses="GHOST"), "reverses", "unknown entry 'GHOST'"),
    "unknown field": (entry_line(id="EB", type="payment", colour="red"), "colour", "unknown field"),
}


def good_lines() -> list[str]:
    cn = Customer("CN", "Nina Nilsen", "private", Address(("Skolegata 3",), "7010", "TRONDHEIM"))
    en1 = Entry("EN1", "CN", "invoice", "FN1", date(2026, 9, 1), Decimal("300.00"), due_date=date(2026, 9, 15),
                status="invoiced")
    en2 = Entry("EN2", "CN", "payment", "PN2", date(2026, 9, 3), Decimal("-300.00"))
    return jsonl([cn], [en1, en2], [Match("MN", ("EN1", "EN2"))]).splitlines()


@pytest.mark.parametrize("case", sorted(BAD_JSONL))
def test_a_bad_jsonl_row_refuses_the_whole_file(db, tmp_path: Path, case: str) -> None:
    import_files(db, [write(tmp_path, "base.jsonl", jsonl([BASE_C], [BASE_I, BASE_P], [BASE_M]))])
    before = dump(db)
    bad, field, phrase = BAD_JSONL[case]
    lines = good_lines()
    at = 3 if '"match"' not in bad else len(lines)            # entries among entries, matches at the end
    lines.insert(at, bad)
    lines.append(entry_line(id="EN9", type="payout", amount="1.00"))   # good rows after the bad one too
    path = write(tmp_path, "batch.jsonl", "\n".join(lines) + "\n")
    with pytest.raises(InputError) as info:
        import_files(db, [path])
    msg = str(info.value)
    assert msg.startswith("batch.jsonl: ") and "nothing imported" in msg
    line = at + 1
    assert re.search(rf"^batch\.jsonl:{line}: {field}: .*{re.escape(phrase)}", msg, re.M), msg
    assert dump(db) == before                                  # nothing of the file is stored
    with db.connect() as conn:
        ledger = Ledger(conn)
        assert ledger.existing_ids(s.entries, ["EN1", "EN2", "EN9", "EB"]) == set()
        assert ledger.customer("CN") is None


def test_the_good_file_imports_once_the_bad_row_is_gone(db, tmp_path: Path) -> None:
    import_files(db, [write(tmp_path, "base.jsonl", jsonl([BASE_C], [BASE_I, BASE_P], [BASE_M]))])
    [res] = import_files(db, [write(tmp_path, "batch.jsonl", "\n".join(good_lines()) + "\n")])
    assert (res.customers, res.entries, res.matches) == ((1, 0), (2, 0), (1, 0))


def test_every_bad_row_is_listed(tmp_path: Path) -> None:
    lines = good_lines()
    lines[1:1] = [entry_line(id="X1", type="payment", amount="1.001"), entry_line(id="X2", type="invoise")]
    with pytest.raises(InputError) as info:
        read_ledger_file(write(tmp_path, "two.jsonl", "\n".join(lines) + "\n"))
    msg = str(info.value)
    assert msg.startswith("two.jsonl: 2 problems, nothing imported:")
    assert "two.jsonl:2: amount:" in msg and "two.jsonl:3: type:" in msg


def test_an_entry_already_in_a_stored_match_stays_refused_when_the_file_repeats_it(db, tmp_path: Path) -> None:
    """Re-exporting P0 beside a new match that claims it must not silently empty match M0."""
    import_files(db, [write(tmp_path, "base.jsonl", jsonl([BASE_C], [BASE_I, BASE_P], [BASE_M]))])
    before = dump(db)
    other = Entry("I5", "C0", "invoice", "F5", date(2026, 8, 2), Decimal("500.00"), due_date=date(2026, 8, 16),
                  status="invoiced")
    path = write(tmp_path, "steal.jsonl", jsonl([], [BASE_P, other], [Match("M5", ("I5", "P0"))]))
    with pytest.raises(InputError, match=r"steal\.jsonl:3: entries: 'P0' is in match 'M0'"):
        import_files(db, [path])
    assert dump(db) == before


# (file name, text, line, field, phrase)
BAD_CSV = [
    ("e.csv", ENTRY_HEADER + "\nEA,C0,payment,D1,2026-09-01,,-1.00,,,,,,,,,\nEB,C0,payment,D2,01.09.2026,,-1.00,,,,,,,,,\n",
     3, "document_date", "is not a date"),
    ("e.csv", ENTRY_HEADER + "\nEA,C0,payment,D1,2026-09-01,,\"-1,005\",,,,,,,,,\nEB,C0,payment,D2,2026-09-01,,-1.00,,,,,,,,,\n",
     2, "amount", "at most two decimals"),
    ("e.csv", ENTRY_HEADER + "\nEA,C0,payment,D1,2026-09-01,,-1.00,,,,,,,,,\nEB,NOBODY,payment,D2,2026-09-01,,-1.00,,,,,,,,,\n",
     3, "customer_id", "unknown customer"),
    ("e.csv", ENTRY_HEADER + "\nEA,C0,payment,D1,2026-09-01,,-1.00,,,,,,,,,\nEB,C0,payment,D2,2026-09-01,,-1.00,,,draft,,,,,,\n",
     3, "status", "only invoices have a status"),
    ("c.csv", CUSTOMER_HEADER + "\nCA,Anne,private,,Vei 1,,,0150,OSLO,NO,,,\nCB,Bent,privat,,Vei 2,,,0150,OSLO,NO,,,\n",
     3, "type", "'privat' is not one of"),
    ("c.csv", CUSTOMER_HEADER + "\nCA,Anne,private,,Vei 1,,,0150,OSLO,NO,,,kanskje\n", 2, "factoring_default", "not true/false"),
    ("m.csv", "match_id,entry_id\nMA,I0\nMA,GHOST\n", 2, "entries", "unknown entry 'GHOST'"),
    ("m.csv", "match_id,entry_id\nMA,I0\nMA,XX\nMB,XX\nMB,P0\n", 4, "entries", "'XX' is already in match 'MA'"),
    ("m.csv", "match_id,entry_id\nMA,I0\nMA,P0\nMA,I0\n", 4, "entry_id", "listed twice"),
    ("m.csv", "match_id,entry_id\nMA,I0\n", 2, "match_id", "needs two or more"),
]


@pytest.mark.parametrize("name, text, line, field, phrase", BAD_CSV)
def test_a_bad_csv_row_refuses_the_whole_file(db, tmp_path: Path, name, text, line, field, phrase) -> None:
    import_files(db, [write(tmp_path, "base.jsonl", jsonl([BASE_C], [BASE_I, BASE_P]))])
    before = dump(db)
    with pytest.raises(InputError) as info:
        import_files(db, [write(tmp_path, name, text)])
    msg = str(info.value)
    assert msg.startswith(f"{name}: ")
    assert re.search(rf"^{re.escape(name)}:{line}: {field}: .*{re.escape(phrase)}", msg, re.M), msg
    assert dump(db) == before


def test_earlier_files_stay_when_a_later_one_is_bad(db, tmp_path: Path) -> None:
    good = write(tmp_path, "good.jsonl", jsonl([BASE_C], [BASE_I]))
    bad = write(tmp_path, "bad.jsonl", entry_line(id="EB", type="invoise", customer_id="C0") + "\n")
    with pytest.raises(InputError, match=r"bad\.jsonl:1: type:"):
        import_files(db, [good, bad])
    with db.connect() as conn:
        assert Ledger(conn).entry("I0") == BASE_I


# --- changes ---------------------------------------------------------------------------------------
def test_a_changed_entry_is_reported_and_pending_again(db, tmp_path: Path) -> None:
    import_files(db, [write(tmp_path, "v1.jsonl", jsonl(CUSTOMERS, ENTRIES, MATCHES))])
    clear_pending(db)
    i1 = replace(I1, amount=Decimal("1300.00"), dunning_level=3)
    [res] = import_files(db, [write(tmp_path, "v2.jsonl", jsonl(CUSTOMERS, [i1] + ENTRIES[1:], MATCHES))])
    assert (res.customers, res.entries, res.matches) == ((0, 0), (0, 1), (0, 0))
    with db.connect() as conn:
        assert Ledger(conn).entry("I1") == i1
    # the entry and, since an invoice decides its group, the rest of its match
    assert pending(db, "entry") == {"I1", "P1", "V1"}
    assert pending(db, "customer") == set()


def test_a_changed_customer_is_reported_and_its_entries_pending(db, tmp_path: Path) -> None:
    import_files(db, [write(tmp_path, "v1.jsonl", jsonl(CUSTOMERS, ENTRIES, MATCHES))])
    clear_pending(db)
    c2 = replace(C2, address=replace(C2.address, post_code="5004"))
    [res] = import_files(db, [write(tmp_path, "v2.jsonl", jsonl([c2]))])
    assert (res.customers, res.entries, res.matches) == ((0, 1), (0, 0), (0, 0))
    assert pending(db, "customer") == {"C2"}
    assert pending(db, "entry") == {e.id for e in ENTRIES if e.customer_id == "C2"}
    with db.connect() as conn:
        assert Ledger(conn).customer("C2") == c2


def test_a_match_whose_membership_changes_replaces_the_old_one(db, tmp_path: Path) -> None:
    import_files(db, [write(tmp_path, "v1.jsonl", jsonl(CUSTOMERS, ENTRIES, MATCHES))])
    clear_pending(db)
    k2 = Entry("K2", "C1", "credit_note", "K2", date(2026, 9, 20), Decimal("-1234.50"))
    [res] = import_files(db, [write(tmp_path, "v2.jsonl", jsonl([], [k2], [Match("M1", ("I1", "K2"))]))])
    assert (res.entries, res.matches) == ((1, 0), (0, 1))
    with db.connect() as conn:
        ledger = Ledger(conn)
        assert [e.id for e in ledger.match_members("M1")] == ["I1", "K2"]
        assert ledger.match_of("P1") is None and ledger.match_of("V1") is None
    assert {"I1", "K2", "P1", "V1"} <= pending(db, "entry")
    assert pending(db, "match") == {"M1"}
    # members swapped between two matches in one file
    m2 = Match("M2", ("I2", "P2"))
    import_files(db, [write(tmp_path, "v3.jsonl", jsonl([], [], [m2]))])
    import_files(db, [write(tmp_path, "v4.jsonl", jsonl([], [], [Match("M1", ("I1", "P2")), Match("M2", ("I2", "K2"))]))])
    with db.connect() as conn:
        ledger = Ledger(conn)
        assert [e.id for e in ledger.match_members("M1")] == ["I1", "P2"]
        assert [e.id for e in ledger.match_members("M2")] == ["I2", "K2"]


def test_member_order_is_no_change(db, tmp_path: Path) -> None:
    import_files(db, [write(tmp_path, "v1.jsonl", jsonl(CUSTOMERS, ENTRIES, MATCHES))])
    [res] = import_files(db, [write(tmp_path, "v2.jsonl", jsonl([], [], [Match("M1", ("V1", "I1", "P1"))]))])
    assert res.unchanged


# --- the CLI -----------------------------------------------------------------------------------------
@pytest.fixture
def site(tmp_path: Path) -> Path:
    target = tmp_path / "site"
    init_site(target)
    return target


def test_cli_import_prints_the_counts(site: Path, tmp_path: Path) -> None:
    path = write(tmp_path, "ledger.jsonl", jsonl(CUSTOMERS, ENTRIES, MATCHES))
    runner = CliRunner()
    result = runner.invoke(main, ["--site", str(site), "import", str(path)])
    assert result.exit_code == 0, result.output
    row = next(l for l in result.stdout.splitlines() if "ledger.jsonl" in l)
    assert re.findall(r"\d+ / \d+", row) == ["3 / 0", "7 / 0", "1 / 0"]
    result = runner.invoke(main, ["--site", str(site), "import", str(path)])
    row = next(l for l in result.stdout.splitlines() if "ledger.jsonl" in l)
    assert re.findall(r"\d+ / \d+", row) == ["0 / 0", "0 / 0", "0 / 0"]


def test_cli_import_refuses_bad_input(site: Path, tmp_path: Path) -> None:
    lines = jsonl(CUSTOMERS, ENTRIES).splitlines()
    lines.insert(4, entry_line(id="EB", type="payment", customer_id="C1", amount="12.345"))
    path = write(tmp_path, "bad.jsonl", "\n".join(lines) + "\n")
    result = CliRunner().invoke(main, ["--site", str(site), "import", str(path)])
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert "error: bad.jsonl: 1 problem, nothing imported:" in result.stderr
    assert "bad.jsonl:5: amount: '12.345' is ambiguous" in result.stderr
    engine = open_engine(f"sqlite:///{site / 'reskontro.db'}")
    with engine.connect() as conn:
        assert Ledger(conn).count(s.entries) == 0 and Ledger(conn).count(s.customers) == 0
    engine.dispose()


def test_cli_error_shows_outside_data_literally(site: Path, tmp_path: Path) -> None:
    """Ids that look like rich markup are printed as they are, not interpreted (nor crash)."""
    lines = [entry_line(id="E1", type="payment", customer_id="[/b]"), entry_line(id="E2", type="payment", customer_id="[red]X")]
    path = write(tmp_path, "odd.jsonl", "\n".join(lines) + "\n")
    result = CliRunner().invoke(main, ["--site", str(site), "import", str(path)])
    assert result.exit_code == 1
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "odd.jsonl:1: customer_id: unknown customer '[/b]'" in result.stderr
    assert "odd.jsonl:2: customer_id: unknown customer '[red]X'" in result.stderr


# --- amounts are read one way only ----------------------------------------------------------------
# (amount as the ERP wrote it, a phrase of the reason): each refused, naming file, line and field
REFUSED_AMOUNTS = [
    ("2,000", "ambiguous"), ("1,500", "ambiguous"), ("12.500", "ambiguous"), ("1 500", "thousands separator"),
    ("1.500,00", "more than one"), ("1_000", "thousands separator"), ("\u0661\u0662\u0663", "digits 0-9"),
    ("1e20", "exponent"), ("NaN", "not a number"), ("-Infinity", "not a number"), ("10000000000", "larger than"),
    ("1.", "without decimals"), ("12.3456", "at most two decimals"), ("--5", "one sign"),
]


def _payment(eid: str, amount) -> dict:
    return {"id": eid, "customer_id": "C0", "type": "payment", "document_no": eid,
            "document_date": "2026-09-01", "amount": amount}


@pytest.mark.parametrize("kind", ["jsonl", "csv"])
def test_each_refused_amount_is_reported_with_file_line_and_field(db, tmp_path: Path, kind: str) -> None:
    import_files(db, [write(tmp_path, "base.jsonl", jsonl([BASE_C], [BASE_I]))])
    before = dump(db)
    rows = [_payment("OK1", "-1.00")] + [_payment(f"X{i}", a) for i, (a, _) in enumerate(REFUSED_AMOUNTS)] \
        + [_payment("OK2", "-2,50")]
    if kind == "jsonl":
        name, text, first = "amounts.jsonl", "\n".join(json.dumps({"record": "entry", **r}) for r in rows) + "\n", 1
    else:
        name, text, first = "amounts.csv", csv_text(ENTRY_HEADER, rows), 2      # line 1 is the header
    with pytest.raises(InputError) as info:
        import_files(db, [write(tmp_path, name, text)])
    msg = str(info.value)
    assert msg.startswith(f"{name}: {len(REFUSED_AMOUNTS)} problems, nothing imported:")
    for i, (amount, phrase) in enumerate(REFUSED_AMOUNTS):
        line = first + 1 + i
        assert re.search(rf"^{re.escape(name)}:{line}: amount: {re.escape(repr(amount))} .*{re.escape(phrase)}",
                         msg, re.M), (amount, msg)
    assert "Traceback" not in msg
    assert dump(db) == before


@pytest.mark.parametrize("kind", ["jsonl", "csv"])
def test_accepted_amount_forms(tmp_path: Path, kind: str) -> None:
    forms = {"A1": ("1500,50", "1500.50"), "A2": ("1500,5", "1500.50"), "A3": (" 12.5 ", "12.50"),
             "A4": ("+3", "3.00"), "A5": ("-0,10", "-0.10"), "A6": ("-0", "0.00"),
             "A7": ("999999999.99", "999999999.99"), "A8": ("007", "7.00")}
    rows = [_payment(eid, text) for eid, (text, _) in forms.items()]
    if kind == "jsonl":
        rows.append(_payment("A9", 2000))               # a JSON integer is exact: read as is
        forms["A9"] = (2000, "2000.00")
        path = write(tmp_path, "ok.jsonl", "\n".join(json.dumps({"record": "entry", **r}) for r in rows) + "\n")
    else:
        path = write(tmp_path, "ok.csv", csv_text(ENTRY_HEADER, rows))
    got = {e.id: str(e.amount) for e in read_ledger_file(path).entries}
    assert got == {eid: want for eid, (_, want) in forms.items()}


# --- what the transfer file cannot carry is refused at the door ------------------------------------
def customer_line(**fields) -> str:
    rec = {"record": "customer", "id": "CX", "name": "Ola", "type": "private", "address1": "Vei 1",
           "post_code": "0150", "city": "OSLO", **fields}
    return json.dumps({k: v for k, v in rec.items() if v is not None})


# (bad line, the field the message must name, a phrase of the message)
UNWRITABLE_JSONL = {
    "control char in name": (customer_line(name="Kari\u0001Nordmann"), "name", "U+0001 at character 5"),
    "control char at the end of a name (strip would hide it)": (customer_line(name="Kari\u001f"), "name", "U+001F"),
    "noncharacter in city": (customer_line(city="OSLO\ufffe"), "city", "U+FFFE"),
    "lone surrogate in text": (entry_line(id="EB", type="payment", text="a\ud800b"), "text", "lone surrogate"),
    "carriage return in an address": (customer_line(address1="Vei 1\rB"), "address1", "carriage return"),
    "control char in an id": (entry_line(id="E\u0002", type="payment"), "id", "U+0002"),
    "control char in a document no": (entry_line(id="EB", type="payment", document_no="D\u0007"), "document_no", "U+0007"),
    "control char in e-mail": (customer_line(email="a@b\u000b.no"), "email", "U+000B"),
    "name too long": (customer_line(name="N" * 101), "name", "longer than 100"),
    "address line too long": (customer_line(address2="A" * 71), "address2", "longer than 70"),
    "post code too long": (customer_line(post_code="1" * 11, country="SE"), "post_code", "longer than 10"),
    "city too long": (customer_line(city="C" * 36), "city", "longer than 35"),
    "document no too long": (entry_line(id="EB", type="payment", document_no="D" * 36), "document_no", "longer than 35"),
    "id too long": (entry_line(id="E" * 36, type="payment"), "id", "longer than 35"),
    "text too long": (entry_line(id="EB", type="payment", text="t" * 201), "text", "longer than 200"),
    "KID too short": (entry_line(id="EB", type="payment", kid="5"), "kid", "2-25 digits"),
    "KID too long": (entry_line(id="EB", type="payment", kid="1" * 26), "kid", "2-25 digits"),
    "KID with Arabic-Indic digits": (entry_line(id="EB", type="payment", kid="\u0661\u0662\u0663"), "kid", "2-25 digits"),
    "currency of four letters": (entry_line(id="EB", type="payment", currency="NOKK"), "currency", "ISO 4217"),
    "country that upper() would make valid": (customer_line(country="\u00df"), "country", "ISO 3166"),
    "country alpha-3": (customer_line(country="NOR"), "country", "ISO 3166"),
    "dunning level superscript two": (entry_line(id="EB", type="invoice", status="invoiced", due_date="2026-09-30",
                                                 dunning_level="\u00b2"), "dunning_level", "whole number"),
    "dunning level too big for the store": (entry_line(id="EB", type="invoice", status="invoiced",
                                                       due_date="2026-09-30", dunning_level="9" * 30),
                                            "dunning_level", "0 to 999"),
    "amount too big for the store": (entry_line(id="EB", type="payment", amount="1e20"), "amount", "exponent"),
    "match member that is no id": ('{"record": "match", "id": "MB", "entries": ["EN1", "E\\u0001"]}', "entries",
                                   "is not an entry id"),
    "a key given twice": ('{"record": "entry", "id": "EB", "customer_id": "CN", "type": "payment", "document_no": "D", '
                          '"document_date": "2026-09-01", "amount": "1.00", "amount": "100.00"}', "amount", "given twice"),
    "a key given twice, a colon in a value": ('{"record": "entry", "id": "EB", "customer_id": "CN", "type": "payment", '
                                              '"document_no": "D", "document_date": "2026-09-01", "amount": "1.00", '
                                              '"text": "kl. 10:30", "text": "x"}', "text", "given twice"),
    "control char in a match id": ('{"record": "match", "id": "M\\u0001", "entries": ["EN1", "EN2"]}', "id", "U+0001"),
    "control char at the end of a match id (strip would hide it)": (
        '{"record": "match", "id": "M\\u001f", "entries": ["EN1", "EN2"]}', "id", "U+001F"),
    # written as they are, not escaped (the reader's shortcut for a line without a backslash)
    "noncharacter U+FFFE as it is": (json.dumps(dict(json.loads(customer_line()), city="OS\ufffeLO"),
                                                ensure_ascii=False), "city", "U+FFFE"),
    "noncharacter U+FFFF as it is": (json.dumps(json.loads(entry_line(id="EB", type="payment", text="Faktura \uffff")),
                                                ensure_ascii=False), "text", "U+FFFF"),
}


@pytest.mark.parametrize("case", sorted(UNWRITABLE_JSONL))
def test_what_the_transfer_file_cannot_carry_is_refused(db, tmp_path: Path, case: str) -> None:
    bad, field, phrase = UNWRITABLE_JSONL[case]
    lines = good_lines()
    lines.insert(1, bad)
    path = write(tmp_path, "batch.jsonl", "\n".join(lines) + "\n")
    with pytest.raises(InputError) as info:
        import_files(db, [path])
    msg = str(info.value)
    assert msg.startswith("batch.jsonl: 1 problem, nothing imported:"), msg
    assert re.search(rf"^batch\.jsonl:2: {field}: .*{re.escape(phrase)}", msg, re.M), msg
    assert "\u0001" not in msg and "\r" not in msg          # shown escaped, never raw
    with db.connect() as conn:
        assert Ledger(conn).count(s.customers) == 0 and Ledger(conn).count(s.entries) == 0


def test_csv_refuses_control_characters_naming_line_and_field(tmp_path: Path) -> None:
    text = (CUSTOMER_HEADER + "\n" + "CA,Anne,private,,Vei 1,,,0150,OSLO,NO,,,\n"
            + "CB,Bent\x01Berg,private,,Vei 2,,,0150,OSLO,NO,,,\n" + "CC,Cato,private,,Vei 3,,,0150,OS\ufffeLO,NO,,,\n")
    with pytest.raises(InputError) as info:
        read_ledger_file(write(tmp_path, "c.csv", text))
    msg = str(info.value)
    assert "c.csv:3: name: has U+0001 at character 5, a control character" in msg
    assert "c.csv:4: city: has U+FFFE at character 3, a noncharacter" in msg


def test_line_breaks_inside_a_csv_value_are_kept_and_other_separators_do_not_cut_rows(tmp_path: Path) -> None:
    """A quoted value holds its line break (CRLF read as LF); U+2028 and U+0085 are characters
    of a value, not row ends: the rows and their line numbers stay as an editor shows them."""
    text = (CUSTOMER_HEADER + "\r\n" + 'CA,Anne,private,,"Vei 1\r\nOppgang B",,,0150,OSLO,NO,,,\r\n'
            + "CB,Bent\u2028Berg\u0085s,private,,Vei 2,,,0150,OSLO,NO,,,\r\n"
            + "CC,Cato,privat,,Vei 3,,,0150,OSLO,NO,,,\r\n")
    with pytest.raises(InputError) as info:
        read_ledger_file(write(tmp_path, "c.csv", text))
    assert re.findall(r"^c\.csv:(\d+): (\w+):", str(info.value), re.M) == [("5", "type")]
    ok = read_ledger_file(write(tmp_path, "ok.csv", text.replace("privat,", "private,")))
    assert [c.address.lines for c in ok.customers][0] == ("Vei 1\nOppgang B",)
    assert ok.customers[1].name == "Bent\u2028Berg\u0085s"


def test_jsonl_lines_end_at_newline_only(tmp_path: Path) -> None:
    """A raw U+2028 inside a JSON string is part of the string (str.splitlines() would cut it)."""
    text = customer_line(id="CA", name="Anne\u2028Berg").replace("\\u2028", "\u2028") + "\r\n" \
        + customer_line(id="CB", type="privat") + "\n"
    with pytest.raises(InputError) as info:
        read_ledger_file(write(tmp_path, "c.jsonl", text))
    assert re.findall(r"^c\.jsonl:(\d+): (\w+):", str(info.value), re.M) == [("2", "type")]


def test_json_nested_too_deeply_is_one_error_line(tmp_path: Path) -> None:
    deep = '{"record": "entry", "text": ' + "[" * 200_000 + "]" * 200_000 + "}"
    lines = good_lines()
    lines[1:1] = [deep, entry_line(id="X2", type="invoise")]
    with pytest.raises(InputError) as info:
        read_ledger_file(write(tmp_path, "deep.jsonl", "\n".join(lines) + "\n"))
    msg = str(info.value)
    assert msg.startswith("deep.jsonl: 2 problems, nothing imported:")
    assert "deep.jsonl:2: not valid JSON here: nested too deeply" in msg
    assert "deep.jsonl:3: type:" in msg                      # every bad row is still reported


def test_cli_gives_one_clear_line_per_bad_value_and_no_traceback(site: Path, tmp_path: Path) -> None:
    lines = jsonl([C1], [I1]).splitlines()
    lines += [entry_line(id="E1", type="payment", customer_id="C1", amount="1e20"),
              entry_line(id="E2", type="invoice", status="invoiced", due_date="2026-09-30", customer_id="C1",
                         dunning_level="\u00b2"),
              '{"record": "customer", "name": ' + "[" * 200_000 + "]" * 200_000 + "}",
              customer_line(id="C4", name="Kari\u0001")]
    path = write(tmp_path, "bad.jsonl", "\n".join(lines) + "\n")
    result = CliRunner().invoke(main, ["--site", str(site), "import", str(path)])
    assert result.exit_code == 1
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    err = result.stderr.splitlines()
    assert err[0] == "error: bad.jsonl: 4 problems, nothing imported:"
    assert [l.split(": ")[0:2] for l in err[1:]] == [["bad.jsonl:3", "amount"], ["bad.jsonl:4", "dunning_level"],
                                                    ["bad.jsonl:5", "not valid JSON here"], ["bad.jsonl:6", "name"]]
    assert "'1e20' has an exponent" in err[1] and "'²' is not a whole number" in err[2]


# --- every check of the reader has a test that fails without it (make mutation) -------------------
def problems(tmp_path: Path, name: str, text: str | bytes) -> list[str]:
    """The problems read_ledger_file lists for a file, one per line, without the file's name
    (each starts with its line number); [] when the file is accepted."""
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    try:
        read_ledger_file(path)
    except InputError as exc:
        head, *rows = str(exc).splitlines()
        n = len(rows)          # every problem is listed (a few per test: far below MAX_SHOWN)
        assert head == f"{name}: {n} problem{'' if n == 1 else 's'}, nothing imported:", head
        return [r.removeprefix(f"{name}:") for r in rows]
    return []


def payment_line(**fields) -> str:
    return entry_line(**{"id": "E1", "type": "payment", **fields})


def invoice_line(**fields) -> str:
    return entry_line(**{"id": "I1", "type": "invoice", "status": "invoiced",
                         "due_date": "2026-09-15", **fields})


@pytest.mark.parametrize("line, want", [
    (customer_line(name=None), "1: name: is required"),
    (customer_line(id=None), "1: id: is required"),
    (payment_line(id=None), "1: id: is required"),
    (payment_line(customer_id=None), "1: customer_id: is required"),
    (payment_line(document_no=None), "1: document_no: is required"),
    (payment_line(type=None), "1: type: is required (one of invoice, credit_note, payment, payout, "
                              "manual_voucher, reversal)"),
    (payment_line(document_date=None), "1: document_date: is required (YYYY-MM-DD)"),
    (payment_line(amount=None), "1: amount: is required"),
    (payment_line(amount="  "), "1: amount: is required"),
    (invoice_line(status=None), "1: status: is required (one of draft, invoiced)"),
    (entry_line(id="R1", type="reversal"), "1: reverses: is required"),
])
def test_a_required_field_left_out_is_named(tmp_path: Path, line: str, want: str) -> None:
    assert problems(tmp_path, "x.jsonl", line + "\n") == [want]


@pytest.mark.parametrize("line, field, phrase", [
    (payment_line(factoring=True), "factoring", "only invoices carry a factoring choice"),
    (payment_line(factoring="nei"), "factoring", "only invoices carry a factoring choice"),
    (payment_line(opt_out=True), "opt_out", "only manual vouchers can be opted out"),
    (invoice_line(opt_out="ja"), "opt_out", "only manual vouchers can be opted out"),
    (payment_line(reverses="P0"), "reverses", "only reversals name the entry they reverse"),
])
def test_a_field_of_another_entry_type_is_refused(tmp_path: Path, line: str, field: str, phrase: str) -> None:
    assert problems(tmp_path, "x.jsonl", line + "\n") == [f"1: {field}: {phrase}"]


def test_the_fields_of_their_own_entry_type_are_taken(tmp_path: Path) -> None:
    text = "\n".join([invoice_line(factoring=True),
                      entry_line(id="V1", type="manual_voucher", opt_out=True),
                      entry_line(id="R1", type="reversal", reverses="V1")]) + "\n"
    i1, v1, r1 = read_ledger_file(write(tmp_path, "x.jsonl", text)).entries
    assert (i1.factoring, v1.opt_out, r1.reverses) == (True, True, "V1")
    assert (i1.status, i1.due_date, v1.status) == ("invoiced", date(2026, 9, 15), None)


def test_a_json_number_amount_is_one_problem_not_also_missing(tmp_path: Path) -> None:
    line = payment_line().replace('"amount": "10.00"', '"amount": 10.5')
    assert problems(tmp_path, "x.jsonl", line + "\n") == ["1: amount: must be a string, not float (10.5)"]


def test_rows_without_an_id_are_not_taken_for_the_same_record(tmp_path: Path) -> None:
    text = "\n".join([payment_line(id=None), payment_line(id=None), customer_line(id=None),
                      customer_line(id=None)]) + "\n"
    assert problems(tmp_path, "x.jsonl", text) == [f"{n}: id: is required" for n in (1, 2, 3, 4)]


@pytest.mark.parametrize("field, limit", [("name", 100), ("address1", 70), ("post_code", 10),
                                          ("city", 35), ("phone", 40), ("email", 200), ("id", 35)])
def test_customer_length_limits(tmp_path: Path, field: str, limit: int) -> None:
    assert problems(tmp_path, "x.jsonl", customer_line(**{field: "A" * limit}) + "\n") == []
    assert problems(tmp_path, "x.jsonl", customer_line(**{field: "A" * (limit + 1)}) + "\n") \
        == [f"1: {field}: longer than {limit} characters"]


@pytest.mark.parametrize("field, limit", [("id", 35), ("customer_id", 35), ("document_no", 35),
                                          ("text", 200), ("source", 200)])
def test_entry_length_limits(tmp_path: Path, field: str, limit: int) -> None:
    assert problems(tmp_path, "x.jsonl", payment_line(**{field: "A" * limit}) + "\n") == []
    want = [] if field == "source" else [f"1: {field}: longer than {limit} characters"]
    assert problems(tmp_path, "x.jsonl", payment_line(**{field: "A" * (limit + 1)}) + "\n") == want


def test_an_id_with_a_line_break_inside_is_refused(tmp_path: Path) -> None:
    assert problems(tmp_path, "x.jsonl", payment_line(id="E\n1") + "\n") \
        == ["1: id: 'E\\n1' must be 1-35 characters without leading/trailing blanks"]


@pytest.mark.parametrize("written, value", [(w, True) for w in ("true", "1", "yes", "y", "ja", "j", "JA", " Yes ")]
                         + [(w, False) for w in ("false", "0", "no", "n", "nei", "NEI")])
def test_every_spelling_of_true_and_false(tmp_path: Path, written: str, value: bool) -> None:
    [c] = read_ledger_file(write(tmp_path, "x.jsonl", customer_line(factoring_default=written) + "\n")).customers
    assert c.factoring_default is value
    [e] = read_ledger_file(write(tmp_path, "y.jsonl", invoice_line(factoring=written) + "\n")).entries
    assert e.factoring is value


@pytest.mark.parametrize("written", [True, False])
def test_json_true_and_false_are_flags(tmp_path: Path, written: bool) -> None:
    [e] = read_ledger_file(write(tmp_path, "x.jsonl", invoice_line(factoring=written) + "\n")).entries
    assert e.factoring is written


def test_an_org_no_is_stored_without_its_spaces(tmp_path: Path) -> None:
    [c] = read_ledger_file(write(tmp_path, "x.jsonl",
                                 customer_line(type="business", org_no="923 609 016") + "\n")).customers
    assert c.org_no == "923609016"


@pytest.mark.parametrize("field, value, what", [
    ("kid", "12a4", "'12a4' must be 2-25 digits (the last may be '-')"),
    ("kid", "1", "'1' must be 2-25 digits (the last may be '-')"),
    ("kid", "1-2", "'1-2' must be 2-25 digits (the last may be '-')"),
    ("kid", "1" * 26, f"{'1' * 26!r} must be 2-25 digits (the last may be '-')"),
    ("kid", "\u0661\u0662", "'١٢' must be 2-25 digits (the last may be '-')"),
    ("currency", "NO", "'NO' is not an ISO 4217 code (3 letters A-Z)"),
    ("currency", "N0K", "'N0K' is not an ISO 4217 code (3 letters A-Z)"),
    ("currency", "NOKK", "'NOKK' is not an ISO 4217 code (3 letters A-Z)"),
    ("currency", "NÖK", "'NÖK' is not an ISO 4217 code (3 letters A-Z)"),
    ("dunning_level", "1000", "'1000' is not a whole number from 0 to 999 (digits 0-9)"),
    ("dunning_level", "-1", "'-1' is not a whole number from 0 to 999 (digits 0-9)"),
])
def test_entry_codes_are_checked(tmp_path: Path, field: str, value: str, what: str) -> None:
    assert problems(tmp_path, "x.jsonl", payment_line(**{field: value}) + "\n") == [f"1: {field}: {what}"]


def test_entry_codes_as_stored(tmp_path: Path) -> None:
    text = payment_line(kid="1000005-", currency="sek", dunning_level="999") + "\n" \
        + payment_line(id="E2", kid="12345678903") + "\n"
    e1, e2 = read_ledger_file(write(tmp_path, "x.jsonl", text)).entries
    assert (e1.kid, e1.currency, e1.dunning_level) == ("1000005-", "SEK", 999)
    assert (e2.kid, e2.currency, e2.dunning_level) == ("12345678903", "NOK", 0)


@pytest.mark.parametrize("value, what", [("N", "'N'"), ("NOR", "'NOR'"), ("ß", "'ß'"), ("N1", "'N1'")])
def test_a_country_is_two_letters(tmp_path: Path, value: str, what: str) -> None:
    assert problems(tmp_path, "x.jsonl", customer_line(country=value) + "\n") \
        == [f"1: country: {what} is not an ISO 3166 alpha-2 code (2 letters A-Z)"]


def test_a_country_is_stored_in_capitals_and_defaults_to_norway(tmp_path: Path) -> None:
    text = customer_line(country="se") + "\n" + customer_line(id="CY") + "\n"
    c1, c2 = read_ledger_file(write(tmp_path, "x.jsonl", text)).customers
    assert (c1.address.country, c2.address.country) == ("SE", "NO")


def test_a_long_value_is_quoted_cut_short(tmp_path: Path) -> None:
    exact = "x" * 58                        # repr() adds two quotes: 60 characters, shown whole
    assert problems(tmp_path, "x.jsonl", payment_line(type=exact) + "\n")[0].startswith(
        f"1: type: '{exact}' is not one of")
    long = "y" * 59                         # 61 characters: cut to 60 and "…"
    assert problems(tmp_path, "x.jsonl", payment_line(type=long) + "\n")[0].startswith(
        f"1: type: '{long}… is not one of")


def test_an_unknown_field_with_a_control_character_is_named_escaped(tmp_path: Path) -> None:
    line = payment_line().replace('"record"', '"col\\u0001": "1", "record"')
    assert problems(tmp_path, "x.jsonl", line + "\n") == [
        "1: 'col\\x01': unknown field (known: " + ", ".join(ENTRY_FIELDS) + ")"]


def test_unknown_fields_of_customers_and_matches(tmp_path: Path) -> None:
    text = customer_line(colour="red") + "\n" + '{"record": "match", "id": "M1", "entries": ["A", "B"], "x": 1}\n'
    assert problems(tmp_path, "x.jsonl", text) == [
        "1: colour: unknown field (known: " + ", ".join(CUSTOMER_FIELDS) + ")",
        "2: x: unknown field (known: id, entries)"]


def test_a_lone_surrogate_at_either_end_of_the_range_is_named(tmp_path: Path) -> None:
    for ch in ("\\ud800", "\\udfff"):
        line = payment_line(text="a").replace('"text": "a"', f'"text": "a{ch}"')
        [msg] = problems(tmp_path, "x.jsonl", line + "\n")
        assert msg.startswith("1: text: has U+D") and "a lone surrogate" in msg, msg


@pytest.mark.parametrize("line, want", [
    ("{oops", "1: not valid JSON: Expecting property name enclosed in double quotes (column 2)"),
    ('["record", "entry"]', "1: each line must be a JSON object"),
    ('"customer"', "1: each line must be a JSON object"),
    ('{"record": "invoice", "id": "X"}', "1: record: 'invoice' must be customer, entry or match"),
    ('{"id": "X"}', "1: record: None must be customer, entry or match"),
    ('{"record": "match", "id": "M1", "entries": ["A"]}', "1: entries: must be a list of two or more entry ids"),
    ('{"record": "match", "id": "M1", "entries": "A,B"}', "1: entries: must be a list of two or more entry ids"),
    ('{"record": "match", "id": "M1", "entries": ["A", null]}', "1: entries: must be a list of two or more entry ids"),
    ('{"record": "match", "id": "M1"}', "1: entries: must be a list of two or more entry ids"),
    ('{"record": "match", "id": "M1", "entries": ["A", "B", "A"]}', "1: entries: lists an entry twice"),
    ('{"record": "match", "id": "M1", "entries": ["A", " B"]}', "1: entries: ' B' is not an entry id (1-35 characters)"),
])
def test_malformed_jsonl_lines_are_each_one_problem(tmp_path: Path, line: str, want: str) -> None:
    # the good line after the bad one is read too (no problem of its own)
    assert problems(tmp_path, "x.jsonl", line + "\n" + customer_line() + "\n") == [want]


def test_a_match_without_an_id_is_refused(tmp_path: Path) -> None:
    assert problems(tmp_path, "x.jsonl", '{"record": "match", "entries": ["A", "B"]}\n') == ["1: id: is required"]


@pytest.mark.parametrize("kind, line", [("customer", customer_line(id="A")), ("entry", payment_line(id="A")),
                                        ("match", '{"record": "match", "id": "A", "entries": ["X", "Y"]}')])
def test_the_same_id_twice_in_a_file_is_refused(tmp_path: Path, kind: str, line: str) -> None:
    text = customer_line(id="B") + "\n" + line + "\n" + line + "\n"
    assert problems(tmp_path, "x.jsonl", text) == [f"3: id: {kind} 'A' already on line 2"]


def test_the_same_id_twice_in_a_csv_file_is_refused(tmp_path: Path) -> None:
    text = CUSTOMER_HEADER + "\nCA,Anne,private,,Vei 1,,,0150,OSLO,NO,,,\nCA,Anne,private,,Vei 1,,,0150,OSLO,NO,,,\n"
    assert problems(tmp_path, "c.csv", text) == ["3: id: customer 'CA' already on line 2"]


def test_a_customer_and_an_entry_may_share_an_id(tmp_path: Path) -> None:
    batch = read_ledger_file(write(tmp_path, "x.jsonl", customer_line(id="A") + "\n" + payment_line(id="A") + "\n"))
    assert [c.id for c in batch.customers] == ["A"] and [e.id for e in batch.entries] == ["A"]
    assert batch.lines == {("customer", "A"): 1, ("entry", "A"): 2}


def test_at_most_max_shown_problems_are_listed_then_how_many_more(tmp_path: Path) -> None:
    def bad(n: int) -> str:
        return "".join(payment_line(id=f"E{i}", type="invoise") + "\n" for i in range(n))
    with pytest.raises(InputError) as info:
        read_ledger_file(write(tmp_path, "x.jsonl", bad(MAX_SHOWN)))
    assert str(info.value).startswith(f"x.jsonl: {MAX_SHOWN} problems, nothing imported:")
    assert len(str(info.value).splitlines()) == MAX_SHOWN + 1 and "more" not in str(info.value)
    with pytest.raises(InputError) as info:
        read_ledger_file(write(tmp_path, "x.jsonl", bad(MAX_SHOWN + 2)))
    lines = str(info.value).splitlines()
    assert lines[0] == f"x.jsonl: {MAX_SHOWN + 2} problems, nothing imported:"
    assert len(lines) == MAX_SHOWN + 2 and lines[-2].startswith(f"x.jsonl:{MAX_SHOWN}: type:")
    assert lines[-1] == "… and 2 more"


@pytest.mark.parametrize("name", ["ledger.jsonl", "ledger.ndjson", "ledger.json", "LEDGER.JSONL"])
def test_json_lines_file_names(tmp_path: Path, name: str) -> None:
    batch = read_ledger_file(write(tmp_path, name, customer_line() + "\n"))
    assert [c.id for c in batch.customers] == ["CX"]


def test_a_csv_file_name_in_capitals_is_csv(tmp_path: Path) -> None:
    text = CUSTOMER_HEADER + "\nCA,Anne,private,,Vei 1,,,0150,OSLO,NO,,,\n"
    assert [c.id for c in read_ledger_file(write(tmp_path, "K.CSV", text)).customers] == ["CA"]


@pytest.mark.parametrize("name", ["ledger.txt", "ledger", "ledger.csv.bak", "ledger.xlsx"])
def test_an_unknown_file_type_is_refused(tmp_path: Path, name: str) -> None:
    text = CUSTOMER_HEADER + "\nCA,Anne,private,,Vei 1,,,0150,OSLO,NO,,,\n"
    with pytest.raises(InputError, match=rf"^{re.escape(name)}: unknown file type '.*'; use \.csv or \.jsonl$"):
        read_ledger_file(write(tmp_path, name, text))


def test_a_file_that_is_not_utf8_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    path.write_bytes(b'{"record": "customer", "id": "C1", "name": "\xc5s"}\n')
    with pytest.raises(InputError, match=r"^x\.jsonl: not UTF-8 text \(byte \d+\); export as UTF-8$"):
        read_ledger_file(path)


def test_a_file_that_cannot_be_read_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"missing\.jsonl: cannot read: No such file or directory"):
        read_ledger_file(tmp_path / "missing.jsonl")


def test_an_unknown_csv_column_is_refused(tmp_path: Path) -> None:
    text = CUSTOMER_HEADER + ",colour\nCA,Anne,private,,Vei 1,,,0150,OSLO,NO,,,,red\n"
    assert problems(tmp_path, "c.csv", text) == [
        "1: colour: unknown column (known: " + ", ".join(CUSTOMER_FIELDS) + ")"]
    text = "match_id,entry_id,note\nM1,A,x\nM1,B,y\n"
    assert problems(tmp_path, "m.csv", text) == ["1: note: unknown column (known: match_id, entry_id)"]


def test_a_csv_row_with_more_values_than_columns_is_refused(tmp_path: Path) -> None:
    text = (CUSTOMER_HEADER + "\nCA,Anne,private,,Vei 1,,,0150,OSLO,NO,,,,extra\n"
            "CB,Bent,private,,Vei 2,,,0150,OSLO,NO,,,\n")
    assert problems(tmp_path, "c.csv", text) == ["2: more values than columns"]
    # its values are not read further: where one is shifted, every one after it may be
    text = CUSTOMER_HEADER + "\nCA,Anne,Berg,private,,Vei 1,,,0150,OSLO,NO,,,\n"
    assert problems(tmp_path, "c.csv", text) == ["2: more values than columns"]


def test_a_csv_row_the_csv_module_cannot_read_is_refused_with_its_line(tmp_path: Path) -> None:
    text = (CUSTOMER_HEADER + "\nCA,Anne,private,,Vei 1,,,0150,OSLO,NO,,,\n"
            + "CB," + "B" * 200_000 + ",private,,Vei 2,,,0150,OSLO,NO,,,\n")
    assert problems(tmp_path, "c.csv", text) == ["3: not valid CSV: field larger than field limit (131072)"]


def test_a_csv_header_naming_only_the_key_columns_is_recognised(tmp_path: Path) -> None:
    assert problems(tmp_path, "e.csv", "customer_id,document_no\nC1,D1\n") == [
        "2: id: is required", "2: type: is required (one of invoice, credit_note, payment, payout, "
        "manual_voucher, reversal)", "2: document_date: is required (YYYY-MM-DD)", "2: amount: is required"]
    assert problems(tmp_path, "c.csv", "name,post_code\nAnne,0150\n") == ["2: id: is required"]


def test_a_csv_header_that_is_not_csv_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"^c\.csv:1: not valid CSV: "):
        read_ledger_file(write(tmp_path, "c.csv", "id," + "n" * 200_000 + "\nCA,Anne\n"))


def test_csv_match_rows_without_match_or_entry_id_are_each_one_problem(tmp_path: Path) -> None:
    text = "match_id,entry_id\nM1,A\nM1,B\n,C\nM2,\nM2,D\n"
    assert problems(tmp_path, "m.csv", text) == ["4: match_id: is required", "5: entry_id: is required",
                                                 "6: match_id: match 'M2' has one entry; a match needs two or more"]


def test_a_bank_reference_is_read_and_one_bank_payment_is_one_entry(tmp_path: Path) -> None:
    text = payment_line(bank_ref="B-1") + "\n" + payment_line(id="E2", bank_ref=" " + "R" * 120 + " ") + "\n"
    e1, e2 = read_ledger_file(write(tmp_path, "x.jsonl", text)).entries
    assert (e1.bank_ref, e2.bank_ref) == ("B-1", "R" * 120)
    assert problems(tmp_path, "x.jsonl", payment_line(bank_ref="R" * 121) + "\n") == [
        "1: bank_ref: longer than 120 characters"]
    text = "\n".join([payment_line(bank_ref="B-1"), payment_line(id="E2", bank_ref="B-2"),
                      payment_line(id="E3", bank_ref="B-1"), payment_line(id="E4")]) + "\n"
    assert problems(tmp_path, "x.jsonl", text) == [
        "3: bank_ref: entry 'E1' has 'B-1' too; one bank payment is one entry"]
    text = "\n".join([payment_line(bank_ref="B-1"), payment_line(id="E2", bank_ref="B-1"),
                      payment_line(id="E3", bank_ref="B-1")]) + "\n"
    assert problems(tmp_path, "x.jsonl", text) == [
        "2: bank_ref: entry 'E1' has 'B-1' too; one bank payment is one entry",
        "3: bank_ref: entry 'E1' has 'B-1' too; one bank payment is one entry"]


def test_the_rows_read_are_named_by_the_stores_columns(tmp_path: Path) -> None:
    """read_records yields plain tuples in CUSTOMER_ROW / ENTRY_ROW order: each name is the
    store's column the value goes to (the importer stages them under those names)."""
    assert CUSTOMER_ROW == CUSTOMER_COLS[:len(CUSTOMER_ROW)] and set(CUSTOMER_ROW) <= set(s.customers.c.keys())
    assert set(ENTRY_ROW) <= set(s.entries.c.keys())
    assert [c for c in ENTRY_COLS if c not in ("kid_check", "version", "stamp")] == list(ENTRY_ROW)
    text = "\n".join([
        customer_line(id="C1", name="Ås AS", type="business", org_no="923 609 016", address1="Postboks 12",
                      address2="Bygg B", address3="3. etg", post_code="5003", city="BERGEN", country="se",
                      email="a@b.no", phone="+47 1", factoring_default="ja"),
        invoice_line(id="I1", customer_id="C1", document_no="F1", document_date="2026-09-01",
                     due_date="2026-09-15", amount="1234.50", currency="sek", kid="12345678903",
                     status="draft", factoring="nei", source="ERP", dunning_level="2", text="t",
                     bank_ref="B-1"),
        # '+' is not on the fast path: the same row by the exact one
        entry_line(id="V1", customer_id="C1", type="manual_voucher", document_no="V", amount="+3",
                   opt_out=True),
        entry_line(id="R1", customer_id="C1", type="reversal", document_no="R", amount="-3", reverses="V1"),
    ]) + "\n"
    problems = Problems("x.jsonl")
    got = [(kind, n, dict(zip(CUSTOMER_ROW if kind == "customer" else ENTRY_ROW, row, strict=True)))
           for kind, n, row in read_records(write(tmp_path, "x.jsonl", text), problems)]
    assert problems.count == 0, problems.shown
    entry = dict.fromkeys(ENTRY_ROW)
    assert got == [
        ("customer", 1, {"id": "C1", "name": "Ås AS", "type": "business", "org_no": "923609016",
                         "line1": "Postboks 12", "line2": "Bygg B", "line3": "3. etg", "post_code": "5003",
                         "city": "BERGEN", "country": "SE", "email": "a@b.no", "phone": "+47 1",
                         "factoring_default": True, "tags": None}),
        ("entry", 2, {**entry, "id": "I1", "customer_id": "C1", "type": "invoice", "document_no": "F1",
                      "document_date": "2026-09-01", "due_date": "2026-09-15", "amount_ore": 123450,
                      "currency": "SEK", "kid": "12345678903", "status": "draft", "factoring": False,
                      "opt_out": False, "source": "ERP", "dunning_level": 2, "text": "t", "bank_ref": "B-1"}),
        ("entry", 3, {**entry, "id": "V1", "customer_id": "C1", "type": "manual_voucher", "document_no": "V",
                      "document_date": "2026-09-01", "amount_ore": 300, "currency": "NOK", "opt_out": True,
                      "dunning_level": 0}),
        ("entry", 4, {**entry, "id": "R1", "customer_id": "C1", "type": "reversal", "document_no": "R",
                      "document_date": "2026-09-01", "amount_ore": -300, "currency": "NOK", "opt_out": False,
                      "reverses": "V1", "dunning_level": 0}),
    ]


def test_the_first_thousand_problems_are_listed(tmp_path: Path) -> None:
    """README: every bad row is counted, the first 1,000 listed."""
    text = "".join(payment_line(id=f"E{i}", type="invoise") + "\n" for i in range(1001))
    with pytest.raises(InputError) as info:
        read_ledger_file(write(tmp_path, "x.jsonl", text))
    lines = str(info.value).splitlines()
    assert lines[0] == "x.jsonl: 1001 problems, nothing imported:" and lines[-1] == "… and 1 more"
    assert len(lines) == 1 + 1000 + 1 and lines[1000].startswith("x.jsonl:1000: type:")


# --- the exact path (_Row) reads a plain record as the fast path does -------------------------------
PLAIN_CUSTOMERS = [
    {"record": "customer", "id": "C1", "name": "Ås AS", "type": "business", "org_no": "923 609 016",
     "address1": "Postboks 12", "address2": "Bygg B", "address3": "3. etg", "post_code": "5003", "city": "BERGEN",
     "country": "se", "email": "a@b.no", "phone": "+47 1", "factoring_default": "ja"},
    {"record": "customer", "id": "C2", "name": "Kari", "address2": "Vei 2", "factoring_default": False},
    {"record": "customer", "id": "C3", "name": "Ola", "type": "private", "address1": "Vei 1", "address3": "H0101",
     "factoring_default": "nei"},
    # every text at its limit
    {"record": "customer", "id": "C" * 35, "name": "N" * 100, "address1": "A" * 70, "post_code": "P" * 10,
     "city": "C" * 35, "email": "E" * 200, "phone": "9" * 40, "factoring_default": "  "},
]
PLAIN_ENTRIES = [
    {"record": "entry", "id": "I1", "customer_id": "C1", "type": "invoice", "document_no": "F1",
     "document_date": "2026-09-01", "due_date": "2026-09-15", "amount": "1234.50", "currency": "sek",
     "kid": "12345678903", "status": "invoiced", "factoring": "ja", "source": "ERP", "dunning_level": "2",
     "text": "line 1\n\tline 2", "bank_ref": "B-1", "opt_out": "nei", "reverses": ""},   # every field
    {"record": "entry", "id": "I2", "customer_id": "C1", "type": "invoice", "document_no": "F2",
     "document_date": "2026-09-01", "due_date": "2026-09-15", "amount": "5", "status": "draft", "factoring": "nei"},
    {"record": "entry", "id": "V1", "customer_id": "C1", "type": "manual_voucher", "document_no": "V",
     "document_date": "2026-09-01", "amount": "-3", "opt_out": "ja"},
    {"record": "entry", "id": "V2", "customer_id": "C1", "type": "manual_voucher", "document_no": "V",
     "document_date": "2026-09-01", "amount": "-3", "opt_out": "nei"},
    {"record": "entry", "id": "R1", "customer_id": "C1", "type": "reversal", "document_no": "R",
     "document_date": "2026-09-01", "amount": "3", "reverses": "V1"},
    {"record": "entry", "id": "P1", "customer_id": "C1", "type": "payment", "document_no": "P",
     "document_date": "2026-09-01", "amount": "-1234.50", "factoring": "", "opt_out": "n", "reverses": "  "},
    # every text at its limit
    {"record": "entry", "id": "E" * 35, "customer_id": "C" * 35, "type": "payment", "document_no": "D" * 35,
     "document_date": "2026-09-01", "amount": "1", "text": "T" * 200, "bank_ref": "B" * 120, "opt_out": False},
]


@pytest.mark.parametrize("d", PLAIN_CUSTOMERS, ids=lambda d: d["id"])
def test_the_exact_path_reads_a_plain_customer_as_the_fast_path_does(d: dict) -> None:
    from reskontro.adapters import ledger_import as li
    fast = li._fast_customer(d)
    problems = Problems("x")
    c = li._customer(li._Row("x:1", d, problems))
    assert problems.count == 0 and fast is not None and c is not None
    assert li.customer_to_row(c) == fast


@pytest.mark.parametrize("d", PLAIN_ENTRIES, ids=lambda d: d["id"])
def test_the_exact_path_reads_a_plain_entry_as_the_fast_path_does(d: dict) -> None:
    from reskontro.adapters import ledger_import as li
    fast = li._fast_entry(d)
    problems = Problems("x")
    e = li._entry(li._Row("x:1", d, problems))
    assert problems.count == 0 and fast is not None and e is not None
    assert li.entry_to_row(e) == fast


@pytest.mark.parametrize("written, value", [("ja", True), ("nei", False), ("0", False)])
def test_flags_read_on_the_exact_path(tmp_path: Path, written: str, value: bool) -> None:
    # '+' in an amount is not on the fast path: the record is read by _Row
    text = (invoice_line(factoring=written, amount="+10.00") + "\n"
            + entry_line(id="V1", type="manual_voucher", opt_out=written, amount="+1.00") + "\n"
            + payment_line(id="P1", opt_out=written, amount="+1.00") + "\n")
    if value:
        assert problems(tmp_path, "x.jsonl", text) == ["3: opt_out: only manual vouchers can be opted out"]
        return
    i1, v1, p1 = read_ledger_file(write(tmp_path, "x.jsonl", text)).entries
    assert (i1.factoring, v1.opt_out, p1.opt_out) == (False, False, False)


@pytest.mark.parametrize("field, limit", [("name", 100), ("address1", 70), ("post_code", 10),
                                          ("city", 35), ("phone", 40), ("email", 200), ("id", 35)])
def test_customer_length_limits_on_the_exact_path(tmp_path: Path, field: str, limit: int) -> None:
    # a record with another problem is read by _Row: its limits are the same
    bad_country = "1: country: 'NOR' is not an ISO 3166 alpha-2 code (2 letters A-Z)"
    line = customer_line(country="NOR", **{field: "A" * limit})
    assert problems(tmp_path, "x.jsonl", line + "\n") == [bad_country]
    line = customer_line(country="NOR", **{field: "A" * (limit + 1)})
    assert sorted(problems(tmp_path, "x.jsonl", line + "\n")) == sorted(
        [f"1: {field}: longer than {limit} characters", bad_country])


@pytest.mark.parametrize("field, limit", [("id", 35), ("customer_id", 35), ("document_no", 35),
                                          ("text", 200), ("bank_ref", 120)])
def test_entry_length_limits_on_the_exact_path(tmp_path: Path, field: str, limit: int) -> None:
    line = payment_line(amount="+1.00", **{field: "A" * limit})
    assert problems(tmp_path, "x.jsonl", line + "\n") == []
    line = payment_line(amount="+1.00", **{field: "A" * (limit + 1)})
    assert problems(tmp_path, "x.jsonl", line + "\n") == [f"1: {field}: longer than {limit} characters"]


def test_problems_of_a_second_reader_join_within_the_bound() -> None:
    """Problems.extend: the importer's helper process reads a file's second half; its problems
    are all counted, and listed only while the first MAX_SHOWN are not full."""
    p = Problems("x.jsonl", limit=3)
    p.append("x.jsonl:1: a")
    p.append("x.jsonl:2: b")
    p.extend(["x.jsonl:9: c", "x.jsonl:10: d"], 5)       # it counted 5, listed its first 2
    assert (p.count, p.shown) == (7, ["x.jsonl:1: a", "x.jsonl:2: b", "x.jsonl:9: c"])
    p.extend(["x.jsonl:11: e"], 1)                       # full: counted, not listed
    assert (p.count, len(p.shown)) == (8, 3)
    assert p.message().splitlines()[-1] == "… and 5 more"


@pytest.mark.parametrize("line, want", [
    (customer_line(name=1.5), "1: name: must be a string, not float (1.5)"),
    (payment_line(text=1.5), "1: text: must be a string, not float (1.5)"),
    (payment_line(bank_ref=2.5), "1: bank_ref: must be a string, not float (2.5)"),
    (customer_line(factoring_default=1.5), "1: factoring_default: 1.5 is not true/false"),
])
def test_a_json_number_where_text_belongs_is_one_problem(tmp_path: Path, line: str, want: str) -> None:
    assert problems(tmp_path, "x.jsonl", line + "\n") == [want]


def test_a_week_date_is_stored_as_its_calendar_date(tmp_path: Path) -> None:
    """The store's dates are YYYY-MM-DD text: an ISO week date (which date.fromisoformat takes)
    is stored as the day it names, on either path."""
    text = (payment_line(document_date="2026-W36-2") + "\n"
            + payment_line(id="E2", document_date="2026-W36-2", amount="+1.00") + "\n")
    rows = [row for _, _, row in read_records(write(tmp_path, "x.jsonl", text), Problems("x.jsonl"))]
    assert [dict(zip(ENTRY_ROW, r))["document_date"] for r in rows] == ["2026-09-01", "2026-09-01"]


# --- customer tags (issue 14): words the rules test ---------------------------------------------
@pytest.mark.parametrize("written, want", [
    (["VIP", "vip", " Key-Account "], ("key-account", "vip")),      # lower case, each once, sorted
    ("Key-Account; vip  nord;;", ("key-account", "nord", "vip")),   # text: blanks or ';' between
    (["vip", "", "  "], ("vip",)),                                 # an empty word is no tag
    ("T" * 35, ("t" * 35,)),
    ([f"w{i}" for i in range(50)], tuple(sorted(f"w{i}" for i in range(50)))),
    ([f"w{i}" for i in range(51)] + ["W0"], None),                 # 51 different words: refused
])
def test_customer_tags_are_read_as_lower_case_words(tmp_path: Path, written, want) -> None:
    text = customer_line(tags=written) + "\n"
    if want is None:
        assert problems(tmp_path, "x.jsonl", text) == ["1: tags: 51 tags; at most 50"]
        return
    [c] = read_ledger_file(write(tmp_path, "x.jsonl", text)).customers
    assert c.tags == want
    rows = [row for _, _, row in read_records(write(tmp_path, "y.jsonl", text), Problems("y.jsonl"))]
    assert [dict(zip(CUSTOMER_ROW, r))["tags"] for r in rows] == [" ".join(want)]


def test_customer_tags_in_a_csv_column(tmp_path: Path) -> None:
    text = "id,name,post_code,tags\nC1,Kari,0150,VIP;nord\nC2,Ola,0151,\n"
    c1, c2 = read_ledger_file(write(tmp_path, "c.csv", text)).customers
    assert (c1.tags, c2.tags) == (("nord", "vip"), ())
    rows = [row for _, _, row in read_records(write(tmp_path, "c.csv", text), Problems("c.csv"))]
    assert [dict(zip(CUSTOMER_ROW, r))["tags"] for r in rows] == ["nord vip", None]


@pytest.mark.parametrize("written, want", [
    (["vip", True], "must be a list of words (text), not ['vip', True]"),
    (1.5, "must be a list of words or text, not float (1.5)"),
    ({"a": "b"}, "must be a list of words or text, not dict ({'a': 'b'})"),
    (["vip", "a,b"], "'a,b' is not a tag (one word of 1-35 characters, without blanks, ';' or ',')"),
    (["two words"], "'two words' is not a tag (one word of 1-35 characters, without blanks, ';' or ',')"),
    ("T" * 36, f"{'t' * 36!r} is not a tag (one word of 1-35 characters, without blanks, ';' or ',')"),
    (["vip", "a\u0001"], "has U+0001 at character 2, a control character, which the transfer file "
                         "(XML 1.0) cannot carry; fix it in the ERP"),
])
def test_a_bad_tag_is_one_problem_naming_it(tmp_path: Path, written, want: str) -> None:
    assert problems(tmp_path, "x.jsonl", customer_line(tags=written) + "\n") == [f"1: tags: {want}"]


def test_a_csv_file_with_carriage_returns_only_as_line_ends_is_read_row_by_row(tmp_path: Path) -> None:
    """Old Mac line ends (a lone CR): the csv module's own newline rule (io newline=""), so each
    CR ends a row, and the line numbers are the rows'."""
    text = "id,name,post_code\rC1,Kari,0150\rC2,Ola,0151\r"
    rows = [(n, dict(zip(CUSTOMER_ROW, r))["name"]) for _, n, r in read_records(write(tmp_path, "c.csv", text),
                                                                                 Problems("c.csv"))]
    assert rows == [(2, "Kari"), (3, "Ola")]
    assert problems(tmp_path, "d.csv", "id,name,post_code\rC1,Kari,0150\rC2,,0151\r") == ["3: name: is required"]


def test_blank_lines_in_json_lines_are_skipped(tmp_path: Path) -> None:
    text = "\n" + customer_line(id="C1") + "\n  \t\n\n" + customer_line(id="C2") + "\n \n"
    rows = list(read_records(write(tmp_path, "x.jsonl", text), Problems("x.jsonl")))
    assert [(kind, n) for kind, n, _ in rows] == [("customer", 2), ("customer", 5)]
    assert problems(tmp_path, "y.jsonl", text) == []
    assert problems(tmp_path, "z.jsonl", "\ufeff") == []            # a BOM alone: an empty file


def test_an_entry_listed_twice_in_one_csv_match_is_refused(tmp_path: Path) -> None:
    assert problems(tmp_path, "m.csv", "match_id,entry_id\nM1,I1\nM1,P1\nM1,I1\n") == [
        "4: entry_id: 'I1' listed twice in match 'M1'"]


def test_an_entry_in_two_matches_of_one_file_is_refused(tmp_path: Path) -> None:
    text = "\n".join([json.dumps({"record": "match", "id": "M1", "entries": ["I1", "P1"]}),
                      json.dumps({"record": "match", "id": "M2", "entries": ["P2", "I1"]}),
                      json.dumps({"record": "match", "id": "M3", "entries": ["I3", "P3"]})]) + "\n"
    assert problems(tmp_path, "x.jsonl", text) == [
        "2: entries: 'I1' is already in match 'M1'; an entry belongs to at most one match"]


def test_problems_are_listed_in_line_order_whichever_check_found_them() -> None:
    p = Problems("x.jsonl")
    for text in ("x.jsonl:12: each line must be a JSON object", "x.jsonl:3: id: is required",
                 "x.jsonl:1: entries: lists an entry twice", "x.jsonl: a problem of the whole file: here"):
        p.append(text)
    assert p.message().splitlines()[1:] == [
        "x.jsonl: a problem of the whole file: here", "x.jsonl:1: entries: lists an entry twice",
        "x.jsonl:3: id: is required", "x.jsonl:12: each line must be a JSON object"]
