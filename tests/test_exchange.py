"""The exchange end to end: `reskontro send`, `fetch`, `run` and `serve` against a real OpenSSH
sshd on 127.0.0.1 (fixture `sshd`, tests/sshd_server.py).

Every test builds a site in tmp_path (reskontro.site.init_site) whose reskontro.toml [sftp]
section points at the fixture's port, client key and pinned known_hosts, so the CLI reads its
settings the way it does in production. The remote folders are plain directories
(sshd.inbound / sshd.outbound): every remote effect is checked on disk, independently of the
adapter.
"""
from __future__ import annotations

import base64
import gc
import hashlib
import io
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from datetime import date, datetime, time as dtime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import paramiko.sftp_client
import pytest
from stdnum import luhn

from reskontro.transfer import journal
from reskontro.adapters import sftp as sftp_module
from reskontro.adapters.cremul import render_cremul
from reskontro.config import load_config
from reskontro.exchange.cycle import Step, serve
from reskontro.domain import Address, BankPayment, Customer, Entry
from reskontro.exchange.remote import next_run
from reskontro.testing.loopback_sshd import LoopbackSshd, generate_key
from reskontro.files.lock import run_lock
from reskontro.transfer.receipts import Receipt, render_receipt
from reskontro.testing.receiver_model import ReceiverModel
from reskontro.site import Site, init_site
from reskontro.transfer.render import FileHeader, make_environment, render_transfer
from clirun import cli, flat, wait_for  # noqa: E402  (tests/ is on sys.path)

pytestmark = pytest.mark.sshd

OSLO = ZoneInfo("Europe/Oslo")
SENDER, ORG = "123456", "923609016"



# --- helpers ------------------------------------------------------------------------------

def kid10(body: str) -> str:
    return body + luhn.calc_check_digit(body)


LEDGER = [
    {"record": "customer", "id": "C1", "name": "Kari Nordmann", "type": "private",
     "address1": "Storgata 1", "post_code": "0150", "city": "OSLO", "country": "NO"},
    {"record": "entry", "id": "I1", "customer_id": "C1", "type": "invoice", "document_no": "F1",
     "document_date": "2026-11-01", "due_date": "2026-11-15", "amount": "1000.00",
     "currency": "NOK", "kid": kid10("000000001"), "status": "invoiced"},
    {"record": "entry", "id": "I2", "customer_id": "C1", "type": "invoice", "document_no": "F2",
     "document_date": "2026-11-02", "due_date": "2026-11-16", "amount": "250.50",
     "currency": "NOK", "kid": kid10("000000002"), "status": "invoiced"},
]


def make_site(tmp_path: Path, sshd: LoopbackSshd | None = None, *,
              log_file: str = "var/reskontro.log", ledger: list[dict] | None = LEDGER) -> Path:
    """A site in tmp_path; [sftp] points at the fixture's server (CLI-level configuration)."""
    site = tmp_path / "site"
    init_site(site)
    cfg = site / "reskontro.toml"
    text = cfg.read_text(encoding="utf-8")
    assert 'log_file = "var/reskontro.log"' in text and "[sftp]" in text
    text = text.replace('log_file = "var/reskontro.log"', f'log_file = "{log_file}"')
    if sshd is not None:
        text = text.split("[sftp]")[0] + (
            "[sftp]\n"
            f'host = "{sshd.host}"\n'
            f"port = {sshd.port}\n"
            f'user = "{sshd.user}"\n'
            f'key_file = "{sshd.client_key}"\n'
            f'known_hosts = "{sshd.known_hosts}"\n'
            'remote_inbound = "inbound"\n'
            'remote_outbound = "outbound"\n'
            "timeout = 5\n"
            "retries = 0\n")
    cfg.write_text(text, encoding="utf-8")
    if ledger:
        path = tmp_path / "ledger.jsonl"
        path.write_text("\n".join(json.dumps(r) for r in ledger) + "\n", encoding="utf-8")
        assert cli(site, "import", str(path)).exit_code == 0
    return site


def remote_files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def outbox_xml(site: Path) -> list[Path]:
    return sorted(p for p in (site / "outbox").iterdir() if p.is_file() and p.name.endswith(".xml"))


def export(site: Path) -> Path:
    """`reskontro export`: tonight's file in the outbox; returns its path."""
    before = set(outbox_xml(site))
    r = cli(site, "export")
    assert r.exit_code in (0, 3), r.output         # done (3: entries held tonight)
    new = set(outbox_xml(site)) - before
    assert len(new) == 1, r.output
    return new.pop()


def states(site: Path) -> dict[str, str]:
    r = cli(site, "status", "--json")
    assert r.exit_code == 0, r.output
    return {f["file_id"]: f["state"] for f in json.loads(r.stdout)["files"]}


