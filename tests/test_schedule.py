"""Catch-up scheduling (`run --scheduled`, `serve`), the run history (`status`), holds new
tonight, exit status 3, and the log's one line per event (issue 12, points 2, 3, 7, 11).

The schedule is driven with a fixed clock (services.run(..., clock=)), across the DST changes
of 2026 in Europe/Oslo (29 March, 25 October): 18:00 Oslo is 16:00 UTC in summer and 17:00
UTC in winter, and the host's own clock zone never matters.
"""
from __future__ import annotations

import json
import logging
import os
import re
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from reskontro import services
from reskontro.exchange.cycle import Step, schedule, serve
from reskontro.files.lock import LockedError, run_lock
from reskontro.ledger import runs
from reskontro.site import Site
from test_export import cli, customer, flat, import_records, invoice, make_site, valid_kid

OSLO = ZoneInfo("Europe/Oslo")


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=timezone.utc)


@pytest.fixture(autouse=True)
def _clean_logging() -> Iterator[None]:
    """`run` adds a log file handler to the 'reskontro' logger of this process: remove it again."""
    logger = logging.getLogger("reskontro")
    before, level = list(logger.handlers), logger.level
    yield
    for h in logger.handlers[:]:
        if h not in before:
            logger.removeHandler(h)
            h.close()
    logger.setLevel(level)


@pytest.fixture
def site(tmp_path: Path) -> Path:
    site = make_site(tmp_path)
    import_records(site, [customer("C1"), invoice("I1", "C1", "100.00", kid=valid_kid("000000001"))])
    return site


def scheduled(site: Path, at: datetime):
    """`run --scheduled --no-sftp` with the clock at `at`."""
    return services.run(Site.open(site), sftp=False, scheduled=True, clock=lambda: at)


def history(site: Path) -> list[runs.RunRecord]:
    with Site.open(site).db.connect() as conn:
        return runs.last(conn, 50)


# --- the schedule ---------------------------------------------------------------------------

@pytest.mark.parametrize("day, before, at", [
    # spring forward (Sunday 29 March 2026): 18:00 Oslo is 16:00 UTC from that day
    ((2026, 3, 28), utc(2026, 3, 28, 16, 45), utc(2026, 3, 28, 17, 0)),     # Saturday, winter time
    ((2026, 3, 29), utc(2026, 3, 29, 15, 45), utc(2026, 3, 29, 16, 0)),     # Sunday, summer time
    # fall back (Sunday 25 October 2026): 18:00 Oslo is 17:00 UTC from that day
    ((2026, 10, 24), utc(2026, 10, 24, 15, 45), utc(2026, 10, 24, 16, 0)),  # Saturday, summer time
    ((2026, 10, 25), utc(2026, 10, 25, 16, 45), utc(2026, 10, 25, 17, 0)),  # Sunday, winter time
])
def test_scheduled_runs_once_a_day_at_18_oslo_across_dst(site: Path, day, before, at) -> None:
    r = scheduled(site, before)                        # 17:45 Oslo: not yet
    assert r.skipped is not None and r.steps == [] and history(site) == []
    assert "not before" in r.skipped and "T18:00" in r.skipped
    r = scheduled(site, at)                            # 18:00 Oslo, to the minute
    assert r.skipped is None and r.result == "ok", r.steps
    assert [s.name for s in r.steps] == ["inbox", "post", "outbox", "export"]
    (rec,) = history(site)
    assert rec.started_at == at and rec.kind == "scheduled" and rec.result == "ok"
    assert rec.started_at.astimezone(OSLO).strftime("%Y-%m-%d %H:%M") == "%04d-%02d-%02d 18:00" % day
    for later in (at.replace(minute=15), at.replace(hour=21, minute=45)):     # the later ticks
        r = scheduled(site, later)
        assert r.skipped is not None and "today's cycle completed (run 1)" in r.skipped
    assert len(history(site)) == 1


