"""The transfer file: rendering (template + transfer_file.py), the XSD, and the pre-send checker.

Files are rendered from hand-built domain objects, then checked; violations are made either
through the domain objects or by editing the rendered bytes, and each must be reported with
its code, line and id.
"""
from __future__ import annotations

import io
import tempfile
from dataclasses import replace
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree
from stdnum import luhn
from stdnum.no import orgnr

from reskontro.transfer.contract import checker as checker_module
from reskontro.transfer.contract import ids as ids_module
from reskontro.transfer.contract import matches as matches_module
from reskontro.transfer.contract import scan as scan_module
from reskontro.transfer.contract import structure as structure_module
from reskontro.transfer.contract import values as values_module
from reskontro.transfer.contract import (CheckResult, CustomerRecord, EntryRecord, HeaderRecord, MatchRecord)
from reskontro.transfer.contract import (ContractError, ContractViolation, TransferChecker,
                                assert_sendable, check_transfer_file, kid_is_valid,
                                luhn_is_valid, mod11_kid_check)
from reskontro.domain import Address, Customer, Entry, Match
from reskontro.transfer.render import FileHeader, TransferTotals, make_environment, render_transfer

ROOT = Path(__file__).resolve().parents[1]
TEMPLATES = ROOT / "templates"
XSD = TEMPLATES / "ledger-transfer-1.xsd"
NS = "urn:reskontro:ledger-transfer:1"
OSLO = ZoneInfo("Europe/Oslo")
ENV = make_environment(TEMPLATES)
FULL_SCHEMA = etree.XMLSchema(etree.parse(str(XSD)))   # with its xs:unique constraints
CHECKER = TransferChecker(XSD)

HOSTILE = "Ås & Sønn <AS>"
ORG_OK, ORG_OK2, ORG_BAD = "923609016", "974760673", "923609017"


# ------------------------------------------------------------------ builders

def kid10(body: str) -> str:
    return body + luhn.calc_check_digit(body)


def header(seq: int = 1, cut_off: datetime = datetime(2026, 11, 28, 18, 0, tzinfo=OSLO),
           kind: str = "daily", base: str = "NOK") -> FileHeader:
    return FileHeader("123456", ORG_OK, seq, kind, cut_off + timedelta(minutes=5), cut_off, base)


def customer(cid: str, name: str = "Ola Nordmann", ctype: str = "private",
             org: str | None = None, country: str = "NO", post: str = "0155") -> Customer:
    return Customer(cid, name, ctype, Address(("Storgata 1", "c/o Kari"), post, "Oslo", country),
                    org_no=org, email="post@example.no", phone="+47 22 00 00 00")


def invoice(eid: str, amount: str, cust: str = "C1", cur: str = "NOK", kid: str | None = None,
            due: date | None = date(2026, 12, 15), text: str | None = None) -> Entry:
    return Entry(eid, cust, "invoice", f"F-{eid}", date(2026, 11, 20), Decimal(amount), cur,
                 due_date=due, kid=kid, status="invoiced", text=text)


def counter(eid: str, amount: str, cust: str = "C1", cur: str = "NOK",
            etype: str = "payment") -> Entry:
    return Entry(eid, cust, etype, f"B-{eid}", date(2026, 11, 25), Decimal(amount), cur)


def day_customers() -> list[Customer]:
    return [customer("C1"),
            customer("C2", HOSTILE, "business", ORG_OK),
            customer("C3", "Svensson AB", "business", ORG_OK2, country="SE", post="114 55")]


def day_entries() -> list[Entry]:
    return [invoice("I1", "1000.00", kid=kid10("100001")),
            counter("P1", "-400.00"),
            invoice("I2", "300.00", "C2", kid="123456785"),        # MOD11 (not MOD10)
            invoice("I3", "200.10", "C2", kid="1000005-", text=HOSTILE),   # MOD11 check 10
            counter("P2", "-500.10", "C2"),
            invoice("I4", "99.99", "C3", "EUR"),
            counter("CN1", "-9.99", "C3", "EUR", "credit_note"),
            invoice("I5", "12.34", "C1", "SEK"),
            counter("V1", "5.00", etype="manual_voucher")]


def day_matches() -> list[Match]:
    return [Match("M1", ("I1", "P1")),               # one invoice, one counterpart
            Match("M2", ("I2", "I3", "P2")),         # several invoices, one counterpart
            Match("M3", ("I4", "CN1"))]


def render(tmp_path: Path, customers=(), entries=(), matches=(),
           hdr: FileHeader | None = None) -> tuple[Path, TransferTotals]:
    hdr = hdr or header()
    path = tmp_path / f"{hdr.file_id}.xml"
    with path.open("wb") as out:
        totals = render_transfer(out, hdr, customers, entries, matches, ENV)
    return path, totals


def render_day(tmp_path: Path, **changes) -> Path:
    parts = {"customers": day_customers(), "entries": day_entries(), "matches": day_matches()}
    parts.update(changes)
    return render(tmp_path, **parts)[0]


def edit(path: Path, old: str, new: str) -> Path:
    data = path.read_text("utf-8")
    assert old in data, f"{old!r} not in the rendered file"
    path.write_text(data.replace(old, new, 1), "utf-8")
    return path


def line_of(path: Path, needle: str) -> int:
    for n, line in enumerate(path.read_text("utf-8").splitlines(), 1):
        if needle in line:
            return n
    raise AssertionError(f"{needle!r} not in {path.name}")


def check(path: Path, **kw) -> list[ContractError]:
    return check_transfer_file(path, XSD, **kw)


def only(errors: list[ContractError], code: str) -> ContractError:
    hits = [e for e in errors if e.code == code]
    assert len(hits) == 1, f"expected one {code} error, got {[str(e) for e in errors]}"
    return hits[0]


def trailer(path: Path) -> tuple[dict[str, int], dict[str, Decimal]]:
    root = etree.parse(str(path)).getroot()
    tr = root.find(f"{{{NS}}}Trailer")
    counts = {etree.QName(c).localname: int(c.text) for c in tr if "Count" in c.tag}
    sums = {c.get("currency"): Decimal(c.text) for c in tr.iter(f"{{{NS}}}ControlSum")}
    return counts, sums


# ------------------------------------------------------------------ rendering

def test_rendered_day_passes_full_xsd_and_checker(tmp_path):
    path = render_day(tmp_path)
    assert path.read_bytes().startswith(b'<?xml version="1.0" encoding="UTF-8"?>\n<LedgerTransfer')
    FULL_SCHEMA.assertValid(etree.parse(str(path)))
    assert check(path) == []


def test_hostile_names_are_escaped_and_read_back(tmp_path):
    path = render_day(tmp_path)
    raw = path.read_text("utf-8")
    assert "Ås &amp; Sønn &lt;AS&gt;" in raw
    root = etree.parse(str(path)).getroot()
    assert root.find(f".//{{{NS}}}Customer[@id='C2']/{{{NS}}}Name").text == HOSTILE
    assert root.find(f".//{{{NS}}}Entry[@id='I3']/{{{NS}}}Text").text == HOSTILE


def test_a_template_that_autoescapes_the_pre_escaped_rows_writes_the_same_file(tmp_path):
    """Rows are pre-escaped (Markup where escaping was needed): a site template from before
    the loops turned autoescape off must not escape them twice."""
    old = tmp_path / "old-templates"
    old.mkdir()
    text = (TEMPLATES / "ledger-transfer-1.xml.j2").read_text("utf-8")
    autoescaping = text.replace("{% autoescape false %}{# rows are pre-escaped #}\n", "").replace(
        "{% endautoescape %}\n", "")
    assert autoescaping.count("autoescape") < text.count("autoescape")
    (old / "ledger-transfer-1.xml.j2").write_text(autoescaping, "utf-8")
    entries = day_entries()
    entries[0] = replace(entries[0], text=HOSTILE, document_no="A&B")
    parts = {"customers": day_customers(), "entries": entries, "matches": day_matches()}
    (tmp_path / "new").mkdir()
    (tmp_path / "old").mkdir()
    new_path = render(tmp_path / "new", **parts)[0]
    with (tmp_path / "old" / new_path.name).open("wb") as out:
        render_transfer(out, header(), env=make_environment(old), **parts)
    assert (tmp_path / "old" / new_path.name).read_bytes() == new_path.read_bytes()
    assert "Ås &amp; Sønn &lt;AS&gt;" in new_path.read_text("utf-8")


