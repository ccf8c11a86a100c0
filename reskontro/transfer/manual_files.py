"""Journalling a transfer file that support dropped into the outbox, item by item.

Such a file (a backlog export made elsewhere, say) carries customers, entries and matches the
receiver will hold once it accepts the file; the journal must know them as it knows our own,
or our next file would send them again: the same content would be ignored, but an entry the
ledger has with other content would get the whole file rejected, again and again.

So each item goes into the journal with a version: the ledger's own version when the file
shows the ledger's content (our export then treats it as sent), else a version no ledger
content has, so a changed entry is held (rule changed-after-sent) for a person to look at, a
changed customer is sent again (it replaces), and an entry the ledger does not have yet is
held once it arrives. Match members are journalled as the file lists them.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from sqlalchemy import Connection, select

from reskontro.transfer import journal
from reskontro.ledger import schema as s
from reskontro.transfer.contract import CheckResult, ContractError, CustomerRecord, EntryRecord, MatchRecord, TransferChecker
from reskontro.files.folders import check_pinned
from reskontro.ledger.sent_content import keep
from reskontro.ledger.store import BATCH, customer_wire, digest, entry_wire, row_customer, row_entry

_CHUNK = 2000


def journal_manual_file(conn: Connection, path: Path, xsd: Path, file_id: str) -> list[ContractError]:
    """Check the file at `path` (reserved as `file_id` in this transaction) and journal its
    items, in one pass; the contract errors, if any (then the caller rolls back). The SHA-256
    of the checked bytes goes into the journal: only those bytes are ever uploaded."""
    writer = journal.ItemWriter(conn, file_id)
    sinks = {kind: _Sink(conn, kind, writer.add) for kind in ("customer", "entry", "match")}
    into = CheckResult([], customers=sinks["customer"], entries=sinks["entry"], matches=sinks["match"])
    result, sha256 = check_pinned(path, lambda source: TransferChecker(xsd).check(
        source, path.name, into=into, known_customer=journal.known_customer(conn),
        known_entry_type=journal.known_entry_type(conn)))
    if result.errors:
        return result.errors
    if sha256 is None:
        return [ContractError(None, None, "the file changed while it was being checked; drop it again "
                              "once it is complete", code="changed", file=path.name)]
    for sink in sinks.values():
        sink.flush()
    writer.close()
    journal.mark_written(conn, file_id, sinks["entry"].count, sha256=sha256)
    return []


class _Sink:
    """Records of one kind from the check, turned into journal rows in chunks."""

    def __init__(self, conn: Connection, kind: str, add: Callable[[list[tuple]], None]) -> None:
        self.conn, self.kind, self.add = conn, kind, add
        self.records: list = []
        self.count = 0

    def append(self, record: CustomerRecord | EntryRecord | MatchRecord) -> None:
        self.records.append(record)
        self.count += 1
        if len(self.records) >= _CHUNK:
            self.flush()

    def flush(self) -> None:
        records, self.records = self.records, []
        if self.kind == "match":
            rows = []
            for m in records:
                members = sorted(set(m.entry_refs))
                rows.append(("match", m.id, digest(*members), " ".join(members)))
            self.add(rows)
            return
        table = s.customers if self.kind == "customer" else s.entries
        ledger = {}
        ids = [r.id for r in records]
        for i in range(0, len(ids), BATCH):
            ledger.update((row.id, row) for row in self.conn.execute(
                select(table).where(table.c.id.in_(ids[i:i + BATCH]))))
        view = _customer_view if self.kind == "customer" else _entry_view
        rows = []
        for r in records:
            content = _record_content(r)
            row = ledger.get(r.id)
            same = row is not None and view(row) == content
            version = row.version if same else _foreign(content)
            if not same and self.kind == "entry":     # what Lowell gets of it, for explain
                keep(self.conn, "entry", r.id, version, content)
            rows.append((self.kind, r.id, version, None))
        self.add(rows)


def _foreign(content: tuple) -> str:
    """A version no ledger content has (ledger versions are 16 hex digits)."""
    return "x" + digest(*content)[1:]


def _record_content(r: CustomerRecord | EntryRecord) -> tuple:
    if isinstance(r, EntryRecord):
        return r.content()
    return (r.type, r.name, r.org_no, tuple(r.lines), r.post_code, r.city, r.country, r.email, r.phone)


def _entry_view(row) -> tuple:
    """A ledger entry as a transfer file shows it (EntryRecord.content's order)."""
    return entry_wire(row_entry(row))


def _customer_view(row) -> tuple:
    """A ledger customer as a transfer file shows it (an org no only for a business)."""
    return customer_wire(row_customer(row))
