"""What a person did by hand to a payment (match-payment, dismiss-payment, correct-payment):
recorded in the store (table ``actions``) in the same transaction as the change itself, so the
record and the change exist together or not at all; `explain` of the payment and of the
invoice shows them. Rows are only ever added.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

from sqlalchemy import Connection, insert, or_, select

from reskontro.ledger import schema as s

ACTIONS = ("match-payment", "dismiss-payment", "correct-payment")


@dataclass(frozen=True)
class Action:
    at: datetime              # UTC
    who: str                  # the OS user, or the web page's login
    action: str               # match-payment | dismiss-payment | correct-payment
    payment: str
    invoice: str | None
    reason: str | None
    detail: str | None        # what it did, in one line


def record(conn: Connection, action: str, *, who: str, payment: str, invoice: str | None = None,
           reason: str | None = None, detail: str | None = None, at: datetime | None = None) -> Action:
    """Add one action (the caller's transaction, which also makes the change)."""
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r}")
    at = (at or datetime.now(timezone.utc)).astimezone(timezone.utc)
    conn.execute(insert(s.actions).values(at=at, who=who[:100], action=action, payment=payment,
                                          invoice=invoice, reason=reason, detail=detail))
    return Action(at, who[:100], action, payment, invoice, reason, detail)


def about(conn: Connection, ids: list[str]) -> list[Action]:
    """The actions on any of these payments or invoices, oldest first."""
    a = s.actions
    ids = [i for i in dict.fromkeys(ids) if i]
    if not ids:
        return []
    rows = conn.execute(select(a).where(or_(a.c.payment.in_(ids), a.c.invoice.in_(ids))).order_by(a.c.id)).all()
    return [Action(_utc(r.at), r.who, r.action, r.payment, r.invoice, r.reason, r.detail) for r in rows]


def _utc(t: datetime) -> datetime:
    # SQLite hands back a naive datetime (what was written was UTC)
    return t if t.tzinfo is not None else t.replace(tzinfo=timezone.utc)
