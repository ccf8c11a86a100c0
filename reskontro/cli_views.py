"""The command line's view of support's answers (find, explain, held, excluded, the payment
actions): the service layer's dataclasses as table rows, lines and `--json` fields. Plain
functions of plain data: they print nothing (cli.py prints through cli_output) and read no
store.

JSON: amounts as kroner text with two decimals ("1234.50"), dates and times ISO 8601 (times
in the site's zone), dataclasses as objects of their fields.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import date, datetime, tzinfo
from decimal import Decimal
from typing import TYPE_CHECKING

from reskontro.domain.amount import format_amount

if TYPE_CHECKING:     # the service layer's answers
    from reskontro.ledger.search import CustomerHit, EntryHit, PaymentHit
    from reskontro.payments.listing import PaymentRow
    from reskontro.rules.lists import KeptEntry
    from reskontro.support.explain import Explained, Member
    from reskontro.transfer.delivery import Carried, Delivery


def jsonable(value: object, tz: tzinfo | None = None) -> object:
    """Plain JSON values of a service's answer (see the module's docstring)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name), tz) for f in dataclasses.fields(value)}
    if isinstance(value, Decimal):
        return format_amount(value)
    if isinstance(value, datetime):
        return (value.astimezone(tz) if tz and value.tzinfo else value).isoformat(timespec="seconds")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): jsonable(v, tz) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v, tz) for v in value]
    return value


def money(amount: Decimal, currency: str) -> str:
    return f"{amount:,.2f} {currency}"


def when(t: datetime | None, tz: tzinfo) -> str:
    return "" if t is None else t.astimezone(tz).strftime("%Y-%m-%d %H:%M %Z")


def words(text: str) -> str:
    return text.replace("_", " ")


# --- find ------------------------------------------------------------------------------------
def entry_rows(hits: Sequence[EntryHit]) -> list[list[str]]:
    return [[h.id, words(h.type), h.customer_id, h.customer_name, h.document_no, h.kid or "",
             money(h.amount, h.currency), h.match_id or "", words(h.found_by)] for h in hits]


def customer_rows(hits: Sequence[CustomerHit]) -> list[list[str]]:
    return [[h.id, h.name, h.type or "", h.city or "", words(h.found_by)] for h in hits]


def _payment_cells(p: PaymentHit | PaymentRow) -> list[str]:
    return [p.id, p.archive_ref, p.date.isoformat() if p.date else "", p.payer or "", money(p.amount, p.currency),
            p.kid or "", p.status, p.invoice_id or ""]


def payment_rows(hits: Sequence[PaymentHit]) -> list[list[str]]:
    return [_payment_cells(h) + [words(h.found_by)] for h in hits]


def booked_rows(payments: Sequence[PaymentRow]) -> list[list[str]]:
    """Bank payments (payments.listing.PaymentRow) with their note."""
    return [_payment_cells(p) + [p.note or ""] for p in payments]


# --- explain ---------------------------------------------------------------------------------
FOUND_BY = {"document_no": "the document number of", "kid": "the KID of",
            "payment": "the bank payment booked as entry", "erp_id": "the ERP's id of"}
DELIVERY = {"never_sent": "never sent", "in_flight": "in flight", "delivered": "delivered"}


def delivery_line(d: Delivery) -> str:
    """Where the entry is, in one line."""
    if d.state == "never_sent":
        tried = [f for f in d.files if f.state in ("rejected", "invalid", "abandoned")]
        return "never sent" + (f" (carried by {', '.join(f'{f.name} ({f.state})' for f in tried)})" if tried else "")
    f = next((x for x in d.files if x.file_id == d.file_id), None)
    name = f.name if f else d.file_id
    text = f"{DELIVERY[d.state]}: {name}" + (f" ({f.state})" if f and d.state == "in_flight" else "")
    if d.changed:
        text += "; Lowell has another version than the ledger's now (changed after sent)"
    return text


def file_rows(files: Sequence[Carried], tz: tzinfo) -> list[list[str]]:
    rows = []
    for f in files:
        r = f.receipt
        receipt = "" if r is None else r.status + (f" {when(r.received_at, tz)}" if r.received_at else "")
        errors = "; ".join(f"[{e.code}]{' ' + e.ref if e.ref else ''} {e.text}" for e in (r.errors if r else []))
        if not errors and f.detail and f.state in ("rejected", "invalid", "abandoned"):
            errors = f.detail
        rows.append([f.name, f.kind, when(f.created_at, tz), f.state, "this" if f.current else "earlier",
                     receipt, errors])
    return rows


def member_rows(members: Sequence[Member]) -> list[list[str]]:
    return [[m.id, words(m.type), m.document_no, money(m.amount, m.currency), m.origin or "ERP",
             DELIVERY[m.at_lowell]] for m in members]


def explain_json(found: Explained, tz: tzinfo) -> dict:
    """explain --json: the rules' fields as before, then delivery, match, payments, actions,
    history and the next step."""
    from reskontro.rules.facts import fact_for_people
    ex = found.explanation
    rules: dict = {"decision": None, "rule": None, "reason": None, "detail": None, "warnings": [],
                   "matched": [], "facts": {}}
    if ex is not None:
        o = ex.outcome
        rules = {"decision": o.decision, "rule": o.rule_id, "reason": o.reason, "detail": ex.detail,
                 "warnings": [{"rule": r, "text": t} for r, t in o.warnings],
                 "matched": [r.id for r in ex.matched], "facts": fact_for_people(ex.fact)}
    return {"entry": found.entry_id, "asked": found.asked, **rules, "found_by": found.found_by,
            "ledger": jsonable(found.entry, tz), "delivery": jsonable(found.delivery, tz),
            "match": jsonable(found.match, tz), "payment": jsonable(found.payment, tz),
            "payments": jsonable(found.payments, tz), "actions": jsonable(found.actions, tz),
            "history": jsonable(found.history, tz), "next": found.next_step}


# --- held, excluded ------------------------------------------------------------------------------
def kept_rows(rows: Sequence[KeptEntry], tz: tzinfo) -> list[list[str]]:
    return [[r.entry_id, words(r.type), r.customer_id, r.customer_name, money(r.amount, r.currency),
             r.decision, r.rule_id, r.reason, when(r.held_since, tz)] for r in rows]
