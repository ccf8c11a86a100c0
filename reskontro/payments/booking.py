"""Bank payments: listed from payment files, booked as ledger entries (source Lowell), matched to
their invoices by KID (else invoice number), closing what is paid.

A payment seen before (same archive reference) is never listed or booked twice, and one the
ERP's imported ledger already has (an entry with its archive reference as ``bank_ref``) is not
booked here. Booking a payment adds it to its invoice's match (a match only grows); what cannot
be matched safely (an unknown KID, the KID of a closed invoice, an overpayment) stays unmatched
for a person. What is booked here is the service's own (``entries.origin``): see bankref.py.
"""
from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date

from sqlalchemy import Connection, Engine, func, insert, select, update

from reskontro.adapters.payment_files import read_payment_bytes

from reskontro.ledger import schema as s
from reskontro.ledger.actions import record as record_action
from reskontro.ledger.bankref import alias_target
from reskontro.domain import Entry, InputError, Match, SkippedItem, from_ore, to_ore
from reskontro.ledger.store import Ledger

SOURCE = "Lowell"


def payment_id(archive_ref: str) -> str:
    """A stable ledger id for a bank payment (≤ 35 chars), from its archive reference."""
    return "BP" + hashlib.blake2b(archive_ref.encode(), digest_size=10).hexdigest()


def _check_widths(rows: list[dict], name: str) -> None:
    """A value longer than its column (no well-formed bank file has one: the formats' own
    limits are the columns') refuses the file, naming the payment and the field: an identifier
    cut short could name another invoice, and PostgreSQL would refuse the row anyway."""
    widths = {c.name: c.type.length for c in s.bank_payments.columns if getattr(c.type, "length", None)}
    for row in rows:
        for field, width in widths.items():
            value = row.get(field)
            if isinstance(value, str) and len(value) > width:
                raise InputError(f"{name}: payment {row['archive_ref'][:120]}: {field} is {len(value)} characters "
                                 f"long, more than a bank file's {width}: {value[:60]!r}…")


def list_payment_file(db: Engine, data: bytes, name: str, digest: str) -> str:
    """Parse a payment file and list its payments (all or none); returns a one-line summary.

    Only customers' incoming payments are listed. What else the file reports (debits,
    reversals, returned transfers: ``PaymentFile.skipped``) is never listed, so never booked;
    the summary names each with its reason."""
    pf = read_payment_bytes(data, name)
    with db.begin() as conn:
        refs = [p.archive_ref for p in pf.payments]
        seen = set()
        for i in range(0, len(refs), 500):
            seen.update(conn.execute(select(s.bank_payments.c.archive_ref).where(
                s.bank_payments.c.archive_ref.in_(refs[i:i + 500]))).scalars())
        rows = []
        for p in pf.payments:
            if p.archive_ref in seen:
                continue
            seen.add(p.archive_ref)
            rows.append(dict(
                id=payment_id(p.archive_ref), archive_ref=p.archive_ref, format=p.format, file_sha256=digest,
                amount_ore=to_ore(p.amount), currency=p.currency, payment_date=p.payment_date,
                booking_date=p.booking_date, kid=p.kid, invoice_no=p.invoice_no,
                payer_name=(p.payer_name or None) and p.payer_name[:200], payer_account=p.payer_account,
                bank_code=p.bank_code, text=(p.text or None) and p.text[:200], source=p.source or SOURCE,
                status="unposted"))
        _check_widths(rows, name)
        if rows:
            conn.execute(insert(s.bank_payments), rows)
    dup = len(pf.payments) - len(rows)
    warn = f"; warnings: {'; '.join(pf.warnings)}" if pf.warnings else ""
    return (f"{pf.format}: {len(rows)} payments listed" + (f", {dup} seen before (not listed again)" if dup else "")
            + skipped_summary(pf.skipped) + warn)


