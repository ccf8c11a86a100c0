"""The bank payments as a person works through them (the web page's payments list): those on
the list first (unmatched, then unposted), then the rest, each part oldest first; paged, with
the count per status. Each part is read through the index on (status, booking_date, id), so a
page costs the same whatever the number of payments.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from sqlalchemy import Connection, func, select

from reskontro.domain import from_ore
from reskontro.ledger import schema as s

ORDER = ("unmatched", "unposted", "matched", "booked_in_erp", "dismissed")


@dataclass(frozen=True)
class PaymentRow:
    id: str
    archive_ref: str
    source: str
    format: str
    date: date | None         # booking date (else payment date)
    payer: str | None
    amount: Decimal
    currency: str
    kid: str | None
    invoice_no: str | None
    invoice_id: str | None    # the invoice it is booked on (matched)
    status: str               # unmatched | unposted | matched | booked_in_erp | dismissed
    note: str | None          # why unmatched; partial or closed; dismissed by whom and why
    entry_id: str | None      # the ledger entry that is this payment (booked here or by the ERP)


@dataclass(frozen=True)
class PaymentPage:
    rows: list[PaymentRow]
    total: int
    offset: int
    limit: int
    by_status: dict[str, int]


def payment_page(conn: Connection, *, status: str | None = None, offset: int = 0, limit: int = 50) -> PaymentPage:
    """One page of the bank payments (of one status, or all in ORDER's order)."""
    if offset < 0 or limit < 0:
        raise ValueError("offset and limit are never negative")
    b = s.bank_payments
    by_status = dict(conn.execute(select(b.c.status, func.count()).group_by(b.c.status)).all())
    parts = [status] if status is not None else ORDER + tuple(sorted(set(by_status) - set(ORDER)))
    rows: list[PaymentRow] = []
    skip, want = offset, limit
    for st in parts:
        n = by_status.get(st, 0)
        if skip >= n:
            skip -= n
            continue
        if want <= 0:
            break
        entry = (select(s.entries.c.id).where(s.entries.c.bank_ref == b.c.archive_ref)
                 .limit(1).scalar_subquery())
        q = (select(b, entry.label("entry_id")).where(b.c.status == st)
             .order_by(b.c.booking_date, b.c.id).offset(skip).limit(want))
        for r in conn.execute(q):
            rows.append(PaymentRow(r.id, r.archive_ref, r.source, r.format, r.booking_date or r.payment_date,
                                   r.payer_name, from_ore(r.amount_ore), r.currency, r.kid, r.invoice_no,
                                   r.invoice_id, r.status, r.note, r.entry_id))
        want -= min(want, n - skip)
        skip = 0
    total = by_status.get(status, 0) if status is not None else sum(by_status.values())
    return PaymentPage(rows, total, offset, limit, {k: by_status[k] for k in sorted(by_status, key=_rank)})


def _rank(status: str) -> tuple[int, str]:
    return (ORDER.index(status) if status in ORDER else len(ORDER), status)
