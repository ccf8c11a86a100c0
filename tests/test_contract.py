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