def skipped_summary(skipped: list[SkippedItem]) -> str:
    """"; 2 not payments (not listed): <amount, ref: reason>; ..." or "" when there are none."""
    if not skipped:
        return ""
    return f"; {len(skipped)} not payments (not listed): " + "; ".join(s.describe() for s in skipped)


@dataclass(frozen=True)
class PostResult:
    matched: int
    closed: int
    unmatched: list[tuple[str, str]]      # (payment id, why)
    in_erp: list[tuple[str, str]] = ()    # (payment id, the ERP's entry for it): booked there, not here
    new_unmatched: list[tuple[str, str]] = ()   # of `unmatched`, those tried for the first time now


def _group_balance(conn: Connection, invoice_id: str, match_id: str | None) -> int:
    e = s.entries
    if match_id is None:
        return conn.execute(select(e.c.amount_ore).where(e.c.id == invoice_id)).scalar_one()
    return conn.execute(select(func.sum(e.c.amount_ore)).where(e.c.match_id == match_id)).scalar_one()


def _find_invoice(conn: Connection, kid: str | None, invoice_no: str | None):
    e = s.entries
    if kid:
        rows = conn.execute(select(e).where(e.c.kid == kid, e.c.type == "invoice")).all()
        if len(rows) == 1:
            return rows[0]._mapping, None
        if rows:
            return None, f"KID {kid} names {len(rows)} invoices"
    if invoice_no:
        rows = conn.execute(select(e).where(e.c.document_no == invoice_no, e.c.type == "invoice")).all()
        if len(rows) == 1:
            return rows[0]._mapping, None
    if kid:
        return None, f"unknown KID {kid}"
    return None, f"no KID, and invoice no {invoice_no!r} names no invoice" if invoice_no else "no KID and no invoice number"


def _would_be_many_to_many(conn: Connection, match_id: str | None) -> bool:
    if match_id is None:
        return False
    types = conn.execute(select(s.entries.c.type).where(s.entries.c.match_id == match_id)).scalars().all()
    return sum(t == "invoice" for t in types) > 1


def add_to_match(conn: Connection, invoice: dict, new_ids: list[str]) -> str:
    """Link entries to the invoice's match (creating it); a match only ever grows."""
    ledger = Ledger(conn)
    mid = invoice["match_id"] or f"M{invoice['id']}"[:35]
    members = conn.execute(select(s.entries.c.id).where(s.entries.c.match_id == mid)).scalars().all()
    members = list(members) or [invoice["id"]]
    ledger.set_matches([Match(mid, tuple(members) + tuple(new_ids))])
    return mid


def booked_in_erp(conn: Connection, p: Mapping) -> str | None:
    """The ERP's entry for this bank payment (its entry carries the bank's reference), if the
    ERP booked it first: one payment, one entry."""
    return conn.execute(select(s.entries.c.id).where(s.entries.c.bank_ref == p["archive_ref"],
                                                     s.entries.c.id != p["id"])).scalar()


def refusal(conn: Connection, p: Mapping, invoice: Mapping, *, by_kid: bool = True) -> str | None:
    """Why this bank payment cannot be booked on this invoice safely (None: it can). The same
    checks for `post` (the invoice found by KID) and `match-payment` (the invoice named:
    `by_kid` False)."""
    if invoice["status"] != "invoiced":
        return f"invoice {invoice['id']} is a draft"
    balance = _group_balance(conn, invoice["id"], invoice["match_id"])
    if p["amount_ore"] <= 0:
        return "not an incoming amount (a reversal or debit): a person must book it"
    if p["currency"] != invoice["currency"]:     # before the amounts: øre of two currencies never compare
        return f"currency {p['currency']} differs from invoice's {invoice['currency']}"
    if balance <= 0:
        return f"KID of invoice {invoice['id']}, which is closed" if by_kid else \
            f"invoice {invoice['id']} is closed (nothing open on it)"
    if p["amount_ore"] > balance:
        return f"overpayment: {from_ore(p['amount_ore'])} against {from_ore(balance)} open on invoice {invoice['id']}"
    if _would_be_many_to_many(conn, invoice["match_id"]):
        return (f"invoice {invoice['id']} shares its match with other invoices and one counterpart; a second "
                "counterpart would make it many-to-many")
    return None