def manual_file(site: Path, seq: int, *, day: date | None = None, customer: str = "C90",
                invoice: str = "I90", customer_ref: str | None = None) -> tuple[str, bytes]:
    """A Ledger Transfer file as support would drop it: rendered with reskontro.transfer.render."""
    cut = datetime.combine(day, dtime(12, 0), OSLO) if day else datetime.now(OSLO).replace(microsecond=0)
    header = FileHeader(SENDER, ORG, seq, "backlog", cut, cut)
    cust = Customer(customer, "Ola Nordmann", "private", Address(("Kirkeveien 2",), "5003", "BERGEN", "NO"))
    inv = Entry(invoice, customer_ref or customer, "invoice", f"F-{invoice}", date(2026, 10, 1),
                Decimal("499.00"), due_date=date(2026, 10, 15), kid=kid10("00009" + f"{seq:04d}"),
                status="invoiced")
    out = io.BytesIO()
    render_transfer(out, header, [cust], [inv], [], make_environment(site / "templates"))
    return header.file_id, out.getvalue()


def host_fingerprint(sshd: LoopbackSshd) -> str:
    blob = base64.b64decode(sshd.host_public_key())
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


@pytest.fixture(autouse=True)
def _wide_console_and_clean_logging(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """rich wraps at 80 columns without a terminal; `run`/`serve` add a log file handler to the
    'reskontro' logger of this process: remove it again so tests do not write each other's logs."""
    monkeypatch.setenv("COLUMNS", "400")
    logger = logging.getLogger("reskontro")
    before, level = list(logger.handlers), logger.level
    yield
    for h in logger.handlers[:]:
        if h not in before:
            logger.removeHandler(h)
            h.close()
    logger.setLevel(level)


# --- send ---------------------------------------------------------------------------------

def test_send_uploads_every_complete_outbox_file(tmp_path: Path, sshd: LoopbackSshd) -> None:
    site = make_site(tmp_path, sshd)
    first = export(site)
    second = export(site)             # nothing new: a file with zero entries, next sequence
    assert first.name.endswith("_000001.xml") and second.name.endswith("_000002.xml")
    local = {p.name: p.read_bytes() for p in (first, second)}
    assert b'<Entry id="I1"' in local[first.name] and b"<Entry " not in local[second.name]
    assert set(states(site).values()) == {"written"}

    r = cli(site, "send")
    assert r.exit_code == 0, r.output
    assert f"sent {first.name}" in r.stdout and f"sent {second.name}" in r.stdout
    assert remote_files(sshd.inbound) == local                       # exact bytes, nothing else
    assert not list(sshd.inbound.glob("*.part"))
    assert outbox_xml(site) == []
    assert {p.name: p.read_bytes() for p in (site / "outbox" / "sent").iterdir()} == local
    assert states(site) == {first.stem: "uploaded", second.stem: "uploaded"}

    again = cli(site, "send")
    assert again.exit_code == 0 and "Nothing to send." in again.stdout
    assert remote_files(sshd.inbound) == local


def test_send_leaves_part_hidden_and_unfinished_files_alone(tmp_path: Path, sshd: LoopbackSshd) -> None:
    site = make_site(tmp_path, sshd)
    outbox = site / "outbox"
    fid_part, data_part = manual_file(site, 40, invoice="I40")
    fid_hidden, data_hidden = manual_file(site, 41, invoice="I41")
    fid_busy, data_busy = manual_file(site, 42, invoice="I42")
    waiting = {
        f"{fid_part}.xml.part": data_part,                  # an upload or export in progress
        f".{fid_hidden}.xml": data_hidden,                  # hidden
        f"{fid_busy}.xml": data_busy[:len(data_busy) // 2],  # still being written: no closing root
        "notes.tmp": b"scratch",
    }
    for name, data in waiting.items():
        (outbox / name).write_bytes(data)

    r = cli(site, "send")
    assert r.exit_code == 0, r.output
    assert f"{fid_busy}.xml: not complete yet" in flat(r.stdout)
    assert remote_files(sshd.inbound) == {}
    assert {p.name: p.read_bytes() for p in outbox.iterdir() if p.is_file()} == waiting
    assert fid_busy not in states(site)                     # not even reserved in the journal

    # The writer finishes: the same file, now complete, travels like any other.
    (outbox / f"{fid_busy}.xml").write_bytes(data_busy)
    r = cli(site, "send")
    assert r.exit_code == 0, r.output
    assert remote_files(sshd.inbound) == {f"{fid_busy}.xml": data_busy}
    assert states(site)[fid_busy] == "uploaded"
    assert (outbox / f"{fid_part}.xml.part").read_bytes() == data_part
    assert (outbox / f".{fid_hidden}.xml").read_bytes() == data_hidden


def test_hand_dropped_file_is_checked_and_sent(tmp_path: Path, sshd: LoopbackSshd) -> None:
    site = make_site(tmp_path, sshd)
    fid, data = manual_file(site, 50)
    (site / "outbox" / f"{fid}.xml").write_bytes(data)

    r = cli(site, "send")
    assert r.exit_code == 0, r.output
    assert f"sent {fid}.xml" in r.stdout
    assert remote_files(sshd.inbound) == {f"{fid}.xml": data}
    assert (site / "outbox" / "sent" / f"{fid}.xml").read_bytes() == data
    with Site.open(site).db.connect() as conn:
        rec = journal.file_record(conn, fid)
    assert (rec.kind, rec.sequence, rec.state) == ("manual", 50, "uploaded")
    # Our next file follows the hand-dropped one's sequence, so the receiver accepts both.
    assert export(site).name.endswith("_000051.xml")


@pytest.mark.parametrize("case", ["bad-content", "sequence-taken", "name-mismatch", "doctype"])
def test_hand_dropped_file_failing_the_check_is_rejected_not_sent(
        tmp_path: Path, sshd: LoopbackSshd, case: str) -> None:
    site = make_site(tmp_path, sshd)
    own = export(site)                                      # takes sequence 1
    assert own.name.endswith("_000001.xml")
    if case == "bad-content":
        fid, data = manual_file(site, 60, customer_ref="NOBODY")
        name, why = f"{fid}.xml", "CustomerRef NOBODY"
    elif case == "sequence-taken":
        fid, data = manual_file(site, 1, day=date(2025, 1, 2))
        name, why = f"{fid}.xml", "sequence 1 is taken"
    elif case == "name-mismatch":
        fid, data = manual_file(site, 61)
        name, why = fid.replace("_000061", "_000062") + ".xml", "FileId matches its name"
    else:
        fid, data = manual_file(site, 63)
        decl = b'<?xml version="1.0" encoding="UTF-8"?>\n'
        assert data.startswith(decl)
        data = decl + b'<!DOCTYPE LedgerTransfer [<!ENTITY x SYSTEM "file:///etc/passwd">]>\n' + data[len(decl):]
        name, why = f"{fid}.xml", "DOCTYPE"
    (site / "outbox" / name).write_bytes(data)

    r = cli(site, "send")
    assert r.exit_code == 1, r.output
    assert name in flat(r.stderr) and "refused" in r.stderr and why in flat(r.stderr)
    rejected = site / "outbox" / "rejected"
    assert (rejected / name).read_bytes() == data
    reason = (rejected / f"{name}.reason.txt").read_text(encoding="utf-8")
    assert reason.startswith(f"{name} was not sent") and why in reason
    # Tonight's own file went; the refused one did not.
    assert remote_files(sshd.inbound) == {own.name: (site / "outbox" / "sent" / own.name).read_bytes()}
    assert name not in {p.name for p in (site / "outbox").iterdir()}


def test_hand_dropped_file_is_journalled_item_by_item(tmp_path: Path, sshd: LoopbackSshd) -> None:
    """What support's file carries is in flight like our own items: our next file does not
    send it again; an entry the ledger has with other content is held, not resent."""
    kid = kid10("000090001")
    ledger = LEDGER + [
        {"record": "customer", "id": "C90", "name": "Ola Nordmann", "type": "private",
         "address1": "Kirkeveien 2", "post_code": "5003", "city": "BERGEN", "country": "NO"},
        {"record": "entry", "id": "I90", "customer_id": "C90", "type": "invoice", "document_no": "F-I90",
         "document_date": "2026-10-01", "due_date": "2026-10-15", "amount": "499.00",
         "currency": "NOK", "kid": kid, "status": "invoiced"},
        {"record": "entry", "id": "I91", "customer_id": "C90", "type": "invoice", "document_no": "F-I91",
         "document_date": "2026-10-01", "due_date": "2026-10-15", "amount": "500.00",
         "currency": "NOK", "status": "invoiced"},
    ]
    site = make_site(tmp_path, sshd, ledger=ledger)
    cut = datetime.now(OSLO).replace(microsecond=0)
    header = FileHeader(SENDER, ORG, 50, "backlog", cut, cut)
    cust = Customer("C90", "Ola Nordmann", "private", Address(("Kirkeveien 2",), "5003", "BERGEN", "NO"))
    same = Entry("I90", "C90", "invoice", "F-I90", date(2026, 10, 1), Decimal("499.00"),
                 due_date=date(2026, 10, 15), kid=kid, status="invoiced")
    other = Entry("I91", "C90", "invoice", "F-I91", date(2026, 10, 1), Decimal("450.00"),   # ledger: 500.00
                  due_date=date(2026, 10, 15), status="invoiced")
    out = io.BytesIO()
    render_transfer(out, header, [cust], [same, other], [], make_environment(site / "templates"))
    (site / "outbox" / f"{header.file_id}.xml").write_bytes(out.getvalue())

    r = cli(site, "send")
    assert r.exit_code == 0, r.output
    items = json.loads(cli(site, "status", "--json").stdout)["items"]
    assert items["in_flight"] == 3                      # C90, I90, I91
    ours = export(site)
    text = ours.read_text(encoding="utf-8")
    assert 'id="I1"' in text and 'id="I2"' in text
    assert 'id="I90"' not in text and 'id="I91"' not in text and 'id="C90"' not in text
    why = flat(cli(site, "explain", "I91").output)
    assert "changed-after-sent" in why, why

    # The receiver rejects support's file: what it carried was never delivered, and goes in
    # our next file, with the ledger's content.
    receipt = render_receipt(Receipt(header.file_id, "rejected", datetime.now(timezone.utc)))
    (site / "inbox" / f"{header.file_id}.receipt.xml").write_bytes(receipt)
    r = cli(site, "receipts")
    assert r.exit_code == 3 and "REJECTED" in r.output      # a rejection is news: a person is needed
    text = export(site).read_text(encoding="utf-8")
    assert 'id="I90"' in text and 'id="C90"' in text
    assert 'id="I91"' in text and ">500.00<" in text


def test_hand_dropped_file_is_closed_after_the_check(tmp_path: Path, sshd: LoopbackSshd) -> None:
    """Reading a hand-dropped file's header must not leave the file open (one descriptor per
    file per run until the garbage collector finds it; a ResourceWarning)."""
    site = make_site(tmp_path, sshd)
    fid, data = manual_file(site, 70)
    (site / "outbox" / f"{fid}.xml").write_bytes(data)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        r = cli(site, "send")
        gc.collect()
    assert r.exit_code == 0, r.output
    assert remote_files(sshd.inbound) == {f"{fid}.xml": data}
    leaks = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert leaks == []


def test_existing_remote_name_with_other_content_is_never_overwritten(
        tmp_path: Path, sshd: LoopbackSshd) -> None:
    site = make_site(tmp_path, sshd)
    path = export(site)
    theirs = b"<somebody else's file/>\n"
    (sshd.inbound / path.name).write_bytes(theirs)
    ours = path.read_bytes()

    r = cli(site, "send")
    assert r.exit_code == 1
    message = flat(r.stderr)
    assert "error:" in message and path.name in message and "different content" in message
    assert "not overwritten" in message and "Traceback" not in r.output
    assert remote_files(sshd.inbound) == {path.name: theirs}
    assert path.read_bytes() == ours                         # stays in the outbox, unsent
    assert not (site / "outbox" / "sent" / path.name).exists()
    assert states(site)[path.stem] == "written"


def test_remote_name_with_identical_content_counts_as_delivered(tmp_path: Path, sshd: LoopbackSshd) -> None:
    site = make_site(tmp_path, sshd)
    path = export(site)
    data = path.read_bytes()
    (sshd.inbound / path.name).write_bytes(data)             # an earlier run's rename reply was lost
    r = cli(site, "send")
    assert r.exit_code == 0, r.output
    assert f"already on the server {path.name}" in flat(r.stdout)
    assert remote_files(sshd.inbound) == {path.name: data}
    assert states(site)[path.stem] == "uploaded"


# --- fetch --------------------------------------------------------------------------------

def cremul_bytes(ref: str, amount: str = "1000.00", kid: str | None = None) -> bytes:
    day = date(2026, 11, 20)
    p = BankPayment("cremul", f"*{ref}", Decimal(amount), "NOK", day, day,
                    kid=kid or kid10("000000001"), payer_name="Kari Nordmann")
    return render_cremul([p], reference=ref, created=datetime(2026, 11, 20, 6, 0)).encode("latin-1")


def test_fetch_downloads_receipts_and_payment_files_and_removes_them(tmp_path: Path, sshd: LoopbackSshd) -> None:
    site = make_site(tmp_path, sshd)
    sent = export(site)
    receipt = render_receipt(Receipt(sent.stem, "accepted", datetime(2026, 11, 29, 18, 5, tzinfo=timezone.utc)))
    files = {f"{sent.stem}.receipt.xml": receipt, "CREMUL0001.DAT": cremul_bytes("1001")}
    for name, data in files.items():
        (sshd.outbound / name).write_bytes(data)
    (sshd.outbound / "archive").mkdir()                      # a folder: not a file to fetch
    inbox = site / "inbox"
    older = cremul_bytes("0999")                             # an earlier file of the same name
    (inbox / "CREMUL0001.DAT").write_bytes(older)

    r = cli(site, "fetch")
    assert r.exit_code == 0, r.output
    assert f"fetched {sent.stem}.receipt.xml" in r.stdout and "fetched CREMUL0001.1.DAT" in r.stdout
    assert {p.name: p.read_bytes() for p in inbox.iterdir() if p.is_file()} == {
        f"{sent.stem}.receipt.xml": receipt, "CREMUL0001.1.DAT": files["CREMUL0001.DAT"],
        "CREMUL0001.DAT": older}                              # nothing local is overwritten
    assert [p.name for p in sshd.outbound.iterdir()] == ["archive"]

    again = cli(site, "fetch")
    assert again.exit_code == 0 and "Nothing to fetch." in again.stdout


def test_fetch_refuses_unsafe_remote_names(tmp_path: Path, sshd: LoopbackSshd) -> None:
    site = make_site(tmp_path, sshd)
    bad = ["evil\x07bell.DAT", "line\nbreak.DAT", "esc\x1b[2J.DAT", "a..b.DAT", "..hidden.DAT"]
    for name in bad:
        (sshd.outbound / name).write_bytes(cremul_bytes("666"))
    good = cremul_bytes("1002")
    (sshd.outbound / "CREMUL0002.DAT").write_bytes(good)

    r = cli(site, "fetch")
    assert r.exit_code == 1, r.output
    assert "fetched CREMUL0002.DAT" in r.stdout
    refused = r.stderr
    assert refused.count("refused remote name") == len(bad)
    for name in bad:
        assert repr(name) in refused
    assert "control character" in refused and "contains '..'" in refused
    assert sorted(p.name for p in sshd.outbound.iterdir()) == sorted(bad)   # left on the server
    assert sorted(p.name for p in (site / "inbox").iterdir()) == ["CREMUL0002.DAT"]
    assert (site / "inbox" / "CREMUL0002.DAT").read_bytes() == good


# --- host key -----------------------------------------------------------------------------

def test_changed_host_key_is_refused_with_its_fingerprint(tmp_path: Path, sshd: LoopbackSshd) -> None:
    site = make_site(tmp_path, sshd)
    path = export(site)
    impostor = tmp_path / "impostor"
    line = generate_key(impostor, "ed25519").split()
    sshd.known_hosts.write_text(f"[{sshd.host}]:{sshd.port} {line[0]} {line[1]}\n")   # pins another key
    (sshd.outbound / "CREMUL0003.DAT").write_bytes(cremul_bytes("1003"))

    for command in ("send", "fetch"):
        r = cli(site, command)
        assert r.exit_code == 1, (command, r.output)
        message = flat(r.stderr)
        assert "HOST KEY CHANGED" in message and host_fingerprint(sshd) in message, message
        assert "Traceback" not in r.output
    assert remote_files(sshd.inbound) == {} and path.exists()
    assert (sshd.outbound / "CREMUL0003.DAT").exists() and not (site / "inbox" / "CREMUL0003.DAT").exists()


def test_unknown_host_is_refused_with_its_fingerprint(tmp_path: Path, sshd: LoopbackSshd) -> None:
    site = make_site(tmp_path, sshd)
    path = export(site)
    sshd.known_hosts.write_text("")                           # nothing pinned: never learnt
    r = cli(site, "send")
    assert r.exit_code == 1
    message = flat(r.stderr)
    assert "not in known_hosts" in message and host_fingerprint(sshd) in message
    assert remote_files(sshd.inbound) == {} and path.exists()
    assert sshd.known_hosts.read_text() == ""                # not auto-added


# --- run ----------------------------------------------------------------------------------

def test_run_refused_while_another_run_holds_the_lock(tmp_path: Path, sshd: LoopbackSshd) -> None:
    site = make_site(tmp_path, sshd)
    with run_lock(site / "var" / "reskontro.lock"):
        for args in (("run",), ("run", "--no-sftp"), ("send",), ("fetch",), ("export",)):
            r = cli(site, *args)
            assert r.exit_code != 0, (args, r.output)
            message = flat(r.stderr)
            assert "another reskontro run holds" in message and str(os.getpid()) in message, (args, message)
    assert outbox_xml(site) == [] and remote_files(sshd.inbound) == {}
    # Released: the next run goes.
    r = cli(site, "run")
    assert r.exit_code == 0, r.output
    assert len(remote_files(sshd.inbound)) == 1


def test_run_all_well_exits_0_with_summary_and_log(tmp_path: Path, sshd: LoopbackSshd) -> None:
    site = make_site(tmp_path, sshd, log_file="logs/nightly.log")
    (sshd.outbound / "CREMUL0004.DAT").write_bytes(cremul_bytes("1004", "1000.00", kid10("000000001")))

    r = cli(site, "run")
    assert r.exit_code == 0, r.output
    lines = r.stdout.strip().splitlines()
    assert len(lines) <= 20                                  # one screen
    steps = [line.split(":")[0].strip() for line in lines[:-1]]
    assert steps == ["fetch", "inbox", "post", "outbox", "export", "send"]
    assert all(": ok " in line for line in lines[:-1])
    assert "1 files fetched" in lines[0] and "1 payments booked, 1 invoices closed" in lines[2]
    assert lines[-1] == "All went well."
    remote = remote_files(sshd.inbound)
    assert len(remote) == 1
    (name, data), = remote.items()
    assert b'<Entry id="I1"' in data and b'type="payment"' in data      # the payment went too
    log = (site / "logs" / "nightly.log").read_text(encoding="utf-8")
    assert "reskontro.run: export: ok" in log and "send: ok: 1 sent" in log
    assert sshd.outbound.exists() and list(sshd.outbound.iterdir()) == []


def test_run_exits_75_when_sftp_is_down_but_still_exports(tmp_path: Path, sshd: LoopbackSshd) -> None:
    site = make_site(tmp_path, sshd)
    sshd.stop()
    started = time.monotonic()
    r = cli(site, "run")
    assert time.monotonic() - started < 30
    assert r.exit_code == 75                        # only the server failed: try again later
    out = r.stdout
    lines = {line.split(":")[0].strip(): line for line in out.strip().splitlines()[:-1]}
    assert "FAILED" in lines["fetch"] and "FAILED" in lines["send"]
    assert ": ok " in lines["inbox"] and ": ok " in lines["export"]
    assert "cannot connect" in lines["fetch"]
    log_file = site / "var" / "reskontro.log"
    assert flat(out.strip().splitlines()[-1]) == ("The server could not be reached; the rest went well; try "
                                                  f"again later (details in {log_file})")
    log = log_file.read_text(encoding="utf-8")
    assert "fetch failed" in log and "send failed" in log and "Traceback" in log
    (path,) = outbox_xml(site)
    assert b'<Entry id="I1"' in path.read_bytes()
    assert states(site) == {path.stem: "written"}


class _KillAtRename:
    """Make sshd die at the first SFTP RENAME: before it (the .part is on the server, the
    final name is not), or after it (the file is complete there, the reply is lost)."""

    def __init__(self, sshd: LoopbackSshd, after: bool):
        self.sshd, self.after, self.fired = sshd, after, False
        self.real = paramiko.sftp_client.SFTPClient.rename

    def __call__(self, client, old: str, new: str):
        if self.fired:
            return self.real(client, old, new)
        self.fired = True
        if self.after:
            self.real(client, old, new)
            self.sshd.kill()
            raise EOFError("connection dropped before the rename's reply")
        self.sshd.kill()
        return self.real(client, old, new)


@pytest.mark.parametrize("after", [False, True], ids=["before-rename", "after-rename"])
def test_sshd_killed_mid_cycle_then_the_next_run_completes(
        tmp_path: Path, sshd: LoopbackSshd, monkeypatch: pytest.MonkeyPatch, after: bool) -> None:
    site = make_site(tmp_path, sshd)
    killer = _KillAtRename(sshd, after)
    monkeypatch.setattr(paramiko.sftp_client.SFTPClient, "rename",
                        lambda client, old, new: killer(client, old, new))

    r = cli(site, "run")
    assert killer.fired and r.exit_code == 75, r.output       # the connection lost: try again later
    assert "send: FAILED" in flat(r.stdout)
    (first,) = outbox_xml(site)                               # not moved to sent/
    first_data = first.read_bytes()
    left = remote_files(sshd.inbound)
    if after:
        assert left == {first.name: first_data}
    else:
        assert set(left) <= {first.name + ".part"}           # a stale .part at most
    # The upload started and was never confirmed: whether the receiver has the file is not
    # known here, so its receipt would be believed (a file only written would have none).
    assert states(site)[first.stem] == "uploading"

    sshd.restart()
    r = cli(site, "run")
    assert r.exit_code == 0, r.output
    sent = {p.name: p.read_bytes() for p in (site / "outbox" / "sent").iterdir()}
    assert len(sent) == 2 and sent[first.name] == first_data
    assert remote_files(sshd.inbound) == sent                # every file exactly once, no .part
    assert outbox_xml(site) == []
    assert set(states(site).values()) == {"uploaded"}
    if after:
        assert "were there already" in r.stdout
    # The receiver takes both, in order, without a complaint.
    receipts = ReceiverModel(site / "templates" / "ledger-transfer-1.xsd").serve_folder(
        sshd.inbound, sshd.outbound)
    assert [(x.file_id, x.status) for x in receipts] == [(Path(n).stem, "accepted") for n in sorted(sent)]


def test_receipt_for_a_file_whose_upload_was_never_confirmed_is_believed(
        tmp_path: Path, sshd: LoopbackSshd, monkeypatch: pytest.MonkeyPatch) -> None:
    """The connection drops after the remote rename: the receiver has the file, we never heard
    so. Its receipt, fetched by the next run, must be believed (the file was being uploaded,
    not merely written), and the file must not go a second time."""
    site = make_site(tmp_path, sshd)
    killer = _KillAtRename(sshd, after=True)
    monkeypatch.setattr(paramiko.sftp_client.SFTPClient, "rename",
                        lambda client, old, new: killer(client, old, new))
    r = cli(site, "run")
    assert killer.fired and r.exit_code == 75, r.output
    (first,) = outbox_xml(site)
    assert states(site) == {first.stem: "uploading"}
    receiver = ReceiverModel(site / "templates" / "ledger-transfer-1.xsd")
    assert [(x.file_id, x.status) for x in receiver.serve_folder(sshd.inbound, sshd.outbound)] == \
        [(first.stem, "accepted")]

    sshd.restart()
    r = cli(site, "run")
    assert r.exit_code == 0, r.output
    out = flat(r.stdout)
    assert "1 inbox files (0 failed)" in out and "1 answered by the receiver already" in out, out
    second = {p.name for p in (site / "outbox" / "sent").iterdir()} - {first.name}
    assert len(second) == 1
    (second,) = second
    assert states(site) == {first.stem: "accepted", Path(second).stem: "uploaded"}
    assert json.loads(cli(site, "status", "--json").stdout)["items"]["delivered"] == 3    # C1, I1, I2
    # The receiver got each file once: the second is accepted, nothing was refused as a repeat.
    assert [(x.file_id, x.status) for x in receiver.serve_folder(sshd.inbound, sshd.outbound)] == \
        [(Path(second).stem, "accepted")]
    assert sorted(p.name for p in (sshd.inbound / "processed").iterdir()) == sorted([first.name, second])


def test_sshd_killed_mid_download_then_the_next_run_fetches_it_once(
        tmp_path: Path, sshd: LoopbackSshd, monkeypatch: pytest.MonkeyPatch) -> None:
    site = make_site(tmp_path, sshd)
    data = cremul_bytes("1010", "1000.00", kid10("000000001"))
    (sshd.outbound / "CREMUL0010.DAT").write_bytes(data)
    real_get = sftp_module._get
    fired: list[bool] = []

    def dying_get(sftp, remote, out, request_size, **kw):
        if not fired:
            fired.append(True)
            sshd.kill()
        return real_get(sftp, remote, out, request_size, **kw)

    monkeypatch.setattr(sftp_module, "_get", dying_get)
    r = cli(site, "run")
    assert fired and r.exit_code == 75
    lines = {line.split(":")[0].strip(): line for line in r.stdout.strip().splitlines()[:-1]}
    assert "FAILED" in lines["fetch"] and "FAILED" in lines["send"] and ": ok " in lines["export"]
    assert [p.name for p in (site / "inbox").iterdir() if p.is_file()] == []      # no half file
    assert (sshd.outbound / "CREMUL0010.DAT").read_bytes() == data                # still there

    sshd.restart()
    r = cli(site, "run")
    assert r.exit_code == 0, r.output
    assert "1 files fetched" in r.stdout and "1 payments booked" in r.stdout
    assert list(sshd.outbound.iterdir()) == []
    assert (site / "inbox" / "done" / "CREMUL0010.DAT").read_bytes() == data
    listed = json.loads(cli(site, "payments", "--json").stdout)["payments"]
    assert [(p["archive_ref"], p["status"], p["invoice"]) for p in listed] == [("*1010", "matched", "I1")]
    sent = {p.name: p.read_bytes() for p in (site / "outbox" / "sent").iterdir()}
    assert len(sent) == 2 and remote_files(sshd.inbound) == sent


# --- serve --------------------------------------------------------------------------------

class JumpingClock:
    """Reads 17:59:58 Oslo once (the loop computes 18:00 as due), then 18:00:01 for ever."""

    def __init__(self, day: date):
        self.before = datetime.combine(day, dtime(17, 59, 58), OSLO)
        self.after = datetime.combine(day, dtime(18, 0, 1), OSLO)
        self.calls = 0

    def __call__(self) -> datetime:
        self.calls += 1
        return self.before if self.calls == 1 else self.after


def test_serve_runs_the_cycle_at_send_time_and_stops(tmp_path: Path, sshd: LoopbackSshd) -> None:
    site = make_site(tmp_path, sshd)
    config = load_config(site)
    assert config.send_time == dtime(18, 0)
    s = Site(config)
    stop = threading.Event()
    steps: list[Step] = []
    clock = JumpingClock(date(2026, 11, 29))
    errors: list[BaseException] = []

    def target() -> None:
        try:
            serve(config, s.db, s.rules, stop, on_step=steps.append, clock=clock)
        except BaseException as exc:   # reported below, not lost in the thread
            errors.append(exc)

    t = threading.Thread(target=target, name="serve-under-test", daemon=True)
    t.start()
    try:
        wait_for(lambda: len(steps) >= 6, 30, "one cycle's six steps")
        remote = wait_for(lambda: remote_files(sshd.inbound), 10, "a file on the server")
        assert [st.name for st in steps] == ["fetch", "inbox", "post", "outbox", "export", "send"]
        assert all(st.ok for st in steps), steps
        assert len(remote) == 1 and b'<Entry id="I1"' in next(iter(remote.values()))
    finally:
        stop.set()
        t.join(timeout=5)
    assert not t.is_alive(), "serve did not stop within 5 s of stop being set"
    assert errors == []
    assert len(steps) == 6                                   # one cycle: the next is tomorrow


def test_serve_subprocess_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    site = make_site(tmp_path, None, ledger=None)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "400"}
    env.pop("RESKONTRO_FAULT", None)
    proc = subprocess.Popen([sys.executable, "-m", "reskontro.cli", "--site", str(site), "serve", "--no-sftp"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    try:
        out: list[str] = []
        reader = threading.Thread(target=lambda: out.extend(proc.stdout), daemon=True)
        reader.start()
        wait_for(lambda: any("Serving" in line for line in out) or proc.poll() is not None, 30,
                 "serve to start")
        assert proc.poll() is None, "".join(out) + proc.stderr.read()
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=10)
        took = time.monotonic() - started
        reader.join(timeout=5)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    stderr = proc.stderr.read()
    proc.stdout.close()
    proc.stderr.close()
    text = "".join(out)
    assert rc == 0, text + stderr
    assert took < 5
    assert "next run" in text and text.rstrip().endswith("Stopped.")
    assert "Traceback" not in stderr


# --- next_run: 18:00 Europe/Oslo all year ---------------------------------------------------

@pytest.mark.parametrize("now_utc, due_utc", [
    # spring forward, Sunday 2026-03-29 02:00 -> 03:00
    (datetime(2026, 3, 28, 12, 0), datetime(2026, 3, 28, 17, 0)),    # Saturday, winter time
    (datetime(2026, 3, 28, 17, 0), datetime(2026, 3, 29, 16, 0)),    # exactly at 18:00: the next day
    (datetime(2026, 3, 28, 23, 30), datetime(2026, 3, 29, 16, 0)),   # 00:30 local, before the jump
    (datetime(2026, 3, 29, 1, 30), datetime(2026, 3, 29, 16, 0)),    # 03:30 local, after it
    (datetime(2026, 3, 29, 16, 0, 1), datetime(2026, 3, 30, 16, 0)),
    # fall back, Sunday 2026-10-25 03:00 -> 02:00
    (datetime(2026, 10, 24, 16, 0), datetime(2026, 10, 25, 17, 0)),
    (datetime(2026, 10, 25, 0, 30), datetime(2026, 10, 25, 17, 0)),  # 02:30 local, first time
    (datetime(2026, 10, 25, 1, 30), datetime(2026, 10, 25, 17, 0)),  # 02:30 local, second time
    (datetime(2026, 10, 25, 16, 30), datetime(2026, 10, 25, 17, 0)),  # 17:30 local
    (datetime(2026, 10, 25, 17, 0), datetime(2026, 10, 26, 17, 0)),
])
def test_next_run_is_1800_oslo_across_dst(now_utc: datetime, due_utc: datetime) -> None:
    due = next_run(now_utc.replace(tzinfo=timezone.utc), dtime(18, 0), OSLO)
    assert due.astimezone(timezone.utc) == due_utc.replace(tzinfo=timezone.utc)
    assert due.astimezone(OSLO).time() == dtime(18, 0)


def test_next_run_chained_through_both_dst_days() -> None:
    now = datetime(2026, 3, 27, 12, 0, tzinfo=OSLO)
    gaps, hours = [], []
    for _ in range(4):
        due = next_run(now, dtime(18, 0), OSLO)
        hours.append((due.astimezone(OSLO).date(), due.astimezone(timezone.utc).hour))
        gaps.append(due.astimezone(timezone.utc) - now.astimezone(timezone.utc))
        now = due
    assert hours == [(date(2026, 3, 27), 17), (date(2026, 3, 28), 17), (date(2026, 3, 29), 16),
                     (date(2026, 3, 30), 16)]
    assert gaps[1:] == [timedelta(hours=24), timedelta(hours=23), timedelta(hours=24)]
    now = datetime(2026, 10, 24, 18, 0, tzinfo=OSLO)
    a = next_run(now, dtime(18, 0), OSLO)
    b = next_run(a, dtime(18, 0), OSLO)
    assert a.astimezone(timezone.utc) == datetime(2026, 10, 25, 17, 0, tzinfo=timezone.utc)
    assert b.astimezone(timezone.utc) == datetime(2026, 10, 26, 17, 0, tzinfo=timezone.utc)
    assert a.astimezone(timezone.utc) - now.astimezone(timezone.utc) == timedelta(hours=25)
