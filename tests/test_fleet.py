"""The fleet on a real PostgreSQL (tests/pg_server.py): the registry of creditors, validated as
reskontro.toml is; isolation enforced by PostgreSQL (a schema and a role per creditor); the
nightly schedule per creditor's zone (DST) queued once; a creditor's job running `run`'s cycle."""
from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import ProgrammingError

from reskontro import services
from reskontro.config import ConfigError
from reskontro.fleet import registry
from reskontro.rules.rulefile import RuleFileError

LEDGER = [
    {"record": "customer", "id": "C1", "name": "Kari Nordmann", "type": "private",
     "address1": "Storgata 1", "post_code": "0150", "city": "OSLO", "country": "NO"},
    {"record": "entry", "id": "I1", "customer_id": "C1", "type": "invoice", "document_no": "F1",
     "document_date": "2026-11-01", "due_date": "2026-11-15", "amount": "1234.50", "status": "invoiced"},
]


@pytest.fixture
def fleet(pg_url: str, tmp_path: Path) -> str:
    services.fleet_init(pg_url, tmp_path / "fleet")
    return pg_url


def add(url: str, cid: str, sender: str, **kw):
    return services.creditor_add(url, creditor_id=cid, sender_id=sender, org_no="923609016", **kw)


def ledger_file(tmp_path: Path, name: str = "ledger.jsonl", prefix: str = "") -> Path:
    p = tmp_path / name
    rows = [{**r, **({"id": prefix + r["id"]} if r["record"] != "customer" else {})} for r in LEDGER]
    p.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return p


def test_registry_validates_like_the_site_config_and_lists(fleet: str, tmp_path: Path) -> None:
    a = add(fleet, "acme", "1001", timezone="America/New_York", send_time="17:30", sftp_port=2222)
    assert (a.id, a.timezone, a.send_time, a.sftp_port, a.own_rules) == ("acme", "America/New_York", "17:30", 2222, False)
    with pytest.raises(ConfigError, match="schedule.timezone"):
        add(fleet, "bad", "1002", timezone="Mars/Olympus")
    with pytest.raises(ConfigError, match="creditor.org_no"):
        services.creditor_add(fleet, creditor_id="bad", sender_id="1002", org_no="123456789")
    with pytest.raises(ConfigError, match="sftp.port"):
        add(fleet, "bad", "1002", sftp_port=70000)
    with pytest.raises(ConfigError, match="schedule.send_time"):
        add(fleet, "bad", "1002", send_time="25:00")
    with pytest.raises(registry.FleetError, match="lower-case"):
        add(fleet, "Bad-Id", "1002")
    with pytest.raises(registry.FleetError, match="another creditor"):
        add(fleet, "other", "1001")
    broken = tmp_path / "broken.yaml"
    broken.write_text("rules:\n  - id: x\n    when: {nonsense_field: 1}\n    decision: maybe\n", encoding="utf-8")
    with pytest.raises(RuleFileError):
        add(fleet, "bad", "1002", rule_file=broken)
    assert [c.id for c in services.creditors(fleet)] == ["acme"]      # nothing refused was registered
    own = Path(services.creditor_site(fleet, "acme").config.rules_dir)
    b = add(fleet, "beta", "1003", rule_file=own / "transfer.yaml")
    assert b.own_rules
    site_b = services.creditor_site(fleet, "beta")
    assert site_b.config.rule_file.is_file() and "creditors/beta/rules" in str(site_b.config.rule_file)
    assert services.creditor_disable(fleet, "acme").disabled
    with pytest.raises(registry.FleetError, match="disabled"):
        services.creditor_site(fleet, "acme")


