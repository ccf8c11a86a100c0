"""Only customers' payments are payments (issue 9 point 10).

Debits (our own outgoing payments, withdrawals), reversals and returned transfers are reported
in the file's summary with their reason, and never listed by `payments` nor booked by `post`.
The camt.054 files here are written by the tests (v02 and v08 shapes); a KID-like reference on
every one of them names an open invoice, so a wrong listing would be booked.
"""
from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import select
from stdnum import luhn

from reskontro.ledger import schema as s
from reskontro.adapters.camt054 import read_camt054
from reskontro.adapters.cremul import render_cremul
from reskontro.adapters.payment_files import read_payment_bytes
from reskontro.domain import BankPayment, InputError, SkippedItem
from reskontro.payments.inbox import process_inbox
from reskontro.payments.booking import list_payment_file, payment_id
from reskontro.site import Site, init_site
from clirun import cli, flat  # noqa: E402  (tests/ is on sys.path)


def kid(n: int) -> str:
    body = f"{n:09d}"
    return body + luhn.calc_check_digit(body)


# --- a camt.054 writer for the tests --------------------------------------------------------

@dataclass
class Tx:
    ref: str
    amount: str
    ind: str | None = None          # TxDtls/CdtDbtInd; v02 has none (inherited from the entry)
    kid: int | None = None
    code: str = "PMNT/RCDT/ESCT"
    rtr: tuple[str, str | None] | None = None   # (Rsn/Cd, AddtlInf)
    name: str = "Kari Nordmann"


@dataclass
class Ntry:
    ref: str
    amount: str
    ind: str
    txs: list[Tx]
    rvsl: bool = False
    code: str = "PMNT/RCDT/ESCT"


def _code(code: str) -> str:
    domain, family, sub = code.split("/")
    return (f"<BkTxCd><Domn><Cd>{domain}</Cd><Fmly><Cd>{family}</Cd><SubFmlyCd>{sub}</SubFmlyCd>"
            "</Fmly></Domn></BkTxCd>")


def _tx(v: str, t: Tx) -> str:
    if v == "02":       # v02: AmtDtls/TxAmt, Dbtr/Nm, no CdtDbtInd
        amount = f'<AmtDtls><TxAmt><Amt Ccy="NOK">{t.amount}</Amt></TxAmt></AmtDtls>'
        debtor = f"<Dbtr><Nm>{t.name}</Nm></Dbtr>"
        assert t.ind is None, "camt.054.001.02 TxDtls have no CdtDbtInd"
    else:               # v08: Amt + CdtDbtInd, Dbtr/Pty/Nm
        amount = f'<Amt Ccy="NOK">{t.amount}</Amt>' + (f"<CdtDbtInd>{t.ind}</CdtDbtInd>" if t.ind else "")
        debtor = f"<Dbtr><Pty><Nm>{t.name}</Nm></Pty></Dbtr>"
    rmt = (f"<RmtInf><Strd><CdtrRefInf><Tp><CdOrPrtry><Cd>SCOR</Cd></CdOrPrtry></Tp>"
           f"<Ref>{kid(t.kid)}</Ref></CdtrRefInf></Strd></RmtInf>") if t.kid else ""
    rtr = ""
    if t.rtr:
        reason, info = t.rtr
        rtr = f"<RtrInf><Rsn><Cd>{reason}</Cd></Rsn>" + (f"<AddtlInf>{info}</AddtlInf>" if info else "") + "</RtrInf>"
    return (f"<TxDtls><Refs><AcctSvcrRef>{t.ref}</AcctSvcrRef><EndToEndId>E2E-{t.ref}</EndToEndId></Refs>"
            f"{amount}{_code(t.code)}<RltdPties>{debtor}<DbtrAcct><Id><Othr><Id>12345678903</Id></Othr>"
            f"</Id></DbtrAcct></RltdPties>{rmt}{rtr}</TxDtls>")


