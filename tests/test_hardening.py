"""Hardening (issue 10): a damaged store, private file modes, one clear line instead of a
traceback, `init` on a folder that is not empty, and `post` run twice at once.

Every test builds its site in tmp_path. The full-disk tests mount a tiny tmpfs where the
sandbox allows it (root); elsewhere the write fails with ENOSPC through a patched renderer.
"""
from __future__ import annotations

import errno
import json
import logging
import os
import random
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import create_engine, select
from stdnum import luhn

from reskontro.ledger import schema as s
from reskontro.adapters.cremul import render_cremul
from reskontro.adapters.sftp import SftpAuthError, SftpSettings, load_private_key
from reskontro.domain import BankPayment
from reskontro.payments.inbox import process_inbox
from reskontro.files.lock import run_lock
from reskontro.testing.loopback_sshd import generate_key
from reskontro.payments.booking import list_payment_file, post_payments
from reskontro.site import Site, init_site
from clirun import cli, flat  # noqa: E402  (tests/ is on sys.path)


def kid10(n: int) -> str:
    body = f"{n:09d}"
    return body + luhn.calc_check_digit(body)


def invoice(n: int, amount: str = "1000.00") -> dict:
    return {"record": "entry", "id": f"I{n}", "customer_id": "C1", "type": "invoice", "document_no": f"F{n}",
            "document_date": "2026-11-01", "due_date": "2026-11-15", "amount": amount, "currency": "NOK",
            "kid": kid10(n), "status": "invoiced"}


CUSTOMER = {"record": "customer", "id": "C1", "name": "Kari Nordmann", "type": "private",
            "address1": "Storgata 1", "post_code": "0150", "city": "OSLO", "country": "NO"}


def write_ledger(path: Path, records: list[dict]) -> Path:
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n", encoding="utf-8")
    return path


def make_site(tmp_path: Path, records: list[dict] | None = None, *, site: Path | None = None) -> Path:
    site = site or tmp_path / "site"
    init_site(site)
    ledger = write_ledger(tmp_path / "ledger.jsonl", records or [CUSTOMER, invoice(1)])
    r = cli(site, "import", str(ledger))
    assert r.exit_code == 0, r.output
    return site


def set_config(site: Path, old: str, new: str) -> None:
    cfg = site / "reskontro.toml"
    text = cfg.read_text(encoding="utf-8")
    assert old in text
    cfg.write_text(text.replace(old, new), encoding="utf-8")


def outbox_files(site: Path) -> list[str]:
    return sorted(p.name for p in (site / "outbox").iterdir() if p.is_file())


