"""`explain ID`: everything support needs about one entry (or bank payment), put together from
the stages: the rules' decision (rules.reports.explain_entry), where it went (transfer.delivery),
its match with the members and every file that carried it, the bank payments booked on it and
what people did by hand (ledger.actions), a history of all that in time order, and what to do
next, in one line. Reads only.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from decimal import Decimal

from sqlalchemy import Connection, func, select

from reskontro.domain import from_ore
from reskontro.ledger import schema as s
from reskontro.ledger.actions import Action, about
from reskontro.payments.listing import PaymentRow
from reskontro.rules.engine import Outcome, RuleEngine
from reskontro.rules.reports import explain_entry
from reskontro.support.resolve import resolve
from reskontro.transfer.delivery import Delivery, entry_delivery, match_delivery


@dataclass(frozen=True)
class EntryInfo:
    """The entry as the ledger has it now."""
    id: str
    type: str
    customer_id: str
    customer_name: str
    document_no: str
    document_date: date
    due_date: date | None
    amount: Decimal
    currency: str
    kid: str | None
    status: str | None
    text: str | None
    match_id: str | None
    origin: str | None        # None: the ERP's; bank: booked here from a bank file; correction: correct-payment


@dataclass(frozen=True)
class Member:
    id: str
    type: str
    document_no: str
    amount: Decimal
    currency: str
    origin: str | None
    at_lowell: str            # never_sent | in_flight | delivered (some version of it)


@dataclass(frozen=True)
class MatchInfo:
    id: str
    members: list[Member]
    open: Decimal             # the sum of the members' amounts: 0.00 is closed
    currency: str
    delivery: Delivery        # every file that carried the match, with the members it had
    lost: tuple[str, ...]     # members Lowell has that the ledger's match no longer holds

    @property
    def closed(self) -> bool:
        return self.open == 0


@dataclass(frozen=True)
class Event:
    at: datetime | None       # None: no time kept (a receipt read before receipts were kept)
    what: str


@dataclass(frozen=True)
class Explained:
    """One identifier explained. An entry: `explanation` (the rules), `entry`, `delivery`,
    `match`; a bank payment that is not booked: `payment` only (entry_id None)."""
    entry_id: str | None      # the ledger's id (None: a bank payment not booked in the ledger)
    asked: str                # the identifier asked for
    explanation: object | None    # rules.engine.Explanation (None: no ledger entry)
    found_by: str = "id"      # id | erp_id | payment | document_no | kid
    entry: EntryInfo | None = None
    delivery: Delivery | None = None
    match: MatchInfo | None = None
    payment: PaymentRow | None = None        # the bank payment that is this entry (or was asked for)
    payments: list[PaymentRow] = field(default_factory=list)   # bank payments booked on this invoice
    actions: list[Action] = field(default_factory=list)        # by hand, on it or its payments
    history: list[Event] = field(default_factory=list)         # files, receipts, payments, actions in time order
    next_step: str = ""       # what to do next, one line
    decisions: list | None = None   # rules.history.Change each, oldest first (when asked for)

    @property
    def alias(self) -> bool:
        """Asked by the ERP's id of an entry this service booked."""
        return self.found_by == "erp_id"


def explain(conn: Connection, engine: RuleEngine, mode: str, ident: str,
            today: date | None = None) -> Explained | None:
    """Everything about what `ident` names (None: nothing; resolve.AmbiguousId when it names
    several entries alike)."""
    found = resolve(conn, ident)
    if found is None:
        return None
    payment = _payment_rows(conn, [found.payment_id])[0] if found.payment_id else None
    if found.entry_id is None:
        actions = about(conn, [payment.id])
        return Explained(None, ident, None, found.found_by, payment=payment, actions=actions,
                         history=_history(None, None, [payment], actions, conn),
                         next_step=_payment_step(payment))
    eid = found.entry_id
    ex = explain_entry(conn, engine, mode, eid, today=today)
    if ex is None:         # (an entry whose customer is missing: nothing the rules can say)
        return None
    entry = _entry(conn, eid)
    delivery = entry_delivery(conn, eid)
    match = _match(conn, entry.match_id) if entry.match_id else None
    booked = [] if entry.type != "invoice" else _payment_rows(conn, list(conn.execute(
        select(s.bank_payments.c.id).where(s.bank_payments.c.invoice_id == eid)
        .order_by(s.bank_payments.c.id)).scalars()))
    actions = about(conn, [eid] + [p.id for p in booked] + ([payment.id] if payment else []))
    history = _history(delivery, match, booked + ([payment] if payment else []), actions, conn)
    return Explained(eid, ident, ex, found.found_by, entry, delivery, match, payment, booked, actions, history,
                     next_step(ex.outcome, delivery, payment))