def test_hostile_ids_and_texts_in_pre_escaped_rows(tmp_path):
    entries = [invoice('I"1', "1.00", cust="C&1", text="<b>'x'</b> & more"),
               counter("P<1>", "-1.00", cust="C&1")]
    path, _ = render(tmp_path, [customer("C&1")], entries, [Match("M&1", ('I"1', "P<1>"))])
    FULL_SCHEMA.assertValid(etree.parse(str(path)))
    assert check(path) == []
    root = etree.parse(str(path)).getroot()
    assert [e.get("id") for e in root.iter(f"{{{NS}}}Entry")] == ['I"1', "P<1>"]
    assert root.find(f".//{{{NS}}}Text").text == "<b>'x'</b> & more"
    assert [r.text for r in root.iter(f"{{{NS}}}EntryRef")] == ['I"1', "P<1>"]


def test_control_character_is_refused_at_render(tmp_path):
    with pytest.raises(ValueError, match=r"Entry 'I1'.*U\+0007"):
        render(tmp_path, [customer("C1")], [invoice("I1", "1.00", text="bell\x07")])


def test_trailer_has_one_control_sum_per_currency(tmp_path):
    path, totals = render(tmp_path, day_customers(), day_entries(), day_matches())
    assert totals == TransferTotals(3, 9, 3, {"NOK": Decimal("605.00"), "EUR": Decimal("90.00"),
                                              "SEK": Decimal("12.34")})
    counts, sums = trailer(path)
    assert counts == {"CustomerCount": 3, "EntryCount": 9, "MatchCount": 3}
    assert sums == totals.control_sums


def test_zero_entry_day_has_control_sum_zero_in_base_currency(tmp_path):
    path, totals = render(tmp_path, hdr=header(base="SEK"))
    assert totals == TransferTotals(0, 0, 0, {"SEK": Decimal("0.00")})
    assert "<Entries>" not in path.read_text() and "<Customers>" not in path.read_text()
    assert trailer(path)[1] == {"SEK": Decimal("0.00")}
    FULL_SCHEMA.assertValid(etree.parse(str(path)))
    assert check(path) == []
    err = only(TransferChecker(XSD, base_currency="NOK").check(path).errors, "control_sum")
    assert "base currency NOK" in err.message


def test_due_date_rendered_only_for_invoices(tmp_path):
    pay = replace(counter("P1", "-1.00"), due_date=date(2026, 12, 1))
    path, _ = render(tmp_path, [customer("C1")], [invoice("I1", "1.00"), pay])
    text = path.read_text()
    assert text.count("<DueDate>") == 1 and "<DueDate>2026-12-15</DueDate>" in text


def test_reversal_is_never_rendered(tmp_path):
    rev = replace(counter("R1", "400.00"), type="reversal", reverses="P1")
    with pytest.raises(ValueError, match="R1.*reversal"):
        render(tmp_path, [customer("C1")], [invoice("I1", "1.00"), rev])


def test_amount_with_three_decimals_is_refused_not_rounded(tmp_path):
    with pytest.raises(ValueError, match="more than two decimals"):
        render(tmp_path, [customer("C1")], [invoice("I1", "1.005")])


def test_amount_without_two_places_is_written_with_two(tmp_path):
    entries = [invoice("I1", "10"), invoice("I2", "1E+2"), invoice("I3", "0.5")]
    path, totals = render(tmp_path, [customer("C1")], entries)
    assert ">10.00<" in path.read_text() and ">100.00<" in path.read_text()
    assert ">0.50<" in path.read_text()
    assert totals.control_sums == {"NOK": Decimal("110.50")} and check(path) == []


def test_file_id_uses_the_cut_off_date_in_oslo():
    late = datetime(2026, 11, 28, 23, 30, tzinfo=timezone.utc)    # 00:30 on the 29th in Oslo
    assert header(42, late).file_id == "LT_123456_20261129_000042"
    with pytest.raises(ValueError, match="time zone"):
        header(1, datetime(2026, 11, 28, 18, 0))


def test_render_streams_while_entries_are_still_coming():
    out = io.BytesIO()
    seen_written: list[int] = []

    def entries():
        for i in range(20_000):
            if i == 19_999:
                seen_written.append(len(out.getvalue()))
            yield invoice(f"I{i}", "1.00")

    totals = render_transfer(out, header(), [customer("C1")], entries(), [], ENV)
    assert seen_written[0] > 1_000_000      # written in chunks before the last entry came
    assert totals.entry_count == 20_000 and totals.control_sums == {"NOK": Decimal("20000.00")}


# ------------------------------------------------------------------ check digits

def test_kid_check_digits():
    assert kid_is_valid(kid10("100001")) and kid_is_valid("12345678903")
    assert mod11_kid_check("12345678") == "5" and kid_is_valid("123456785")   # MOD11 only
    assert not luhn_is_valid("123456785")
    assert mod11_kid_check("1000005") == "-" and kid_is_valid("1000005-")
    assert not kid_is_valid("123456789")       # MOD10 wants 2, MOD11 wants 5
    assert not kid_is_valid("1-") and not kid_is_valid("12a4") and not kid_is_valid("1")


@given(st.text(alphabet="0123456789", min_size=1, max_size=25))
def test_fast_luhn_agrees_with_stdnum(digits):
    assert luhn_is_valid(digits) == (luhn.checksum(digits) == 0)


@given(st.text(alphabet="0123456789", min_size=1, max_size=24))
def test_mod11_kid_matches_definition(body):
    # weights 2,3,4,5,6,7,2,... from the right; remainder r -> 11 - r, 11 -> 0, 10 -> '-'
    weights = [2, 3, 4, 5, 6, 7] * 5
    r = sum(int(d) * w for d, w in zip(reversed(body), weights)) % 11
    want = {0: "0", 1: "-"}.get(r, str(11 - r))
    assert mod11_kid_check(body) == want and kid_is_valid(body + want)


# ------------------------------------------------------------------ violations

def test_bad_kid_names_line_and_entry(tmp_path):
    entries = day_entries()
    entries[0] = replace(entries[0], kid="123456789")
    path = render_day(tmp_path, entries=entries)
    err = only(check(path), "kid")
    assert (err.line, err.kind, err.ref) == (line_of(path, '<Entry id="I1"'), "Entry", "I1")
    assert str(err) == f"{path.name} line {err.line} (Entry I1): KID 123456789 fails MOD10 and MOD11"


def test_bad_org_no_and_org_no_on_private_customer(tmp_path):
    customers = day_customers()
    customers[1] = replace(customers[1], org_no=ORG_BAD)
    customers[0] = replace(customers[0], org_no=ORG_OK)
    path = render_day(tmp_path, customers=customers)
    errors = [e for e in check(path) if e.code == "org_no"]
    assert {(e.ref, e.line) for e in errors} == {
        ("C1", line_of(path, '<Customer id="C1"')), ("C2", line_of(path, '<Customer id="C2"'))}
    assert any("only for business" in e.message for e in errors if e.ref == "C1")
    assert any(ORG_BAD in e.message for e in errors if e.ref == "C2")


def test_bad_creditor_org_no(tmp_path):
    path, _ = render(tmp_path, hdr=replace(header(), creditor_org_no=ORG_BAD))
    err = only(check(path), "org_no")
    assert err.kind == "Header" and err.line == line_of(path, "<Header>")


def test_post_code_must_be_four_digits_in_norway(tmp_path):
    customers = day_customers()
    customers[0] = replace(customers[0], address=replace(customers[0].address, post_code="155"))
    path = render_day(tmp_path, customers=customers)
    err = only(check(path), "post_code")
    assert err.ref == "C1" and err.line == line_of(path, '<Customer id="C1"')
    # abroad any 1-10 characters will do (C3 is in Sweden with "114 55")


def test_invoice_without_due_date(tmp_path):
    entries = day_entries()
    entries[0] = replace(entries[0], due_date=None)
    err = only(check(render_day(tmp_path, entries=entries)), "due_date")
    assert err.ref == "I1" and "needs a DueDate" in err.message


