"""Telling a person (`[notify]`): after a cycle that failed or needs a person, its summary goes
to a command (argv, no shell, the summary as JSON on stdin), by mail (smtplib; STARTTLS, or
TLS, with the password from an environment variable or a private file) and/or to a webhook
(an HTTP POST of the summary as JSON).

Telling never fails the run: every way is tried, each within `notify.timeout` seconds, and
what failed is logged (a warning naming the way and why). Secrets are never logged: not the
password, and of a webhook only its scheme and host (its path often is the secret).
"""
from __future__ import annotations

import json
import logging
import os
import smtplib
import ssl
import stat
import subprocess
import urllib.error
import urllib.request
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path
from urllib.parse import urlsplit

from reskontro.config import NotifyConfig
from reskontro.errors import one_line

log = logging.getLogger("reskontro.notify")

HEADLINES = {"failed": "the nightly run failed", "needs_person": "a person is needed",
             "ok": "all went well"}
_WHEN = {"failed": "failure", "needs_person": "person", "ok": "ok"}


class NotifyError(RuntimeError):
    """One way of telling did not work; the message says why (never a secret)."""


def wanted(cfg: NotifyConfig, result: str) -> bool:
    return cfg.configured and _WHEN.get(result) in cfg.on


def notify(cfg: NotifyConfig, summary: dict) -> list[str]:
    """Tell whoever `cfg` names, if `summary["result"]` is one it asks for. Never raises; the
    ways that worked, each as `command`, `mail`, `webhook` (the others are logged)."""
    if not wanted(cfg, summary.get("result", "")):
        return []
    done = []
    for name, how in (("command", _command), ("mail", _mail), ("webhook", _webhook)):
        if not _configured(cfg, name):
            continue
        try:
            where = how(cfg, summary)
        except Exception as exc:   # noqa: BLE001 - a failing notifier never fails the run
            log.warning("notify by %s failed: %s", name, one_line(str(exc) or type(exc).__name__))
            if not isinstance(exc, NotifyError):       # unexpected: its traceback, at debug level
                log.debug("notify by %s failed", name, exc_info=exc)
            continue
        log.info("notified by %s: %s (run %s, %s)", name, where, summary.get("run"), summary.get("result"))
        done.append(name)
    return done


def _configured(cfg: NotifyConfig, name: str) -> bool:
    return bool({"command": cfg.command, "mail": cfg.smtp_host, "webhook": cfg.webhook_url}[name])


def _body(summary: dict) -> bytes:
    return json.dumps(summary, ensure_ascii=False, indent=2).encode("utf-8")


# --- a command -----------------------------------------------------------------------------------
def _command(cfg: NotifyConfig, summary: dict) -> str:
    argv = list(cfg.command)
    try:
        proc = subprocess.run(argv, input=_body(summary), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              timeout=cfg.timeout, close_fds=True, check=False)
    except subprocess.TimeoutExpired:
        raise NotifyError(f"{argv[0]} did not finish within {cfg.timeout:g} s (stopped)") from None
    except OSError as exc:
        raise NotifyError(f"cannot run {argv[0]}: {exc.strerror or exc}") from None
    if proc.returncode != 0:
        said = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        raise NotifyError(f"{argv[0]} exited with status {proc.returncode}"
                          + (f": {one_line(said[-1], 200)}" if said else ""))
    return argv[0]


# --- mail ------------------------------------------------------------------------------------
def _password(cfg: NotifyConfig) -> str | None:
    if cfg.smtp_password_env:
        value = os.environ.get(cfg.smtp_password_env)
        if not value:
            raise NotifyError(f"environment variable {cfg.smtp_password_env} (the mail password) is not set or empty")
        return value
    if cfg.smtp_password_file:
        path = Path(cfg.smtp_password_file)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as exc:
            raise NotifyError(f"cannot read the mail password file {path}: {exc.strerror or exc}") from None
        with os.fdopen(fd, "rb") as f:
            mode = stat.S_IMODE(os.fstat(f.fileno()).st_mode)
            if mode & 0o077:
                raise NotifyError(f"permissions {mode:04o} for {path} are too open: the mail password file "
                                  "must be readable by its owner only (chmod 600)")
            value = f.read().decode("utf-8", "replace").rstrip("\r\n")
        if not value:
            raise NotifyError(f"the mail password file {path} is empty")
        return value
    return None


