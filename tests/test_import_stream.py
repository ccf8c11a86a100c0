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
from hypothesis import HealthCheck, example, given, settings
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



# Records that are plainly good but for a few fields changed, added or dropped: the fast path's
# answers (not only its refusals) compared with the exact path's.
_DROP = object()
GOOD_ENTRIES = [
    {"record": "entry", "id": "I1", "customer_id": "C1", "type": "invoice", "document_no": "F1",
     "document_date": "2026-09-01", "due_date": "2026-09-15", "amount": "1234.50", "currency": "NOK",
     "kid": "0000001000000013", "status": "invoiced", "factoring": True, "text": "Faktura 1 – strøm"},
    {"record": "entry", "id": "P1", "customer_id": "C1", "type": "payment", "document_no": "P1",
     "document_date": "2026-09-20", "amount": "-1234.5", "kid": "0000001000000013", "bank_ref": "*1001"},
    {"record": "entry", "id": "R1", "customer_id": "C1", "type": "reversal", "document_no": "R1",
     "document_date": "2026-09-21", "amount": "1234,50", "reverses": "P1", "source": "Lowell"},
    {"record": "entry", "id": "V1", "customer_id": "C1", "type": "manual_voucher", "document_no": "V1",
     "document_date": "2026-09-22", "amount": "-0,05", "opt_out": "ja", "dunning_level": "2"},
]
GOOD_CUSTOMERS = [
    {"record": "customer", "id": "C1", "name": "Ås & Sønn AS", "type": "business", "org_no": "923 609 016",
     "address1": "Postboks 12", "address3": "Bryggen", "post_code": "5003", "city": "BERGEN", "country": "no",
     "email": "a@b.no", "phone": "+47 1", "factoring_default": False},
    {"record": "customer", "id": "C2", "name": "Kari Nordmann", "address1": "Vei 1", "post_code": "0150",
     "city": "OSLO", "factoring_default": "nei"},
]


def near(goods: list[dict], values: dict) -> st.SearchStrategy[dict]:
    change = st.sampled_from(sorted(values)).flatmap(lambda k: st.tuples(st.just(k), st.one_of(st.just(_DROP), values[k])))

    def apply(base: dict, changes: list) -> dict:
        d = dict(base)
        for k, v in changes:
            if v is _DROP:
                d.pop(k, None)
            else:
                d[k] = v
        return d
    return st.tuples(st.sampled_from(goods), st.lists(change, max_size=3)).map(lambda t: apply(*t))


NEARLY_GOOD = {"entry": (li._fast_entry, li._entry, li.entry_to_row, near(GOOD_ENTRIES, ENTRY_VALUES)),
               "customer": (li._fast_customer, li._customer, li.customer_to_row, near(GOOD_CUSTOMERS, CUSTOMER_VALUES))}


