"""Telling a person (`[notify]`, issue 12 point 4): a command, mail and a webhook, fired on
failure and on "a person is needed" with the run's summary; validated like the rest of
reskontro.toml; a failing notifier is logged and never fails the run.

Against real servers on 127.0.0.1: aiosmtpd (STARTTLS with a certificate made here, AUTH
required after it) and http.server in a thread.
"""
from __future__ import annotations

import datetime as dt
import ipaddress
import json
import logging
import shutil
import socket
import ssl
import sys
import threading
from collections.abc import Iterator
from email import message_from_bytes, policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from reskontro.config import ConfigError, NotifyConfig, parse_config
from reskontro.exchange.notify import notify
from test_export import cli, customer, flat, import_records, invoice, make_site

PASSWORD = "s3cret-Pass-word"
USER = "reskontro@example.no"


@pytest.fixture(autouse=True)
def _clean_logging() -> Iterator[None]:
    logger = logging.getLogger("reskontro")
    before, level = list(logger.handlers), logger.level
    yield
    for h in logger.handlers[:]:
        if h not in before:
            logger.removeHandler(h)
            h.close()
    logger.setLevel(level)


# --- the servers ----------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (its own CA: the client trusts it by smtp_ca_file)."""
    folder = tmp_path_factory.mktemp("tls")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


class Inbox:
    def __init__(self):
        self.messages: list[tuple[str, list[str], bytes]] = []
        self.logins: list[str] = []

    async def handle_DATA(self, server, session, envelope):
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        return "250 OK"


@pytest.fixture
def smtp(certificate: tuple[Path, Path]) -> Iterator[tuple[int, Inbox]]:
    """aiosmtpd on 127.0.0.1: STARTTLS required, then AUTH (USER / PASSWORD)."""
    cert_file, key_file = certificate
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert_file, key_file)
    inbox = Inbox()

    def authenticator(server, session, envelope, mechanism, auth_data):
        ok = isinstance(auth_data, LoginPassword) and auth_data.login.decode() == USER \
            and auth_data.password.decode() == PASSWORD
        if ok:
            inbox.logins.append(auth_data.login.decode())
        return AuthResult(success=ok, handled=False)    # aiosmtpd answers 235 / 535

    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port, tls_context=ctx, require_starttls=True,
                            authenticator=authenticator, auth_required=True, auth_require_tls=True)
    controller.start()
    try:
        yield port, inbox
    finally:
        controller.stop()


class Hook:
    def __init__(self):
        self.bodies: list[dict] = []
        self.paths: list[str] = []
        self.status = 200


@pytest.fixture
def webhook() -> Iterator[tuple[str, Hook]]:
    hook = Hook()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):   # noqa: N802 (http.server's name)
            n = int(self.headers["Content-Length"])
            hook.paths.append(self.path)
            assert self.headers["Content-Type"].startswith("application/json")
            hook.bodies.append(json.loads(self.rfile.read(n)))
            self.send_response(hook.status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):   # quiet
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hooks/T0KEN-in-the-path", hook
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


# --- a site that needs a person -------------------------------------------------------------

def site_with(tmp_path: Path, notify_toml: str) -> Path:
    site = make_site(tmp_path)
    cfg = site / "reskontro.toml"
    cfg.write_text(cfg.read_text(encoding="utf-8") + "\n[notify]\ntimeout = 10\n" + notify_toml, encoding="utf-8")
    import_records(site, [customer("C1"), invoice("I1", "C1", "100.00")])
    return site


def needs_a_person(site: Path) -> str:
    (site / "inbox" / "Document.xml").write_bytes(b"<Document/>")      # no known format
    return flat(cli(site, "run", "--no-sftp", code=3).output)


def log_of(site: Path) -> str:
    return (site / "var" / "reskontro.log").read_text(encoding="utf-8")


def test_mail_over_starttls_with_login(tmp_path: Path, smtp, certificate, monkeypatch) -> None:
    port, inbox = smtp
    monkeypatch.setenv("RESKONTRO_SMTP_PASSWORD", PASSWORD)
    site = site_with(tmp_path, f'smtp_host = "127.0.0.1"\nsmtp_port = {port}\nsmtp_user = "{USER}"\n'
                               'smtp_password_env = "RESKONTRO_SMTP_PASSWORD"\n'
                               f'smtp_ca_file = "{certificate[0]}"\n'
                               'mail_from = "reskontro@example.no"\nmail_to = ["ops@example.no", "cfo@example.no"]\n')
    needs_a_person(site)
    (mail_from, rcpts, content), = inbox.messages
    assert inbox.logins == [USER]
    assert mail_from == "reskontro@example.no" and rcpts == ["ops@example.no", "cfo@example.no"]
    msg = message_from_bytes(content, policy=policy.default)
    assert msg["Subject"] == "reskontro 123456: a person is needed"
    body = msg.get_body(("plain",)).get_content()
    assert "What needs a person:" in body and "Document.xml: not a known payment file format" in body
    (attachment,) = list(msg.iter_attachments())
    summary = json.loads(attachment.get_content())
    assert summary["result"] == "needs_person" and summary["run"] == 1
    log = log_of(site)
    assert "notified by mail: 2 recipients via 127.0.0.1" in log and PASSWORD not in log


