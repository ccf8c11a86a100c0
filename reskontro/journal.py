"""The transfer journal: which version of which customer, entry and match went in which file,
and each file's state. It is what makes every run exactly-once.

File states: writing (reserved, not complete) -> written (complete in outbox/) -> uploaded ->
accepted | rejected; invalid (failed the pre-send check) and abandoned (a crash before the
file was complete) never reached the receiver. An item is *in flight* while the file that
carries its current version is written or uploaded, *delivered* once that file is accepted.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone

from sqlalchemy import Connection, and_, case, delete, func, insert, select, update

from . import schema as s
from .store import Ledger

LIVE = ("written", "uploaded", "accepted")      # files whose content the receiver has or will have
IN_FLIGHT = ("written", "uploaded")
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


def add_items(conn: Connection, file_id: str, rows: list[dict]) -> None:
    """rows: dicts with kind, id, version and (matches) members."""
    if not rows:
        return
    # The DBAPI's executemany of plain tuples: SQLAlchemy's per-row parameter processing cost
    # more than the insert itself (a backlog file journals a million items).
    d = conn.dialect
    q = d.identifier_preparer.quote
    cols = ("file_id", "kind", "id", "version", "members")
    mark = "?" if d.paramstyle == "qmark" else "%s"
    sql = (f"INSERT INTO {q(s.file_items.name)} ({', '.join(q(c) for c in cols)}) "
           f"VALUES ({', '.join([mark] * len(cols))})")
    conn.exec_driver_sql(sql, [(file_id, r["kind"], r["id"], r["version"], r.get("members"))
                               for r in rows])


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
                      m["entry_count"], m["detail"])


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


def mark_written(conn: Connection, file_id: str, entry_count: int) -> None:
    """The file is complete in the outbox: its items are in flight, no longer pending."""
    set_state(conn, file_id, "written", entry_count=entry_count)
    _rebuild_sent(conn, file_id)
    for kind in KINDS:
        conn.execute(delete(s.pending).where(s.pending.c.kind == kind, s.pending.c.id.in_(
            select(s.file_items.c.id).where(s.file_items.c.file_id == file_id, s.file_items.c.kind == kind))))


def drop_file(conn: Connection, file_id: str, state: str, detail: str) -> None:
    """A file that never reached the receiver (invalid, abandoned): its items were never sent."""
    set_state(conn, file_id, state, detail)
    _rebuild_sent(conn, file_id)


def mark_uploaded(conn: Connection, file_id: str) -> None:
    set_state(conn, file_id, "uploaded")


def accept(conn: Connection, file_id: str) -> None:
    set_state(conn, file_id, "accepted")
    conn.execute(update(s.sent).where(s.sent.c.file_id == file_id).values(state="delivered"))


def reject(conn: Connection, file_id: str, detail: str) -> int:
    """The receiver rejected the file: its content returns to pending, to go again corrected."""
    set_state(conn, file_id, "rejected", detail)
    _rebuild_sent(conn, file_id)
    ledger = Ledger(conn)
    n = 0
    for kind in KINDS:
        ids = conn.execute(select(s.file_items.c.id).where(
            s.file_items.c.file_id == file_id, s.file_items.c.kind == kind)).scalars().all()
        ledger.mark_pending(kind, ids)
        n += len(ids)
    return n


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


def counts(conn: Connection) -> dict[str, int]:
    out = {f"{st}": n for st, n in conn.execute(
        select(s.sent.c.state, func.count()).group_by(s.sent.c.state)).all()}
    out["pending"] = conn.execute(select(func.count()).select_from(s.pending)).scalar_one()
    return out