def _decide(conn: Connection, p) -> tuple[str, object, str | None]:
    """What `post` does with one listed payment, as the ledger stands: ("erp", None, the ERP's
    entry id) when the ERP booked it first, ("book", invoice, None), or ("unmatched", None,
    why). Reads only."""
    erp = booked_in_erp(conn, p)
    if erp is not None:
        return "erp", None, erp
    invoice, why = _find_invoice(conn, p["kid"], p["invoice_no"])
    if invoice is not None:
        why = refusal(conn, p, invoice)
        if why is not None:
            invoice = None
    return ("unmatched", None, why) if invoice is None else ("book", invoice, None)


def book(conn: Connection, p: Mapping, invoice: Mapping) -> int:
    """Book bank payment `p` on `invoice` (checked: `refusal` is None): its ledger entry (the
    service's own, source Lowell), linked into the invoice's match, the payment marked
    matched. Returns what stays open on the invoice, in øre (0: closed)."""
    balance = _group_balance(conn, invoice["id"], invoice["match_id"])
    day = p["booking_date"] or p["payment_date"] or date.today()
    entry = Entry(id=p["id"], customer_id=invoice["customer_id"], type="payment",
                  document_no=p["archive_ref"][-35:], document_date=day,
                  amount=-from_ore(p["amount_ore"]), currency=p["currency"], kid=p["kid"],
                  source=p["source"], text=(f"Innbetaling {p['payer_name']}"[:200] if p["payer_name"] else None),
                  bank_ref=p["archive_ref"])
    Ledger(conn).upsert_entries([entry])
    _booked_here(conn, [entry.id], "bank")
    add_to_match(conn, dict(invoice), [entry.id])
    rest = balance - p["amount_ore"]
    conn.execute(update(s.bank_payments).where(s.bank_payments.c.id == p["id"]).values(
        status="matched", invoice_id=invoice["id"],
        note="invoice closed" if rest == 0 else f"partial: {from_ore(rest)} still open"))
    return rest


def preview_post(db: Engine) -> list[tuple[str, str]]:
    """What `post` would do with each listed payment (id, what), changing nothing. Each as
    the ledger stands now: in a real run a payment booked first may leave less open for the
    next one on the same invoice."""
    out = []
    with db.connect() as conn:
        todo = conn.execute(select(s.bank_payments).where(s.bank_payments.c.status.in_(("unposted", "unmatched")))
                            .order_by(s.bank_payments.c.booking_date, s.bank_payments.c.id)).all()
        for row in todo:
            p = row._mapping
            what, invoice, why = _decide(conn, p)
            if what == "erp":
                out.append((p["id"], f"not booked: booked in the ERP as entry {why}"))
            elif invoice is None:
                out.append((p["id"], f"stays unmatched: {why}"))
            else:
                out.append((p["id"], f"would be booked on invoice {invoice['id']} ({from_ore(p['amount_ore'])} "
                                     f"{p['currency']})"))
    return out


