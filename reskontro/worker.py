"""The fleet's front end: `reskontro worker`, a procrastinate worker (PostgreSQL task queue: no
broker; the queue is tables in the fleet database), on any number of machines.

Three tasks:

- `schedule_nightly` (periodic, every minute; procrastinate defers a periodic task once per
  tick however many workers run): each creditor whose send time (its own zone, DST-correct:
  exchange.cycle.send_time_on) has passed today and whose `nightly` job for today's local date
  is not queued yet gets one, with the queueing lock `nightly:<id>:<date>` (two schedulers at
  once queue it once) and the lock `creditor:<id>` (never two jobs of one creditor at once).
- `nightly(creditor, local_date)`: `services.nightly` on the creditor's context, the cycle
  `reskontro run` runs; the network only unreachable (exit status 75 in single-site mode) is
  retried with exponential backoff; any other failure is the creditor's alone (its job fails,
  the others run on).
- `route_drop` (periodic): the shared drop folder's bank files and receipts moved into their
  creditors' inboxes (fleet.routing: by the accounts and FileIds inside them), and an `inbox`
  job queued for each creditor that got one.
- `inbox(creditor)`: that creditor's inbox read as `reskontro watch --once` reads a site's
  (receipts into the journal, bank payments listed; the nightly cycle books them), under the
  same lock `creditor:<id>` as its nightly job.
- `prune_jobs` (periodic, daily): succeeded jobs older than KEEP_JOBS_DAYS deleted.
- `recover_stalled` (periodic): the `nightly` jobs of a worker whose heartbeat stopped (killed,
  its machine gone) go back to the queue; the export's journal makes the rerun send nothing
  twice.
"""
from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, datetime, timezone
from typing import TYPE_CHECKING

import procrastinate
from procrastinate.exceptions import AlreadyEnqueued
from sqlalchemy.engine import make_url

from reskontro import services
from reskontro.errors import one_line

if TYPE_CHECKING:
    from reskontro.fleet.registry import Fleet

log = logging.getLogger("reskontro.worker")

NIGHTLY = "nightly"
INBOX = "inbox"


class CycleLater(Exception):
    """The cycle failed only because the server was unreachable: the job is retried later."""


#: network errors only: 20 s + 2^n s (22 s, 24 s, 28 s … 4.6 min), eight retries, about 11 minutes in all
RETRY = procrastinate.RetryStrategy(max_attempts=8, wait=20, exponential_wait=2, retry_exceptions={CycleLater})


def conninfo(url: str) -> str:
    """The fleet's SQLAlchemy URL as a libpq URI for procrastinate's psycopg pool."""
    u = make_url(url).set(drivername="postgresql")
    return u.render_as_string(hide_password=False)


def _every(seconds: float) -> str:
    """A cron for about every `seconds` (a minute and more: every minute)."""
    if seconds >= 60:
        return "* * * * *"
    step = max(1, min(59, int(seconds)))
    return f"* * * * * */{step}"       # the sixth field: seconds


def _recover_cron(stalled_after: float) -> str:
    return _every(stalled_after / 2)