def test_due_date_on_a_payment(tmp_path):
    path = edit(render_day(tmp_path), "<DocumentDate>2026-11-25</DocumentDate>",
                "<DocumentDate>2026-11-25</DocumentDate><DueDate>2026-12-01</DueDate>")
    err = only(check(path), "due_date")
    assert err.ref == "P1" and err.line == line_of(path, '<Entry id="P1"')


def test_duplicate_entry_and_customer_ids(tmp_path):
    path = render_day(tmp_path, customers=day_customers() + [customer("C1")],
                      entries=day_entries() + [invoice("I5", "12.34", cur="SEK")])
    errors = [e for e in check(path) if e.code == "duplicate_id"]
    assert {(e.kind, e.ref) for e in errors} == {("Entry", "I5"), ("Customer", "C1")}
    assert not FULL_SCHEMA.validate(etree.parse(str(path)))   # the XSD's xs:unique agrees


def test_duplicate_match_id(tmp_path):
    matches = day_matches() + [Match("M1", ("I5", "V1"))]
    path = render_day(tmp_path, matches=matches)
    err = only(check(path), "duplicate_id")
    assert (err.kind, err.ref) == ("Match", "M1")
    assert err.line == line_of(path, '<Match id="M1"><EntryRef>I5')
    first = line_of(path, '<Match id="M1"')
    assert f"first at line {first}" in err.message


def test_customer_ref_must_resolve(tmp_path):
    entries = day_entries() + [invoice("I9", "1.00", cust="C99")]
    path = render_day(tmp_path, entries=entries)
    err = only(check(path), "unknown_customer")
    assert (err.ref, err.target) == ("I9", "C99")
    assert check(path, known_customer=lambda cid: cid == "C99") == []


def test_match_without_invoice(tmp_path):
    path = render_day(tmp_path, matches=day_matches() + [Match("M9", ("V1", "P9"))],
                      entries=day_entries() + [counter("P9", "-5.00")])
    err = only(check(path), "match_shape")
    assert err.ref == "M9" and err.line == line_of(path, '<Match id="M9"')


def test_many_to_many_match(tmp_path):
    entries = day_entries() + [invoice("I8", "10.00"), counter("P8", "-10.00")]
    matches = [Match("M1", ("I1", "P1", "I8", "P8"))] + day_matches()[1:]
    err = only(check(render_day(tmp_path, entries=entries, matches=matches)), "match_shape")
    assert err.ref == "M1" and "many-to-many" in err.message


def test_entry_in_two_matches_of_one_file(tmp_path):
    matches = day_matches() + [Match("M4", ("I5", "P1"))]
    err = only(check(render_day(tmp_path, matches=matches)), "match_overlap")
    assert err.ref == "M4" and "P1" in err.message


def test_entry_ref_must_resolve_and_uses_known_types(tmp_path):
    matches = day_matches() + [Match("M5", ("I5", "OLD1"))]
    path = render_day(tmp_path, matches=matches)
    err = only(check(path), "unknown_entry")
    assert (err.ref, err.target) == ("M5", "OLD1")
    assert check(path, known_entry_type={"OLD1": "payment"}.get) == []
    # an earlier invoice + this file's invoice + two counterparts: many-to-many
    matches = day_matches()[:2] + [Match("M3", ("I4", "CN1", "OLD2", "OLD3"))]
    path2 = render_day(tmp_path, matches=matches)
    types = {"OLD2": "invoice", "OLD3": "payment"}
    assert only(check(path2, known_entry_type=types.get), "match_shape").ref == "M3"


def test_trailer_counts_must_match(tmp_path):
    path = edit(render_day(tmp_path), "<EntryCount>9</EntryCount>", "<EntryCount>8</EntryCount>")
    err = only(check(path), "trailer_count")
    assert err.kind == "Trailer" and "EntryCount says 8 but the file has 9" in err.message


def test_control_sum_wrong_missing_and_extra(tmp_path):
    path = edit(render_day(tmp_path), '<ControlSum currency="NOK">605.00<',
                '<ControlSum currency="NOK">605.01<')
    assert "says 605.01 but the entries sum to 605.00" in only(check(path), "control_sum").message
    path = edit(render_day(tmp_path), '<ControlSum currency="SEK">12.34</ControlSum>', "")
    assert "no ControlSum for SEK" in only(check(path), "control_sum").message
    path = edit(render_day(tmp_path), '<ControlSum currency="SEK">12.34</ControlSum>',
                '<ControlSum currency="SEK">12.34</ControlSum><ControlSum currency="DKK">0.00'
                '</ControlSum>')
    assert "DKK but no entry" in only(check(path), "control_sum").message


def test_file_id_must_agree_with_header(tmp_path):
    path = edit(render_day(tmp_path), "<Sequence>1</Sequence>", "<Sequence>2</Sequence>")
    err = only(check(path), "file_id")
    assert "expected LT_123456_20261128_000002" in err.message


def test_xsd_error_names_line_and_entry_and_other_rules_still_run(tmp_path):
    path = edit(render_day(tmp_path), ">-400.00<", ">-400.0<")
    entries = day_entries()
    entries[2] = replace(entries[2], kid="123456789")
    path = edit(render_day(tmp_path, entries=entries), ">-400.00<", ">-400.0<")
    errors = check(path)
    xsd = only(errors, "xsd")
    assert (xsd.ref, xsd.line) == ("P1", line_of(path, '<Entry id="P1"'))
    assert "pattern" in xsd.message
    assert only(errors, "kid").ref == "I2"
    assert errors == sorted(errors, key=lambda e: e.line or 0)


def test_document_level_xsd_error(tmp_path):
    data = render_day(tmp_path).read_text()
    start, end = data.index("  <Trailer>"), data.index("</LedgerTransfer>")
    path = tmp_path / "no-trailer.xml"
    path.write_text(data[:start] + data[end:])
    err = only(check(path), "xsd")
    assert "Trailer" in err.message and err.ref is None


def test_doctype_and_entities_are_refused(tmp_path):
    data = render_day(tmp_path).read_text()
    body = data.split("\n", 1)[1].replace("<SenderId>123456<", "<SenderId>&x;<")
    for decl in ('<!DOCTYPE LedgerTransfer [<!ENTITY x "123456">]>',
                 '<!DOCTYPE LedgerTransfer [<!ENTITY x SYSTEM "file:///etc/passwd">]>',
                 '<!DOCTYPE LedgerTransfer SYSTEM "http://127.0.0.1:9/x.dtd">'):
        path = tmp_path / "evil.xml"
        path.write_text('<?xml version="1.0" encoding="UTF-8"?>\n<!-- hi -->\n' + decl + "\n"
                        + body)
        errors = check(path)
        assert [e.code for e in errors] == ["doctype"], errors
    with pytest.raises(ContractViolation, match="DOCTYPE"):
        assert_sendable(path, XSD)


def test_not_well_formed_and_not_utf8(tmp_path):
    path = edit(render_day(tmp_path), "</Customer>", "</Customr>")
    err = only(check(path), "not_well_formed")
    assert err.line == line_of(path, '<Customer id="C1"')
    path.write_bytes("<?xml version='1.0' encoding='UTF-16'?><a/>".encode("utf-16"))
    assert only(check(path), "not_well_formed").message == "the file is not UTF-8"
    latin = render_day(tmp_path).read_text().replace('encoding="UTF-8"', 'encoding="ISO-8859-1"')
    path.write_bytes(latin.encode("latin-1"))
    assert "encoded ISO-8859-1, not UTF-8" in only(check(path), "encoding").message


def test_assert_sendable(tmp_path):
    assert_sendable(render_day(tmp_path), XSD)
    entries = day_entries()
    entries[0] = replace(entries[0], kid="123456789")
    with pytest.raises(ContractViolation) as info:
        assert_sendable(render_day(tmp_path, entries=entries), XSD)
    assert [e.code for e in info.value.errors] == ["kid"]


# ------------------------------------------------------------------ property

