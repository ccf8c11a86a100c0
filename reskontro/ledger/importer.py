"""`reskontro import`: ERP exports into the ledger store, idempotent and all-or-nothing per file.

Streaming, so that memory stays flat in the file's size: the adapter reads one line at a time
(`read_records`), each good row goes as a plain tuple into temporary staging tables (batched
`executemany`), and everything that looks at the file as a whole is set-based SQL over those
tables: ids given twice, one bank reference on two entries, an entry in two matches, references
to customers and entries (in the file or the store), new/changed against the store, the
pending marks, the membership of matches. One transaction per file: a file with any problem
rolls back whole, after every bad row was found (the first `MAX_SHOWN` listed, all counted).

What only a few records need, the ERP's copies of what this service booked itself
(`bankref.resolve`), is done in Python on just those records: the entries that carry a bank
reference or are (or were) the service's own, the matches that touch them.
"""
from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date
from hashlib import blake2b
from itertools import groupby
from pathlib import Path

from sqlalchemy import (Column, Connection, Engine, Integer, MetaData, String, Table, and_, delete, exists, func,
                        insert, literal, or_, select, text, update)

from reskontro.adapters.ledger_import import (LedgerBatch, Problems, entry_from_row, entry_to_row, lines_before,
                                              read_records, split_point)

from reskontro.domain import InputError, Match
from reskontro.domain.kid import state as kid_state
from reskontro.ledger import schema as s
from reskontro.ledger.bankref import Resolved, resolve, write_resolved
from reskontro.ledger.store import BATCH, mark_undecided
from reskontro.ledger.sent_content import keep_before_change

log = logging.getLogger(__name__)
CHUNK = 5000                 # rows per executemany
# From this size a JSON Lines file is read by two processes, each half (ledger.import_worker).
PARALLEL_FROM = 16 << 20
# A load this big into a table this small: the entries' secondary indexes are dropped and built
# again after the insert (SQLite, in the same transaction): a sort, not a million random inserts.
BULK_ROWS = 100_000


@dataclass(frozen=True)
class ImportResult:
    path: Path
    customers: tuple[int, int]     # (new, changed)
    entries: tuple[int, int]
    matches: tuple[int, int]
    same_as_booked: int = 0        # the ERP's copies of entries this service booked (not stored twice)
    notes: tuple[str, ...] = ()    # what the import holds for a person (bank-ref-conflict)

    @property
    def unchanged(self) -> bool:
        return not any(self.customers + self.entries + self.matches)


# --- the staging tables (temporary: one connection's, gone with it) ----------------------------
_STAGE = MetaData()
_TMP = {"prefixes": ["TEMPORARY"]}
CUSTOMER_COLS = ("id", "name", "type", "org_no", "line1", "line2", "line3", "post_code", "city", "country",
                 "email", "phone", "factoring_default", "tags", "version", "stamp")
ENTRY_COLS = ("id", "customer_id", "type", "document_no", "document_date", "due_date", "amount_ore", "currency",
              "kid", "kid_check", "status", "factoring", "opt_out", "reverses", "source", "dunning_level", "text",
              "bank_ref", "version", "stamp")
imp_customers = Table("imp_customers", _STAGE, *(Column(c, s.customers.c[c].type) for c in CUSTOMER_COLS),
                      Column("line", Integer), **_TMP)
imp_entries = Table("imp_entries", _STAGE, *(Column(c, s.entries.c[c].type) for c in ENTRY_COLS),
                    Column("line", Integer), **_TMP)
imp_matches = Table("imp_matches", _STAGE, Column("id", String(35)), Column("version", String(16)),
                    Column("line", Integer), **_TMP)
# a match's members: the match's line, and each member's place in it
imp_members = Table("imp_members", _STAGE, Column("match_id", String(35)), Column("entry_id", String(35)),
                    Column("line", Integer), Column("pos", Integer), **_TMP)
imp_csv_members = Table("imp_csv_members", _STAGE, Column("match_id", String(35)), Column("entry_id", String(35)),
                        Column("line", Integer), **_TMP)
# changed records (kind customer | entry | match), and the records bankref.resolve must see
imp_changed = Table("imp_changed", _STAGE, Column("kind", String(8), primary_key=True),
                    Column("id", String(35), primary_key=True), **_TMP)
imp_special = Table("imp_special", _STAGE, Column("kind", String(8), primary_key=True),
                    Column("id", String(35), primary_key=True), **_TMP)