def test_the_next_tick_after_a_machine_was_down_at_18_runs_the_cycle(site: Path) -> None:
    # down from 17:00 to 22:10 Oslo (winter): the 22:15 tick catches up
    assert scheduled(site, datetime(2026, 11, 30, 22, 15, tzinfo=OSLO)).result == "ok"
    assert scheduled(site, datetime(2026, 11, 30, 22, 30, tzinfo=OSLO)).skipped is not None
    # after midnight it is a new day, before its send time: tonight's cycle carries everything
    assert scheduled(site, datetime(2026, 12, 1, 0, 15, tzinfo=OSLO)).skipped is not None
    assert scheduled(site, datetime(2026, 12, 1, 18, 0, tzinfo=OSLO)).result == "ok"
    assert [r.started_at.astimezone(OSLO).hour for r in history(site)] == [18, 22]


def test_a_killed_cycle_does_not_count_as_done_and_the_next_tick_runs_again(site: Path) -> None:
    s = Site.open(site)
    runs.start(s.db, "scheduled", False, utc(2026, 11, 30, 17, 0))     # killed: never finished
    plan = schedule(s.config, s.db, utc(2026, 11, 30, 17, 15), sftp=False)
    assert plan.due and plan.completed is None and plan.unfinished is not None
    assert scheduled(site, utc(2026, 11, 30, 17, 15)).result == "ok"
    assert [r.result for r in history(site)] == ["ok", "running"]


def test_a_run_without_sftp_is_not_tonights_full_cycle(site: Path) -> None:
    s = Site.open(site)
    at = utc(2026, 11, 30, 17, 30)
    assert scheduled(site, at).result == "ok"                           # --no-sftp
    assert not schedule(s.config, s.db, at, sftp=False).due
    assert schedule(s.config, s.db, at, sftp=True).due                  # fetch and send still due


