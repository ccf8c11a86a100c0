"""camt.054 reader on the real files of ../shared/corpus/camt054 (facts read off the files).

The three genkgo files are synthetic and do not reconcile (see the tests below); they are
refused as they are, and read after the one fix each needs, to exercise the v02/v04/v08
shapes.
"""
from __future__ import annotations

from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reskontro.adapters.camt054 import read_camt054
from reskontro.domain import InputError

FILES = ["OCA__test-camt054", "genkgo__camt054.v2.xml", "genkgo__camt054.v4.xml",
         "genkgo__camt054.v8.xml", "viafintech__valid_example.xml"]
READABLE = ["OCA__test-camt054", "viafintech__valid_example.xml"]


@pytest.fixture
def camt_dir(corpus: Path) -> Path:
    return corpus / "camt054"


def load(camt_dir: Path, name: str) -> bytes:
    return (camt_dir / name).read_bytes()


def line_of(data: bytes, marker: bytes, nth: int = 1) -> int:
    pos = -1
    for _ in range(nth):
        pos = data.index(marker, pos + 1)
    return data[:pos].count(b"\n") + 1


def test_corpus_has_every_listed_file(camt_dir: Path) -> None:
    assert {p.name for p in camt_dir.iterdir()} == set(FILES)


@pytest.mark.parametrize("name", READABLE)
def test_readable_files_reconcile(camt_dir: Path, name: str) -> None:
    pf = read_camt054(load(camt_dir, name), name)
    assert pf.format == "camt054" and pf.payments
    assert all(p.amount > 0 for p in pf.payments)
    # the payments and what is not a payment (debits, reversals) add up to the file's net
    assert pf.control_total == sum(p.amount for p in pf.payments) + sum(s.amount for s in pf.skipped)
    assert len({p.archive_ref for p in pf.payments}) == len(pf.payments)


def test_viafintech_batch_and_reversals(camt_dir: Path) -> None:
    pf = read_camt054(load(camt_dir, "viafintech__valid_example.xml"), "via.xml")
    assert pf.reference == "20160410375204000131033" and pf.warnings == []
    assert [p.amount for p in pf.payments] == [Decimal("15.00"), Decimal("9.00"),
                                               Decimal("56.56")]
    assert pf.control_total == Decimal("59.03")
    first, second, third = pf.payments
    assert (first.payer_name, first.payer_account, first.archive_ref, first.text) == (
        "Rutschmann Pia", "CH4409000000495962779", "TST_201-2091644-9", "Mitteilung 132")
    assert second.archive_ref == "TST_201-2091644-8" and second.payer_name == "Bernasconi Maria"
    assert third.text is None and third.kid is None
    assert {p.currency for p in pf.payments} == {"CHF"}
    assert first.booking_date == first.payment_date == date(2016, 4, 10)
    assert first.bank_code == "PMNT/RDDT/PMDD"
    # the two DBIT entries with RvslInd true (direct-debit refunds, RtrInf MD06) are not
    # payments: reported with their reason, never listed
    rev1, rev2 = pf.skipped
    assert [(s.reference, s.amount, s.currency, s.bank_code) for s in pf.skipped] == [
        ("TST_205-2091679-6", Decimal("-6.00"), "CHF", "PMNT/RDDT/PMDD"),
        ("TST_205-28529-1", Decimal("-15.53"), "CHF", "PMNT/RDDT/PRDD")]
    for s in pf.skipped:
        assert s.reason.startswith("reversal of an earlier credit (RvslInd), returned, reason MD06 "
                                   "(Lastschrift-Widerspruch durch den Zahlungspflichtigen)")
    assert rev1.describe().startswith("6.00 CHF, ref TST_205-2091679-6, bank code "
                                      "PMNT/RDDT/PMDD: reversal of an earlier credit")


def test_oca_proprietary_creditor_reference(camt_dir: Path) -> None:
    (p,) = read_camt054(load(camt_dir, "OCA__test-camt054"), "oca").payments
    assert p.kid == "000000000000000000000000003"          # CdtrRefInf with Prtry QRR
    assert (p.amount, p.currency) == (Decimal("5.00"), "EUR")
    assert p.payer_name == "Test Customer" and p.payer_account == "NL46ABNA0499998748"
    assert p.archive_ref == "15180015077602405" and p.bank_code == "PMNT/RCDT/ATXN"
    assert p.payment_date == date(2022, 1, 26) == p.booking_date


