"""A decision for every ledger entry: facts from the store, one match group at a time.

Groups stream from the database (memory flat in ledger size). Within a group the invoices are
decided first, so that the other members can read their invoices' decision
(``invoice_decision``).
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime
from itertools import groupby
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, and_, exists, func, select

from reskontro.ledger import schema as s
from reskontro.ledger.store import digest
from reskontro.rules.engine import Outcome, RuleEngine
from reskontro.rules.facts import DATED_FIELDS, CustomerChecks, entry_fact, joined_customer_checks, match_shape

_RANK = {"transfer": 4, "hold": 3, "wait": 2, "exclude": 1}
_ENTRY_COLS = ("id", "customer_id", "type", "status", "factoring", "opt_out", "amount_ore", "currency",
               "dunning_level", "kid_check", "match_id", "version", "document_no", "left_match",
               "reverses", "bank_ref_conflict", "document_date", "due_date", "source", "decision")
_SELECTION_ONLY = ("document_no", "decision")
_CUSTOMER_COLS = ("id", "name", "type", "org_no", "line1", "post_code", "city", "country",
                  "factoring_default", "version", "tags")
# Customer checks kept (a few µs each to redo): entries of one customer mostly come together;
# 5,000 decides a 1,000,000-entry ledger as fast as 50,000 did, with ~20 MiB less.
_CHECKS_LIMIT = 5_000


def run_day(tz: ZoneInfo | str = "Europe/Oslo", when: datetime | None = None) -> date:
    """The run's date in the configured time zone (days_past_due counts from it)."""
    tz = ZoneInfo(tz) if isinstance(tz, str) else tz
    return (when or datetime.now(tz)).astimezone(tz).date()


@dataclass(frozen=True, slots=True)
class Decided:
    entry: Mapping          # the entries row (schema column names; the columns of _query)
    fact: dict
    outcome: Outcome

    @property
    def customer(self) -> Mapping:
        """The customers row (c_* columns of the joined row, under their own names)."""
        return _Prefixed(self.entry)


# Part of the decision basis: a store from before the decision history decides whole once,
# so that the history starts from every entry's decision.
_BASIS_VERSION = "history-1"


def decision_basis(engine: RuleEngine, mode: str, today: date | None = None) -> str:
    """What every decision rests on: the rules as loaded and the mode, and the run's date when
    a rule reads it (days_past_due: then every night decides the whole ledger). The export keeps
    it in the store (meta `decision_basis`); another basis decides the whole ledger once."""
    rf = engine.rule_file   # the rules as loaded (not the file, which may have changed since)
    dated = (today or run_day()).isoformat() if any(f in engine.fields for f in DATED_FIELDS) else ""
    return digest(repr(rf.rules), rf.default_decision, mode, _BASIS_VERSION, dated)


def goes_tonight(d: Decided) -> bool:
    """The export writes this entry tonight: decided transfer, a type the receiver knows, and
    Lowell has no version of it. Plan, status and export all ask this one question."""
    e = d.entry
    return d.outcome.decision == "transfer" and e["type"] != "reversal" and e["sent_version"] is None


def settled_groups():
    """Matches whose amounts add up to 0.00 and of which Lowell has nothing: settled in the
    ledger before the service started."""
    e, st = s.entries, s.sent
    return (select(e.c.match_id)
            .outerjoin(st, and_(st.c.kind == "entry", st.c.id == e.c.id))
            .where(e.c.match_id.is_not(None)).group_by(e.c.match_id)
            .having(and_(func.sum(e.c.amount_ore) == 0, func.count(st.c.id) == 0)))