imp_before = Table("imp_before", _STAGE, Column("match_id", String(35)), Column("entry_id", String(35)), **_TMP)
_INDEXES = (("ix_imp_customers_id", imp_customers, "id"), ("ix_imp_entries_id", imp_entries, "id"),
            ("ix_imp_matches_id", imp_matches, "id"), ("ix_imp_members_entry", imp_members, "entry_id"),
            ("ix_imp_members_match", imp_members, "match_id"), ("ix_imp_before_match", imp_before, "match_id"))


def _drop_stage(conn: Connection) -> None:
    for t in reversed(_STAGE.sorted_tables):
        conn.execute(text(f"DROP TABLE IF EXISTS {t.name}"))


# --- rows into staged tuples ----------------------------------------------------------------------
def _ore_text(ore: int) -> str:
    """øre as str(Decimal) of the amount shows it: 123450 -> '1234.50', -5 -> '-0.05'."""
    a = -ore if ore < 0 else ore
    return f"{'-' if ore < 0 else ''}{a // 100}.{a % 100:02d}"


def _h(text_: str) -> str:
    """store.digest of parts already joined with its separator (the same stamp, no generator)."""
    return blake2b(text_.encode(), digest_size=8).hexdigest()


def _customer_staged(r: tuple, line: int) -> tuple:
    """A CUSTOMER_ROW with its version and stamp (store.customer_version/customer_stamp of the
    same customer: the tests compare them)."""
    cid, name, ctype, org_no, l1, l2, l3, post, city, country, email, phone, fd, tags = r
    lines = (l1,) if l2 is None else (l1, l2) if l3 is None else (l1, l2, l3)    # compacted by the reader
    version = _h(f"{ctype or ''}\x1f{name}\x1f{(org_no or '') if ctype == 'business' else ''}\x1f"
                 f"{lines if l1 is not None else ()}\x1f{post}\x1f{city}\x1f{country}\x1f{email or ''}\x1f"
                 f"{phone or ''}")
    stamp = _h(f"{version}\x1f{ctype or ''}\x1f{org_no or ''}\x1f{email or ''}\x1f{phone or ''}\x1f"
               f"{'True' if fd else 'False'}" + (f"\x1f{tags}" if tags else ""))
    return (cid, name, ctype, org_no, l1, l2, l3, post, city, country, email, phone, fd, tags, version, stamp, line)


def _entry_digests(r: tuple) -> tuple[str, str]:
    """(version, stamp) of an ENTRY_ROW: store.entry_version and store.entry_stamp of the same
    entry (the tests compare them), built as one string each."""
    _eid, cust, etype, doc, ddate, due, ore, cur, kid, status, fac, opt, rev, src, dun, txt, bref = r
    version = _h(f"{etype}\x1f{cust}\x1f{doc}\x1f{ddate}\x1f{(due or '') if etype == 'invoice' else ''}\x1f"
                 f"{_ore_text(ore)}\x1f{cur}\x1f{kid or ''}\x1f{txt or ''}")
    stamp = _h(f"{version}\x1f{kid or ''}\x1f{txt or ''}\x1f{due or ''}\x1f{status or ''}\x1f"
               f"{'' if fac is None else 'True' if fac else 'False'}\x1f{'True' if opt else 'False'}\x1f"
               f"{rev or ''}\x1f{src or ''}\x1f{dun}\x1f{bref or ''}")
    return version, stamp


