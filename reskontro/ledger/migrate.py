"""Bringing a store made by an earlier version up to the current schema, once, at open.

A store brought up to date says so in `meta` (key `schema`: a fingerprint of every table,
column, type and index below, and of this module's VERSION): the next open compares one row
and skips create_all and the reflection of every table (0.25 s of a fleet creditor's night
on PostgreSQL). A store without the row, or with another fingerprint, is upgraded as before.

create_all() makes missing tables only, so columns and indexes added after a table's first
release are added here, in place (nullable columns: old rows say NULL, or are filled below):
- ``entries.origin``/``bank_ref``: the payments the store booked from bank files, and its
  correct-payment entries, are marked the service's own;
- ``stamp`` (entries, customers): stores from before the two stamps (``version`` = what the
  transfer file carries, ``stamp`` = every field) had one version over every field; their
  rows get both, and the journal's record of what was sent is carried over to the new
  versions, so nothing Lowell already has turns changed-after-sent by the upgrade;
- text columns made wider since (bank_payments.kid and bank_code: 25 and 16 → 35, the
  bank formats' Max35Text) are widened in place on PostgreSQL (SQLite does not enforce them);
- the indexes of `find` (expression indexes on lower(...)), the bank payments' and the new
  tables' (actions, receipts, sent_content: made by create_all) are added in place.
"""
from __future__ import annotations

import hashlib
from functools import cache

from sqlalchemy import Connection, Engine, delete, insert, inspect, select, text, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from reskontro.ledger import schema as s

#: raise when upgrade() learns something the schema's shape does not show (a new backfill)
VERSION = 1


@cache
def fingerprint() -> str:
    """The current schema in 32 hex digits: tables, columns (type, nullability, key), indexes."""
    parts = [f"v{VERSION}"]
    for table in s.metadata.sorted_tables:
        parts.append(f"T {table.name}")
        parts += [f"C {c.name} {c.type!r} {c.nullable} {c.primary_key}" for c in table.columns]
        parts += sorted(f"I {i.name} {i.unique} {[str(e) for e in i.expressions]}" for i in table.indexes)
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]


def _shape(conn: Connection) -> str:
    """How many tables, columns and indexes the store has (one catalog query): a table, column
    or index dropped by hand since the store was marked current changes it, and the next open
    upgrades again (as `doctor` promises)."""
    if conn.dialect.name == "sqlite":
        q = ("SELECT (SELECT count(*) FROM sqlite_master WHERE type = 'table'), "
             "(SELECT count(*) FROM sqlite_master m, pragma_table_info(m.name) WHERE m.type = 'table'), "
             "(SELECT count(*) FROM sqlite_master WHERE type = 'index')")
    else:
        # pg_catalog, not information_schema (whose views cost ~10 ms here, a twentieth of a
        # night), and through its indexes, by the store's table names: scanning pg_class for the
        # schema costs in proportion to every schema in the database (~9 ms at 1,000 fleet
        # creditors, ~2 this way, whatever their number).
        q = ("WITH t AS (SELECT c.oid FROM pg_class c WHERE c.relname = ANY(%(names)s) "
             "AND c.relnamespace = current_schema()::regnamespace AND c.relkind IN ('r', 'p')) "
             "SELECT (SELECT count(*) FROM t), "
             "(SELECT count(*) FROM pg_attribute a WHERE a.attrelid IN (SELECT oid FROM t) "
             "AND a.attnum > 0 AND NOT a.attisdropped), "
             "(SELECT count(*) FROM pg_index i WHERE i.indrelid IN (SELECT oid FROM t))")
        return "/".join(str(n) for n in conn.exec_driver_sql(q, {"names": [t.name for t in s.metadata.sorted_tables]}).one())
    return "/".join(str(n) for n in conn.exec_driver_sql(q).one())


def is_current(engine: Engine) -> bool:
    """Whether the store has this version's schema as it was left when marked (False for a new
    or older store, or one changed by hand since)."""
    try:
        with engine.connect() as conn:
            mark = conn.execute(select(s.meta.c.value).where(s.meta.c.key == "schema")).scalar()
            return mark is not None and mark == f"{fingerprint()} {_shape(conn)}"
    except SQLAlchemyError:          # no meta table yet: a new store, or one older than it
        return False


