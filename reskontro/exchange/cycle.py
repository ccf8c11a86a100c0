"""The nightly cycle for cron (`reskontro run`, `run --scheduled`) and the long-running service
(`reskontro serve`): fetch, read receipts and payment files, book payments, reconcile the
outbox with the journal, export, send. One lock: runs never overlap. Every step runs even when
an earlier one failed where that is safe (a failed fetch does not stop tonight's file).

Each cycle is recorded in the store (ledger.runs: start, end, each step, what needs a person,
files, counts) and logged (its start, each step, each inbox file, its end). Its result is
`ok`, `needs_person` (all steps did their work, but something waits for a person: an inbox
file set aside, a receipt rejecting our file, a file left or set aside, a payment not booked,
an entry held new tonight) or `failed`; on the last two `[notify]` tells a person.

Scheduling (`run --scheduled` every 15 minutes from cron, and `serve`): the cycle runs when it
is past `send_time` in the site's zone and today's (local date) cycle has not completed, so a
machine that was down at 18:00 runs at its next tick, and the host's own clock zone never
matters.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone

from sqlalchemy.exc import SQLAlchemyError

from reskontro.adapters.sftp import SftpConnectionError
from reskontro.config import Config
from reskontro.errors import StoreError, about, describe, one_line, store_name
from reskontro.exchange import notify as notifier
from reskontro.exchange.remote import fetch, reconcile_outbox, send
from reskontro.files import logfile
from reskontro.files.lock import LockedError, run_lock
from reskontro.ledger import runs
from reskontro.ledger.store import check_integrity
from reskontro.payments.booking import list_payment_file, post_payments
from reskontro.payments.inbox import process_inbox
from reskontro.rules.decide import run_day
from reskontro.rules.engine import RuleEngine
from reskontro.rules.holds import NewHolds, note_new_holds
from reskontro.transfer.export import export

log = logging.getLogger("reskontro.run")


@dataclass
class Step:
    name: str
    ok: bool
    summary: str
    attention: list[str] = field(default_factory=list)    # what of this step needs a person
    later: bool = False         # failed for now only (the server unreachable after the retries)


@dataclass
class CycleResult:
    steps: list[Step] = field(default_factory=list)
    needs_person: list[str] = field(default_factory=list)  # each with its reason
    kind: str = "run"                                      # run | scheduled | serve
    run_id: int | None = None                              # its row in the run history
    started_at: datetime | None = None
    finished_at: datetime | None = None
    skipped: str | None = None          # a scheduled run that did not run the cycle: why
    files: dict = field(default_factory=dict)
    counts: dict = field(default_factory=dict)
    notified: list[str] = field(default_factory=list)      # the ways a person was told

    @property
    def ok(self) -> bool:
        return all(s.ok for s in self.steps)

    @property
    def result(self) -> str:
        """ok | needs_person (done, but a person is needed) | failed | skipped."""
        if self.skipped is not None:
            return "skipped"
        if not self.ok:
            return "failed"
        return "needs_person" if self.needs_person else "ok"

    @property
    def exit_status(self) -> int:
        """0 all went well; 1 a step failed; 3 done, but a person is needed; 75 only the
        server was unreachable (try again later). The CLI's exit status for `run`."""
        failed = [s for s in self.steps if not s.ok]
        if failed:
            return 75 if all(s.later for s in failed) else 1
        return 3 if self.needs_person or any(s.attention for s in self.steps) else 0

    def summary(self, config: Config) -> dict:
        """The run as plain data: the run history's, the notifiers' and `run --json`'s view."""
        def when(t: datetime | None) -> str | None:
            return None if t is None else t.astimezone(config.tz).isoformat(timespec="seconds")
        return {"site": str(config.site), "sender_id": config.sender_id, "run": self.run_id, "kind": self.kind,
                "result": self.result, "started_at": when(self.started_at), "finished_at": when(self.finished_at),
                "steps": [{"name": s.name, "ok": s.ok, "summary": s.summary, "attention": s.attention}
                          for s in self.steps],
                "needs_person": self.needs_person, "files": self.files, "counts": self.counts,
                "log_file": str(config.log_file)}


