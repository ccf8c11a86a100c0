"""The site configuration: one TOML file (``reskontro.toml``) beside rules/, templates/, inbox/, outbox/.

A bad value is refused at start with the key and the reason (:class:`ConfigError`).
"""
from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from datetime import time
from pathlib import Path
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from stdnum.no import orgnr

from reskontro.domain import MODES

CONFIG_NAME = "reskontro.toml"


class ConfigError(ValueError):
    """A configuration value that cannot be used; the message names the file and key."""


@dataclass(frozen=True)
class SftpConfig:
    host: str = "127.0.0.1"
    port: int = 22
    user: str = "reskontro"
    key_file: Path | None = None
    known_hosts: Path | None = None
    passphrase_env: str | None = None
    passphrase_file: Path | None = None
    remote_inbound: str = "inbound"
    remote_outbound: str = "outbound"
    timeout: float = 30.0
    retries: int = 5
    max_fetch_size: int = 64 << 20    # bytes; a bigger remote file is left on the server


NOTIFY_ON = ("failure", "person", "ok")
SMTP_SECURITY = ("starttls", "tls", "none")
LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("info", "debug")


@dataclass(frozen=True)
class NotifyConfig:
    """Who is told after a cycle that failed or needs a person (`[notify]`); any of a command,
    mail and a webhook. Secrets are named here (an environment variable, a file), never given."""
    on: tuple[str, ...] = ("failure", "person")
    command: tuple[str, ...] = ()           # argv, no shell; the run's summary as JSON on stdin
    webhook_url: str | None = None          # HTTP(S) POST of the summary as JSON
    smtp_host: str | None = None
    smtp_port: int = 587
    smtp_security: str = "starttls"         # starttls | tls (implicit, port 465) | none
    smtp_user: str | None = None
    smtp_password_env: str | None = None
    smtp_password_file: Path | None = None
    smtp_ca_file: Path | None = None        # a private CA for the mail server's certificate
    mail_from: str | None = None
    mail_to: tuple[str, ...] = ()
    timeout: float = 30.0                   # seconds, for each way of telling

    @property
    def configured(self) -> bool:
        return bool(self.command or self.webhook_url or self.smtp_host)


@dataclass(frozen=True)
class LogConfig:
    format: str = "text"                    # text: one line per event | json: one object per line
    level: str = "info"                     # info (and the tracebacks of errors, as DEBUG) | debug


@dataclass(frozen=True)
class WebConfig:
    """The support page (`[web]`): where it listens and who may use it. Without users or
    trusted proxies it serves the loopback address only (anyone on this machine is trusted)."""
    host: str = "127.0.0.1"
    port: int = 8080
    users: tuple[tuple[str, str], ...] = ()      # (login, argon2 hash): HTTP Basic
    trusted_proxies: tuple[str, ...] = ()        # addresses whose proxy_header names the login
    proxy_header: str = "X-Forwarded-User"

    @property
    def authenticated(self) -> bool:
        return bool(self.users or self.trusted_proxies)


@dataclass(frozen=True)
class Config:
    site: Path
    sender_id: str
    creditor_org_no: str
    mode: str = "full_ledger"
    base_currency: str = "NOK"
    timezone: str = "Europe/Oslo"
    send_time: time = time(18, 0)
    database: str = ""
    rules_dir: Path = Path("rules")
    templates_dir: Path = Path("templates")
    inbox: Path = Path("inbox")
    outbox: Path = Path("outbox")
    log_file: Path = Path("var/reskontro.log")
    sftp: SftpConfig = field(default_factory=SftpConfig)
    notify: NotifyConfig = field(default_factory=NotifyConfig)
    log: LogConfig = field(default_factory=LogConfig)
    web: WebConfig = field(default_factory=WebConfig)

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def rule_file(self) -> Path:
        return self.rules_dir / "transfer.yaml"

    @property
    def xsd(self) -> Path:
        return self.templates_dir / "ledger-transfer-1.xsd"


_KEYS = {
    "creditor": {"sender_id", "org_no", "mode", "base_currency"},
    "schedule": {"timezone", "send_time"},
    "paths": {"database", "rules", "templates", "inbox", "outbox", "log_file"},
    "sftp": {"host", "port", "user", "key_file", "known_hosts", "passphrase_env",
             "passphrase_file", "remote_inbound", "remote_outbound", "timeout", "retries",
             "max_fetch_size"},
    "notify": {"on", "command", "webhook_url", "smtp_host", "smtp_port", "smtp_security", "smtp_user",
               "smtp_password_env", "smtp_password_file", "smtp_ca_file", "mail_from", "mail_to", "timeout"},
    "log": {"format", "level"},
    "web": {"host", "port", "users", "trusted_proxies", "proxy_header"},
}


