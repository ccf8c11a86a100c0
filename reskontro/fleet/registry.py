"""The fleet: many creditors in one PostgreSQL database, each in a schema of its own.

The registry (schema `fleet`: creditors, settings) says who the creditors are and how each
is configured: the same settings as a site's `reskontro.toml`, validated by the same
`config.parse_config`. Each creditor's ledger, journal and payments are the single-site tables
unchanged (ledger.schema), in the creditor's schema `c_<id>`, owned by the creditor's role
(`<database>_<id>`, NOLOGIN). A creditor's context connects with `-c role=... -c
search_path=c_<id>` in its URL, so every query of its jobs (and of their helper processes,
which open the same URL) runs as that role: another creditor's schema is refused by
PostgreSQL ("permission denied for schema c_b"), and so are the registry and the queue.

Files per creditor live under the fleet's data folder: `creditors/<id>/{inbox,outbox,var}`
(and `rules/` when it has its own rule file); the fleet's default rules and templates in
`rules/` and `templates/` beside them.
"""
from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

from sqlalchemy import (Boolean, Column, DateTime, Engine, ForeignKey, Integer, MetaData, String, Table, Text,
                        create_engine, func, insert, select, text, update)
from sqlalchemy.engine import make_url

from reskontro.config import Config, ConfigError, parse_config
from reskontro.domain import InputError

FLEET_SCHEMA = "fleet"
CREDITOR_ID = re.compile(r"[a-z][a-z0-9_]{0,29}")

metadata = MetaData(schema=FLEET_SCHEMA)