def setup_logging(config: Config) -> logging.Handler:
    return logfile.setup_site_logging(config)


# --- the schedule --------------------------------------------------------------------------------
def send_time_on(config: Config, day: date) -> datetime:
    """`send_time` on the local date `day` in the site's zone (a time in the spring-forward gap
    is the instant after it, e.g. 02:30 -> 03:30 summer time)."""
    t = datetime.combine(day, config.send_time, tzinfo=config.tz)
    return t.astimezone(timezone.utc).astimezone(config.tz)


@dataclass(frozen=True)
class Schedule:
    now: datetime                         # in the site's zone
    today: datetime                       # today's (local date) send time
    completed: runs.RunRecord | None      # today's cycle, completed since the send time
    unfinished: runs.RunRecord | None     # a cycle started since then without an end (running, or killed)
    due: bool                             # the scheduled cycle runs now
    next_run: datetime                    # when it runs next (now, when due)


def schedule(config: Config, db, now: datetime, *, sftp: bool = True) -> Schedule:
    """Whether the scheduled cycle runs now: past today's send time (local date, site zone) and
    today's cycle (one with fetch and send, when `sftp`) not completed since."""
    local = now.astimezone(config.tz)
    today = send_time_on(config, local.date())
    midnight = datetime.combine(local.date() + timedelta(days=1), datetime.min.time(), tzinfo=config.tz)
    with db.connect() as conn:      # today's, since the send time (a clock set back sees no future run)
        recent = runs.since(conn, today, midnight, sftp=sftp)
    completed = next((r for r in recent if r.finished_at is not None), None)
    unfinished = next((r for r in recent if r.finished_at is None), None)
    due = local >= today and completed is None
    if due:
        nxt = local
    elif local < today:
        nxt = today
    else:
        nxt = send_time_on(config, local.date() + timedelta(days=1))
    return Schedule(local, today, completed, unfinished, due, nxt)


# --- one cycle -----------------------------------------------------------------------------------
def run_cycle(config: Config, db, engine: RuleEngine, *, sftp: bool = True, client_factory=None,
              now: datetime | None = None, on_step: Callable[[Step], None] | None = None,
              kind: str | None = None, scheduled: bool = False,
              clock: Callable[[], datetime] | None = None, tell: bool = True) -> CycleResult:
    """One nightly cycle. The caller holds no lock; this takes it. `scheduled`: only when the
    schedule says so (else a result with `skipped` set, at once). `now`: the export's time
    (tests); `clock`: the time of the run history and the schedule. `tell`: notify people."""
    clock = clock or (lambda: datetime.now(config.tz))
    kind = kind or ("scheduled" if scheduled else "run")
    with ExitStack() as stack:
        try:
            stack.enter_context(run_lock(config.site / "var" / "reskontro.lock"))
        except LockedError:
            if scheduled:
                plan = schedule(config, db, clock(), sftp=sftp)
                if plan.unfinished is not None:      # tonight's cycle is at work: the next tick sees it done
                    return CycleResult(kind=kind, skipped=f"the cycle of {plan.today:%Y-%m-%d} is running "
                                                           f"(run {plan.unfinished.id})")
            raise
        if scheduled:
            plan = schedule(config, db, clock(), sftp=sftp)
            if not plan.due:
                why = (f"today's cycle completed (run {plan.completed.id})" if plan.completed
                       else f"not before {plan.today.isoformat(timespec='minutes')}")
                return CycleResult(kind=kind, skipped=why)
        return _cycle(config, db, engine, sftp=sftp, client_factory=client_factory, now=now, on_step=on_step,
                      kind=kind, clock=clock, tell=tell)