def test_a_creditors_job_cannot_read_or_change_anothers_rows(fleet: str, tmp_path: Path) -> None:
    add(fleet, "a", "2001")
    add(fleet, "b", "2002")
    site_a, site_b = services.creditor_site(fleet, "a"), services.creditor_site(fleet, "b")
    services.import_ledger(site_b, [ledger_file(tmp_path)])
    services.import_ledger(site_a, [ledger_file(tmp_path, "a.jsonl", prefix="A")])
    with site_a.db.connect() as conn:      # A's own rows, through the unchanged single-site tables
        assert conn.execute(text("SELECT id FROM entries")).scalars().all() == ["AI1"]
        assert conn.execute(text("SELECT current_user")).scalar() == services.creditor(fleet, "a").role_name
    for sql in ("SELECT * FROM c_b.entries", "INSERT INTO c_b.meta (key, value) VALUES ('x', 'y')",
                "UPDATE c_b.entries SET amount_ore = 0", "SELECT * FROM fleet.creditors",
                "SELECT * FROM public.procrastinate_jobs"):
        with site_a.db.connect() as conn:
            with pytest.raises(ProgrammingError, match="permission denied"):
                conn.execute(text(sql))
    with site_a.db.connect() as conn:      # RESET ROLE goes back to the role the connection started as: A
        conn.execute(text("RESET ROLE"))
        with pytest.raises(ProgrammingError, match="permission denied"):
            conn.execute(text("SELECT * FROM c_b.entries"))
    admin = create_engine(fleet)
    with admin.connect() as conn:          # B's rows are all there, untouched
        assert conn.execute(text("SELECT id, amount_ore FROM c_b.entries")).all() == [("I1", 123450)]
    admin.dispose()
    site_a.db.dispose()
    site_b.db.dispose()


@pytest.mark.parametrize("now_utc, due", [
    # Oslo 18:00 is 17:00 UTC in winter, 16:00 UTC in summer; New York 17:30 is 22:30 / 21:30 UTC
    (datetime(2026, 1, 15, 16, 59, tzinfo=timezone.utc), {"night"}),
    (datetime(2026, 1, 15, 17, 0, tzinfo=timezone.utc), {"oslo", "night"}),
    (datetime(2026, 7, 15, 15, 59, tzinfo=timezone.utc), {"night"}),
    (datetime(2026, 7, 15, 16, 0, tzinfo=timezone.utc), {"oslo", "night"}),
    (datetime(2026, 7, 15, 21, 30, tzinfo=timezone.utc), {"oslo", "nyc", "night"}),
    (datetime(2026, 1, 15, 22, 29, tzinfo=timezone.utc), {"oslo", "night"}),
    # past local midnight in Oslo (the 16th there, nothing due yet), still the 15th in New York
    (datetime(2026, 1, 15, 23, 30, tzinfo=timezone.utc), {"nyc"}),
    # spring forward in Oslo (29 March 2026): 02:30 does not exist; the send time is the instant
    # after the gap, 03:30 CEST = 01:30 UTC (New York: 21:29 on the 28th, past its 17:30)
    (datetime(2026, 3, 29, 1, 29, tzinfo=timezone.utc), {"nyc"}),
    (datetime(2026, 3, 29, 1, 30, tzinfo=timezone.utc), {"night", "nyc"}),
])
def test_the_schedule_is_each_creditors_own_local_time(fleet: str, now_utc: datetime, due: set) -> None:
    add(fleet, "oslo", "3001")
    add(fleet, "nyc", "3002", timezone="America/New_York", send_time="17:30")
    add(fleet, "night", "3003", send_time="02:30")
    f = registry.open_fleet(fleet)
    got = {(c.id, d.isoformat()) for c, d in registry.due_nightly(f, now_utc, set())}
    local = {c: now_utc.astimezone(ZoneInfo("America/New_York" if c == "nyc" else "Europe/Oslo")).date().isoformat()
             for c in due}
    assert got == {(c, local[c]) for c in due}
    # queued already: not due again
    assert registry.due_nightly(f, now_utc, got) == []
    f.dispose()


def test_schedulers_running_at_once_queue_each_creditors_night_once(fleet: str) -> None:
    from reskontro.worker import enqueue_due
    for i in range(5):
        add(fleet, f"c{i}", f"400{i}")
    services.creditor_disable(fleet, "c4")
    now = datetime(2026, 1, 15, 17, 5, tzinfo=timezone.utc)         # 18:05 in Oslo
    with ThreadPoolExecutor(4) as pool:
        counts = list(pool.map(lambda _: enqueue_due(fleet, now), range(4)))
    assert sum(counts) == 4                                          # the disabled one is not queued
    assert enqueue_due(fleet, now) == 0                              # the next tick: nothing new
    admin = create_engine(fleet)
    with admin.connect() as conn:
        rows = conn.execute(text("SELECT args->>'creditor', args->>'local_date', lock, queueing_lock "
                                 "FROM procrastinate_jobs WHERE task_name = 'nightly' ORDER BY 1")).all()
    admin.dispose()
    assert rows == [(f"c{i}", "2026-01-15", f"creditor:c{i}", f"nightly:c{i}:2026-01-15") for i in range(4)]