creditors = Table(
    "creditors", metadata,
    Column("id", String(30), primary_key=True),
    Column("sender_id", String(35), nullable=False, unique=True),
    Column("org_no", String(9), nullable=False),
    Column("mode", String(16), nullable=False),
    Column("timezone", String(64), nullable=False),
    Column("send_time", String(5), nullable=False),
    Column("sftp_host", String(255), nullable=False),
    Column("sftp_port", Integer, nullable=False),
    Column("sftp_user", String(64), nullable=False),
    Column("sftp_key_file", Text),
    Column("sftp_known_hosts", Text),
    Column("own_rules", Boolean, nullable=False, default=False),   # else the fleet's default rule file
    Column("schema_name", String(63), nullable=False),
    Column("role_name", String(63), nullable=False),
    Column("disabled", Boolean, nullable=False, default=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

# The creditors' own bank accounts (domain.bank_account keys): a bank file in the shared drop
# folder goes to the creditor whose account it credits (fleet.routing). One account, one creditor.
accounts = Table(
    "accounts", metadata,
    Column("account", String(34), primary_key=True),
    Column("creditor_id", String(30), ForeignKey(creditors.c.id), nullable=False, index=True),
)

settings = Table(
    "settings", metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)


class FleetError(InputError):
    """A fleet that is not there, a creditor that is not known or not allowed; one line."""


@dataclass(frozen=True)
class Creditor:
    id: str
    sender_id: str
    org_no: str
    mode: str
    timezone: str
    send_time: str
    sftp_host: str
    sftp_port: int
    sftp_user: str
    sftp_key_file: str | None
    sftp_known_hosts: str | None
    own_rules: bool
    schema_name: str
    role_name: str
    disabled: bool
    created_at: datetime | None = None
    accounts: tuple[str, ...] = ()       # its bank accounts (keys), for the drop folder's routing

    def as_dict(self) -> dict:
        return {"id": self.id, "sender_id": self.sender_id, "org_no": self.org_no, "mode": self.mode,
                "timezone": self.timezone, "send_time": self.send_time,
                "sftp": {"host": self.sftp_host, "port": self.sftp_port, "user": self.sftp_user,
                         "key_file": self.sftp_key_file, "known_hosts": self.sftp_known_hosts},
                "rules": "own" if self.own_rules else "fleet default", "schema": self.schema_name,
                "role": self.role_name, "disabled": self.disabled, "accounts": list(self.accounts),
                "created_at": None if self.created_at is None else self.created_at.isoformat(timespec="seconds")}


@dataclass
class Fleet:
    url: str                     # the fleet database (the operator's role: creates roles and schemas)
    engine: Engine
    data_dir: Path

    @property
    def default_rules(self) -> Path:
        return self.data_dir / "rules"

    @property
    def templates(self) -> Path:
        return self.data_dir / "templates"

    @property
    def drop(self) -> Path:
        """The shared drop folder: bank files and receipts for any creditor, routed by the ids
        inside them (fleet.routing)."""
        return self.data_dir / "drop"

    def creditor_dir(self, creditor_id: str) -> Path:
        return self.data_dir / "creditors" / creditor_id

    def dispose(self) -> None:
        self.engine.dispose()


def _engine(url: str) -> Engine:
    if not url.startswith("postgresql"):
        raise FleetError(f"{url!r}: a fleet needs a PostgreSQL URL (postgresql+psycopg://user@host/dbname)")
    return create_engine(url, future=True, pool_pre_ping=True)


def init_fleet(url: str, data_dir: Path) -> Fleet:
    """The registry's tables, the task queue's (procrastinate's schema) and the data folder with
    the fleet's default rules and templates. Run again: adds what is missing, changes nothing else."""
    from procrastinate.schema import SchemaManager

    from reskontro.files.private import private_dir
    from reskontro.site import package_data
    engine = _engine(url)
    data_dir = data_dir.resolve()
    with engine.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA IF NOT EXISTS {FLEET_SCHEMA}"))
        conn.execute(text(f"REVOKE ALL ON SCHEMA {FLEET_SCHEMA} FROM PUBLIC"))
    metadata.create_all(engine)
    with engine.begin() as conn:
        have = conn.execute(select(settings.c.value).where(settings.c.key == "data_dir")).scalar()
        if have is None:
            conn.execute(insert(settings).values(key="data_dir", value=str(data_dir)))
        elif Path(have) != data_dir:
            raise FleetError(f"the fleet's data folder is {have}, not {data_dir}: give that one")
        if conn.execute(text("SELECT to_regclass('public.procrastinate_jobs')")).scalar() is None:
            with conn.connection.dbapi_connection.cursor() as cur:   # no parameters: its % are its own
                cur.execute(SchemaManager.get_schema())
        _jobs_indexes(conn)
    private_dir(data_dir)
    (data_dir / "creditors").mkdir(exist_ok=True)
    (data_dir / "drop").mkdir(exist_ok=True)
    for name in ("rules", "templates"):
        target = data_dir / name
        target.mkdir(exist_ok=True)
        for f in package_data(name).iterdir():
            if f.suffix in (".yaml", ".j2", ".xsd") and not (target / f.name).exists():
                shutil.copyfile(f, target / f.name)
    return Fleet(url, engine, data_dir)


# The task queue's lock check (procrastinate_fetch_job) looks for another job of the same lock
# for every waiting job it considers; procrastinate's own index has the lock second, so each
# look read every waiting job: with all of a night's jobs queued at 18:00, a fetch cost grew
# with their number (1.6 ms a job at 1,000 waiting became 17 ms at 5,000; procrastinate issue
# 1242). Ours finds a lock's jobs directly. And the scheduler asks every minute which nights
# are queued already (by local date): without an index that read every job the queue keeps.
JOBS_INDEXES = {
    "reskontro_jobs_lock_idx": "ON procrastinate_jobs (lock) WHERE status IN ('todo', 'doing')",
    "reskontro_jobs_night_idx": "ON procrastinate_jobs ((args->>'local_date')) WHERE task_name = 'nightly'",
}


def _jobs_indexes(conn) -> None:
    for name, definition in JOBS_INDEXES.items():
        conn.execute(text(f"CREATE INDEX IF NOT EXISTS {name} {definition}"))


def open_fleet(url: str) -> Fleet:
    engine = _engine(url)
    with engine.connect() as conn:
        have_settings, have_accounts, *indexes = conn.execute(text(
            f"SELECT to_regclass('{FLEET_SCHEMA}.settings'), to_regclass('{FLEET_SCHEMA}.accounts'), "
            + ", ".join(f"to_regclass('public.{name}')" for name in JOBS_INDEXES))).one()
        if have_settings is None:
            engine.dispose()
            raise FleetError(f"{make_url(url).render_as_string()}: no fleet here; run `reskontro fleet init URL` first")
        data_dir = conn.execute(select(settings.c.value).where(settings.c.key == "data_dir")).scalar_one()
    if have_accounts is None:       # a fleet made before the accounts: the registry's new table
        metadata.create_all(engine)
    if None in indexes:             # a fleet made before the queue's indexes
        with engine.begin() as conn:
            _jobs_indexes(conn)
    return Fleet(url, engine, Path(data_dir))


# --- a creditor's configuration ----------------------------------------------------------------
def _raw_config(fleet: Fleet, c: dict, rules_dir: Path) -> dict:
    """The creditor's settings as reskontro.toml would hold them (for parse_config)."""
    sftp = {"host": c["sftp_host"], "port": c["sftp_port"], "user": c["sftp_user"]}
    if c.get("sftp_key_file"):
        sftp["key_file"] = c["sftp_key_file"]
    if c.get("sftp_known_hosts"):
        sftp["known_hosts"] = c["sftp_known_hosts"]
    return {
        "creditor": {"sender_id": c["sender_id"], "org_no": c["org_no"], "mode": c["mode"]},
        "schedule": {"timezone": c["timezone"], "send_time": c["send_time"]},
        "paths": {"database": creditor_url(fleet.url, c["schema_name"], c["role_name"]),
                  "rules": str(rules_dir), "templates": str(fleet.templates),
                  "inbox": "inbox", "outbox": "outbox", "log_file": "var/reskontro.log"},
        "sftp": sftp,
    }


def creditor_url(fleet_url: str, schema: str, role: str) -> str:
    """The fleet URL bound to one creditor: its role and its schema, from the connection's
    start (libpq `options`), for this process and every helper process that opens it."""
    url = make_url(fleet_url)
    options = " ".join(filter(None, [url.query.get("options"), f"-c role={role}", f"-c search_path={schema}"]))
    return url.update_query_dict({"options": options}).render_as_string(hide_password=False)


def creditor_config(fleet: Fleet, c: Creditor) -> Config:
    d = fleet.creditor_dir(c.id)
    rules_dir = d / "rules" if c.own_rules else fleet.default_rules
    return parse_config(_raw_config(fleet, c.__dict__, rules_dir), d, f"creditor {c.id}")


def names(fleet: Fleet, creditor_id: str) -> tuple[str, str]:
    """(schema, role) of a creditor: the role's name carries the database's, since roles are
    the cluster's and one cluster may hold several fleets."""
    db = make_url(fleet.url).database or "fleet"
    return f"c_{creditor_id}", f"{re.sub(r'[^a-z0-9_]', '_', db.lower())[:30]}_{creditor_id}"


def add_creditor(fleet: Fleet, *, creditor_id: str, sender_id: str, org_no: str, mode: str = "full_ledger",
                 timezone: str = "Europe/Oslo", send_time: str = "18:00", sftp_host: str = "127.0.0.1",
                 sftp_port: int = 22, sftp_user: str = "reskontro", sftp_key_file: str | None = None,
                 sftp_known_hosts: str | None = None, rule_file: Path | None = None,
                 accounts: tuple[str, ...] | list[str] = ()) -> Creditor:
    """A new creditor: validated as reskontro.toml is (ConfigError naming the setting), its rule
    file (if its own) linted, then its row, role, schema and empty store, and its folders."""
    from reskontro.files.private import private_dir
    from reskontro.ledger.store import open_engine
    if not CREDITOR_ID.fullmatch(creditor_id):
        raise FleetError(f"creditor id {creditor_id!r} must be 1-30 lower-case letters, digits or _ "
                         "(starting with a letter)")
    schema, role = names(fleet, creditor_id)
    row = dict(id=creditor_id, sender_id=sender_id, org_no=org_no, mode=mode, timezone=timezone,
               send_time=send_time, sftp_host=sftp_host, sftp_port=sftp_port, sftp_user=sftp_user,
               sftp_key_file=None if sftp_key_file is None else str(Path(sftp_key_file).resolve()),
               sftp_known_hosts=None if sftp_known_hosts is None else str(Path(sftp_known_hosts).resolve()),
               own_rules=rule_file is not None, schema_name=schema, role_name=role, disabled=False)
    d = fleet.creditor_dir(creditor_id)
    parse_config(_raw_config(fleet, row, fleet.default_rules), d, f"creditor {creditor_id}")   # ConfigError
    keys = _account_keys(accounts)
    if rule_file is not None:
        from reskontro.rules.lint import lint_file
        from reskontro.rules.rulefile import RuleFileError
        _, problems = lint_file(rule_file)
        if problems:
            raise RuleFileError(problems)
    with fleet.engine.begin() as conn:
        if conn.execute(select(creditors.c.id).where(creditors.c.id == creditor_id)).first():
            raise FleetError(f"creditor {creditor_id} is registered already")
        if conn.execute(select(creditors.c.id).where(creditors.c.sender_id == sender_id)).first():
            raise FleetError(f"sender id {sender_id} belongs to another creditor already")
        conn.execute(insert(creditors).values(**row))
        _insert_accounts(conn, creditor_id, keys)
        exists = conn.execute(text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": role}).first()
        if not exists:
            conn.execute(text(f'CREATE ROLE "{role}" NOLOGIN NOINHERIT'))
        conn.execute(text(f'GRANT "{role}" TO CURRENT_USER'))
        conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}" AUTHORIZATION "{role}"'))
        conn.execute(text(f'REVOKE ALL ON SCHEMA "{schema}" FROM PUBLIC'))
    c = get_creditor(fleet, creditor_id)
    for name in ("inbox", "outbox"):
        (d / name).mkdir(parents=True, exist_ok=True)
    private_dir(d / "var")
    if rule_file is not None:
        (d / "rules").mkdir(exist_ok=True)
        shutil.copyfile(rule_file, d / "rules" / "transfer.yaml")
    open_engine(creditor_config(fleet, c).database).dispose()   # its tables, created as its role
    return c


def _account_keys(given) -> list[str]:
    """The accounts as keys (domain.bank_account), each once; FleetError naming a bad one."""
    from reskontro.domain import bank_account
    keys: list[str] = []
    for a in given:
        try:
            k = bank_account.validate(a)
        except InputError as exc:
            raise FleetError(str(exc)) from None
        if k not in keys:
            keys.append(k)
    return keys


def _insert_accounts(conn, creditor_id: str, keys: list[str]) -> None:
    if not keys:
        return
    taken = conn.execute(select(accounts.c.account, accounts.c.creditor_id)
                         .where(accounts.c.account.in_(keys))).all()
    others = [f"{a} (creditor {c})" for a, c in taken if c != creditor_id]
    if others:
        raise FleetError(f"bank account {', '.join(others)} belongs to another creditor already: "
                         "an account is one creditor's, or the drop folder could not tell whose a file is")
    mine = {a for a, _ in taken}
    new = [k for k in keys if k not in mine]
    if new:
        conn.execute(insert(accounts), [{"account": k, "creditor_id": creditor_id} for k in new])


def add_accounts(fleet: Fleet, creditor_id: str, given: list[str]) -> Creditor:
    """More bank accounts for a creditor (validated; one already its own is no change)."""
    keys = _account_keys(given)
    get_creditor(fleet, creditor_id)
    with fleet.engine.begin() as conn:
        _insert_accounts(conn, creditor_id, keys)
    return get_creditor(fleet, creditor_id)


def _row(r, owned: tuple[str, ...] = ()) -> Creditor:
    m = r._mapping
    return Creditor(**{k: m[k] for k in Creditor.__dataclass_fields__ if k != "accounts"}, accounts=owned)


def _accounts_of(conn, ids: list[str] | None = None) -> dict[str, tuple[str, ...]]:
    q = select(accounts.c.creditor_id, accounts.c.account).order_by(accounts.c.creditor_id, accounts.c.account)
    if ids is not None:
        q = q.where(accounts.c.creditor_id.in_(ids))
    out: dict[str, list[str]] = {}
    for cid, a in conn.execute(q):
        out.setdefault(cid, []).append(a)
    return {cid: tuple(a) for cid, a in out.items()}


def list_creditors(fleet: Fleet, *, include_disabled: bool = True) -> list[Creditor]:
    q = select(creditors).order_by(creditors.c.id)
    if not include_disabled:
        q = q.where(creditors.c.disabled.is_(False))
    with fleet.engine.connect() as conn:
        owned = _accounts_of(conn)
        return [_row(r, owned.get(r.id, ())) for r in conn.execute(q)]


def get_creditor(fleet: Fleet, creditor_id: str) -> Creditor:
    with fleet.engine.connect() as conn:
        r = conn.execute(select(creditors).where(creditors.c.id == creditor_id)).first()
        owned = _accounts_of(conn, [creditor_id]).get(creditor_id, ()) if r is not None else ()
    if r is None:
        raise FleetError(f"no creditor {creditor_id!r} in this fleet (`reskontro creditors list`)")
    return _row(r, owned)


def owners(fleet: Fleet) -> tuple[dict[str, str], dict[str, str]]:
    """Who owns what the drop folder's files name: {account key: creditor id} and
    {sender id: creditor id}, disabled creditors included (their files still are theirs)."""
    with fleet.engine.connect() as conn:
        by_account = {a: c for a, c in conn.execute(select(accounts.c.account, accounts.c.creditor_id))}
        by_sender = {s: c for c, s in conn.execute(select(creditors.c.id, creditors.c.sender_id))}
    return by_account, by_sender


def disable_creditor(fleet: Fleet, creditor_id: str) -> Creditor:
    """No more nightly jobs for it (its store and files are kept; a job queued already skips)."""
    get_creditor(fleet, creditor_id)
    with fleet.engine.begin() as conn:
        conn.execute(update(creditors).where(creditors.c.id == creditor_id).values(disabled=True))
    return get_creditor(fleet, creditor_id)


# --- the schedule --------------------------------------------------------------------------------
def due_nightly(fleet: Fleet, now: datetime, queued: set[tuple[str, str]]) -> list[tuple[Creditor, date]]:
    """The (creditor, local date) whose nightly job is due at `now` and not queued yet (`queued`:
    the (creditor, date) pairs of the queue's nightly jobs, any state): past today's send time in
    the creditor's own zone (exchange.cycle.send_time_on: DST-correct). As in single-site mode, a
    fleet that was down at the send time catches up at its next tick the same (local) day."""
    from reskontro.exchange.cycle import send_time_on
    out = []
    for c in list_creditors(fleet, include_disabled=False):
        cfg = _schedule_config(c)
        local = now.astimezone(cfg.tz)
        if local >= send_time_on(cfg, local.date()) and (c.id, local.date().isoformat()) not in queued:
            out.append((c, local.date()))
    return out


def _schedule_config(c: Creditor) -> Config:
    """Just enough of a creditor's config for its schedule (no paths, nothing opened)."""
    from datetime import time
    h, m = c.send_time.split(":")
    return Config(site=Path("."), sender_id=c.sender_id, creditor_org_no=c.org_no, timezone=c.timezone,
                  send_time=time(int(h), int(m)))


__all__ = ["ConfigError", "Creditor", "Fleet", "FleetError", "add_accounts", "add_creditor", "creditor_config", "creditor_url",
           "disable_creditor", "due_nightly", "get_creditor", "init_fleet", "list_creditors", "open_fleet"]


def creditor_site(fleet: Fleet, creditor_id: str, *, allow_disabled: bool = False):
    """A creditor's context, as a site folder is for single-site mode: its Config (from the
    registry), its store (the fleet database bound to its role and schema) and its rules."""
    from reskontro.site import Site
    c = get_creditor(fleet, creditor_id)
    if c.disabled and not allow_disabled:
        raise FleetError(f"creditor {creditor_id} is disabled")
    return Site(creditor_config(fleet, c))
