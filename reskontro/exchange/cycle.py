"""The nightly cycle for cron (`reskontro run`) and the long-running service (`reskontro serve`):
fetch, read receipts and payment files, book payments, reconcile the outbox with the journal,
export, send. One lock: runs never
overlap. Every step runs even when an earlier one failed where that is safe (a failed fetch
does not stop tonight's file), and the exit status says whether all went well."""
from __future__ import annotations

import logging
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.exc import SQLAlchemyError

from reskontro.adapters.sftp import SftpConnectionError
from reskontro.files import logfile
from reskontro.config import Config
from reskontro.rules.engine import RuleEngine
from reskontro.errors import StoreError, about, describe, store_name
from reskontro.exchange.remote import fetch, next_run, reconcile_outbox, send
from reskontro.transfer.export import export
from reskontro.payments.inbox import process_inbox
from reskontro.files.lock import LockedError, run_lock
from reskontro.payments.booking import list_payment_file, post_payments
from reskontro.ledger.store import check_integrity

log = logging.getLogger("reskontro.run")


@dataclass
class Step:
    name: str
    ok: bool
    summary: str
    attention: bool = False     # done, but a person is needed (unmatched payments, a failed
                                # inbox file, a rejected receipt, new holds)
    later: bool = False         # failed for now only (the server unreachable after the retries)


@dataclass
class CycleResult:
    steps: list[Step] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(s.ok for s in self.steps)

    @property
    def exit_status(self) -> int:
        """0 all went well; 1 a step failed; 3 done, but a person is needed; 75 only the
        server was unreachable (try again later). The CLI's exit status for `run`."""
        failed = [s for s in self.steps if not s.ok]
        if failed:
            return 75 if all(s.later for s in failed) else 1
        return 3 if any(s.attention for s in self.steps) else 0


def setup_logging(config: Config) -> logging.Handler:
    return logfile.setup_logging(config.log_file)