def _query(only_pending: bool, matched: bool, entry_ids: list[str] | None = None,
           skip_matches=None, facts_only: bool = False):
    e, c = s.entries, s.customers
    rev = s.entries.alias("rev")
    sent_rev = s.sent.alias("sent_rev")
    sent_e = s.sent.alias("sent_e")
    sent_m = s.sent.alias("sent_m")
    sent_c = s.sent.alias("sent_c")
    by = s.entries.alias("by")
    po = s.entries.alias("po")
    hist = s.settled_history
    # the payout that corrects a reversed payment: booked into the reversed payment's match,
    # paying out what it had settled (any other payout there corrects something else)
    payout = (select(func.min(po.c.id)).where(po.c.match_id == rev.c.match_id, po.c.type == "payout",
                                              po.c.amount_ore == -rev.c.amount_ore)
              .correlate(rev).scalar_subquery())
    # Only what the rules and the export read: every column costs a conversion per row (facts
    # only: what the facts, the reasons and `rules diff` read, not what the export selects by).
    cols = [*(e.c[k] for k in _ENTRY_COLS if not (facts_only and k in _SELECTION_ONLY)),
            *(c.c[k].label(f"c_{k}") for k in _CUSTOMER_COLS),
            rev.c.type.label("rev_type"), sent_rev.c.version.label("rev_sent"),
            sent_e.c.version.label("sent_version"), sent_e.c.state.label("sent_state"),
            sent_m.c.members.label("sent_members"),
            *(() if facts_only else (sent_m.c.state.label("sent_match_state"), sent_c.c.version.label("sent_c_version"),
                                     sent_c.c.state.label("sent_c_state"))),
            exists().where(by.c.reverses == e.c.id, by.c.type == "reversal").label("reversed"),
            payout.label("correcting_payout"), hist.c.match_id.label("settled_hist")]
    q = (select(*cols)
         .join(c, c.c.id == e.c.customer_id)
         .outerjoin(rev, rev.c.id == e.c.reverses)
         .outerjoin(sent_rev, and_(sent_rev.c.kind == "entry", sent_rev.c.id == e.c.reverses))
         .outerjoin(sent_e, and_(sent_e.c.kind == "entry", sent_e.c.id == e.c.id))
         .outerjoin(sent_m, and_(sent_m.c.kind == "match", sent_m.c.id == e.c.match_id))
         .outerjoin(hist, hist.c.match_id == e.c.match_id))
    if not facts_only:     # the customer's sent state: what the export's selection reads
        q = q.outerjoin(sent_c, and_(sent_c.c.kind == "customer", sent_c.c.id == e.c.customer_id))
    pend = select(s.pending.c.id).where(s.pending.c.kind == "entry")
    if entry_ids is not None:
        ids_q = entry_ids
        if matched:
            groups = select(e.c.match_id).where(e.c.id.in_(ids_q), e.c.match_id.is_not(None))
            return q.where(e.c.match_id.in_(groups)).order_by(e.c.match_id, e.c.id)
        return q.where(e.c.id.in_(ids_q), e.c.match_id.is_(None)).order_by(e.c.id)
    if matched:
        q = q.where(e.c.match_id.is_not(None))
        if skip_matches is not None:
            q = q.where(e.c.match_id.not_in(skip_matches))
        if only_pending:
            touched = (select(e.c.match_id).where(e.c.id.in_(pend), e.c.match_id.is_not(None))
                       .union(select(s.pending.c.id).where(s.pending.c.kind == "match")))
            q = q.where(e.c.match_id.in_(touched))
        # facts only: a group's members in any order (its invoices are decided first anyway)
        return q.order_by(e.c.match_id) if facts_only else q.order_by(e.c.match_id, e.c.id)
    q = q.where(e.c.match_id.is_(None))
    if only_pending:
        # Driven from pending (a join, not IN): the night's cost follows the day's changes,
        # not the number of unmatched entries in the ledger.
        p = s.pending.alias("p")
        q = q.join(p, and_(p.c.kind == "entry", p.c.id == e.c.id))
    # facts only: each its own group, in any order (no sort)
    return q if facts_only else q.order_by(e.c.id)