class _Stager:
    """Batched executemany of plain tuples into the staging tables."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        # SQLite keeps dates as ISO text (what SQLAlchemy's Date writes there); others get dates
        self.plain_dates = conn.dialect.name == "sqlite"
        mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
        self.sql = {t.name: f"INSERT INTO {t.name} ({', '.join(t.c.keys())}) VALUES "
                            f"({', '.join([mark] * len(t.c))})"
                    for t in (imp_customers, imp_entries, imp_matches, imp_members, imp_csv_members)}
        self.rows: dict[str, list[tuple]] = {name: [] for name in self.sql}
        self.entries = self.rows["imp_entries"]
        self.kids: dict[str, str] = {}     # KID -> kid_check (a payment carries its invoice's KID)

    def add(self, kind: str, line: int, row: tuple) -> None:
        if kind == "entry":
            self.entry(row, line)
        elif kind == "customer":
            self._put("imp_customers", _customer_staged(row, line))
        elif kind == "match":
            self.match(row[0], row[1], line)
        else:                                  # a CSV row of a match: grouped later, in SQL
            self._put("imp_csv_members", (row[0], row[1], line))

    def entry(self, r: tuple, line: int) -> None:
        version, stamp = _entry_digests(r)
        kid = r[8]
        if kid is None:
            check = "absent"
        else:
            check = self.kids.get(kid)
            if check is None:
                if len(self.kids) >= 20_000:
                    self.kids.clear()
                check = self.kids[kid] = kid_state(kid)
        ddate, due = r[4], r[5]
        if not self.plain_dates:
            ddate, due = date.fromisoformat(ddate), due and date.fromisoformat(due)
        rows = self.entries
        rows.append((r[0], r[1], r[2], r[3], ddate, due, r[6], r[7], kid, check, r[9], r[10], r[11], r[12],
                     r[13], r[14], r[15], r[16], version, stamp, line))
        if len(rows) >= CHUNK:
            self.conn.exec_driver_sql(self.sql["imp_entries"], rows)
            rows.clear()

    def match(self, mid: str, members: Iterable[str], line: int) -> None:
        members = tuple(members)
        self._put("imp_matches", (mid, _h("\x1f".join(sorted(members))), line))     # store.match_version
        rows = self.rows["imp_members"]
        rows.extend([(mid, eid, line, pos) for pos, eid in enumerate(members)])
        if len(rows) >= CHUNK:
            self.conn.exec_driver_sql(self.sql["imp_members"], rows)
            rows.clear()

    def _put(self, table: str, row: tuple) -> None:
        rows = self.rows[table]
        rows.append(row)
        if len(rows) >= CHUNK:
            self.conn.exec_driver_sql(self.sql[table], rows)
            rows.clear()

    def flush(self) -> None:
        for table, rows in self.rows.items():
            if rows:
                self.conn.exec_driver_sql(self.sql[table], rows)
                rows.clear()


def import_files(engine: Engine, paths: list[Path],
                 progress: Callable[[Path, int], None] | None = None) -> list[ImportResult]:
    """Import each file in its own transaction; stop at the first bad file (earlier ones stay).
    A bad file is refused with every problem at once. `progress(path, i)` as file i starts."""
    results = []
    for i, path in enumerate(paths):
        if progress is not None:
            progress(path, i)
        with engine.connect() as conn:
            cleanup: list = []
            try:
                with conn.begin():
                    results.append(_import(conn, path, cleanup))
            finally:
                # SQLite (pysqlite) runs DDL before the first write outside the transaction:
                # the staging tables may outlive a rollback. Gone either way before the
                # connection goes back to the pool.
                try:
                    _drop_stage(conn)
                    for undo in cleanup:
                        undo(conn)
                    conn.commit()
                except Exception:       # noqa: BLE001 - never hide the import's own error
                    log.warning("cleaning up after importing %s failed", path.name, exc_info=True)
    return results


def _import(conn: Connection, path: Path, cleanup: list) -> ImportResult:
    problems = Problems(path.name)
    _drop_stage(conn)
    _STAGE.create_all(conn)
    stager = _Stager(conn)
    half = _SecondHalf.start(conn, path, cleanup)
    for kind, line, row in read_records(path, problems, stop=half.mid if half else None):
        stager.add(kind, line, row)
    stager.flush()
    if half is not None:
        half.take_in(conn, stager, problems)
    for name, table, col in _INDEXES:
        conn.execute(text(f"CREATE INDEX {name} ON {table.name} ({col})"))
    name = path.name
    _group_csv_matches(conn, stager, name, problems)
    _in_file_checks(conn, name, problems)
    _unknown_customers(conn, name, problems)    # with every other problem at once (customers have no aliases)
    problems.check()                                            # rolls the file back whole
    # A store without entries (a ledger's first import) has nothing a file could be the ERP's
    # copy of, no match to change and no entry to move: that work is skipped, not done on nothing.
    fresh = all(conn.execute(select(t.c[0]).limit(1)).first() is None for t in (s.entries, s.matches, s.aliases))
    res = Resolved(LedgerBatch()) if fresh else _resolve(conn, path, stager)
    if res.errors:
        problems = Problems(name)
        for e in res.errors:
            problems.append(e)
        problems.check()
    _references(conn, name, problems)
    problems.check()
    # In the order the store's own upserts keep: customers, entries, matches (a changed entry
    # marks its group by the match it was in). New entries go in last, each with its match
    # set (one write per row): the matches' membership work then only meets stored entries.
    c = _merge_customers(conn)
    changed_e = _update_entries(conn, fresh)
    _set_membership(conn, fresh)
    new_e = _insert_entries(conn)
    m = _merge_matches(conn)
    e = (new_e, changed_e)
    write_resolved(conn, res)
    _drop_stage(conn)
    return ImportResult(path, c, e, m, res.same, tuple(res.messages))


class _SecondHalf:
    """The second half of a big JSON Lines file, read by a helper process (import_worker)
    into a scratch SQLite file attached here; None-safe: `start` gives None when the file is
    small, the store is not SQLite, there is one core, or the helper cannot start."""

    ALIAS = "import_half"

    def __init__(self, path: Path, mid: int, folder: Path, proc: subprocess.Popen, stderr) -> None:
        self.path, self.mid, self.folder, self.proc, self.stderr = path, mid, folder, proc, stderr

    @classmethod
    def start(cls, conn: Connection, path: Path, cleanup: list) -> _SecondHalf | None:
        if conn.dialect.name != "sqlite" or (os.cpu_count() or 1) < 2:
            return None
        try:
            if path.stat().st_size < PARALLEL_FROM:
                return None
        except OSError:
            return None                 # read_records says what is wrong with it
        mid = split_point(path)
        if mid is None:
            return None
        folder = Path(tempfile.mkdtemp(prefix="reskontro-import-"))
        scratch = folder / "half.db"
        stderr = tempfile.TemporaryFile()
        root = str(Path(__file__).resolve().parents[2])      # the folder holding reskontro/
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p))
        try:
            proc = subprocess.Popen([sys.executable, "-m", "reskontro.ledger.import_worker", str(path), str(mid),
                                     str(scratch)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=stderr, env=env)
        except OSError as exc:
            log.warning("could not start the import helper (%s); reading the whole file here", exc)
            shutil.rmtree(folder, ignore_errors=True)
            stderr.close()
            return None
        half = cls(path, mid, folder, proc, stderr)
        cleanup.append(half.close)
        # before the first write: SQLite attaches no database within a transaction
        conn.exec_driver_sql(f"ATTACH DATABASE ? AS {cls.ALIAS}", (str(scratch),))
        half.attached = True
        return half

    def take_in(self, conn: Connection, stager: _Stager, problems: Problems) -> None:
        """The helper's rows into the staging tables (or, if it failed, the half read here)."""
        code = self.proc.wait()
        a = self.ALIAS
        answer = None
        if code == 0:
            try:
                answer = conn.exec_driver_sql(f"SELECT count, fatal FROM {a}.result").first()
            except Exception:           # noqa: BLE001 - no answer: read the half here
                answer = None
        if answer is None:
            self.stderr.seek(0)
            why = (self.stderr.read().decode(errors="replace").strip().splitlines() or [f"exit status {code}"])[-1]
            log.warning("the import helper failed (%s); reading the second half of %s here", why, self.path.name)
            for kind, line, row in read_records(self.path, problems, start=self.mid,
                                                first_line=lines_before(self.path, self.mid) + 1):
                stager.add(kind, line, row)
            stager.flush()
            return
        count, fatal = answer
        if fatal:
            raise InputError(fatal)
        for t in (imp_customers, imp_entries, imp_matches, imp_members):
            conn.exec_driver_sql(f"INSERT INTO {t.name} SELECT * FROM {a}.{t.name}")
        shown = [r[0] for r in conn.exec_driver_sql(f"SELECT text FROM {a}.problems ORDER BY n")]
        problems.extend(shown, count)

    def close(self, conn: Connection) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if getattr(self, "attached", False):
            conn.exec_driver_sql(f"DETACH DATABASE {self.ALIAS}")
            self.attached = False
        self.stderr.close()
        shutil.rmtree(self.folder, ignore_errors=True)