def camt(v: str, entries: list[Ntry], msg_id: str = "MSG-1") -> bytes:
    sts = "<Sts><Cd>BOOK</Cd></Sts>" if v == "08" else "<Sts>BOOK</Sts>"
    out = []
    for e in entries:
        details = ""
        if e.txs:
            details = (f"<NtryDtls><Btch><NbOfTxs>{len(e.txs)}</NbOfTxs></Btch>"
                       + "".join(_tx(v, t) for t in e.txs) + "</NtryDtls>")
        out.append(f'<Ntry><Amt Ccy="NOK">{e.amount}</Amt><CdtDbtInd>{e.ind}</CdtDbtInd>'
                   + ("<RvslInd>true</RvslInd>" if e.rvsl else "")
                   + f"{sts}<BookgDt><Dt>2026-11-20</Dt></BookgDt><ValDt><Dt>2026-11-20</Dt></ValDt>"
                   f"<AcctSvcrRef>{e.ref}</AcctSvcrRef>{_code(e.code)}{details}"
                   f"<AddtlNtryInf>entry {e.ref}</AddtlNtryInf></Ntry>")
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n'
            f'<Document xmlns="urn:iso:std:iso:20022:tech:xsd:camt.054.001.{v}"><BkToCstmrDbtCdtNtfctn>'
            f"<GrpHdr><MsgId>{msg_id}</MsgId><CreDtTm>2026-11-20T06:00:00</CreDtTm></GrpHdr>"
            f"<Ntfctn><Id>N1</Id><CreDtTm>2026-11-20T06:00:00</CreDtTm>"
            f"<Acct><Id><Othr><Id>15032000001</Id><SchmeNm><Cd>BBAN</Cd></SchmeNm></Othr></Id></Acct>"
            + "".join(out) + "</Ntfctn></BkToCstmrDbtCdtNtfctn></Document>\n").encode()


def notification(v: str) -> list[Ntry]:
    """Two customer credits (A-1, E-1) among everything that is not a customer's payment."""
    batch = [Tx("E-1", "500.00", "CRDT" if v == "08" else None, kid=5),
             Tx("E-2", "200.00", "CRDT" if v == "08" else None, kid=6, code="PMNT/ICDT/RRTN",
                rtr=("AC04", "Account closed"), name="Leverandør AS")]
    if v == "08":   # a DBIT transaction inside the CRDT entry: it subtracts from the entry
        batch.append(Tx("E-3", "50.00", "DBIT", kid=7, code="PMNT/ICDT/ESCT", name="Leverandør AS"))
    return [
        Ntry("A", "1000.00", "CRDT", [Tx("A-1", "1000.00", "CRDT" if v == "08" else None, kid=1)]),
        # our own outgoing payment to a supplier, carrying a KID-like reference (I2's KID)
        Ntry("B", "1250.00", "DBIT", [Tx("B-1", "1250.00", None, kid=2, code="PMNT/ICDT/ESCT",
                                         name="Leverandør AS")], code="PMNT/ICDT/ESCT"),
        # a credit that reverses an earlier debit
        Ntry("C", "300.00", "CRDT", [Tx("C-1", "300.00", None, kid=3, code="PMNT/ICDT/ESCT")],
             rvsl=True, code="PMNT/ICDT/ESCT"),
        # a returned outgoing transfer: RvslInd, ICDT/RRTN and a return reason
        Ntry("D", "400.00", "CRDT", [Tx("D-1", "400.00", None, kid=4, code="PMNT/ICDT/RRTN",
                                        rtr=("AC04", "Account closed"))], rvsl=True, code="PMNT/ICDT/RRTN"),
        # one entry, a customer's credit and a returned transfer (and in v08 a debit)
        Ntry("E", "650.00" if v == "08" else "700.00", "CRDT", batch),
        # a withdrawal with no transaction details
        Ntry("F", "75.00", "DBIT", [], code="PMNT/CCRD/CWDL"),
        # a return known by its code and reason only (no RvslInd)
        Ntry("G", "60.00", "CRDT", [Tx("G-1", "60.00", None, kid=8, code="PMNT/ICDT/RRTN", rtr=("AC04", None))]),
    ]


