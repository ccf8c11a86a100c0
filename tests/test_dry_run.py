"""`export --dry-run`, `send --dry-run`, `run --dry-run`: they say what would happen and change
nothing: the store (every table, dumped), the outbox, the inbox, the log folder and the remote
folders are byte for byte as before; no file, journal row or sequence number appears. What they
announce is then what the real command does.
"""
from __future__ import annotations

import re
import sqlite3
from datetime import datetime, timezone
from pathlib import Path

import pytest

from clirun import cli, flat
from reskontro.testing.loopback_sshd import LoopbackSshd
from reskontro.transfer.receipts import Receipt, render_receipt
from test_exchange import cremul_bytes, export as export_file, make_site, remote_files
from test_export import backlog_ledger, day_one, import_records, make_site as make_plain_site


@pytest.fixture(autouse=True)
def _wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "400")       # rich wraps at 80 columns without a terminal


def dump(site: Path) -> str:
    """Every table of the store, as SQL text (the store's files themselves may be checkpointed
    by any reader closing them; their content may not change)."""
    con = sqlite3.connect(site / "reskontro.db")
    try:
        return "\n".join(con.iterdump())
    finally:
        con.close()


def files(*folders: Path) -> dict[str, bytes]:
    out = {}
    for folder in folders:
        for p in sorted(folder.rglob("*")) if folder.exists() else []:
            if p.is_file() and not p.name.startswith("reskontro.db"):
                out[str(p)] = p.read_bytes()
            elif p.is_dir():
                out[str(p) + "/"] = b""
    return out


class Unchanged:
    """The store and the folders, before; `check()` compares them with now."""

    def __init__(self, site: Path, *remote: Path) -> None:
        self.site, self.remote = site, remote
        self.store, self.folders = dump(site), files(site, *remote)

    def check(self) -> None:
        assert dump(self.site) == self.store
        assert files(self.site, *self.remote) == self.folders


def would_write(output: str) -> tuple[str, int, int, int]:
    m = re.search(r"would write (\S+\.xml) \((?:daily|backlog)\): ([\d,]+) customers?, ([\d,]+) (?:entry|entries), "
                  r"([\d,]+) match(?:es)?", flat(output))
    assert m, output
    return m.group(1), *(int(x.replace(",", "")) for x in m.groups()[1:])


def wrote(output: str) -> tuple[str, int, int, int]:
    m = re.search(r"Wrote \S*/(\S+\.xml) \((?:daily|backlog)\): ([\d,]+) customers?, ([\d,]+) (?:entry|entries), "
                  r"([\d,]+) match(?:es)?", flat(output))
    assert m, output
    return m.group(1), *(int(x.replace(",", "")) for x in m.groups()[1:])


@pytest.mark.parametrize("kind", ["daily", "backlog"])
def test_export_dry_run_counts_what_export_writes_and_changes_nothing(tmp_path: Path, kind: str) -> None:
    site = make_plain_site(tmp_path)
    import_records(site, day_one() if kind == "daily" else backlog_ledger())
    args = ["--backlog"] if kind == "backlog" else []
    before = Unchanged(site)
    r = cli(site, "export", "--dry-run", *args)
    assert r.exit_code == 0, r.output
    assert "Nothing was written or reserved." in flat(r.output)
    before.check()
    again = cli(site, "export", "--dry-run", *args)           # the same answer: no number was taken
    assert would_write(again.output) == would_write(r.output)
    real = cli(site, "export", *args)
    assert real.exit_code in (0, 3), real.output     # 3: done, and entries are held tonight
    assert wrote(real.output) == would_write(r.output)
    plan = cli(site, "plan", "--json").output if kind == "daily" else None
    if plan is not None:                                       # the plan's numbers: all sent now
        assert '"transfer"' not in plan


def test_export_dry_run_after_a_file_counts_the_next_one(tmp_path: Path) -> None:
    site = make_plain_site(tmp_path)
    import_records(site, day_one())
    first = cli(site, "export")
    name, *_ = wrote(first.output)
    r = cli(site, "export", "--dry-run")
    nxt, c, e, m = would_write(r.output)
    assert nxt != name and nxt.endswith("_000002.xml") and (c, e, m) == (0, 0, 0)


def test_export_dry_run_refuses_a_damaged_store_as_export_would(tmp_path: Path) -> None:
    site = make_plain_site(tmp_path)
    import_records(site, day_one())
    db = site / "reskontro.db"
    con = sqlite3.connect(db)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    page = con.execute("PRAGMA page_size").fetchone()[0]
    root = con.execute("SELECT rootpage FROM sqlite_master WHERE name = 'ix_entries_kid'").fetchone()[0]
    con.close()
    with db.open("r+b") as f:
        f.seek((root - 1) * page)
        f.write(b"\x0d" + b"\xff" * 100)
    r = cli(site, "export", "--dry-run")
    assert r.exit_code == 1 and "the store is damaged" in flat(r.stderr)
    assert not list((site / "outbox").glob("*.xml"))