@pytest.mark.parametrize("kind", sorted(NEARLY_GOOD))
@settings(max_examples=1200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_the_fast_path_reads_a_nearly_good_record_as_the_exact_path_does(kind: str, data) -> None:
    fast_path, exact_path, to_row, strategy = NEARLY_GOOD[kind]
    d = data.draw(strategy)
    fast = fast_path(d)
    errors = li.Problems("x")
    exact = exact_path(li._Row("x:1", d, errors))
    if errors.count:
        assert fast is None, (d, errors.shown)
    elif fast is not None:
        assert fast == to_row(exact)
    # what the reader passes for a plain line (no per-value check) changes nothing
    line = json.dumps(d, ensure_ascii=False) + "\n"
    try:
        line.encode("utf-8")
    except UnicodeEncodeError:          # a lone surrogate as it is: no UTF-8 file holds that line
        return
    if li._plain_line(line):
        assert fast_path(d, True) == fast


def test_good_records_take_the_fast_path() -> None:
    for d in GOOD_ENTRIES:
        assert li._fast_entry(d) is not None, d
    for d in GOOD_CUSTOMERS:
        assert li._fast_customer(d) is not None, d

def test_plain_records_take_the_fast_path() -> None:
    entry = {"record": "entry", "id": "I1", "customer_id": "C1", "type": "invoice", "document_no": "F1",
             "document_date": "2026-09-01", "due_date": "2026-09-15", "amount": "1234.50", "kid": "0000001000000013",
             "status": "invoiced", "factoring": True, "text": "Faktura 1 – strøm"}
    customer = {"record": "customer", "id": "C1", "name": "Ås & Sønn AS", "type": "business", "org_no": "923609016",
                "address1": "Postboks 12", "post_code": "5003", "city": "BERGEN", "factoring_default": False}
    assert li._fast_entry(entry) is not None and li._fast_customer(customer) is not None
    assert li._fast_match({"record": "match", "id": "M1", "entries": ["I1", "P1"]}) == ("M1", ("I1", "P1"))



MATCHES = st.fixed_dictionaries({
    "id": ENTRY_VALUES["id"],
    "entries": st.one_of(st.lists(st.sampled_from(["I1", "P1", "K1", "x" * 35]), min_size=2, max_size=3, unique=True),
                         st.lists(st.sampled_from(["I1", "P1", "K1", " I2", "I2 ", "x" * 35, "x" * 36, "a\nb",
                                                   "I\u00031", "\ufffe", ""]), min_size=2, max_size=4),
                         st.lists(st.one_of(st.just("I1"), TEXTS), max_size=3), TEXTS),
}, optional={"record": st.just("match"), "colour": TEXTS})


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(MATCHES)
@example({"id": "M\u00031", "entries": ["I1", "P1"]})
@example({"id": "M1", "entries": ["I1", "P\u00031"]})
@example({"id": "M1", "entries": ["I1", " P1"]})
def test_the_fast_path_takes_a_match_only_as_the_exact_path_does(d: dict) -> None:
    fast = li._fast_match(d)
    errors = li.Problems("x")
    exact = li._slow_match(li._Row("x:1", d, errors))
    if errors.count:
        assert fast is None, (d, errors.shown)
    elif fast is not None:
        assert fast == exact


# what a line read as UTF-8 can hold (no lone surrogate), and the characters that matter here
LINE_TEXT = st.one_of(st.text(st.characters(blacklist_categories=("Cs",)), max_size=30),
                      st.sampled_from(["\ufffe", "x\uffff", "a\u0001b", "\r", "\t", "\u2028", "Å – ø", "\\", '"']))


@settings(max_examples=1500, deadline=None)
@given(st.dictionaries(st.sampled_from(sorted(ENTRY_VALUES)), st.one_of(LINE_TEXT, st.booleans(), st.none()), max_size=6),
       st.booleans())
def test_a_plain_line_holds_no_value_the_transfer_file_cannot_carry(d: dict, ascii_only: bool) -> None:
    """The reader looks at a plain line's values no further (_plain_line for _xml_ok)."""
    line = json.dumps(d, ensure_ascii=ascii_only) + "\n"
    if li._plain_line(line):
        assert li._xml_ok(json.loads(line)), line


def test_characters_written_as_they_are_are_refused_on_their_line_when_unwritable(tmp_path: Path) -> None:
    good = {"record": "customer", "id": "C1", "name": "Ås – Sønn", "type": "private", "address1": "Vei 1",
            "post_code": "0150", "city": "OSLO", "factoring_default": False}
    lines = [good, dict(good, id="C2", city="OS\ufffeLO"), dict(good, id="C3", name="Ola\uffff")]
    path = tmp_path / "raw.jsonl"
    path.write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines), encoding="utf-8")
    assert "\ufffe" in path.read_text(encoding="utf-8")             # written as it is, not escaped
    problems = li.Problems(path.name)
    list(li.read_records(path, problems))
    assert problems.count == 2
    assert [p.split(" at ")[0] for p in problems.shown] == ["raw.jsonl:2: city: has U+FFFE",
                                                           "raw.jsonl:3: name: has U+FFFF"]


