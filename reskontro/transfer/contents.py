"""What one transfer file carried: its journal record, counts by kind, and its items a page at a
time (keyset: after or before an item, so the last page of a 500,000-item file costs what the
first does)."""
from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, func, select

from reskontro.ledger import schema as s
from reskontro.transfer.journal import IN_FLIGHT, FileRecord, file_record

KINDS = ("customer", "entry", "match")     # the file's order
_TABLES = {"customer": s.customers, "entry": s.entries, "match": s.matches}


@dataclass(frozen=True)
class FileItem:
    kind: str               # customer | entry | match
    id: str
    version: str            # the version this file carried
    current: bool           # the ledger holds that version still (False: changed since, or not in it)

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.id}"


@dataclass(frozen=True)
class FileContents:
    record: FileRecord
    counts: dict[str, int]  # by kind
    items: list[FileItem]   # this page, in file order (customers, entries, matches; by id)
    more_before: bool
    more_after: bool

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def in_flight(self) -> bool:
        return self.record.state in IN_FLIGHT


def item_counts(conn: Connection, file_id: str) -> dict[str, int]:
    fi = s.file_items
    return dict(conn.execute(select(fi.c.kind, func.count()).where(fi.c.file_id == file_id)
                             .group_by(fi.c.kind)).all())


def file_contents(conn: Connection, file_id: str, *, after: str | None = None, before: str | None = None,
                  limit: int = 50, counts: dict[str, int] | None = None) -> FileContents | None:
    """A page of `limit` items after the item `after` ("kind:id"), or before `before`, or the
    first page. `counts`: the file's counts when the caller has them (a written file's
    content never changes)."""
    record = file_record(conn, file_id)
    if record is None:
        return None
    counts = counts if counts is not None else item_counts(conn, file_id)
    backwards = before is not None and after is None
    mark = _parse(before if backwards else after)
    rows = _page(conn, file_id, mark, limit + 1, backwards)
    more = len(rows) > limit
    rows = rows[:limit]
    if backwards:
        rows.reverse()
    items = [FileItem(k, i, v, cur == v) for k, i, v, cur in rows]
    if backwards:
        return FileContents(record, counts, items, more, True)
    return FileContents(record, counts, items, mark is not None, more)


def _parse(key: str | None) -> tuple[int, str] | None:
    if not key or ":" not in key:
        return None
    kind, _, ident = key.partition(":")
    return (KINDS.index(kind), ident) if kind in KINDS else None


def _page(conn: Connection, file_id: str, mark: tuple[int, str] | None, limit: int,
          backwards: bool) -> list[tuple[str, str, str, str | None]]:
    """Up to `limit` items from `mark` on (or back), one kind after another, each by its index."""
    fi = s.file_items
    kinds = range(len(KINDS))
    if mark is not None:
        kinds = [k for k in kinds if (k <= mark[0] if backwards else k >= mark[0])]
    if backwards:
        kinds = list(reversed(list(kinds)))
    out: list[tuple[str, str, str, str | None]] = []
    for k in kinds:
        kind, table = KINDS[k], _TABLES[KINDS[k]]
        q = (select(fi.c.id, fi.c.version, table.c.version.label("ledger"))
             .outerjoin(table, table.c.id == fi.c.id)
             .where(fi.c.file_id == file_id, fi.c.kind == kind))
        if mark is not None and k == mark[0]:
            q = q.where(fi.c.id < mark[1] if backwards else fi.c.id > mark[1])
        q = q.order_by(fi.c.id.desc() if backwards else fi.c.id).limit(limit - len(out))
        out += [(kind, r.id, r.version, r.ledger) for r in conn.execute(q)]
        if len(out) >= limit:
            break
    return out
