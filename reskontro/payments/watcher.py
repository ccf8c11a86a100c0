"""`reskontro watch`: the inbox watcher (watchdog), with a periodic rescan because events can
be lost (inotify overflow, network shares). Events are only hints: every pass looks at the
folder itself and takes a file only when complete (reskontro.payments.inbox.complete, the same test as
the nightly cycle's), so a half-written or half-uploaded file is left alone.

The watcher remembers only the names of the files waiting to be complete (bounded by what is
in the inbox now); idle, it looks again only on an event or at the rescan interval. A pass
that finds another one at work (the cycle's, in `serve`) steps aside and looks again shortly.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import Engine
from watchdog.events import FileSystemEventHandler
from watchdog.observers import Observer

from reskontro.payments.inbox import STALE_AFTER, InboxBusy, Processed, process_inbox  # noqa: F401 (STALE_AFTER: re-exported)
from reskontro.errors import describe
from reskontro.payments.booking import list_payment_file

log = logging.getLogger("reskontro.watch")


class _Wake(FileSystemEventHandler):
    def __init__(self, event: threading.Event):
        self.event = event

    def on_any_event(self, event):   # any change: look again soon
        self.event.set()


class InboxWatcher:
    """The state of one watcher between passes: which files wait to be complete, whether the
    last pass found the inbox busy, when it last looked."""

    def __init__(self, db: Engine, inbox: Path, *, rescan: float = 60.0,
                 report: Callable[[Processed], None] | None = None):
        self.db, self.inbox, self.rescan, self.report = db, inbox, rescan, report
        self.waiting: frozenset[str] = frozenset()   # incomplete files in the inbox at the last pass
        self.busy = False                            # the last pass stepped aside for another one
        self.last_pass: float | None = None
        self.passes = 0
        self.handled = 0

    def due(self, now: float, woken: bool) -> bool:
        """Whether to look now: an event, a file waiting to be complete, a pass that stepped
        aside, or the rescan interval (events can be lost) — never merely because time passed."""
        return (woken or self.busy or bool(self.waiting) or self.last_pass is None
                or now - self.last_pass >= self.rescan)

    def run_pass(self, now: float | None = None, *, wait: bool = False) -> list[Processed]:
        now = time.time() if now is None else now
        self.passes += 1
        self.last_pass = now
        waiting: list[str] = []
        try:
            results = process_inbox(self.db, self.inbox, payments=list_payment_file, wait=wait,
                                    waiting=waiting, now=now)
        except InboxBusy:
            self.busy = True
            return []
        self.busy = False
        self.waiting = frozenset(waiting)
        for r in results:
            self.handled += 1
            # every inbox file in the log, with what became of it (a failure as a warning)
            (log.warning if r.kind == "failed" else log.info)("%s (%s): %s", r.name, r.kind, r.detail)
            if self.report:
                self.report(r)
        return results


def watch(db: Engine, inbox: Path, *, once: bool = False, rescan: float = 60.0, settle: float = 1.0,
          stop: threading.Event | None = None, report: Callable[[Processed], None] | None = None) -> int:
    """Process the inbox until `stop` is set (or once). Returns the number of files handled."""
    inbox.mkdir(parents=True, exist_ok=True)
    stop = stop or threading.Event()
    watcher = InboxWatcher(db, inbox, rescan=rescan, report=report)
    if once:
        watcher.run_pass(wait=True)     # waits for a pass at work (the cycle's) to end
        return watcher.handled

    wake = threading.Event()
    observer = Observer()
    observer.schedule(_Wake(wake), str(inbox), recursive=False)
    observer.start()          # first the observer, then the scan: nothing arriving in between is missed
    try:
        while not stop.is_set():
            woken = wake.is_set()
            if watcher.due(time.time(), woken):
                wake.clear()
                try:
                    watcher.run_pass()
                except Exception as exc:   # the watcher keeps running after anything
                    log.error("inbox pass failed; will retry: %s", describe(exc))
                    log.debug("inbox pass failed", exc_info=True)     # the traceback: debug level only
            stop.wait(settle)
    finally:
        observer.stop()
        observer.join(timeout=5)
    return watcher.handled
