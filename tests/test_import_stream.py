"""The streaming import (issue 12, point 10): the fast path reads exactly what the exact path
reads, the staged versions are the store's, a big file read by two processes is stored exactly
as when read by one (its problems with the file's own line numbers), problems are bounded but
all counted, and a file is still all or nothing.
"""
from __future__ import annotations

import json
import re
import sqlite3
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reskontro.adapters import ledger_import as li
from reskontro.domain import InputError, from_ore
from reskontro.ledger import importer
from reskontro.ledger.importer import _customer_staged, _entry_digests, import_files
from reskontro.ledger.sample import write_sample_file
from reskontro.ledger.store import (customer_stamp, customer_version, entry_stamp, entry_version,
                                    open_engine)


def dump(path: Path) -> str:
    con = sqlite3.connect(path)
    try:
        return "\n".join(con.iterdump())
    finally:
        con.close()


# --- the fast path reads what the exact path reads ------------------------------------------------
TEXTS = st.one_of(
    st.none(), st.booleans(), st.floats(allow_nan=False, width=16), st.lists(st.just("x"), max_size=2),
    st.sampled_from(["", " ", "  C1 ", "C1", "I 1", "a\nb", "x" * 35, "x" * 36, "t" * 200, "t" * 201,
                     "\u0001x", "x\u001f", "\ufffe", "\ud800", "Å", "\u2028", "\r", "\t"]),
    st.text(max_size=40))
ENTRY_VALUES = {
    "id": st.one_of(st.sampled_from(["E1", " E2 ", "E\u00031", "x" * 36]), TEXTS),
    "customer_id": st.one_of(st.just("C1"), TEXTS),
    "type": st.one_of(st.sampled_from(["invoice", "payment", "credit_note", "payout", "manual_voucher",
                                       "reversal", " invoice", "Invoice"]), TEXTS),
    "document_no": st.one_of(st.just("D1"), TEXTS),
    "document_date": st.one_of(st.sampled_from(["2026-09-01", " 2026-09-01", "20260901", "2026-W01-1",
                                                "2026-02-30", "01.09.2026"]), TEXTS),
    "due_date": st.one_of(st.sampled_from(["2026-09-15", "", "2026-13-01"]), TEXTS),
    "amount": st.one_of(st.sampled_from(["1234.50", "-0", "+3", "1,5", " 12.5 ", "007", "1.", ".5", "1,500",
                                         "999999999.99", "1000000000", "0000000001.00", "-0.05", "1e5",
                                         "2000"]), TEXTS),
    "currency": st.one_of(st.sampled_from(["NOK", "sek", "NOKK", "ß"]), TEXTS),
    "kid": st.one_of(st.sampled_from(["0000001000000013", "5", "12-", "1" * 26, "\u0661\u0662"]), TEXTS),
    "status": st.one_of(st.sampled_from(["invoiced", "draft", "paid"]), TEXTS),
    "factoring": st.one_of(st.sampled_from(["ja", "nei", "true", "maybe", " J "]), TEXTS),
    "opt_out": st.one_of(st.sampled_from(["1", "0", "yes"]), TEXTS),
    "reverses": st.one_of(st.just("P1"), TEXTS),
    "source": st.one_of(st.just("Lowell"), TEXTS),
    "dunning_level": st.one_of(st.sampled_from(["0", "2", "999", "1000", "\u00b2", " 3 "]), TEXTS),
    "text": TEXTS,
    "bank_ref": st.one_of(st.just("*1001"), TEXTS),
    "colour": TEXTS,
}
CUSTOMER_VALUES = {
    "id": ENTRY_VALUES["id"], "name": st.one_of(st.just("Kari Nordmann"), TEXTS),
    "type": st.one_of(st.sampled_from(["private", "business", "privat"]), TEXTS),
    "org_no": st.one_of(st.sampled_from(["923609016", "923 609 016", "  "]), TEXTS),
    "address1": TEXTS, "address2": TEXTS, "address3": TEXTS,
    "post_code": st.one_of(st.just("0150"), TEXTS), "city": st.one_of(st.just("OSLO"), TEXTS),
    "country": st.one_of(st.sampled_from(["NO", "se", "NOR", "\u00df"]), TEXTS),
    "email": TEXTS, "phone": TEXTS, "factoring_default": ENTRY_VALUES["opt_out"], "colour": TEXTS,
    "tags": st.one_of(st.sampled_from(["", "vip", "Key-Account; vip", ["vip", "VIP"], ["two words"], [1]]), TEXTS),
}