def expected_skipped(v: str) -> list[tuple[str, Decimal, str, str | None]]:
    """(reference, signed amount, reason, KID) of what is not a payment, in file order."""
    out = [("B-1", Decimal("-1250.00"), "debit (outgoing payment)", kid(2)),
           ("C-1", Decimal("300.00"), "reversal of an earlier debit (RvslInd)", kid(3)),
           ("D-1", Decimal("400.00"), "reversal of an earlier debit (RvslInd), returned, reason AC04 "
                                      "(Account closed)", kid(4)),
           ("E-2", Decimal("200.00"), "returned transfer, reason AC04 (Account closed)", kid(6))]
    if v == "08":
        out.append(("E-3", Decimal("-50.00"), "debit (outgoing payment)", kid(7)))
    return out + [("F", Decimal("-75.00"), "debit (outgoing payment)", None),
                  ("G-1", Decimal("60.00"), "returned transfer, reason AC04", kid(8))]


VERSIONS = ["02", "08"]


# --- the reader ---------------------------------------------------------------------------

@pytest.mark.parametrize("v", VERSIONS)
def test_reader_lists_only_customer_credits_and_reports_the_rest(v: str) -> None:
    pf = read_camt054(camt(v, notification(v)), f"n{v}.xml")
    assert pf.warnings == []
    assert [(p.archive_ref, p.amount, p.kid, p.payer_name) for p in pf.payments] == [
        ("A-1", Decimal("1000.00"), kid(1), "Kari Nordmann"), ("E-1", Decimal("500.00"), kid(5), "Kari Nordmann")]
    a = pf.payments[0]
    assert (a.currency, a.bank_code, a.payer_account, str(a.booking_date)) == (
        "NOK", "PMNT/RCDT/ESCT", "12345678903", "2026-11-20")
    assert [(x.reference, x.amount, x.reason, x.kid) for x in pf.skipped] == expected_skipped(v)
    assert {x.currency for x in pf.skipped} == {"NOK"}
    assert {x.reference: x.bank_code for x in pf.skipped}["D-1"] == "PMNT/ICDT/RRTN"
    # every entry counts in the file's net; payments and skipped items add up to it
    net = Decimal("1085.00") if v == "08" else Decimal("1135.00")
    assert pf.control_total == net == sum(p.amount for p in pf.payments) + sum(x.amount for x in pf.skipped)


@pytest.mark.parametrize("v", VERSIONS)
@pytest.mark.parametrize("entry", ["B", "C", "D", "F", "G"])
def test_each_case_alone_gives_no_payment(v: str, entry: str) -> None:
    (e,) = [e for e in notification(v) if e.ref == entry]
    pf = read_payment_bytes(camt(v, [e]), "one.xml")
    assert pf.payments == []
    (x,) = pf.skipped
    assert (x.reference, x.amount, x.reason, x.kid) in expected_skipped(v)


def test_debit_transaction_in_a_credit_entry_subtracts_from_the_entry_total() -> None:
    entries = notification("08")
    (e,) = [x for x in entries if x.ref == "E"]
    e.amount = "750.00"          # as if the 50.00 DBIT transaction were a credit
    with pytest.raises(InputError, match=r"Ntry 5 \(AcctSvcrRef E\): the 3 TxDtls add up to 650\.00 NOK, "
                                         r"the entry amount is 750\.00 NOK"):
        read_camt054(camt("08", entries), "e.xml")
    e.amount, e.txs[2].ind = "650.00", "DEBIT"
    with pytest.raises(InputError, match=r"TxDtls CdtDbtInd must be CRDT or DBIT, got 'DEBIT'"):
        read_camt054(camt("08", entries), "e.xml")


def test_a_return_reason_alone_or_a_return_code_alone_is_enough() -> None:
    only_reason = Ntry("H", "80.00", "CRDT", [Tx("H-1", "80.00", "CRDT", kid=9, rtr=("MS03", None))])
    only_code = Ntry("J", "90.00", "CRDT", [Tx("J-1", "90.00", "CRDT", kid=10, code="PMNT/ICDT/RRTN")])
    pf = read_camt054(camt("08", [only_reason, only_code]), "r.xml")
    assert pf.payments == []
    assert [(x.reference, x.reason) for x in pf.skipped] == [
        ("H-1", "returned transfer, reason MS03"), ("J-1", "returned transfer, no reason given")]