# --- checks within the file -------------------------------------------------------------------------
def _group_csv_matches(conn: Connection, stager: _Stager, name: str, problems: Problems) -> None:
    """A CSV of matches lists one member per row: each match is its rows, in the order of its
    first row; an entry listed twice in a match, and a match of one entry, are refused."""
    cm = imp_csv_members
    if conn.execute(select(cm.c.line).limit(1)).first() is None:
        return
    conn.execute(text("CREATE INDEX ix_imp_csv_members ON imp_csv_members (match_id, entry_id, line)"))
    t = cm.alias("t")
    twice = (select(cm.c.line, cm.c.match_id, cm.c.entry_id)
             .where(exists().where(t.c.match_id == cm.c.match_id, t.c.entry_id == cm.c.entry_id,
                                   t.c.line < cm.c.line)).order_by(cm.c.line))
    for line, mid, eid in conn.execute(twice):
        problems.append(f"{name}:{line}: entry_id: {eid!r} listed twice in match {mid!r}")
    ones = (select(cm.c.match_id, func.min(cm.c.line)).group_by(cm.c.match_id)
            .having(func.count() < 2).order_by(func.min(cm.c.line)))
    for mid, line in conn.execute(ones):
        problems.append(f"{name}:{line}: match_id: match {mid!r} has one entry; a match needs two or more")
    first = select(cm.c.match_id, func.min(cm.c.line).label("first")).group_by(cm.c.match_id).subquery()
    rows = conn.execute(select(cm.c.match_id, cm.c.entry_id, first.c.first)
                        .join(first, first.c.match_id == cm.c.match_id)
                        .order_by(first.c.first, cm.c.line)).yield_per(CHUNK)
    for (mid, line), members in groupby(rows, key=lambda r: (r[0], r[2])):
        stager.match(mid, [r[1] for r in members], line)
    stager.flush()