def test_mail_password_from_a_private_file_and_a_wrong_one_is_logged(tmp_path: Path, smtp, certificate) -> None:
    port, inbox = smtp
    pw = tmp_path / "smtp-password"
    pw.write_text("not-the-password\n", encoding="utf-8")
    pw.chmod(0o600)
    site = site_with(tmp_path, f'smtp_host = "127.0.0.1"\nsmtp_port = {port}\nsmtp_user = "{USER}"\n'
                               f'smtp_password_file = "{pw}"\nsmtp_ca_file = "{certificate[0]}"\n'
                               'mail_from = "r@example.no"\nmail_to = ["ops@example.no"]\n')
    needs_a_person(site)                                 # exit 3 all the same: telling never fails a run
    assert inbox.messages == []
    assert "notify by mail failed: 127.0.0.1:%d refused the login of %s" % (port, USER) in log_of(site)
    pw.write_text(PASSWORD + "\n", encoding="utf-8")
    pw.chmod(0o644)                                      # others may read it: refused, never sent
    (site / "inbox" / "again.txt").write_text("junk\n", encoding="utf-8")
    cli(site, "run", "--no-sftp", code=3)
    assert inbox.messages == [] and "permissions 0644" in log_of(site) and "too open" in log_of(site)
    pw.chmod(0o600)
    (site / "inbox" / "third.txt").write_text("junk\n", encoding="utf-8")
    cli(site, "run", "--no-sftp", code=3)
    assert len(inbox.messages) == 1
    assert PASSWORD not in log_of(site)


def test_mail_without_a_trusted_certificate_is_not_sent(tmp_path: Path, smtp, monkeypatch) -> None:
    port, inbox = smtp
    monkeypatch.setenv("P", PASSWORD)
    site = site_with(tmp_path, f'smtp_host = "127.0.0.1"\nsmtp_port = {port}\nsmtp_user = "{USER}"\n'
                               'smtp_password_env = "P"\nmail_from = "r@example.no"\nmail_to = ["o@example.no"]\n')
    needs_a_person(site)
    assert inbox.messages == [] and inbox.logins == []                  # no password left the machine
    assert "notify by mail failed: 127.0.0.1:%d: TLS: CERTIFICATE_VERIFY_FAILED" % port in log_of(site)


def test_webhook_posts_the_summary_and_never_logs_its_path(tmp_path: Path, webhook) -> None:
    url, hook = webhook
    site = site_with(tmp_path, f'webhook_url = "{url}"\n')
    needs_a_person(site)
    (body,) = hook.bodies
    assert hook.paths == ["/hooks/T0KEN-in-the-path"]
    assert body["result"] == "needs_person" and body["sender_id"] == "123456" and body["kind"] == "run"
    assert [s["name"] for s in body["steps"]] == ["inbox", "post", "outbox", "export"]
    (text,) = body["needs_person"]
    assert "Document.xml" in text
    log = log_of(site)
    assert "notified by webhook: http://127.0.0.1:" in log and "T0KEN" not in log

    hook.status = 500                                        # the hook fails: logged, run unchanged
    (site / "inbox" / "second.xml").write_bytes(b"<html/>")
    cli(site, "run", "--no-sftp", code=3)
    assert len(hook.bodies) == 2
    assert "WARNING reskontro.notify: notify by webhook failed: http://127.0.0.1:" in log_of(site)
    assert "answered HTTP 500" in log_of(site) and "T0KEN" not in log_of(site)


def test_command_gets_the_summary_on_stdin_and_no_shell(tmp_path: Path) -> None:
    out = tmp_path / "told.json"
    script = "import sys, pathlib; pathlib.Path(sys.argv[1]).write_bytes(sys.stdin.buffer.read())"
    site = site_with(tmp_path, f"command = {json.dumps([sys.executable, '-c', script, str(out) + ' ; touch x'])}\n")
    needs_a_person(site)
    told = json.loads(Path(str(out) + " ; touch x").read_text(encoding="utf-8"))   # one argument, no shell
    assert told["result"] == "needs_person" and "Document.xml" in told["needs_person"][0]
    assert not (site / "x").exists()


def test_a_failing_command_is_logged_and_the_run_goes_on(tmp_path: Path, webhook) -> None:
    url, hook = webhook
    site = site_with(tmp_path, f'command = ["{sys.executable}", "-c", "import sys; print(\'busy\', file=sys.stderr); '
                               f'sys.exit(4)"]\nwebhook_url = "{url}"\n')
    needs_a_person(site)
    log = log_of(site)
    assert "notify by command failed:" in log and "exited with status 4: busy" in log
    assert len(hook.bodies) == 1                              # the other ways still tell


