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
from dataclasses import dataclass, replace
from datetime import date, datetime
from itertools import groupby
from pathlib import Path
from zoneinfo import ZoneInfo

from sqlalchemy import (Column, Connection, MetaData, String, Table, and_, delete, exists, func, insert,
                        select)

from reskontro.testing import faults
from reskontro.transfer import journal
from reskontro.ledger import schema as s
from reskontro.config import Config
from reskontro.transfer.check_worker import Announcing, CheckWorker
from reskontro.transfer.decide_worker import DecideWorker
from reskontro.transfer.contract import TransferChecker, check_transfer_file
from reskontro.rules.decide import Decided, decide_ledger, fetch_raw, goes_tonight, settled_groups
from reskontro.rules.facts import DEFAULT_FACT, customer_checks
from reskontro.files.folders import check_pinned, create_temporary, set_aside
from reskontro.domain import Customer, Entry, Match, from_ore
from reskontro.rules.engine import RuleEngine
from reskontro.errors import ExportError
from reskontro.ledger.store import BATCH, Ledger, digest, row_customer
from reskontro.transfer.render import FileHeader, make_environment, render_transfer

OSLO = ZoneInfo("Europe/Oslo")
FLUSH = 5000
# From this many unmatched entries a ledger decided whole decides them in a second process.
PARALLEL_DECIDE_FROM = 50_000
# From this many entries the check runs in a second process while the file is written (its
# start-up, ~0.3 s of one core, is then small beside the work it takes over).
_PARALLEL_CHECK_FROM = 20_000


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


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def recover(conn_factory, outbox: Path, xsd: Path | None = None) -> list[str]:
    """Finish or abandon files a crashed run left in state ``writing``. A complete file (it
    was renamed only after passing its check) is taken if it still holds the bytes written,
    whose SHA-256 was journalled before the check; a file with other bytes is set aside.
    (A file reserved by an older version has no hash: it is checked again, with `xsd`.)"""
    done = []
    with conn_factory() as conn:
        writing = journal.files(conn, ["writing"])
    for f in writing:
        final = outbox / f.name
        part = outbox / (f.name + ".part")
        with conn_factory() as conn:
            if final.is_file() and not final.is_symlink():
                n = conn.execute(select(func.count()).select_from(s.file_items).where(
                    s.file_items.c.file_id == f.file_id, s.file_items.c.kind == "entry")).scalar_one()
                sha256, problems = None, []
                if f.sha256 is not None:
                    now = _pinned_sha256(final)
                    if now != f.sha256:
                        problems = [f"{f.name}: not the file that was written and checked (SHA-256 "
                                    f"{(now or '?')[:16]}…, written {f.sha256[:16]}…): changed in the outbox"]
                    sha256 = f.sha256
                elif xsd is not None:
                    problems, sha256 = check_pinned(final, lambda source: TransferChecker(xsd).check(
                        source, f.name, known_customer=journal.known_customer(conn),
                        known_entry_type=journal.known_entry_type(conn)).errors)
                    if not problems and sha256 is None:
                        problems = [f"{f.name}: the file changed while it was being checked"]
                if problems:
                    text = "\n".join(str(p) for p in problems)
                    set_aside(final, outbox / "rejected", f"{f.name} failed the pre-send check when a run "
                              f"completed it after a crash, and was not sent; its content stays pending.\n{text}")
                    journal.drop_file(conn, f.file_id, "invalid", text[:4000])
                    done.append(f"{f.file_id}: failed its check when completed after a crash; moved to "
                                "outbox/rejected/, its content goes in the next file")
                    continue
                journal.mark_written(conn, f.file_id, n, sha256=sha256)
                done.append(f"{f.file_id}: completed (the file was whole in the outbox)")
            else:
                if os.path.lexists(part):
                    part.unlink()
                journal.drop_file(conn, f.file_id, "abandoned", "the run stopped before the file was complete")
                done.append(f"{f.file_id}: abandoned (incomplete); its content goes in the next file")
    return done