def mail_text(summary: dict) -> str:
    """The mail's body: the summary for a person to read."""
    lines = [f"reskontro at {summary.get('site')} (client number {summary.get('sender_id')}): "
             f"{HEADLINES.get(summary.get('result'), summary.get('result'))}.", "",
             f"Run {summary.get('run')} ({summary.get('kind')}), {summary.get('started_at')} to "
             f"{summary.get('finished_at')}.", ""]
    if summary.get("needs_person"):
        lines.append("What needs a person:")
        lines += [f"  - {t}" for t in summary["needs_person"]]
        lines.append("")
    lines.append("Steps:")
    for st in summary.get("steps", []):
        lines.append(f"  {st['name']}: {'ok' if st['ok'] else 'FAILED'}: {st['summary']}")
    lines += ["", f"The log: {summary.get('log_file')}", ""]
    return "\n".join(lines)


def _mail(cfg: NotifyConfig, summary: dict) -> str:
    msg = EmailMessage()
    msg["Subject"] = (f"reskontro {summary.get('sender_id')}: "
                      f"{HEADLINES.get(summary.get('result'), summary.get('result'))}")
    msg["From"] = cfg.mail_from
    msg["To"] = ", ".join(cfg.mail_to)
    msg["Date"] = formatdate(localtime=True)
    msg["Message-ID"] = make_msgid(domain=cfg.mail_from.rpartition("@")[2])
    msg.set_content(mail_text(summary))
    msg.add_attachment(_body(summary), maintype="application", subtype="json", filename="summary.json")
    password = _password(cfg)
    context = ssl.create_default_context(cafile=str(cfg.smtp_ca_file) if cfg.smtp_ca_file else None)
    where = f"{cfg.smtp_host}:{cfg.smtp_port}"
    try:
        if cfg.smtp_security == "tls":
            client = smtplib.SMTP_SSL(cfg.smtp_host, cfg.smtp_port, timeout=cfg.timeout, context=context)
        else:
            client = smtplib.SMTP(cfg.smtp_host, cfg.smtp_port, timeout=cfg.timeout)
        with client:
            client.ehlo()
            if cfg.smtp_security == "starttls":
                if not client.has_extn("starttls"):
                    raise NotifyError(f"{where} does not offer STARTTLS (smtp_security = \"starttls\")")
                client.starttls(context=context)
                client.ehlo()
            if cfg.smtp_user:
                client.login(cfg.smtp_user, password)
            client.send_message(msg)
    except smtplib.SMTPAuthenticationError as exc:
        raise NotifyError(f"{where} refused the login of {cfg.smtp_user} ({exc.smtp_code})") from None
    except smtplib.SMTPException as exc:
        raise NotifyError(f"{where}: {one_line(str(exc), 300)}") from None
    except ssl.SSLError as exc:
        raise NotifyError(f"{where}: TLS: {one_line(exc.reason or str(exc), 200)}") from None
    except OSError as exc:
        raise NotifyError(f"{where}: {exc.strerror or exc}") from None
    return f"{len(cfg.mail_to)} recipient{'s' if len(cfg.mail_to) != 1 else ''} via {where}"


# --- a webhook -------------------------------------------------------------------------------
def safe_url(url: str) -> str:
    """The part of a URL that may be logged: scheme and host (the path may hold a token)."""
    u = urlsplit(url)
    port = f":{u.port}" if u.port else ""
    return f"{u.scheme}://{u.hostname}{port}/…"


def _webhook(cfg: NotifyConfig, summary: dict) -> str:
    shown = safe_url(cfg.webhook_url)
    req = urllib.request.Request(cfg.webhook_url, data=_body(summary), method="POST",
                                 headers={"Content-Type": "application/json; charset=utf-8",
                                          "User-Agent": "reskontro"})
    try:
        with urllib.request.urlopen(req, timeout=cfg.timeout) as resp:   # noqa: S310 (http/https only, checked)
            code = resp.status
    except urllib.error.HTTPError as exc:
        exc.close()
        raise NotifyError(f"{shown} answered HTTP {exc.code}") from None
    except urllib.error.URLError as exc:
        reason = exc.reason.strerror if isinstance(exc.reason, OSError) and exc.reason.strerror else exc.reason
        raise NotifyError(f"{shown}: {reason}") from None
    except (OSError, ValueError) as exc:     # a timeout while reading, a malformed answer
        raise NotifyError(f"{shown}: {one_line(str(exc) or type(exc).__name__, 200)}") from None
    if not 200 <= code < 300:
        raise NotifyError(f"{shown} answered HTTP {code}")
    return f"{shown} (HTTP {code})"
