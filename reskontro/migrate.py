"""Bringing a store made by an earlier version up to the current schema, once, at open.

Stores from before the two stamps (``version`` = what the transfer file carries, ``stamp`` =
every field) had one version over every field. Their rows get both, and the journal's
record of what was sent is carried over to the new versions, so nothing Lowell already has
turns changed-after-sent by the upgrade.
"""
from __future__ import annotations

from sqlalchemy import Connection, Engine, inspect, select, text, update

from . import schema as s


def upgrade(engine: Engine) -> None:
    """Idempotent: a store that is current is left as it is."""
    insp = inspect(engine)
    with engine.begin() as conn:
        for table in (s.entries, s.customers):
            if "stamp" not in {c["name"] for c in insp.get_columns(table.name)}:
                conn.execute(text(f"ALTER TABLE {table.name} ADD COLUMN stamp VARCHAR(16) NOT NULL DEFAULT ''"))
                _restamp(conn, table)
        have = {i["name"] for i in insp.get_indexes("entries")}
        for index in s.entries.indexes:
            if index.name not in have:
                index.create(conn)


def _restamp(conn: Connection, table) -> None:
    from .store import customer_stamp, customer_version, entry_stamp, entry_version, row_customer, row_entry
    kind = "entry" if table is s.entries else "customer"
    to_domain, version, stamp = ((row_entry, entry_version, entry_stamp) if kind == "entry"
                                 else (row_customer, customer_version, customer_stamp))
    rows = conn.execute(select(table)).all()
    for row in rows:
        item = to_domain(row)
        new = version(item)
        conn.execute(update(table).where(table.c.id == row.id).values(version=new, stamp=stamp(item)))
        for jt in (s.sent, s.file_items):
            conn.execute(update(jt).where(jt.c.kind == kind, jt.c.id == row.id,
                                          jt.c.version == row.version).values(version=new))