def post_payments(db: Engine) -> PostResult:
    """Book every unposted (or earlier unmatched) bank payment that can be matched safely."""
    matched = closed = 0
    unmatched: list[tuple[str, str]] = []
    in_erp: list[tuple[str, str]] = []
    new_unmatched: list[tuple[str, str]] = []
    with db.connect() as conn:
        todo = conn.execute(select(s.bank_payments).where(s.bank_payments.c.status.in_(("unposted", "unmatched")))
                            .order_by(s.bank_payments.c.booking_date, s.bank_payments.c.id)).all()
    bp = s.bank_payments
    for row in todo:
        p = row._mapping
        with db.begin() as conn:
            # The claim, the transaction's first write (so the database serialises it): a
            # payment another `post` booked since the list above was read is left alone.
            claimed = conn.execute(update(bp).where(bp.c.id == p["id"], bp.c.status.in_(("unposted", "unmatched")))
                                   .values(status=bp.c.status)).rowcount
            if not claimed:
                continue
            what, invoice, why = _decide(conn, p)
            if what == "erp":
                conn.execute(update(s.bank_payments).where(s.bank_payments.c.id == p["id"]).values(
                    status="booked_in_erp", note=f"booked in the ERP as entry {why}"[:200]))
                in_erp.append((p["id"], why))
                continue
            if invoice is None:
                conn.execute(update(s.bank_payments).where(s.bank_payments.c.id == p["id"])
                             .values(status="unmatched", note=why[:200]))
                unmatched.append((p["id"], why))
                if p["status"] == "unposted":
                    new_unmatched.append((p["id"], why))
                continue
            rest = book(conn, p, invoice)
            matched += 1
            closed += rest == 0
    return PostResult(matched, closed, unmatched, in_erp, new_unmatched)


def _booked_here(conn: Connection, ids: list[str], origin: str) -> None:
    """Mark entries as this service's own: an ERP import never overwrites them or takes them
    out of their match (see reskontro.ledger.bankref)."""
    conn.execute(update(s.entries).where(s.entries.c.id.in_(ids)).values(origin=origin))


def reached_lowell(conn: Connection, entry_id: str) -> bool:
    """Has some version of the entry been delivered to Lowell or is one in flight?"""
    return conn.execute(select(s.sent.c.id).where(s.sent.c.kind == "entry", s.sent.c.id == entry_id)).first() \
        is not None


