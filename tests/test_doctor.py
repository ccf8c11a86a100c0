"""`reskontro doctor`: one line per check, ok or what to do; exit 0 only when all pass; it
changes nothing (the store, the site's folders, the server's folders are as before).

The SFTP checks run against a real OpenSSH sshd on 127.0.0.1 (fixture `sshd`).
"""
from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from clirun import cli, flat
from reskontro import services
from reskontro.testing.loopback_sshd import LoopbackSshd
from test_exchange import make_site

CHECKS = ["config", "folders", "rules", "rule examples", "template", "store", "schema", "quick_check",
          "key file", "host key", "sftp login", "remote inbound", "remote outbound", "free space", "time zone"]


def doctor(site: Path, *args: str) -> tuple[int, dict[str, tuple[bool | None, str]]]:
    """The CLI's exit status, and the checks (services.doctor) by name."""
    r = cli(site, "doctor", *args)
    checks = services.doctor(site, sftp="--no-sftp" not in args)
    lines = [line for line in r.stdout.splitlines() if line[:4] in ("ok  ", "FAIL", "skip")]
    assert [line.split(":")[0][5:] for line in lines] == [c.check for c in checks]
    assert r.exit_code == (1 if any(c.ok is False for c in checks) else 0)
    return r.exit_code, {c.check: (c.ok, c.message) for c in checks}


@pytest.fixture(autouse=True)
def _wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "400")       # one check, one line


def snapshot(*folders: Path) -> dict[str, bytes]:
    """Every file under the folders (path -> bytes), the store's files aside."""
    out = {}
    for folder in folders:
        for p in sorted(folder.rglob("*")):
            if p.is_file() and not p.name.startswith("reskontro.db"):
                out[str(p)] = p.read_bytes()
    return out


def dump(site: Path) -> str:
    con = sqlite3.connect(site / "reskontro.db")
    try:
        return "\n".join(con.iterdump())
    finally:
        con.close()