def test_the_queue_finds_a_locks_jobs_by_index_and_is_analysed_once_a_night_is_queued(fleet: str) -> None:
    """procrastinate checks every waiting job's lock before it takes one; its own index has the
    lock second, so a fetch grew with the jobs waiting (17 ms a job with 5,000 queued). The
    fleet adds an index by lock (made again for a fleet from before it), and the scheduler
    refreshes the queue's statistics when it queued a night (planned from yesterday's, none
    waiting, the check ran for every waiting job)."""
    from reskontro.fleet.registry import open_fleet
    from reskontro.worker import enqueue_due
    admin = create_engine(fleet)

    def index() -> str | None:
        with admin.connect() as conn:
            return conn.execute(text("SELECT indexdef FROM pg_indexes WHERE indexname = 'reskontro_jobs_lock_idx'")).scalar()

    def analysed() -> int:
        with admin.connect() as conn:
            conn.execute(text("SELECT pg_stat_force_next_flush()"))
            return conn.execute(text("SELECT analyze_count FROM pg_stat_user_tables "
                                     "WHERE relname = 'procrastinate_jobs'")).scalar()
    assert "(lock)" in index() and "todo" in index()
    with admin.begin() as conn:
        conn.execute(text("DROP INDEX reskontro_jobs_lock_idx"))
    open_fleet(fleet).dispose()
    assert "(lock)" in index()
    before = analysed()
    add(fleet, "a", "4001")
    assert enqueue_due(fleet, datetime(2026, 1, 15, 17, 5, tzinfo=timezone.utc)) == 1
    assert analysed() == before + 1
    admin.dispose()


def test_jobs_that_succeeded_long_ago_are_pruned_and_failed_ones_kept(fleet: str) -> None:
    """Every creditor adds a job a night; the daily prune keeps the queue's tables to about a
    month of them, and keeps a failed job for a person whatever its age."""
    import asyncio

    from reskontro.worker import fleet_app, prune_old_jobs
    admin = create_engine(fleet)
    with admin.begin() as conn:
        for i, (status, age) in enumerate([("succeeded", 40), ("succeeded", 2), ("failed", 40), ("todo", 40)]):
            job = conn.execute(text(         # queued, then run to its status, as a worker does
                "INSERT INTO procrastinate_jobs (queue_name, task_name, lock, args) "
                "VALUES ('default', 'nightly', :lock, CAST(:args AS jsonb)) RETURNING id"),
                {"lock": f"creditor:c{i}", "args": f'{{"creditor": "c{i}", "local_date": "x"}}'}).scalar()
            if status != "todo":
                conn.execute(text("UPDATE procrastinate_jobs SET status = 'doing' WHERE id = :j"), {"j": job})
                conn.execute(text("UPDATE procrastinate_jobs SET status = CAST(:s AS procrastinate_job_status) "
                                  "WHERE id = :j"), {"s": status, "j": job})
            conn.execute(text("UPDATE procrastinate_events SET at = now() - make_interval(days => :d) "
                              "WHERE job_id = :j"), {"d": age, "j": job})

    async def go(app) -> None:
        async with app.open_async():
            await prune_old_jobs(app)
    with fleet_app(fleet) as app:
        asyncio.run(go(app))
    with admin.connect() as conn:
        left = conn.execute(text("SELECT args->>'creditor', status::text FROM procrastinate_jobs ORDER BY 1")).all()
    admin.dispose()
    assert left == [("c1", "succeeded"), ("c2", "failed"), ("c3", "todo")]


def test_a_creditors_nightly_job_is_runs_cycle_once_per_day(fleet: str, tmp_path: Path) -> None:
    add(fleet, "a", "5001")
    site = services.creditor_site(fleet, "a")
    services.import_ledger(site, [ledger_file(tmp_path)])
    now = datetime.now(ZoneInfo("Europe/Oslo"))
    # the night whose send time (18:00) has passed, as the scheduler queues it: before 18:00
    # that is yesterday's (the job of yesterday runs, or is retried, after midnight)
    today = now.date() if now.hour >= 18 else now.date() - timedelta(days=1)
    first = services.nightly(site, today, sftp=False)
    assert first.result in ("ok", "needs_person") and first.files["exported"]
    assert len(list(site.config.outbox.glob("*.xml"))) == 1
    again = services.nightly(site, today, sftp=False)               # a retried job: the day is done
    assert again.skipped and "completed" in again.skipped
    assert len(list(site.config.outbox.glob("*.xml"))) == 1
    assert services.run_history(site)[0].kind == "fleet"
    st = {s.id: s for s in services.fleet_status(fleet)}
    assert st["a"].result == first.result and st["a"].awaiting_receipt == 1
    site.db.dispose()