def _org_numbers():
    def with_check(body: str) -> str | None:
        check_digit = orgnr.checksum(body + "0")          # weights as stdnum computes them
        r = (11 - check_digit) % 11
        return None if r == 10 else body + str(r)
    return st.text("0123456789", min_size=8, max_size=8).map(with_check).filter(
        lambda o: o is not None and orgnr.is_valid(o))


_TEXT = st.text(st.characters(blacklist_categories=("Cs", "Cc", "Cn")), min_size=1, max_size=60)
_CUR = st.sampled_from(["NOK", "EUR", "SEK"])
_CENTS = st.integers(1, 10**11).map(lambda n: Decimal(n).scaleb(-2))


@st.composite
def ledgers(draw):
    """Valid customers, invoices with counterparts, and matches of the allowed shapes."""
    customers = []
    for i in range(draw(st.integers(1, 4))):
        business = draw(st.booleans())
        country = draw(st.sampled_from(["NO", "SE", "DE"]))
        post = draw(st.text("0123456789", min_size=4, max_size=4)) if country == "NO" else \
            draw(st.text("0123456789ABC -", min_size=1, max_size=10))
        customers.append(Customer(
            f"C{i}", draw(_TEXT), "business" if business else "private",
            Address(tuple(draw(st.lists(_TEXT, min_size=1, max_size=3))), post, draw(_TEXT)[:35],
                    country),
            org_no=draw(st.none() | _org_numbers()) if business else None))
    entries, matches = [], []
    for g in range(draw(st.integers(0, 6))):
        cust = f"C{draw(st.integers(0, len(customers) - 1))}"
        cur = draw(_CUR)
        n_inv = draw(st.integers(1, 3))
        n_ctr = 1 if n_inv > 1 else draw(st.integers(0, 3))
        members = []
        for k in range(n_inv):
            kid = draw(st.none() | st.text("0123456789", min_size=1, max_size=20).map(
                lambda b: b + (luhn.calc_check_digit(b) if len(b) % 2 else mod11_kid_check(b))))
            entries.append(Entry(f"I{g}.{k}", cust, "invoice", draw(_TEXT)[:35], date(2026, 1, 2),
                                 draw(_CENTS), cur, due_date=date(2026, 2, 1), kid=kid,
                                 text=draw(st.none() | _TEXT)))
            members.append(f"I{g}.{k}")
        for k in range(n_ctr):
            etype = draw(st.sampled_from(["payment", "credit_note", "payout", "manual_voucher"]))
            entries.append(Entry(f"X{g}.{k}", cust, etype, f"D{g}.{k}", date(2026, 1, 3),
                                 -draw(_CENTS), cur))
            members.append(f"X{g}.{k}")
        if len(members) >= 2:
            matches.append(Match(f"M{g}", tuple(members)))
    return customers, entries, matches


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ledgers())
def test_random_valid_ledgers_render_to_valid_files(ledger):
    customers, entries, matches = ledger
    with tempfile.TemporaryDirectory() as tmp:
        path, totals = render(Path(tmp), customers, entries, matches)
        FULL_SCHEMA.assertValid(etree.parse(str(path)))
        assert check(path) == []
        want: dict[str, Decimal] = {}
        for e in entries:
            want[e.currency] = want.get(e.currency, Decimal("0.00")) + e.amount
        assert totals == TransferTotals(len(customers), len(entries), len(matches),
                                        want or {"NOK": Decimal("0.00")})
        counts, sums = trailer(path)
        assert counts == {"CustomerCount": len(customers), "EntryCount": len(entries),
                          "MatchCount": len(matches)}
        assert sums == totals.control_sums
        root = etree.parse(str(path)).getroot()
        names = [c.text for c in root.iter(f"{{{NS}}}Name")]
        assert names == [c.name for c in customers]


# ------------------------------------------------------------------ every rule, on both passes
# The checker reads an XSD-valid file in one fast pass (children by position) and a file the
# XSD rejects in a second, slow pass (children by tag, each record validated alone): each rule
# must give the same answer on both. SPOIL adds an XSD error far from the record under test.


def spoil(path: Path) -> Path:
    """The same file with one XSD error of its own (V1's amount with one decimal)."""
    return edit(path, ">5.00</Amount>", ">5.0</Amount>")


def rule_errors(errors: list[ContractError]) -> list[tuple]:
    return sorted((e.code, e.kind, e.ref, e.line, e.message, e.target) for e in errors if e.code != "xsd")


def both_passes(path: Path, **kw) -> list[tuple]:
    """The rule errors of the file (fast pass), checked equal to those of the slow pass."""
    fast = check(path, **kw)
    assert not any(e.code == "xsd" for e in fast), fast
    slow = check(spoil(path), **kw)
    assert [e.ref for e in slow if e.code == "xsd"] == ["V1"], slow
    assert rule_errors(slow) == rule_errors(fast)
    return rule_errors(fast)


def test_a_valid_day_has_no_error_on_either_pass(tmp_path):
    assert both_passes(render_day(tmp_path)) == []


def test_each_rule_on_both_passes(tmp_path):
    customers = day_customers()
    customers[0] = replace(customers[0], org_no=ORG_OK)                              # private + OrgNo
    customers[1] = replace(customers[1], org_no=ORG_BAD)                             # bad OrgNo
    customers[2] = replace(customers[2], address=replace(customers[2].address, country="NO"))
    entries = day_entries() + [
        invoice("I6", "1.00", kid="1000010-", text="a text"),   # KID and Text: bad '-' KID
        replace(counter("P6", "-1.00"), kid="12345678904"),      # a payment's bad KID
        invoice("I7", "1.00", due=None),                         # invoice without DueDate
        invoice("I8", "1.00", cust="C99"),                       # unknown customer
        invoice("I5", "1.00")]                                   # repeated id
    matches = day_matches() + [Match("M4", ("V1", "P6")), Match("M5", ("I6", "P1")),
                               Match("M6", ("I7", "I6")), Match("M1", ("I8", "GHOST"))]
    path = render_day(tmp_path, customers=customers, entries=entries, matches=matches)
    got = both_passes(path)
    assert {(code, ref) for code, _, ref, *_ in got} == {
        ("org_no", "C1"), ("org_no", "C2"), ("post_code", "C3"), ("kid", "I6"), ("kid", "P6"),
        ("due_date", "I7"), ("unknown_customer", "I8"), ("duplicate_id", "I5"),
        ("match_shape", "M4"), ("match_overlap", "M5"), ("match_overlap", "M6"),
        ("unknown_entry", "M1"), ("duplicate_id", "M1")}
    assert len(got) == 13


def test_each_customer_check_reads_the_fields_by_tag_on_the_slow_pass(tmp_path):
    customers = [customer("C1", post="155"), customer("C2", org=ORG_BAD, ctype="business"),
                 customer("C3", org=ORG_OK), customer("C4", country="SE", post="1")]
    path, _ = render(tmp_path, customers)
    fast = check(path)
    # no entries to spoil here: a second Email makes C1 the record the XSD rejects
    slow = check(edit(path, "<Email>post@example.no</Email>", "<Email>post@example.no</Email>"
                      "<Email>x@example.no</Email>"))
    assert [e.ref for e in slow if e.code == "xsd"] == ["C1"]
    assert rule_errors(slow) == rule_errors(fast)
    assert [(e.code, e.ref) for e in fast] == [("post_code", "C1"), ("org_no", "C2"), ("org_no", "C3")]


def test_the_slow_pass_names_the_record_of_each_xsd_error(tmp_path):
    path = render_day(tmp_path)
    for old, new in (('<Customer id="C2"><Type>business</Type>', '<Customer id="C2"><Type>firm</Type>'),
                     ('<Match id="M2"><EntryRef>I2</EntryRef>', '<Match id="M2"><EntryRef></EntryRef>'),
                     ('<Entry id="I4" type="invoice"><CustomerRef>C3</CustomerRef>',
                      '<Entry id="I4" type="invoice"><CustomerRef></CustomerRef>')):
        spoilt = tmp_path / "x.xml"
        spoilt.write_text(path.read_text("utf-8").replace(old, new, 1), "utf-8")
        kind, ref = old[1:].split(" ")[0], old.split('"')[1]
        [xsd] = [e for e in check(spoilt) if e.code == "xsd"]
        assert (xsd.kind, xsd.ref, xsd.line) == (kind, ref, line_of(spoilt, f'<{kind} id="{ref}"'))


