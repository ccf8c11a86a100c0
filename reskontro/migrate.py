"""Bringing a store made by an earlier version up to the current schema, once, at open.

create_all() makes missing tables only, so columns and indexes added after a table's first
release are added here. Stores from before the two stamps (``version`` = what the transfer
file carries, ``stamp`` = every field) had one version over every field: their rows get both,
and the journal's record of what was sent is carried over to the new versions, so nothing
Lowell already has turns changed-after-sent by the upgrade.
"""
from __future__ import annotations

from sqlalchemy import Connection, Engine, inspect, select, update

from . import schema as s

# table -> columns added after its first release (old rows: NULL, or as _restamp fills them)
_ADDED_COLUMNS = {"files": ("sha256",), "entries": ("stamp",), "customers": ("stamp",)}


def upgrade(engine: Engine) -> None:
    """Idempotent: a store that is current is left as it is."""
    insp = inspect(engine)
    for table, columns in _ADDED_COLUMNS.items():
        have = {c["name"] for c in insp.get_columns(table)}
        for name in columns:
            if name not in have:
                _add_column(engine, s.metadata.tables[table], name)
    have = {i["name"] for i in insp.get_indexes("entries")}
    for index in s.entries.indexes:
        if index.name not in have:
            with engine.begin() as conn:
                index.create(conn, checkfirst=True)


def _add_column(engine: Engine, table, name: str) -> None:
    kind = table.c[name].type.compile(dialect=engine.dialect)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(f"ALTER TABLE {table.name} ADD COLUMN {name} {kind}")
            if name == "stamp":
                _restamp(conn, table)
    except Exception:
        # another process (a helper, a second command) added it meanwhile
        if name not in {c["name"] for c in inspect(engine).get_columns(table.name)}:
            raise


def _restamp(conn: Connection, table) -> None:
    from .store import customer_stamp, customer_version, entry_stamp, entry_version, row_customer, row_entry
    kind = "entry" if table is s.entries else "customer"
    to_domain, version, stamp = ((row_entry, entry_version, entry_stamp) if kind == "entry"
                                 else (row_customer, customer_version, customer_stamp))
    for row in conn.execute(select(table)).all():
        item = to_domain(row)
        new = version(item)
        conn.execute(update(table).where(table.c.id == row.id).values(version=new, stamp=stamp(item)))
        for jt in (s.sent, s.file_items):
            conn.execute(update(jt).where(jt.c.kind == kind, jt.c.id == row.id,
                                          jt.c.version == row.version).values(version=new))