def load_config(site: Path) -> Config:
    """Read ``site/reskontro.toml``; relative paths are relative to the site folder."""
    site = site.resolve()
    path = site / CONFIG_NAME
    if not path.is_file():
        raise ConfigError(f"{path}: no configuration here; create a site with `reskontro init DIR` "
                          "or point --site / RESKONTRO_SITE at one")
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the configuration: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return parse_config(raw, site, str(path))


def parse_config(raw: dict, site: Path, origin: str = CONFIG_NAME) -> Config:
    def fail(key: str, why: str) -> ConfigError:
        return ConfigError(f"{origin}: {key}: {why}")

    for section, value in raw.items():
        if section not in _KEYS:
            raise fail(section, f"unknown section (known: {', '.join(sorted(_KEYS))})")
        if not isinstance(value, dict):
            raise fail(section, "must be a table")
        for key in value:
            if key not in _KEYS[section]:
                raise fail(f"{section}.{key}", f"unknown key (known: {', '.join(sorted(_KEYS[section]))})")

    cred = raw.get("creditor", {})
    sched = raw.get("schedule", {})
    paths = raw.get("paths", {})
    sftp = raw.get("sftp", {})
    notify = raw.get("notify", {})
    logs = raw.get("log", {})
    web = raw.get("web", {})

    def text(sec: dict, name: str, key: str, default: str | None = None) -> str:
        value = sec.get(key, default)
        if value is None:
            raise fail(f"{name}.{key}", "is required")
        if not isinstance(value, str):
            raise fail(f"{name}.{key}", f"must be a string, not {type(value).__name__}")
        return value

    sender_id = text(cred, "creditor", "sender_id")
    if not re.fullmatch(r"[A-Za-z0-9]{1,35}", sender_id):
        raise fail("creditor.sender_id", f"{sender_id!r} must be 1-35 letters or digits (the receiver's client number)")
    org_no = text(cred, "creditor", "org_no")
    if not orgnr.is_valid(org_no):
        raise fail("creditor.org_no", f"{org_no!r} is not a valid Norwegian organisation number (9 digits, MOD11)")
    mode = text(cred, "creditor", "mode", "full_ledger")
    if mode not in MODES:
        raise fail("creditor.mode", f"{mode!r} must be one of {', '.join(MODES)}")
    currency = text(cred, "creditor", "base_currency", "NOK")
    if not re.fullmatch(r"[A-Z]{3}", currency):
        raise fail("creditor.base_currency", f"{currency!r} must be an ISO 4217 code such as NOK")

    tz = text(sched, "schedule", "timezone", "Europe/Oslo")
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise fail("schedule.timezone", f"{tz!r} is not a known time zone (e.g. Europe/Oslo)") from None
    send = text(sched, "schedule", "send_time", "18:00")
    m = re.fullmatch(r"([01]\d|2[0-3]):([0-5]\d)", send)
    if not m:
        raise fail("schedule.send_time", f"{send!r} must be HH:MM (24 h), e.g. 18:00")

    def path(sec: dict, name: str, key: str, default: str | None) -> Path | None:
        value = sec.get(key, default)
        if value is None:
            return None
        if not isinstance(value, str) or not value:
            raise fail(f"{name}.{key}", "must be a non-empty path string")
        p = Path(value).expanduser()
        return p if p.is_absolute() else site / p

    database = paths.get("database", "sqlite:///reskontro.db")
    if not isinstance(database, str) or "://" not in database:
        raise fail("paths.database", f"{database!r} must be a database URL such as sqlite:///reskontro.db "
                   "or postgresql+psycopg://user@host/db")
    if database.startswith("sqlite:///") and not database.startswith("sqlite:////"):
        rel = database[len("sqlite:///"):]
        if rel and rel != ":memory:":
            database = "sqlite:///" + str(site / rel)

    port = sftp.get("port", 22)
    # bool is an int in Python: `port = true` must not pass as port 1
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise fail("sftp.port", f"{port!r} must be a port number 1-65535")
    timeout = sftp.get("timeout", 30)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
        raise fail("sftp.timeout", f"{timeout!r} must be a positive number of seconds")
    retries = sftp.get("retries", 5)
    if isinstance(retries, bool) or not isinstance(retries, int) or not 0 <= retries <= 100:
        raise fail("sftp.retries", f"{retries!r} must be a whole number 0-100")
    max_fetch = sftp.get("max_fetch_size", 64 << 20)
    if isinstance(max_fetch, bool) or not isinstance(max_fetch, int) or max_fetch <= 0:
        raise fail("sftp.max_fetch_size", f"{max_fetch!r} must be a positive whole number of bytes")
    for key in ("remote_inbound", "remote_outbound"):
        value = sftp.get(key, key.split("_")[1])
        if not isinstance(value, str) or not value or ".." in value.split("/"):
            raise fail(f"sftp.{key}", f"{value!r} must be a remote folder name without '..'")

    def choice(sec: dict, name: str, key: str, default: str, allowed: tuple[str, ...]) -> str:
        value = text(sec, name, key, default)
        if value not in allowed:
            raise fail(f"{name}.{key}", f"{value!r} must be one of {', '.join(allowed)}")
        return value

    log_config = LogConfig(format=choice(logs, "log", "format", "text", LOG_FORMATS),
                           level=choice(logs, "log", "level", "info", LOG_LEVELS))

    return Config(
        site=site,
        sender_id=sender_id,
        creditor_org_no=org_no,
        mode=mode,
        base_currency=currency,
        timezone=tz,
        send_time=time(int(m.group(1)), int(m.group(2))),
        database=database,
        rules_dir=path(paths, "paths", "rules", "rules"),
        templates_dir=path(paths, "paths", "templates", "templates"),
        inbox=path(paths, "paths", "inbox", "inbox"),
        outbox=path(paths, "paths", "outbox", "outbox"),
        log_file=path(paths, "paths", "log_file", "var/reskontro.log"),
        sftp=SftpConfig(
            host=text(sftp, "sftp", "host", "127.0.0.1"),
            port=port,
            user=text(sftp, "sftp", "user", "reskontro"),
            key_file=path(sftp, "sftp", "key_file", None),
            known_hosts=path(sftp, "sftp", "known_hosts", None),
            passphrase_env=sftp.get("passphrase_env"),
            passphrase_file=path(sftp, "sftp", "passphrase_file", None),
            remote_inbound=sftp.get("remote_inbound", "inbound"),
            remote_outbound=sftp.get("remote_outbound", "outbound"),
            timeout=timeout,
            retries=retries,
            max_fetch_size=max_fetch,
        ),
        notify=_notify(notify, site, fail, text, path),
        log=log_config,
        web=_web(web, fail),
    )