def _in_file_checks(conn: Connection, name: str, problems: Problems) -> None:
    """An id given twice (the later copy is left out of the other checks), one bank
    reference on two entries, an entry in two of the file's matches."""
    for kind, table in (("customer", imp_customers), ("entry", imp_entries), ("match", imp_matches)):
        first = (select(table.c.id, func.min(table.c.line).label("first")).group_by(table.c.id)
                 .having(func.count() > 1).subquery())
        dup = (select(table.c.line, table.c.id, first.c.first).join(first, first.c.id == table.c.id)
               .where(table.c.line > first.c.first).order_by(table.c.line))
        found = conn.execute(dup).all()
        for line, i, at in found:
            problems.append(f"{name}:{line}: id: {kind} {i!r} already on line {at}")
        if found:            # the later copies: left out of what follows
            t = table.alias("t")
            if kind == "match":
                conn.execute(delete(imp_members).where(exists().where(
                    t.c.id == imp_members.c.match_id, t.c.line < imp_members.c.line)))
            conn.execute(delete(table).where(exists().where(t.c.id == table.c.id, t.c.line < table.c.line)))
    ie = imp_entries
    t = ie.alias("t")
    firsts = (select(ie.c.bank_ref, func.min(ie.c.line).label("first")).where(ie.c.bank_ref.is_not(None))
              .group_by(ie.c.bank_ref).having(func.count() > 1).subquery())
    holder = select(t.c.id).where(t.c.bank_ref == firsts.c.bank_ref, t.c.line == firsts.c.first).scalar_subquery()
    q = (select(ie.c.line, ie.c.bank_ref, holder).join(firsts, firsts.c.bank_ref == ie.c.bank_ref)
         .where(ie.c.line > firsts.c.first).order_by(ie.c.line))
    for line, ref, first_id in conn.execute(q):
        problems.append(f"{name}:{line}: bank_ref: entry {first_id!r} has {ref!r} too; one bank payment is one entry")
    mm = imp_members
    # (the entries listed by two matches first: on their index, without sorting every member)
    twice = select(mm.c.entry_id).group_by(mm.c.entry_id).having(func.min(mm.c.match_id) != func.max(mm.c.match_id))
    if conn.execute(twice.limit(1)).first() is None:
        return
    prev = func.lag(mm.c.match_id).over(partition_by=mm.c.entry_id, order_by=(mm.c.line, mm.c.pos))
    inner = (select(mm.c.line, mm.c.pos, mm.c.entry_id, mm.c.match_id, prev.label("prev"))
             .where(mm.c.entry_id.in_(twice)).subquery())
    q = (select(inner.c.line, inner.c.entry_id, inner.c.prev)
         .where(inner.c.prev.is_not(None), inner.c.prev != inner.c.match_id)
         .order_by(inner.c.line, inner.c.pos))
    for line, eid, other in conn.execute(q):
        problems.append(f"{name}:{line}: entries: {eid!r} is already in match {other!r}; "
                        "an entry belongs to at most one match")


