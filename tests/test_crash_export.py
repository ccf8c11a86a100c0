"""Crash safety of `reskontro export`: killed (SIGKILL) at each step, then run again.

The export runs in a subprocess with RESKONTRO_FAULT=<point> (reskontro.testing.faults kills the
process there, as a power cut or an OOM kill would). Afterwards a normal export must complete
the work: every transferable entry reaches the receiver exactly once, no .part file is ever
sent or left behind, and sequence numbers still rise (gaps allowed).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from reskontro.exchange.remote import outbox_files, send
from reskontro.site import Site
from test_export import (DAY_ONE_ENTRIES, DAY_ONE_MATCHES, Lowell, cli, customer, day_one, flat,
                         import_records, invoice, make_site, match, outbox_xml, parse_file, payment,
                         status_json)
from test_journal_receipts import FakeSftp

FAULTS = ("after-reserve", "mid-render", "after-render", "after-check", "after-rename", "after-commit")
PART_LEFT = {"mid-render", "after-render", "after-check"}     # died with <FileId>.xml.part on disk
XML_LEFT = {"after-rename", "after-commit"}                   # died after the rename
ABANDONED = {"after-reserve"} | PART_LEFT                     # the next run must start that file over

# day two: a new customer with an invoice, a new invoice of C1, a second payment on I1 (M1 grows
# while the day-one file carrying M1 is in flight: P1b goes, M1 waits for the receipt)
DAY_TWO = [customer("C6", "Nora Ny"), invoice("I60", "C6", "60.00"), invoice("I10", "C1", "10.00"),
           payment("P1b", "C1", "-100.00"), match("M1", "I1", "P1", "P1b")]
TRANSFERABLE = set(DAY_ONE_ENTRIES) | {"I60", "I10", "P1b"}


def export_subprocess(site: Path, fault: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "RESKONTRO_FAULT"}
    if fault is not None:
        env["RESKONTRO_FAULT"] = fault
    return subprocess.run(
        [sys.executable, "-c", "from reskontro.cli import main; main()", "--site", str(site), "export"],
        env=env, capture_output=True, timeout=120)


def crashed_site(tmp_path: Path, fault: str) -> tuple[Path, str]:
    """Day one exported normally (in flight, no receipt); day two's export killed at `fault`."""
    site = make_site(tmp_path)
    import_records(site, day_one())
    cli(site, "export")
    import_records(site, DAY_TWO)
    proc = export_subprocess(site, fault)
    assert proc.returncode == -signal.SIGKILL, (proc.returncode, proc.stdout, proc.stderr)
    first = outbox_xml(site)[0].name
    return site, first


def assert_exactly_once(files: list[Path]) -> Lowell:
    """Feed every file to the receiver model in sequence order: all accepted, and every
    transferable entry in exactly one of them."""
    parsed = [parse_file(p) for p in files]
    sequences = [f.sequence for f in parsed]
    assert sequences == sorted(set(sequences)), f"sequences do not rise: {sequences}"
    seen = Counter(eid for f in parsed for eid in f.entries)
    assert [e for e, n in seen.items() if n > 1] == [], "an entry went in two files"
    assert set(seen) == TRANSFERABLE
    lowell = Lowell()
    for f in parsed:
        receipt = lowell.model.receive(f.path.read_bytes(), f.path.name)
        assert receipt.accepted, (f.path.name, receipt.errors)
    assert set(lowell.model.entries) == TRANSFERABLE
    assert {m: sorted(v) for m, v in lowell.model.matches.items()} == DAY_ONE_MATCHES
    return lowell


@pytest.mark.parametrize("fault", FAULTS)
def test_export_killed_then_run_again_sends_everything_exactly_once(tmp_path, fault):
    site, first = crashed_site(tmp_path, fault)
    outbox = site / "outbox"

    parts = sorted(p.name for p in outbox.glob("*.part"))
    assert len(parts) == (1 if fault in PART_LEFT else 0), parts
    assert all(p.endswith("_000002.xml.part") for p in parts), parts
    complete = [p.name for p in outbox_xml(site)]
    assert len(complete) == (2 if fault in XML_LEFT else 1)
    # a stray .part is never picked up for sending
    assert all(not p.name.endswith(".part") for p in outbox_files(outbox))
    assert [p.name for p in outbox_files(outbox)] == complete

    out = flat(cli(site, "export").output)
    if fault in ABANDONED:
        assert "abandoned (incomplete)" in out
    elif fault == "after-rename":
        assert "completed (the file was whole in the outbox)" in out
    else:
        assert "recovered" not in out
    assert list(outbox.glob("*.part")) == [], "a .part file was left behind"

    files = outbox_xml(site)
    assert_exactly_once(files)
    states = [(f["sequence"], f["state"]) for f in status_json(site)["files"]]
    if fault in ABANDONED:
        assert states == [(1, "written"), (2, "abandoned"), (3, "written")]   # a gap at 2
        assert [parse_file(p).sequence for p in files] == [1, 3]
    else:
        assert states == [(1, "written"), (2, "written"), (3, "written")]
        assert [parse_file(p).sequence for p in files] == [1, 2, 3]
        assert parse_file(files[-1]).entries == {}