@pytest.mark.parametrize("old, new", [
    ("<CustomerRef>C1</CustomerRef>", ""),                              # I1 without CustomerRef
    ('<Amount currency="NOK">1000.00</Amount>', ""),                    # without Amount
    ('<Amount currency="NOK">1000.00</Amount>', '<Amount currency="NOK"></Amount>'),
    ('<Amount currency="NOK">1000.00</Amount>', "<Amount>1000.00</Amount>"),
    ("<DocumentNo>F-I1</DocumentNo>", ""),
    ("<DocumentDate>2026-11-20</DocumentDate>", ""),
])
def test_a_malformed_entry_is_one_xsd_error(tmp_path, old, new):
    path = edit(render_day(tmp_path), old, new)
    errors = check(path)
    assert [(e.code, e.ref) for e in errors if e.code == "xsd"] == [("xsd", "I1")], errors
    # nothing else is made up from what is missing (the control sum follows the entries read)
    assert {e.code for e in errors} <= {"xsd", "control_sum"}, errors


def test_an_entry_read_by_tag_whatever_the_order_of_its_children(tmp_path):
    """The slow pass reads children by tag: misordered children are an XSD error, and every
    rule still reads the right child."""
    path = edit(render_day(tmp_path),
                '<Entry id="I2" type="invoice"><CustomerRef>C2</CustomerRef><DocumentNo>F-I2</DocumentNo>'
                '<DocumentDate>2026-11-20</DocumentDate><DueDate>2026-12-15</DueDate>'
                '<Amount currency="NOK">300.00</Amount><KID>123456785</KID>',
                '<Entry id="I2" type="invoice"><KID>123456789</KID><Amount currency="NOK">300.00</Amount>'
                '<DueDate>2026-12-15</DueDate><DocumentDate>2026-11-20</DocumentDate>'
                '<DocumentNo>F-I2</DocumentNo><CustomerRef>C99</CustomerRef>')
    errors = check(path)
    assert sorted((e.code, e.ref) for e in errors) == [
        ("kid", "I2"), ("unknown_customer", "I2"), ("xsd", "I2")], errors


def test_the_file_content_as_collected_on_both_passes(tmp_path):
    path = render_day(tmp_path)
    want_customers = [CustomerRecord(c.id, c.type, c.name, c.org_no, c.address.lines, c.address.post_code,
                                     c.address.city, c.address.country, c.email, c.phone,
                                     line_of(path, f'<Customer id="{c.id}"')) for c in day_customers()]
    want_entries = [EntryRecord(e.id, e.type, e.customer_id, e.document_no, e.document_date.isoformat(),
                                e.due_date and e.due_date.isoformat(), e.amount, e.currency, e.kid, e.text,
                                line_of(path, f'<Entry id="{e.id}"')) for e in day_entries()]
    want_matches = [MatchRecord(m.id, m.entry_ids, line_of(path, f'<Match id="{m.id}"'))
                    for m in day_matches()]
    h = header()
    want_header = HeaderRecord(h.sender_id, h.creditor_org_no, h.file_id, 1, "daily", h.created_at, h.cut_off)
    got = CHECKER.check(path, collect=True)
    assert got.ok and got.errors == []
    assert (got.header, got.customers, got.entries, got.matches) == (
        want_header, want_customers, want_entries, want_matches)
    # the slow pass (an XSD error elsewhere) reads the same content
    slow = CHECKER.check(spoil(path), collect=True)
    assert not slow.ok
    want_entries[-1] = replace(want_entries[-1], amount=Decimal("5.0"))
    assert (slow.header, slow.customers, slow.entries, slow.matches) == (
        want_header, want_customers, want_entries, want_matches)
    # without collect, no content
    plain = CHECKER.check(path)
    assert (plain.header, plain.customers, plain.entries, plain.matches) == (want_header, [], [], [])


def test_content_streams_into_what_the_caller_gives(tmp_path):
    into = CheckResult([], customers=[], entries=[], matches=[])
    got = CHECKER.check(render_day(tmp_path), into=into)
    assert got is into and into.errors == []
    assert [c.id for c in into.customers] == ["C1", "C2", "C3"]
    assert [e.id for e in into.entries] == [e.id for e in day_entries()]
    assert [m.id for m in into.matches] == ["M1", "M2", "M3"]


def test_comments_and_processing_instructions_inside_records_change_nothing(tmp_path):
    path = render_day(tmp_path)
    text = path.read_text("utf-8")
    for tag in ("<CustomerRef>", "<Amount ", "<KID>", "<Text>", "<EntryRef>", "<Type>", "<OrgNo>",
                "<Address>", "<PostCode>", "<ControlSum "):
        text = text.replace(tag, "<!-- a comment --><?pi x?>" + tag)
    odd = tmp_path / "odd.xml"
    odd.write_text(text, "utf-8")
    got = CHECKER.check(odd, collect=True)
    assert got.errors == []
    ref = CHECKER.check(path, collect=True)
    assert [replace(e, line=None) for e in got.entries] == [replace(e, line=None) for e in ref.entries]
    assert [replace(c, line=None) for c in got.customers] == [replace(c, line=None) for c in ref.customers]
    entries = day_entries()
    entries[3] = replace(entries[3], kid="1000010-")        # I3 has KID and Text
    bad = render_day(tmp_path, entries=entries)
    bad.write_text(bad.read_text("utf-8").replace("<KID>", "<!-- c --><KID>"), "utf-8")
    assert [(e.code, e.ref) for e in check(bad)] == [("kid", "I3")]


# ------------------------------------------------------------------ ids, matches, many entries

def test_a_match_finds_its_entries_whatever_their_ids(tmp_path):
    for n in range(12):
        a, b = f"A{n * 7919 % 1000}", f"B{n * 104729 % 1000}"
        path, _ = render(tmp_path, [customer("C1")], [invoice(a, "1.00"), counter(b, "-1.00")],
                         [Match("M1", (a, b))])
        assert check(path) == [], (a, b)


def test_a_big_file_keeps_every_rule(tmp_path):
    """Enough entries (and bytes) for many id buckets: repeated ids, overlaps and references
    are still found, and a valid big file has no error."""
    n = 1500
    entries = [invoice(f"I{i}", "1.00") for i in range(n)] + [counter(f"P{i}", "-1.00") for i in range(n)]
    matches = [Match(f"M{i}", (f"I{i}", f"P{i}")) for i in range(n)]
    path, _ = render(tmp_path, [customer("C1")], entries, matches)
    assert path.stat().st_size > 32768 * 8
    assert check(path) == []
    entries += [invoice("I7", "1.00"), invoice("I1499", "1.00")]
    matches += [Match("M1", ("I3", "P4")), Match("MX", ("I5", "GHOST"))]
    path, _ = render(tmp_path, [customer("C1"), customer("C1")], entries, matches)
    errors = check(path)
    assert sorted((e.code, e.ref) for e in errors) == sorted([
        ("duplicate_id", "C1"), ("duplicate_id", "I7"), ("duplicate_id", "I1499"), ("duplicate_id", "M1"),
        ("match_overlap", "M1"), ("match_overlap", "M1"), ("match_overlap", "MX"), ("unknown_entry", "MX")]), errors
    assert not any(e.code == "xsd" for e in errors)


def test_repeated_ids_are_reported_without_xsd_noise(tmp_path):
    path = render_day(tmp_path, customers=day_customers() + [customer("C1")],
                      entries=day_entries() + [invoice("I5", "12.34", cur="SEK")])
    assert sorted((e.code, e.kind, e.ref) for e in check(path)) == [
        ("duplicate_id", "Customer", "C1"), ("duplicate_id", "Entry", "I5")]