def test_the_schedule_never_depends_on_the_hosts_clock_zone(site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = Site.open(site)
    now = utc(2026, 3, 29, 16, 0)
    seen = []
    for zone in ("UTC", "Europe/Oslo", "America/New_York", "Asia/Tokyo"):
        monkeypatch.setenv("TZ", zone)
        time.tzset()
        plan = schedule(s.config, s.db, now)
        seen.append((plan.due, plan.today, plan.next_run))
    monkeypatch.delenv("TZ")
    time.tzset()
    assert seen == [(True, now, now)] * 4


def test_next_run_is_tomorrow_once_tonights_cycle_is_done(site: Path) -> None:
    s = Site.open(site)
    before = schedule(s.config, s.db, utc(2026, 3, 29, 10, 0))
    assert not before.due and before.next_run == utc(2026, 3, 29, 16, 0)
    s.db.dispose()
    cli(site, "run", "--no-sftp")                # not at the clock of this test: a real run
    at = utc(2026, 3, 29, 16, 5)
    assert scheduled(site, at).result == "ok"
    after = schedule(s.config, s.db, at, sftp=False)
    assert not after.due and after.next_run == utc(2026, 3, 30, 16, 0)


def test_scheduled_tick_steps_aside_while_tonights_cycle_runs(site: Path) -> None:
    s = Site.open(site)
    at = utc(2026, 11, 30, 17, 20)
    with run_lock(site / "var" / "reskontro.lock"):
        with pytest.raises(LockedError):         # someone exporting by hand: say so
            scheduled(site, at)
        runs.start(s.db, "scheduled", False, utc(2026, 11, 30, 17, 0))   # the 18:00 cycle, at work
        r = scheduled(site, at)
        assert r.skipped is not None and "is running" in r.skipped


def test_cli_run_scheduled_says_nothing_when_not_due(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    cfg = site / "reskontro.toml"
    cfg.write_text(cfg.read_text(encoding="utf-8").replace('send_time = "18:00"', 'send_time = "00:00"'),
                   encoding="utf-8")
    first = cli(site, "run", "--scheduled", "--no-sftp")          # past 00:00 always: runs
    assert "export: ok" in flat(first.output) and "All went well." in first.output
    again = cli(site, "run", "--scheduled", "--no-sftp")          # done today: exit 0, silent
    assert again.output == ""
    log = (site / "var" / "reskontro.log").read_text(encoding="utf-8")
    assert log.count("cycle started") == 1


def test_cron_line_is_every_15_minutes_with_the_installed_command(tmp_path: Path) -> None:
    line = services.cron_line(tmp_path / "my site%1")
    assert line.startswith("*/15 * * * * ") and line.endswith(" run --scheduled")
    beside = Path(sys.executable).parent / "reskontro"
    assert str(beside) in line or "-m reskontro.cli" in line
    assert f"--site '{tmp_path}/my site\\%1'" in line                # quoted; % escaped for cron
    r = cli(tmp_path, "init", str(tmp_path / "new"))
    assert services.cron_line(tmp_path / "new") in r.output.replace("\n", "")


# --- serve ----------------------------------------------------------------------------------

def test_serve_runs_an_overdue_cycle_at_once_then_waits_for_tomorrow(site: Path) -> None:
    from reskontro.files.logfile import setup_site_logging
    s = Site.open(site)
    setup_site_logging(s.config)
    stop = threading.Event()
    steps: list[Step] = []
    now = datetime(2026, 11, 29, 20, 0, tzinfo=OSLO)          # started after 18:00: overdue
    t = threading.Thread(target=serve, args=(s.config, s.db, s.rules, stop),
                         kwargs={"sftp": False, "watch_inbox": False, "on_step": steps.append,
                                 "clock": lambda: now}, daemon=True)
    t.start()
    try:
        deadline = time.monotonic() + 30
        while len(history(site)) < 1 or history(site)[0].finished_at is None:
            assert time.monotonic() < deadline, "serve did not run the overdue cycle"
            time.sleep(0.02)
    finally:
        stop.set()
        t.join(timeout=10)
    assert not t.is_alive()
    (rec,) = history(site)
    assert rec.kind == "serve" and rec.result == "ok" and len(steps) == 4
    log = (site / "var" / "reskontro.log").read_text(encoding="utf-8")
    assert "cycle started (serve, no SFTP)" in log and "cycle ended (run 1): ok" in log
    assert log.index("cycle ended") < log.index("next run at 2026-11-30T18:00:00+01:00")


# --- what needs a person: exit 3, the history, status ---------------------------------------

def test_a_hold_new_tonight_needs_a_person_once(site: Path) -> None:
    import_records(site, [customer("C2", type=""), invoice("I2", "C2", "50.00")])   # no type: held
    r = cli(site, "run", "--no-sftp", code=3)
    out = flat(r.output)
    assert "needs a person 1 entry held new tonight by rule" in out and "(I2)" in out
    assert "Done, but a person is needed (1)" in out
    assert "1 held new tonight" in out                                # in the export step's line
    again = cli(site, "run", "--no-sftp")                             # told once: exit 0
    assert "needs a person" not in again.output
    import_records(site, [invoice("I3", "C2", "75.00")])              # another one: told
    r = cli(site, "run", "--no-sftp", code=3)
    assert "(I3)" in flat(r.output) and "(I2" not in flat(r.output)
    import_records(site, [customer("C2", type="private")])            # fixed: released, goes
    cli(site, "run", "--no-sftp")
    with Site.open(site).db.connect() as conn:
        from reskontro.ledger import schema as s
        assert conn.execute(s.held_items.select()).all() == []


def test_status_shows_the_last_run_and_the_next(site: Path, tmp_path: Path) -> None:
    r = cli(site, "status", "--json")
    data = json.loads(r.stdout)
    assert set(data) == {"ok", "exit_status", "files", "items", "runs", "rules"} and data["runs"]["last"] is None
    (site / "inbox" / "notes.txt").write_text("not a bank file\n", encoding="utf-8")
    cli(site, "run", "--no-sftp", code=3)
    data = json.loads(cli(site, "status", "--json").stdout)
    last = data["runs"]["last"]
    assert last["result"] == "needs_person" and last["kind"] == "run" and last["sftp"] is False
    assert [s["name"] for s in last["steps"]] == ["inbox", "post", "outbox", "export"]
    assert last["files"]["inbox"] == [{"name": "notes.txt", "kind": "failed"}]
    assert last["files"]["exported"] == data["files"][0]["file_id"]
    assert last["counts"]["inbox_failed"] == 1 and last["counts"]["entries_exported"] == 1
    (text,) = last["needs_person"]
    assert "notes.txt: not a known payment file format" in text
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+0[12]:00", last["started_at"])
    datetime.fromisoformat(data["runs"]["next_scheduled"])
    plain = flat(cli(site, "status").output)
    assert "Last run: 1 (run)" in plain and "done, but a person is needed" in plain
    assert "Next scheduled run:" in plain


def test_a_failed_step_exits_1_and_is_recorded(site: Path) -> None:
    inbox = site / "inbox"
    inbox.rmdir()
    inbox.write_text("not a folder\n", encoding="utf-8")
    r = cli(site, "run", "--no-sftp", code=1)
    assert "inbox: FAILED" in flat(r.output)
    (rec,) = history(site)
    assert rec.result == "failed" and rec.finished_at is not None
    assert [s["ok"] for s in rec.steps] == [False, True, True, True]


# --- the log: one line per event, ISO time with zone, json, tracebacks at debug ------------

LINE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d (DEBUG|INFO|WARNING|ERROR) reskontro[\w.]*: .+")


def test_the_log_is_one_line_per_event_with_iso_time_and_zone(site: Path) -> None:
    inbox = site / "inbox"
    inbox.rmdir()
    inbox.write_text("not a folder\n", encoding="utf-8")             # a step fails: a traceback
    cli(site, "run", "--no-sftp", code=1)
    lines = (site / "var" / "reskontro.log").read_text(encoding="utf-8").splitlines()
    assert lines and all(LINE.fullmatch(ln) for ln in lines), lines
    (error,) = [ln for ln in lines if " ERROR " in ln and "inbox: FAILED" in ln]
    assert "Traceback" not in error                                    # errors stay one line
    (trace,) = [ln for ln in lines if "Traceback" in ln]
    assert " DEBUG reskontro.run: inbox failed" in trace and "\\n" in trace
    offset = datetime.now(OSLO).strftime("%z")
    assert lines[0][19:].startswith(f"{offset[:3]}:{offset[3:]} INFO reskontro.run: cycle started")


def test_the_log_as_json_lines(site: Path) -> None:
    cfg = site / "reskontro.toml"
    cfg.write_text(cfg.read_text(encoding="utf-8") + '\n[log]\nformat = "json"\n', encoding="utf-8")
    (site / "inbox" / "junk.dat").write_text("junk\n", encoding="utf-8")
    cli(site, "run", "--no-sftp", code=3)
    records = [json.loads(ln) for ln in (site / "var" / "reskontro.log").read_text(encoding="utf-8").splitlines()]
    assert records and all(set(r) >= {"time", "level", "logger", "message"} for r in records)
    assert records[0]["message"].startswith("cycle started") and records[-1]["message"].startswith("cycle ended")
    assert any(r["logger"] == "reskontro.watch" and r["message"].startswith("junk.dat (failed)") for r in records)
    assert datetime.fromisoformat(records[0]["time"]).utcoffset() is not None


def test_log_settings_are_checked(tmp_path: Path) -> None:
    from reskontro.config import ConfigError, parse_config
    good = {"creditor": {"sender_id": "A1", "org_no": "923609016"}}
    assert parse_config({**good, "log": {"format": "json", "level": "debug"}}, tmp_path).log.format == "json"
    for bad, key in (({"format": "xml"}, "log.format"), ({"level": "trace"}, "log.level"),
                     ({"file": "x.log"}, "log.file")):
        with pytest.raises(ConfigError, match=re.escape(key)):
            parse_config({**good, "log": bad}, tmp_path)


def test_debug_level_keeps_debug_lines(site: Path) -> None:
    from reskontro.files.logfile import setup_logging
    log_file = site / "var" / "x.log"
    setup_logging(log_file, level="info")
    logging.getLogger("reskontro.test").debug("quiet")
    logging.getLogger("reskontro.test").info("said")
    setup_logging(log_file, level="debug", fmt="json")
    logging.getLogger("reskontro.test").debug("loud")
    lines = log_file.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 2 and "said" in lines[0] and json.loads(lines[1])["message"] == "loud"
    assert os.stat(log_file).st_mode & 0o777 == 0o600