# --- what the service booked itself (bankref) -------------------------------------------------------
def _resolve(conn: Connection, path: Path, stager: _Stager) -> Resolved:
    """bankref.resolve on the records it can be about; the others pass as they are (for them
    it changes nothing). Its answer replaces those records in the staging tables."""
    e, a, ie, mm, im, sp = s.entries, s.aliases, imp_entries, imp_members, imp_matches, imp_special
    alias_e = select(a.c.erp_id).where(a.c.kind == "entry")
    stored_special = exists().where(e.c.id == ie.c.id, or_(e.c.origin.is_not(None), e.c.bank_ref.is_not(None),
                                                            e.c.bank_ref_conflict.is_not(None)))
    conn.execute(insert(sp).from_select(["kind", "id"], select(literal("entry"), ie.c.id).where(or_(
        ie.c.bank_ref.is_not(None), ie.c.id.in_(alias_e), ie.c.reverses.in_(alias_e), stored_special))))
    # an entry reversing one of those (its id may become the service's)
    special_ids = select(sp.c.id).where(sp.c.kind == "entry")
    conn.execute(insert(sp).from_select(["kind", "id"], select(literal("entry"), ie.c.id).where(
        ie.c.reverses.in_(special_ids), ie.c.id.not_in(special_ids))))
    own = e.alias("own")
    holds_own = lambda mid: exists().where(own.c.match_id == mid, own.c.origin.is_not(None))  # noqa: E731
    cur = e.alias("cur")
    member_special = exists().where(mm.c.match_id == im.c.id, or_(
        mm.c.entry_id.in_(alias_e), mm.c.entry_id.in_(special_ids),
        exists().where(cur.c.id == mm.c.entry_id, or_(cur.c.origin.is_not(None), and_(
            cur.c.match_id.is_not(None), holds_own(cur.c.match_id))))))
    alias_m = select(a.c.erp_id).where(a.c.kind == "match")
    alias_m_target = select(a.c.target_id).where(a.c.kind == "match")
    conn.execute(insert(sp).from_select(["kind", "id"], select(literal("match"), im.c.id).where(or_(
        im.c.id.in_(alias_m), im.c.id.in_(alias_m_target), holds_own(im.c.id), member_special))))

    batch = LedgerBatch()
    rows = conn.execute(select(*(ie.c[c] for c in ENTRY_COLS), ie.c.line).where(ie.c.id.in_(special_ids))
                        .order_by(ie.c.line)).all()
    if not rows and conn.execute(select(sp.c.id).limit(1)).first() is None:
        return Resolved(batch)
    for r in rows:
        m = r._mapping
        due = m["due_date"]
        x = entry_from_row((m["id"], m["customer_id"], m["type"], m["document_no"], m["document_date"].isoformat(),
                            due.isoformat() if due else None, m["amount_ore"], m["currency"], m["kid"], m["status"], m["factoring"],
                            bool(m["opt_out"]), m["reverses"], m["source"], m["dunning_level"], m["text"],
                            m["bank_ref"]))
        batch.entries.append(x)
        batch.lines[("entry", x.id)] = m["line"]
    special_m = select(sp.c.id).where(sp.c.kind == "match")
    members = conn.execute(select(mm.c.match_id, mm.c.entry_id, mm.c.line).where(mm.c.match_id.in_(special_m))
                           .order_by(mm.c.line, mm.c.pos)).all()
    for (mid, line), ms in groupby(members, key=lambda r: (r[0], r[2])):
        batch.matches.append(Match(mid, tuple(r[1] for r in ms)))
        batch.lines[("match", mid)] = line

    def in_file(ids: set[str]) -> set[str]:
        found: set[str] = set()
        ids_ = sorted(ids)
        for i in range(0, len(ids_), BATCH):
            found.update(conn.execute(select(im.c.id).where(im.c.id.in_(ids_[i:i + BATCH]))).scalars())
        return found

    res = resolve(path, batch, conn, in_file=in_file)
    if res.errors:
        return res
    # the resolved records in place of those read
    conn.execute(delete(ie).where(ie.c.id.in_(special_ids)))
    conn.execute(delete(mm).where(mm.c.match_id.in_(special_m)))
    conn.execute(delete(im).where(im.c.id.in_(special_m)))
    for x in res.batch.entries:
        stager.entry(entry_to_row(x), res.batch.lines[("entry", x.id)])
    for mt in res.batch.matches:
        stager.match(mt.id, mt.entry_ids, res.batch.lines[("match", mt.id)])
    stager.flush()
    return res


def _unknown_customers(conn: Connection, name: str, problems: Problems) -> None:
    """Every entry's customer is in this file or in the store."""
    ie, ic, c = imp_entries, imp_customers, s.customers
    q = (select(ie.c.line, ie.c.customer_id)
         .where(~exists().where(ic.c.id == ie.c.customer_id), ~exists().where(c.c.id == ie.c.customer_id))
         .order_by(ie.c.line))
    for line, cid in conn.execute(q):
        problems.append(f"{name}:{line}: customer_id: unknown customer {cid!r}")


def _references(conn: Connection, name: str, problems: Problems) -> None:
    """References must resolve in this file or in the store; an entry already in a stored
    match joins another only when the file sends that match too."""
    ie, im, mm, e = imp_entries, imp_matches, imp_members, s.entries
    t = ie.alias("t")
    q = (select(ie.c.line, ie.c.reverses)
         .where(ie.c.reverses.is_not(None), ~exists().where(t.c.id == ie.c.reverses),
                ~exists().where(e.c.id == ie.c.reverses))
         .order_by(ie.c.line))
    for line, rev in conn.execute(q):
        problems.append(f"{name}:{line}: reverses: unknown entry {rev!r}")
    q = (select(mm.c.line, mm.c.match_id, mm.c.entry_id, e.c.id, e.c.match_id)
         .outerjoin(e, e.c.id == mm.c.entry_id)
         .where(or_(and_(e.c.id.is_(None), ~exists().where(t.c.id == mm.c.entry_id)),
                    and_(e.c.match_id.is_not(None), e.c.match_id != mm.c.match_id,
                         ~exists().where(im.c.id == e.c.match_id))))
         .order_by(mm.c.line, mm.c.pos))
    for line, mid, eid, stored, current in conn.execute(q):
        if stored is None:
            problems.append(f"{name}:{line}: entries: unknown entry {eid!r}")
        else:
            problems.append(f"{name}:{line}: entries: {eid!r} is in match {current!r}; an entry belongs to at "
                            "most one match (send that match's new members too)")


