"""Where an entry (and its match) went: every transfer file that carried a version of it, with
the file's state and the receiver's receipt, whether Lowell has it (delivered, in flight) or
never got it, and, for an entry changed after it was sent, what Lowell has and what the ledger
says now, field by field. Read from the journal (files, file_items, sent), the receipts as
read (table receipts) and the content kept of versions sent (ledger.sent_content); files
support dropped by hand are in the journal like our own.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone

from sqlalchemy import Connection, select

from reskontro.ledger import schema as s
from reskontro.ledger.sent_content import differences, sent_values
from reskontro.ledger.store import entry_wire, row_entry
from reskontro.transfer.journal import IN_FLIGHT


@dataclass(frozen=True)
class ReceiverError:
    code: str
    ref: str | None           # the Entry, Customer or Match id it names
    text: str
    about_this: bool          # it names this entry, its customer or its match


@dataclass(frozen=True)
class ReceiptInfo:
    status: str               # accepted | rejected
    received_at: datetime | None   # None: read before this store kept receipts (see the file's detail)
    name: str | None          # the receipt file
    errors: list[ReceiverError]    # those about this entry first


@dataclass(frozen=True)
class Carried:
    """One file that carried a version of the entry (or of the match)."""
    file_id: str
    name: str
    sequence: int
    kind: str                 # daily | backlog | manual (dropped into outbox/ by hand)
    state: str                # writing | written | uploading | uploaded | accepted | rejected | invalid | abandoned
    created_at: datetime
    version: str
    current: bool             # the version the ledger has now
    detail: str | None        # the file's detail: why it was rejected, set aside or abandoned
    receipt: ReceiptInfo | None
    members: tuple[str, ...] = ()   # a match: the members this file carried

    @property
    def in_flight(self) -> bool:
        return self.state in IN_FLIGHT


@dataclass(frozen=True)
class FieldChange:
    field: str                # a transfer-file field (ledger.sent_content.WIRE_FIELDS)
    sent: str | None          # what Lowell has
    current: str | None       # what the ledger says now


@dataclass(frozen=True)
class Delivery:
    state: str                # never_sent | in_flight | delivered: what Lowell has of the item
    file_id: str | None       # the file Lowell has it from (or will, in flight)
    changed: bool             # Lowell has another version than the ledger's now
    changes: list[FieldChange] | None   # the fields that differ; None: changed, but what was sent was not kept
    files: list[Carried]      # every file that carried a version of it, oldest first

    @property
    def last(self) -> Carried | None:
        return self.files[-1] if self.files else None


def _aware(t: datetime | None) -> datetime | None:
    return t if t is None or t.tzinfo is not None else t.replace(tzinfo=timezone.utc)


def _carried(conn: Connection, kind: str, id_: str, current: str | None, about: set[str]) -> list[Carried]:
    fi, f, r = s.file_items, s.files, s.receipts
    rows = conn.execute(
        select(f.c.file_id, f.c.name, f.c.sequence, f.c.kind, f.c.state, f.c.created_at, f.c.detail,
               fi.c.version, fi.c.members, r.c.status, r.c.received_at, r.c.name.label("receipt_name"),
               r.c.errors)
        .join(f, f.c.file_id == fi.c.file_id).outerjoin(r, r.c.file_id == f.c.file_id)
        .where(fi.c.kind == kind, fi.c.id == id_).order_by(f.c.sequence)).all()
    out = []
    for x in rows:
        receipt = None
        if x.status is not None:
            errs = [ReceiverError(e["code"], e.get("ref"), e["text"], e.get("ref") in about)
                    for e in json.loads(x.errors)]
            receipt = ReceiptInfo(x.status, _aware(x.received_at), x.receipt_name,
                                  sorted(errs, key=lambda e: not e.about_this))
        elif x.state in ("accepted", "rejected"):       # read before receipts were kept
            receipt = ReceiptInfo(x.state, None, None, [])
        out.append(Carried(x.file_id, x.name, x.sequence, x.kind, x.state, _aware(x.created_at), x.version,
                           x.version == current, x.detail, receipt,
                           tuple(x.members.split()) if x.members else ()))
    return out


def entry_delivery(conn: Connection, entry_id: str) -> Delivery | None:
    """The entry's journey (None: no such entry in the ledger)."""
    row = conn.execute(select(s.entries).where(s.entries.c.id == entry_id)).first()
    if row is None:
        return None
    about = {entry_id, row.customer_id, row.match_id} - {None}
    files = _carried(conn, "entry", entry_id, row.version, about)
    sent = conn.execute(select(s.sent.c.version, s.sent.c.file_id, s.sent.c.state).where(
        s.sent.c.kind == "entry", s.sent.c.id == entry_id)).first()
    if sent is None:
        return Delivery("never_sent", None, False, None, files)
    state = "delivered" if sent.state == "delivered" else "in_flight"
    if sent.version == row.version:
        return Delivery(state, sent.file_id, False, [], files)
    was = sent_values(conn, "entry", entry_id, sent.version)
    changes = None if was is None else [FieldChange(*d) for d in differences(was, entry_wire(row_entry(row)))]
    return Delivery(state, sent.file_id, True, changes, files)


def match_delivery(conn: Connection, match_id: str) -> Delivery:
    """The match's journey: every file that carried a version of it, with the members it had."""
    version = conn.execute(select(s.matches.c.version).where(s.matches.c.id == match_id)).scalar()
    files = _carried(conn, "match", match_id, version, {match_id})
    sent = conn.execute(select(s.sent.c.version, s.sent.c.file_id, s.sent.c.state).where(
        s.sent.c.kind == "match", s.sent.c.id == match_id)).first()
    if sent is None:
        return Delivery("never_sent", None, False, None, files)
    state = "delivered" if sent.state == "delivered" else "in_flight"
    return Delivery(state, sent.file_id, sent.version != version, None, files)