@pytest.mark.parametrize("line, key", [
    ('{"record": "entry", "id": "E1", "text": "kl. 10:30", "text": "x"}', "text"),
    ('{"record": "entry", "id": "E1", "amount" : "1.00", "type": "payment", "amount": "2.00"}', "amount"),
    ('{"record": "match", "id": "M1", "entries": ["I1", "P1"], "x": {"k": "1", "k": "2"}}', "k"),
    ('{"record": "match", "id": "M1", "entries": ["I1", "P1"], "id" :"M2"}', "id"),
])
def test_a_key_given_twice_is_found_whatever_the_colons(tmp_path: Path, line: str, key: str) -> None:
    path = tmp_path / "twice.jsonl"
    path.write_text(line + "\n", encoding="utf-8")
    problems = li.Problems(path.name)
    assert list(li.read_records(path, problems)) == []
    assert problems.shown == [f"twice.jsonl:1: {key}: given twice in the object (which one is meant?)"]


def test_a_sample_ledger_is_read_the_fast_way_only(sample: Path, monkeypatch) -> None:
    """Every record of a plain ledger takes the fast path (the exact one is for doubt)."""
    monkeypatch.setattr(li, "_Row", None)                      # calling it would fail the test
    problems = li.Problems(sample.name)
    kinds = {kind for kind, _n, _row in li.read_records(sample, problems)}
    assert problems.count == 0 and kinds == {"customer", "entry", "match"}

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
    rows = [line for line in dump(tmp_path / "x.db").splitlines() if line.startswith("INSERT")]
    assert rows == [line for line in rows if line.startswith("INSERT INTO \"meta\" VALUES('schema',")]  # only open's mark


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


@pytest.mark.parametrize("where", ["file", "memory"])
def test_the_staging_tables_go_with_the_import_and_the_store_stays(tmp_path: Path, sample: Path, where: str) -> None:
    """On a SQLite file the import's connection is closed rather than its staging tables dropped;
    an in-memory store (which would go with its connection) has them dropped instead."""
    db = open_engine(f"sqlite:///{tmp_path / 'x.db'}" if where == "file" else "sqlite://")
    [first] = import_files(db, [sample])
    [again] = import_files(db, [sample])
    assert first.entries[0] > 0 and again.unchanged                  # the store kept the first import
    with db.connect() as conn:
        assert conn.exec_driver_sql("SELECT name FROM sqlite_temp_master").all() == []
    db.dispose()
# --- which path a record takes: every plain form the fast one, anything refused never ----------------
def _entry_rec(**fields) -> dict:
    rec = {"record": "entry", "id": "P1", "customer_id": "C1", "type": "payment", "document_no": "P",
           "document_date": "2026-09-01", "amount": "-5", **fields}
    return {k: v for k, v in rec.items() if v is not None}


def _invoice_rec(**fields) -> dict:
    return _entry_rec(**{"id": "I1", "type": "invoice", "amount": "5", "due_date": "2026-09-15",
                         "status": "invoiced", **fields})


def _customer_rec(**fields) -> dict:
    rec = {"record": "customer", "id": "C1", "name": "Kari", **fields}
    return {k: v for k, v in rec.items() if v is not None}