def _entry(conn: Connection, eid: str) -> EntryInfo:
    e, c = s.entries, s.customers
    r = conn.execute(select(e, c.c.name.label("customer_name")).join(c, c.c.id == e.c.customer_id)
                     .where(e.c.id == eid)).first()
    return EntryInfo(r.id, r.type, r.customer_id, r.customer_name, r.document_no, r.document_date, r.due_date,
                     from_ore(r.amount_ore), r.currency, r.kid, r.status, r.text, r.match_id, r.origin)


def _match(conn: Connection, mid: str) -> MatchInfo:
    e, st = s.entries, s.sent
    rows = conn.execute(select(e.c.id, e.c.type, e.c.document_no, e.c.amount_ore, e.c.currency, e.c.origin,
                               st.c.state).outerjoin(st, (st.c.kind == "entry") & (st.c.id == e.c.id))
                        .where(e.c.match_id == mid).order_by(e.c.id)).all()
    members = [Member(r.id, r.type, r.document_no, from_ore(r.amount_ore), r.currency, r.origin,
                      "never_sent" if r.state is None else ("delivered" if r.state == "delivered" else "in_flight"))
               for r in rows]
    delivery = match_delivery(conn, mid)
    sent = conn.execute(select(st.c.members).where(st.c.kind == "match", st.c.id == mid)).scalar()
    lost = tuple(sorted(set(sent.split()) - {m.id for m in members})) if sent else ()
    total = conn.execute(select(func.sum(e.c.amount_ore)).where(e.c.match_id == mid)).scalar() or 0
    currency = next((m.currency for m in members if m.type == "invoice"), members[0].currency if members else "")
    return MatchInfo(mid, members, from_ore(total), currency, delivery, lost)


def _payment_rows(conn: Connection, ids: list[str]) -> list[PaymentRow]:
    if not ids:
        return []
    b = s.bank_payments
    entry = select(s.entries.c.id).where(s.entries.c.bank_ref == b.c.archive_ref).limit(1).scalar_subquery()
    rows = {r.id: r for r in conn.execute(select(b, entry.label("entry_id")).where(b.c.id.in_(ids)))}
    return [PaymentRow(r.id, r.archive_ref, r.source, r.format, r.booking_date or r.payment_date, r.payer_name,
                       from_ore(r.amount_ore), r.currency, r.kid, r.invoice_no, r.invoice_id, r.status, r.note,
                       r.entry_id) for r in (rows[i] for i in ids if i in rows)]


def _history(delivery: Delivery | None, match: MatchInfo | None, payments: list[PaymentRow],
             actions: list[Action], conn: Connection) -> list[Event]:
    far = datetime.max.replace(tzinfo=timezone.utc)
    events: list[tuple[datetime, Event]] = []       # (when it sorts, the event)

    def add(at: datetime | None, what: str, after: datetime | None = None) -> None:
        # a receipt never goes before its file, whatever the receiver's clock says
        events.append((max(at or far, after or at or far), Event(at, what)))

    for f in delivery.files if delivery else []:
        version = "this version" if f.current else "an earlier version"
        add(f.created_at, f"{f.name} ({f.kind}) carried {version}; the file is {f.state}"
            + (f": {f.detail}" if f.detail and f.state in ("invalid", "abandoned") else ""))
        if f.receipt is not None:
            mine = [e for e in f.receipt.errors if e.about_this]
            errors = "; ".join(f"[{e.code}] {e.text}" for e in mine)
            add(f.receipt.received_at, f"receipt for {f.name}: {f.receipt.status}" + (f" ({errors})" if errors else ""),
                after=f.created_at)
    for f in match.delivery.files if match else []:
        add(f.created_at, f"{f.name} carried match {match.id}: {' '.join(f.members)} ({f.state})")
    listed = _listed_at(conn, [p.id for p in payments])
    for p in payments:
        add(listed.get(p.id), f"bank payment {p.id} ({p.amount} {p.currency}, {p.archive_ref}) listed; now "
                              f"{p.status}" + (f": {p.note}" if p.note else ""))
    for a in actions:
        add(a.at, f"{a.action} by {a.who}" + (f" ({a.reason})" if a.reason else "") + (f": {a.detail}" if a.detail else ""))
    # in time order (stable: what has no time goes last, in the order found)
    return [ev for _, ev in sorted(events, key=lambda x: x[0])]


