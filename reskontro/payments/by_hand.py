"""Bank payments a person handles by hand (`reskontro match-payment`, `dismiss-payment`, and
the web page's buttons): a payment `post` left unmatched is linked to the invoice named, with
the checks `post` makes (booking.refusal) and the booking `post` does (booking.book), so the
invoice closes and the next file carries the payment and its match like any other; or it is
taken off the list (refunded to the payer, say), never to be tried or reported again. Each is
recorded as an action (ledger.actions) in the same transaction.
"""
from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import Connection, Engine, RowMapping, select, update

from reskontro.domain import InputError, from_ore
from reskontro.ledger import schema as s
from reskontro.ledger.actions import Action, record
from reskontro.ledger.bankref import alias_target
from reskontro.payments.booking import book, booked_in_erp, refusal

OPEN = ("unposted", "unmatched")       # on the list: post tries them, a person may handle them


@dataclass(frozen=True)
class HandMatch:
    payment: str              # the bank payment; booked now, its ledger entry has the same id
    invoice: str
    match_id: str
    amount: Decimal
    currency: str
    still_open: Decimal       # on the invoice after it (0.00: closed)
    action: Action

    @property
    def closed(self) -> bool:
        return self.still_open == 0


@dataclass(frozen=True)
class Dismissal:
    payment: str
    was: str                  # unposted | unmatched
    reason: str
    action: Action


def bank_payment(conn: Connection, ident: str) -> RowMapping:
    """A bank payment by its id (BP…) or the bank's archive reference."""
    b = s.bank_payments
    row = conn.execute(select(b).where(b.c.id == ident)).first() or \
        conn.execute(select(b).where(b.c.archive_ref == ident)).first()
    if row is None:
        raise InputError(f"{ident}: no bank payment with this id or archive reference "
                         "(`reskontro payments` lists them)")
    return row._mapping


def _not_on_the_list(p: RowMapping) -> str | None:
    """Why a person cannot handle this payment any more (None: it is on the list)."""
    if p["status"] == "matched":
        return f"{p['id']}: already matched to invoice {p['invoice_id']} ({p['note']})"
    if p["status"] == "booked_in_erp":
        return f"{p['id']}: the ERP booked it ({p['note']}); change it there"
    if p["status"] == "dismissed":
        return f"{p['id']}: dismissed ({p['note']}); it is off the list"
    return None if p["status"] in OPEN else f"{p['id']}: status {p['status']}"


def _claim(conn: Connection, payment: str) -> RowMapping:
    """The payment, if it is on the list (else InputError saying why), claimed by the
    transaction's first write, so the database serialises two hands (or a `post`) on one
    payment: one wins, the other finds it handled."""
    p = bank_payment(conn, payment)
    why = _not_on_the_list(p)
    if why is not None:
        raise InputError(why)
    b = s.bank_payments
    if not conn.execute(update(b).where(b.c.id == p["id"], b.c.status.in_(OPEN)).values(status=b.c.status)).rowcount:
        raise InputError(f"{p['id']}: handled meanwhile by someone else; look again (`reskontro payments`)")
    return p


def _invoice(conn: Connection, ident: str) -> RowMapping:
    """The invoice named: by its id (or the ERP's id of one), else by its document number."""
    e = s.entries
    eid = alias_target(conn, "entry", ident) or ident
    row = conn.execute(select(e).where(e.c.id == eid)).first()
    if row is None:
        rows = conn.execute(select(e).where(e.c.document_no == ident, e.c.type == "invoice").limit(6)).all()
        if len(rows) > 1:
            raise InputError(f"{ident}: the document number of {len(rows)} invoices "
                             f"({', '.join(r.id for r in rows[:5])}); name one by its id")
        if not rows:
            raise InputError(f"{ident}: unknown invoice (no invoice with this id or document number in the ledger)")
        row = rows[0]
    if row.type != "invoice":
        kind = row.type.replace("_", " ")
        raise InputError(f"{ident}: not an invoice (it is a{'n' if kind[0] in 'aeiou' else ''} {kind})")
    return row._mapping


def match_payment(db: Engine, payment: str, invoice: str, *, who: str, reason: str | None = None) -> HandMatch:
    """Book bank payment `payment` (on the list: unposted or unmatched) on `invoice`, as `post`
    would have; InputError (nothing changed) naming the id and what is wrong otherwise."""
    with db.begin() as conn:
        p = _claim(conn, payment)
        erp = booked_in_erp(conn, p)
        if erp is not None:
            raise InputError(f"{p['id']}: the ERP booked it already, as entry {erp}; `reskontro post` marks it "
                             "so, nothing to match here")
        inv = _invoice(conn, invoice)
        why = refusal(conn, p, inv, by_kid=False)
        if why is not None:
            raise InputError(f"{p['id']} cannot be matched to {inv['id']}: {why}")
        rest = book(conn, p, inv)
        mid = conn.execute(select(s.entries.c.match_id).where(s.entries.c.id == p["id"])).scalar()
        amount = from_ore(p["amount_ore"])
        detail = (f"booked {amount} {p['currency']} on {inv['id']} in match {mid}; "
                  + ("invoice closed" if rest == 0 else f"{from_ore(rest)} still open")
                  + (f" (post had left it {p['status']}: {p['note']})" if p["note"] else ""))
        reason = " ".join((reason or "").split()) or None
        action = record(conn, "match-payment", who=who, payment=p["id"], invoice=inv["id"],
                        reason=reason, detail=detail)
    return HandMatch(p["id"], inv["id"], mid, amount, p["currency"], from_ore(rest), action)


def dismiss_payment(db: Engine, payment: str, reason: str, *, who: str) -> Dismissal:
    """Take bank payment `payment` off the list (status dismissed): `post` never tries it again
    and the nightly run never reports it; it is booked nowhere."""
    reason = " ".join(reason.split())
    if not reason:
        raise InputError(f"{payment}: a reason is needed (what became of the money, e.g. refunded to the payer)")
    with db.begin() as conn:
        p = _claim(conn, payment)
        note = f"dismissed by {who}: {reason}"
        conn.execute(update(s.bank_payments).where(s.bank_payments.c.id == p["id"])
                     .values(status="dismissed", note=note[:200]))
        action = record(conn, "dismiss-payment", who=who, payment=p["id"], reason=reason,
                        detail=f"was {p['status']}{': ' + p['note'] if p['note'] else ''}")
    return Dismissal(p["id"], p["status"], reason, action)