# each a record the exact path takes without a problem, in a form the fast path must take too
# (a blank, padded, lower-case or defaulted value; an optional field given or left out)
FAST_ENTRIES = [
    _entry_rec(),
    _entry_rec(id=" P2 ", customer_id=" C1 ", document_no=" P ", document_date=" 2026-09-01 ", amount=" -5,5 "),
    _invoice_rec(status=" invoiced ", due_date=" 2026-09-15 "),
    _invoice_rec(status="draft", due_date="2026-W38-2"),              # a week date: stored as its day
    _invoice_rec(factoring=True), _invoice_rec(factoring=" JA "), _invoice_rec(factoring="0"),
    _invoice_rec(factoring=" "), _entry_rec(factoring=""), _entry_rec(opt_out=False),
    _entry_rec(currency="sek"), _entry_rec(currency=" EUR "), _entry_rec(currency=""), _entry_rec(currency="  "),
    _entry_rec(kid=" 12345678903 "), _entry_rec(kid="12-"), _entry_rec(kid=""),
    _entry_rec(type="manual_voucher", opt_out="ja"), _entry_rec(type="manual_voucher", opt_out=" 1 "),
    _entry_rec(type="manual_voucher", opt_out=True), _entry_rec(opt_out="nei"), _entry_rec(opt_out=" "),
    _entry_rec(type="reversal", reverses=" V1 "), _entry_rec(reverses=""), _entry_rec(reverses="   "),
    _entry_rec(dunning_level=" 3 "), _entry_rec(dunning_level="999"), _entry_rec(dunning_level=""),
    _entry_rec(source=" ERP "), _entry_rec(source=""), _entry_rec(text=" T\tab\u2028 "), _entry_rec(text=""),
    _entry_rec(text="T" * 200), _entry_rec(bank_ref=" B-1 "), _entry_rec(bank_ref="B" * 120), _entry_rec(bank_ref=""),
    _entry_rec(due_date=""), _entry_rec(due_date="2026-09-30"), _entry_rec(status=""),
]
FAST_CUSTOMERS = [
    _customer_rec(), _customer_rec(id=" C2 ", name=" Kari "), _customer_rec(type=" business "),
    _customer_rec(type=""), _customer_rec(org_no=" 923 609 016 "), _customer_rec(org_no=""),
    _customer_rec(address3="Vei 3"), _customer_rec(address1=" ", address2="Vei 2"),
    _customer_rec(address1="A" * 70, address2="B" * 70, address3="C" * 70),
    _customer_rec(country=" se "), _customer_rec(country=""), _customer_rec(country="DK"),
    _customer_rec(post_code=" 0150 ", city=" OSLO "), _customer_rec(post_code="P" * 10, city="C" * 35),
    _customer_rec(email=" a@b.no ", phone=" +47 1 "), _customer_rec(email="E" * 200, phone="9" * 40),
    _customer_rec(tags=""), _customer_rec(factoring_default=True), _customer_rec(factoring_default=" Yes "),
    _customer_rec(factoring_default=""), _customer_rec(name="N" * 100),
    _customer_rec(type="business", org_no="923609016", address1="A", address2="B", address3="C",  # every field
                  post_code="0150", city="OSLO", country="NO", email="e", phone="1", factoring_default="nei",
                  tags=""),
]


@pytest.mark.parametrize("d", FAST_ENTRIES + FAST_CUSTOMERS, ids=lambda d: json.dumps(d, ensure_ascii=True)[:90])
def test_each_plain_form_takes_the_fast_path_with_the_exact_paths_row(d: dict) -> None:
    fast, exact = (li._fast_entry, li._entry) if d["record"] == "entry" else (li._fast_customer, li._customer)
    to_row = li.entry_to_row if d["record"] == "entry" else li.customer_to_row
    errors = li.Problems("x")
    obj = exact(li._Row("x:1", d, errors))
    assert errors.shown == [] and obj is not None
    assert fast(d) == to_row(obj)


# each refused by the exact path (one fault): the fast path must not take it
REFUSED_ENTRIES = [
    _entry_rec(colour="red"), _entry_rec(id="P\u00011"), _entry_rec(text="a\u0001"), _entry_rec(id=None),
    _entry_rec(id=5.5), _entry_rec(customer_id=True), _entry_rec(type="invoise"), _entry_rec(document_no=""),
    _entry_rec(document_date="2026-02-30"), _entry_rec(amount="1.001"), _entry_rec(amount=None),
    _invoice_rec(status=None), _invoice_rec(status="paid"), _invoice_rec(status=True), _invoice_rec(due_date=None),
    _invoice_rec(due_date="2026-13-01"), _entry_rec(status="invoiced"), _entry_rec(currency="NOKK"),
    _entry_rec(currency="ß"), _entry_rec(currency="N1K"), _entry_rec(currency=1.5), _entry_rec(kid="12345-6"),
    _entry_rec(kid="1" * 26), _entry_rec(factoring="ja"), _entry_rec(factoring="maybe"), _invoice_rec(factoring=1.5),
    _entry_rec(opt_out="ja"), _entry_rec(opt_out=True), _entry_rec(reverses="V1"),
    _entry_rec(type="reversal", reverses=None), _entry_rec(type="reversal", reverses=" "),
    _entry_rec(type="reversal", reverses="V\n1"), _entry_rec(dunning_level="1000"), _entry_rec(dunning_level="\u00b2"),
    _entry_rec(dunning_level=True), _entry_rec(source=1.5), _entry_rec(text="T" * 201), _entry_rec(text=1.5),
    _entry_rec(bank_ref="B" * 121),
]
REFUSED_CUSTOMERS = [
    _customer_rec(colour="red"), _customer_rec(id=None), _customer_rec(id=" "), _customer_rec(id="x" * 36),
    _customer_rec(name=None), _customer_rec(name=""), _customer_rec(name="N" * 101), _customer_rec(type="privat"),
    _customer_rec(org_no=1.5), _customer_rec(address1="A" * 71), _customer_rec(address2="A" * 71),
    _customer_rec(address3="A" * 71), _customer_rec(country="NOR"), _customer_rec(country="\u00df"),
    _customer_rec(country="N1"), _customer_rec(post_code="P" * 11), _customer_rec(city="C" * 36),
    _customer_rec(email="E" * 201), _customer_rec(phone="9" * 41), _customer_rec(factoring_default="maybe"),
    _customer_rec(name="Kari\u0001"),
]


