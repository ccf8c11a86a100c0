"""The items a reserved file carries, read back from the journal for rendering, in id order
(file_items is kept in that order: no sort), as domain types."""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import date

from sqlalchemy import Connection, and_, select

from reskontro.domain import Customer, Entry, Match, from_ore
from reskontro.ledger import schema as s
from reskontro.ledger.store import row_customer
from reskontro.rules.decide import fetch_raw


def _customer_to_send(row) -> Customer:
    """An org no goes only with a business customer (the receiver's rule); for a private
    customer that has one, the rules warn and the number stays home."""
    c = row_customer(row)
    return c if c.type == "business" or c.org_no is None else replace(c, org_no=None)


def stream(conn: Connection, file_id: str, kind: str):
    fi = s.file_items
    if kind == "match":
        q = select(fi.c.id, fi.c.members).where(fi.c.file_id == file_id, fi.c.kind == "match").order_by(fi.c.id)
        return (Match(r.id, tuple(r.members.split())) for r in conn.execute(q))
    if kind == "customer":
        table, cols = s.customers, [s.customers]
    else:
        table, cols = s.entries, [s.entries.c[k] for k in _ENTRY_COLS]
    q = (select(*cols).join(fi, and_(fi.c.id == table.c.id, fi.c.kind == kind, fi.c.file_id == file_id))
         .order_by(fi.c.id))   # file_items is kept in id order: no sort
    # Raw DBAPI rows (decide.fetch_raw): SQLAlchemy's per-value result processing cost more than
    # the rest of the stream; the few conversions the file needs are done here.
    rows = (r for part in fetch_raw(conn, q, 5000).partitions(5000) for r in part)
    if kind == "customer":
        return (_customer_to_send(r) for r in rows)
    return _entries(rows, conn.dialect.name == "sqlite")


_ENTRY_COLS = ("id", "customer_id", "type", "document_no", "document_date", "due_date", "amount_ore",
               "currency", "kid", "status", "factoring", "opt_out", "reverses", "source",
               "dunning_level", "text")


def _entries(rows, dates_as_text: bool) -> Iterator[Entry]:
    """store.row_entry for raw rows (in _ENTRY_COLS order): SQLite gives dates as ISO text
    and booleans as 0/1, other drivers give date and bool objects."""
    day = date.fromisoformat if dates_as_text else (lambda v: v)
    for (id_, cid, type_, doc, doc_date, due, ore, cur, kid, status, factoring, opt_out, reverses,
         source, dunning, text) in rows:
        yield Entry(id_, cid, type_, doc, day(doc_date), from_ore(ore), cur,
                    None if due is None else day(due), kid, status,
                    None if factoring is None else bool(factoring), bool(opt_out), reverses, source,
                    dunning or 0, text)