def test_a_missing_command_is_logged(tmp_path: Path) -> None:
    site = site_with(tmp_path, 'command = ["/nonexistent/pager"]\n')
    needs_a_person(site)
    assert "notify by command failed: cannot run /nonexistent/pager: No such file or directory" in log_of(site)


def test_told_on_failure_and_person_not_on_ok_unless_asked(tmp_path: Path, webhook) -> None:
    url, hook = webhook
    site = site_with(tmp_path, f'webhook_url = "{url}"\n')
    cli(site, "run", "--no-sftp")                             # all well: nobody is woken
    assert hook.bodies == []
    inbox = site / "inbox"
    shutil.rmtree(inbox)
    inbox.write_text("not a folder\n", encoding="utf-8")      # a step fails
    cli(site, "run", "--no-sftp", code=1)
    (body,) = hook.bodies
    assert body["result"] == "failed" and body["steps"][0] == {
        "name": "inbox", "ok": False, "summary": body["steps"][0]["summary"], "attention": []}

    cfg = NotifyConfig(on=("ok",), webhook_url=url)
    assert notify(cfg, {"result": "ok", "run": 9}) == ["webhook"] and hook.bodies[-1]["run"] == 9
    assert notify(cfg, {"result": "failed"}) == []


def test_notify_never_raises(tmp_path: Path) -> None:
    cfg = NotifyConfig(webhook_url=f"http://127.0.0.1:{free_port()}/x", command=("/nonexistent",),
                       smtp_host="127.0.0.1", smtp_port=free_port(), smtp_security="none",
                       mail_from="a@b.no", mail_to=("c@d.no",), timeout=2)
    assert notify(cfg, {"result": "failed", "steps": []}) == []


GOOD = {"creditor": {"sender_id": "A1", "org_no": "923609016"}}


@pytest.mark.parametrize("values, key", [
    ({"bogus": 1}, "notify.bogus"),
    ({"command": "page --team x"}, "notify.command"),          # a string would need a shell
    ({"command": []}, "notify.command"),
    ({"command": ["ok", 3]}, "notify.command"),
    ({"webhook_url": "file:///etc/passwd"}, "notify.webhook_url"),
    ({"webhook_url": "https://"}, "notify.webhook_url"),
    ({"smtp_host": "mail.example.no"}, "notify.mail_to"),
    ({"smtp_host": "mail.example.no", "mail_to": ["a@b.no"]}, "notify.mail_from"),
    ({"smtp_host": "m", "mail_to": ["not an address"], "mail_from": "a@b.no"}, "notify.mail_to"),
    ({"smtp_host": "m", "mail_to": ["a@b.no"], "mail_from": "a@b.no", "smtp_user": "u"}, "notify.smtp_user"),
    ({"smtp_host": "m", "mail_to": ["a@b.no"], "mail_from": "a@b.no", "smtp_user": "u",
      "smtp_password_env": "P", "smtp_security": "none"}, "notify.smtp_security"),
    ({"smtp_host": "m", "mail_to": ["a@b.no"], "mail_from": "a@b.no", "smtp_user": "u",
      "smtp_password_env": "my password"}, "notify.smtp_password_env"),
    ({"smtp_host": "m", "mail_to": ["a@b.no"], "mail_from": "a@b.no", "smtp_security": "ssl"}, "notify.smtp_security"),
    ({"smtp_host": "m", "mail_to": ["a@b.no"], "mail_from": "a@b.no", "smtp_port": 0}, "notify.smtp_port"),
    ({"mail_to": ["a@b.no"]}, "notify.mail_to"),                # without smtp_host: no effect, refused
    ({"on": ["sometimes"]}, "notify.on"),
    ({"timeout": 0}, "notify.timeout"),
    ({"timeout": True}, "notify.timeout"),
])
def test_notify_settings_are_checked(tmp_path: Path, values: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        parse_config({**GOOD, "notify": values}, tmp_path)


def test_notify_settings_taken(tmp_path: Path) -> None:
    cfg = parse_config({**GOOD, "notify": {
        "on": ["failure"], "command": ["bin/page", "--team", "ledger"], "webhook_url": "https://hooks.example.no/x",
        "smtp_host": "smtp.example.no", "smtp_port": 465, "smtp_security": "tls", "smtp_user": "u",
        "smtp_password_file": "keys/smtp", "mail_from": "r@example.no", "mail_to": "ops@example.no",
        "timeout": 5}}, tmp_path).notify
    assert cfg.on == ("failure",) and cfg.command == (str(tmp_path / "bin/page"), "--team", "ledger")
    assert cfg.smtp_password_file == tmp_path / "keys" / "smtp" and cfg.mail_to == ("ops@example.no",)
    assert cfg.configured and not parse_config(GOOD, tmp_path).notify.configured
