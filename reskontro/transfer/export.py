"""`reskontro export`: tonight's daily file (or the backlog file), exactly once.

Steps, each safe to die after (the next run completes the work, nothing is sent twice):
1. decide, and reserve the file: its sequence and every item it will carry go into the journal
   in one transaction (state ``writing``);
2. render to ``outbox/<FileId>.xml.part`` and fsync;
3. check it against the XSD and the receiver's other rules; a file that fails moves to
   ``outbox/rejected/`` with the reason beside it and its items stay pending;
4. rename to ``outbox/<FileId>.xml`` (complete: only now may it be sent) and fsync the folder;
5. mark it written: its items are in flight.
The SHA-256 of the bytes written is journalled between steps 2 and 3, and kept when the file
is marked written: `send` uploads exactly those bytes or nothing. A run that finds a file still
``writing`` finishes it if step 4 happened and the file still holds those bytes (else it is set
aside), or else abandons it (its sequence number stays unused: the receiver allows gaps) and its
items go again.
"""
from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, delete, exists, select

from reskontro.config import Config
from reskontro.errors import ExportError
from reskontro.files.folders import create_temporary, set_aside
from reskontro.ledger import schema as s
from reskontro.ledger.store import Ledger
from reskontro.rules.decide import decide_ledger, decision_basis, run_day
from reskontro.rules.engine import RuleEngine
from reskontro.rules.history import Recorder, Writer
from reskontro.testing import faults
from reskontro.transfer import journal
from reskontro.transfer.contract import check_transfer_file
from reskontro.transfer.helpers import Helpers
from reskontro.transfer.items import stream
from reskontro.transfer.recovery import recover
from reskontro.transfer.render import FileHeader, TransferTotals, make_environment, render_transfer
from reskontro.transfer.selection import (Batch, changed_customers, clear_handled, record_settled_history,
                                          select_all, take_in)

OSLO = ZoneInfo("Europe/Oslo")


@dataclass(frozen=True)
class ExportResult:
    file_id: str
    path: Path | None            # None when the file failed its check
    kind: str
    customers: int
    entries: int
    matches: int
    problems: tuple[str, ...] = ()
    recovered: tuple[str, ...] = ()
    held: int = 0                # entries decided tonight (new or changed) that the rules hold
    held_new: int | None = None  # of those, held new tonight (rules.holds; None: not told)
    held_lines: tuple[str, ...] = ()   # the new holds for a person, one line per rule


@dataclass(frozen=True)
class _Reserved:
    header: FileHeader
    records: int                 # customers + entries + matches reserved
    held: int = 0                # entries decided tonight that the rules hold

    @property
    def name(self) -> str:
        return f"{self.header.file_id}.xml"


def export(config: Config, db, engine: RuleEngine, *, backlog: bool = False,
           now: datetime | None = None, progress: Callable[[str, int], None] | None = None) -> ExportResult:
    """Write one transfer file into the outbox. The caller holds the run lock."""
    outbox = config.outbox
    outbox.mkdir(parents=True, exist_ok=True)
    recovered = tuple(recover(db.begin, outbox, config.xsd))
    now = (now or datetime.now(OSLO)).astimezone(OSLO)
    with ExitStack() as stack:       # closes the helper processes, whatever happens
        helpers = Helpers(config, stack)
        file = _reserve(config, db, engine, backlog, now, helpers, progress)            # step 1
        faults.point("after-reserve")
        part, totals, sha256 = _render(config, db, file, helpers, progress)              # step 2
        problems = _check_rename_and_mark(config, db, part, file, totals, sha256, helpers)  # 3-5
    kind, fid = file.header.kind, file.header.file_id
    counts = (totals.customer_count, totals.entry_count, totals.match_count)
    if problems:
        _set_aside(config, db, part, file, problems)
        return ExportResult(fid, None, kind, *counts, tuple(str(p) for p in problems), recovered, file.held)
    faults.point("after-commit")
    return ExportResult(fid, config.outbox / file.name, kind, *counts, (), recovered, file.held)


@dataclass(frozen=True)
class ExportPreview:
    """What `export` would write now (`export --dry-run`): nothing is reserved or written."""
    file_id: str                 # the FileId it would get (the next sequence number)
    kind: str
    customers: int
    entries: int
    matches: int
    recovery: tuple[str, ...] = ()   # what it would first do with a crashed export's file

    @property
    def name(self) -> str:
        return f"{self.file_id}.xml"