def run_cycle(config: Config, db, engine: RuleEngine, *, sftp: bool = True, client_factory=None,
              now: datetime | None = None, on_step: Callable[[Step], None] | None = None) -> CycleResult:
    """One nightly cycle. The caller holds no lock; this takes it."""
    result = CycleResult()

    def report(s: Step) -> None:
        log.info("%s: %s: %s", s.name, "ok" if s.ok else "FAILED", s.summary)
        result.steps.append(s)
        if on_step:
            on_step(s)

    def step(name: str, fn: Callable[[], str | tuple[str, bool]]) -> bool:
        """Run one step; `fn` returns its summary, or (summary, a person is needed)."""
        try:
            out = fn()
            text, attention = out if isinstance(out, tuple) else (out, False)
            s = Step(name, True, text, attention)
        except Exception as exc:  # every failure is reported, and the cycle carries on where safe
            log.error("%s failed: %s\n%s", name, exc, traceback.format_exc())
            if isinstance(exc, (OSError, SQLAlchemyError)):   # one line naming the file or the store
                s = Step(name, False, describe(exc, store_name(config.database)))
            else:
                s = Step(name, False, f"{type(exc).__name__}: {exc}", later=isinstance(exc, SftpConnectionError))
        report(s)
        return s.ok

    with run_lock(config.site / "var" / "reskontro.lock"):
        # A damaged store fails the whole cycle before anything is fetched, booked or sent:
        # tonight's file would otherwise vouch for a ledger nobody can read.
        try:
            check_integrity(db)
        except StoreError as exc:
            log.error("store: %s", exc)
            report(Step("store", False, str(exc)))
            return result

        if sftp:
            def do_fetch() -> str:
                r = fetch(config, client_factory)
                text = f"{len(r.files)} files fetched"
                if r.changed:
                    text += f"; left for next time (changed while fetched) {'; '.join(r.changed)}"
                if r.refused:
                    text += f"; refused {'; '.join(r.refused)}"
                if r.failed:
                    text += f"; not fetched {'; '.join(r.failed)}"
                if not r.ok:
                    raise RuntimeError(text)
                return text
            step("fetch", do_fetch)

        def do_inbox() -> str:
            # The same completeness test as the watcher's: a file still being written stays
            # (and the watcher, in `serve`, never works on the same file: process_inbox).
            waiting: list[str] = []
            rs = process_inbox(db, config.inbox, payments=list_payment_file, waiting=waiting)
            failed = [r for r in rs if r.kind == "failed"]
            rejected = [r for r in rs if "REJECTED" in r.detail]
            text = f"{len(rs)} inbox files ({len(failed)} failed)"
            if waiting:
                text += (f"; {len(waiting)} not complete yet, left for the next pass: "
                         + ", ".join(waiting[:5]) + (" …" if len(waiting) > 5 else ""))
            # failures and rejections, and each payment file's summary (what was listed, and
            # what was not a payment with its reason)
            for r in failed + rejected + [r for r in rs if r.kind == "payments"]:
                text += f"; {r.name}: {r.detail}"
            # a file set aside or a rejected receipt: done, and a person looks at it
            return text, bool(failed or rejected)
        step("inbox", do_inbox)

        def do_post() -> str:
            r = post_payments(db)
            return (f"{r.matched} payments booked, {r.closed} invoices closed, {len(r.unmatched)} unmatched",
                    bool(r.unmatched))
        step("post", do_post)

        def do_outbox() -> str:
            # Before the export: the content of a file lost from the outbox goes tonight.
            lost = reconcile_outbox(config, db)
            if lost:
                raise RuntimeError("; ".join(lost))
            return "every written file is in the outbox"
        step("outbox", do_outbox)

        def do_export() -> str:
            with about(config.outbox):
                r = export(config, db, engine, now=now)
            if r.path is None:
                raise RuntimeError(f"{r.file_id} failed the pre-send check: {'; '.join(r.problems[:5])}")
            text = f"{r.file_id}: {r.customers} customers, {r.entries} entries, {r.matches} matches"
            if r.held:
                text += f"; {r.held} entries held tonight (reskontro check, reskontro plan)"
            return text, bool(r.held)
        step("export", do_export)

        if sftp:
            def do_send() -> str:
                r = send(config, db, client_factory)
                text = f"{len(r.sent)} sent" + (f", {len(r.already)} were there already" if r.already else "")
                if r.answered:
                    text += f", {len(r.answered)} answered by the receiver already (moved to sent/)"
                if r.refused:
                    text += "; refused: " + "; ".join(r.refused)
                if r.lost:
                    text += "; lost: " + "; ".join(r.lost)
                if r.refused or r.lost:
                    raise RuntimeError(text)
                return text
            step("send", do_send)
    return result


def serve(config: Config, db, engine: RuleEngine, stop: threading.Event, *, sftp: bool = True,
          watch_inbox: bool = True, on_step: Callable[[Step], None] | None = None,
          clock: Callable[[], datetime] | None = None) -> None:
    """Run the cycle at the configured time every day (DST-correct), and watch the inbox."""
    from reskontro.payments.watcher import watch

    clock = clock or (lambda: datetime.now(config.tz))
    watcher = None
    if watch_inbox:
        watcher = threading.Thread(target=watch, args=(db, config.inbox),
                                   kwargs={"stop": stop}, name="inbox-watcher", daemon=True)
        watcher.start()
    try:
        while not stop.is_set():
            due = next_run(clock(), config.send_time, config.tz)
            log.info("next run at %s", due.isoformat())
            while not stop.is_set():
                left = (due - clock()).total_seconds()
                if left <= 0:
                    break
                stop.wait(min(left, 30.0))   # short waits: a changed system clock is noticed
            if stop.is_set():
                break
            while not stop.is_set():
                try:
                    run_cycle(config, db, engine, sftp=sftp, on_step=on_step)
                except LockedError as exc:   # a run by hand: tonight's cycle follows it
                    log.warning("%s; trying again in a minute", exc)
                    stop.wait(60.0)
                    continue
                except Exception:            # the service keeps serving; tomorrow is another cycle
                    log.exception("the cycle failed")
                break
    finally:
        stop.set()
        if watcher is not None:
            watcher.join(timeout=10)
