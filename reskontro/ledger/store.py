"""The ledger store on SQLAlchemy Core: SQLite by default, any URL (PostgreSQL) selects another.

Rows map to and from the plain domain types; every write of one import happens in one
transaction, so a file is stored whole or not at all.
"""
from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from pathlib import Path

from sqlalchemy import Connection, Engine, bindparam, create_engine, delete, event, insert, select, update
from sqlalchemy.engine import Row
from sqlalchemy.exc import SQLAlchemyError

from reskontro.ledger import migrate
from reskontro.ledger import schema as s
from reskontro.domain import Address, Customer, Entry, Match, from_ore, to_ore
from reskontro.errors import StoreError, describe, one_line, store_name
from reskontro.domain.kid import state as kid_state
from reskontro.files.private import create_private, private_dir

BATCH = 500


def open_engine(url: str) -> Engine:
    """Create the engine and the tables (idempotent). A new SQLite file is created private
    (0600, in a 0700 folder when that is new too); SQLite gives its -wal and -shm files the
    same mode."""
    engine = create_engine(url, future=True)
    if engine.dialect.name == "sqlite":
        path = engine.url.database
        if path and path != ":memory:" and not path.startswith("file:"):
            private_dir(Path(path).parent)
            create_private(Path(path))

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record):  # WAL: readers (status, plan) never block the nightly run
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()
    elif engine.dialect.name == "postgresql":
        @event.listens_for(engine, "connect")
        def _plan_whole(dbapi_conn, _record):
            # The store reads each server-side cursor (yield_per) to its end: plan it for the
            # whole result, as a plain query is, not for its first 10 % (PostgreSQL's default
            # for cursors). The nightly decide planned that way cost ~37 ms instead of ~12.
            with dbapi_conn.cursor() as cur:
                cur.execute("SET cursor_tuple_fraction = 1")
            dbapi_conn.commit()
    if not migrate.is_current(engine):     # one query when it is: no reflection of ~20 tables
        s.metadata.create_all(engine)
        migrate.upgrade(engine)
        migrate.mark_current(engine)
    return engine


def analyze(db: Engine) -> None:
    """PostgreSQL: fresh planner statistics of the store's tables (a ledger imported since the
    last autovacuum pass is planned as if empty: the nightly decide then costs seconds, not
    a tenth). Only the store's own tables, by name (a fleet creditor's role owns no other).
    Nothing on SQLite."""
    if db.dialect.name != "postgresql":
        return
    ours = [t.name for t in s.metadata.sorted_tables]
    with db.begin() as conn:
        # Only the tables changed enough since their last analysis (autovacuum's own threshold:
        # 50 rows + 10 %), or never analysed: analysing all ~20 every night was about a third
        # of the PostgreSQL time of a fleet creditor's night.
        # (pg_class by its name index and the statistics functions, not pg_stat_user_tables:
        # that view reads every schema's tables, thousands in a fleet)
        stale = conn.exec_driver_sql(
            "SELECT c.relname FROM pg_class c WHERE c.relname = ANY(%(ours)s) "
            "AND c.relnamespace = current_schema()::regnamespace AND c.relkind = 'r' "
            "AND (coalesce(pg_stat_get_last_analyze_time(c.oid), pg_stat_get_last_autoanalyze_time(c.oid)) IS NULL "
            "OR pg_stat_get_mod_since_analyze(c.oid) > 50 + 0.1 * pg_stat_get_live_tuples(c.oid))",
            {"ours": ours}).scalars().all()
        if stale:
            conn.exec_driver_sql("ANALYZE " + ", ".join(t for t in ours if t in set(stale)))