def preview(config: Config, db, engine: RuleEngine, *, backlog: bool = False,
            now: datetime | None = None) -> ExportPreview:
    """Step 1 without its writes: the same decisions and the same selection as `export`
    (hence the plan's numbers), counted instead of reserved; reads only (no journal row, no
    sequence number, no file, pending left as it is)."""
    now = (now or datetime.now(OSLO)).astimezone(OSLO)
    kind = "backlog" if backlog else "daily"
    with db.connect() as conn:
        recovery = tuple(_recovery_preview(conn, config.outbox))
        seq = journal.next_sequence(conn)       # (an abandoned file keeps its number)
        header = FileHeader(config.sender_id, config.creditor_org_no, seq, kind, now, now, config.base_currency)
        today = run_day(config.tz, now)
        full = backlog or Ledger(conn).get_meta("decision_basis") != decision_basis(engine, config.mode, today)
        batch = Batch(lambda rows: None)        # counted, not journalled
        handled: list[tuple[str, str]] = []
        # a backlog previews its settled groups as history (decide_ledger backlog=True), as
        # the real one records them before deciding
        select_all(decide_ledger(conn, engine, config.mode, only_pending=not full, backlog=backlog, today=today),
                   batch, backlog, handled, handled.clear)
        changed_customers(conn, batch, engine, config.mode)
    c = batch.counts
    return ExportPreview(header.file_id, kind, c["customer"], c["entry"], c["match"], recovery)


def _recovery_preview(conn, outbox: Path) -> list[str]:
    """What recovery would do with files a crashed export left `writing` (recovery.recover,
    read-only)."""
    out = []
    for f in journal.files(conn, ["writing"]):
        final = outbox / f.name
        if final.is_file() and not final.is_symlink():
            if f.sha256 is None or _sha256_of(final) == f.sha256:
                out.append(f"{f.file_id}: would be completed (the file is whole in the outbox)")
            else:
                out.append(f"{f.file_id}: would be set aside (the file in the outbox is not the one written)")
        else:
            out.append(f"{f.file_id}: would be abandoned (incomplete); its content goes in the next file")
    return out