# --- into the store, set-based --------------------------------------------------------------------
def _mark_pending(conn: Connection, kind: str, ids, *, unique: bool = False) -> None:
    """Mark the ids of a SELECT (one column) pending, once each (`unique`: it gives each once)."""
    p = s.pending
    sub = ids.subquery()
    col = sub.c[0]
    q = select(literal(kind), col).where(col.is_not(None), ~exists().where(p.c.kind == kind, p.c.id == col))
    conn.execute(insert(p).from_select(["kind", "id"], q if unique else q.distinct()))
    mark_undecided(conn, kind, ids)          # (the lists of kept-back entries decide them again too)


def _rows(conn: Connection, stmt) -> int:
    """Rows an INSERT ... SELECT or UPDATE wrote (psycopg forgets an INSERT's count unless asked)."""
    return conn.execute(stmt, execution_options={"preserve_rowcount": True}).rowcount


def _changed(kind: str):
    return select(imp_changed.c.id).where(imp_changed.c.kind == kind)


def _merge_customers(conn: Connection) -> tuple[int, int]:
    ic, c = imp_customers, s.customers
    n = _rows(conn, insert(imp_changed).from_select(["kind", "id"], select(literal("customer"), ic.c.id)
                                                 .join(c, c.c.id == ic.c.id).where(c.c.stamp != ic.c.stamp)))
    _mark_pending(conn, "customer", select(ic.c.id).where(
        or_(~exists().where(c.c.id == ic.c.id), ic.c.id.in_(_changed("customer")))), unique=True)
    new = _rows(conn, insert(c).from_select(list(CUSTOMER_COLS), select(*(ic.c[k] for k in CUSTOMER_COLS))
                                             .where(~exists().where(c.c.id == ic.c.id))))
    changed = 0 if not n else _rows(conn, update(c).where(c.c.id == ic.c.id, c.c.id.in_(_changed("customer")))
                           .values({k: ic.c[k] for k in CUSTOMER_COLS if k != "id"}))
    # A customer's data decides its entries (customer checks): re-decide what is not sent.
    if changed:
        _mark_pending(conn, "entry", select(s.entries.c.id).where(
            s.entries.c.customer_id.in_(_changed("customer"))))
    return new, changed


def _update_entries(conn: Connection, fresh: bool) -> int:
    """Changed entries replaced (and pending, with their groups); new ones marked pending."""
    ie, e = imp_entries, s.entries
    if fresh:
        _mark_pending(conn, "entry", select(ie.c.id), unique=True)
        return 0
    changed = _rows(conn, insert(imp_changed).from_select(["kind", "id"], select(literal("entry"), ie.c.id)
                    .join(e, e.c.id == ie.c.id).where(e.c.stamp != ie.c.stamp)))
    _mark_pending(conn, "entry", select(ie.c.id).where(
        or_(~exists().where(e.c.id == ie.c.id), ie.c.id.in_(_changed("entry")))), unique=True)
    if changed:
        # what Lowell has of an entry whose transfer-file content changes: kept for explain
        keep_before_change(conn, select(ie.c.id).join(e, e.c.id == ie.c.id).where(
            ie.c.id.in_(_changed("entry")), ie.c.version != e.c.version))
        conn.execute(update(e).where(e.c.id == ie.c.id, e.c.id.in_(_changed("entry")))
                     .values({k: ie.c[k] for k in ENTRY_COLS if k != "id"}))
        # An invoice's decision decides its group: re-decide the other members too.
        mids = select(e.c.match_id).where(e.c.id.in_(_changed("entry")), e.c.match_id.is_not(None))
        _mark_pending(conn, "entry", select(e.c.id).where(e.c.match_id.in_(mids)))
        _mark_pending(conn, "match", mids)
    return changed


def _insert_entries(conn: Connection) -> int:
    """New entries, each in the match the file puts it in (a match holding a new entry is
    itself new or changed)."""
    ie, e, mm = imp_entries, s.entries, imp_members
    match_of = select(mm.c.match_id).where(mm.c.entry_id == ie.c.id).limit(1).scalar_subquery()
    new_rows = select(*(ie.c[k] for k in ENTRY_COLS), match_of).where(~exists().where(e.c.id == ie.c.id))
    with _bulk_entries(conn):
        return _rows(conn, insert(e).from_select([*ENTRY_COLS, "match_id"], new_rows))


