"""`reskontro doctor`: is this site ready to run? One check per thing a night depends on, each
ok or what to do about it.

Checks, in order: the configuration; the site's folders; the rule file (lint, and the rules
engine takes it); the rule examples; the template and the XSD (a tiny file rendered into a
temporary folder and put through the full pre-send check); the store (reachable, schema
current, `PRAGMA quick_check`); the SFTP key file (readable, private, its passphrase at hand);
the server's host key pinned; then, unless skipped (`sftp=False`), the network: the SFTP login
and the remote inbound/ and outbound/ folders (each must exist and take a file: a probe
`.part` is written and removed, never a `.xml` name); free space on the outbox's disk; the
time zone.

Nothing here changes the site: the store is opened read-only (a SQLite store is not created
when it is missing, nor upgraded when it is old), the test file goes to a temporary folder.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import replace
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import NamedTuple
from urllib.parse import quote

from reskontro.config import Config, ConfigError, load_config

MIN_FREE = 256 << 20      # bytes free on the outbox's disk: a million-entry backlog file is ~300 MB


class Check(NamedTuple):
    check: str
    ok: bool | None          # None: not run (skipped, or nothing to check there)
    message: str


def run_checks(site_dir: Path, *, sftp: bool = True, now: datetime | None = None) -> list[Check]:
    """Every check of the site in `site_dir`, in order; stops early only when there is no
    configuration to check the rest against."""
    try:
        config = load_config(site_dir)
    except ConfigError as exc:
        return [Check("config", False, f"{exc}")]
    out = [Check("config", True, f"{config.site / 'reskontro.toml'}: {config.mode}, sender {config.sender_id}")]
    out.append(_folders(config))
    rules, examples = _rules(config)
    out += [rules, examples]
    out.append(_template(config, now))
    out += _store(config)
    key = _key_file(config)
    out += [key, _host_key(config)]
    if sftp:
        out += _network(config, key.ok)
    else:
        out += [Check(name, None, "skipped (--no-sftp)") for name in ("sftp login", "remote inbound", "remote outbound")]
    out.append(_free_space(config))
    out.append(_time_zone(config, now))
    return out


def _folders(config: Config) -> Check:
    problems = []
    for what, folder in (("inbox", config.inbox), ("outbox", config.outbox), ("log", config.log_file.parent)):
        if not folder.is_dir():
            problems.append(f"{what} {folder} is missing (mkdir -p {folder})")
        elif not os.access(folder, os.W_OK | os.X_OK):
            problems.append(f"{what} {folder} is not writable for this user")
    if problems:
        return Check("folders", False, "; ".join(problems))
    return Check("folders", True, f"inbox {config.inbox}, outbox {config.outbox}, log in {config.log_file.parent}")


def _rules(config: Config) -> tuple[Check, Check]:
    from reskontro.rules.engine import RuleEngine
    from reskontro.rules.lint import examples_path, lint_file, run_examples

    path = config.rule_file
    if not path.is_file():
        missing = f"{path} is missing: take the default from a fresh `reskontro init`"
        return Check("rules", False, missing), Check("rule examples", None, "no rule file")
    rf, problems = lint_file(path)
    if problems or rf is None:
        first = str(problems[0]) if problems else f"{path}: cannot be read"
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        return (Check("rules", False, f"{first}{more}; run `reskontro rules lint`"),
                Check("rule examples", None, "not run: the rule file has problems"))
    try:
        RuleEngine(rf)
    except Exception as exc:      # durable_rules refusing the ruleset
        return (Check("rules", False, f"the rules engine refuses {path} ({exc}); run `reskontro rules lint`"),
                Check("rule examples", None, "not run"))
    rules = Check("rules", True, f"{path}: {len(rf.rules)} rules, lint clean")
    ex = examples_path(path)
    if not ex.is_file():
        return rules, Check("rule examples", False, f"{ex} is missing: keep examples beside the rules (a fresh "
                                                    "`reskontro init` has them) and run `reskontro rules test`")
    results = run_examples(rf, ex)
    failed = [r for r in results if not r.ok]
    if failed:
        r = failed[0]
        return rules, Check("rule examples", False, f"{len(failed)} of {len(results)} fail, first {ex}:{r.line} "
                                                    f"{r.name}: {r.message}; run `reskontro rules test`")
    return rules, Check("rule examples", True, f"{ex}: {len(results)} examples pass")


def _template(config: Config, now: datetime | None) -> Check:
    """A tiny file (one customer, an invoice, its payment, their match) rendered by the site's
    template into a temporary folder and put through the full pre-send check."""
    from reskontro.domain import Address, Customer, Entry, Match
    from reskontro.transfer.contract import check_transfer_file
    from reskontro.transfer.render import OSLO, TEMPLATE_NAME, FileHeader, make_environment, render_transfer

    template, xsd = config.templates_dir / TEMPLATE_NAME, config.xsd
    missing = [str(p) for p in (template, xsd) if not p.is_file()]
    if missing:
        return Check("template", False, f"{', '.join(missing)} missing: take it from a fresh `reskontro init`")
    at = (now or datetime.now(OSLO)).astimezone(OSLO)
    header = FileHeader(config.sender_id, config.creditor_org_no, 1, "daily", at, at, config.base_currency)
    customer = Customer("DOCTOR-C1", "Kari Nordmann", "private", Address(("Storgata 1",), "0150", "OSLO", "NO"))
    day = at.date()
    invoice = Entry("DOCTOR-I1", "DOCTOR-C1", "invoice", "DOCTOR-F1", day, Decimal("100.00"),
                    currency=config.base_currency, due_date=date.fromordinal(day.toordinal() + 14),
                    status="invoiced")
    payment = Entry("DOCTOR-P1", "DOCTOR-C1", "payment", "DOCTOR-B1", day, Decimal("-100.00"),
                    currency=config.base_currency)
    try:
        with tempfile.TemporaryDirectory(prefix="reskontro-doctor-") as tmp:
            path = Path(tmp) / f"{header.file_id}.xml"
            with path.open("wb") as f:
                render_transfer(f, header, [customer], [invoice, payment], [Match("DOCTOR-M1", ("DOCTOR-I1", "DOCTOR-P1"))],
                                make_environment(config.templates_dir))
            errors = check_transfer_file(path, xsd)
    except Exception as exc:       # a template that does not render, an XSD that does not parse
        return Check("template", False, f"{template}: {type(exc).__name__}: {exc}; take the template and XSD from "
                                        "a fresh `reskontro init`")
    if errors:
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        return Check("template", False, f"a test file rendered by {template} fails the check against {xsd.name}: "
                                        f"{errors[0]}{more}; take both from a fresh `reskontro init`")
    return Check("template", True, f"{template.name} renders a test file that passes {xsd.name} and the pre-send check")


def _store(config: Config) -> list[Check]:
    """Reachable, schema current, quick_check; opened read-only (nothing created or upgraded)."""
    from sqlalchemy import create_engine, inspect
    from sqlalchemy.engine import make_url

    from reskontro.errors import StoreError, describe, store_name
    from reskontro.ledger import schema as s
    from reskontro.ledger.migrate import index_names
    from reskontro.ledger.store import check_integrity

    url = make_url(config.database)
    where = store_name(url)
    if url.drivername.startswith("sqlite"):
        path = Path(url.database or "")
        if not url.database or url.database == ":memory:":
            return [Check("store", False, f"{config.database}: an in-memory store keeps nothing; set "
                                          "paths.database to a file"),
                    Check("schema", None, "no store"), Check("quick_check", None, "no store")]
        if not path.is_file():
            return [Check("store", False, f"{path} does not exist yet: `reskontro init` (or any command) creates it"),
                    Check("schema", None, "no store"), Check("quick_check", None, "no store")]
        url = url.set(database=f"file:{quote(str(path.resolve()))}?mode=ro", query={"uri": "true"})
    db = create_engine(url)
    try:
        try:
            insp = inspect(db)
            tables = set(insp.get_table_names())
            missing = []
            for table in s.metadata.sorted_tables:
                if table.name not in tables:
                    missing.append(table.name)
                    continue
                have = {c["name"] for c in insp.get_columns(table.name)}
                missing += [f"{table.name}.{c.name}" for c in table.columns if c.name not in have]
                indexes = index_names(db, table.name)
                missing += [f"index {i.name}" for i in table.indexes if i.name not in indexes]
        except Exception as exc:       # noqa: BLE001 - one line about the store, whatever it is
            return [Check("store", False, f"{describe(exc, where)}"), Check("schema", None, "store not reachable"),
                    Check("quick_check", None, "store not reachable")]
        out = [Check("store", True, f"{where} is reachable")]
        if missing:
            out.append(Check("schema", False, f"older than this version (no {', '.join(missing[:5])}"
                                              f"{' …' if len(missing) > 5 else ''}): any command that opens the "
                                              "store upgrades it in place, e.g. `reskontro status`"))
        else:
            out.append(Check("schema", True, f"current ({len(s.metadata.tables)} tables)"))
        if db.dialect.name != "sqlite":
            out.append(Check("quick_check", None, f"not a SQLite store ({db.dialect.name})"))
            return out
        try:
            check_integrity(db)
        except StoreError as exc:
            out.append(Check("quick_check", False, str(exc)))
        else:
            out.append(Check("quick_check", True, "PRAGMA quick_check: ok"))
        return out
    finally:
        db.dispose()


def _settings(config: Config):
    from reskontro.exchange.remote import sftp_settings
    return sftp_settings(config)


def _key_file(config: Config) -> Check:
    from reskontro.adapters.sftp import SftpError, load_private_key

    key = config.sftp.key_file
    if key is None:
        return Check("key file", False, "sftp.key_file is not set in reskontro.toml (an ed25519 or RSA private key)")
    try:
        settings = _settings(config)
        pkey = load_private_key(settings)
    except ConfigError as exc:
        return Check("key file", False, str(exc))
    except SftpError as exc:
        text = str(exc)
        if "too open" in text:
            text += f" Run: chmod 600 {key}"
        return Check("key file", False, text)
    except OSError as exc:
        return Check("key file", False, f"{key}: {exc.strerror or exc}")
    mode = key.stat().st_mode & 0o777
    if mode & 0o077:       # another user's key that others may read: load_private_key lets it pass
        return Check("key file", False, f"{key} has mode 0{mode:03o}: others may read it; chmod 600 {key}")
    secret = (f", passphrase from ${config.sftp.passphrase_env}" if config.sftp.passphrase_env
              else f", passphrase from {config.sftp.passphrase_file}" if config.sftp.passphrase_file else "")
    return Check("key file", True, f"{key}: {pkey.get_name()} {pkey.fingerprint}, mode 0{mode:03o}{secret}")


def _host_key(config: Config) -> Check:
    import paramiko

    c = config.sftp
    if c.known_hosts is None:
        return Check("host key", False, "sftp.known_hosts is not set in reskontro.toml (the server's pinned host key)")
    name = c.host if c.port == 22 else f"[{c.host}]:{c.port}"
    scan = f"ssh-keyscan -p {c.port} {c.host} >> {c.known_hosts}"
    try:
        keys = paramiko.HostKeys(str(c.known_hosts))
    except FileNotFoundError:
        return Check("host key", False, f"{c.known_hosts} does not exist: check the server's fingerprint with "
                                        f"Lowell, then `{scan}`")
    except (OSError, paramiko.SSHException) as exc:
        return Check("host key", False, f"cannot read {c.known_hosts}: {exc}")
    found = keys.lookup(name)
    if not found:
        return Check("host key", False, f"no host key for {name} in {c.known_hosts} (never learnt automatically): "
                                        f"check the server's fingerprint with Lowell, then `{scan}`")
    return Check("host key", True, f"{name} pinned in {c.known_hosts} ({', '.join(sorted(found.keys()))})")


def _network(config: Config, key_ok: bool | None) -> list[Check]:
    from reskontro.adapters.sftp import SftpClient, SftpError

    names = ("sftp login", "remote inbound", "remote outbound")
    if not key_ok:
        return [Check(n, None, "not tried: fix the key file first") for n in names]
    c = config.sftp
    # one attempt, a short wait: a doctor says what is wrong now, it does not wait it out
    settings = replace(_settings(config), retries=0, timeout=min(c.timeout, 15.0))
    client = SftpClient(settings)
    try:
        try:
            client.connect()
        except SftpError as exc:
            return [Check("sftp login", False, str(exc))] + [Check(n, None, "not tried: no login") for n in names[1:]]
        out = [Check("sftp login", True, f"logged in to {c.host}:{c.port} as {c.user!r}")]
        for name, folder in (("remote inbound", c.remote_inbound), ("remote outbound", c.remote_outbound)):
            try:
                client.probe_folder(folder)
            except SftpError as exc:
                out.append(Check(name, False, str(exc)))
            else:
                out.append(Check(name, True, f"{folder}/ exists and takes files (a probe .part written and removed)"))
        return out
    finally:
        client.close()


def _free_space(config: Config) -> Check:
    folder = config.outbox if config.outbox.is_dir() else config.site
    try:
        free = shutil.disk_usage(folder).free
    except OSError as exc:
        return Check("free space", False, f"{folder}: {exc.strerror or exc}")
    text = f"{free / 2**20:,.0f} MiB free on the outbox's disk ({folder})"
    if free < MIN_FREE:
        return Check("free space", False, f"only {text}; at least {MIN_FREE >> 20} MiB wanted (a backlog file of a "
                                          "million entries is ~300 MB): free some space on that disk")
    return Check("free space", True, text)


def _time_zone(config: Config, now: datetime | None) -> Check:
    from zoneinfo import ZoneInfoNotFoundError

    from reskontro.exchange.remote import next_run
    try:
        tz = config.tz
    except (ZoneInfoNotFoundError, ValueError):
        return Check("time zone", False, f"no time zone data for {config.timezone}: install it (apt-get install "
                                         "tzdata, or pip install tzdata)")
    local = (now or datetime.now(tz)).astimezone(tz)
    due = next_run(local, config.send_time, tz)
    return Check("time zone", True, f"{config.timezone}: now {local:%Y-%m-%d %H:%M %Z}; next run "
                                    f"{due:%Y-%m-%d %H:%M %Z}")