def mark_current(engine: Engine) -> None:
    """After create_all and upgrade: the store has this version's schema."""
    try:
        with engine.begin() as conn:
            conn.execute(delete(s.meta).where(s.meta.c.key == "schema"))
            conn.execute(insert(s.meta).values(key="schema", value=f"{fingerprint()} {_shape(conn)}"))
    except IntegrityError:           # another process marked it meanwhile
        pass


# non-nullable in a new store, filled by _restamp in an old one
_STAMPED = ("entries", "customers")


def upgrade(engine: Engine) -> list[str]:
    """Idempotent: a store that is current is left as it is. Returns "table.column" added."""
    insp = inspect(engine)
    existing = set(insp.get_table_names())
    added = []
    for table in s.metadata.sorted_tables:
        if table.name not in existing:
            continue
        have = {c["name"] for c in insp.get_columns(table.name)}
        for col in table.columns:
            if col.name not in have and (col.nullable or (col.name == "stamp" and table.name in _STAMPED)):
                if _add_column(engine, table, col.name):
                    added.append(f"{table.name}.{col.name}")
    if engine.dialect.name == "postgresql":
        _widen(engine, insp, existing)
    with engine.begin() as conn:
        if "entries.origin" in added:
            _backfill_origin(conn)
        for name in _STAMPED:
            if f"{name}.stamp" in added:
                _restamp(conn, s.metadata.tables[name])
    for table in s.metadata.sorted_tables:
        if table.name in existing:
            have = index_names(engine, table.name)
            for index in table.indexes:
                if index.name not in have:
                    _add_index(engine, index)
    return added


def _widen(engine: Engine, insp, existing: set[str]) -> None:
    """varchar columns narrower in the store than in the schema, widened (never narrowed)."""
    for table in s.metadata.sorted_tables:
        if table.name not in existing:
            continue
        have = {c["name"]: getattr(c["type"], "length", None) for c in insp.get_columns(table.name)}
        for col in table.columns:
            want = getattr(col.type, "length", None)
            if want and have.get(col.name) and have[col.name] < want:
                with engine.begin() as conn:
                    conn.exec_driver_sql(f"ALTER TABLE {table.name} ALTER COLUMN {col.name} TYPE varchar({want})")


def _add_index(engine: Engine, index) -> None:
    # (not checkfirst: SQLAlchemy's check reflects the table's indexes, and warns on lower(...))
    try:
        with engine.begin() as conn:
            index.create(conn)
    except Exception:
        # another process (a helper, a second command) created it meanwhile
        if index.name not in index_names(engine, index.table.name):
            raise


def index_names(engine: Engine, table: str) -> set[str]:
    """The names of a table's indexes. On SQLite read from sqlite_master: SQLAlchemy's
    reflection skips an expression index (lower(name)) with a warning, as if it were absent."""
    if engine.dialect.name == "sqlite":
        with engine.connect() as conn:
            return set(conn.execute(text("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = :t"),
                                    {"t": table}).scalars())
    return {i["name"] for i in inspect(engine).get_indexes(table)}


def _add_column(engine: Engine, table, name: str) -> bool:
    kind = table.c[name].type.compile(dialect=engine.dialect)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(f"ALTER TABLE {table.name} ADD COLUMN {name} {kind}")
        return True
    except Exception:
        # another process (a helper, a second command) added it meanwhile
        if name not in {c["name"] for c in inspect(engine).get_columns(table.name)}:
            raise
        return False


def _backfill_origin(conn: Connection) -> None:
    """A store from before entries.origin: the payments it booked from bank files (their id is
    the bank payment's) and its correct-payment entries (U<id>, N<id>, document KORR-<id>)."""
    conn.execute(text(
        "UPDATE entries SET origin = 'bank', bank_ref = (SELECT b.archive_ref FROM bank_payments b "
        "WHERE b.id = entries.id) WHERE id IN (SELECT id FROM bank_payments WHERE status = 'matched')"))
    conn.execute(text(
        "UPDATE entries SET origin = 'correction' WHERE origin IS NULL AND type IN ('payout', 'payment') "
        "AND document_no LIKE 'KORR-%' AND substr(id, 1, 1) IN ('U', 'N') "
        "AND substr(id, 2, length(document_no) - 5) = substr(document_no, 6)"))


def _restamp(conn: Connection, table) -> None:
    from reskontro.ledger.store import customer_stamp, customer_version, entry_stamp, entry_version, row_customer, row_entry
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