class Batch:
    """Items chosen for the file (kind, id, version, members), handed to `sink` in chunks
    (memory flat): the journal, or the answer of a decide process."""

    def __init__(self, sink: Callable[[list[tuple[str, str, str, str | None]]], None]):
        self.sink = sink
        self.rows: list[tuple[str, str, str, str | None]] = []
        self.customers: set[str] = set()
        self.counts = {"customer": 0, "entry": 0, "match": 0}

    def add(self, kind: str, id_: str, version: str, members: str | None = None) -> None:
        self.rows.append((kind, id_, version, members))
        self.counts[kind] += 1
        if len(self.rows) >= FLUSH:
            self.flush()

    def flush(self) -> None:
        self.sink(self.rows)
        self.rows = []


def select_group(batch: Batch, group: list[Decided], backlog: bool, handled: list[tuple[str, str]]) -> None:
    """Choose what of one match group (or one unmatched entry) goes tonight; note in `handled`
    what needs no decision until it changes (what stays pending is decided again tomorrow)."""
    mid = group[0].entry["match_id"]
    sendable = [d for d in group if d.outcome.decision == "transfer" and d.entry["type"] != "reversal"]
    # What the rules keep back leaves pending: only a ledger change (which marks it pending
    # again) or another rule file or mode (which re-decides the whole ledger) can change that.
    if len(sendable) < len(group):
        keep = {id(d) for d in sendable}
        handled.extend(("entry", d.entry["id"]) for d in group if id(d) not in keep)
    if not sendable:
        if mid:
            handled.append(("match", mid))
        return
    for d in sendable:
        e = d.entry
        if e["sent_version"] == e["version"]:
            handled.append(("entry", e["id"]))         # delivered or in flight already
            continue
        if not goes_tonight(d):
            continue                                   # changed after sent: the rules hold it
        batch.add("entry", e["id"], e["version"])
        cid = e["customer_id"]
        if cid not in batch.customers and e["sent_c_version"] != e["c_version"] and e["sent_c_state"] != "in_flight":
            batch.customers.add(cid)
            batch.add("customer", cid, e["c_version"])
    if mid is None:
        return
    members = sorted(d.entry["id"] for d in sendable)
    sent = group[0].entry["sent_members"]
    sent_set = set(sent.split()) if sent else set()
    if len(members) < 2 or not any(d.entry["type"] == "invoice" for d in sendable) or sent_set == set(members):
        handled.append(("match", mid))                 # nothing (more) to send for this match
    elif group[0].entry["sent_match_state"] == "in_flight":
        return                                         # grows once the receipt of its last version is read
    elif sent_set <= set(members):
        batch.add("match", mid, digest(*members), " ".join(members))
    else:
        handled.append(("match", mid))                 # lost a member: the rules hold it


def select_all(decided: Iterator[Decided], batch: Batch, backlog: bool, handled: list[tuple[str, str]],
               flush: Callable[[], None], progress: Callable[[str, int], None] | None = None,
               n: int = 0) -> int:
    """select_group for each group of `decided`; `flush` empties `handled` when it is big."""
    for _key, group in groupby(decided, key=lambda d: d.entry["match_id"] or ("\0" + d.entry["id"])):
        group = list(group)
        select_group(batch, group, backlog, handled)
        n += len(group)
        if progress and n % 20000 < len(group):
            progress("decided", n)
        if len(handled) >= FLUSH:
            flush()
    return n


def _take_in(batch: Batch, handled: list[tuple[str, str]], records, flush: Callable[[], None]) -> None:
    """What the decide process chose, added as if chosen here: its chunks go to the journal
    as they are, but a customer goes once (both processes may have chosen it)."""
    seen = batch.customers
    batch.flush()
    for what, rows in records:
        if what == "handled":
            handled.extend(rows)
            if len(handled) >= FLUSH:
                flush()
            continue
        take = []
        for row in rows:
            if row[0] == "customer":
                if row[1] in seen:
                    continue
                seen.add(row[1])
            take.append(row)
            batch.counts[row[0]] += 1
        batch.sink(take)