def _cycle(config: Config, db, engine: RuleEngine, *, sftp: bool, client_factory, now, on_step, kind: str,
           clock: Callable[[], datetime], tell: bool) -> CycleResult:
    """The cycle itself, under the run lock."""
    result = CycleResult(kind=kind, started_at=clock())
    where = store_name(config.database)

    def report(s: Step) -> None:
        level = logging.ERROR if not s.ok else logging.WARNING if s.attention else logging.INFO
        log.log(level, "%s: %s: %s", s.name, "ok" if s.ok else "FAILED", s.summary)
        for text in s.attention:
            log.warning("%s: needs a person: %s", s.name, text)
        result.steps.append(s)
        result.needs_person.extend(s.attention)
        if on_step:
            on_step(s)

    def step(name: str, fn: Callable[[list[str]], str]) -> bool:
        attention: list[str] = []
        try:
            s = Step(name, True, fn(attention), attention)
        except Exception as exc:  # every failure is reported, and the cycle carries on where safe
            log.debug("%s failed: %s", name, exc, exc_info=True)   # the traceback: debug level only
            if isinstance(exc, (OSError, SQLAlchemyError)):   # one line naming the file or the store
                s = Step(name, False, describe(exc, where), attention)
            else:
                s = Step(name, False, one_line(f"{type(exc).__name__}: {exc}", 2000), attention,
                         later=isinstance(exc, SftpConnectionError))
        report(s)
        return s.ok

    log.info("cycle started (%s%s)", kind, "" if sftp else ", no SFTP")
    # A damaged store fails the whole cycle before anything is fetched, booked or sent:
    # tonight's file would otherwise vouch for a ledger nobody can read. Nothing is written
    # to it either (not even the run history): the next tick tries again, and tells again.
    try:
        check_integrity(db)
    except StoreError as exc:
        report(Step("store", False, str(exc), [f"the store cannot be trusted: {exc}"]))
        return _finish(config, db, result, clock, tell)
    try:
        result.run_id = runs.start(db, kind, sftp, result.started_at)
    except Exception as exc:   # noqa: BLE001 - the cycle still runs; the history misses it
        log.error("cannot record the run in the store: %s", describe(exc, where))
        log.debug("cannot record the run", exc_info=True)
    try:
        _steps(config, db, engine, result, step, sftp=sftp, client_factory=client_factory, now=now, clock=clock)
    except Exception as exc:   # a bug between steps: the run still ends, recorded and told
        log.debug("the cycle failed", exc_info=True)
        report(Step("cycle", False, one_line(f"{type(exc).__name__}: {exc}", 2000)))
    return _finish(config, db, result, clock, tell)


