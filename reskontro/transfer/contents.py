"""What one transfer file carried: its journal record, counts by kind, and its items (paged)."""
from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, func, select

from reskontro.ledger import schema as s
from reskontro.transfer.journal import IN_FLIGHT, FileRecord, file_record


@dataclass(frozen=True)
class FileItem:
    kind: str               # customer | entry | match
    id: str
    version: str            # the version this file carried
    current: bool           # the ledger holds that version still (False: changed since, or not in it)


@dataclass(frozen=True)
class FileContents:
    record: FileRecord
    counts: dict[str, int]  # by kind
    items: list[FileItem]   # the page asked for, kinds in file order (customers, entries, matches)
    total: int

    @property
    def in_flight(self) -> bool:
        return self.record.state in IN_FLIGHT


_ORDER = {"customer": 0, "entry": 1, "match": 2}
_TABLES = {"customer": s.customers, "entry": s.entries, "match": s.matches}


def file_contents(conn: Connection, file_id: str, *, offset: int = 0, limit: int = 50) -> FileContents | None:
    record = file_record(conn, file_id)
    if record is None:
        return None
    fi = s.file_items
    counts = dict(conn.execute(select(fi.c.kind, func.count()).where(fi.c.file_id == file_id)
                               .group_by(fi.c.kind)).all())
    items: list[FileItem] = []
    skip, room = offset, limit
    for kind in sorted(counts, key=lambda k: _ORDER.get(k, 9)):
        if skip >= counts[kind]:
            skip -= counts[kind]
            continue
        table = _TABLES[kind]
        rows = conn.execute(select(fi.c.id, fi.c.version, table.c.version.label("ledger"))
                            .outerjoin(table, table.c.id == fi.c.id)
                            .where(fi.c.file_id == file_id, fi.c.kind == kind)
                            .order_by(fi.c.id).offset(skip).limit(room)).all()
        items += [FileItem(kind, r.id, r.version, r.ledger == r.version) for r in rows]
        skip, room = 0, limit - len(items)
        if room <= 0:
            break
    return FileContents(record, counts, items, sum(counts.values()))