def test_ids_that_only_share_a_hash_are_no_repeats(tmp_path, monkeypatch):
    """Ids are kept as hashes; equal hashes are confirmed against the real ids."""
    same = {"CA": 1 << 40, "CB": 1 << 40, "EA": 5 << 40, "EB": 5 << 40, "MA": 9 << 40, "MB": 9 << 40}
    # every module of the check that keeps ids as hashes
    for module in (scan_module, ids_module, matches_module, values_module):
        monkeypatch.setattr(module, "hash", lambda s: same.get(s, hash(s)), raising=False)
    customers = [customer("C0", post="1"), customer("CA"), customer("CB"), customer("C1")]
    entries = [invoice("EA", "1.00", cust="CA"), counter("EB", "-1.00", cust="CB"),
               invoice("I1", "1.00"), counter("P1", "-1.00")]
    # (colliding entries are left out of matches: a collision lends one's match to the other)
    matches = [Match("MA", ("I1", "P1")), Match("MB", ("I2", "P2"))]
    entries += [invoice("I2", "1.00"), counter("P2", "-1.00")]
    path, _ = render(tmp_path, customers, entries, matches)
    assert [e.code for e in check(path)] == ["post_code"]     # (an error before: C0's)
    # a real repeat among them is still one, named on the line of the repeat
    path, _ = render(tmp_path, customers + [customer("CB"), customer("CA")], entries + [invoice("EB", "1.00")],
                     matches + [Match("MA", ("EA", "EB"))])
    lines = path.read_text("utf-8").splitlines()

    def second(needle: str) -> int:
        return [n for n, line in enumerate(lines, 1) if needle in line][1]
    errors = [(e.code, e.ref, e.line) for e in check(path) if e.code == "duplicate_id"]
    assert sorted(errors) == sorted([
        ("duplicate_id", "CA", second('<Customer id="CA"')), ("duplicate_id", "CB", second('<Customer id="CB"')),
        ("duplicate_id", "EB", second('<Entry id="EB"')), ("duplicate_id", "MA", second('<Match id="MA"'))]), errors


def test_a_customer_known_from_an_earlier_file_is_asked_for_once(tmp_path):
    asked = []
    entries = [invoice(f"I{i}", "1.00", cust="OLD") for i in range(5)]
    path, _ = render(tmp_path, [customer("C1")], entries)
    assert check(path, known_customer=lambda c: asked.append(c) or True) == [] and asked == ["OLD"]


def test_many_references_to_earlier_files(tmp_path):
    """References that sort after every id of this file are looked up too."""
    entries = [invoice(f"I{i}", "1.00", cust=f"OLD{i}") for i in range(60)]
    matches = [Match(f"M{i}", (f"I{i}", f"PAY{i}")) for i in range(60)]
    path, _ = render(tmp_path, [customer("C1")], entries, matches)
    assert check(path, known_customer=lambda c: c.startswith("OLD"),
                 known_entry_type=lambda e: "payment" if e.startswith("PAY") else None) == []
    errors = check(path)
    assert {e.code for e in errors} == {"unknown_customer", "unknown_entry"} and len(errors) == 120


def test_the_default_lookups_know_nothing_of_earlier_files(tmp_path):
    path = render_day(tmp_path, entries=day_entries() + [invoice("I9", "1.00", cust="C99")],
                      matches=day_matches() + [Match("M9", ("I9", "OLD1"))])
    assert sorted(e.code for e in CHECKER.check(path).errors) == ["unknown_customer", "unknown_entry"]
    with path.open("rb") as f:
        got = CHECKER.check_stream(f, path, size=path.stat().st_size)
    assert sorted(e.code for e in got.errors) == ["unknown_customer", "unknown_entry"]


def test_an_entry_ref_listed_twice_in_a_match(tmp_path):
    path = render_day(tmp_path, matches=day_matches()[:2] + [Match("M3", ("I4", "CN1", "I4"))])
    assert [(e.code, e.ref, e.message) for e in check(path)] == [
        ("match_overlap", "M3", "an EntryRef is listed twice")]


def test_a_match_with_an_unknown_entry_is_not_judged_on_the_rest(tmp_path):
    matches = day_matches() + [Match("M8", ("V1", "GHOST")), Match("M9", ("I5", "GHOST"))]
    assert [(e.code, e.ref) for e in check(render_day(tmp_path, matches=matches))] == [
        ("unknown_entry", "M8"), ("unknown_entry", "M9")]


def test_an_earlier_files_entry_in_two_matches_and_its_type(tmp_path):
    types = {"OLDINV": "invoice", "OLDPAY": "payment"}.get
    path = render_day(tmp_path, matches=day_matches() + [Match("M8", ("V1", "OLDINV"))])
    assert check(path, known_entry_type=types) == []
    path = render_day(tmp_path, matches=day_matches() + [Match("M8", ("I5", "OLDPAY")),
                                                         Match("M9", ("V1", "OLDPAY"))])
    errors = check(path, known_entry_type=types)
    assert [(e.code, e.ref) for e in errors] == [("match_overlap", "M9"), ("match_shape", "M9")]
    assert "OLDPAY is already in another Match" in errors[0].message


# ------------------------------------------------------------------ header, trailer, prolog

def test_the_header_as_read(tmp_path):
    path, _ = render(tmp_path, hdr=header(seq=42, kind="backlog"))
    got = CHECKER.check(path)
    h = header(seq=42, kind="backlog")
    assert got.header == HeaderRecord("123456", ORG_OK, h.file_id, 42, "backlog", h.created_at, h.cut_off)


@pytest.mark.parametrize("old, new", [
    ("<Sequence>1</Sequence>", ""), ("<Sequence>1</Sequence>", "<Sequence>x</Sequence>"),
    ("<SenderId>123456</SenderId>", "<SenderId></SenderId>"),
    ("<CutOff>2026-11-28T18:00:00+01:00</CutOff>", "<CutOff>2026-11-28T18:00:00</CutOff>"),
    ("<CutOff>2026-11-28T18:00:00+01:00</CutOff>", "<CutOff>yesterday</CutOff>"),
    ("<CreatedAt>2026-11-28T18:05:00+01:00</CreatedAt>", "<CreatedAt>now</CreatedAt>"),
])
def test_a_header_the_xsd_rejects_is_no_file_id_error(tmp_path, old, new):
    errors = check(edit(render_day(tmp_path), old, new))
    assert [e.code for e in errors] == ["xsd"], errors


def test_more_than_one_control_sum_for_a_currency(tmp_path):
    path = edit(render_day(tmp_path), '<ControlSum currency="SEK">12.34</ControlSum>',
                '<ControlSum currency="SEK">12.34</ControlSum><ControlSum currency="SEK">12.34</ControlSum>')
    err = only(check(path), "control_sum")
    assert err.message == "more than one ControlSum for SEK" and err.line == line_of(path, "<Trailer>") + 6


def test_a_trailer_the_xsd_rejects(tmp_path):
    for old, new in (("<MatchCount>3</MatchCount>", "<MatchCount>3</MatchCount><Note>x</Note>"),
                     ('<ControlSum currency="SEK">12.34</ControlSum>', '<ControlSum currency="SEK"/>'),
                     ('<ControlSum currency="SEK">12.34</ControlSum>', '<ControlSum currency="SEK">x</ControlSum>')):
        errors = check(edit(render_day(tmp_path), old, new))
        assert errors and {e.code for e in errors} <= {"xsd", "control_sum"}, errors
        assert any(e.code == "xsd" for e in errors)


@pytest.mark.parametrize("sums, ok", [
    ('<ControlSum currency="NOK">0.00</ControlSum>', True),
    ('<ControlSum currency="NOK">0.01</ControlSum>', False),
    ('<ControlSum currency="NOK">0.00</ControlSum><ControlSum currency="SEK">0.00</ControlSum>', False),
])
def test_a_file_without_entries_has_one_control_sum_of_zero(tmp_path, sums, ok):
    path, _ = render(tmp_path)
    path = edit(path, '<ControlSum currency="NOK">0.00</ControlSum>', sums)
    errors = check(path)
    if ok:
        assert errors == []
    else:
        assert only(errors, "control_sum").message == "a file without entries has exactly one ControlSum, of 0.00"


def test_a_file_may_start_with_a_utf8_byte_order_mark(tmp_path):
    path = render_day(tmp_path)
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    assert check(path) == []