def check_integrity(db: Engine) -> None:
    """Before an export: SQLite's `PRAGMA quick_check` must pass, else StoreError. A damaged
    page may hold nothing tonight's file reads, and the file would still say all is well."""
    if db.dialect.name != "sqlite":
        return
    where = store_name(db.url)
    try:
        with db.connect() as conn:
            problems = [r[0] for r in conn.exec_driver_sql("PRAGMA quick_check(20)")]
    except SQLAlchemyError as exc:
        raise StoreError(f"{describe(exc, where)} (PRAGMA quick_check); nothing is exported or sent "
                         "from it") from exc
    if problems != ["ok"]:
        more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
        raise StoreError(one_line(
            f"{where}: the store is damaged: PRAGMA quick_check: {problems[0]}{more}; nothing is "
            "exported or sent from it: restore it from a backup"))


def upsert_insert(conn: Connection, table):
    """An INSERT with ON CONFLICT for the databases that have it (SQLite, PostgreSQL), else
    None (the caller then does it in two steps)."""
    dialect = conn.dialect.name
    if dialect not in ("sqlite", "postgresql"):
        return None
    return __import__(f"sqlalchemy.dialects.{dialect}", fromlist=["insert"]).insert(table)


def digest(*parts: object) -> str:
    """A short, stable version stamp of some content (not a security hash)."""
    h = hashlib.blake2b(digest_size=8)
    h.update("\x1f".join("" if p is None else str(p) for p in parts).encode())
    return h.hexdigest()


def customer_wire(c: Customer) -> tuple:
    """A customer as the transfer file shows it (an org no only for a business)."""
    a = c.address
    return (c.type or "", c.name, c.org_no if c.type == "business" else None, tuple(a.lines),
            a.post_code, a.city, a.country, c.email or None, c.phone or None)


def entry_wire(e: Entry) -> tuple:
    """An entry as the transfer file shows it (the contract's EntryRecord.content order)."""
    return (e.type, e.customer_id, e.document_no, _iso(e.document_date),
            _iso(e.due_date) if e.type == "invoice" else None, e.amount, e.currency, e.kid or None,
            e.text or None)


def _iso(d) -> str | None:
    return None if d is None else d.isoformat()


# Two stamps per record. `version` covers exactly what the transfer file carries: it is what
# the journal records as sent, so only a change Lowell would see makes a record
# changed-after-sent. `stamp` covers every field (the rules read more than the file carries:
# status, factoring, opt-out, dunning level, source): a change there re-decides the record.
def customer_version(c: Customer) -> str:
    return digest(*customer_wire(c))


def customer_stamp(c: Customer) -> str:
    # tags only when there are any: the stamps of stores from before tags stay as they were
    return digest(customer_version(c), c.type, c.org_no, c.email, c.phone, c.factoring_default,
                  *((" ".join(c.tags),) if c.tags else ()))


def entry_version(e: Entry) -> str:
    return digest(*entry_wire(e))


def entry_stamp(e: Entry) -> str:
    return digest(entry_version(e), e.kid, e.text, e.due_date, e.status, e.factoring, e.opt_out,
                  e.reverses, e.source, e.dunning_level, e.bank_ref)


def match_version(m: Match) -> str:
    return digest(*sorted(m.entry_ids))


def customer_row(c: Customer) -> dict:
    lines = list(c.address.lines) + [None, None, None]
    return dict(id=c.id, name=c.name, type=c.type, org_no=c.org_no, line1=lines[0], line2=lines[1],
                line3=lines[2], post_code=c.address.post_code, city=c.address.city,
                country=c.address.country, email=c.email, phone=c.phone,
                factoring_default=c.factoring_default, tags=" ".join(c.tags) or None,
                version=customer_version(c), stamp=customer_stamp(c))


def row_customer(r: Row | dict) -> Customer:
    m = r._mapping if isinstance(r, Row) else r
    lines = tuple(x for x in (m["line1"], m["line2"], m["line3"]) if x)
    return Customer(id=m["id"], name=m["name"], type=m["type"], org_no=m["org_no"],
                    address=Address(lines, m["post_code"] or "", m["city"] or "", m["country"] or ""),
                    email=m["email"], phone=m["phone"], factoring_default=bool(m["factoring_default"]),
                    tags=tuple((m.get("tags") or "").split()))