@pytest.mark.parametrize("d", REFUSED_ENTRIES + REFUSED_CUSTOMERS, ids=lambda d: json.dumps(d, ensure_ascii=True)[:90])
def test_a_record_the_exact_path_refuses_never_takes_the_fast_path(d: dict) -> None:
    fast, exact = (li._fast_entry, li._entry) if d["record"] == "entry" else (li._fast_customer, li._customer)
    errors = li.Problems("x")
    exact(li._Row("x:1", d, errors))
    assert errors.count >= 1
    assert fast(d) is None


@pytest.mark.parametrize("d", [
    {"record": "match", "id": "M1", "entries": ["I1"]}, {"record": "match", "id": "M1", "entries": ["I1", "I1"]},
    {"record": "match", "id": "M1", "entries": ["I1", 5.5]}, {"record": "match", "id": "M1", "entries": ["I1", "P 1\n"]},
    {"record": "match", "id": "M1", "entries": ["I1", "P\u00011"]}, {"record": "match", "id": "M1", "entries": "I1"},
    {"record": "match", "id": "M1", "entries": ["I1", "P1"], "colour": "red"},
    {"record": "match", "entries": ["I1", "P1"]}, {"record": "match", "id": " ", "entries": ["I1", "P1"]},
])
def test_a_match_the_exact_path_refuses_never_takes_the_fast_path(d: dict) -> None:
    errors = li.Problems("x")
    li._slow_match(li._Row("x:1", d, errors))
    assert errors.count >= 1
    assert li._fast_match(d) is None


def test_plain_matches_take_the_fast_path() -> None:
    assert li._fast_match({"record": "match", "id": " M1 ", "entries": ["I1", "P1"]}) == ("M1", ("I1", "P1"))
    assert li._fast_match({"id": "M2", "entries": ["I1", "P1", "V1"]}) == ("M2", ("I1", "P1", "V1"))


# --- reading a file in parts -------------------------------------------------------------------------
def _payment(i: int) -> str:
    return json.dumps(_entry_rec(id=f"P{i}", document_no=f"D{i}")) + "\n"


def test_split_point_is_the_start_of_the_line_after_the_middle_byte(tmp_path: Path) -> None:
    lines = [_payment(i) for i in range(1, 5)]
    data = "".join(lines).encode()
    for name in ("x.jsonl", "x.NDJSON", "x.json"):
        path = tmp_path / name
        path.write_bytes(data)
        mid = li.split_point(path)
        assert mid is not None and data[mid - 1:mid] == b"\n"
        assert len(data) // 2 <= mid < len(data) and data.rfind(b"\n", 0, len(data) // 2) < mid
    (tmp_path / "x.csv").write_bytes(data)
    assert li.split_point(tmp_path / "x.csv") is None              # a CSV is read whole
    (tmp_path / "one.jsonl").write_bytes(lines[0].encode())
    assert li.split_point(tmp_path / "one.jsonl") is None          # nothing after the middle line
    (tmp_path / "empty.jsonl").write_bytes(b"")
    assert li.split_point(tmp_path / "empty.jsonl") is None