def test_fleet_status_puts_who_needs_a_person_first(fleet: str, tmp_path: Path) -> None:
    add(fleet, "aaa", "6001")
    add(fleet, "zzz", "6002")
    site_z = services.creditor_site(fleet, "zzz")
    from reskontro.ledger import runs
    started = datetime.now(timezone.utc)
    rid = runs.start(site_z.db, "fleet", True, started)
    runs.finish(site_z.db, rid, started, "failed", [{"name": "send", "ok": False, "summary": "x", "attention": []}],
                ["look at it"], {}, {})
    st = services.fleet_status(fleet)
    assert [s.id for s in st] == ["zzz", "aaa"]
    assert (st[0].result, st[0].attention, st[0].needs_person) == ("failed", True, ["look at it"])
    assert (st[1].result, st[1].attention) == ("never", False)
    site_z.db.dispose()



def test_only_an_unreachable_server_is_retried_and_with_backoff() -> None:
    from procrastinate.jobs import Job

    from reskontro.worker import RETRY, CycleLater

    def decision(exc: Exception, attempts: int):
        job = Job(id=1, queue="default", lock="creditor:a", queueing_lock=None, task_name="nightly",
                  attempts=attempts)
        return RETRY.get_retry_decision(exception=exc, job=job)

    waits = []
    for n in range(8):
        d = decision(CycleLater("unreachable"), n)
        waits.append((d.retry_at - datetime.now(timezone.utc)).total_seconds())
    assert all(b > a for a, b in zip(waits, waits[1:])) and 15 < waits[0] < 30 and 200 < waits[-1] < 300
    assert decision(CycleLater("unreachable"), 8) is None             # given up: the job fails, fleet status shows it
    assert decision(RuntimeError("a bug"), 0) is None                 # anything else is not retried


def test_a_cycle_that_could_not_reach_the_server_is_retried_later_and_then_completes(
        fleet: str, tmp_path: Path) -> None:
    """The nightly job whose cycle ends with exit status 75 (only the server unreachable: here
    a closed port on 127.0.0.1) is queued again by procrastinate for later, with backoff; its
    retry runs the cycle again (a failed day is not a completed one) and succeeds."""
    import asyncio

    from reskontro.adapters.sftp import SftpClient, SftpSettings
    from reskontro.testing.loopback_sshd import free_port
    from reskontro.worker import enqueue_due, fleet_app
    add(fleet, "a", "8001", send_time="00:00")
    site = services.creditor_site(fleet, "a")
    services.import_ledger(site, [ledger_file(tmp_path)])
    closed = free_port()                     # nothing listens there: connection refused
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    key = tmp_path / "key"
    key.write_bytes(Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()))
    key.chmod(0o600)
    known = tmp_path / "known_hosts"
    known.write_text("")
    unreachable = lambda: SftpClient(SftpSettings(host="127.0.0.1", port=closed, user="x", key_file=key,  # noqa: E731
                                                  known_hosts=known, retries=0, timeout=2))
    assert enqueue_due(fleet) == 1

    def work(**options) -> list[tuple[str, int, bool]]:
        async def go(app):
            async with app.open_async():
                await app.run_worker_async(wait=False, concurrency=1, delete_jobs="never")
                rows = await app.connector.execute_query_all_async(
                    "SELECT status, attempts, scheduled_at > now() + interval '10 seconds' AS later "
                    "FROM procrastinate_jobs WHERE task_name = 'nightly'")
                return [(r["status"], r["attempts"], r["later"]) for r in rows]
        with fleet_app(fleet, **options) as app:
            return asyncio.run(go(app))

    assert work(client_factory=unreachable) == [("todo", 1, True)]   # again in ~22 s
    [first] = services.run_history(site)
    assert first.result == "failed"
    admin = create_engine(fleet)
    with admin.begin() as conn:              # its time has come (not waiting the 22 s here)
        conn.execute(text("UPDATE procrastinate_jobs SET scheduled_at = now() WHERE task_name = 'nightly'"))
    admin.dispose()
    assert work(sftp=False) == [("succeeded", 2, False)]       # its second attempt
    assert [r.result for r in services.run_history(site)][0] in ("ok", "needs_person")
    assert len(services.run_history(site)) == 2
    site.db.dispose()
