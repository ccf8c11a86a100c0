"""The transfer journal: which version of which customer, entry and match went in which file,
and each file's state. It is what makes every run exactly-once.

File states: writing (reserved, not complete) -> written (complete in outbox/) -> uploading
(an upload started; it stays so if the connection drops or the run dies before the upload is
confirmed) -> uploaded -> accepted | rejected; invalid (failed the pre-send check, or changed
after it) and abandoned (a crash before the file was complete, or a written file that
disappeared from the outbox) never reached the receiver. Only a file that is uploading or
uploaded can have a receipt. An item is *in flight* while the file that carries its current
version is written, uploading or uploaded, *delivered* once that file is accepted.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import lru_cache

from sqlalchemy import (Column, Connection, MetaData, String, Table, Text, and_, case, delete, func, insert,
                        literal, select, update)

from reskontro.ledger import schema as s
from reskontro.ledger.store import Ledger, mark_undecided, upsert_insert

LIVE = ("written", "uploading", "uploaded", "accepted")   # files whose content the receiver has or will have
IN_FLIGHT = ("written", "uploading", "uploaded")
KINDS = ("customer", "entry", "match")


@dataclass(frozen=True)
class FileRecord:
    file_id: str
    sequence: int
    kind: str
    state: str
    name: str
    created_at: datetime
    entry_count: int
    detail: str | None
    sha256: str | None = None    # of the bytes that passed the pre-send check


def next_sequence(conn: Connection) -> int:
    return (conn.execute(select(func.max(s.files.c.sequence))).scalar() or 0) + 1


def sequence_taken(conn: Connection, sequence: int) -> bool:
    return conn.execute(select(s.files.c.file_id).where(s.files.c.sequence == sequence)).first() is not None


def reserve_file(conn: Connection, file_id: str, sequence: int, kind: str, name: str,
                 created_at: datetime, cut_off: datetime | None) -> None:
    # Kept in UTC: SQLite drops the offset, so a local time would come back ambiguous.
    conn.execute(insert(s.files).values(file_id=file_id, sequence=sequence, kind=kind, state="writing",
                                        name=name, created_at=_utc(created_at), cut_off=_utc(cut_off),
                                        entry_count=0))


class ItemWriter:
    """Adds a file's items (kind, id, version, members) to the journal, in chunks (memory
    flat). Up to MEMORY items (a night's few hundred) are held here and go into ``file_items``
    in key order at the end. More are staged in a temporary table without indexes, sorted
    into ``file_items`` at the end: a million random-order inserts into its indexes cost
    several times more than appending the same rows in key order. Not a temporary table for
    every night: making and dropping one writes PostgreSQL's system catalogs, and with
    thousands of fleet creditors a night each such write also costs every other connection
    a reload of its catalog caches."""

    MEMORY = 10_000

    def __init__(self, conn: Connection, file_id: str) -> None:
        self.conn, self.file_id = conn, file_id
        self._held: list[tuple[str, str, str, str | None]] = []
        self._stage: Table | None = None
        d = conn.dialect
        self._mark = "?" if d.paramstyle == "qmark" else "%s"
        self._q = d.identifier_preparer.quote

    def _open_stage(self) -> None:
        self._stage = Table("file_items_stage", MetaData(), Column("kind", String(8)),
                            Column("id", String(35)), Column("version", String(16)),
                            Column("members", Text), prefixes=["TEMPORARY"])
        self._stage.create(self.conn)
        self._sql = f"INSERT INTO {self._q(self._stage.name)} VALUES ({', '.join([self._mark] * 4)})"

    def add(self, rows: list[tuple[str, str, str, str | None]]) -> None:
        if not rows:
            return
        if self._stage is None:
            self._held.extend(rows)
            if len(self._held) <= self.MEMORY:
                return
            self._open_stage()
            rows, self._held = self._held, []
        # The DBAPI's executemany of plain tuples: SQLAlchemy's per-row parameter processing
        # cost more than the insert itself.
        self.conn.exec_driver_sql(self._sql, rows)

    def close(self) -> None:
        if self._stage is None:
            if self._held:
                self._held.sort(key=lambda r: (r[0], r[1]))
                cols = ", ".join(self._q(c) for c in ("file_id", "kind", "id", "version", "members"))
                self.conn.exec_driver_sql(
                    f"INSERT INTO {self._q(s.file_items.name)} ({cols}) VALUES ({', '.join([self._mark] * 5)})",
                    [(self.file_id, *r) for r in self._held])
                self._held = []
            return
        st = self._stage.c
        self.conn.execute(insert(s.file_items).from_select(
            ["file_id", "kind", "id", "version", "members"],
            select(literal(self.file_id), st.kind, st.id, st.version, st.members)
            .order_by(st.kind, st.id)))
        self._stage.drop(self.conn)


def _utc(t: datetime | None) -> datetime | None:
    return None if t is None else t.astimezone(timezone.utc)


def _aware(t: datetime | None) -> datetime | None:
    return t if t is None or t.tzinfo is not None else t.replace(tzinfo=timezone.utc)


def file_record(conn: Connection, file_id: str) -> FileRecord | None:
    r = conn.execute(select(s.files).where(s.files.c.file_id == file_id)).first()
    if r is None:
        return None
    m = r._mapping
    return FileRecord(m["file_id"], m["sequence"], m["kind"], m["state"], m["name"], _aware(m["created_at"]),
                      m["entry_count"], m["detail"], m["sha256"])


def files(conn: Connection, states: Iterable[str] | None = None) -> list[FileRecord]:
    q = select(s.files.c.file_id).order_by(s.files.c.sequence)
    if states is not None:
        q = q.where(s.files.c.state.in_(list(states)))
    return [file_record(conn, fid) for fid in conn.execute(q).scalars()]


def set_state(conn: Connection, file_id: str, state: str, detail: str | None = None, **values) -> None:
    vals = {"state": state, **values}
    if detail is not None:
        vals["detail"] = detail
    conn.execute(update(s.files).where(s.files.c.file_id == file_id).values(**vals))


def note_sha256(conn: Connection, file_id: str, sha256: str) -> None:
    """The SHA-256 of a file being written, once its bytes are all written (before its check)."""
    conn.execute(update(s.files).where(s.files.c.file_id == file_id).values(sha256=sha256))


def mark_written(conn: Connection, file_id: str, entry_count: int, sha256: str | None = None) -> None:
    """The file is complete in the outbox: its items are in flight, no longer pending. `sha256`
    is that of the bytes that passed the check: the upload sends those bytes or nothing."""
    set_state(conn, file_id, "written", entry_count=entry_count, sha256=sha256)
    if not _upsert_sent(conn, file_id):
        _rebuild_sent(conn, file_id)
    for kind in KINDS:
        conn.execute(delete(s.pending).where(s.pending.c.kind == kind, s.pending.c.id.in_(
            select(s.file_items.c.id).where(s.file_items.c.file_id == file_id, s.file_items.c.kind == kind))))
    if conn.execute(select(s.files.c.kind).where(s.files.c.file_id == file_id)).scalar() == "manual":
        # what a hand-dropped file carries was not decided to go: its entries' decisions change
        # (sent; changed after sent) without a ledger change
        for kind in ("entry", "match"):
            mark_undecided(conn, kind, select(s.file_items.c.id).where(s.file_items.c.file_id == file_id,
                                                                       s.file_items.c.kind == kind))


def drop_file(conn: Connection, file_id: str, state: str, detail: str) -> None:
    """A file that never reached the receiver (invalid, abandoned): its items were never sent."""
    set_state(conn, file_id, state, detail)
    _rebuild_sent(conn, file_id)


def mark_uploading(conn: Connection, file_id: str) -> None:
    """An upload of the file starts: from now on the receiver may have it (and its receipt
    is believed) even if the confirmation of the upload never comes back."""
    set_state(conn, file_id, "uploading")


def mark_uploaded(conn: Connection, file_id: str) -> None:
    set_state(conn, file_id, "uploaded")


def accept(conn: Connection, file_id: str) -> None:
    set_state(conn, file_id, "accepted")
    conn.execute(update(s.sent).where(s.sent.c.file_id == file_id).values(state="delivered"))


def note_receipt(conn: Connection, file_id: str, status: str, received_at: datetime, name: str,
                 errors: Iterable[tuple[str, str | None, str]]) -> None:
    """The receipt as read (beside the file's state and one-line detail): when the receiver
    got the file, and each error with the id it names (explain shows them per entry)."""
    import json
    doc = json.dumps([{"code": c, "ref": r, "text": t} for c, r, t in errors], ensure_ascii=False)
    conn.execute(delete(s.receipts).where(s.receipts.c.file_id == file_id))
    conn.execute(insert(s.receipts).values(file_id=file_id, status=status, received_at=_utc(received_at),
                                           read_at=datetime.now(timezone.utc), name=name[:255], errors=doc))


@dataclass(frozen=True)
class Rejection:
    """What withdrawing a file (rejected, invalid, abandoned) does to its items."""
    again: int                  # in the ledger and in no other live file: pending, they go again
    elsewhere: int              # delivered or in flight in another file (nothing to resend)
    not_in_ledger: int          # only the file had them (a hand-dropped file): we cannot send them
    not_in_ledger_ids: tuple[tuple[str, str], ...]   # (kind, id) of the first few of those


_LEDGER_TABLES = {"customer": s.customers, "entry": s.entries, "match": s.matches}


def reject(conn: Connection, file_id: str, detail: str, show: int = 10) -> Rejection:
    """The receiver rejected the file: its content returns to pending, to go again corrected."""
    return withdraw(conn, file_id, "rejected", detail, show)


def withdraw(conn: Connection, file_id: str, state: str, detail: str, show: int = 10) -> Rejection:
    """A complete file whose content the receiver will not get from it (rejected; changed
    after its check: invalid; gone from the outbox: abandoned): its content returns to
    pending and goes again.

    Only what the ledger has can go again, in the ledger's version: an item only a
    hand-dropped file carried (its journal version is no ledger content) is not made pending
    (no export would ever take it), it is counted and named for a person instead."""
    set_state(conn, file_id, state, detail)
    _rebuild_sent(conn, file_id)
    ledger = Ledger(conn)
    fi = s.file_items
    again = elsewhere = missing = 0
    shown: list[tuple[str, str]] = []
    for kind in KINDS:
        table = _LEDGER_TABLES[kind]
        rows = conn.execute(
            select(fi.c.id, table.c.version.label("ledger"), s.sent.c.version.label("live"))
            .outerjoin(table, table.c.id == fi.c.id)
            .outerjoin(s.sent, and_(s.sent.c.kind == kind, s.sent.c.id == fi.c.id))
            .where(fi.c.file_id == file_id, fi.c.kind == kind)).all()
        ids = []
        for r in rows:
            if r.ledger is None:
                missing += 1
                if len(shown) < show:
                    shown.append((kind, r.id))
            elif r.live is None:
                again += 1
                ids.append(r.id)
            else:
                # Another live file carries it: decided again only if the ledger's version is
                # not that one (a customer update to send, an entry changed after it was sent).
                elsewhere += 1
                if r.live != r.ledger:
                    ids.append(r.id)
        ledger.mark_pending(kind, ids)
    return Rejection(again, elsewhere, missing, tuple(shown))


def _upsert_sent(conn: Connection, file_id: str) -> bool:
    """When `file_id` is the newest live file, its version of each of its items is the one
    the receiver will hold: write them to `sent` in one upsert (no search for the newest).
    False when that does not hold (or the database has no upsert): rebuild instead."""
    upsert = upsert_insert(conn, s.sent)
    if upsert is None:
        return False
    f, fi = s.files, s.file_items
    seq = select(f.c.sequence).where(f.c.file_id == file_id).scalar_subquery()
    if conn.execute(select(f.c.file_id).where(f.c.state.in_(LIVE), f.c.sequence > seq).limit(1)).first():
        return False
    state = "delivered" if conn.execute(select(f.c.state).where(f.c.file_id == file_id)).scalar() == "accepted" \
        else "in_flight"
    stmt = upsert.from_select(
        ["kind", "id", "version", "file_id", "members", "state"],
        select(fi.c.kind, fi.c.id, fi.c.version, fi.c.file_id, fi.c.members, literal(state))
        .where(fi.c.file_id == file_id))
    ex = stmt.excluded
    conn.execute(stmt.on_conflict_do_update(
        index_elements=[s.sent.c.kind, s.sent.c.id],
        set_={"version": ex.version, "file_id": ex.file_id, "members": ex.members, "state": ex.state}))
    return True


def _rebuild_sent(conn: Connection, file_id: str) -> None:
    """Recompute `sent` for the items of `file_id` from the live files that carry them: the
    newest version in a written, uploaded or accepted file is what the receiver will hold."""
    fi, f = s.file_items, s.files
    for kind in KINDS:
        ids = select(fi.c.id).where(fi.c.file_id == file_id, fi.c.kind == kind)
        conn.execute(delete(s.sent).where(s.sent.c.kind == kind, s.sent.c.id.in_(ids)))
        newest = (select(fi.c.id, func.max(f.c.sequence).label("seq"))
                  .join(f, f.c.file_id == fi.c.file_id)
                  .where(fi.c.kind == kind, fi.c.id.in_(ids), f.c.state.in_(LIVE))
                  .group_by(fi.c.id).subquery())
        # INSERT ... SELECT: a backlog file's million items never pass through Python.
        state = case((f.c.state == "accepted", "delivered"), else_="in_flight")
        conn.execute(insert(s.sent).from_select(
            ["kind", "id", "version", "file_id", "members", "state"],
            select(fi.c.kind, fi.c.id, fi.c.version, fi.c.file_id, fi.c.members, state)
            .join(f, f.c.file_id == fi.c.file_id)
            .join(newest, and_(newest.c.id == fi.c.id, newest.c.seq == f.c.sequence))
            .where(fi.c.kind == kind)))


def known_customer(conn: Connection) -> Callable[[str], bool]:
    """Is a customer id delivered or in flight (so an entry of a later file may name it)?"""
    @lru_cache(maxsize=100_000)
    def known(cid: str) -> bool:
        return conn.execute(select(s.sent.c.id).where(s.sent.c.kind == "customer",
                                                      s.sent.c.id == cid)).first() is not None
    return known


def known_entry_type(conn: Connection) -> Callable[[str], str | None]:
    """The type of an entry delivered or in flight (a later file's match may name it)."""
    @lru_cache(maxsize=100_000)
    def known(eid: str) -> str | None:
        return conn.execute(select(s.entries.c.type).join(
            s.sent, and_(s.sent.c.kind == "entry", s.sent.c.id == s.entries.c.id)).where(
            s.entries.c.id == eid)).scalar()
    return known


def counts(conn: Connection) -> dict[str, int]:
    out = {f"{st}": n for st, n in conn.execute(
        select(s.sent.c.state, func.count()).group_by(s.sent.c.state)).all()}
    out["pending"] = conn.execute(select(func.count()).select_from(s.pending)).scalar_one()
    return out
