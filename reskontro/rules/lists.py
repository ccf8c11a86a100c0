"""The entries the rules keep back, one by one: held and waiting (`reskontro held`), excluded
(`reskontro excluded`), with customer, amount, rule and reason; filtered by rule or customer
and paged (the web page's lists).

The decisions are the plan's (they always agree with `plan` and with what the next export
does): of the entries not delivered or in flight as they are, a decided transfer the export
cannot write counts as held (`<rule>:not-sendable`). Deciding a big ledger takes seconds, so
they are kept in table ``kept`` and brought up to date before each read (`refresh`): the match
groups of what was marked since (table ``kept_dirty``, written wherever ``pending`` is, which
the export empties as it decides; plus what a hand-dropped file carried), or the whole ledger
the first time and when the rules, the mode or the settled history changed (meta
``kept_basis``). A page is then one indexed query, whatever the ledger's size.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import date, datetime, timezone
from decimal import Decimal

from sqlalchemy import Column, Connection, MetaData, String, Table, delete, func, insert, or_, select, union, update

from reskontro.domain import from_ore
from reskontro.ledger import schema as s
from reskontro.ledger.store import BATCH, Ledger
from reskontro.rules.decide import Decided, decide_ledger, decision_basis
from reskontro.rules.engine import RuleEngine
from reskontro.rules.reports import as_planned, is_unsent

HELD = ("hold", "wait")
EXCLUDED = ("exclude",)
KEPT = HELD + EXCLUDED


@dataclass(frozen=True)
class KeptEntry:
    entry_id: str
    type: str
    customer_id: str
    customer_name: str
    document_no: str
    amount: Decimal
    currency: str
    match_id: str | None
    decision: str             # hold | wait | exclude
    rule_id: str              # the deciding rule (`<rule>:not-sendable`: decided transfer, cannot go)
    reason: str               # the rule's reason, naming the records it is about
    held_since: datetime | None = None   # held: since the cycle that first held it by this rule


@dataclass(frozen=True)
class KeptPage:
    rows: list[KeptEntry]     # this page, by entry id
    total: int                # of the whole list, with the filters given
    offset: int
    limit: int | None         # None: every row
    by_rule: dict[str, int]   # entries per rule, with the customer filter only (the rule filter's choices)

    @property
    def more(self) -> bool:
        return self.offset + len(self.rows) < self.total


def kept_now(decided: Iterator[Decided]) -> Iterator[tuple[str, str, str, str, str]]:
    """(entry id, decision, rule, reason, customer id) of each decided entry kept back, as the
    plan counts it."""
    for d in decided:
        if not is_unsent(d):
            continue                      # delivered or in flight as it is: neither held nor excluded
        o = as_planned(d)
        if o.decision in KEPT:
            yield d.entry["id"], o.decision, o.rule_id, o.reason, d.entry["customer_id"]


def _store(conn: Connection, rows: Iterator[tuple[str, str, str, str, str]]) -> None:
    batch = []
    for eid, decision, rule, reason, cid in rows:
        batch.append({"entry_id": eid, "decision": decision, "rule_id": rule, "reason": reason, "customer_id": cid})
        if len(batch) >= BATCH:
            conn.execute(insert(s.kept), batch)
            batch = []
    if batch:
        conn.execute(insert(s.kept), batch)


def needs_refresh(conn: Connection, engine: RuleEngine, mode: str, today: date | None = None) -> bool:
    """Is table kept behind the ledger (reads only: the lists' readers take no write lock when
    nothing changed)?"""
    if Ledger(conn).get_meta("kept_basis") != decision_basis(engine, mode, today):
        return True
    return conn.execute(select(s.kept_dirty.c.id).limit(1)).first() is not None


def refresh(conn: Connection, engine: RuleEngine, mode: str, today: date | None = None) -> str:
    """Bring table kept up to date (the caller's write transaction): "rebuilt", "updated" or
    "current". `today`: the run's date (a rule reading days_past_due decides anew each day)."""
    # A write first: the transaction holds the write lock before it reads, so two readers of
    # the lists at once refresh one after the other, each on what the other left.
    conn.execute(update(s.meta).where(s.meta.c.key == "kept_basis").values(value=s.meta.c.value))
    ledger = Ledger(conn)
    basis = decision_basis(engine, mode, today)
    if ledger.get_meta("kept_basis") != basis:
        conn.execute(delete(s.kept))
        conn.execute(delete(s.kept_dirty))
        _store(conn, kept_now(decide_ledger(conn, engine, mode, today=today)))
        ledger.set_meta("kept_basis", basis)
        return "rebuilt"
    d = s.kept_dirty
    if conn.execute(select(d.c.id).limit(1)).first() is None:
        return "current"
    # The marks taken now (a mark written meanwhile waits for the next refresh).
    taken = Table("kept_taken", MetaData(), Column("kind", String(8)), Column("id", String(35)),
                  prefixes=["TEMPORARY"])
    taken.create(conn)
    try:
        conn.execute(insert(taken).from_select(["kind", "id"], select(d.c.kind, d.c.id)))
        e = s.entries
        marked = select(taken.c.id).where(taken.c.kind == "entry")
        ids = union(marked,
                    select(e.c.id).where(e.c.match_id.in_(select(taken.c.id).where(taken.c.kind == "match"))),
                    select(e.c.id).where(e.c.reverses.in_(marked)),          # what reverses them, and
                    select(e.c.reverses).where(e.c.id.in_(marked), e.c.reverses.is_not(None)))   # what they reverse
        affected = Table("kept_affected", MetaData(), Column("id", String(35), primary_key=True),
                         prefixes=["TEMPORARY"])
        affected.create(conn)
        try:
            conn.execute(insert(affected).from_select(["id"], ids))
            # decide_ledger takes the whole match groups of these: their rows go, and come back
            groups = select(e.c.id).where(e.c.match_id.in_(
                select(e.c.match_id).where(e.c.id.in_(select(affected.c.id)), e.c.match_id.is_not(None))))
            conn.execute(delete(s.kept).where(or_(s.kept.c.entry_id.in_(select(affected.c.id)),
                                                  s.kept.c.entry_id.in_(groups))))
            _store(conn, kept_now(decide_ledger(conn, engine, mode, entry_ids=select(affected.c.id), today=today)))
        finally:
            affected.drop(conn)
        conn.execute(delete(d).where(select(taken.c.id).where(taken.c.kind == d.c.kind, taken.c.id == d.c.id)
                                     .exists()))
    finally:
        taken.drop(conn)
    return "updated"


def rule_filter(wanted: str):
    """`--rule invoice` takes `invoice:not-sendable` too."""
    return s.kept.c.rule_id.in_([wanted, f"{wanted}:not-sendable"])


def kept_back(conn: Connection, decisions: tuple[str, ...], *, rule: str | None = None,
              customer: str | None = None, offset: int = 0, limit: int | None = 50) -> KeptPage:
    """One page of the entries kept back with one of `decisions`, by entry id, from table kept
    (`refresh` first); `limit` None: all of them."""
    if offset < 0 or (limit is not None and limit < 0):
        raise ValueError("offset and limit are never negative")
    k, e, c = s.kept, s.entries, s.customers
    where = [k.c.decision.in_(decisions)]
    if customer is not None:
        where.append(k.c.customer_id == customer)
    by_rule = dict(conn.execute(select(k.c.rule_id, func.count()).where(*where).group_by(k.c.rule_id)
                                .order_by(k.c.rule_id)).all())
    if rule is not None:
        where.append(rule_filter(rule))
    total = conn.execute(select(func.count()).select_from(k).where(*where)).scalar_one()
    q = (select(k, e.c.type, e.c.document_no, e.c.amount_ore, e.c.currency, e.c.match_id, c.c.name)
         .join(e, e.c.id == k.c.entry_id).join(c, c.c.id == k.c.customer_id)
         .where(*where).order_by(k.c.entry_id).offset(offset))
    if limit is not None:
        q = q.limit(limit)
    rows = [KeptEntry(r.entry_id, r.type, r.customer_id, r.name, r.document_no, from_ore(r.amount_ore), r.currency,
                      r.match_id, r.decision, r.rule_id, r.reason) for r in conn.execute(q)]
    return KeptPage(_with_since(conn, rows), total, offset, limit, by_rule)


def _with_since(conn: Connection, rows: list[KeptEntry]) -> list[KeptEntry]:
    """Since when each held row is held by its rule, as the nightly cycle recorded it."""
    held = [r.entry_id for r in rows if r.decision == "hold"]
    if not held:
        return rows
    h = s.held_items
    since = {}
    for i in range(0, len(held), BATCH):
        since.update({i_: (rule, t) for i_, rule, t in conn.execute(
            select(h.c.entry_id, h.c.rule_id, h.c.since).where(h.c.entry_id.in_(held[i:i + BATCH])))})
    out = []
    for r in rows:
        rule, t = since.get(r.entry_id, (None, None))
        if rule == r.rule_id and t is not None:
            r = replace(r, held_since=t if t.tzinfo else t.replace(tzinfo=timezone.utc))
        out.append(r)
    return out
