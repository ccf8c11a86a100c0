"""One bank payment is one entry: the ERP's export meets what this service booked itself.

Who owns what: the ERP owns customers, invoices and its own entries and matches; this service
owns the payments it booked from bank files (``origin`` bank), the entries of correct-payment
(``origin`` correction) and where those sit (the matches it made or grew). An import therefore:

- maps an ERP entry onto the service's entry when it is the same payment: the ERP names it by
  the service's id, or gives the bank's archive reference (``bank_ref``) of a payment the
  service booked. The ERP's id is kept as an alias, so later imports and matches that name it
  resolve. The service's content stays (what Lowell has, or will get); when the ERP's copy
  disagrees on type, customer, amount or currency, the entry is held (rule bank-ref-conflict)
  with the difference, until an import brings an agreeing copy;
- keeps a second entry for a bank payment that already has one as an entry of its own, held
  (bank-ref-conflict) as a duplicate, so that it never goes to Lowell;
- maps an ERP match onto the service's match when the ERP's match is new and its members
  sit in one match that holds an entry of the service (the ERP's own match for the same
  invoice); the ERP's match id becomes an alias;
- never takes the service's entries out of a match because the ERP's copy of the match does
  not list them (the ERP's older copy, or a match of its own). Only a match that *names* the
  service's entry (by either id) moves it; if Lowell already has it where it was, that is a
  removal, held as before (match-lost-member), and correct-payment is the fix.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TextIO

from sqlalchemy import Connection, func, insert, or_, select, update

from reskontro.adapters.ledger_import import LedgerBatch

from reskontro.ledger import schema as s
from reskontro.domain import Entry, Match, from_ore, to_ore
from reskontro.ledger.store import BATCH, Ledger

NOTE_MAX = 200


@dataclass
class Resolved:
    """A file's records in the store's ids, and what else the import must write."""
    batch: LedgerBatch
    errors: list[str] = field(default_factory=list)
    aliases: list[tuple[str, str, str]] = field(default_factory=list)   # (kind, ERP id, store id)
    notes: dict[str, str | None] = field(default_factory=dict)           # entry id -> conflict (None: clear)
    bank_refs: dict[str, str | None] = field(default_factory=dict)       # stored entry -> its new bank_ref
    same: int = 0                    # entries that are the service's own entries
    messages: list[str] = field(default_factory=list)


def _chunks(ids: list[str]) -> Iterable[list[str]]:
    for i in range(0, len(ids), BATCH):
        yield ids[i:i + BATCH]


def _aliases(conn: Connection, kind: str, ids: Iterable[str]) -> dict[str, str]:
    a, out = s.aliases, {}
    ids = list(dict.fromkeys(ids))
    n = conn.execute(select(func.count()).select_from(a).where(a.c.kind == kind)).scalar_one()
    if n <= len(ids):              # fewer aliases than ids asked for: read them all at once
        wanted = set(ids)
        return {k: v for k, v in conn.execute(select(a.c.erp_id, a.c.target_id).where(a.c.kind == kind))
                if k in wanted} if n else {}
    for chunk in _chunks(ids):
        out.update(conn.execute(select(a.c.erp_id, a.c.target_id).where(
            a.c.kind == kind, a.c.erp_id.in_(chunk))).all())
    return out


def _rows(conn: Connection, column, values: Iterable[str], where=None) -> dict[str, dict]:
    e, out = s.entries, {}
    cols = (e.c.id, e.c.customer_id, e.c.type, e.c.amount_ore, e.c.currency, e.c.bank_ref, e.c.origin,
            e.c.bank_ref_conflict, e.c.match_id)
    for chunk in _chunks(list(dict.fromkeys(values))):
        q = select(*cols).where(column.in_(chunk))
        if where is not None:
            q = q.where(where)
        for r in conn.execute(q):
            out[r._mapping[column.name]] = dict(r._mapping)
    return out


def _difference(e: Entry, own: dict) -> str | None:
    """What the ERP's copy says otherwise than the service's entry (None: it agrees)."""
    diffs = []
    if e.type != own["type"]:
        diffs.append(f"type {e.type} (here {own['type']})")
    if e.customer_id != own["customer_id"]:
        diffs.append(f"customer {e.customer_id} (here {own['customer_id']})")
    if to_ore(e.amount) != own["amount_ore"]:
        diffs.append(f"amount {e.amount} (here {from_ore(own['amount_ore'])})")
    if e.currency != own["currency"]:
        diffs.append(f"currency {e.currency} (here {own['currency']})")
    if e.bank_ref and e.bank_ref != own["bank_ref"]:
        diffs.append(f"bank_ref {e.bank_ref} (here {own['bank_ref'] or 'none'})")
    return "; ".join(diffs) or None


def resolve(path: Path, batch: LedgerBatch, conn: Connection,
            in_file: Callable[[set[str]], set[str]] | None = None) -> Resolved:
    """The file's entries and matches in the store's ids (see the module's docstring).

    `batch` may be part of a file (the importer gives only the records this can be about);
    `in_file` then says which of some match ids are the file's."""
    out = Resolved(LedgerBatch(customers=batch.customers, lines=dict(batch.lines)))
    where = lambda kind, i: f"{path.name}:{batch.lines[(kind, i)]}"  # noqa: E731
    e = s.entries
    ids = [x.id for x in batch.entries]
    alias_e = _aliases(conn, "entry", ids + [m for mt in batch.matches for m in mt.entry_ids]
                       + [x.reverses for x in batch.entries if x.reverses])
    # Only the stored entries this can be about: the service's, and those with a bank reference
    # or a conflict (an ERP ledger's other entries cost one index lookup each, no row).
    stored = _rows(conn, e.c.id, ids, or_(e.c.origin.is_not(None), e.c.bank_ref.is_not(None),
                                          e.c.bank_ref_conflict.is_not(None)))
    holders = _rows(conn, e.c.bank_ref, [x.bank_ref for x in batch.entries if x.bank_ref])
    targets = _rows(conn, e.c.id, alias_e.values())
    mapping: dict[str, str] = {}          # ERP id -> the service's entry it is
    taken: dict[str, str] = {}            # the service's entry -> the ERP id that named it here

    for x in batch.entries:
        target = None
        note: str | None = None
        holder = holders.get(x.bank_ref) if x.bank_ref else None
        if x.id in alias_e:
            target = alias_e[x.id]
            own = targets[target]
            if x.bank_ref and x.bank_ref != own["bank_ref"]:
                out.errors.append(f"{where('entry', x.id)}: bank_ref: {x.id!r} is bank payment {own['bank_ref']!r} "
                                  f"(entry {target!r} here); it cannot become {x.bank_ref!r}")
                continue
        elif x.id in stored and stored[x.id]["origin"]:
            target = x.id                 # the ERP names the service's entry by its own id
            targets[target] = stored[x.id]
        elif holder is not None and holder["id"] != x.id:
            if holder["origin"] and x.id not in stored and not Ledger(conn).existing_ids(e, [x.id]):
                target = holder["id"]
                out.aliases.append(("entry", x.id, target))
                targets[target] = holder
            else:   # a second entry for a payment that has one: kept (without the ref), held
                note = (f"{where('entry', x.id)}: bank payment {x.bank_ref} is already entry {holder['id']}: "
                        "one bank payment is one entry, so this one is held and never sent")
                x = replace(x, bank_ref=None)
        if target is None:
            out.batch.entries.append(x)
            old = stored.get(x.id)
            if note is not None or (old and old["bank_ref_conflict"]):
                out.notes[x.id] = note and note[:NOTE_MAX]
            if note is not None:
                out.messages.append(f"held: {note}")
            if (old["bank_ref"] if old else None) != x.bank_ref:
                out.bank_refs[x.id] = x.bank_ref          # (a new entry has it already: harmless)
            continue
        if target in taken:
            out.errors.append(f"{where('entry', x.id)}: id: {x.id!r} and {taken[target]!r} are both entry "
                              f"{target!r} here (bank payment {targets[target]['bank_ref']}); one bank payment "
                              "is one entry")
            continue
        taken[target] = x.id
        mapping[x.id] = target
        out.same += 1
        diff = _difference(x, targets[target])
        if diff is not None:
            note = (f"{where('entry', x.id)}: the ERP's {x.id} is this payment "
                    f"({targets[target]['bank_ref'] or 'booked here'}) but says {diff}")
            out.messages.append(f"held: {target}: {note}")
        if diff is not None or targets[target]["bank_ref_conflict"]:
            out.notes[target] = note and note[:NOTE_MAX]
    for kind_id, line in batch.lines.items():
        if kind_id[0] == "entry" and kind_id[1] in mapping:
            out.batch.lines[("entry", mapping[kind_id[1]])] = line
    resolve_id = lambda i: mapping.get(i) or alias_e.get(i) or i  # noqa: E731
    out.batch.entries[:] = [replace(x, reverses=resolve_id(x.reverses)) if x.reverses else x
                            for x in out.batch.entries]
    _matches(path, batch, conn, out, resolve_id, in_file)
    return out


def _matches(path: Path, batch: LedgerBatch, conn: Connection, out: Resolved, resolve_id, in_file) -> None:
    if not batch.matches:
        return
    members = {m.id: list(dict.fromkeys(resolve_id(i) for i in m.entry_ids)) for m in batch.matches}
    file_ids = set(members)
    alias_m = _aliases(conn, "match", file_ids)
    stored_m = Ledger(conn).existing_ids(s.matches, file_ids)
    e = s.entries
    # The service's entries the file names, and (for the file's new matches) where the rest sit.
    own_rows = _rows(conn, e.c.id, [i for ms in members.values() for i in ms], e.c.origin.is_not(None))
    fresh = [i for m in batch.matches if m.id not in alias_m and m.id not in stored_m for i in members[m.id]]
    current = {i: r["match_id"] for i, r in _rows(conn, e.c.id, fresh).items()}
    current.update((i, r["match_id"]) for i, r in own_rows.items())
    erp_owned = {i for i in current if i not in own_rows}
    target: dict[str, str] = {}
    for m in batch.matches:
        if m.id in alias_m:
            target[m.id] = alias_m[m.id]
        elif m.id in stored_m:
            target[m.id] = m.id
        else:
            # Where the ERP's own members (the invoice side) sit: in one match that holds the
            # service's entries, the ERP's new match is that match (its own for the same invoice).
            others = {current[i] for i in members[m.id] if current.get(i) and i in erp_owned} - file_ids
            if in_file is not None and others:
                others -= in_file(others)
            if len(others) == 1 and _holds_own(conn, next(iter(others))):
                target[m.id] = next(iter(others))
                out.aliases.append(("match", m.id, target[m.id]))
            else:
                target[m.id] = m.id
    named: dict[str, str] = {}
    for m in batch.matches:
        for i in members[m.id]:
            if named.setdefault(i, m.id) != m.id:
                out.errors.append(f"{path.name}:{batch.lines[('match', m.id)]}: entries: {i!r} is in match "
                                  f"{named[i]!r} too (under another id); an entry belongs to at most one match")
    seen: dict[str, str] = {}
    for m in batch.matches:
        t = target[m.id]
        if t in seen:
            out.errors.append(f"{path.name}:{batch.lines[('match', m.id)]}: id: matches {seen[t]!r} and {m.id!r} "
                              f"are both match {t!r} here")
        seen[t] = m.id
    if out.errors:
        return
    placed = {i: target[mid] for mid, ms in members.items() for i in ms}
    targets = set(target.values())
    own = _own_members(conn, targets | {q for q in current.values() if q})
    losers: dict[str, set[str]] = {}
    for m in batch.matches:
        t = target[m.id]
        # The service's entries stay where the service put them unless this file places them.
        keep = [i for i in own.get(t, ()) if placed.get(i, t) == t and i not in members[m.id]]
        out.batch.matches.append(Match(t, tuple(members[m.id]) + tuple(keep)))
        out.batch.lines[("match", t)] = batch.lines[("match", m.id)]
        for i in members[m.id]:
            q = current.get(i)
            if q and q != t and q not in targets and i in own.get(q, ()):
                losers.setdefault(q, set()).add(i)      # the file moves the service's entry
                out.batch.lines.setdefault(("match", q), batch.lines[("match", m.id)])
    for q, gone in sorted(losers.items()):
        left = conn.execute(select(s.entries.c.id).where(s.entries.c.match_id == q)
                            .order_by(s.entries.c.id)).scalars().all()
        out.batch.matches.append(Match(q, tuple(i for i in left if i not in gone)))


def _holds_own(conn: Connection, match_id: str) -> bool:
    e = s.entries
    return conn.execute(select(e.c.id).where(e.c.match_id == match_id, e.c.origin.is_not(None))
                        .limit(1)).first() is not None


def _own_members(conn: Connection, match_ids: set[str]) -> dict[str, list[str]]:
    """The service's entries in each of these matches."""
    e, out = s.entries, {}
    for chunk in _chunks(sorted(match_ids)):
        for mid, eid in conn.execute(select(e.c.match_id, e.c.id).where(
                e.c.match_id.in_(chunk), e.c.origin.is_not(None)).order_by(e.c.id)):
            out.setdefault(mid, []).append(eid)
    return out


def alias_target(conn: Connection, kind: str, erp_id: str) -> str | None:
    """The store's id for an ERP id kept as an alias (None: not an alias)."""
    a = s.aliases
    return conn.execute(select(a.c.target_id).where(a.c.kind == kind, a.c.erp_id == erp_id)).scalar()


def write_resolved(conn: Connection, r: Resolved) -> None:
    """The aliases, conflict notes and bank references of a resolved file (after its upserts)."""
    if r.aliases:
        conn.execute(insert(s.aliases), [{"kind": k, "erp_id": a, "target_id": t} for k, a, t in r.aliases])
    e = s.entries
    for eid, ref in r.bank_refs.items():
        conn.execute(update(e).where(e.c.id == eid).values(bank_ref=ref))
    for eid, note in r.notes.items():
        conn.execute(update(e).where(e.c.id == eid).values(bank_ref_conflict=note))
    Ledger(conn).mark_pending("entry", r.notes)


# --- what the ERP learns ------------------------------------------------------------------------

BOOKING_FIELDS = ("id", "customer_id", "type", "document_no", "document_date", "amount", "currency",
                  "kid", "source", "text", "bank_ref")


def bookings(conn: Connection) -> Iterable[dict]:
    """The entries this service booked (bank payments, correct-payment entries) and every match
    that holds one, as JSON Lines records of the import format (`reskontro bookings`)."""
    e = s.entries
    mids: set[str] = set()
    for r in conn.execute(select(e).where(e.c.origin.is_not(None)).order_by(e.c.id)):
        m = r._mapping
        rec = {"record": "entry", "id": m["id"], "customer_id": m["customer_id"], "type": m["type"],
               "document_no": m["document_no"], "document_date": m["document_date"].isoformat(),
               "amount": str(from_ore(m["amount_ore"])), "currency": m["currency"], "kid": m["kid"],
               "source": m["source"], "text": m["text"], "bank_ref": m["bank_ref"]}
        yield {k: v for k, v in rec.items() if v is not None}
        if m["match_id"]:
            mids.add(m["match_id"])
    for mid in sorted(mids):
        members = conn.execute(select(e.c.id).where(e.c.match_id == mid).order_by(e.c.id)).scalars().all()
        yield {"record": "match", "id": mid, "entries": list(members)}


def write_bookings(conn: Connection, out: TextIO) -> tuple[int, int]:
    """`bookings` as JSON Lines into `out`; returns (entries, matches) written."""
    n = m = 0
    for rec in bookings(conn):
        out.write(json.dumps(rec, ensure_ascii=False) + "\n")
        n += rec["record"] == "entry"
        m += rec["record"] == "match"
    return n, m