def records(values: dict) -> st.SearchStrategy[dict]:
    keys = st.lists(st.sampled_from(sorted(values)), unique=True)
    return keys.flatmap(lambda ks: st.fixed_dictionaries({k: values[k] for k in ks}))


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records(ENTRY_VALUES))
def test_the_fast_path_takes_an_entry_only_as_the_exact_path_does(d: dict) -> None:
    fast = li._fast_entry(d)
    errors = li.Problems("x")
    e = li._entry(li._Row("x:1", d, errors))
    if errors.count:
        assert fast is None, (d, errors.shown)
    elif fast is not None:
        assert fast == li.entry_to_row(e)


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records(CUSTOMER_VALUES))
def test_the_fast_path_takes_a_customer_only_as_the_exact_path_does(d: dict) -> None:
    fast = li._fast_customer(d)
    errors = li.Problems("x")
    c = li._customer(li._Row("x:1", d, errors))
    if errors.count:
        assert fast is None, (d, errors.shown)
    elif fast is not None:
        assert fast == li.customer_to_row(c)


def test_plain_records_take_the_fast_path() -> None:
    entry = {"record": "entry", "id": "I1", "customer_id": "C1", "type": "invoice", "document_no": "F1",
             "document_date": "2026-09-01", "due_date": "2026-09-15", "amount": "1234.50", "kid": "0000001000000013",
             "status": "invoiced", "factoring": True, "text": "Faktura 1 – strøm"}
    customer = {"record": "customer", "id": "C1", "name": "Ås & Sønn AS", "type": "business", "org_no": "923609016",
                "address1": "Postboks 12", "post_code": "5003", "city": "BERGEN", "factoring_default": False}
    assert li._fast_entry(entry) is not None and li._fast_customer(customer) is not None
    assert li._fast_match({"record": "match", "id": "M1", "entries": ["I1", "P1"]}) == ("M1", ("I1", "P1"))


# --- the staged versions are the store's ----------------------------------------------------------
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records(ENTRY_VALUES), records(CUSTOMER_VALUES))
def test_staged_versions_and_stamps_are_the_stores(d: dict, c: dict) -> None:
    errors = li.Problems("x")
    e = li._entry(li._Row("x:1", d, errors))
    if e is not None and not errors.count:
        assert _entry_digests(li.entry_to_row(e)) == (entry_version(e), entry_stamp(e))
    errors = li.Problems("x")
    cust = li._customer(li._Row("x:1", c, errors))
    if not errors.count:
        staged = _customer_staged(li.customer_to_row(cust), 1)
        assert staged[14:16] == (customer_version(cust), customer_stamp(cust))


# --- a big file in two halves -------------------------------------------------------------------------
@pytest.fixture
def sample(tmp_path: Path) -> Path:
    path = tmp_path / "ledger.jsonl"
    write_sample_file(path, 400, seed=7)
    return path


def test_two_readers_store_exactly_what_one_does(tmp_path: Path, sample: Path, monkeypatch) -> None:
    one = open_engine(f"sqlite:///{tmp_path / 'one.db'}")
    [r1] = import_files(one, [sample])
    monkeypatch.setattr(importer, "PARALLEL_FROM", 0)
    calls = []
    real = importer._SecondHalf.take_in
    monkeypatch.setattr(importer._SecondHalf, "take_in", lambda self, *a: (calls.append(self.mid), real(self, *a)))
    two = open_engine(f"sqlite:///{tmp_path / 'two.db'}")
    [r2] = import_files(two, [sample])
    assert calls, "the file was not read in two halves"
    assert (r1.customers, r1.entries, r1.matches) == (r2.customers, r2.entries, r2.matches)
    one.dispose()
    two.dispose()
    assert dump(tmp_path / "one.db") == dump(tmp_path / "two.db")
    with sqlite3.connect(tmp_path / "two.db") as con:           # nothing left attached or staged
        assert con.execute("PRAGMA database_list").fetchall()[1:] == []


def bad_file(tmp_path: Path, sample: Path) -> tuple[Path, list[int]]:
    lines = sample.read_text(encoding="utf-8").splitlines()
    bad = [3, len(lines) - 2]                                   # one bad amount in each half
    for i in bad:
        rec = json.loads(lines[i - 1])
        if rec["record"] != "entry":
            rec = {"record": "entry", "id": f"X{i}", "customer_id": "C0000001", "type": "payment",
                   "document_no": "D", "document_date": "2026-09-01"}
        rec["amount"] = "12.345"
        lines[i - 1] = json.dumps(rec)
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path, bad