@pytest.mark.parametrize("data", [
    "<?xml version='1.0' encoding='UTF-16'?><a/>".encode("utf-16-be"),    # no byte order mark
    "<?xml version='1.0' encoding='UTF-16'?><a/>".encode("utf-16-le"),
    b"\xff\xfe" + "\u3c3c\u3c3c".encode("utf-16-le"),
    b"\xfe\xff" + "\u3c3c\u3c3c".encode("utf-16-be"),
])
def test_a_file_that_is_not_utf8_is_refused_before_parsing(tmp_path, data):
    path = tmp_path / "x.xml"
    path.write_bytes(data)
    assert [(e.code, e.line, e.message) for e in check(path)] == [(
        "not_well_formed", 1, "the file is not UTF-8")]


@pytest.mark.parametrize("data", [b"hello", b"", b"<!-- only a comment -->", b"  <?xml version='1.0'?>\n 42"])
def test_a_file_without_a_root_element_is_refused(tmp_path, data):
    path = tmp_path / "x.xml"
    path.write_bytes(data)
    assert [(e.code, e.line, e.message) for e in check(path)] == [(
        "not_well_formed", 1, "no root element where the file should start")]


def test_a_doctype_is_refused_on_line_1_and_the_file_is_not_parsed(tmp_path):
    path = tmp_path / "x.xml"
    path.write_bytes(b'<?xml version="1.0"?>\n<!DOCTYPE LedgerTransfer>\n<LedgerTransfer/>')
    assert [(e.code, e.line) for e in check(path)] == [("doctype", 1)]


def test_the_encoding_may_be_declared_utf8_either_way(tmp_path):
    path = render_day(tmp_path)
    for decl in ('encoding="UTF8"', 'encoding="utf-8"'):
        path.write_text(path.read_text("utf-8").replace('encoding="UTF-8"', decl, 1)
                        .replace('encoding="UTF8"', decl, 1).replace('encoding="utf-8"', decl, 1), "utf-8")
        assert check(path) == [], decl
    latin = render_day(tmp_path).read_text().replace('encoding="UTF-8"', 'encoding="ISO-8859-1"')
    path.write_bytes(latin.encode("latin-1"))
    assert only(check(path), "encoding").line == 1


# ------------------------------------------------------------------ the other ways in

def test_bytes_are_checked_like_a_file(tmp_path):
    path = render_day(tmp_path)
    assert CHECKER.check(path.read_bytes()).errors == []
    entries = day_entries()
    entries[0] = replace(entries[0], kid="123456789")
    (tmp_path / "bad").mkdir()
    data = render_day(tmp_path / "bad", entries=entries).read_bytes()
    [err] = CHECKER.check(data).errors
    assert (err.code, err.file) == ("kid", "transfer file")
    assert CHECKER.check(data, "mine.xml").errors[0].file == "mine.xml"
    assert [e.code for e in CHECKER.check(spoil(path).read_bytes()).errors] == ["xsd"]


class _Trickle(io.RawIOBase):
    """A stream that gives at most `step` bytes a read (as a pipe may)."""

    def __init__(self, data: bytes, step: int) -> None:
        self.data, self.pos, self.step = data, 0, step

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        n = self.step if n < 0 else min(n, self.step)
        out = self.data[self.pos:self.pos + n]
        self.pos += len(out)
        return out

    def readinto(self, b) -> int:
        out = self.read(len(b))
        b[:len(out)] = out
        return len(out)


@pytest.mark.parametrize("step", [7, 4096, 1 << 20])
def test_check_stream_reads_the_whole_stream_and_agrees_with_check(tmp_path, step):
    good = render_day(tmp_path)
    entries = day_entries()
    entries[0] = replace(entries[0], kid="123456789")
    bad = render(tmp_path / "..", day_customers(), entries, day_matches(), header(seq=2))[0]
    spoilt = spoil(render_day(tmp_path / "..", ))
    broken = tmp_path / "broken.xml"
    broken.write_bytes(good.read_bytes().replace(b"</Customer>", b"</Customr>", 1))
    doctype = tmp_path / "doctype.xml"
    doctype.write_bytes(b'<?xml version="1.0"?>\n<!DOCTYPE x>\n<x/>' + b" " * 100_000)
    for path in (good, bad, spoilt, broken, doctype):
        stream = _Trickle(path.read_bytes(), step)
        got = CHECKER.check_stream(stream, path, size=path.stat().st_size)
        assert stream.read() == b"", path.name                 # read to its end in every case
        want = CHECKER.check(path).errors
        assert [(e.code, e.ref, e.line, e.file) for e in got.errors] == \
            [(e.code, e.ref, e.line, e.file) for e in want], path.name
    stream = _Trickle(good.read_bytes(), step)
    assert CHECKER.check_stream(stream, good, size=1, name="other.xml").errors == []


def test_too_many_errors_stop_the_check(tmp_path):
    entries = [invoice(f"I{i}", "1.00", kid="123456789") for i in range(6)]
    path, _ = render(tmp_path, [customer("C1")], entries)
    got = TransferChecker(XSD, max_errors=4).check(path).errors
    assert [e.code for e in got] == ["too_many_errors"] + ["kid"] * 4      # by line; the stop has none
    assert got[0].message == "stopped after 4 errors"
    assert [e.code for e in TransferChecker(XSD, max_errors=7).check(path).errors] == ["kid"] * 6


def test_at_most_1000_errors_by_default(tmp_path):
    entries = [invoice(f"I{i}", "1.00", kid="123456789") for i in range(1001)]
    path, _ = render(tmp_path, [customer("C1")], entries)
    got = check(path)
    assert len(got) == 1001 and got[0].message == "stopped after 1000 errors"
    path, _ = render(tmp_path, [customer("C1")], entries[:999])
    assert len(check(path)) == 999


def test_errors_are_listed_by_line_on_the_slow_pass(tmp_path):
    customers = day_customers()
    customers[0] = replace(customers[0], org_no=ORG_OK)
    entries = day_entries()
    entries[0] = replace(entries[0], kid="123456789")
    path = spoil(render_day(tmp_path, customers=customers, entries=entries,
                            matches=day_matches() + [Match("M4", ("I5", "P1"))]))
    path = edit(path, "<EntryCount>9</EntryCount>", "<EntryCount>8</EntryCount>")
    errors = check(path)
    assert [e.line for e in errors] == sorted(e.line for e in errors)
    assert [e.code for e in errors] == ["org_no", "kid", "xsd", "match_overlap", "trailer_count"]


def test_how_an_error_is_written():
    assert str(ContractError(12, "I1", "bad", "Entry", file="f.xml")) == "f.xml line 12 (Entry I1): bad"
    assert str(ContractError(None, None, "bad")) == "transfer file: bad"
    assert str(ContractError(0, None, "bad", "Trailer")) == "transfer file (Trailer): bad"
    assert str(ContractError(3, "", "bad")) == "transfer file line 3 (): bad"
    assert str(ContractError(None, "M1", "bad", None, file="g.xml")) == "g.xml (M1): bad"


def test_a_violation_lists_the_first_20_errors_then_how_many_more():
    errors = [ContractError(i, f"E{i}", "bad") for i in range(1, 23)]
    text = str(ContractViolation(errors[:20]))
    assert text.startswith("20 contract error(s):\n  transfer file line 1 (E1): bad\n")
    assert "more" not in text and text.count("\n") == 20
    text = str(ContractViolation(errors))
    lines = text.splitlines()
    assert lines[0] == "22 contract error(s):" and lines[20] == "  transfer file line 20 (E20): bad"
    assert lines[21] == "  ... and 2 more" and len(lines) == 22


def test_check_result_ok():
    assert CheckResult([]).ok and not CheckResult([ContractError(1, None, "x")]).ok


