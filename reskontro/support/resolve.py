"""Any identifier a person has at hand, to the entry (or bank payment) it names: the ledger's
id, the ERP's id of an entry booked here (an alias), a bank payment's id or archive reference,
a document number, a KID; exactly first, then ignoring case. Each is one index lookup.
"""
from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, func, select

from reskontro.domain import InputError
from reskontro.ledger import schema as s
from reskontro.ledger.bankref import alias_target

_SHOW = 10


@dataclass(frozen=True)
class Resolved:
    entry_id: str | None      # the ledger entry (None: a bank payment that is not booked)
    payment_id: str | None    # the bank payment that is this entry, or the one asked for
    found_by: str             # id | erp_id | payment | document_no | kid


class AmbiguousId(InputError):
    """The identifier names several entries (a document number or KID they share)."""

    def __init__(self, ident: str, found_by: str, candidates: list[tuple[str, str]]) -> None:
        self.ident, self.found_by, self.candidates = ident, found_by, candidates   # (entry id, type)
        what = {"document_no": "document number", "kid": "KID"}.get(found_by, found_by)
        names = ", ".join(f"{i} ({t.replace('_', ' ')})" for i, t in candidates[:_SHOW])
        more = " …" if len(candidates) > _SHOW else ""
        super().__init__(f"{ident}: the {what} of {len(candidates)} entries: {names}{more}; explain one by its id")


def _payment_entry(conn: Connection, pid: str, archive_ref: str) -> str | None:
    """The ledger entry that is this bank payment: booked here (same id), or by the ERP (its
    bank_ref)."""
    e = s.entries
    if conn.execute(select(e.c.id).where(e.c.id == pid)).first() is not None:
        return pid
    return conn.execute(select(e.c.id).where(e.c.bank_ref == archive_ref).order_by(e.c.id).limit(1)).scalar()


def _bank_payment_of(conn: Connection, entry_id: str) -> str | None:
    e, b = s.entries, s.bank_payments
    ref = conn.execute(select(e.c.bank_ref).where(e.c.id == entry_id)).scalar()
    if ref is not None:
        return conn.execute(select(b.c.id).where(b.c.archive_ref == ref)).scalar()
    return conn.execute(select(b.c.id).where(b.c.id == entry_id)).scalar()


def _one_of(conn: Connection, ident: str, found_by: str, rows: list[tuple[str, str]]) -> Resolved | None:
    """One entry, or the one invoice among several (an invoice and its payments share a KID)."""
    if not rows:
        return None
    if len(rows) > 1:
        invoices = [r for r in rows if r[1] == "invoice"]
        if len(invoices) != 1:
            raise AmbiguousId(ident, found_by, rows)
        rows = invoices
    return Resolved(rows[0][0], _bank_payment_of(conn, rows[0][0]), found_by)


def resolve(conn: Connection, ident: str) -> Resolved | None:
    """What `ident` names (None: nothing); AmbiguousId when it names several entries alike."""
    ident = ident.strip()
    if not ident:
        return None
    e, b = s.entries, s.bank_payments
    if conn.execute(select(e.c.id).where(e.c.id == ident)).first() is not None:
        return Resolved(ident, _bank_payment_of(conn, ident), "id")
    target = alias_target(conn, "entry", ident)
    if target is not None:
        return Resolved(target, _bank_payment_of(conn, target), "erp_id")
    pay = conn.execute(select(b.c.id, b.c.archive_ref).where(b.c.id == ident)).first() or \
        conn.execute(select(b.c.id, b.c.archive_ref).where(b.c.archive_ref == ident)).first()
    if pay is not None:
        return Resolved(_payment_entry(conn, pay.id, pay.archive_ref), pay.id, "payment")
    for found_by, col, key in (("document_no", e.c.document_no, ident), ("kid", e.c.kid, ident),
                               ("id", func.lower(e.c.id), ident.lower()),
                               ("document_no", func.lower(e.c.document_no), ident.lower())):
        rows = [tuple(r) for r in conn.execute(select(e.c.id, e.c.type).where(col == key).order_by(e.c.id)
                                               .limit(_SHOW + 1))]
        found = _one_of(conn, ident, found_by, rows)
        if found is not None:
            return found
    pays = conn.execute(select(b.c.id, b.c.archive_ref).where(b.c.kid == ident).limit(2)).all()
    if len(pays) == 1:       # the KID of a bank payment that is not booked (an unknown KID, say)
        return Resolved(_payment_entry(conn, pays[0].id, pays[0].archive_ref), pays[0].id, "kid")
    return None
