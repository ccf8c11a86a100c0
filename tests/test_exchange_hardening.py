"""Hardening of the exchange (issue 10): what is uploaded is what was checked, files lost from
the outbox, odd names, growing and oversized remote files, a refused rename, a read-only
outbox, links planted at the names the product writes, exports at the hour the clocks change.

Sites and the server as in test_exchange.py (a real OpenSSH sshd on 127.0.0.1); the remote
folders are plain directories, checked on disk.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import paramiko.sftp_client
import pytest
from sqlalchemy import create_engine, inspect

from reskontro.exchange import remote as exchange
from reskontro.transfer import journal
from reskontro.transfer.export import export as do_export
from reskontro.files.folders import set_aside
from reskontro.files.lock import LockedError, run_lock
from reskontro.testing.loopback_sshd import LoopbackSshd
from reskontro.site import Site, init_site
from reskontro.ledger.store import open_engine
from test_exchange import (LEDGER, cremul_bytes, export, kid10, make_site, manual_file, outbox_xml,
                           remote_files, states)
from test_exchange import _wide_console_and_clean_logging  # noqa: F401  (autouse fixture)
from clirun import cli, flat

FIXED = datetime(2026, 11, 28, 17, 0, tzinfo=timezone.utc)      # 18:00 in Oslo
FIXED_ID = "LT_123456_20261128_000001"


def items(site: Path) -> dict[str, int]:
    r = cli(site, "status", "--json")
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)["items"]


def file_record(site: Path, file_id: str) -> journal.FileRecord:
    with Site.open(site).db.connect() as conn:
        rec = journal.file_record(conn, file_id)
    assert rec is not None
    return rec


# --- 2. what is uploaded is what was checked ------------------------------------------------

@pytest.mark.sshd
def test_exported_file_edited_before_send_is_refused_and_its_content_goes_again(
        tmp_path: Path, sshd: LoopbackSshd) -> None:
    site = make_site(tmp_path, sshd)
    path = export(site)
    rec = file_record(site, path.stem)
    assert rec.sha256 is not None and len(rec.sha256) == 64
    edited = path.read_bytes().replace(b"250.50", b"25.05")     # still a well-formed file
    assert edited != path.read_bytes()
    path.write_bytes(edited)

    r = cli(site, "send")
    assert r.exit_code == 1, r.output
    message = flat(r.stderr)
    assert "refused" in message and path.name in message
    assert "not the file that passed the pre-send check" in message and "Traceback" not in r.output
    assert remote_files(sshd.inbound) == {}                      # neither final name nor .part
    rejected = site / "outbox" / "rejected"
    assert (rejected / path.name).read_bytes() == edited
    assert "pre-send check" in (rejected / f"{path.name}.reason.txt").read_text(encoding="utf-8")
    assert states(site)[path.stem] == "invalid"
    assert items(site)["in_flight"] == 0

    # Its content goes again, from the ledger, in the next file, and that one is sent.
    again = export(site)
    assert b'<Entry id="I2"' in again.read_bytes() and b"250.50" in again.read_bytes()
    data = again.read_bytes()
    r = cli(site, "send")
    assert r.exit_code == 0, r.output
    assert remote_files(sshd.inbound) == {again.name: data}


@pytest.mark.sshd
def test_hand_dropped_file_swapped_between_check_and_upload_is_refused(
        tmp_path: Path, sshd: LoopbackSshd, monkeypatch: pytest.MonkeyPatch) -> None:
    site = make_site(tmp_path, sshd)
    fid, data = manual_file(site, 50)
    _, other = manual_file(site, 50, customer="C91", invoice="I91")   # same name, other content
    path = site / "outbox" / f"{fid}.xml"
    path.write_bytes(data)
    swapped: list[str] = []

    def swap(p: Path) -> None:
        if p.name == path.name:
            tmp = p.with_name("swap.tmp")
            tmp.write_bytes(other)
            os.replace(tmp, p)                    # after its check, before its upload
            swapped.append(p.name)

    monkeypatch.setattr(exchange, "before_upload", swap)
    r = cli(site, "send")
    assert swapped and r.exit_code == 1, r.output
    assert "not the file that passed the pre-send check" in flat(r.stderr)
    assert remote_files(sshd.inbound) == {}
    assert (site / "outbox" / "rejected" / path.name).read_bytes() == other
    assert states(site)[fid] == "invalid"
    assert items(site)["in_flight"] == 0          # what it carried is not in flight


@pytest.mark.sshd
def test_hand_dropped_file_is_sent_exactly_as_checked(tmp_path: Path, sshd: LoopbackSshd) -> None:
    import hashlib

    site = make_site(tmp_path, sshd)
    fid, data = manual_file(site, 50)
    (site / "outbox" / f"{fid}.xml").write_bytes(data)
    r = cli(site, "send")
    assert r.exit_code == 0, r.output
    assert file_record(site, fid).sha256 == hashlib.sha256(data).hexdigest()
    assert remote_files(sshd.inbound) == {f"{fid}.xml": data}


def test_store_of_an_older_version_gets_the_new_column(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    old = create_engine(url)
    with old.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE files (file_id VARCHAR(64) PRIMARY KEY, sequence INTEGER NOT NULL "
                             "UNIQUE, kind VARCHAR(8) NOT NULL, state VARCHAR(12) NOT NULL, name VARCHAR(200) "
                             "NOT NULL, created_at DATETIME NOT NULL, cut_off DATETIME, entry_count INTEGER "
                             "NOT NULL, detail TEXT)")
        conn.exec_driver_sql("INSERT INTO files VALUES ('F', 1, 'daily', 'written', 'F.xml', "
                             "'2026-11-28 17:00:00', NULL, 0, NULL)")
    old.dispose()
    engine = open_engine(url)
    assert "sha256" in {c["name"] for c in inspect(engine).get_columns("files")}
    with engine.connect() as conn:
        assert journal.file_record(conn, "F").sha256 is None       # old rows: no hash known
    engine.dispose()
    open_engine(url).dispose()                                     # and a second open is a no-op


# --- 5. a written file deleted from the outbox ----------------------------------------------

@pytest.mark.sshd
def test_written_file_deleted_from_the_outbox_fails_the_run_and_its_content_goes_again(
        tmp_path: Path, sshd: LoopbackSshd) -> None:
    site = make_site(tmp_path, sshd)
    lost = export(site)
    lost.unlink()

    r = cli(site, "run")
    assert r.exit_code == 1, r.output
    lines = {line.split(":")[0].strip(): line for line in r.stdout.strip().splitlines()[:-1]}
    assert list(lines) == ["fetch", "inbox", "post", "outbox", "export", "send"]
    assert "FAILED" in lines["outbox"] and lost.name in lines["outbox"]
    assert "disappeared from the outbox" in flat(lines["outbox"])
    assert ": ok " in lines["export"] and ": ok " in lines["send"]
    assert states(site)[lost.stem] == "abandoned"
    (sent,) = remote_files(sshd.inbound).values()
    assert b'<Entry id="I1"' in sent and b'<Entry id="I2"' in sent       # went again tonight

    again = cli(site, "run")                      # reported once: the next run is clean
    assert again.exit_code == 0, again.output


@pytest.mark.sshd
def test_send_reports_a_written_file_deleted_from_the_outbox(tmp_path: Path, sshd: LoopbackSshd) -> None:
    site = make_site(tmp_path, sshd)
    lost = export(site)
    kept = export(site)
    lost.unlink()
    r = cli(site, "send")
    assert r.exit_code == 1, r.output
    assert f"lost {lost.name} disappeared from the outbox" in flat(r.stderr)
    assert f"sent {kept.name}" in r.stdout
    assert states(site) == {lost.stem: "abandoned", kept.stem: "uploaded"}
    assert b'<Entry id="I1"' in export(site).read_bytes()


# --- 6. odd names ---------------------------------------------------------------------------

@pytest.mark.sshd
def test_non_utf8_name_in_the_outbox_is_set_aside_and_every_other_file_goes(
        tmp_path: Path, sshd: LoopbackSshd) -> None:
    site = make_site(tmp_path, sshd)
    ours = export(site)
    odd = os.fsencode(site / "outbox") + b"/bad\xff.xml"
    with open(odd, "wb") as f:
        f.write(b"<LedgerTransfer/>")
    r = cli(site, "send")
    assert r.exit_code == 1, r.output
    assert "Traceback" not in r.output
    assert f"sent {ours.name}" in r.stdout
    assert "refused bad\\xff.xml: its file name is not UTF-8" in flat(r.stderr)
    assert list(remote_files(sshd.inbound)) == [ours.name]
    rejected = site / "outbox" / "rejected"
    assert (rejected / "bad\\xff.xml").read_bytes() == b"<LedgerTransfer/>"
    assert "not UTF-8" in (rejected / "bad\\xff.xml.reason.txt").read_text(encoding="utf-8")
    assert not os.path.lexists(odd)


@pytest.mark.sshd
def test_overlong_and_non_utf8_remote_names_do_not_stop_the_fetch(tmp_path: Path, sshd: LoopbackSshd) -> None:
    site = make_site(tmp_path, sshd)
    long_name = "C" * 246 + ".DAT"
    (sshd.outbound / long_name).write_bytes(cremul_bytes("1100"))
    bad = os.fsencode(sshd.outbound) + b"/bad\xff.DAT"
    with open(bad, "wb") as f:
        f.write(cremul_bytes("1101"))
    good = cremul_bytes("1102")
    (sshd.outbound / "CREMUL1102.DAT").write_bytes(good)
    r = cli(site, "fetch")
    assert r.exit_code == 1, r.output
    assert "fetched CREMUL1102.DAT" in r.stdout and "Traceback" not in r.output
    refused = flat(r.stderr)
    assert "250 bytes long" in refused and "is not UTF-8" in refused
    assert (site / "inbox" / "CREMUL1102.DAT").read_bytes() == good
    assert (sshd.outbound / long_name).exists() and os.path.exists(bad)


# --- 7. growing and oversized remote files --------------------------------------------------

@pytest.mark.sshd
def test_remote_file_over_max_fetch_size_is_left_on_the_server(tmp_path: Path, sshd: LoopbackSshd) -> None:
    site = make_site(tmp_path, sshd)
    cfg = site / "reskontro.toml"
    cfg.write_text(cfg.read_text(encoding="utf-8") + "max_fetch_size = 1000\n", encoding="utf-8")
    big = cremul_bytes("1200") + b" " * 1000
    (sshd.outbound / "BIG.DAT").write_bytes(big)
    (sshd.outbound / "SMALL.DAT").write_bytes(b"x" * 10)
    r = cli(site, "fetch")
    assert r.exit_code == 1, r.output
    assert "fetched SMALL.DAT" in r.stdout
    assert f"{len(big)} bytes is over the 1000-byte limit (sftp.max_fetch_size)" in flat(r.stderr)
    assert (sshd.outbound / "BIG.DAT").read_bytes() == big
    assert sorted(p.name for p in (site / "inbox").iterdir() if p.is_file()) == ["SMALL.DAT"]


def test_max_fetch_size_is_checked_in_the_config(tmp_path: Path) -> None:
    from reskontro.config import ConfigError, parse_config

    base = {"creditor": {"sender_id": "1", "org_no": "923609016"}}
    assert parse_config(base, tmp_path).sftp.max_fetch_size == 64 << 20
    for bad in (0, -1, True, "1MB"):
        with pytest.raises(ConfigError, match="sftp.max_fetch_size"):
            parse_config({**base, "sftp": {"max_fetch_size": bad}}, tmp_path)


@pytest.mark.sshd
def test_growing_remote_file_is_not_fetched_cut_short(tmp_path: Path, sshd: LoopbackSshd,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from reskontro.adapters import sftp as sftp_module

    site = make_site(tmp_path, sshd)
    data = cremul_bytes("1300", "1000.00", kid10("000000001"))
    cut = len(data) // 2
    (sshd.outbound / "CREMUL1300.DAT").write_bytes(data[:cut])
    real_get = sftp_module._get

    def bank_still_writing(sftp, remote, out, request_size, **kw):
        n = real_get(sftp, remote, out, request_size, **kw)
        with (sshd.outbound / "CREMUL1300.DAT").open("ab") as f:
            f.write(data[cut:])
        monkeypatch.setattr(sftp_module, "_get", real_get)
        return n

    monkeypatch.setattr(sftp_module, "_get", bank_still_writing)
    r = cli(site, "fetch")
    assert r.exit_code == 0, r.output                          # not an error: it comes next time
    assert "left for next time 'CREMUL1300.DAT': changed while it was fetched" in flat(r.stdout)
    assert [p for p in (site / "inbox").iterdir() if p.is_file()] == []
    assert (sshd.outbound / "CREMUL1300.DAT").read_bytes() == data

    r = cli(site, "run")
    assert r.exit_code == 0, r.output
    assert "1 payments booked, 1 invoices closed" in r.stdout
    assert list(sshd.outbound.iterdir()) == []


# --- 15. a refused rename, a read-only outbox -----------------------------------------------

@pytest.mark.sshd
def test_rename_refused_by_the_server_leaves_no_part_and_the_file_to_retry(
        tmp_path: Path, sshd: LoopbackSshd, monkeypatch: pytest.MonkeyPatch) -> None:
    site = make_site(tmp_path, sshd)
    path = export(site)
    data = path.read_bytes()

    def refuse(client, old: str, new: str) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(paramiko.sftp_client.SFTPClient, "rename", refuse)
    r = cli(site, "send")
    assert r.exit_code == 1, r.output
    message = flat(r.stderr)
    assert "refused to rename" in message and "stays to be sent again" in message
    assert "Traceback" not in r.output
    assert remote_files(sshd.inbound) == {}                       # the .part was removed
    assert path.read_bytes() == data and states(site)[path.stem] == "written"

    monkeypatch.undo()
    r = cli(site, "send")
    assert r.exit_code == 0, r.output
    assert remote_files(sshd.inbound) == {path.name: data}
    assert states(site)[path.stem] == "uploaded"


@pytest.fixture
def immutable() -> Iterator:
    """Make folders unwritable even for root (chattr +i); undone at the end."""
    chattr = shutil.which("chattr")
    made: list[Path] = []

    def lock(folder: Path) -> None:
        if chattr is None or subprocess.run([chattr, "+i", str(folder)], capture_output=True).returncode:
            pytest.skip("chattr +i is not available here (needs root on ext4/xfs/btrfs/tmpfs)")
        made.append(folder)

    yield lock
    for folder in made:
        subprocess.run([chattr, "-i", str(folder)], check=True)


@pytest.mark.sshd
def test_read_only_outbox_gives_a_clear_error_and_an_honest_journal(
        tmp_path: Path, sshd: LoopbackSshd, immutable) -> None:
    site = make_site(tmp_path, sshd)
    (site / "outbox" / "sent").mkdir()
    immutable(site / "outbox")
    r = cli(site, "export")
    assert r.exit_code == 1
    message = flat(r.stderr)
    assert "error: cannot write tonight's file into the outbox" in message and "Traceback" not in r.output
    assert "LT_123456_" in message and "was abandoned" in message
    assert set(states(site).values()) == {"abandoned"}           # nothing in it counts as sent
    assert items(site)["in_flight"] == 0

    r = cli(site, "run")
    assert r.exit_code == 1
    assert "export: FAILED" in flat(r.stdout) and "cannot write tonight's file" in flat(r.stdout)
    subprocess.run(["chattr", "-i", str(site / "outbox")], check=True)

    # Written, then the outbox turns read-only before send: the upload goes, the move fails.
    path = export(site)
    immutable(site / "outbox")
    r = cli(site, "send")
    assert r.exit_code == 1
    assert "was delivered, but cannot be moved to" in flat(r.stderr) and "Traceback" not in r.output
    assert remote_files(sshd.inbound) == {path.name: path.read_bytes()}
    assert states(site)[path.stem] == "uploaded"


# --- 1. links planted at the names the product writes ---------------------------------------

@pytest.mark.parametrize("dangling", [False, True], ids=["to-a-file", "dangling"])
def test_link_at_the_exports_part_name_is_never_written_through(tmp_path: Path, dangling: bool) -> None:
    site_dir = make_site(tmp_path, None)
    victim = tmp_path / "victim.txt"
    if not dangling:
        victim.write_bytes(b"precious")
    (site_dir / "outbox" / f"{FIXED_ID}.xml.part").symlink_to(victim)
    site = Site.open(site_dir)
    result = do_export(site.config, site.db, site.rules, now=FIXED)
    assert result.path == site_dir / "outbox" / f"{FIXED_ID}.xml"
    assert not result.path.is_symlink() and b'<Entry id="I1"' in result.path.read_bytes()
    assert victim.read_bytes() == b"precious" if not dangling else not victim.exists()
    assert not os.path.lexists(site_dir / "outbox" / f"{FIXED_ID}.xml.part")


def test_link_at_a_reason_file_name_is_never_written_through(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious")
    folder = tmp_path / "rejected"
    folder.mkdir()
    (folder / "F.xml.reason.txt").symlink_to(victim)
    (folder / "G.xml.reason.txt").symlink_to(tmp_path / "nowhere.txt")    # dangling
    for name in ("F.xml", "G.xml"):
        (tmp_path / name).write_bytes(b"file")
        target = set_aside(tmp_path / name, folder, "why")
        assert target == folder / f"{name}.1"
        assert (folder / f"{name}.1.reason.txt").read_text(encoding="utf-8") == "why\n"
    assert victim.read_bytes() == b"precious" and not (tmp_path / "nowhere.txt").exists()


def test_link_at_a_name_init_writes_is_replaced_not_followed(tmp_path: Path) -> None:
    target = tmp_path / "site"
    (target / "rules").mkdir(parents=True)
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious")
    (target / "rules" / "transfer.yaml").symlink_to(victim)
    (target / "reskontro.toml").symlink_to(tmp_path / "nowhere.toml")        # dangling
    with pytest.raises(FileExistsError):
        init_site(target)                       # a link holds the name: not a fresh site
    init_site(target, force=True)
    assert victim.read_bytes() == b"precious" and not (tmp_path / "nowhere.toml").exists()
    for name in ("rules/transfer.yaml", "reskontro.toml"):
        assert not (target / name).is_symlink() and (target / name).stat().st_size > 0


def test_link_at_the_lock_file_is_refused(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious")
    (tmp_path / "var").mkdir()
    (tmp_path / "var" / "reskontro.lock").symlink_to(victim)
    with pytest.raises(LockedError, match="symbolic link"):
        with run_lock(tmp_path / "var" / "reskontro.lock"):
            pass
    assert victim.read_bytes() == b"precious"


# --- 15. exports at the hour the clocks change ----------------------------------------------

@pytest.mark.parametrize("now, day, cut_off", [
    # spring forward: Sunday 2026-03-29, 02:00 CET -> 03:00 CEST
    (datetime(2026, 3, 29, 0, 30, tzinfo=timezone.utc), "20260329", "2026-03-29T01:30:00+01:00"),
    (datetime(2026, 3, 29, 2, 30, tzinfo=timezone.utc), "20260329", "2026-03-29T04:30:00+02:00"),
    # fall back: Sunday 2026-10-25, 03:00 CEST -> 02:00 CET; 02:30 happens twice
    (datetime(2026, 10, 25, 0, 30, tzinfo=timezone.utc), "20261025", "2026-10-25T02:30:00+02:00"),
    (datetime(2026, 10, 25, 1, 30, tzinfo=timezone.utc), "20261025", "2026-10-25T02:30:00+01:00"),
    (datetime(2026, 10, 24, 22, 30, tzinfo=timezone.utc), "20261025", "2026-10-25T00:30:00+02:00"),
])
def test_export_at_the_hour_the_clocks_change(tmp_path: Path, now: datetime, day: str, cut_off: str) -> None:
    from lxml import etree

    site_dir = make_site(tmp_path, None)
    site = Site.open(site_dir)
    result = do_export(site.config, site.db, site.rules, now=now)
    assert result.path is not None, result.problems
    assert result.file_id == f"LT_123456_{day}_000001"
    ns = "{urn:reskontro:ledger-transfer:1}"
    header = etree.parse(str(result.path)).find(f"{ns}Header")
    assert header.findtext(f"{ns}CutOff") == cut_off and header.findtext(f"{ns}CreatedAt") == cut_off
    assert datetime.fromisoformat(cut_off) == now                 # the same instant
    rec = file_record(site_dir, result.file_id)
    assert rec.created_at == now


# --- a file completed after a crash is the file that was checked -----------------------------

@pytest.mark.parametrize("edited", [False, True], ids=["as-written", "edited"])
def test_file_completed_after_a_crash_must_hold_the_bytes_written(tmp_path: Path, edited: bool) -> None:
    from test_crash_export import export_subprocess

    site = make_site(tmp_path, None)
    proc = export_subprocess(site, "after-rename")     # killed between the rename and the commit
    assert proc.returncode == -9, proc.stderr
    (path,) = outbox_xml(site)
    assert states(site) == {path.stem: "writing"}
    if edited:
        path.write_bytes(path.read_bytes().replace(b"250.50", b"25.05"))   # still a valid file
    r = cli(site, "export")
    assert r.exit_code == 0, r.output
    if edited:
        assert "failed its check when completed after a crash" in flat(r.stdout)
        assert states(site)[path.stem] == "invalid"
        assert (site / "outbox" / "rejected" / path.name).exists()
        (again,) = outbox_xml(site)                  # its content went in tonight's next file
        assert b'<Entry id="I2"' in again.read_bytes() and b"250.50" in again.read_bytes()
    else:
        assert "completed (the file was whole in the outbox)" in flat(r.stdout)
        assert states(site)[path.stem] == "written"
        assert file_record(site, path.stem).sha256 is not None