class _Decider:
    def __init__(self, conn: Connection, engine: RuleEngine, mode: str, backlog: bool = False,
                 today: date | None = None):
        self.conn, self.engine, self.mode = conn, engine, mode
        # a backlog (or its preview) treats every settled group as history
        self.backlog = backlog
        self.today = (today or run_day()).toordinal()
        self._checks: dict[tuple[str, str], CustomerChecks] = {}

    def checks(self, m: Mapping) -> CustomerChecks:
        key = (m["c_id"], m["c_version"])
        ch = self._checks.get(key)
        if ch is None:
            if len(self._checks) >= _CHECKS_LIMIT:
                self._checks.clear()
            ch = self._checks[key] = joined_customer_checks(m)
        return ch

    def fact(self, m: Mapping, shape: str = "none", invoice_decision: str = "none",
             lost: bool = False, split: bool = False, settled: bool = False) -> dict:
        sent = m["sent_version"]
        return entry_fact(m, self.checks(m), self.mode, shape=shape,
                          invoice_decision=invoice_decision,
                          reverses_type=m["rev_type"] or "none",
                          reverses_sent=m["rev_sent"] is not None,
                          reverses_corrected=m["correcting_payout"] is not None,
                          reversed_=bool(m["reversed"]), sent=sent is not None,
                          changed_after_sent=sent is not None and sent != m["version"],
                          match_lost_member=lost or m["left_match"] is not None,
                          split_with_excluded=split, settled_before_service=settled,
                          bank_ref_conflict=m["bank_ref_conflict"] is not None, today=self.today)

    def decide(self, m: Mapping, f: dict, engine: RuleEngine | None = None) -> Decided:
        out = (engine or self.engine).decide(f)
        if "{" in out.reason:
            out = _filled(out, m)
        return Decided(m, f, out)

    def group(self, rows: list[Mapping], lost: bool) -> Iterator[Decided]:
        shape = match_shape(r["type"] for r in rows)
        # history: settled when the backlog went (or, previewing a backlog, now), still settled,
        # and Lowell has none of it (a group that reopened and went is Lowell's from then on)
        settled = ((bool(rows[0]["settled_hist"]) or self.backlog) and sum(r["amount_ore"] for r in rows) == 0
                   and all(r["sent_version"] is None for r in rows))
        invoices = [self.decide(r, self.fact(r, shape, "none", lost, settled=settled))
                    for r in rows if r["type"] == "invoice"]
        yield from invoices
        decisions = {d.outcome.decision for d in invoices}
        best = max(decisions, key=_RANK.__getitem__) if decisions else "none"
        # one counterpart of invoices that part go to Lowell, part are excluded (factoring)
        split = "exclude" in decisions and best != "exclude"
        for r in rows:
            if r["type"] != "invoice":
                yield self.decide(r, self.fact(r, shape, best, lost, split, settled))


    def outcomes(self, m: Mapping, f: dict, engines: Sequence[RuleEngine]) -> list[Outcome]:
        out = [e.decide(f) for e in engines]
        return [_filled(o, m) if "{" in o.reason else o for o in out]

    def groups_with(self, rows: list[Mapping], lost: bool,
                    engines: Sequence[RuleEngine]) -> Iterator[tuple[Mapping, list[Outcome]]]:
        """`group`, asking several engines about the same facts: (row, an outcome per engine)
        for each entry. An invoice's fact is the same for all; another member's differs only
        in what its invoices were decided (invoice_decision, split_with_excluded), per engine."""
        shape = match_shape(r["type"] for r in rows)
        settled = ((bool(rows[0]["settled_hist"]) or self.backlog) and sum(r["amount_ore"] for r in rows) == 0
                   and all(r["sent_version"] is None for r in rows))
        per_engine: list[list[str]] = [[] for _ in engines]
        others = []
        for r in rows:
            if r["type"] == "invoice":
                outs = self.outcomes(r, self.fact(r, shape, "none", lost, settled=settled), engines)
                for decisions, o in zip(per_engine, outs):
                    decisions.append(o.decision)
                yield r, outs
            else:
                others.append(r)
        if not others:
            return
        views = []
        for decisions in per_engine:
            best = max(decisions, key=_RANK.__getitem__) if decisions else "none"
            views.append((best, "exclude" in decisions and best != "exclude"))
        first = views[0]
        same = all(v == first for v in views)
        for r in others:
            f = self.fact(r, shape, first[0], lost, first[1], settled)
            if same:
                yield r, self.outcomes(r, f, engines)
            else:
                yield r, [self.outcomes(r, f if v == first else dict(f, invoice_decision=v[0], split_with_excluded=v[1]),
                                        (e,))[0] for e, v in zip(engines, views)]


def _filled(out: Outcome, m: Mapping) -> Outcome:
    """A reason may name the records it is about: {id}, {reverses}, {correcting_payout}, {match_id}."""
    values = {k: m[k] or "" for k in ("id", "reverses", "correcting_payout", "match_id")}
    try:
        return replace(out, reason=out.reason.format_map(values))
    except (KeyError, ValueError, IndexError):    # braces that name nothing: leave the text
        return out


class _Prefixed(Mapping):
    """The customer columns (c_*) of a joined row, seen under their own names."""
    __slots__ = ("_m",)

    def __init__(self, m: Mapping):
        self._m = m

    def __getitem__(self, key):
        return self._m["c_" + key]

    def __iter__(self):
        return (k[2:] for k in self._m if k.startswith("c_"))

    def __len__(self):
        return sum(1 for _ in self)


def _compiled(conn: Connection, query) -> tuple[str, dict | tuple]:
    compiled = query.compile(dialect=conn.dialect, compile_kwargs={"render_postcompile": True})
    params = compiled.params
    if compiled.positional:
        params = tuple(params[k] for k in compiled.positiontup)
    return str(compiled), params


# The night's decide queries as compiled, per dialect: the same text for every store (a fleet
# creditor's tables are found by its search_path), and building and compiling them cost ~5 ms
# each, twice a night. Each engine's own statement cache starts empty with the engine.
_NIGHT_SQL: dict[tuple, tuple[str, dict | tuple]] = {}