def test_skipped_item_describes_itself() -> None:
    x = SkippedItem("X", Decimal("-1250.00"), "NOK", "debit (outgoing payment)", kid=kid(2),
                    bank_code="PMNT/ICDT/ESCT")
    assert x.describe() == f"1,250.00 NOK, ref X, KID {kid(2)}, bank code PMNT/ICDT/ESCT: debit (outgoing payment)"
    assert SkippedItem("Y", Decimal("60.00"), "NOK", "returned transfer, reason AC04").describe() == \
        "60.00 NOK, ref Y: returned transfer, reason AC04"


# --- through the inbox, `payments` and `post` -------------------------------------------------

def _invoice(n: int) -> dict:
    return {"record": "entry", "id": f"I{n}", "customer_id": "C1", "type": "invoice", "document_no": f"F{n}",
            "document_date": "2026-11-01", "due_date": "2026-11-15", "amount": "1000.00" if n == 1 else "2000.00",
            "currency": "NOK", "kid": kid(n), "status": "invoiced"}


LEDGER = [{"record": "customer", "id": "C1", "name": "Kari Nordmann", "type": "private",
           "address1": "Storgata 1", "post_code": "0150", "city": "OSLO", "country": "NO"},
          *(_invoice(n) for n in range(1, 11))]


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("COLUMNS", "2000")        # rich wraps at 80 columns without a terminal
    site = tmp_path / "site"
    init_site(site)
    ledger = tmp_path / "ledger.jsonl"
    ledger.write_text("\n".join(json.dumps(r) for r in LEDGER) + "\n", encoding="utf-8")
    assert cli(site, "import", str(ledger)).exit_code == 0
    return site


def listed(site: Path) -> dict[str, dict]:
    r = cli(site, "payments", "--json")
    assert r.exit_code == 0, r.output
    return {p["archive_ref"]: p for p in json.loads(r.stdout)["payments"]}


def matched_invoices(site: Path) -> set[str]:
    with Site.open(site).db.connect() as conn:
        return set(conn.execute(select(s.entries.c.id).where(
            s.entries.c.type == "invoice", s.entries.c.match_id.is_not(None))).scalars())


def ledger_payments(site: Path) -> set[str]:
    with Site.open(site).db.connect() as conn:
        return set(conn.execute(select(s.entries.c.id).where(s.entries.c.type == "payment")).scalars())


@pytest.mark.parametrize("v", VERSIONS)
def test_watch_reports_them_payments_lists_none_and_post_books_none(
        site: Path, v: str, caplog: pytest.LogCaptureFixture) -> None:
    (site / "inbox" / f"camt054_{v}.xml").write_bytes(camt(v, notification(v), msg_id=f"MSG-{v}"))
    caplog.set_level(logging.INFO, logger="reskontro.watch")
    r = cli(site, "watch", "--once")
    assert r.exit_code == 0, r.output
    out = flat(r.stdout)
    skipped = expected_skipped(v)
    head = f"camt054_{v}.xml (payments): camt054: 2 payments listed; {len(skipped)} not payments (not listed): "
    assert head in out
    logged = [rec.getMessage() for rec in caplog.records if rec.name == "reskontro.watch"]
    assert len(logged) == 1 and logged[0].startswith(head)
    for ref, amount, reason, k in skipped:
        line = f"{abs(amount):,.2f} NOK, ref {ref}" + (f", KID {k}" if k else "")
        assert line in out and line in logged[0]
        assert reason in out and reason in logged[0]
    assert (site / "inbox" / "done" / f"camt054_{v}.xml").is_file()

    assert set(listed(site)) == {"A-1", "E-1"}
    assert all(Decimal(p["amount"]) > 0 for p in listed(site).values())
    r = cli(site, "post")
    assert r.exit_code == 0, r.output
    assert flat(r.stdout).startswith("Booked 2 payments; 1 invoice closed; 0 unmatched.")
    assert matched_invoices(site) == {"I1", "I5"}     # the skipped items' KIDs name I2-I4, I6-I8
    assert ledger_payments(site) == {payment_id("A-1"), payment_id("E-1")}
    assert {ref: p["status"] for ref, p in listed(site).items()} == {"A-1": "matched", "E-1": "matched"}