def _steps(config: Config, db, engine: RuleEngine, result: CycleResult, step, *, sftp: bool, client_factory,
           now, clock) -> None:
    files, counts = result.files, result.counts

    if sftp:
        def do_fetch(attention: list[str]) -> str:
            r = fetch(config, client_factory)
            files["fetched"] = [f.name for f in r.files]
            counts["fetched"] = len(r.files)
            text = f"{len(r.files)} files fetched"
            if r.changed:
                text += f"; left for next time (changed while fetched) {'; '.join(r.changed)}"
            if r.refused:
                text += f"; refused {'; '.join(r.refused)}"
                attention += [f"remote file left on the server, its name refused: {t}" for t in r.refused]
            if r.failed:
                text += f"; not fetched {'; '.join(r.failed)}"
                attention += [f"remote file left on the server: {t}" for t in r.failed]
            if not r.ok:
                raise RuntimeError(text)
            return text
        step("fetch", do_fetch)

    def do_inbox(attention: list[str]) -> str:
        # The same completeness test as the watcher's: a file still being written stays
        # (and the watcher, in `serve`, never works on the same file: process_inbox).
        waiting: list[str] = []
        rs = process_inbox(db, config.inbox, payments=list_payment_file, waiting=waiting)
        failed = [r for r in rs if r.kind == "failed"]
        rejected = [r for r in rs if "REJECTED" in r.detail]
        inbox_log = logging.getLogger("reskontro.watch")
        for r in rs:     # every inbox file in the log, with what became of it
            (inbox_log.warning if r in failed or r in rejected else inbox_log.info)(
                "%s (%s): %s", r.name, r.kind, r.detail)
        files["inbox"] = [{"name": r.name, "kind": r.kind} for r in rs]
        counts.update(inbox_files=len(rs), inbox_failed=len(failed), inbox_waiting=len(waiting))
        text = f"{len(rs)} inbox files ({len(failed)} failed)"
        if waiting:
            text += (f"; {len(waiting)} not complete yet, left for the next pass: "
                     + ", ".join(waiting[:5]) + (" …" if len(waiting) > 5 else ""))
        # failures and rejections, and each payment file's summary (what was listed, and
        # what was not a payment with its reason)
        for r in failed + rejected + [r for r in rs if r.kind == "payments"]:
            text += f"; {r.name}: {r.detail}"
        for r in failed:
            named = r.detail if r.name in r.detail else f"{r.name}: {r.detail}"
            attention.append(f"inbox file set aside in inbox/failed/ (the reason beside it): {named}")
        for r in rejected:
            attention.append(f"receipt {r.name}: {r.detail}")
        return text
    step("inbox", do_inbox)

    def do_post(attention: list[str]) -> str:
        r = post_payments(db)
        counts.update(payments_booked=r.matched, invoices_closed=r.closed, unmatched=len(r.unmatched))
        if r.new_unmatched:       # one line for a person, however many
            n = len(r.new_unmatched)
            shown = "; ".join(f"{pid}: {why}" for pid, why in r.new_unmatched[:5])
            more = f"; and {n - 5} more" if n > 5 else ""
            attention.append(f"{n} bank payment{'s' if n != 1 else ''} received tonight "
                             f"{'are' if n != 1 else 'is'} not booked, listed for a person "
                             f"(`reskontro payments --unposted`): {shown}{more}")
        return f"{r.matched} payments booked, {r.closed} invoices closed, {len(r.unmatched)} unmatched"
    step("post", do_post)

    def do_outbox(attention: list[str]) -> str:
        # Before the export: the content of a file lost from the outbox goes tonight.
        lost = reconcile_outbox(config, db)
        if lost:
            attention += lost
            raise RuntimeError("; ".join(lost))
        return "every written file is in the outbox"
    step("outbox", do_outbox)

    def do_export(attention: list[str]) -> str:
        held = new_holds(config, db, engine, clock(), run_day(config.tz, now))
        with about(config.outbox):
            r = export(config, db, engine, now=now)
        files["exported"] = r.file_id
        counts.update(customers_exported=r.customers, entries_exported=r.entries, matches_exported=r.matches)
        if held is not None:
            counts["held_new"] = held.count
            attention += held.lines()
        if r.path is None:
            problems = "; ".join(r.problems[:5])
            attention.append(f"tonight's file {r.file_id} failed the pre-send check and was set aside in "
                             f"outbox/rejected/ (nothing in it counts as sent): {problems}")
            raise RuntimeError(f"{r.file_id} failed the pre-send check: {problems}")
        text = f"{r.file_id}: {r.customers} customers, {r.entries} entries, {r.matches} matches"
        if held is not None and held.count:
            text += f"; {held.count} held new tonight"
        return text
    step("export", do_export)

    if sftp:
        def do_send(attention: list[str]) -> str:
            r = send(config, db, client_factory)
            files["sent"] = list(r.sent)
            counts["sent"] = len(r.sent)
            text = f"{len(r.sent)} sent" + (f", {len(r.already)} were there already" if r.already else "")
            if r.answered:
                text += f", {len(r.answered)} answered by the receiver already (moved to sent/)"
            if r.refused:
                text += "; refused: " + "; ".join(r.refused)
                attention += [f"outbox file set aside in outbox/rejected/ (its content goes again): {t}"
                              for t in r.refused]
            if r.lost:
                text += "; lost: " + "; ".join(r.lost)
                attention += r.lost
            if r.refused or r.lost:
                raise RuntimeError(text)
            return text
        step("send", do_send)