def test_genkgo_v2_batch_without_amounts_is_refused(camt_dir: Path) -> None:
    data = load(camt_dir, "genkgo__camt054.v2.xml")
    n = line_of(data, b"<TxDtls>")
    with pytest.raises(InputError, match=rf"v2\.xml: line {n}: Ntry 1 \(AcctSvcrRef "
                                         r"AAAASESS-FP-ACCR001\): TxDtls without an amount"):
        read_camt054(data, "v2.xml")


def test_genkgo_v2_shape_with_amounts_added(camt_dir: Path) -> None:
    head, *txs = load(camt_dir, "genkgo__camt054.v2.xml").split(b"<TxDtls>")
    assert len(txs) == 3
    data = head + b"".join(b'<TxDtls><Amt Ccy="SEK">%s</Amt>' % amount + tx
                           for amount, tx in zip((b"100000", b"50000", b"50000"), txs))
    # as it is, a DBIT entry: our own outgoing payments, carrying creditor references
    # (KID-like); not one is a payment
    pf = read_camt054(data, "v2.xml")
    assert pf.payments == []
    assert [(s.amount, s.reason, s.bank_code) for s in pf.skipped] == [
        (Decimal(a), "debit (outgoing payment)", "PMNT/ICDT/DMCT")
        for a in ("-100000.00", "-50000.00", "-50000.00")]
    assert [s.kid for s in pf.skipped] == ["ISR ref number V1", "ISR ref number V2",
                                           "Ref number V3 block 1"]
    assert pf.control_total == Decimal("-200000.00") == sum(s.amount for s in pf.skipped)
    # the v02 shapes, read from the same entry made CRDT (TxDtls have no CdtDbtInd in v02)
    assert data.count(b"<CdtDbtInd>DBIT</CdtDbtInd>") == 1
    pf = read_camt054(data.replace(b"<CdtDbtInd>DBIT</CdtDbtInd>", b"<CdtDbtInd>CRDT</CdtDbtInd>"),
                      "v2.xml")
    assert pf.skipped == []
    assert [p.amount for p in pf.payments] == [Decimal("100000.00"), Decimal("50000.00"),
                                               Decimal("50000.00")]
    assert {p.bank_code for p in pf.payments} == {"PMNT/ICDT/DMCT"}
    assert pf.payments[0].booking_date == date(2007, 10, 18)              # BookgDt/DtTm
    assert pf.payments[0].kid == "ISR ref number V1"
    third = pf.payments[2]
    assert third.kid == "Ref number V3 block 1"                          # 2 x Strd SCOR
    assert third.text == ("Unstructured Remittance Information V3 block 1 / Unstructured "
                          "Remittance Information V3 block 2 / references: Ref number V3 "
                          "block 1, Ref number V3 block 2")
    assert third.payer_name == "MUELLER" and third.archive_ref == "AAAASESS-FP-ACCR001/1/1/3"


@pytest.mark.parametrize("name", ["genkgo__camt054.v4.xml", "genkgo__camt054.v8.xml"])
def test_genkgo_v4_v8_batch_count_mismatch_is_refused(camt_dir: Path, name: str) -> None:
    data = load(camt_dir, name)
    n = line_of(data, b"<NtryDtls>")
    with pytest.raises(InputError, match=rf"line {n}: Ntry 1 \(AcctSvcrRef ACSR160617103200001\)"
                                         r": Btch/NbOfTxs says 2, the entry has 3 TxDtls"):
        read_camt054(data, name)


def test_v04_and_v08_shapes_read_alike(camt_dir: Path) -> None:
    fixed = {v: load(camt_dir, f"genkgo__camt054.{v}.xml").replace(
        b"<NbOfTxs>2</NbOfTxs>", b"<NbOfTxs>3</NbOfTxs>") for v in ("v4", "v8")}
    v4, v8 = (read_camt054(fixed[v], f"{v}.xml") for v in ("v4", "v8"))
    assert v4.payments == v8.payments                  # Dbtr/Nm vs Dbtr/Pty/Nm, Sts vs Sts/Cd
    assert [p.amount for p in v8.payments] == [Decimal("3.10"), Decimal("3.20"), Decimal("3.20")]
    assert {p.payer_name for p in v8.payments} == {"UNIFITS GmbH"}
    assert {p.currency for p in v8.payments} == {"CHF"}
    # SEK entry with CHF transactions: the total cannot be checked, and the reader says so
    assert any("another currency than the entry (SEK)" in w for w in v8.warnings)