def _sha256_of(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _reserve(config: Config, db, engine: RuleEngine, backlog: bool, now: datetime, helpers: Helpers,
             progress) -> _Reserved:
    """Step 1: decide, and reserve the file: its sequence and every item it carries go into
    the journal in one transaction (state writing)."""
    kind = "backlog" if backlog else "daily"
    with db.begin() as conn:
        seq = journal.next_sequence(conn)
        header = FileHeader(config.sender_id, config.creditor_org_no, seq, kind, now, now, config.base_currency)
        journal.reserve_file(conn, header.file_id, seq, kind, f"{header.file_id}.xml", now, now)
        writer = journal.ItemWriter(conn, header.file_id)
        batch = Batch(writer.add)
        handled: list[tuple[str, str]] = []
        flush = lambda: clear_handled(conn, handled)   # noqa: E731
        # Another rule file or mode may decide anything differently: then decide everything once.
        # So may another day, when a rule reads the date (days_past_due): then every night.
        rf = engine.rule_file   # the rules as loaded (not the file, which may have changed since)
        today = run_day(config.tz, now)
        basis = decision_basis(engine, config.mode, today)
        ledger = Ledger(conn)
        full = backlog or ledger.get_meta("decision_basis") != basis
        history = Writer(conn, rf, now, header.file_id)        # decision changes, journaled
        elsewhere = helpers.start_deciding(conn, rf, full, backlog, today)
        settled = record_settled_history(conn) if backlog else None
        decided = decide_ledger(conn, engine, config.mode, only_pending=not full,
                                skip_matches=None if settled is None else select(settled.c.match_id),
                                unmatched=not elsewhere, today=today)
        here = Recorder(history)
        n = select_all(here.watch(decided), batch, backlog, handled, flush, progress)
        faults.point("mid-decide")        # (the decide process, if any, may still be working)
        if elsewhere:
            records = helpers.decided()
            if records is None:           # the child failed: decide its half here
                select_all(here.watch(decide_ledger(conn, engine, config.mode, matched=False, today=today)),
                           batch, backlog, handled, flush, progress, n)
            else:
                take_in(batch, handled, records, flush, history)
        here.flush()
        history.finish()
        helpers.start_checking(batch.counts["entry"], backlog)
        # A customer Lowell has never had travels with its first entry (read from the ledger,
        # not from pending); pending only keeps changes of customers Lowell has.
        conn.execute(delete(s.pending).where(s.pending.c.kind == "customer", ~exists().where(
            s.sent.c.kind == "customer", s.sent.c.id == s.pending.c.id)))
        changed_customers(conn, batch, engine, config.mode)
        batch.flush()
        writer.close()
        clear_handled(conn, handled)
        ledger.set_meta("decision_basis", basis)
        if settled is not None:
            settled.drop(conn)
    return _Reserved(header, sum(batch.counts.values()), batch.held)


def _render(config: Config, db, file: _Reserved, helpers: Helpers, progress) -> tuple[Path, TransferTotals, str]:
    """Step 2: render to outbox/<FileId>.xml.part (created exclusively, never through a link)
    and fsync; the SHA-256 of the bytes is journalled before the check."""
    file_id = file.header.file_id
    part = config.outbox / (file.name + ".part")
    env = make_environment(config.templates_dir)
    try:
        fd = create_temporary(part)      # a stale file or planted link at the name is unlinked
    except OSError as exc:
        _abandon(db, file_id, f"cannot create {part}: {exc.strerror or exc}")
        raise ExportError(f"cannot write tonight's file into the outbox: {part}: {exc.strerror or exc}; "
                          f"{file_id} was abandoned and its content stays pending") from None
    hashed = _Hashing()
    try:
        with db.connect() as conn, os.fdopen(fd, "wb") as f:
            hashed.out = helpers.writing(f, part, file.records)
            totals = render_transfer(hashed, file.header, stream(conn, file_id, "customer"),
                                     _progress(stream(conn, file_id, "entry"), progress),
                                     stream(conn, file_id, "match"), env)
            faults.point("mid-render")
            f.flush()
            os.fsync(f.fileno())
            helpers.written(f.tell())
    except OSError as exc:     # a full disk, say: the file is started over by the next run
        part.unlink(missing_ok=True)
        _abandon(db, file_id, f"cannot write {part}: {exc.strerror or exc}")
        raise ExportError(f"cannot write tonight's file {part}: {exc.strerror or exc}; "
                          f"{file_id} was abandoned and its content stays pending") from None
    sha256 = hashed.hexdigest()
    with db.begin() as conn:     # durable before the rename: a recovery knows the bytes to expect
        journal.note_sha256(conn, file_id, sha256)
    faults.point("after-render")
    return part, totals, sha256


def _check_rename_and_mark(config: Config, db, part: Path, file: _Reserved, totals: TransferTotals, sha256: str,
                           helpers: Helpers) -> list:
    """Steps 3-5: check against the XSD and the receiver's other rules; if it passes, rename
    to outbox/<FileId>.xml (only complete files carry that name), fsync the folder, and mark
    it written (its items are in flight). Step 5's journal work is done while a check process
    finishes (it reads behind the writer), in a transaction committed only after the rename,
    else rolled back: what is durable happens in this order. The check's errors."""
    file_id = file.header.file_id
    with db.connect() as conn:
        if not helpers.checking:        # checked here, on this connection, before step 5's work
            problems = _check(config, db, part, helpers, conn)                            # step 3
            conn.rollback()             # (the check's reads: no transaction left open)
        tx = conn.begin()
        try:
            if helpers.checking:
                journal.mark_written(conn, file_id, totals.entry_count, sha256=sha256)
                problems = _check(config, db, part, helpers)                              # step 3
            faults.point("after-check")
            if not problems:
                if not helpers.checking:
                    journal.mark_written(conn, file_id, totals.entry_count, sha256=sha256)
                os.replace(part, config.outbox / file.name)                               # step 4
                _fsync_dir(config.outbox)
                faults.point("after-rename")
                tx.commit()                                                               # step 5
        finally:
            if tx.is_active:
                tx.rollback()
    return problems


def _check(config: Config, db, part: Path, helpers: Helpers, conn: Connection | None = None) -> list:
    """The pre-send check's errors: the check process's answer, else checked here (no
    process, or it failed). The check must see what was delivered or in flight before this
    file, not this file's own journal work: earlier files are looked up on `conn` when it has
    none of that work, else on a connection of their own (a night's second connection, a new
    PostgreSQL backend, only when the check process failed)."""
    problems = helpers.check_result()
    if problems is None:
        if conn is not None:
            return _check_here(config, conn, part)
        with db.connect() as own:
            return _check_here(config, own, part)
    return problems


def _check_here(config: Config, conn: Connection, part: Path) -> list:
    return check_transfer_file(part, config.xsd, known_customer=journal.known_customer(conn),
                               known_entry_type=journal.known_entry_type(conn))


def _set_aside(config: Config, db, part: Path, file: _Reserved, problems: list) -> None:
    """A file that failed its check never leaves the outbox: rejected/, with the reason; its
    content stays pending."""
    name = file.name
    # The errors name the .part file they were found in; it is now `name` in rejected/.
    text = "\n".join(str(p).replace(name + ".part", name) for p in problems)
    set_aside(part, config.outbox / "rejected",
              f"{name} failed the pre-send check and was not sent; its content stays pending.\n{text}", name)
    with db.begin() as conn:
        journal.drop_file(conn, file.header.file_id, "invalid", text[:4000])


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _abandon(db, file_id: str, why: str) -> None:
    with db.begin() as conn:
        journal.drop_file(conn, file_id, "abandoned", why)


class _Hashing:
    """Passes the file's bytes on to `out` and hashes them on the way: the journal keeps the
    SHA-256 of what was written (and checked), and the upload sends exactly that or nothing."""

    def __init__(self) -> None:
        self.out = None
        self._h = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self._h.update(data)
        return self.out.write(data)

    def hexdigest(self) -> str:
        return self._h.hexdigest()


def _progress(it: Iterator, progress) -> Iterator:
    if progress is None:
        return it

    def gen():
        for i, x in enumerate(it, 1):
            if i % 20000 == 0:
                progress("written", i)
            yield x
    return gen()