def _web(sec: dict, fail) -> WebConfig:
    import ipaddress
    host = sec.get("host", "127.0.0.1")
    if not isinstance(host, str) or not host:
        raise fail("web.host", "must be an address such as 127.0.0.1")
    port = sec.get("port", 8080)
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise fail("web.port", f"{port!r} must be a port number 1-65535")
    users = sec.get("users", {})
    if not isinstance(users, dict):
        raise fail("web.users", "must be a table of login = \"argon2 hash\" (make a hash with `reskontro web-password`)")
    for login, hashed in users.items():
        if not re.fullmatch(r"[A-Za-z0-9._@-]{1,64}", login):
            raise fail(f"web.users.{login}", "a login is 1-64 letters, digits or . _ @ -")
        # Only a hash is accepted, so the password itself is never in the file.
        if not isinstance(hashed, str) or not hashed.startswith("$argon2"):
            raise fail(f"web.users.{login}", "must be an argon2 hash, never the password itself: "
                       "make one with `reskontro web-password`")
    proxies = sec.get("trusted_proxies", [])
    if not isinstance(proxies, list):
        raise fail("web.trusted_proxies", "must be a list of IP addresses")
    for a in proxies:
        try:
            ipaddress.ip_address(a)
        except (ValueError, TypeError):
            raise fail("web.trusted_proxies", f"{a!r} is not an IP address") from None
    header = sec.get("proxy_header", "X-Forwarded-User")
    if not isinstance(header, str) or not re.fullmatch(r"[A-Za-z0-9-]{1,64}", header):
        raise fail("web.proxy_header", f"{header!r} must be an HTTP header name")
    return WebConfig(host=host, port=port, users=tuple(sorted(users.items())),
                     trusted_proxies=tuple(proxies), proxy_header=header)


