"""Decisions have a history: what each export decided differently from before, and which rule
file was in force.

At export every decided entry is compared with its last decision; a change is journaled
(`decision_history`: entry, from, to, the rule that decided, the rule file's digest, when, the
export's file). Only changes: an entry's first decision is none, and a ledger that simply goes
writes nothing at all. The last decision is kept where the journal does not imply it
(`entries.decision`): NULL means transfer when Lowell has a version of the entry (the `sent`
table), exclude for a match settled before the service started (`settled_history`) that
Lowell does not have, and never decided otherwise; so only entries held, waiting or excluded
for another reason (and the few decided transfer that cannot go) cost a write. (An entry that
joins a settled match, reopening it, is journaled from the match's exclude.)

The first export that journals decisions (a new store, or one made before this history) only
notes them: with nothing noted before, it cannot tell a change from what always was.

The rule file in force is known by its digest (`rules_digest`: its rules, not its comments or
layout); the meta key ``rules_in_force`` keeps the digest the last export used, since when, the
one before, and how many entries the export that brought it in decided differently.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone

from sqlalchemy import Connection, func, select

from reskontro.ledger import schema as s
from reskontro.ledger.store import Ledger
from reskontro.rules.decide import Decided
from reskontro.rules.rulefile import RuleFile

FLUSH = 5000
_STARTED = "decision_history_since"
_IN_FORCE = "rules_in_force"


def rules_digest(rf: RuleFile) -> str:
    """The rule file by what it decides (16 hex digits of a SHA-256): its rules in order, with
    their conditions, decisions, warnings and reasons, and the default. Comments, layout and
    line numbers do not count."""
    doc = [rf.default_decision, rf.default_reason,
           [[r.id, [[t.field, t.op, t.value] for t in r.when],
             [[[t.field, t.op, t.value] for t in alt] for alt in r.any], r.decision, r.warning, r.reason]
            for r in rf.rules]]
    return hashlib.sha256(json.dumps(doc, ensure_ascii=False, default=list).encode()).hexdigest()[:16]


class Recorder:
    """Watches an export's decisions as they stream by (`watch`) and hands the changes and the
    decisions to keep to `sink` in chunks: (changes [(entry, from, to, rule)], states
    [(decision or None, entry)]), which must use them at once. The export writes them; a decide
    process pickles them."""

    def __init__(self, sink: Callable[[list, list], None]):
        self.sink = sink
        self.changes: list[tuple[str, str, str, str]] = []
        self.states: list[tuple[str | None, str]] = []

    def watch(self, decided: Iterator[Decided]) -> Iterator[Decided]:
        changes, states = self.changes, self.states
        for d in decided:
            e = d.entry
            new = d.outcome.decision
            stored = e["decision"]
            sent = e["sent_version"] is not None
            implied = "transfer" if sent else ("exclude" if e["settled_hist"] is not None else None)
            prev = stored if stored is not None else implied
            if prev is not None and prev != new:
                changes.append((e["id"], prev, new, d.outcome.rule_id))
            # what the journal implies needs no note; nor does transfer of what is not a
            # reversal: Lowell gets it tonight (then it is implied)
            keep = None if new == implied or (new == "transfer" and e["type"] != "reversal") else new
            if keep != stored:
                states.append((keep, e["id"]))
                if len(states) >= FLUSH:
                    self.flush()
            elif len(changes) >= FLUSH:
                self.flush()
            yield d

    def flush(self) -> None:
        """Hand what is noted to the sink (which must not keep the lists) and start again."""
        if self.changes or self.states:
            self.sink(self.changes, self.states)
            self.changes.clear()
            self.states.clear()


class Writer:
    """Writes what Recorders note into the export's transaction; counts the changes."""

    def __init__(self, conn: Connection, rf: RuleFile, at: datetime, file_id: str | None):
        self.conn, self.at, self.file_id = conn, at.astimezone(timezone.utc), file_id
        self.digest = rules_digest(rf)
        self.ledger = Ledger(conn)
        # nothing noted before: this export notes, it cannot tell what changed
        self.noting_only = self.ledger.get_meta(_STARTED) is None
        self.changed = 0
        d = conn.dialect
        mark = "?" if d.paramstyle == "qmark" else "%s"
        q = d.identifier_preparer.quote
        self._update = f"UPDATE {q('entries')} SET {q('decision')} = {mark} WHERE {q('id')} = {mark}"

    def __call__(self, changes: list, states: list) -> None:
        if changes and not self.noting_only:
            self.conn.execute(s.decision_history.insert(), [
                {"entry_id": eid, "at": self.at, "from_decision": a, "to_decision": b, "rule_id": rule,
                 "rules_digest": self.digest, "file_id": self.file_id} for eid, a, b, rule in changes])
            self.changed += len(changes)
        if states:
            self.conn.exec_driver_sql(self._update, states)

    def finish(self) -> None:
        """After the export's decisions: note that decisions are journaled from now on, and the
        rule file in force (with how many entries it decided differently, when it is new)."""
        if self.noting_only:
            self.ledger.set_meta(_STARTED, self.at.isoformat())
        was = in_force(self.conn)
        if was is None or was.digest != self.digest:
            self.ledger.set_meta(_IN_FORCE, json.dumps({
                "digest": self.digest, "since": self.at.isoformat(),
                "previous": was.digest if was else None,
                "changed": None if was is None or self.noting_only else self.changed}))


@dataclass(frozen=True)
class InForce:
    digest: str
    since: datetime               # the export that first used it
    previous: str | None          # the digest before it
    changed: int | None           # entries that export decided differently (None: not known)


def in_force(conn: Connection) -> InForce | None:
    """The rule file the last export used, or None before any export journaled one."""
    raw = Ledger(conn).get_meta(_IN_FORCE)
    if raw is None:
        return None
    d = json.loads(raw)
    return InForce(d["digest"], datetime.fromisoformat(d["since"]), d.get("previous"), d.get("changed"))


@dataclass(frozen=True)
class Change:
    entry_id: str
    at: datetime
    from_decision: str
    to_decision: str
    rule_id: str
    rules_digest: str
    file_id: str | None


def entry_history(conn: Connection, entry_id: str) -> list[Change]:
    """The journaled decision changes of one entry, oldest first."""
    h = s.decision_history
    rows = conn.execute(select(h).where(h.c.entry_id == entry_id).order_by(h.c.seq)).all()
    return [Change(r.entry_id, r.at if r.at.tzinfo else r.at.replace(tzinfo=timezone.utc), r.from_decision,
                   r.to_decision, r.rule_id, r.rules_digest, r.file_id) for r in rows]


def history_size(conn: Connection) -> int:
    return conn.execute(select(func.count()).select_from(s.decision_history)).scalar_one()