def entry_row(e: Entry) -> dict:
    return dict(id=e.id, customer_id=e.customer_id, type=e.type, document_no=e.document_no,
                document_date=e.document_date, due_date=e.due_date, amount_ore=to_ore(e.amount),
                currency=e.currency, kid=e.kid, status=e.status, factoring=e.factoring,
                opt_out=e.opt_out, reverses=e.reverses, source=e.source,
                dunning_level=e.dunning_level, text=e.text, kid_check=kid_state(e.kid),
                bank_ref=e.bank_ref, version=entry_version(e), stamp=entry_stamp(e))


def row_entry(r: Row | dict) -> Entry:
    m = r._mapping if isinstance(r, Row) else r
    return Entry(id=m["id"], customer_id=m["customer_id"], type=m["type"],
                 document_no=m["document_no"], document_date=m["document_date"],
                 due_date=m["due_date"], amount=from_ore(m["amount_ore"]), currency=m["currency"],
                 kid=m["kid"], status=m["status"], factoring=m["factoring"],
                 opt_out=bool(m["opt_out"]), reverses=m["reverses"], source=m["source"],
                 dunning_level=m["dunning_level"] or 0, text=m["text"], bank_ref=m["bank_ref"])


def mark_undecided(conn: Connection, kind: str, ids) -> None:
    """Items (a list of ids, or a SELECT of them) whose decision may have changed: decided again
    the next time the lists of kept-back entries are read (rules.lists; table kept_dirty).
    Nothing while no list was ever built (meta `kept_basis`): the first read decides it all."""
    from sqlalchemy import exists, literal
    if conn.execute(select(s.meta.c.value).where(s.meta.c.key == "kept_basis")).scalar() is None:
        return
    d = s.kept_dirty
    if not isinstance(ids, list):
        sub = ids.subquery()
        col = sub.c[0]
        q = select(literal(kind), col).where(col.is_not(None), ~exists().where(d.c.kind == kind, d.c.id == col))
        conn.execute(insert(d).from_select(["kind", "id"], q.distinct()))
        return
    for i in range(0, len(ids), BATCH):
        chunk = list(dict.fromkeys(ids[i:i + BATCH]))
        have = set(conn.execute(select(d.c.id).where(d.c.kind == kind, d.c.id.in_(chunk))).scalars())
        rows = [{"kind": kind, "id": x} for x in chunk if x not in have]
        if rows:
            conn.execute(insert(d), rows)