@pytest.mark.sshd
def test_send_dry_run_lists_what_send_does_and_changes_nothing(tmp_path: Path, sshd: LoopbackSshd) -> None:
    site = make_site(tmp_path, sshd)
    ours = export_file(site)
    tampered = export_file(site)
    tampered.write_bytes(tampered.read_bytes().replace(b"</LedgerTransfer>", b"<!-- x --></LedgerTransfer>"))
    (site / "outbox" / "half.xml").write_bytes(b"<LedgerTransfer")       # not complete: left alone
    before = Unchanged(site, sshd.remote_root)
    r = cli(site, "send", "--dry-run")
    assert r.exit_code == 1, r.output                        # the changed file would be refused
    out = flat(r.output)
    assert f"would send {ours.name} ({ours.stat().st_size} bytes)" in out
    assert f"would refuse {tampered.name}: not the bytes that passed the pre-send check" in out
    assert "would leave half.xml: not complete yet" in out
    assert "Dry run: nothing was sent, moved or journalled." in out
    before.check()
    assert remote_files(sshd.inbound) == {}

    real = cli(site, "send")
    assert real.exit_code == 1
    assert remote_files(sshd.inbound) == {ours.name: (site / "outbox" / "sent" / ours.name).read_bytes()}
    assert f"refused {tampered.name}" in flat(real.output)


@pytest.mark.sshd
def test_run_dry_run_shows_each_step_and_changes_nothing(tmp_path: Path, sshd: LoopbackSshd) -> None:
    site = make_site(tmp_path, sshd)
    sent = export_file(site)
    assert cli(site, "send").exit_code == 0
    receipt = render_receipt(Receipt(sent.stem, "accepted", datetime.now(timezone.utc).replace(microsecond=0)))
    (sshd.outbound / f"{sent.stem}.receipt.xml").write_bytes(receipt)
    (sshd.outbound / "CREMUL0001.DAT").write_bytes(cremul_bytes("1001", amount="1000.00"))
    (site / "inbox" / "CREMUL0002.DAT").write_bytes(cremul_bytes("1002", amount="100.00"))
    for p in (site / "var").glob("*.log"):
        p.unlink()
    before = Unchanged(site, sshd.remote_root)
    r = cli(site, "run", "--dry-run")
    assert r.exit_code == 0, r.output
    out = flat(r.output)
    steps = [line.split(":")[0].strip() for line in r.output.splitlines() if re.match(r"\s*\w+: (ok|FAILED)", line)]
    assert steps == ["store", "fetch", "inbox", "post", "outbox", "export", "send"]
    assert (f"would fetch 2 files from outbound/: CREMUL0001.DAT ({len(cremul_bytes('1001'))} bytes), "
            f"{sent.stem}.receipt.xml") in out
    assert "would read 1 inbox files: CREMUL0002.DAT (payment file)" in out
    assert re.search(r"would write LT_123456_\d{8}_000002\.xml \(daily\): 0 customers, 0 entries, 0 matches", out)
    assert "would send 1: LT_123456_" in out and "(tonight's file)" in out
    assert "Dry run: nothing was fetched, booked, written or sent." in out
    before.check()
    assert not list((site / "var").glob("*.log"))             # not even a log line

    real = cli(site, "run")
    assert real.exit_code == 3, real.output     # done; the overpayment is a person's
    assert sorted(p.name for p in (site / "inbox" / "done").iterdir()) == sorted(
        ["CREMUL0001.DAT", "CREMUL0002.DAT", f"{sent.stem}.receipt.xml"])
    assert len(remote_files(sshd.inbound)) == 2


@pytest.mark.sshd
def test_run_dry_run_says_which_step_would_fail(tmp_path: Path, sshd: LoopbackSshd) -> None:
    site = make_site(tmp_path, sshd)
    written = export_file(site)
    written.unlink()                                          # a written file lost from the outbox
    (sshd.outbound / "bad\x07name.DAT").write_bytes(b"x")
    before = Unchanged(site, sshd.remote_root)
    r = cli(site, "run", "--dry-run")
    assert r.exit_code == 1
    out = flat(r.output)
    assert re.search(r"fetch: FAILED .*would leave on the server 'bad\\x07name.DAT': contains a control", out), out
    assert f"outbox: FAILED {written.name} disappeared from the outbox before it was sent: would be abandoned" in out
    assert "Some steps would fail." in out
    before.check()