def test_entries_after_the_matches_are_still_checked(tmp_path):
    """Out of XSD order (a second Entries block after the Matches): each later Entry is still
    an entry of the file for the matches after it, and a repeated id is still found."""
    path = render_day(tmp_path)
    text = path.read_text("utf-8")
    line = next(l for l in text.splitlines() if '<Entry id="I5"' in l)
    late = (line.replace('id="I5"', 'id="I9"') + "\n"
            + next(l for l in text.splitlines() if '<Entry id="P1"' in l) + "\n")
    late += "".join(line.replace('id="I5"', f'id="L{i}"') + "\n" for i in range(40))
    tail = ("  <Entries>\n" + late + "  </Entries>\n  <Matches>\n"
            '    <Match id="M9"><EntryRef>V1</EntryRef><EntryRef>I9</EntryRef></Match>\n  </Matches>\n')
    path.write_text(text.replace("  </Matches>\n", "  </Matches>\n" + tail, 1), "utf-8")
    errors = check(path)
    assert sorted((e.code, e.ref) for e in errors if e.code not in ("trailer_count", "control_sum")) == [
        ("duplicate_id", "P1"), ("xsd", None)], errors
    assert only(errors, "duplicate_id").line == line_of(path, '<Entry id="I9"') + 1     # the late P1


def test_an_xsd_error_names_the_line_of_the_element_inside_its_record(tmp_path):
    path = edit(render_day(tmp_path), '<Customer id="C2"><Type>business</Type>', '<Customer id="C2">\n<Type>firm</Type>')
    xsd = only(check(path), "xsd")
    assert (xsd.ref, xsd.line) == ("C2", line_of(path, "<Type>firm"))
    assert xsd.line == line_of(path, '<Customer id="C2"') + 1


def test_a_header_without_a_readable_sequence_is_read_as_sequence_0(tmp_path):
    path = edit(render_day(tmp_path), "<Sequence>1</Sequence>", "<Sequence>x</Sequence>")
    assert CHECKER.check(path).header.sequence == 0


def test_a_violation_of_21_errors_says_one_more():
    text = str(ContractViolation([ContractError(i, None, "bad") for i in range(1, 22)]))
    assert text.splitlines()[-1] == "  ... and 1 more" and len(text.splitlines()) == 22


def test_a_file_is_read_once_unless_something_is_wrong_or_repeated(tmp_path, monkeypatch):
    """One streaming pass for a file the XSD accepts (the fast pass reads children by
    position: any slip there would show as a second, slow pass); a second reading only to
    confirm repeated ids, or to diagnose a file the XSD rejects."""
    reads = []
    real = structure_module._iterparse
    # every module that reads the file imports the one reader
    for module in (checker_module, ids_module, structure_module):
        monkeypatch.setattr(module, "_iterparse", lambda *a: reads.append(1) or real(*a))

    def passes(path: Path, **kw) -> int:
        reads.clear()
        CHECKER.check(path, **kw)
        return len(reads)
    customers = day_customers() + [customer("C4", org=None, ctype="business")]
    entries = day_entries() + [replace(counter("P9", "-1.00"), kid="12345678903", text="t"),
                               invoice("I9", "1.00", kid="12345678903", text="t", cust="C4")]
    path = render_day(tmp_path, customers=customers, entries=entries)
    assert passes(path) == 1 and passes(path, collect=True) == 1
    entries[0] = replace(entries[0], kid="123456789")           # a rule broken: still one pass
    assert passes(render_day(tmp_path, customers=customers, entries=entries)) == 1
    path = render_day(tmp_path, customers=customers)
    text = path.read_text("utf-8")                            # comments and PIs are dropped
    for tag in ("<CustomerRef>", "<Amount ", "<KID>", "<Text>", "<EntryRef>", "<Type>", "<OrgNo>",
                "<Address>", "<PostCode>", "<DueDate>"):
        text = text.replace(tag, "<!-- c --><?pi x?>" + tag)
    path.write_text(text, "utf-8")
    assert passes(path) == 1 and CHECKER.check(path).errors == []
    path = render_day(tmp_path, entries=day_entries() + [invoice("I1", "1.00")])
    assert passes(path) == 2                                  # a repeated id is confirmed
    assert passes(spoil(render_day(tmp_path))) == 2           # the XSD rejects it: diagnosed


def test_unknown_elements_inside_records_are_xsd_errors_only(tmp_path):
    path = render_day(tmp_path)
    for old, new in (("<Country>SE</Country>", "<Country>SE</Country><Planet>Earth</Planet>"),
                     ("<Phone>+47 22 00 00 00</Phone></Customer>", "<Phone>+47 22 00 00 00</Phone><Note>x</Note></Customer>"),
                     ("<EntryRef>CN1</EntryRef>", "<EntryRef>CN1</EntryRef><Note>CN2</Note>"),
                     ("<KID>123456785</KID>", "<KID>123456785</KID><Note>x</Note>")):
        odd = tmp_path / "odd.xml"
        odd.write_text(path.read_text("utf-8").replace(old, new, 1), "utf-8")
        errors = check(odd)
        assert [e.code for e in errors] == ["xsd"], (new, errors)


@pytest.mark.parametrize("element, codes", [("CreatedAt", ["xsd"]), ("CutOff", ["xsd"]), ("SenderId", ["xsd"]),
                                            ("FileId", ["file_id", "xsd"])])
def test_a_header_missing_an_element_is_an_xsd_error_only(tmp_path, element, codes):
    path = render_day(tmp_path)
    text = path.read_text("utf-8")
    start = text.index(f"<{element}>")
    end = text.index(f"</{element}>") + len(f"</{element}>")
    path.write_text(text[:start] + text[end:], "utf-8")
    assert [e.code for e in check(path)] == codes


def test_an_unknown_element_in_an_entry_is_not_taken_for_its_text(tmp_path):
    path = edit(render_day(tmp_path), "<KID>123456785</KID>", "<KID>123456785</KID><Note>x</Note>")
    got = CHECKER.check(path, collect=True)
    [i2] = [e for e in got.entries if e.id == "I2"]
    assert (i2.kid, i2.text) == ("123456785", None)


def test_a_text_over_libxml2s_limit_is_refused_unread(tmp_path):
    """No huge_tree: a single text over 10,000,000 bytes stops the parser (memory stays
    bounded) instead of being read whole."""
    path = edit(render_day(tmp_path), "<Text>", "<Text>" + "x" * 10_000_001)
    errors = check(path)
    assert [e.code for e in errors] == ["not_well_formed"], errors


@pytest.mark.parametrize("step", [5000, 1 << 20])
def test_check_stream_reads_past_the_first_bytes_it_looked_at(tmp_path, step):
    """The first 64 KiB are read ahead for the prolog check; the parser gets them, then the rest."""
    entries = [invoice(f"I{i}", "1.00") for i in range(800)]
    entries[-1] = replace(entries[-1], kid="123456789")          # an error near the end
    path, _ = render(tmp_path, [customer("C1")], entries)
    assert path.stat().st_size > 2 * 65536
    stream = _Trickle(path.read_bytes(), step)
    got = CHECKER.check_stream(stream, path, size=path.stat().st_size)
    assert [(e.code, e.ref) for e in got.errors] == [("kid", "I799")]


def test_the_limit_reached_among_repeated_ids_says_it_stopped(tmp_path):
    entries = [invoice(f"I{i}", "1.00") for i in range(5)] * 2          # five ids, each twice
    path, _ = render(tmp_path, [customer("C1")], entries)
    got = TransferChecker(XSD, max_errors=3).check(path).errors
    assert [e.code for e in got] == ["too_many_errors"] + ["duplicate_id"] * 3, got
    assert got[0].message == "stopped after 3 errors"


def test_a_broken_stream_is_read_to_its_end(tmp_path):
    entries = [invoice(f"I{i}", "1.00") for i in range(800)]
    path, _ = render(tmp_path, [customer("C1")], entries)
    data = path.read_bytes()
    cut = data.index(b'<Entry id="I50"')          # early: most of the stream is still unread
    path.write_bytes(data[:cut] + b"<Entry <broken" + data[cut:])
    stream = _Trickle(path.read_bytes(), 4096)
    got = CHECKER.check_stream(stream, path, size=path.stat().st_size)
    assert [e.code for e in got.errors] == ["not_well_formed"]
    assert stream.read() == b"" and (got.entries, got.customers) == ([], [])


def test_a_repeated_entry_id_in_a_file_without_matches(tmp_path):
    path, _ = render(tmp_path, [customer("C1")], [invoice("I1", "1.00"), invoice("I2", "1.00"),
                                                  invoice("I1", "1.00")])
    assert [(e.code, e.ref) for e in check(path)] == [("duplicate_id", "I1")]