def one_line_error(result, *needles: str, status: int = 1) -> str:
    """Exit status 1 (or `status`: 2 for the configuration, 75 for a held lock), exactly one
    line on stderr (`error: ...`) holding every needle, and no traceback anywhere."""
    assert result.exit_code == status, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines[0]
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(autouse=True)
def _wide_console_and_clean_logging(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """rich wraps at 80 columns without a terminal; `run` adds a log handler to this process's
    'reskontro' logger: remove it again so tests do not write each other's logs."""
    monkeypatch.setenv("COLUMNS", "400")
    logger = logging.getLogger("reskontro")
    before = list(logger.handlers)
    yield
    for h in logger.handlers[:]:
        if h not in before:
            logger.removeHandler(h)
            h.close()


# --- 10: a damaged store ---------------------------------------------------------------------

def damage_pages(db_file: Path, table: str = "entries", count: int = 3, seed: int = 10) -> list[int]:
    """Random bytes over `count` of `table`'s pages (found with dbstat; else the middle of the
    file, never page 1) of a checkpointed SQLite file. Returns the page numbers."""
    with sqlite3.connect(db_file) as conn:                 # every page in the file itself
        assert conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0
        page = conn.execute("PRAGMA page_size").fetchone()[0]
        total = conn.execute("PRAGMA page_count").fetchone()[0]
        try:
            pages = [n for (n,) in conn.execute("SELECT pageno FROM dbstat WHERE name = ? AND pagetype = 'leaf' "
                                                "ORDER BY pageno", (table,))][1:count + 1]
        except sqlite3.OperationalError:                   # no dbstat in this SQLite build
            pages = list(range(total // 2, total // 2 + count))
    conn.close()
    assert len(pages) == count and 1 not in pages, (pages, total)
    rng = random.Random(seed)
    with db_file.open("r+b") as f:
        for n in pages:
            f.seek((n - 1) * page)
            f.write(rng.randbytes(page))
    return pages


def many_invoices(n: int) -> list[dict]:
    return [CUSTOMER] + [invoice(i, f"{100 + i}.00") for i in range(1, n + 1)]


def test_a_damaged_store_fails_the_run_loudly_and_sends_nothing(tmp_path: Path) -> None:
    """Last night's file carried the ledger; tonight nothing is pending, so the export reads no
    damaged page: it must still refuse to vouch for a ledger it cannot read."""
    site = make_site(tmp_path, many_invoices(400))
    assert cli(site, "export").exit_code == 0
    sent = outbox_files(site)
    db_file = site / "reskontro.db"
    damage_pages(db_file)

    r = cli(site, "run", "--no-sftp")
    assert r.exit_code == 1, r.output
    assert "All went well" not in r.output
    assert "quick_check" in flat(r.output) and str(db_file) in flat(r.output)
    assert outbox_files(site) == sent                      # no file, not even one with zero entries

    r = cli(site, "export")
    one_line_error(r, str(db_file), "quick_check")
    assert outbox_files(site) == sent


@pytest.mark.parametrize("args", [("status",), ("export",), ("run", "--no-sftp"), ("plan",), ("post",),
                                  ("payments",), ("watch", "--once")])
def test_a_damaged_database_header_is_one_line_naming_the_store(tmp_path: Path, args: tuple[str, ...]) -> None:
    site = make_site(tmp_path)
    db_file = site / "reskontro.db"
    with db_file.open("r+b") as f:
        f.write(b"this is no longer a SQLite header" * 3)
    one_line_error(cli(site, *args), str(db_file), "file is not a database")
    assert not [n for n in outbox_files(site) if n.endswith((".xml", ".part"))]


def test_a_damaged_header_in_a_real_process_prints_no_traceback(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    (site / "reskontro.db").write_bytes(b"\0" * 8192)
    proc = subprocess.run([sys.executable, "-m", "reskontro.cli", "--site", str(site), "status"],
                          capture_output=True, text=True, timeout=60, env={**os.environ, "COLUMNS": "400"})
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and proc.stderr.startswith("error: "), proc.stderr


# --- 11: file modes --------------------------------------------------------------------------

@pytest.fixture
def open_umask() -> Iterator[None]:
    old = os.umask(0)                 # the worst case: everything created world-writable
    yield
    os.umask(old)


def test_store_log_config_and_keys_are_private_whatever_the_umask(tmp_path: Path, open_umask: None) -> None:
    site = tmp_path / "site"
    r = cli(tmp_path, "init", str(site))
    assert r.exit_code == 0, r.output
    assert mode(site / "reskontro.toml") == 0o600
    assert mode(site / "reskontro.db") == 0o600
    assert mode(site / "keys") == 0o700
    assert mode(site / "var") == 0o700

    r = cli(site, "run", "--no-sftp")
    assert r.exit_code == 0, r.output
    assert mode(site / "var" / "reskontro.log") == 0o600
    assert mode(site / "var" / "reskontro.lock") == 0o600

    # A store opened for the first time elsewhere (a new database path), with its -wal/-shm.
    set_config(site, 'database = "sqlite:///reskontro.db"', 'database = "sqlite:///data/store.db"')
    db = Site.open(site).db
    with db.connect() as conn:
        conn.execute(select(s.meta)).all()
        assert mode(site / "data") == 0o700
        for name in ("store.db", "store.db-wal", "store.db-shm"):
            assert mode(site / "data" / name) == 0o600, name
    db.dispose()


def test_init_force_rewrites_the_config_private(tmp_path: Path, open_umask: None) -> None:
    site = tmp_path / "site"
    init_site(site)
    (site / "reskontro.toml").chmod(0o644)
    r = cli(tmp_path, "init", "--force", str(site))
    assert r.exit_code == 0, r.output
    assert mode(site / "reskontro.toml") == 0o600


@pytest.mark.parametrize("bits", [0o644, 0o640, 0o604, 0o660])
def test_a_private_key_readable_by_others_is_refused_as_openssh_does(tmp_path: Path, bits: int) -> None:
    key = tmp_path / "keys" / "id_ed25519"
    key.parent.mkdir()
    generate_key(key, "ed25519")
    settings = SftpSettings(host="127.0.0.1", user="reskontro", key_file=key, known_hosts=tmp_path / "known_hosts")
    assert load_private_key(settings).get_name() == "ssh-ed25519"
    key.chmod(bits)
    with pytest.raises(SftpAuthError) as e:
        load_private_key(settings)
    assert str(e.value) == (f"Permissions {bits:04o} for '{key}' are too open. It is required that your "
                            "private key files are NOT accessible by others. This private key will be ignored.")
    key.chmod(0o400)
    assert load_private_key(settings).get_name() == "ssh-ed25519"


def test_send_with_a_key_readable_by_others_is_one_line(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    key = site / "keys" / "id_ed25519"
    generate_key(key, "ed25519")
    (site / "keys" / "known_hosts").write_text("", encoding="utf-8")
    key.chmod(0o644)
    assert cli(site, "export").exit_code == 0
    one_line_error(cli(site, "send"), "Permissions 0644", "are too open")


# --- 12: one line, exit 1, never a traceback --------------------------------------------------

@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path | None]:
    """A 256 KiB tmpfs (None where this sandbox may not mount one)."""
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    ok = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0755", "tmpfs", str(mnt)],
                        capture_output=True).returncode == 0 if os.geteuid() == 0 else False
    yield mnt if ok else None
    if ok:
        subprocess.run(["umount", "-l", str(mnt)], check=True)


def fill(folder: Path) -> Path:
    """Write until the file system is full; returns the filler (delete it to free the space)."""
    filler = folder / "filler"
    with filler.open("wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return filler


def test_a_full_disk_during_export_is_one_line_and_loses_nothing(
        tmp_path: Path, tiny_disk: Path | None, monkeypatch: pytest.MonkeyPatch) -> None:
    site = make_site(tmp_path)
    if tiny_disk is not None:
        outbox = tiny_disk / "outbox"
        outbox.mkdir()
        set_config(site, 'outbox = "outbox"', f'outbox = "{outbox}"')
        filler = fill(tiny_disk)
    else:                              # no mount here: the renderer's write fails as on a full disk
        import reskontro.transfer.export as export_module
        outbox, filler = site / "outbox", None
        real = export_module.render_transfer

        def full(out, *args, **kwargs):
            out.write(b"<?xml")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        monkeypatch.setattr(export_module, "render_transfer", full)

    line = one_line_error(cli(site, "export"), str(outbox), "No space left on device")
    assert not [p for p in outbox.iterdir() if p.name.endswith(".xml")]

    r = cli(site, "run", "--no-sftp")                     # the cycle: its export step says the same
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert "No space left on device" in r.output and str(outbox) in r.output

    if filler is not None:
        filler.unlink()
    else:
        monkeypatch.setattr(export_module, "render_transfer", real)
    r = cli(site, "export")
    assert r.exit_code == 0, r.output
    (xml,) = [p for p in outbox.iterdir() if p.name.endswith(".xml")]
    assert b'<Entry id="I1"' in xml.read_bytes(), line       # nothing was lost with the failed file


def test_a_full_disk_under_the_store_and_the_log_is_one_line(tmp_path: Path, tiny_disk: Path | None) -> None:
    if tiny_disk is None:
        pytest.skip("this sandbox cannot mount a tmpfs (the export test above simulates ENOSPC instead)")
    store = tiny_disk / "reskontro.db"
    site = tmp_path / "site"
    init_site(site)
    set_config(site, 'database = "sqlite:///reskontro.db"', f'database = "sqlite:///{store}"')
    set_config(site, 'log_file = "var/reskontro.log"', f'log_file = "{tiny_disk / "reskontro.log"}"')
    ledger = write_ledger(tmp_path / "ledger.jsonl", [CUSTOMER] + [invoice(i) for i in range(1, 4)])
    assert cli(site, "import", str(ledger)).exit_code == 0
    fill(tiny_disk)

    big = write_ledger(tmp_path / "big.jsonl", many_invoices(3000))
    one_line_error(cli(site, "import", str(big)), str(store))

    r = cli(site, "run", "--no-sftp")
    assert r.exit_code == 1
    assert "Traceback" not in r.output and "Logging error" not in r.output


def test_an_unreadable_config_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    site = make_site(tmp_path)
    cfg = site / "reskontro.toml"
    good = cfg.read_bytes()
    cfg.write_bytes(b"[creditor]\nsender_id = \"\xff\xfe\"\n")
    one_line_error(cli(site, "status"), str(cfg), "UTF-8", status=2)

    cfg.write_bytes(good)
    cfg.chmod(0)
    if os.geteuid() == 0:              # root reads any file: make this one refuse as for a user
        real = Path.read_bytes

        def refuse(self: Path) -> bytes:
            if self == cfg:
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))
            return real(self)
        monkeypatch.setattr(Path, "read_bytes", refuse)
    one_line_error(cli(site, "status"), str(cfg), "Permission denied", status=2)


def test_an_unexpected_os_error_in_a_command_is_one_line(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    inbox = site / "inbox"
    inbox.rmdir()
    inbox.write_text("not a folder\n", encoding="utf-8")
    one_line_error(cli(site, "watch", "--once"), str(inbox))
    one_line_error(cli(site, "receipts"), str(inbox))
    r = cli(site, "run", "--no-sftp")                     # the inbox step fails, the rest runs
    assert r.exit_code == 1 and "Traceback" not in r.output and str(inbox) in r.output


def test_the_traceback_goes_to_the_log_at_debug_level(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    (site / "reskontro.db").write_bytes(b"\0" * 4096)
    one_line_error(cli(site, "status"))
    log = (site / "var" / "reskontro.log").read_text(encoding="utf-8")
    assert " DEBUG " in log and "Traceback" in log and "file is not a database" in log


# --- 15: init on a folder that is not empty ---------------------------------------------------

def test_init_does_not_clobber_existing_files_without_force(tmp_path: Path) -> None:
    target = tmp_path / "here"
    (target / "rules").mkdir(parents=True)
    mine = target / "rules" / "transfer.yaml"
    mine.write_text("# my own rules\n", encoding="utf-8")
    (target / "notes.txt").write_text("keep me\n", encoding="utf-8")

    line = one_line_error(cli(tmp_path, "init", str(target)), str(target), "rules/transfer.yaml", "--force",
                          status=2)
    assert mine.read_text(encoding="utf-8") == "# my own rules\n"
    assert sorted(p.name for p in target.iterdir()) == ["notes.txt", "rules"], line   # nothing made

    r = cli(tmp_path, "init", "--force", str(target))
    assert r.exit_code == 0, r.output
    assert mine.read_text(encoding="utf-8") != "# my own rules\n"
    assert (target / "notes.txt").read_text(encoding="utf-8") == "keep me\n"


def test_init_over_a_site_that_lost_its_config_keeps_the_store(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    (site / "reskontro.toml").unlink()
    one_line_error(cli(tmp_path, "init", str(site)), "reskontro.db", "--force", status=2)
    r = cli(tmp_path, "init", "--force", str(site))
    assert r.exit_code == 0, r.output
    plan = cli(site, "plan", "--json")
    assert plan.exit_code == 0 and json.loads(plan.stdout)["entries"] == 1     # the ledger is still there


# --- 15: `post` twice at once -----------------------------------------------------------------

def bank(n: int, amount: str) -> BankPayment:
    return BankPayment("cremul", f"*{n}", Decimal(amount), "NOK", datetime(2026, 11, 20).date(),
                       datetime(2026, 11, 20).date(), kid=kid10(n), payer_name="Kari Nordmann")


def list_payments(site: Path, payments: list[BankPayment]) -> None:
    data = render_cremul(payments, reference="P1", created=datetime(2026, 11, 20, 6, 0)).encode("latin-1")
    (site / "inbox" / "CREMUL_P1.DAT").write_bytes(data)
    db = Site.open(site).db
    assert [r.kind for r in process_inbox(db, site / "inbox", payments=list_payment_file)] == ["payments"]
    db.dispose()


def booked(site: Path) -> dict[str, list[str]]:
    """invoice -> the payments in its match; and every bank payment's status."""
    db = Site.open(site).db
    with db.connect() as conn:
        pays = conn.execute(select(s.entries.c.id, s.entries.c.match_id).where(s.entries.c.type == "payment")).all()
        status = dict(conn.execute(select(s.bank_payments.c.id, s.bank_payments.c.status)).all())
    db.dispose()
    out: dict[str, list[str]] = {}
    for pid, mid in pays:
        out.setdefault(mid, []).append(pid)
    out["status"] = sorted(set(status.values()))
    return out


def test_post_takes_the_run_lock(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    list_payments(site, [bank(1, "600.00")])
    with run_lock(site / "var" / "reskontro.lock"):
        one_line_error(cli(site, "post"), "another reskontro run holds", status=75)
    assert booked(site) == {"status": ["unposted"]}
    assert cli(site, "post").exit_code == 0
    assert booked(site)["status"] == ["matched"]


def test_a_payment_another_post_booked_meanwhile_is_not_booked_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two posts read the same unposted payment; the other one books it first."""
    site = make_site(tmp_path)
    list_payments(site, [bank(1, "600.00")])
    db = Site.open(site).db
    other = create_engine(db.url)
    real_begin = db.begin
    raced = []

    def begin():
        if not raced:
            raced.append(post_payments(other))             # the other `post`, done in between
        return real_begin()
    monkeypatch.setattr(db, "begin", begin)
    r = post_payments(db)
    other.dispose()
    db.dispose()
    assert raced[0].matched == 1
    assert (r.matched, r.unmatched) == (0, [])
    got = booked(site)
    assert got["status"] == ["matched"] and len(got["MI1"]) == 1 and set(got) == {"MI1", "status"}


def test_two_posts_at_once_book_every_payment_once(tmp_path: Path) -> None:
    n = 150
    site = make_site(tmp_path, many_invoices(n))
    list_payments(site, [bank(i, "50.00") for i in range(1, n + 1)])   # a part of every invoice
    env = {**os.environ, "COLUMNS": "400"}
    cmd = [sys.executable, "-m", "reskontro.cli", "--site", str(site), "post"]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert "Traceback" not in err, err
        assert p.returncode == 0 or (p.returncode == 75 and "another reskontro run holds" in err), (out, err)
    got = booked(site)
    assert got.pop("status") == ["matched"]
    assert len(got) == n and all(len(v) == 1 for v in got.values()), got
    db = Site.open(site).db
    with db.connect() as conn:
        notes = dict(conn.execute(select(s.bank_payments.c.invoice_id, s.bank_payments.c.note)).all())
    db.dispose()
    # invoice I<i> is 100+i; one payment of 50 leaves 50+i open (a second booking would say i)
    assert notes == {f"I{i}": f"partial: {50 + i}.00 still open" for i in range(1, n + 1)}


def test_init_force_over_a_file_that_is_no_store_is_one_line(tmp_path: Path) -> None:
    target = tmp_path / "here"
    target.mkdir()
    (target / "reskontro.db").write_bytes(b"my notes, not a database\n" * 200)
    one_line_error(cli(tmp_path, "init", "--force", str(target)), str(target / "reskontro.db"),
                   "file is not a database")
    assert (target / "reskontro.db").read_bytes() == b"my notes, not a database\n" * 200