def _unmatched_count(conn: Connection) -> int:
    e = s.entries
    return conn.execute(select(func.count()).select_from(e).where(e.c.match_id.is_(None))).scalar_one()


def _customer_held(engine: RuleEngine, mode: str, row) -> bool:
    """Would the rules hold an invoice of this customer for its data? Then its update waits
    too (it would fail the receiver's checks); the rules decide, not a list kept here."""
    checks = customer_checks(row._mapping)
    fact = dict(DEFAULT_FACT, mode=mode, customer_type=checks.customer_type,
                customer_address_complete=checks.customer_address_complete,
                customer_org_no=checks.customer_org_no, customer_company_name=checks.customer_company_name)
    return engine.decide(fact).decision == "hold"


def _changed_customers(conn: Connection, batch: Batch, engine: RuleEngine, mode: str) -> None:
    """Customers changed after delivery with no new entry of theirs tonight: send the update."""
    c, p, st = s.customers, s.pending, s.sent
    # Driven from pending (by now only changes of customers Lowell has), in two steps: in one
    # join SQLite's planner, without statistics, walks every customer Lowell has instead.
    ids = conn.execute(select(p.c.id).where(p.c.kind == "customer")).scalars().all()
    for i in range(0, len(ids), BATCH):
        rows = conn.execute(
            select(c).join(st, and_(st.c.kind == "customer", st.c.id == c.c.id))
            .where(c.c.id.in_(ids[i:i + BATCH]), st.c.state == "delivered", st.c.version != c.c.version)
            .order_by(c.c.id)).all()
        for row in rows:
            cid, version = row.id, row.version
            if cid not in batch.customers and not _customer_held(engine, mode, row):
                batch.customers.add(cid)
                batch.add("customer", cid, version)


def _clear(conn: Connection, handled: list[tuple[str, str]]) -> None:
    """Items already delivered or in flight (or settled before the start) need no decision."""
    ledger = Ledger(conn)
    for k in ("entry", "match"):
        ledger.clear_pending(k, [i for kk, i in handled if kk == k])
    handled.clear()


def _customer_to_send(row) -> Customer:
    """An org no goes only with a business customer (the receiver's rule); for a private
    customer that has one, the rules warn and the number stays home."""
    c = row_customer(row)
    return c if c.type == "business" or c.org_no is None else replace(c, org_no=None)


def _stream(conn: Connection, file_id: str, kind: str):
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


def export(config: Config, db, engine: RuleEngine, *, backlog: bool = False,
           now: datetime | None = None, progress: Callable[[str, int], None] | None = None) -> ExportResult:
    """Write one transfer file into the outbox. The caller holds the run lock."""
    outbox = config.outbox
    outbox.mkdir(parents=True, exist_ok=True)
    recovered = recover(db.begin, outbox, config.xsd)
    now = (now or datetime.now(OSLO)).astimezone(OSLO)
    with ExitStack() as stack:       # closes the helper processes, whatever happens
        return _export(config, db, engine, backlog, now, progress, recovered, stack)


def _worker_can_read(url: str) -> bool:
    """A second process sees the same database (not an in-memory SQLite)."""
    return not (url.startswith("sqlite") and (url.rstrip("/") in ("sqlite:", "sqlite+pysqlite:")
                                               or ":memory:" in url or "mode=memory" in url))