@pytest.mark.parametrize("halves", [1, 2])
def test_problems_in_either_half_carry_the_files_line_numbers(tmp_path: Path, sample: Path, monkeypatch,
                                                              halves: int) -> None:
    if halves == 2:
        monkeypatch.setattr(importer, "PARALLEL_FROM", 0)
    path, bad = bad_file(tmp_path, sample)
    db = open_engine(f"sqlite:///{tmp_path / 'x.db'}")
    with pytest.raises(InputError) as info:
        import_files(db, [path])
    msg = str(info.value)
    assert msg.startswith("bad.jsonl: 2 problems, nothing imported:")
    assert [int(x) for x in re.findall(r"^bad\.jsonl:(\d+): amount:", msg, re.M)] == bad
    db.dispose()
    assert "INSERT" not in dump(tmp_path / "x.db")


def test_a_byte_that_is_not_utf8_in_the_second_half_names_its_offset(tmp_path: Path, sample: Path,
                                                                     monkeypatch) -> None:
    monkeypatch.setattr(importer, "PARALLEL_FROM", 0)
    data = sample.read_bytes()
    at = len(data) - 100
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(data[:at] + b"\xff" + data[at + 1:])
    db = open_engine(f"sqlite:///{tmp_path / 'x.db'}")
    with pytest.raises(InputError, match=rf"^latin1\.jsonl: not UTF-8 text \(byte {at}\)"):
        import_files(db, [path])
    [ok] = import_files(db, [sample])                          # the connection is clean again
    assert ok.entries[0] > 0


def test_a_helper_that_fails_costs_time_not_a_check(tmp_path: Path, sample: Path, monkeypatch) -> None:
    one = open_engine(f"sqlite:///{tmp_path / 'one.db'}")
    import_files(one, [sample])
    one.dispose()
    monkeypatch.setattr(importer, "PARALLEL_FROM", 0)
    monkeypatch.setattr(sys, "executable", "/bin/false")        # the helper exits 1 at once
    two = open_engine(f"sqlite:///{tmp_path / 'two.db'}")
    import_files(two, [sample])
    two.dispose()
    assert dump(tmp_path / "one.db") == dump(tmp_path / "two.db")
    path, bad = bad_file(tmp_path, sample)
    with pytest.raises(InputError, match=rf"bad\.jsonl:{bad[1]}: amount:"):
        import_files(open_engine(f"sqlite:///{tmp_path / 'three.db'}"), [path])


# --- bounded, all counted -------------------------------------------------------------------------
def test_problems_are_bounded_in_the_message_and_all_counted(tmp_path: Path) -> None:
    n = 1500
    path = tmp_path / "many.jsonl"
    path.write_text("".join(json.dumps({"record": "entry", "id": f"E{i}", "customer_id": "C1", "type": "payment",
                                        "document_no": "D", "document_date": "2026-09-01", "amount": "1.001"})
                            + "\n" for i in range(n)), encoding="utf-8")
    db = open_engine(f"sqlite:///{tmp_path / 'x.db'}")
    with pytest.raises(InputError) as info:
        import_files(db, [path])
    lines = str(info.value).splitlines()
    assert lines[0] == f"many.jsonl: {n} problems, nothing imported:"
    assert len(lines) == 1 + li.MAX_SHOWN + 1 and lines[-1] == f"… and {n - li.MAX_SHOWN} more"
    assert lines[1].startswith("many.jsonl:1: amount:") and lines[li.MAX_SHOWN].startswith(
        f"many.jsonl:{li.MAX_SHOWN}: amount:")


def test_amounts_keep_their_exact_value_through_the_fast_path(tmp_path: Path) -> None:
    amounts = {"A1": ("1500,5", "1500.50"), "A2": ("-0", "0.00"), "A3": ("007", "7.00"), "A4": ("-0,05", "-0.05"),
               "A5": ("999999999.99", "999999999.99")}
    path = tmp_path / "a.jsonl"
    path.write_text(json.dumps({"record": "customer", "id": "C1", "name": "Kari", "type": "private",
                                "address1": "Vei 1", "post_code": "0150", "city": "OSLO"}) + "\n"
                    + "".join(json.dumps({"record": "entry", "id": eid, "customer_id": "C1", "type": "payment",
                                          "document_no": eid, "document_date": "2026-09-01", "amount": a}) + "\n"
                              for eid, (a, _) in amounts.items()), encoding="utf-8")
    db = open_engine(f"sqlite:///{tmp_path / 'x.db'}")
    import_files(db, [path])
    with db.connect() as conn:
        got = dict(conn.exec_driver_sql("SELECT id, amount_ore FROM entries").all())
    assert {k: str(from_ore(v)) for k, v in got.items()} == {k: want for k, (_, want) in amounts.items()}