def new_holds(config: Config, db, engine: RuleEngine, now: datetime, today: date) -> NewHolds | None:
    """What tonight's export is about to decide: the holds new tonight, recorded so that each is
    told once (rules.holds); None when that cannot be told, which never stops tonight's file."""
    try:
        with db.begin() as conn:
            return note_new_holds(conn, engine, config.mode, now, today)
    except Exception as exc:   # noqa: BLE001 - telling about holds never stops tonight's file
        log.warning("cannot tell which holds are new tonight: %s", describe(exc, store_name(config.database)))
        log.debug("holds new tonight", exc_info=True)
        return None


def _finish(config: Config, db, result: CycleResult, clock, tell: bool) -> CycleResult:
    """The end of a cycle: recorded, logged, and told to whoever `[notify]` names."""
    result.finished_at = clock()
    outcome = result.result
    if result.run_id is not None:
        try:
            runs.finish(db, result.run_id, result.finished_at, outcome,
                        [{"name": s.name, "ok": s.ok, "summary": s.summary, "attention": s.attention}
                         for s in result.steps],
                        result.needs_person, result.files, result.counts)
        except Exception as exc:   # noqa: BLE001
            log.error("cannot record the end of run %s in the store: %s", result.run_id,
                      describe(exc, store_name(config.database)))
            log.debug("cannot record the end of the run", exc_info=True)
    failed = [s.name for s in result.steps if not s.ok]
    if outcome == "failed":
        log.error("cycle ended (run %s): FAILED (%s)", result.run_id, ", ".join(failed))
    elif outcome == "needs_person":
        log.warning("cycle ended (run %s): done, but a person is needed (%d)", result.run_id,
                    len(result.needs_person))
    else:
        log.info("cycle ended (run %s): ok", result.run_id)
    if tell:
        result.notified = notifier.notify(config.notify, result.summary(config))
    return result


# --- serve -----------------------------------------------------------------------------------
def serve(config: Config, db, engine: RuleEngine, stop: threading.Event, *, sftp: bool = True,
          watch_inbox: bool = True, on_step: Callable[[Step], None] | None = None,
          clock: Callable[[], datetime] | None = None, client_factory=None) -> None:
    """Run the cycle every day once past the send time (DST-correct; at once if today's cycle
    is overdue, as after a restart), and watch the inbox."""
    from reskontro.payments.watcher import watch

    clock = clock or (lambda: datetime.now(config.tz))
    watcher = None
    if watch_inbox:
        watcher = threading.Thread(target=watch, args=(db, config.inbox),
                                   kwargs={"stop": stop}, name="inbox-watcher", daemon=True)
        watcher.start()
    tried: date | None = None          # the day a cycle was tried here (should its record fail)
    try:
        while not stop.is_set():
            try:
                plan = schedule(config, db, clock(), sftp=sftp)
            except Exception as exc:   # noqa: BLE001 - an unreadable store: say so, look again
                log.error("cannot read the run history: %s", describe(exc, store_name(config.database)))
                log.debug("the schedule", exc_info=True)
                stop.wait(60.0)
                continue
            if plan.due and tried == plan.now.date():
                plan = Schedule(plan.now, plan.today, plan.completed, plan.unfinished, False,
                                send_time_on(config, plan.now.date() + timedelta(days=1)))
            if not plan.due:
                log.info("next run at %s", plan.next_run.isoformat())
                while not stop.is_set():
                    left = (plan.next_run - clock()).total_seconds()
                    if left <= 0:
                        break
                    stop.wait(min(left, 30.0))   # short waits: a changed system clock is noticed
                continue
            try:
                run_cycle(config, db, engine, sftp=sftp, on_step=on_step, kind="serve", clock=clock,
                          client_factory=client_factory)
            except LockedError as exc:   # a run by hand: tonight's cycle follows it
                log.warning("%s; trying again in a minute", exc)
                stop.wait(60.0)
                continue
            except Exception as exc:     # the service keeps serving; tomorrow is another cycle
                log.error("the cycle failed: %s", one_line(str(exc) or type(exc).__name__))
                log.debug("the cycle failed", exc_info=True)
            tried = plan.now.date()
    finally:
        stop.set()
        if watcher is not None:
            watcher.join(timeout=10)