def test_changed_amount_breaks_the_entry_total(camt_dir: Path) -> None:
    data = load(camt_dir, "viafintech__valid_example.xml")
    bad = data.replace(b'<Amt Ccy="CHF">9.00</Amt>', b'<Amt Ccy="CHF">9.01</Amt>')
    assert bad != data
    with pytest.raises(InputError, match=r"via\.xml: line 28: Ntry 1 \(AcctSvcrRef "
                                         r"20160410375244000000000000000081\): the 2 TxDtls add "
                                         r"up to 24\.01 CHF, the entry amount is 24\.00 CHF"):
        read_camt054(bad, "via.xml")
    too_precise = data.replace(b">56.56<", b">56.565<")
    with pytest.raises(InputError, match=r"line \d+: invalid amount '56\.565'"):
        read_camt054(too_precise, "via.xml")


BOMB = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
]>
<Document xmlns="urn:iso:std:iso:20022:tech:xsd:camt.054.001.04"><BkToCstmrDbtCdtNtfctn>
<GrpHdr><MsgId>&lol4;</MsgId></GrpHdr></BkToCstmrDbtCdtNtfctn></Document>"""

XXE = b"""<?xml version="1.0"?>
<!DOCTYPE Document [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<Document xmlns="urn:iso:std:iso:20022:tech:xsd:camt.054.001.04"><BkToCstmrDbtCdtNtfctn>
<GrpHdr><MsgId>&xxe;</MsgId></GrpHdr></BkToCstmrDbtCdtNtfctn></Document>"""


@pytest.mark.parametrize("doc", [BOMB, XXE], ids=["bomb", "xxe"])
def test_doctype_is_refused(doc: bytes) -> None:
    with pytest.raises(InputError, match=r"evil\.xml: XML with a DOCTYPE"):
        read_camt054(doc, "evil.xml")
    # also when the bytes hide the declaration from a byte scan (UTF-16)
    utf16 = doc.decode().replace('version="1.0"', 'version="1.0" encoding="UTF-16"')
    with pytest.raises(InputError, match=r"evil\.xml: XML with a DOCTYPE"):
        read_camt054(utf16.encode("utf-16"), "evil.xml")


def test_malformed_and_foreign_xml(camt_dir: Path) -> None:
    data = load(camt_dir, "viafintech__valid_example.xml")
    with pytest.raises(InputError, match=r"cut\.xml: line \d+: not well-formed XML"):
        read_camt054(data[:len(data) // 2], "cut.xml")
    camt053 = data.replace(b"BkToCstmrDbtCdtNtfctn", b"BkToCstmrStmt").replace(
        b"camt.054.001.04", b"camt.053.001.04")
    with pytest.raises(InputError, match=r"line 2: not a camt\.054 document"):
        read_camt054(camt053, "s.xml")
    for empty in (b"", b"   "):
        with pytest.raises(InputError, match="e.xml: "):
            read_camt054(empty, "e.xml")


def test_pending_entries_are_skipped(camt_dir: Path) -> None:
    data = load(camt_dir, "OCA__test-camt054").replace(b"<Sts>BOOK</Sts>", b"<Sts>PDNG</Sts>")
    pf = read_camt054(data, "p.xml")
    assert pf.payments == [] and "status PDNG, not booked: skipped" in pf.warnings[0]


@settings(max_examples=200, deadline=None, suppress_health_check=[
    HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(name=st.sampled_from(FILES), data=st.data())
def test_mutated_files_only_ever_raise_input_error(camt_dir: Path, name: str,
                                                   data: st.DataObject) -> None:
    raw = bytearray(load(camt_dir, name))
    op = data.draw(st.sampled_from(["truncate", "flip", "insert", "delete"]))
    pos = data.draw(st.integers(0, len(raw) - 1))
    if op == "truncate":
        raw = raw[:pos]
    elif op == "flip":
        raw[pos] = data.draw(st.sampled_from(b"0123456789.-<>/&\"x\xff"))
    elif op == "insert":
        raw[pos:pos] = data.draw(st.sampled_from([b"<", b"&amp;", b"-1", b"<Amt>1</Amt>",
                                                  b"<!DOCTYPE x>", b"\xff\xfe"]))
    else:
        del raw[pos:pos + data.draw(st.integers(1, 60))]
    try:
        read_camt054(bytes(raw), name)
    except InputError as e:
        assert str(e).startswith(f"{name}: ")
