"""Incoming payments, booked: `reskontro payments`, `post`, `correct-payment`, `explain`, and
what the next transfer file makes of them at the receiver (reskontro.testing.receiver_model).

Each test builds a site in tmp_path with a small ledger whose every invoice has a known fate:

  I1 1000.00  paid in full by KID                    -> closed (match MI1 created)
  I2  500.00  paid 200.50 by KID, later 299.50 more   -> open 299.50, then closed (MI2 grows)
  I3 1000.00  open; the invoice I1's payment was really for (correct-payment)
  I4  300.00  paid 400.00 by KID                     -> overpayment: unmatched
  I5  200.00  closed in the ERP (P5, M5); paid again -> KID of a closed invoice: unmatched
  I6  750.00  no KID; paid with DOC+380 "INV-6"      -> matched by invoice number, closed
  I7 1000.00  credit note K7 -200.00 in M7; paid 800 -> M7 grows {I7, K7, payment}, closed
  I8/I9       600 + 400 with one ERP payment P8 -500 in M8 (several invoices, one counterpart)
  P9 -100.00  an ERP payment matched to nothing
  and a payment with a KID no invoice has.

The bank file is a CREMUL rendered with adapters.cremul.render_cremul; it is listed through
the inbox (reskontro.payments.inbox.process_inbox), then everything else goes through the CLI.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from lxml import etree
from sqlalchemy import select
from stdnum import luhn

from reskontro.transfer import journal
from reskontro.ledger import schema as s
from reskontro.adapters.cremul import render_cremul
from reskontro.domain import BankPayment
from reskontro.payments.inbox import process_inbox
from reskontro.payments.booking import list_payment_file, payment_id
from reskontro.transfer.receipts import render_receipt
from reskontro.testing.receiver_model import ReceiverModel
from reskontro.site import Site, init_site
from clirun import cli, flat  # noqa: E402  (tests/ is on sys.path)

NS = {"lt": "urn:reskontro:ledger-transfer:1"}
PAID_ON, BOOKED_ON = date(2026, 11, 19), date(2026, 11, 20)


def kid10(n: int) -> str:
    body = f"{n:09d}"
    return body + luhn.calc_check_digit(body)


def _inv(n: int, amount: str, *, kid: bool = True, doc: str | None = None) -> dict:
    rec = {"record": "entry", "id": f"I{n}", "customer_id": "C1", "type": "invoice",
           "document_no": doc or f"F{n}", "document_date": "2026-11-01", "due_date": "2026-11-15",
           "amount": amount, "currency": "NOK", "status": "invoiced"}
    if kid:
        rec["kid"] = kid10(n)
    return rec


def _counter(eid: str, kind: str, amount: str) -> dict:
    return {"record": "entry", "id": eid, "customer_id": "C1", "type": kind, "document_no": eid,
            "document_date": "2026-11-05", "amount": amount, "currency": "NOK"}


LEDGER = [
    {"record": "customer", "id": "C1", "name": "Kari Nordmann", "type": "private",
     "address1": "Storgata 1", "post_code": "0150", "city": "OSLO", "country": "NO"},
    _inv(1, "1000.00"), _inv(2, "500.00"), _inv(3, "1000.00"), _inv(4, "300.00"), _inv(5, "200.00"),
    _inv(6, "750.00", kid=False, doc="INV-6"), _inv(7, "1000.00"), _inv(8, "600.00"), _inv(9, "400.00"),
    _counter("P5", "payment", "-200.00"), {"record": "match", "id": "M5", "entries": ["I5", "P5"]},
    _counter("K7", "credit_note", "-200.00"), {"record": "match", "id": "M7", "entries": ["I7", "K7"]},
    _counter("P8", "payment", "-500.00"), {"record": "match", "id": "M8", "entries": ["I8", "I9", "P8"]},
    _counter("P9", "payment", "-100.00"),
]


def bank(ref: str, amount: str, kid: str | None = None, invoice_no: str | None = None) -> BankPayment:
    return BankPayment("cremul", ref, Decimal(amount), "NOK", PAID_ON, BOOKED_ON, kid=kid,
                       invoice_no=invoice_no, payer_name="Kari Nordmann", payer_account="12345678903")


PAYMENTS = {   # archive ref -> what the bank reports
    "*1001": bank("*1001", "1000.00", kid10(1)),
    "*1002": bank("*1002", "200.50", kid10(2)),
    "*1004": bank("*1004", "400.00", kid10(4)),
    "*1005": bank("*1005", "200.00", kid10(5)),
    "*1006": bank("*1006", "750.00", invoice_no="INV-6"),
    "*1007": bank("*1007", "800.00", kid10(7)),
    "*1099": bank("*1099", "50.00", kid10(99)),
}
BP = {ref: payment_id(ref) for ref in [*PAYMENTS, "*1008", "*2002"]}


@dataclass
class Ledger:
    """A site, the receiver's view of it, and helpers to move the evening along."""
    site: Path
    receiver: ReceiverModel
    delivered: list[str] = field(default_factory=list)

    @property
    def db(self):
        return Site.open(self.site).db

    def drop(self, name: str, payments: list[BankPayment], reference: str) -> None:
        data = render_cremul(payments, reference=reference, created=datetime(2026, 11, 20, 6, 0))
        (self.site / "inbox" / name).write_bytes(data.encode("latin-1"))
        results = process_inbox(self.db, self.site / "inbox", payments=list_payment_file)
        assert [r.kind for r in results] == ["payments"], results

    def export_and_deliver(self, held: bool = False) -> etree._Element:
        """`reskontro export`, the receiver takes the file, its receipt is read back. `held`:
        the export holds entries tonight (exit status 3)."""
        r = cli(self.site, "export")
        assert r.exit_code == (3 if held else 0), r.output
        assert ("held new tonight by rule" in flat(r.stdout)) == held, r.output
        (path,) = [p for p in (self.site / "outbox").glob("LT_*.xml") if p.name not in self.delivered]
        with self.db.begin() as conn:            # it leaves, as `reskontro send` journals it
            journal.mark_uploaded(conn, path.stem)
        receipt = self.receiver.receive(path.read_bytes(), path.name)
        assert receipt.status == "accepted", receipt.errors
        self.delivered.append(path.name)
        (self.site / "inbox" / f"{receipt.file_id}.receipt.xml").write_bytes(render_receipt(receipt))
        assert cli(self.site, "receipts").exit_code == 0
        return etree.parse(str(path)).getroot()

    def payments(self, *flags: str) -> dict[str, dict]:
        r = cli(self.site, "payments", "--json", *flags)
        assert r.exit_code == 0, r.output
        return {p["archive_ref"]: p for p in json.loads(r.stdout)["payments"]}

    def entry(self, eid: str) -> dict | None:
        with self.db.connect() as conn:
            row = conn.execute(select(s.entries).where(s.entries.c.id == eid)).first()
        return dict(row._mapping) if row else None

    def members(self, mid: str) -> set[str]:
        with self.db.connect() as conn:
            return set(conn.execute(select(s.entries.c.id).where(s.entries.c.match_id == mid)).scalars())

    def open_in_store(self, invoice: str) -> Decimal:
        inv = self.entry(invoice)
        ids = self.members(inv["match_id"]) if inv["match_id"] else {invoice}
        return sum((Decimal(self.entry(i)["amount_ore"]) / 100 for i in ids), Decimal("0.00"))