class _bulk_entries:
    """A load much bigger than the store (the first import of a ledger): on SQLite, drop the
    entries' secondary indexes for the insert and build them again after it, in the same
    transaction (readers see the old state until it commits; a failure rolls it all back)."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.indexes: list[tuple[str, str]] = []

    def __enter__(self):
        conn = self.conn
        if conn.dialect.name != "sqlite":
            return self
        staged = conn.execute(select(func.count()).select_from(imp_entries)).scalar_one()
        if staged < BULK_ROWS or staged < conn.execute(select(func.count()).select_from(s.entries)).scalar_one():
            return self
        self.indexes = [tuple(r) for r in conn.exec_driver_sql(
            "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'entries' "
            "AND sql IS NOT NULL")]
        for name, _sql in self.indexes:
            conn.exec_driver_sql(f'DROP INDEX "{name}"')
        return self

    def __exit__(self, *exc) -> None:
        if exc[0] is None:
            for _name, sql in self.indexes:
                self.conn.exec_driver_sql(sql)


def _set_membership(conn: Connection, fresh: bool) -> None:
    """Matches as the ERP has them now: membership replaces the earlier one (store.set_matches,
    set-based), for the entries stored before this file (new ones go in with their match)."""
    im, m, mm, e, b = imp_matches, s.matches, imp_members, s.entries, imp_before
    if fresh:      # every match is new, every member a new entry of this file (pending already)
        _mark_pending(conn, "match", select(im.c.id), unique=True)
        return
    conn.execute(insert(imp_changed).from_select(["kind", "id"], select(literal("match"), im.c.id)
                                                 .join(m, m.c.id == im.c.id).where(m.c.version != im.c.version)))
    changed_m = _changed("match")
    # the members of new and changed matches
    moving = select(mm.c.entry_id).where(or_(mm.c.match_id.in_(changed_m), ~exists().where(m.c.id == mm.c.match_id)))
    # Earlier membership first, before any match of this file moves an entry.
    conn.execute(insert(b).from_select(["match_id", "entry_id"], select(e.c.match_id, e.c.id).where(
        e.c.match_id.in_(changed_m))))
    conn.execute(update(e).where(e.c.match_id.in_(changed_m)).values(match_id=None))
    target = select(mm.c.match_id).where(mm.c.entry_id == e.c.id).limit(1).scalar_subquery()
    conn.execute(update(e).where(e.c.id.in_(moving), e.c.match_id.is_distinct_from(target)).values(match_id=target))
    # A removal Lowell would never accept: the entries that left a match Lowell has are held.
    sent = s.sent
    lowell_has = conn.execute(select(sent.c.id, sent.c.members).where(
        sent.c.kind == "match", sent.c.id.in_(changed_m))).all()
    for i in range(0, len(lowell_has), BATCH):
        chunk = dict(lowell_has[i:i + BATCH])
        before: dict[str, set[str]] = {}
        now: dict[str, set[str]] = {}
        for mid, eid in conn.execute(select(b.c.match_id, b.c.entry_id).where(b.c.match_id.in_(list(chunk)))):
            before.setdefault(mid, set()).add(eid)
        for mid, eid in conn.execute(select(mm.c.match_id, mm.c.entry_id).where(mm.c.match_id.in_(list(chunk)))):
            now.setdefault(mid, set()).add(eid)
        for mid, members in chunk.items():
            sent_ids = set(members.split()) if members else set()
            left = sorted((before.get(mid, set()) - now.get(mid, set())) & sent_ids)
            if left:
                conn.execute(update(e).where(e.c.id.in_(left)).values(left_match=mid))
            stay = sorted(now.get(mid, set()) & sent_ids)
            if stay:
                conn.execute(update(e).where(e.c.id.in_(stay)).values(left_match=None))
    _mark_pending(conn, "match", select(im.c.id).where(or_(im.c.id.in_(changed_m), ~exists().where(m.c.id == im.c.id))),
                  unique=True)
    _mark_pending(conn, "entry", select(b.c.entry_id))
    _mark_pending(conn, "entry", moving)


def _merge_matches(conn: Connection) -> tuple[int, int]:
    """The matches' rows: new ones in, changed versions replaced."""
    im, m = imp_matches, s.matches
    new = _rows(conn, insert(m).from_select(["id", "version"], select(im.c.id, im.c.version).where(
        ~exists().where(m.c.id == im.c.id))))
    changed = _rows(conn, update(m).where(m.c.id == im.c.id, m.c.id.in_(_changed("match")))
                    .values(version=im.c.version))
    return new, changed
