"""Holds that are new tonight: what the rules keep back for a person, told once.

Before tonight's export the cycle decides what the export will decide (the groups with
pending changes, or the whole ledger when the rules or the mode changed: the same choice as the
export's) and compares the entries held with those held at the last cycle (table
``held_items``). An entry held now that was not held before, or held by another rule, is new
tonight; an entry no longer held leaves the table. What was held yesterday and is held still
is not told again. The plan's view of held: decided hold, or decided transfer but unable to go
(`plan`'s `…:not-sendable`); an entry Lowell has in this very version is not tonight's business,
unless it or its match changed since (pending tonight) and a rule holds that change back (a
match that lost a member after Lowell got it): told the night the change arrives, not recorded
(the export marks the change handled, so it is not pending the next night).
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timezone

from sqlalchemy import Connection, and_, delete, insert, or_, select, update

from reskontro.ledger import schema as s
from reskontro.ledger.store import Ledger
from reskontro.rules.decide import decide_ledger, decision_basis, goes_tonight
from reskontro.rules.engine import RuleEngine

BATCH = 500


@dataclass(frozen=True)
class NewHolds:
    """Entries held new tonight, by rule: {rule id: (reason, [entry ids])}."""
    by_rule: dict[str, tuple[str, list[str]]]

    @property
    def count(self) -> int:
        return sum(len(ids) for _, ids in self.by_rule.values())

    def lines(self, show: int = 5) -> list[str]:
        """One line per rule, for a person: how many, which (the first few), and why."""
        out = []
        for rule, (reason, ids) in sorted(self.by_rule.items()):
            shown = ", ".join(ids[:show]) + (f" and {len(ids) - show} more" if len(ids) > show else "")
            out.append(f"{len(ids)} {'entry' if len(ids) == 1 else 'entries'} held new tonight by rule {rule} "
                       f"({shown}): {reason}")
        return out


def _held(d) -> str | None:
    """The rule holding this decided entry, or None when it is not held."""
    e, o = d.entry, d.outcome
    if e["sent_version"] is not None and e["sent_version"] == e["version"]:
        return None                      # delivered or in flight as it is: not tonight's business
    if o.decision == "hold":
        return o.rule_id
    if o.decision == "transfer" and not goes_tonight(d):
        return f"{o.rule_id}:not-sendable"
    return None


def note_new_holds(conn: Connection, engine: RuleEngine, mode: str, now: datetime | None = None,
                   today: date | None = None) -> NewHolds:
    """Decide what tonight's export will decide (`today`: the run's date in the configured
    zone), record the holds, and return those that are new. The caller holds the run lock and
    commits."""
    now = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
    whole = Ledger(conn).get_meta("decision_basis") != decision_basis(engine, mode, today)
    new: dict[str, tuple[str, list[str]]] = {}
    reasons = {r.id: r.reason for r in engine.rule_file.rules if r.reason}
    h = s.held_items

    def settle(chunk: list[tuple[str, str | None, str]]) -> None:
        ids = [i for i, _, _ in chunk]
        known = dict(conn.execute(select(h.c.entry_id, h.c.rule_id).where(h.c.entry_id.in_(ids))).all())
        gone = [i for i, rule, _ in chunk if rule is None and i in known]
        if gone:
            conn.execute(delete(h).where(h.c.entry_id.in_(gone)))
        for entry_id, rule, reason in chunk:
            if rule is None or known.get(entry_id) == rule:
                continue
            if entry_id in known:
                conn.execute(update(h).where(h.c.entry_id == entry_id).values(rule_id=rule, since=now))
            else:
                conn.execute(insert(h).values(entry_id=entry_id, rule_id=rule, since=now))
            new.setdefault(rule, (reason, []))[1].append(entry_id)

    withheld: list[tuple[str, str | None, str, str]] = []   # delivered as it is, decided hold

    def changed_since(part: list[tuple[str, str | None, str, str]]) -> None:
        p = s.pending
        entries, matches = {e for e, _, _, _ in part}, {m for _, m, _, _ in part if m}
        got = set(conn.execute(select(p.c.kind, p.c.id).where(or_(
            and_(p.c.kind == "entry", p.c.id.in_(entries)), and_(p.c.kind == "match", p.c.id.in_(matches))))).all())
        for entry_id, match_id, rule, reason in part:
            if ("entry", entry_id) in got or ("match", match_id) in got:
                new.setdefault(rule, (reason, []))[1].append(entry_id)

    chunk: list[tuple[str, str | None, str]] = []
    for d in decide_ledger(conn, engine, mode, only_pending=not whole, today=today):
        rule = _held(d)
        reason = reasons.get(d.outcome.rule_id, d.outcome.reason)    # as the plan words it
        if rule is None and d.outcome.decision == "hold":
            withheld.append((d.entry["id"], d.entry["match_id"], d.outcome.rule_id, reason))
            if len(withheld) >= BATCH:
                changed_since(withheld)
                withheld = []
        if rule is not None and rule.endswith(":not-sendable"):
            reason = "decided transfer, but it cannot go (a reversal, or Lowell has another version)"
        chunk.append((d.entry["id"], rule, reason))
        if len(chunk) >= BATCH:
            settle(chunk)
            chunk = []
    if chunk:
        settle(chunk)
    if withheld:
        changed_since(withheld)
    for _, ids in new.values():
        ids.sort()
    return NewHolds(dict(new))