def _listed_at(conn: Connection, ids: list[str]) -> dict[str, datetime]:
    """When each bank payment's file was read (the inbox)."""
    if not ids:
        return {}
    b, f = s.bank_payments, s.inbox_files
    out = {}
    for pid, t in conn.execute(select(b.c.id, f.c.processed_at).join(f, f.c.sha256 == b.c.file_sha256)
                               .where(b.c.id.in_(ids))):
        out[pid] = t if t.tzinfo else t.replace(tzinfo=timezone.utc)
    return out


# --- what to do next --------------------------------------------------------------------------

def _payment_step(p: PaymentRow) -> str:
    if p.status == "unmatched":
        return (f"A person decides: match it by hand (`reskontro match-payment {p.id} --to INVOICE`) or, if "
                f"the money went back, take it off the list (`reskontro dismiss-payment {p.id} --reason TEXT`)")
    if p.status == "unposted":
        return (f"Nothing yet: the next `reskontro post` (the nightly run) books it if its KID names an open "
                f"invoice; else match it by hand (`reskontro match-payment {p.id} --to INVOICE`)")
    if p.status == "dismissed":
        return f"Nothing: it is off the list ({p.note})"
    if p.status == "booked_in_erp":
        return f"Nothing here: {p.note}; the ERP's entry goes to Lowell like any other"
    return f"Nothing: booked on invoice {p.invoice_id} ({p.note})"


def next_step(outcome: Outcome, delivery: Delivery, payment: PaymentRow | None = None) -> str:
    """What to do next about an entry, in one line: its decision and where it is. A hold comes
    first, even for an entry Lowell has (a match that lost a member, an invoice marked in-house
    after it was sent: the reason says what to do)."""
    last = delivery.last
    rule, reason = outcome.rule_id, outcome.reason
    if outcome.decision == "hold":
        return f"A person must act (rule {rule}): {reason}"
    if delivery.state != "never_sent" and not delivery.changed:
        f = next((x for x in delivery.files if x.file_id == delivery.file_id), last)
        if delivery.state == "delivered":
            return f"Nothing: Lowell has it ({f.name}, accepted)"
        if f.state == "written":
            return (f"Nothing: it is in {f.name} in outbox/, which the next `reskontro send` (the nightly run) "
                    "uploads")
        return (f"Nothing: Lowell has {f.name}; its receipt is read by the next `reskontro fetch` and "
                "`reskontro receipts` (the nightly run)")
    if outcome.decision == "wait":
        return f"Nothing now: it waits (rule {rule}): {reason}"
    if outcome.decision == "exclude":
        return f"Nothing: it is never sent (rule {rule}): {reason}"
    if delivery.changed:     # decided transfer, but Lowell has another version: it cannot go
        return ("A person must act: Lowell has another version of it and never accepts a changed one; restore "
                "it as sent and book the difference as a new entry (keep a changed-after-sent rule in the rules)")
    if last is not None and last.state == "rejected":
        errors = [e for e in (last.receipt.errors if last.receipt else []) if e.about_this]
        why = "; ".join(f"[{e.code}] {e.text}" for e in errors) or last.detail or "no reason given"
        return (f"Nothing, unless the receiver's reason is about it: {last.name} was rejected ({why}); it goes again "
                "in the next file (the nightly run, or `reskontro export`)")
    if payment is not None and payment.status != "matched":
        return _payment_step(payment)
    return "Nothing: it goes in the next file (the nightly run, or `reskontro export` now)"
