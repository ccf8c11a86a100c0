"""What Lowell has of an entry that changed after it was sent: its fields as the transfer file
carried them (store.entry_wire), kept in table ``sent_content``.

The journal records only a digest of each version sent. So the content of a version Lowell has
is kept at the one moment it is still known: just before the ledger's entry changes away from
it (an import, or a write of the service's own entries), and when a hand-dropped file carries
other content than the ledger's (transfer.manual_files). `explain` then shows, field by field,
the value sent and the value now.
"""
from __future__ import annotations

import json
from collections.abc import Iterable
from decimal import Decimal

from sqlalchemy import Connection, and_, exists, insert, select

from reskontro.ledger import schema as s

# the transfer file's fields of an entry, in store.entry_wire's (and EntryRecord.content's) order
WIRE_FIELDS = ("type", "customer_id", "document_no", "document_date", "due_date", "amount", "currency", "kid",
               "text")
_AMOUNT = WIRE_FIELDS.index("amount")


def encode(wire: tuple) -> str:
    """The wire tuple as JSON text (every value a string or null; amounts with two decimals)."""
    values = [None if v is None else str(v) for v in wire]
    if values[_AMOUNT] is not None:
        values[_AMOUNT] = f"{Decimal(values[_AMOUNT]):.2f}"
    return json.dumps(values, ensure_ascii=False)


def decode(content: str) -> tuple[str | None, ...]:
    return tuple(json.loads(content))


def keep(conn: Connection, kind: str, id_: str, version: str, wire: tuple) -> None:
    """Keep one version's content (once: a version's content never changes)."""
    sc = s.sent_content
    if conn.execute(select(sc.c.id).where(sc.c.kind == kind, sc.c.id == id_, sc.c.version == version)).first() is None:
        conn.execute(insert(sc).values(kind=kind, id=id_, version=version, content=encode(wire)))


def keep_before_change(conn: Connection, ids) -> int:
    """Before the entries `ids` (a list, or a SELECT of ids) are overwritten: the content of
    each whose current version is the one Lowell has (delivered or in flight). Returns how many
    were kept (only entries Lowell has are read, so this costs nothing for the others)."""
    from reskontro.ledger.store import entry_wire, row_entry
    e, st, sc = s.entries, s.sent, s.sent_content
    q = (select(e).join(st, and_(st.c.kind == "entry", st.c.id == e.c.id, st.c.version == e.c.version))
         .where(e.c.id.in_(ids), ~exists().where(sc.c.kind == "entry", sc.c.id == e.c.id,
                                                 sc.c.version == e.c.version)))
    rows = [{"kind": "entry", "id": r.id, "version": r.version, "content": encode(entry_wire(row_entry(r)))}
            for r in conn.execute(q)]
    if rows:
        conn.execute(insert(sc), rows)
    return len(rows)


def sent_values(conn: Connection, kind: str, id_: str, version: str) -> tuple[str | None, ...] | None:
    """The content of that version as sent, or None when it was not kept (it changed before
    this store kept contents, or it never changed)."""
    sc = s.sent_content
    content = conn.execute(select(sc.c.content).where(sc.c.kind == kind, sc.c.id == id_,
                                                      sc.c.version == version)).scalar()
    return None if content is None else decode(content)


def differences(sent: Iterable[str | None], now: tuple) -> list[tuple[str, str | None, str | None]]:
    """(field, sent value, current value) of each field that differs."""
    current = decode(encode(now))
    return [(f, a, b) for f, a, b in zip(WIRE_FIELDS, sent, current) if a != b]