@pytest.fixture
def ledger(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Ledger:
    """The ledger imported, sent and accepted; the bank file listed, not yet posted."""
    monkeypatch.setenv("COLUMNS", "400")
    site = tmp_path / "site"
    init_site(site)
    path = tmp_path / "ledger.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in LEDGER) + "\n", encoding="utf-8")
    assert cli(site, "import", str(path)).exit_code == 0
    lg = Ledger(site, ReceiverModel(site / "templates" / "ledger-transfer-1.xsd"))
    first = lg.export_and_deliver()
    assert set(entries_of(first)) == {f"I{n}" for n in range(1, 10)} | {"P5", "K7", "P8"}   # P9 waits
    lg.drop("CREMUL_1.DAT", list(PAYMENTS.values()), "B1")
    return lg


@pytest.fixture
def posted(ledger: Ledger) -> Ledger:
    r = cli(ledger.site, "post")
    assert r.exit_code == 3, r.output                   # three payments unmatched: for a person
    return ledger


def entries_of(root: etree._Element) -> dict[str, etree._Element]:
    return {e.get("id"): e for e in root.findall(".//lt:Entry", NS)}


def matches_of(root: etree._Element) -> dict[str, set[str]]:
    return {m.get("id"): {r.text for r in m.findall("lt:EntryRef", NS)} for m in root.findall(".//lt:Match", NS)}


# --- listing ------------------------------------------------------------------------------

def test_payments_json_lists_each_bank_payment(ledger: Ledger) -> None:
    listed = ledger.payments()
    assert set(listed) == set(PAYMENTS)
    for ref, p in PAYMENTS.items():
        got = listed[ref]
        assert got["id"] == BP[ref]
        assert got["source"] == "Lowell" and got["format"] == "cremul"
        assert got["date"] == BOOKED_ON.isoformat()           # the booking date, not the payment date
        assert got["payer"] == "Kari Nordmann"
        assert got["amount"] == f"{p.amount:.2f}" and isinstance(got["amount"], str)
        assert got["currency"] == "NOK" and got["kid"] == p.kid and got["invoice_no"] == p.invoice_no
        assert got["invoice"] is None and got["status"] == "unposted"
    assert listed["*1002"]["amount"] == "200.50"
    assert set(ledger.payments("--unposted")) == set(PAYMENTS)
    table = flat(cli(ledger.site, "payments").stdout)
    assert f"Bank payments ({len(PAYMENTS)})" in table and "200.50 NOK" in table and "INV-6" in table


# --- post ---------------------------------------------------------------------------------

def test_post_links_payments_and_closes_paid_invoices(ledger: Ledger) -> None:
    r = cli(ledger.site, "post")
    assert r.exit_code == 3, r.output                   # done, and a person looks at the unmatched
    out = flat(r.stdout)
    assert out.startswith("Booked 4 payments; 3 invoices closed; 3 unmatched.")

    listed = ledger.payments()
    expect = {"*1001": ("I1", "invoice closed"), "*1002": ("I2", "partial: 299.50 still open"),
              "*1006": ("I6", "invoice closed"), "*1007": ("I7", "invoice closed")}
    for ref, (invoice, note) in expect.items():
        assert (listed[ref]["status"], listed[ref]["invoice"], listed[ref]["note"]) == ("matched", invoice, note)
        e = ledger.entry(BP[ref])
        assert e["type"] == "payment" and e["source"] == "Lowell" and e["customer_id"] == "C1"
        assert Decimal(e["amount_ore"]) / 100 == -PAYMENTS[ref].amount
        assert e["document_date"] == BOOKED_ON and e["kid"] == PAYMENTS[ref].kid
    # a match created for an invoice that had none; the ERP's match M7 grown
    assert ledger.entry("I1")["match_id"] == "MI1" and ledger.members("MI1") == {"I1", BP["*1001"]}
    assert ledger.members("MI2") == {"I2", BP["*1002"]}
    assert ledger.members("MI6") == {"I6", BP["*1006"]}                 # by invoice number (DOC+380)
    assert ledger.members("M7") == {"I7", "K7", BP["*1007"]}
    assert {i: ledger.open_in_store(i) for i in ("I1", "I2", "I6", "I7")} == {
        "I1": Decimal("0.00"), "I2": Decimal("299.50"), "I6": Decimal("0.00"), "I7": Decimal("0.00")}


def test_what_cannot_be_matched_safely_stays_unmatched_and_listed(posted: Ledger) -> None:
    listed = posted.payments()
    why = {"*1004": "overpayment: 400.00 against 300.00 open on invoice I4",
           "*1005": "KID of invoice I5, which is closed",
           "*1099": f"unknown KID {kid10(99)}"}
    for ref, reason in why.items():
        assert (listed[ref]["status"], listed[ref]["invoice"], listed[ref]["note"]) == ("unmatched", None, reason)
        assert posted.entry(BP[ref]) is None                           # not booked in the ledger
    assert set(posted.payments("--unposted")) == set(why)
    again = cli(posted.site, "post")                                   # nothing is booked twice
    assert again.exit_code == 3                                        # still 3 for a person
    text = flat(again.stdout)
    assert text.startswith("Booked 0 payments; 0 invoices closed; 3 unmatched.")
    for ref, reason in why.items():
        assert f"{BP[ref]}: {reason}" in text
    assert posted.members("MI1") == {"I1", BP["*1001"]} and posted.entry("I4")["match_id"] is None
    assert posted.open_in_store("I4") == Decimal("300.00")


def test_a_second_partial_payment_grows_the_match_and_closes_it(posted: Ledger) -> None:
    posted.export_and_deliver()
    posted.drop("CREMUL_2.DAT", [bank("*2002", "299.50", kid10(2))], "B2")
    r = cli(posted.site, "post")
    assert flat(r.stdout).startswith("Booked 1 payment; 1 invoice closed;")
    assert posted.members("MI2") == {"I2", BP["*1002"], BP["*2002"]}
    root = posted.export_and_deliver()
    assert matches_of(root) == {"MI2": {"I2", BP["*1002"], BP["*2002"]}}   # sent again: a superset
    assert posted.receiver.open_balances()["I2"] == Decimal("0.00")


def test_booking_into_a_several_invoice_match_must_not_make_it_many_to_many(ledger: Ledger) -> None:
    """M8 is two invoices with one counterpart (allowed). Adding a second counterpart makes it
    many-to-many, which the receiver rejects: such a payment cannot be matched safely."""
    ledger.drop("CREMUL_8.DAT", [bank("*1008", "500.00", kid10(8))], "B8")
    r = cli(ledger.site, "post")
    assert r.exit_code == 3, r.output                   # *1008 (and others) unmatched
    assert ledger.members("M8") == {"I8", "I9", "P8"}, "post made M8 many-to-many"
    assert ledger.payments()["*1008"]["status"] == "unmatched"


# --- into the next file -------------------------------------------------------------------

def test_booked_payments_and_their_matches_go_in_the_next_file(posted: Ledger) -> None:
    root = posted.export_and_deliver()
    entries = entries_of(root)
    booked = {BP[r] for r in ("*1001", "*1002", "*1006", "*1007")}
    assert set(entries) == booked                                      # unmatched ones wait
    for ref in ("*1001", "*1002", "*1006", "*1007"):
        e = entries[BP[ref]]
        assert e.get("type") == "payment"
        assert e.findtext("lt:Amount", namespaces=NS) == f"{-PAYMENTS[ref].amount:.2f}"
        assert e.findtext("lt:CustomerRef", namespaces=NS) == "C1"
        assert e.findtext("lt:KID", namespaces=NS) == PAYMENTS[ref].kid
        # The contract has no Source element: "through Lowell" is known only to the store.
        assert posted.entry(BP[ref])["source"] == "Lowell"
    assert matches_of(root) == {"MI1": {"I1", BP["*1001"]}, "MI2": {"I2", BP["*1002"]},
                                "MI6": {"I6", BP["*1006"]}, "M7": {"I7", "K7", BP["*1007"]}}
    balances = posted.receiver.open_balances()
    assert {i: balances[i] for i in ("I1", "I2", "I3", "I4", "I5", "I6", "I7")} == {
        "I1": Decimal("0.00"), "I2": Decimal("299.50"), "I3": Decimal("1000.00"), "I4": Decimal("300.00"),
        "I5": Decimal("0.00"), "I6": Decimal("0.00"), "I7": Decimal("0.00")}


# --- correct-payment ----------------------------------------------------------------------

def test_correct_payment_moves_a_payment_to_the_right_invoice(posted: Ledger) -> None:
    posted.export_and_deliver()
    wrong = BP["*1001"]
    r = cli(posted.site, "correct-payment", wrong, "--to", "I3")
    assert r.exit_code == 0, r.output
    payout_id, again_id = f"U{wrong}", f"N{wrong}"
    assert f"Registered payout {payout_id}" in flat(r.stdout) and f"payment {again_id} on I3" in flat(r.stdout)

    payout, again = posted.entry(payout_id), posted.entry(again_id)
    assert (payout["type"], payout["amount_ore"], payout["source"]) == ("payout", 100000, "Lowell")
    assert (again["type"], again["amount_ore"], again["kid"]) == ("payment", -100000, kid10(3))
    assert posted.members("MI1") == {"I1", wrong, payout_id}             # the match only grew
    assert posted.members(posted.entry("I3")["match_id"]) == {"I3", again_id}
    assert posted.open_in_store("I1") == Decimal("1000.00") and posted.open_in_store("I3") == Decimal("0.00")

    root = posted.export_and_deliver()
    assert set(entries_of(root)) == {payout_id, again_id}
    assert entries_of(root)[payout_id].findtext("lt:Amount", namespaces=NS) == "1000.00"
    assert matches_of(root) == {"MI1": {"I1", wrong, payout_id}, "MI3": {"I3", again_id}}
    balances = posted.receiver.open_balances()
    assert balances["I1"] == Decimal("1000.00")                        # the wrong invoice is open again
    assert balances["I3"] == Decimal("0.00")                           # the right one is paid

    twice = cli(posted.site, "correct-payment", wrong, "--to", "I3")
    assert twice.exit_code == 1 and "corrected before" in flat(twice.stderr)


@pytest.mark.parametrize("payment, to, message", [
    ("NOPE", "I3", "NOPE: no payment with this id in the ledger"),
    ("I1", "I3", "I1: no payment with this id in the ledger (it is an invoice)"),                 # an invoice, not a payment
    ("P9", "I3", "P9: the payment is not matched to any invoice; match it instead"),
    (BP["*1001"], "K7", "K7: no invoice with this id in the ledger"),
    (BP["*1001"], "I1", f"{BP['*1001']} is already matched to I1"),
])
def test_correct_payment_refuses_with_a_clear_message(posted: Ledger, payment: str, to: str, message: str) -> None:
    with posted.db.connect() as conn:
        before = conn.execute(select(s.entries.c.id, s.entries.c.match_id).order_by(s.entries.c.id)).all()
    r = cli(posted.site, "correct-payment", payment, "--to", to)
    assert r.exit_code == 1
    assert flat(r.stderr) == f"error: {message}"
    assert "Traceback" not in r.output
    with posted.db.connect() as conn:
        assert conn.execute(select(s.entries.c.id, s.entries.c.match_id).order_by(s.entries.c.id)).all() == before


def test_correct_payment_on_an_unmatched_bank_payment_says_it_is_unmatched(posted: Ledger) -> None:
    """`reskontro payments` lists BP… as unmatched; correcting it must say so, not that no such
    payment exists."""
    pid = BP["*1099"]
    assert posted.payments()["*1099"]["status"] == "unmatched"
    r = cli(posted.site, "correct-payment", pid, "--to", "I3")
    assert r.exit_code == 1
    message = flat(r.stderr)
    assert pid in message
    assert "unmatched" in message or "not matched" in message or "not booked" in message, message


# --- a match Lowell has, shrunk in the ERP --------------------------------------------------

def test_an_erp_entry_dropped_from_a_delivered_match_is_held_as_match_lost_member(posted: Ledger, tmp_path: Path) -> None:
    """The ERP owns K7 and its membership of M7; dropping it after Lowell has M7 is a removal.
    (The payment the service booked into M7 stays there: see test_bank_ref.py.)"""
    posted.export_and_deliver()                                          # M7 {I7, K7, payment} delivered
    pid = BP["*1007"]
    assert posted.receiver.matches["M7"] == frozenset({"I7", "K7", pid})
    reimport = tmp_path / "reimport.jsonl"
    reimport.write_text(json.dumps({"record": "match", "id": "M7", "entries": ["I7", pid]}) + "\n",
                        encoding="utf-8")
    assert cli(posted.site, "import", str(reimport)).exit_code == 0
    assert posted.entry("K7")["match_id"] is None                       # unmatched in the ERP
    assert posted.members("M7") == {"I7", pid}

    invoice = json.loads(cli(posted.site, "explain", "I7", "--json").stdout)
    assert (invoice["decision"], invoice["rule"]) == ("hold", "match-lost-member")
    root = posted.export_and_deliver(held=True)                          # the removal is never sent
    assert entries_of(root) == {} and matches_of(root) == {}
    assert posted.receiver.matches["M7"] == frozenset({"I7", "K7", pid})

    r = cli(posted.site, "explain", "K7", "--json")
    assert r.exit_code == 0, r.output
    got = json.loads(r.stdout)
    assert (got["decision"], got["rule"]) == ("hold", "match-lost-member"), got
    text = flat(cli(posted.site, "explain", "K7").stdout)
    assert "K7: hold by rule match-lost-member" in text and "removals are never transferred" in text
    again = cli(posted.site, "export")     # told the night it arrived; held still, but no longer news
    assert again.exit_code == 0 and "held" not in again.stdout, again.output


def test_a_value_longer_than_a_bank_file_can_hold_refuses_the_file_naming_it(tmp_path: Path) -> None:
    """A creditor reference is Max35Text: 35 characters are listed as the payment's reference;
    more (no well-formed file has them) refuse the whole file, naming the payment and field,
    and nothing of it is listed: an identifier cut short could name another invoice."""
    from reskontro.domain import InputError
    from reskontro.ledger.store import open_engine
    from tests.test_not_payments import Ntry, Tx, camt

    def with_ref(ref: str) -> bytes:
        data = camt("08", [Ntry("N-1", "100.00", "CRDT", [Tx("T-1", "100.00", "CRDT", kid=5)])])
        start = data.index(b"<Ref>") + 5
        return data[:start] + ref.encode() + data[data.index(b"</Ref>", start):]

    db = open_engine(f"sqlite:///{tmp_path / 'store.db'}")
    ok = "R" * 35
    assert "1 payments listed" in list_payment_file(db, with_ref(ok), "ok.xml", "a" * 64)
    with db.connect() as conn:
        assert conn.execute(select(s.bank_payments.c.kid).where(s.bank_payments.c.archive_ref == "T-1")).scalar() == ok
    with pytest.raises(InputError, match=r"^long\.xml: payment T-3: kid is 36 characters long, more than a bank "
                                         r"file's 35"):
        list_payment_file(db, with_ref("R" * 36).replace(b"T-1", b"T-3"),
                          "long.xml", "b" * 64)
    with db.connect() as conn:
        assert conn.execute(select(s.bank_payments.c.archive_ref).order_by(s.bank_payments.c.archive_ref)
                            ).scalars().all() == ["T-1"]