def test_lines_before_counts_the_line_ends_before_an_offset(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    path.write_bytes(b"a\nbb\n\nccc\n")
    assert [li.lines_before(path, k) for k in range(11)] == [0, 0, 1, 1, 1, 2, 3, 3, 3, 3, 4]
    assert li.lines_before(path, 100) == 4                         # past the end: every line


def test_the_two_parts_of_a_file_give_its_records_with_its_line_numbers(tmp_path: Path) -> None:
    text = "".join(_payment(i) for i in range(1, 7))
    path = tmp_path / "x.jsonl"
    path.write_text(text, encoding="utf-8")
    whole = list(li.read_records(path, li.Problems("x")))
    mid = li.split_point(path)
    first = list(li.read_records(path, li.Problems("x"), stop=mid))
    second = list(li.read_records(path, li.Problems("x"), start=mid, first_line=li.lines_before(path, mid) + 1))
    assert first and second and first + second == whole
    assert [n for _, n, _ in whole] == [1, 2, 3, 4, 5, 6]
    # a stop inside a line: that line still belongs to the first part
    assert list(li.read_records(path, li.Problems("x"), stop=mid - 3)) == first
    assert list(li.read_records(path, li.Problems("x"), stop=0)) == []


def test_a_bom_is_dropped_only_at_the_start_of_the_file(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    path.write_bytes("\ufeff".encode() + _payment(1).encode() + "\ufeff".encode() + _payment(2).encode())
    problems = li.Problems("x.jsonl")
    rows = list(li.read_records(path, problems))
    assert [n for _, n, _ in rows] == [1]
    assert problems.shown == ["x.jsonl:2: not valid JSON: Unexpected UTF-8 BOM (decode using utf-8-sig) (column 1)"]
    # read from the second line on, the BOM there is no file start
    problems = li.Problems("x.jsonl")
    at = len("\ufeff".encode() + _payment(1).encode())
    assert list(li.read_records(path, problems, start=at, first_line=2)) == []
    assert problems.count == 1


@pytest.mark.parametrize("start, stop", [(1, None), (0, 10), (5, 10)])
def test_a_csv_file_is_never_read_in_parts(tmp_path: Path, start: int, stop) -> None:
    path = tmp_path / "x.csv"
    path.write_text("id,name,post_code\nC1,Kari,0150\n", encoding="utf-8")
    with pytest.raises(ValueError, match="a CSV file is read whole"):
        list(li.read_records(path, li.Problems("x.csv"), start=start, stop=stop))
    assert len(list(li.read_records(path, li.Problems("x.csv")))) == 1


def test_lines_before_counts_across_chunks(tmp_path: Path) -> None:
    # lines_before reads a MiB at a time: a line end just after the first chunk is counted
    path = tmp_path / "big.jsonl"
    path.write_bytes(b"x" * (1 << 20) + b"\n" + b"y\n")
    assert [li.lines_before(path, (1 << 20) + k) for k in (0, 1, 2, 3)] == [0, 1, 1, 2]


def test_a_read_error_in_the_middle_of_a_file_is_an_input_error(tmp_path: Path) -> None:
    class Failing:
        def seek(self, offset: int) -> None:
            pass

        def __iter__(self):
            yield b'{"record": "customer"}\n'
            raise OSError(5, "Input/output error")

    lines = li._lines(tmp_path / "x.jsonl", Failing(), 0, None)
    assert next(lines) == '{"record": "customer"}\n'
    with pytest.raises(InputError, match=r"x\.jsonl: cannot read: Input/output error$"):
        next(lines)


def test_split_point_cuts_at_the_middle_byte_not_earlier(tmp_path: Path) -> None:
    data = "".join(_payment(i) for i in range(1, 11)).encode()       # ten lines of about the same length
    path = tmp_path / "x.jsonl"
    path.write_bytes(data)
    assert li.split_point(path) == data.index(b"\n", len(data) // 2) + 1