_ADDRESS = re.compile(r"[^@\s<>,;]+@[^@\s<>,;]+")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _notify(sec: dict, site: Path, fail, text, path) -> NotifyConfig:
    def strings(key: str, what: str) -> tuple[str, ...]:
        value = sec.get(key, [])
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise fail(f"notify.{key}", f"must be a list of non-empty strings ({what})")
        return tuple(value)

    on = strings("on", "when to tell: " + ", ".join(NOTIFY_ON)) if "on" in sec else ("failure", "person")
    for v in on:
        if v not in NOTIFY_ON:
            raise fail("notify.on", f"{v!r} must be one of {', '.join(NOTIFY_ON)}")
    if "command" in sec and isinstance(sec["command"], str):
        raise fail("notify.command", "must be a list: the program and its arguments (no shell), "
                   'e.g. ["/usr/local/bin/page", "--team", "ledger"]')
    command = strings("command", "the program and its arguments")
    if "command" in sec and not command:
        raise fail("notify.command", "must name a program")
    if command and "/" in command[0] and not Path(command[0]).is_absolute():
        command = (str(site / command[0]), *command[1:])     # relative to the site, as every path here

    url = sec.get("webhook_url")
    if url is not None:
        parts = urlsplit(url) if isinstance(url, str) else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
            raise fail("notify.webhook_url", "must be an http:// or https:// URL with a host")

    host = sec.get("smtp_host")
    if host is not None and (not isinstance(host, str) or not host or any(c.isspace() for c in host)):
        raise fail("notify.smtp_host", "must be a host name or address")
    port = sec.get("smtp_port", 587)
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise fail("notify.smtp_port", f"{port!r} must be a port number 1-65535")
    security = text(sec, "notify", "smtp_security", "starttls")
    if security not in SMTP_SECURITY:
        raise fail("notify.smtp_security", f"{security!r} must be one of {', '.join(SMTP_SECURITY)}")
    user = sec.get("smtp_user")
    if user is not None and (not isinstance(user, str) or not user):
        raise fail("notify.smtp_user", "must be a non-empty string")
    env = sec.get("smtp_password_env")
    if env is not None and (not isinstance(env, str) or not _ENV_NAME.fullmatch(env)):
        raise fail("notify.smtp_password_env", "must be the name of an environment variable (never the password)")
    pw_file = path(sec, "notify", "smtp_password_file", None)
    ca_file = path(sec, "notify", "smtp_ca_file", None)
    if env and pw_file:
        raise fail("notify.smtp_password_env", "give smtp_password_env or smtp_password_file, not both")
    if user and not (env or pw_file):
        raise fail("notify.smtp_user", "needs smtp_password_env or smtp_password_file (the password is never "
                   "written in this file)")
    if (env or pw_file) and not user:
        raise fail("notify.smtp_user", "is required with a password")
    if user and security == "none":
        raise fail("notify.smtp_security", "'none' would send the password in the clear: use starttls or tls")
    mail_from = sec.get("mail_from")
    if mail_from is not None and (not isinstance(mail_from, str) or not _ADDRESS.fullmatch(mail_from)):
        raise fail("notify.mail_from", f"{mail_from!r} must be one mail address")
    mail_to = strings("mail_to", "mail addresses")
    for a in mail_to:
        if not _ADDRESS.fullmatch(a):
            raise fail("notify.mail_to", f"{a!r} must be a mail address")
    if host and not mail_to:
        raise fail("notify.mail_to", "is required with smtp_host (who gets the mail)")
    if host and not mail_from:
        raise fail("notify.mail_from", "is required with smtp_host (the sender's address)")
    if not host:
        for key in ("mail_to", "mail_from", "smtp_user", "smtp_password_env", "smtp_password_file",
                    "smtp_ca_file", "smtp_port", "smtp_security"):
            if key in sec:
                raise fail(f"notify.{key}", "has no effect without notify.smtp_host")
    timeout = sec.get("timeout", 30)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout <= 600:
        raise fail("notify.timeout", f"{timeout!r} must be a number of seconds, above 0 and at most 600")
    return NotifyConfig(on=on, command=command, webhook_url=url, smtp_host=host, smtp_port=port,
                        smtp_security=security, smtp_user=user, smtp_password_env=env,
                        smtp_password_file=pw_file, smtp_ca_file=ca_file, mail_from=mail_from,
                        mail_to=mail_to, timeout=timeout)