def correct_payment(db: Engine, payment_id_: str, to_invoice: str, *, today: date | None = None,
                    who: str | None = None) -> tuple[str, str]:
    """The service's correction of a payment booked on the wrong invoice that Lowell already has:
    a payout U<payment> (the payment's customer, + its amount) linked into the payment's match
    with the wrong invoice (which is open again), and a new payment N<payment> (the right
    invoice's customer and KID, the same amount) linked into the right invoice's match (made
    as M<invoice> if it has none). Both are this service's own entries (origin correction).
    Refused, with nothing created, when the payment never reached Lowell: re-linking it in the
    ERP is then the whole fix. With `who`, the correction is recorded as an action (who, when,
    what), shown by explain. Returns (payout id, new payment id)."""
    today = today or date.today()
    with db.begin() as conn:
        ledger = Ledger(conn)
        payment_id_ = alias_target(conn, "entry", payment_id_) or payment_id_   # the ERP's id for it
        pay = conn.execute(select(s.entries).where(s.entries.c.id == payment_id_)).first()
        if pay is None:
            bank = conn.execute(select(s.bank_payments.c.status, s.bank_payments.c.note).where(
                s.bank_payments.c.id == payment_id_)).first()
            if bank is not None:
                hint = ("match it by hand: `reskontro match-payment "
                        f"{payment_id_} --to {to_invoice}` (or in the ERP)") if bank.status in ("unposted", "unmatched") \
                    else "nothing to do here"
                raise InputError(f"{payment_id_}: this bank payment is not booked (status {bank.status}"
                                 f"{': ' + bank.note if bank.note else ''}); nothing to correct: {hint}")
            raise InputError(f"{payment_id_}: no payment with this id in the ledger")
        if pay._mapping["type"] != "payment":
            kind = pay._mapping["type"].replace("_", " ")
            raise InputError(f"{payment_id_}: no payment with this id in the ledger "
                             f"(it is a{'n' if kind[0] in 'aeiou' else ''} {kind})")
        pay = pay._mapping
        if pay["match_id"] is None:
            raise InputError(f"{payment_id_}: the payment is not matched to any invoice; match it instead")
        right = conn.execute(select(s.entries).where(s.entries.c.id == to_invoice)).first()
        if right is None or right._mapping["type"] != "invoice":
            raise InputError(f"{to_invoice}: no invoice with this id in the ledger")
        right = right._mapping
        wrong_ids = conn.execute(select(s.entries.c.id).where(
            s.entries.c.match_id == pay["match_id"], s.entries.c.type == "invoice")).scalars().all()
        if to_invoice in wrong_ids:
            raise InputError(f"{payment_id_} is already matched to {to_invoice}")
        if not reached_lowell(conn, payment_id_):
            raise InputError(
                f"{payment_id_} never reached Lowell (no version of it is delivered or in flight), so "
                "Lowell has nothing to correct and nothing was created: re-link it in the ERP instead (export "
                f"the match that puts it on {to_invoice}; a payment this service booked is in "
                "`reskontro bookings`), then import that")
        payout_id = f"U{payment_id_}"[:35]
        new_id = f"N{payment_id_}"[:35]
        if ledger.existing_ids(s.entries, [payout_id, new_id]):
            raise InputError(f"{payment_id_} was corrected before ({payout_id}, {new_id} exist)")
        amount = from_ore(pay["amount_ore"])          # negative: money received
        payout = Entry(id=payout_id, customer_id=pay["customer_id"], type="payout",
                       document_no=f"KORR-{payment_id_}"[:35], document_date=today, amount=-amount,
                       currency=pay["currency"], source=pay["source"],
                       text=f"Korrigering: {payment_id_} gjaldt {to_invoice}"[:200])
        again = Entry(id=new_id, customer_id=right["customer_id"], type="payment",
                      document_no=f"KORR-{payment_id_}"[:35], document_date=today, amount=amount,
                      currency=pay["currency"], kid=right["kid"], source=pay["source"],
                      text=f"Korrigert fra {payment_id_}"[:200])
        ledger.upsert_entries([payout, again])
        _booked_here(conn, [payout_id, new_id], "correction")
        members = conn.execute(select(s.entries.c.id).where(s.entries.c.match_id == pay["match_id"])).scalars().all()
        ledger.set_matches([Match(pay["match_id"], tuple(members) + (payout_id,))])
        add_to_match(conn, dict(right), [new_id])
        if who is not None:
            record_action(conn, "correct-payment", who=who, payment=payment_id_, invoice=to_invoice,
                          detail=f"payout {payout_id} into {pay['match_id']} (with {', '.join(wrong_ids)}), "
                                 f"payment {new_id} on {to_invoice}")
        return payout_id, new_id


def list_payments(db: Engine, *, unposted: bool = False) -> list[dict]:
    """The bank payments, oldest first, each with the ledger entry that is it (the service's,
    booked here, or the ERP's, booked there); amounts as kroner text ("1234.50")."""
    from reskontro.domain.amount import ore_text
    bp = s.bank_payments
    q = (select(bp, s.entries.c.id.label("entry_id"))
         .outerjoin(s.entries, s.entries.c.bank_ref == bp.c.archive_ref)
         .order_by(bp.c.booking_date, bp.c.id))
    if unposted:
        q = q.where(bp.c.status.in_(("unposted", "unmatched")))
    with db.connect() as conn:
        rows = [r._mapping for r in conn.execute(q)]
    out = []
    for r in rows:
        day = r["booking_date"] or r["payment_date"]
        out.append({"id": r["id"], "source": r["source"], "format": r["format"],
                    "date": day.isoformat() if day else None, "payer": r["payer_name"],
                    "amount": ore_text(r["amount_ore"]), "currency": r["currency"], "kid": r["kid"],
                    "invoice_no": r["invoice_no"], "invoice": r["invoice_id"], "status": r["status"],
                    "note": r["note"], "archive_ref": r["archive_ref"], "entry": r["entry_id"]})
    return out
