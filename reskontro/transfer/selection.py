"""Step 1 of the export: choosing what tonight's file carries, one decided match group at a
time, into a `Batch` (the journal, or a decide process's answer), and noting what needs no
decision until the ledger changes (it leaves pending).

The rules decide; this only applies the receiver's contract to their decisions: an entry
goes once (never a second version: the rules hold a changed one), a customer travels with its
first entry, a match goes with two or more members it may grow but never shrink.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from itertools import groupby

from sqlalchemy import Column, Connection, MetaData, String, Table, and_, delete, insert, select

from reskontro.ledger import schema as s
from reskontro.ledger.store import BATCH, Ledger, digest
from reskontro.rules.decide import Decided, goes_tonight, settled_groups
from reskontro.rules.engine import RuleEngine
from reskontro.rules.facts import DEFAULT_FACT, customer_checks

FLUSH = 5000


class Batch:
    """Items chosen for the file (kind, id, version, members), handed to `sink` in chunks
    (memory flat): the journal, or the answer of a decide process."""

    def __init__(self, sink: Callable[[list[tuple[str, str, str, str | None]]], None]):
        self.sink = sink
        self.rows: list[tuple[str, str, str, str | None]] = []
        self.customers: set[str] = set()
        self.counts = {"customer": 0, "entry": 0, "match": 0}
        self.held = 0            # entries the rules hold, of those decided tonight (new or changed)

    def add(self, kind: str, id_: str, version: str, members: str | None = None) -> None:
        self.rows.append((kind, id_, version, members))
        self.counts[kind] += 1
        if len(self.rows) >= FLUSH:
            self.flush()

    def flush(self) -> None:
        self.sink(self.rows)
        self.rows = []


def select_group(batch: Batch, group: list[Decided], backlog: bool, handled: list[tuple[str, str]]) -> None:
    """Choose what of one match group (or one unmatched entry) goes tonight; note in `handled`
    what needs no decision until it changes (what stays pending is decided again tomorrow)."""
    mid = group[0].entry["match_id"]
    batch.held += sum(1 for d in group if d.outcome.decision == "hold")
    sendable = [d for d in group if d.outcome.decision == "transfer" and d.entry["type"] != "reversal"]
    # What the rules keep back leaves pending: only a ledger change (which marks it pending
    # again) or another rule file or mode (which re-decides the whole ledger) can change that.
    if len(sendable) < len(group):
        keep = {id(d) for d in sendable}
        handled.extend(("entry", d.entry["id"]) for d in group if id(d) not in keep)
    if not sendable:
        if mid:
            handled.append(("match", mid))
        return
    for d in sendable:
        e = d.entry
        if e["sent_version"] == e["version"]:
            handled.append(("entry", e["id"]))         # delivered or in flight already
            continue
        if not goes_tonight(d):
            continue                                   # changed after sent: the rules hold it
        batch.add("entry", e["id"], e["version"])
        cid = e["customer_id"]
        if cid not in batch.customers and e["sent_c_version"] != e["c_version"] and e["sent_c_state"] != "in_flight":
            batch.customers.add(cid)
            batch.add("customer", cid, e["c_version"])
    if mid is None:
        return
    members = sorted(d.entry["id"] for d in sendable)
    sent = group[0].entry["sent_members"]
    sent_set = set(sent.split()) if sent else set()
    if len(members) < 2 or not any(d.entry["type"] == "invoice" for d in sendable) or sent_set == set(members):
        handled.append(("match", mid))                 # nothing (more) to send for this match
    elif group[0].entry["sent_match_state"] == "in_flight":
        return                                         # grows once the receipt of its last version is read
    elif sent_set <= set(members):
        batch.add("match", mid, digest(*members), " ".join(members))
    else:
        handled.append(("match", mid))                 # lost a member: the rules hold it


def select_all(decided: Iterator[Decided], batch: Batch, backlog: bool, handled: list[tuple[str, str]],
               flush: Callable[[], None], progress: Callable[[str, int], None] | None = None,
               n: int = 0) -> int:
    """select_group for each group of `decided`; `flush` empties `handled` when it is big."""
    for _key, group in groupby(decided, key=lambda d: d.entry["match_id"] or ("\0" + d.entry["id"])):
        group = list(group)
        select_group(batch, group, backlog, handled)
        n += len(group)
        if progress and n % 20000 < len(group):
            progress("decided", n)
        if len(handled) >= FLUSH:
            flush()
    return n


def take_in(batch: Batch, handled: list[tuple[str, str]], records, flush: Callable[[], None],
            decisions: Callable[[list, list], None] | None = None) -> None:
    """What the decide process chose, added as if chosen here: its chunks go to the journal
    as they are, but a customer goes once (both processes may have chosen it). Its decision
    changes go to `decisions` (rules.history)."""
    seen = batch.customers
    batch.flush()
    for what, rows in records:
        if what == "decisions":
            if decisions is not None:
                decisions(*rows)
            continue
        if what == "held":
            batch.held += rows
            continue
        if what == "handled":
            handled.extend(rows)
            if len(handled) >= FLUSH:
                flush()
            continue
        take = []
        for row in rows:
            if row[0] == "customer":
                if row[1] in seen:
                    continue
                seen.add(row[1])
            take.append(row)
            batch.counts[row[0]] += 1
        batch.sink(take)


def _customer_held(engine: RuleEngine, mode: str, row) -> bool:
    """Would the rules hold an invoice of this customer for its data? Then its update waits
    too (it would fail the receiver's checks); the rules decide, not a list kept here."""
    checks = customer_checks(row._mapping)
    fact = dict(DEFAULT_FACT, mode=mode, customer_type=checks.customer_type,
                customer_address_complete=checks.customer_address_complete,
                customer_org_no=checks.customer_org_no, customer_company_name=checks.customer_company_name,
                customer_id=row.id, tags=checks.tags)
    return engine.decide(fact).decision == "hold"


def changed_customers(conn: Connection, batch: Batch, engine: RuleEngine, mode: str) -> None:
    """Customers changed after delivery with no new entry of theirs tonight: send the update."""
    c, p, st = s.customers, s.pending, s.sent
    # Driven from pending (by now only changes of customers Lowell has), in two steps: in one
    # join SQLite's planner, without statistics, walks every customer Lowell has instead.
    ids = conn.execute(select(p.c.id).where(p.c.kind == "customer")).scalars().all()
    for i in range(0, len(ids), BATCH):
        rows = conn.execute(
            select(c).join(st, and_(st.c.kind == "customer", st.c.id == c.c.id))
            .where(c.c.id.in_(ids[i:i + BATCH]), st.c.state == "delivered", st.c.version != c.c.version)
            .order_by(c.c.id)).all()
        for row in rows:
            cid, version = row.id, row.version
            if cid not in batch.customers and not _customer_held(engine, mode, row):
                batch.customers.add(cid)
                batch.add("customer", cid, version)


def clear_handled(conn: Connection, handled: list[tuple[str, str]]) -> None:
    """Items already delivered or in flight (or settled before the start) need no decision."""
    ledger = Ledger(conn)
    for k in ("entry", "match"):
        ledger.clear_pending(k, [i for kk, i in handled if kk == k])
    handled.clear()


def record_settled_history(conn: Connection):
    """The backlog: groups settled before the service started are history (rule
    settled-before-service), recorded, not decided, and they leave pending. Found once (a
    GROUP BY over the ledger) into a temporary table, then used in SQL only: a million ids
    never pass through Python. Returns the table (drop it when done)."""
    settled = Table("settled_groups_tmp", MetaData(), Column("match_id", String(35), primary_key=True),
                    prefixes=["TEMPORARY"])
    settled.create(conn)
    conn.execute(insert(settled).from_select(["match_id"], settled_groups()))
    ids = select(settled.c.match_id)
    conn.execute(delete(s.settled_history).where(s.settled_history.c.match_id.in_(ids)))
    conn.execute(insert(s.settled_history).from_select(["match_id"], ids))
    conn.execute(delete(s.pending).where(s.pending.c.kind == "match", s.pending.c.id.in_(ids)))
    conn.execute(delete(s.pending).where(s.pending.c.kind == "entry", s.pending.c.id.in_(
        select(s.entries.c.id).where(s.entries.c.match_id.in_(ids)))))
    # history now decides those groups: the lists of kept-back entries are built again when read
    conn.execute(delete(s.meta).where(s.meta.c.key == "kept_basis"))
    return settled