@pytest.mark.parametrize("fault", ("mid-render", "after-check", "after-rename", "after-commit"))
def test_send_after_a_crash_uploads_only_complete_journalled_files(tmp_path, fault):
    site, first = crashed_site(tmp_path, fault)
    sftp = FakeSftp(tmp_path / "lowell" / "inbound")
    cfg = Site.open(site).config
    result = send(cfg, Site.open(site).db, client_factory=lambda: sftp)
    uploaded = sorted(p.name for p in sftp.inbound.iterdir())
    if fault == "after-commit":
        assert len(uploaded) == 2 and uploaded[0] == first
    else:
        # the .part, and a renamed file whose export never finished, stay where they are
        assert uploaded == [first]
    if fault == "after-rename":
        assert any("an export is completing it" in s for s in result.skipped)

    cli(site, "export")
    send(cfg, Site.open(site).db, client_factory=lambda: sftp)
    inbound = sorted(sftp.inbound.iterdir(), key=lambda p: int(p.stem.rsplit("_", 1)[1]))
    assert all(p.name.endswith(".xml") for p in inbound)
    assert_exactly_once(inbound)
    assert list((site / "outbox").glob("*.part")) == [] and outbox_xml(site) == []


def test_backlog_export_killed_then_run_again(tmp_path):
    site = make_site(tmp_path)
    import_records(site, day_one())
    argv = [sys.executable, "-c", "from reskontro.cli import main; main()", "--site", str(site),
            "export", "--backlog"]
    env = {k: v for k, v in os.environ.items() if k != "RESKONTRO_FAULT"}
    proc = subprocess.run(argv, env={**env, "RESKONTRO_FAULT": "after-render"}, capture_output=True,
                          timeout=120)
    assert proc.returncode == -signal.SIGKILL
    # done: 3, the backlog holds two entries (for a person)
    assert subprocess.run(argv, env=env, capture_output=True, timeout=120).returncode == 3
    files = outbox_xml(site)
    assert len(files) == 1 and list((site / "outbox").glob("*.part")) == []
    f = parse_file(files[0])
    assert f.sequence == 2 and f.header["Kind"] == "backlog"
    # M6 (I6, P6 and the opted-out write-off V6) sums to zero: settled, not in a backlog
    assert set(f.entries) == set(DAY_ONE_ENTRIES) - {"I6", "P6"}
    assert Lowell().model.receive(f.path.read_bytes(), f.path.name).accepted


def _helpers_of(pid: int, site: Path) -> list[str]:
    """Helper processes (check, decide) still running for the export `pid` on `site`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue          # ended while we looked
        if ("reskontro.transfer.check_worker" in cmd and str(site) in cmd) or \
                ("reskontro.transfer.decide_worker" in cmd and cmd.split()[-1] == str(pid)):
            found.append(cmd)
    return found


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="needs /proc to see the helper processes")
@pytest.mark.parametrize("fault", ("mid-decide", "after-reserve", "mid-render", "after-check"))
def test_backlog_with_helper_processes_killed_then_run_again(tmp_path, fault):
    """Both helper processes forced on (a tiny ledger): the export killed while they live
    leaves none running, and the next run sends everything exactly once."""
    from clirun import wait_for
    site = make_site(tmp_path)
    import_records(site, day_one())
    force = ("import reskontro.transfer.helpers as h; h.PARALLEL_DECIDE_FROM = 0; "
             "from reskontro.cli import main; main()")
    argv = [sys.executable, "-c", force, "--site", str(site), "export", "--backlog"]
    env = {k: v for k, v in os.environ.items() if k != "RESKONTRO_FAULT"}
    proc = subprocess.Popen(argv, env={**env, "RESKONTRO_FAULT": fault},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _out, err = proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGKILL, err
    wait_for(lambda: not _helpers_of(proc.pid, site), 30, "the helper processes to end")
    # done: 3, the backlog holds two entries (for a person)
    assert subprocess.run(argv, env=env, capture_output=True, timeout=120).returncode == 3
    files = outbox_xml(site)
    assert len(files) == 1 and list((site / "outbox").glob("*.part")) == []
    f = parse_file(files[0])
    assert set(f.entries) == set(DAY_ONE_ENTRIES) - {"I6", "P6"}
    assert Lowell().model.receive(f.path.read_bytes(), f.path.name).accepted