def _export(config: Config, db, engine: RuleEngine, backlog: bool, now: datetime,
            progress: Callable[[str, int], None] | None, recovered: list[str],
            stack: ExitStack) -> ExportResult:
    outbox = config.outbox
    kind = "backlog" if backlog else "daily"

    with db.begin() as conn:
        seq = journal.next_sequence(conn)
        header = FileHeader(config.sender_id, config.creditor_org_no, seq, kind, now, now, config.base_currency)
        file_id = header.file_id
        name = f"{file_id}.xml"
        journal.reserve_file(conn, file_id, seq, kind, name, now, now)
        writer = journal.ItemWriter(conn, file_id)
        batch = Batch(writer.add)
        handled: list[tuple[str, str]] = []
        # Another rule file or mode may decide anything differently: then decide everything once.
        rf = engine.rule_file   # the rules as loaded (not the file, which may have changed since)
        basis = digest(repr(rf.rules), rf.default_decision, config.mode)
        ledger = Ledger(conn)
        full = backlog or ledger.get_meta("decision_basis") != basis
        # A big ledger decided whole: its unmatched entries in a second process (started now,
        # while this one holds the write lock: see decide_worker).
        helper = None
        if full and conn.dialect.name == "sqlite" and _worker_can_read(config.database) and \
                _unmatched_count(conn) >= PARALLEL_DECIDE_FROM:
            helper = stack.enter_context(DecideWorker(rf, config.mode, config.database, backlog))
        settled = None
        if backlog:
            # A group settled before the service started is not Lowell's business (rule
            # settled-before-service): recorded as history, not decided here, and it leaves
            # pending. Found once (a GROUP BY over the ledger) into a temporary table, then used
            # in SQL only: a million ids never pass through Python.
            settled = Table("settled_groups_tmp", MetaData(), Column("match_id", String(35), primary_key=True),
                            prefixes=["TEMPORARY"])
            settled.create(conn)
            conn.execute(insert(settled).from_select(["match_id"], settled_groups()))
            ids = select(settled.c.match_id)
            conn.execute(delete(s.settled_history).where(s.settled_history.c.match_id.in_(ids)))
            conn.execute(insert(s.settled_history).from_select(["match_id"], ids))
            conn.execute(delete(s.pending).where(s.pending.c.kind == "match", s.pending.c.id.in_(ids)))
            conn.execute(delete(s.pending).where(s.pending.c.kind == "entry", s.pending.c.id.in_(
                select(s.entries.c.id).where(s.entries.c.match_id.in_(ids)))))
        decided = decide_ledger(conn, engine, config.mode, only_pending=not full,
                                skip_matches=None if settled is None else select(settled.c.match_id),
                                unmatched=helper is None)
        flush = lambda: _clear(conn, handled)   # noqa: E731
        n = select_all(decided, batch, backlog, handled, flush, progress)
        faults.point("mid-decide")        # (the decide process, if any, may still be working)
        if helper is not None:
            records = helper.results()
            if records is None:           # the child failed: decide its half here
                select_all(decide_ledger(conn, engine, config.mode, matched=False),
                           batch, backlog, handled, flush, progress, n)
            else:
                _take_in(batch, handled, records, flush)
        # A big file is checked in a second process while it is written; started now, its
        # start-up overlaps the rest of this step (and the decide process has ended).
        worker = None
        if (backlog or batch.counts["entry"] >= _PARALLEL_CHECK_FROM) and _worker_can_read(config.database):
            worker = stack.enter_context(CheckWorker(config.xsd))
        # A customer Lowell has never had travels with its first entry (read from the ledger,
        # not from pending); pending only keeps changes of customers Lowell has.
        conn.execute(delete(s.pending).where(s.pending.c.kind == "customer", ~exists().where(
            s.sent.c.kind == "customer", s.sent.c.id == s.pending.c.id)))
        _changed_customers(conn, batch, engine, config.mode)
        batch.flush()
        writer.close()
        _clear(conn, handled)
        ledger.set_meta("decision_basis", basis)
        if settled is not None:
            settled.drop(conn)
    faults.point("after-reserve")

    part = outbox / (name + ".part")
    env = make_environment(config.templates_dir)
    try:
        # created exclusively, never through a link planted at the name (a stale one is unlinked)
        fd = create_temporary(part)
    except OSError as exc:
        _abandon(db, file_id, f"cannot create {part}: {exc.strerror or exc}")
        raise ExportError(f"cannot write tonight's file into the outbox: {part}: {exc.strerror or exc}; "
                          f"{file_id} was abandoned and its content stays pending") from None
    hashed = _Hashing()
    try:
        with db.connect() as conn, os.fdopen(fd, "wb") as f:
            out = f
            if worker is not None:
                # ~300 bytes per record: it only sizes the checker's id tables
                worker.begin(part, 300 * sum(batch.counts.values()), config.database)
                out = Announcing(f, worker)
            hashed.out = out
            totals = render_transfer(hashed, header, _stream(conn, file_id, "customer"),
                                     _progress(_stream(conn, file_id, "entry"), progress),
                                     _stream(conn, file_id, "match"), env)
            faults.point("mid-render")
            f.flush()
            os.fsync(f.fileno())
            if worker is not None:
                worker.done(f.tell())
    except OSError as exc:     # a full disk, say: the file is started over by the next run
        part.unlink(missing_ok=True)
        _abandon(db, file_id, f"cannot write {part}: {exc.strerror or exc}")
        raise ExportError(f"cannot write tonight's file {part}: {exc.strerror or exc}; "
                          f"{file_id} was abandoned and its content stays pending") from None
    sha256 = hashed.hexdigest()
    with db.begin() as conn:     # durable before the rename: a recovery knows the bytes to expect
        journal.note_sha256(conn, file_id, sha256)
    faults.point("after-render")

    # Step 5's journal work is done while the check process finishes (it reads behind the
    # writer), in a transaction committed only after the rename, else rolled back: what is
    # durable happens in the order above.
    with db.connect() as conn:
        tx = conn.begin()
        try:
            if worker is not None:
                journal.mark_written(conn, file_id, totals.entry_count, sha256=sha256)
            problems = _check(config, db, part, worker)
            faults.point("after-check")
            if not problems:
                if worker is None:
                    journal.mark_written(conn, file_id, totals.entry_count, sha256=sha256)
                os.replace(part, outbox / name)
                _fsync_dir(outbox)
                faults.point("after-rename")
                tx.commit()
        finally:
            if tx.is_active:
                tx.rollback()
    if problems:
        # The errors name the .part file they were found in; it is now `name` in rejected/.
        text = "\n".join(str(p).replace(name + ".part", name) for p in problems)
        set_aside(part, outbox / "rejected",
                  f"{name} failed the pre-send check and was not sent; its content stays pending.\n{text}", name)
        with db.begin() as conn:
            journal.drop_file(conn, file_id, "invalid", text[:4000])
        return ExportResult(file_id, None, kind, totals.customer_count, totals.entry_count,
                            totals.match_count, tuple(str(p) for p in problems), tuple(recovered))
    faults.point("after-commit")
    return ExportResult(file_id, outbox / name, kind, totals.customer_count, totals.entry_count,
                        totals.match_count, (), tuple(recovered))


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


def _pinned_sha256(path: Path) -> str | None:
    """SHA-256 of the regular file at `path` (never through a link); None if it is not one."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _abandon(db, file_id: str, why: str) -> None:
    with db.begin() as conn:
        journal.drop_file(conn, file_id, "abandoned", why)


def _check(config: Config, db, part: Path, worker: CheckWorker | None) -> list:
    """The pre-send check's errors: the check process's answer, else checked here (no
    process, or it failed). Earlier files are looked up on a connection of their own: the
    check must see what was delivered or in flight before this file, not this file's own
    journal work."""
    problems = worker.finish() if worker is not None else None
    if problems is None:
        with db.connect() as conn:
            problems = check_transfer_file(part, config.xsd, known_customer=journal.known_customer(conn),
                                           known_entry_type=journal.known_entry_type(conn))
    return problems


def _progress(it: Iterator, progress) -> Iterator:
    if progress is None:
        return it

    def gen():
        for i, x in enumerate(it, 1):
            if i % 20000 == 0:
                progress("written", i)
            yield x
    return gen()