@pytest.mark.sshd
def test_a_ready_site_passes_every_check_and_nothing_changes(tmp_path: Path, sshd: LoopbackSshd,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    import paramiko
    opened: list[str] = []
    real_open = paramiko.SFTPClient.open
    monkeypatch.setattr(paramiko.SFTPClient, "open", lambda self, name, *a, **k: (
        opened.append(name), real_open(self, name, *a, **k))[1])
    site = make_site(tmp_path, sshd)
    (sshd.outbound / "R1.receipt.xml").write_bytes(b"<x/>")        # a file waiting to be fetched
    before, remote, store = snapshot(site), snapshot(sshd.remote_root), dump(site)
    code, checks = doctor(site)
    assert code == 0, checks
    assert list(checks) == CHECKS
    assert all(ok for ok, _ in checks.values()), checks
    assert "a probe .part written and removed" in checks["remote inbound"][1]
    assert snapshot(site) == before and snapshot(sshd.remote_root) == remote and dump(site) == store
    # the probes never had a name a receiver takes
    assert {n.split("/")[0] for n in opened} == {"inbound", "outbound"}, opened
    assert all(n.endswith(".part") and ".xml" not in n for n in opened), opened

    text = cli(site, "doctor").stdout
    assert [line.split()[0] for line in text.splitlines()[:len(CHECKS)]] == ["ok"] * len(CHECKS)
    assert "Ready." in text


def test_no_sftp_skips_the_network(tmp_path: Path) -> None:
    site = make_site(tmp_path)                   # [sftp] points at a host nobody serves
    key = site / "keys" / "id_ed25519"
    from reskontro.testing.loopback_sshd import generate_key
    generate_key(key)
    kind, blob = generate_key(tmp_path / "host_key").split()[:2]
    (site / "keys" / "known_hosts").write_text(f"127.0.0.1 {kind} {blob}\n")
    code, checks = doctor(site, "--no-sftp")
    assert code == 0, [c for c in checks.items() if c[1][0] is False]
    assert {n: ok for n, (ok, _) in checks.items() if ok is None} == {
        "sftp login": None, "remote inbound": None, "remote outbound": None}
    assert checks["sftp login"][1] == "skipped (--no-sftp)"


@pytest.mark.sshd
def test_each_problem_is_one_line_saying_what_to_do(tmp_path: Path, sshd: LoopbackSshd) -> None:
    site = make_site(tmp_path, sshd)
    os.chmod(sshd.client_key, 0o644)
    sshd.known_hosts.write_text("")
    code, checks = doctor(site)
    assert code == 1
    assert checks["key file"][0] is False and "chmod 600" in checks["key file"][1]
    assert checks["host key"][0] is False and "ssh-keyscan" in checks["host key"][1]
    assert checks["sftp login"] == (None, "not tried: fix the key file first")
    r = cli(site, "doctor")
    assert "FAIL key file:" in flat(r.stdout) and "error: 2 checks failed." in flat(r.stderr)


@pytest.mark.sshd
def test_remote_folders_must_exist(tmp_path: Path, sshd: LoopbackSshd) -> None:
    site = make_site(tmp_path, sshd)
    sshd.outbound.rmdir()
    code, checks = doctor(site)
    assert code == 1
    assert checks["sftp login"][0] is True and checks["remote inbound"][0] is True
    assert checks["remote outbound"][0] is False and "create it" in checks["remote outbound"][1]


@pytest.mark.sshd
@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only folder")
def test_remote_inbound_must_take_files(tmp_path: Path, sshd: LoopbackSshd) -> None:
    site = make_site(tmp_path, sshd)
    sshd.inbound.chmod(0o555)
    try:
        code, checks = doctor(site)
    finally:
        sshd.inbound.chmod(0o755)
    assert code == 1 and checks["remote inbound"][0] is False
    assert "does not take files" in checks["remote inbound"][1]


@pytest.mark.sshd
def test_a_passphrase_that_is_not_there(tmp_path: Path, sshd: LoopbackSshd, monkeypatch) -> None:
    site = make_site(tmp_path, sshd)
    key = sshd.add_client_key("locked", passphrase="hemmelig")
    cfg = site / "reskontro.toml"
    cfg.write_text(cfg.read_text().replace(str(sshd.client_key), str(key))
                   + 'passphrase_env = "DOCTOR_TEST_PASSPHRASE"\n')
    monkeypatch.delenv("DOCTOR_TEST_PASSPHRASE", raising=False)
    code, checks = doctor(site)
    assert code == 1 and "DOCTOR_TEST_PASSPHRASE is not set" in checks["key file"][1]
    monkeypatch.setenv("DOCTOR_TEST_PASSPHRASE", "hemmelig")
    code, checks = doctor(site)
    assert code == 0, checks
    assert "passphrase from $DOCTOR_TEST_PASSPHRASE" in checks["key file"][1]


def test_rules_template_and_store_problems(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    rules = site / "rules" / "transfer.yaml"
    rules.write_text(rules.read_text().replace("entry_type: invoice", "entry_typ: invoice", 1))
    tpl = site / "templates" / "ledger-transfer-1.xml.j2"
    tpl.write_text(tpl.read_text().replace("<Header>", "<Heder>", 1))
    code, checks = doctor(site, "--no-sftp")
    assert code == 1
    assert checks["rules"][0] is False and "reskontro rules lint" in checks["rules"][1]
    assert checks["rule examples"][0] is None
    assert checks["template"][0] is False and "fresh `reskontro init`" in checks["template"][1]


def test_a_missing_store_is_reported_not_created(tmp_path: Path) -> None:
    site = make_site(tmp_path, ledger=None)
    for p in site.glob("reskontro.db*"):
        p.unlink()
    code, checks = doctor(site, "--no-sftp")
    assert code == 1 and checks["store"][0] is False and "does not exist yet" in checks["store"][1]
    assert not list(site.glob("reskontro.db*"))


def test_a_damaged_store_fails_quick_check(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    db = site / "reskontro.db"
    con = sqlite3.connect(db)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    page = con.execute("PRAGMA page_size").fetchone()[0]
    root = con.execute("SELECT rootpage FROM sqlite_master WHERE name = 'ix_entries_kid'").fetchone()[0]
    con.close()
    with db.open("r+b") as f:                   # an index page overwritten: the tables still read
        f.seek((root - 1) * page)
        f.write(b"\x0d" + b"\xff" * 100)
    code, checks = doctor(site, "--no-sftp")
    assert code == 1 and checks["quick_check"][0] is False, checks
    assert "restore it from a backup" in checks["quick_check"][1]


def test_an_old_schema_says_how_to_upgrade(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    con = sqlite3.connect(site / "reskontro.db")
    con.execute("DROP INDEX ix_entries_bank_ref")
    con.commit()
    con.close()
    code, checks = doctor(site, "--no-sftp")
    assert code == 1 and checks["schema"][0] is False
    assert "ix_entries_bank_ref" in checks["schema"][1] and "reskontro status" in checks["schema"][1]


def test_a_bad_config_is_the_one_line(tmp_path: Path) -> None:
    site = make_site(tmp_path, ledger=None)
    cfg = site / "reskontro.toml"
    cfg.write_text(cfg.read_text().replace('org_no = "923609016"', 'org_no = "123456789"'))
    code, checks = doctor(site)
    assert code == 1 and list(checks) == ["config"]
    assert "not a valid Norwegian organisation number" in checks["config"][1]