class Ledger:
    """Reads and writes the ledger through one connection (the caller owns the transaction)."""

    def __init__(self, conn: Connection):
        self.conn = conn

    # --- writes --------------------------------------------------------------------------------
    def _stamps(self, table, ids: Sequence[str]) -> dict[str, str]:
        """The stamp of each stored row (a match has only its version)."""
        col = table.c.stamp if "stamp" in table.c else table.c.version
        out: dict[str, str] = {}
        for i in range(0, len(ids), BATCH):
            chunk = ids[i:i + BATCH]
            out.update(self.conn.execute(select(table.c.id, col).where(table.c.id.in_(chunk))).all())
        return out

    def _upsert(self, table, kind: str, rows: list[dict]) -> tuple[list[str], list[str]]:
        """Insert new rows, update changed ones; returns (new ids, changed ids), marked pending."""
        key = "stamp" if "stamp" in table.c else "version"
        known = self._stamps(table, [r["id"] for r in rows])
        new = [r for r in rows if r["id"] not in known]
        changed = [r for r in rows if r["id"] in known and known[r["id"]] != r[key]]
        if new:
            self.conn.execute(insert(table), new)
        if changed and table is s.entries:     # what Lowell has of them, kept for explain
            from reskontro.ledger.sent_content import keep_before_change
            keep_before_change(self.conn, [r["id"] for r in changed])
        for r in changed:
            self.conn.execute(update(table).where(table.c.id == r["id"]).values(**r))
        new_ids, changed_ids = [r["id"] for r in new], [r["id"] for r in changed]
        self.mark_pending(kind, new_ids + changed_ids)
        return new_ids, changed_ids

    def mark_pending(self, kind: str, ids: Iterable[str]) -> None:
        rows = [{"kind": kind, "id": i} for i in dict.fromkeys(ids)]
        if not rows:
            return
        mark_undecided(self.conn, kind, [r["id"] for r in rows])
        upsert = upsert_insert(self.conn, s.pending)
        if upsert is not None:
            self.conn.execute(upsert.on_conflict_do_nothing(), rows)
            return
        have = set()
        for i in range(0, len(rows), BATCH):
            chunk = [r["id"] for r in rows[i:i + BATCH]]
            have.update(self.conn.execute(select(s.pending.c.id).where(
                s.pending.c.kind == kind, s.pending.c.id.in_(chunk))).scalars())
        rows = [r for r in rows if r["id"] not in have]
        if rows:
            self.conn.execute(insert(s.pending), rows)

    def upsert_customers(self, customers: list[Customer]) -> tuple[int, int]:
        new, changed = self._upsert(s.customers, "customer", [customer_row(c) for c in customers])
        # A customer's data decides its entries (customer checks): re-decide what is not sent.
        for i in range(0, len(changed), BATCH):
            ids = self.conn.execute(select(s.entries.c.id).where(
                s.entries.c.customer_id.in_(changed[i:i + BATCH]))).scalars().all()
            self.mark_pending("entry", ids)
        return len(new), len(changed)

    def upsert_entries(self, entries: list[Entry]) -> tuple[int, int]:
        new, changed = self._upsert(s.entries, "entry", [entry_row(e) for e in entries])
        # An invoice's decision decides its group: re-decide the other members too.
        self._mark_groups_of(changed)
        return len(new), len(changed)

    def _mark_groups_of(self, entry_ids: list[str]) -> None:
        for i in range(0, len(entry_ids), BATCH):
            mids = self.conn.execute(select(s.entries.c.match_id).distinct().where(
                s.entries.c.id.in_(entry_ids[i:i + BATCH]), s.entries.c.match_id.is_not(None))
            ).scalars().all()
            if mids:
                members = self.conn.execute(select(s.entries.c.id).where(
                    s.entries.c.match_id.in_(mids))).scalars().all()
                self.mark_pending("entry", members)
                self.mark_pending("match", mids)

    def set_matches(self, matches: list[Match]) -> tuple[int, int]:
        """Store matches as the ERP has them now: membership replaces the earlier one."""
        new, changed = self._upsert(
            s.matches, "match", [{"id": m.id, "version": match_version(m)} for m in matches])
        by_id = {m.id: m for m in matches}
        set_match = (update(s.entries).where(s.entries.c.id == bindparam("eid"))
                     .values(match_id=bindparam("mid")))
        # Earlier membership first, before any match of this batch moves an entry.
        before = {mid: set(self.conn.execute(select(s.entries.c.id).where(s.entries.c.match_id == mid)).scalars())
                  for mid in changed}
        for mid in changed:
            self.conn.execute(update(s.entries).where(s.entries.c.match_id == mid).values(match_id=None))
        rows = [{"eid": e, "mid": mid} for mid in changed + new for e in by_id[mid].entry_ids]
        if rows:
            self.conn.execute(set_match, rows)
        for mid in changed:
            sent = self.conn.execute(select(s.sent.c.members).where(
                s.sent.c.kind == "match", s.sent.c.id == mid)).scalar()
            left = [e for e in before[mid] - set(by_id[mid].entry_ids) if sent and e in sent.split()]
            if left:   # a removal Lowell would never accept: those entries are held
                self.conn.execute(update(s.entries).where(s.entries.c.id.in_(left)).values(left_match=mid))
            stay = list(set(by_id[mid].entry_ids) & set(sent.split() if sent else ()))
            if stay:
                self.conn.execute(update(s.entries).where(s.entries.c.id.in_(stay)).values(left_match=None))
            self.mark_pending("entry", list(before[mid]))
        self.mark_pending("entry", [r["eid"] for r in rows])
        return len(new), len(changed)

    # --- reads ---------------------------------------------------------------------------------
    def existing_ids(self, table, ids: Iterable[str]) -> set[str]:
        ids = list(ids)
        found: set[str] = set()
        for i in range(0, len(ids), BATCH):
            found.update(self.conn.execute(select(table.c.id).where(
                table.c.id.in_(ids[i:i + BATCH]))).scalars())
        return found

    def entry_matches(self, ids: Iterable[str]) -> dict[str, str | None]:
        ids = list(ids)
        out: dict[str, str | None] = {}
        for i in range(0, len(ids), BATCH):
            out.update(self.conn.execute(select(s.entries.c.id, s.entries.c.match_id).where(
                s.entries.c.id.in_(ids[i:i + BATCH]))).all())
        return out

    def customer(self, cid: str) -> Customer | None:
        r = self.conn.execute(select(s.customers).where(s.customers.c.id == cid)).first()
        return row_customer(r) if r else None

    def entry(self, eid: str) -> Entry | None:
        r = self.conn.execute(select(s.entries).where(s.entries.c.id == eid)).first()
        return row_entry(r) if r else None

    def match_of(self, eid: str) -> str | None:
        return self.conn.execute(select(s.entries.c.match_id).where(s.entries.c.id == eid)).scalar()

    def match_members(self, mid: str) -> list[Entry]:
        return [row_entry(r) for r in self.conn.execute(
            select(s.entries).where(s.entries.c.match_id == mid).order_by(s.entries.c.id))]

    def count(self, table) -> int:
        from sqlalchemy import func
        return self.conn.execute(select(func.count()).select_from(table)).scalar_one()

    def get_meta(self, key: str, default: str | None = None) -> str | None:
        v = self.conn.execute(select(s.meta.c.value).where(s.meta.c.key == key)).scalar()
        return default if v is None else v

    def set_meta(self, key: str, value: str) -> None:
        if self.conn.execute(update(s.meta).where(s.meta.c.key == key).values(value=value)).rowcount == 0:
            self.conn.execute(insert(s.meta).values(key=key, value=value))

    def clear_pending(self, kind: str, ids: Iterable[str]) -> None:
        ids = list(ids)
        for i in range(0, len(ids), BATCH):
            self.conn.execute(delete(s.pending).where(s.pending.c.kind == kind,
                                                      s.pending.c.id.in_(ids[i:i + BATCH])))



class ChangeWatch:
    """Tells cheaply whether anyone changed the store since the last look: SQLite's
    `PRAGMA data_version` on one connection kept open (it changes when another connection
    commits), PostgreSQL's WAL position (any write in the cluster; conservative). Answers
    computed from the whole ledger (the plan, the data-quality report) are kept while it says
    nothing changed."""

    def __init__(self, db: Engine) -> None:
        import threading
        self._db = db
        self._conn = None
        self._lock = threading.Lock()

    def marker(self) -> object:
        with self._lock:
            if self._conn is None:
                self._conn = self._db.connect()
            if self._db.dialect.name == "sqlite":
                return self._conn.exec_driver_sql("PRAGMA data_version").scalar()
            if self._db.dialect.name == "postgresql":
                value = self._conn.exec_driver_sql("SELECT pg_current_wal_lsn()::text").scalar()
                self._conn.rollback()
                return value
            return None                      # unknown: every look says "maybe changed"

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