class _Registry:
    """The fleet database as one worker process keeps it: opened at its first job and kept
    (a pool of its own), not opened and closed again for each of a night's thousands of jobs."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._fleet = None
        self._lock = threading.Lock()

    def fleet(self):
        with self._lock:        # sync tasks run in threads
            if self._fleet is None:
                from reskontro.fleet.registry import open_fleet
                self._fleet = open_fleet(self.url)
            return self._fleet

    def close(self) -> None:
        with self._lock:
            if self._fleet is not None:
                self._fleet.dispose()
                self._fleet = None


@contextmanager
def fleet_app(url: str, *, sftp: bool = True, stalled_after: float = 60.0, client_factory=None,
              route_every: float = 60.0) -> Iterator[procrastinate.App]:
    """The fleet's task queue, its tasks bound to the fleet database `url`; the registry its
    tasks kept open is closed when the block ends."""
    registry = _Registry(url)
    try:
        yield _make_app(url, registry, sftp=sftp, stalled_after=stalled_after, client_factory=client_factory,
                        route_every=route_every)
    finally:
        registry.close()


def _make_app(url: str, registry: _Registry, *, sftp: bool, stalled_after: float, client_factory,
              route_every: float) -> procrastinate.App:
    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=conninfo(url)))

    @app.task(name=NIGHTLY, retry=RETRY)
    def nightly(creditor: str, local_date: str) -> str:
        from reskontro.fleet.registry import FleetError
        try:
            site = services.creditor_site(registry.fleet(), creditor)
        except FleetError as exc:          # disabled (or removed) since it was queued
            log.warning("nightly %s %s: skipped: %s", creditor, local_date, exc)
            return "skipped"
        try:
            result = services.nightly(site, date.fromisoformat(local_date), sftp=sftp,
                                      client_factory=client_factory)
        finally:
            site.db.dispose()
        if result.exit_status == 75:
            raise CycleLater(f"{creditor} {local_date}: the server was unreachable; tried again later")
        return result.result

    @app.task(name=INBOX)
    def inbox(creditor: str) -> int:
        from reskontro.fleet.registry import FleetError
        try:
            site = services.creditor_site(registry.fleet(), creditor, allow_disabled=True)
        except FleetError as exc:
            log.warning("inbox %s: skipped: %s", creditor, exc)
            return 0
        try:
            return services.watch(site, once=True, rescan=0, stop=threading.Event())
        finally:
            site.db.dispose()

    @app.periodic(cron=_every(route_every), periodic_id="route")
    @app.task(name="route_drop", queueing_lock="route_drop")
    async def route_drop(timestamp: int) -> int:
        return await route_drop_async(app, await asyncio.to_thread(registry.fleet))

    @app.periodic(cron="* * * * *", periodic_id="schedule")
    @app.task(name="schedule_nightly", queueing_lock="schedule_nightly")
    async def schedule_nightly(timestamp: int) -> int:
        return await enqueue_due_async(app, await asyncio.to_thread(registry.fleet),
                                       datetime.fromtimestamp(timestamp, timezone.utc))

    @app.periodic(cron="17 4 * * *", periodic_id="prune")
    @app.task(name="prune_jobs", queueing_lock="prune_jobs")
    async def prune_jobs(timestamp: int) -> None:
        await prune_old_jobs(app)

    @app.periodic(cron=_recover_cron(stalled_after), periodic_id="recover")
    @app.task(name="recover_stalled", queueing_lock="recover_stalled")
    async def recover_stalled(timestamp: int) -> int:
        return await recover_stalled_jobs(app, stalled_after)

    return app


async def enqueue_due_async(app: procrastinate.App, fleet: Fleet, now: datetime) -> int:
    """Queue every nightly job due at `now` (registry.due_nightly) that is not queued yet: the
    number queued here (0 when another scheduler was first)."""
    from reskontro.fleet.registry import due_nightly
    from datetime import timedelta
    rows = await app.connector.execute_query_all_async(
        "SELECT args->>'creditor' AS creditor, args->>'local_date' AS local_date FROM procrastinate_jobs "
        "WHERE task_name = 'nightly' AND args->>'local_date' >= %(since)s",
        since=(now - timedelta(days=2)).date().isoformat())
    queued = {(r["creditor"], r["local_date"]) for r in rows}

    def due():
        return [(c.id, d.isoformat()) for c, d in due_nightly(fleet, now, queued)]
    n = 0
    for creditor, day in await asyncio.to_thread(due):
        try:
            await app.configure_task(NIGHTLY, lock=f"creditor:{creditor}",
                                     queueing_lock=f"nightly:{creditor}:{day}").defer_async(
                creditor=creditor, local_date=day)
            n += 1
        except AlreadyEnqueued:          # another scheduler queued it a moment ago
            pass
    if n:
        log.info("queued %d nightly jobs", n)
        # The queue's statistics as they now are: planned from yesterday's (every job done, none
        # waiting), procrastinate_fetch_job checked every waiting job's lock before taking one.
        try:
            await app.connector.execute_query_async("ANALYZE procrastinate_jobs")
        except Exception as exc:     # (not the table's owner, say) the jobs still run, only slower
            log.warning("could not refresh the queue's statistics: %s", one_line(str(exc)))
    return n


async def route_drop_async(app: procrastinate.App, fleet: str | Fleet) -> int:
    """One routing pass over the drop folder, then an `inbox` job for each creditor that got a
    file (one queued per creditor however many files: its queueing lock). The files routed."""
    routed = await asyncio.to_thread(services.fleet_route, fleet)
    for r in routed:
        (log.info if r.creditor else log.warning)("drop %s (%s): %s%s", r.name, r.kind,
                                                   f"to {r.creditor}: " if r.creditor else "", r.detail)
    for creditor in sorted({r.creditor for r in routed if r.creditor}):
        try:
            await app.configure_task(INBOX, lock=f"creditor:{creditor}",
                                     queueing_lock=f"inbox:{creditor}").defer_async(creditor=creditor)
        except AlreadyEnqueued:          # one is waiting already: it reads every file there
            pass
    return len(routed)


#: how long the queue keeps a job that succeeded (fleet status shows each creditor's newest;
#: a failed one stays until a person has seen to it)
KEEP_JOBS_DAYS = 35


async def prune_old_jobs(app: procrastinate.App, days: int = KEEP_JOBS_DAYS) -> None:
    """Jobs that succeeded more than `days` ago, out of the queue's tables (every creditor adds
    one a night: 3.65 million a year at 10,000 creditors, each read by fleet status)."""
    await app.job_manager.delete_old_jobs(nb_hours=days * 24)


async def recover_stalled_jobs(app: procrastinate.App, stalled_after: float) -> int:
    """The nightly jobs whose worker stopped sending heartbeats, back into the queue."""
    stalled = await app.job_manager.get_stalled_jobs(task_name=NIGHTLY, seconds_since_heartbeat=stalled_after)
    n = 0
    for job in stalled:
        log.warning("job %s (%s) was running on a worker that stopped: queued again", job.id, job.task_kwargs)
        await app.job_manager.retry_job(job)
        n += 1
    return n


def enqueue_due(url: str, now: datetime | None = None) -> int:
    """enqueue_due_async from synchronous code (tests, the benchmark)."""
    from reskontro.fleet.registry import open_fleet
    fleet = open_fleet(url)

    async def go(app: procrastinate.App) -> int:
        async with app.open_async():
            return await enqueue_due_async(app, fleet, now or datetime.now(timezone.utc))
    try:
        with fleet_app(url) as app:
            return asyncio.run(go(app))
    finally:
        fleet.dispose()


def run_worker(url: str, *, sftp: bool = True, stalled_after: float = 60.0, once: bool = False,
               name: str | None = None, route_every: float = 60.0) -> None:
    """The worker, until SIGINT/SIGTERM (or, `once`, until the queue is empty)."""
    with fleet_app(url, sftp=sftp, stalled_after=stalled_after, route_every=route_every) as app:
        app.run_worker(concurrency=1, wait=not once, name=name, update_heartbeat_interval=max(0.5, stalled_after / 4),
                       stalled_worker_timeout=stalled_after, delete_jobs="never",
                       fetch_job_polling_interval=min(5.0, max(0.5, stalled_after / 4)))