def test_the_nightly_run_logs_what_is_not_a_payment(site: Path) -> None:
    (site / "inbox" / "camt054_08.xml").write_bytes(camt("08", notification("08")))
    r = cli(site, "run", "--no-sftp")
    assert "inbox: ok" in flat(r.stdout), r.output
    log = Site.open(site).config.log_file.read_text(encoding="utf-8")
    (inbox_line,) = [ln for ln in log.splitlines() if "reskontro.run: inbox: ok" in ln]
    assert "camt054_08.xml: camt054: 2 payments listed; 7 not payments (not listed): " in inbox_line
    for ref, amount, reason, _k in expected_skipped("08"):
        assert f"{abs(amount):,.2f} NOK, ref {ref}" in inbox_line and reason in inbox_line
    assert "post: ok: 2 payments booked" in log
    assert ledger_payments(site) == {payment_id("A-1"), payment_id("E-1")}


def test_cremul_negative_amount_is_not_listed(site: Path) -> None:
    def bank(ref: str, amount: str, n: int) -> BankPayment:
        return BankPayment("cremul", ref, Decimal(amount), "NOK", None, None, kid=kid(n), bank_code="230")
    data = render_cremul([bank("*1", "700.00", 1), bank("*2", "-200.00", 2)], reference="N1",
                         created=datetime(2026, 11, 20, 6, 0)).encode("latin-1")
    assert b"MOA+349:500,00:NOK" in data          # the LIN total counts the signed amount
    (site / "inbox" / "CREMUL_N1.DAT").write_bytes(data)
    (res,) = process_inbox(Site.open(site).db, site / "inbox", payments=list_payment_file)
    assert res.detail == (f"cremul: 1 payments listed; 1 not payments (not listed): 200.00 NOK, ref *2, "
                          f"KID {kid(2)}, bank code 230: negative amount: not money received")
    assert set(listed(site)) == {"*1"}
    assert cli(site, "post").exit_code == 0
    assert matched_invoices(site) == {"I1"}


def test_ocr_negative_items_and_reversals_are_not_listed(site: Path, corpus: Path) -> None:
    ocr1 = corpus / "ocr" / "Ondkloss__ocr1.txt"
    shutil.copyfile(ocr1, site / "inbox" / "ocr1.txt")
    (res,) = process_inbox(Site.open(site).db, site / "inbox", payments=list_payment_file)
    assert res.detail.startswith("ocr_giro: 20 payments listed; 3 not payments (not listed): ")
    assert "250.00 NOK, ref 600101140/20040324/0000001/15, KID 44000366370078, bank code 13: negative " \
           "amount (sign '-', OCR transaction type 13): not money received" in res.detail
    otovo = (corpus / "ocr" / "otovo__ocr_giro_transactions.txt").read_text("iso-8859-1").splitlines()
    assert otovo[5].startswith("NY091030") and otovo[6].startswith("NY091031")
    otovo[5], otovo[6] = "NY0918" + otovo[5][6:], "NY0918" + otovo[6][6:]          # a reversal with KID
    (site / "inbox" / "otovo-reversal.txt").write_bytes("\n".join(otovo).encode("iso-8859-1"))
    (res,) = process_inbox(Site.open(site).db, site / "inbox", payments=list_payment_file)
    assert res.detail == ("ocr_giro: 19 payments listed; 1 not payments (not listed): 1,020.00 NOK, ref "
                          "097596016/19920120/0000002/2, KID 0036633, bank code 18: reversal (OCR "
                          "transaction type 18, reversal with KID)")
    got = listed(site)
    assert len(got) == 39 and all(Decimal(p["amount"]) > 0 for p in got.values())
    assert not {"44000366370078", "44000366980090", "44000007860156", "0036633"} & {p["kid"] for p in got.values()}
