"""A site: the folder a creditor runs from (config, rules, templates, inbox, outbox, store).

`reskontro init` builds one from the package's own data, so a non-editable install works.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from sqlalchemy import Engine

from reskontro.config import CONFIG_NAME, Config, load_config, parse_config
from reskontro.rules.engine import RuleEngine
from reskontro.files.folders import replace_file
from reskontro.files.private import private_dir, write_private
from reskontro.rules.rulefile import load_rule_file
from reskontro.ledger.store import open_engine

DEFAULT_CONFIG = """\
# reskontro site configuration. Relative paths are relative to this file's folder.

[creditor]
sender_id = "{sender_id}"        # your client number at Lowell (1-35 letters/digits)
org_no = "{org_no}"       # your organisation number (9 digits, MOD11)
mode = "full_ledger"        # full_ledger: every invoice goes; factoring: invoices followed up in-house stay
base_currency = "NOK"

[schedule]
timezone = "Europe/Oslo"
send_time = "18:00"

[paths]
database = "sqlite:///reskontro.db"   # or postgresql+psycopg://user@host/dbname
rules = "rules"
templates = "templates"
inbox = "inbox"
outbox = "outbox"
log_file = "var/reskontro.log"

[sftp]
host = "127.0.0.1"
port = 22
user = "reskontro"
key_file = "keys/id_ed25519"          # private key; its passphrase comes from passphrase_env or passphrase_file
known_hosts = "keys/known_hosts"      # the server's pinned host key (never learnt automatically)
# passphrase_env = "RESKONTRO_SFTP_PASSPHRASE"
remote_inbound = "inbound"
remote_outbound = "outbound"
timeout = 30
retries = 5
# max_fetch_size = 67108864           # bytes (64 MiB); a bigger remote file stays on the server

# [log]
# format = "text"                     # text: one line per event | json: one JSON object per line
# level = "info"                      # info (and the tracebacks of errors, as DEBUG lines) | debug

# Who is told when a cycle fails or needs a person (any of a command, mail, a webhook):
# [notify]
# on = ["failure", "person"]          # and "ok" for every cycle
# command = ["/usr/local/bin/page-oncall", "--team", "ledger"]   # no shell; the run's summary as JSON on stdin
# webhook_url = "https://hooks.example.no/reskontro"             # POST of the summary as JSON
# smtp_host = "smtp.example.no"
# smtp_port = 587
# smtp_security = "starttls"          # starttls | tls (port 465) | none (no login then)
# smtp_user = "reskontro@example.no"
# smtp_password_env = "RESKONTRO_SMTP_PASSWORD"   # or smtp_password_file = "keys/smtp_password" (chmod 600)
# mail_from = "reskontro@example.no"
# mail_to = ["regnskap@example.no"]
# timeout = 30

# The support page (`reskontro web`). Without users or trusted_proxies it serves 127.0.0.1 only.
# [web]
# host = "127.0.0.1"
# port = 8080
# trusted_proxies = ["10.0.0.5"]      # a reverse proxy that logs people in and names them in proxy_header
# proxy_header = "X-Forwarded-User"
# [web.users]                         # HTTP Basic; `reskontro web-password LOGIN` makes a line (a hash, never the password)
# support = "$argon2id$v=19$m=65536,t=3,p=4$..."
"""


def package_data(name: str) -> Path:
    """The folder of default rules ('rules') or templates ('templates') shipped in the package."""
    here = Path(__file__).resolve().parent
    # Installed: reskontro/site_rules (setup.cfg package_dir); from a checkout: the repo's own.
    for folder in (here / f"site_{name}", here.parent / name):
        if folder.is_dir() and any(folder.iterdir()):
            return folder
    raise FileNotFoundError(f"the package's default {name} are missing (looked in {here / f'site_{name}'})")


def init_site(target: Path, *, sender_id: str = "123456", org_no: str = "923609016",
              force: bool = False) -> list[Path]:
    """Create a working site. A file init would write that exists already (the config, a rule
    file, a template) or an existing store refuses it unless forced; forced, the config, rules
    and templates are written anew and an existing store is kept as it is. The config, the
    store, var/ and keys/ are private (0600 / 0700) whatever the umask."""
    # Check first: a refused init leaves nothing behind.
    parse_config({"creditor": {"sender_id": sender_id, "org_no": org_no}}, target, "--sender-id/--org-no")
    cfg = target / CONFIG_NAME
    store = target / "reskontro.db"
    copies = [(f, target / name / f.name) for name in ("rules", "templates")
              for f in sorted(package_data(name).iterdir()) if f.suffix in (".yaml", ".j2", ".xsd")]
    if not force:
        there = [p for p in [cfg, store, *(dst for _, dst in copies)] if p.exists() or p.is_symlink()]
        if there:
            names = ", ".join(str(p.relative_to(target)) for p in there[:5])
            more = f" and {len(there) - 5} more" if len(there) > 5 else ""
            raise FileExistsError(f"{target} already holds {names}{more}: init changed nothing. Use --force to "
                                  "write the default config, rules and templates over them (an existing store "
                                  "is kept as it is)")
    target.mkdir(parents=True, exist_ok=True)
    made = []
    for src, dst in copies:
        dst.parent.mkdir(exist_ok=True)
        # a new file renamed into place: a link at the name is replaced, never followed
        replace_file(dst, src.read_bytes())
        made.append(dst)
    for name in ("inbox", "outbox"):
        (target / name).mkdir(exist_ok=True)
    for name in ("var", "keys"):
        private_dir(target / name)
    write_private(cfg, DEFAULT_CONFIG.format(sender_id=sender_id, org_no=org_no))
    made.append(cfg)
    site = Site(load_config(target))
    site.db.dispose()  # creates the empty store (private), or adds what a kept one lacks
    made.append(store)
    return made


@dataclass
class Site:
    config: Config
    _engine: RuleEngine | None = field(default=None, repr=False)

    @classmethod
    def open(cls, path: Path) -> "Site":
        return cls(load_config(path))

    @cached_property
    def db(self) -> Engine:
        return open_engine(self.config.database)

    @property
    def rules(self) -> RuleEngine:
        if self._engine is None:
            self._engine = RuleEngine(load_rule_file(self.config.rule_file))
        return self._engine