def fetch_raw(conn: Connection, query, chunk: int, key: tuple | None = None):
    """Run `query` without SQLAlchemy's per-value result conversion (it more than halves the
    rows per second; the decision reads only strings, integers and truth values). With `key`,
    `query` is a function building a query whose text and values depend on `key` alone: it is
    built and compiled once per process and dialect."""
    if key is None:
        sql, params = _compiled(conn, query)
    else:
        d = conn.dialect
        k = (key, type(d), d.paramstyle, d.server_version_info)
        hit = _NIGHT_SQL.get(k)
        if hit is None:
            hit = _NIGHT_SQL[k] = _compiled(conn, query())
        sql, params = hit
    # Per statement: Connection.execution_options() would change the connection itself, and
    # on PostgreSQL every later statement would then go through a server-side cursor.
    return conn.exec_driver_sql(sql, params, execution_options={"yield_per": chunk})


def decide_ledger(conn: Connection, engine: RuleEngine, mode: str, *, only_pending: bool = False,
                  entry_ids: list[str] | None = None, skip_matches=None,
                  unmatched: bool = True, matched: bool = True, backlog: bool = False,
                  today: date | None = None, chunk: int = 2000) -> Iterator[Decided]:
    """Every entry (or only the groups with pending entries, or those of `entry_ids`) decided;
    `skip_matches` (a SELECT of match ids) leaves those groups out, e.g. the settled ones.
    `unmatched` / `matched` choose the half: entries in no match, and match groups (the two
    are independent, so two processes may decide one each). `backlog`: decide as the backlog
    file would, every settled group being history (settled_before_service). `today`: the
    run's date in the configured time zone (days_past_due)."""
    d = _Decider(conn, engine, mode, backlog, today)
    # Unmatched entries: each its own group.
    if unmatched:
        if entry_ids is None:
            rows = fetch_raw(conn, lambda: _query(only_pending, False), chunk, key=("unmatched", only_pending))
        else:
            rows = fetch_raw(conn, _query(only_pending, False, entry_ids), chunk)
        for part in rows.partitions(chunk):
            for row in part:
                m = row._mapping
                yield d.decide(m, d.fact(m))
    if not matched:
        return
    # Matched entries: one group at a time (ordered by match id).
    if entry_ids is None and skip_matches is None:
        rows = fetch_raw(conn, lambda: _query(only_pending, True), chunk, key=("matched", only_pending))
    else:
        rows = fetch_raw(conn, _query(only_pending, True, entry_ids, skip_matches), chunk)
    flat = (r._mapping for part in rows.partitions(chunk) for r in part)   # fetchmany, not fetchone
    for _mid, members in groupby(flat, key=lambda m: m["match_id"]):
        members = list(members)
        sent = members[0]["sent_members"]
        # A match Lowell has must only grow: a member gone from it is a removal.
        lost = bool(sent) and not set(sent.split()) <= {m["id"] for m in members}
        yield from d.group(members, lost)


def decide_ledger_with(conn: Connection, engines: Sequence[RuleEngine], mode: str, *,
                       today: date | None = None, unmatched: bool = True, matched: bool = True,
                       match_range: tuple[str | None, str | None] = (None, None),
                       chunk: int = 2000) -> Iterator[tuple[Mapping, list[Outcome]]]:
    """The whole ledger decided by several engines in one pass: the facts are computed once
    and each engine asked about them (`rules diff`). One (entries row, outcomes) per entry,
    an outcome per engine in `engines` order. An engine remembers its outcome per fact shape,
    so a second engine over the same facts costs little. `unmatched`, `matched` and
    `match_range` ([from, to) of match ids) choose a part, so that two processes may share it."""
    d = _Decider(conn, engines[0], mode, False, today)
    if unmatched:
        for part in fetch_raw(conn, _query(False, False, facts_only=True), chunk).partitions(chunk):
            for row in part:
                m = row._mapping
                yield m, d.outcomes(m, d.fact(m), engines)
    if not matched:
        return
    q = _query(False, True, facts_only=True)
    lo, hi = match_range
    if lo is not None:
        q = q.where(s.entries.c.match_id >= lo)
    if hi is not None:
        q = q.where(s.entries.c.match_id < hi)
    rows = fetch_raw(conn, q, chunk)
    flat = (r._mapping for part in rows.partitions(chunk) for r in part)
    for _mid, members in groupby(flat, key=lambda m: m["match_id"]):
        members = list(members)
        sent = members[0]["sent_members"]
        lost = bool(sent) and not set(sent.split()) <= {m["id"] for m in members}
        yield from d.groups_with(members, lost, engines)
