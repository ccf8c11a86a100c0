"""Service answers for the pages: each request borrows a site of its own, and the answers that
read the whole ledger (the plan's counts, the data-quality report, the held list) are kept
until the store changes, so a page of a big ledger does not decide a million entries again.

A site holds a rule engine (durable_rules keeps state in its host), so two requests never share
one: a small pool of sites, each with its own engine and database pool.

A kept answer is recomputed when the store changed (ledger.store.ChangeWatch), the day changed
(decisions depend on the date), or it is older than MAX_AGE. The request that finds it stale
waits up to WAIT for the new one; past that it gets the last answer (shown with its time) or,
right after a start, none yet (the page says it is computing and looks again).
"""
from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from reskontro import services
from reskontro.site import Site

WAIT = 0.15          # seconds a request waits for a new answer before it shows the last one
MAX_AGE = 900.0      # seconds: recompute even if nothing seems changed (a lost marker, a PostgreSQL store)


@dataclass(frozen=True)
class Answer:
    value: Any                  # None: not computed yet (right after a start)
    at: datetime | None         # when it was computed (the site's zone)
    current: bool               # nothing changed since it was computed
    refreshing: bool = False    # a newer one is being computed


class SitePool:
    """Up to `size` open sites, lent one to a request at a time."""

    def __init__(self, site_dir: Path, size: int = 4) -> None:
        self.site_dir = site_dir
        self._idle: queue.LifoQueue[Site] = queue.LifoQueue()
        self._slots = threading.BoundedSemaphore(size)
        self.config = Site.open(site_dir).config

    @contextmanager
    def site(self) -> Iterator[Site]:
        with self._slots:
            try:
                site = self._idle.get_nowait()
            except queue.Empty:
                site = Site(self.config)
                site.rules       # loaded now: its cost is not an answer's
            try:
                yield site
            finally:
                self._idle.put(site)

    def close(self) -> None:
        while True:
            try:
                self._idle.get_nowait().db.dispose()
            except queue.Empty:
                return


@dataclass
class _Slot:
    value: Any = None
    at: datetime | None = None
    marker: object = None         # the store's change marker when the computation began
    day: object = None
    ended: float = 0.0            # time.monotonic() of the last computation's end
    error: BaseException | None = None
    busy: bool = False
    done: threading.Event = field(default_factory=threading.Event)


class Answers:
    """Kept answers by key (see the module's text)."""

    def __init__(self, pool: SitePool, *, wait: float = WAIT, max_age: float = MAX_AGE) -> None:
        self.pool = pool
        self.wait = wait
        self.max_age = max_age
        self._slots: dict[str, _Slot] = {}
        self._lock = threading.Lock()
        with pool.site() as site:
            self._watch = services.change_watch(site)

    def call(self, fn: Callable[[Site], Any]) -> Any:
        """An answer computed now (one entry, one file, an action)."""
        with self.pool.site() as site:
            return fn(site)

    def get(self, key: str, fn: Callable[[Site], Any]) -> Answer:
        marker, day = self._watch.marker(), datetime.now(self.pool.config.tz).date()
        with self._lock:
            slot = self._slots.setdefault(key, _Slot())
            if self._current(slot, marker, day):
                return Answer(slot.value, slot.at, True)
            if not slot.busy:
                self._start(key, slot, fn)
            done = slot.done
        done.wait(self.wait)
        with self._lock:
            if slot.error is not None and slot.at is None:
                error, slot.error = slot.error, None
                raise error
            return Answer(slot.value, slot.at, self._current(slot, marker, day), slot.busy)

    def warm(self, key: str, fn: Callable[[Site], Any]) -> None:
        """Start computing an answer now (at start), so the first page finds it."""
        with self._lock:
            slot = self._slots.setdefault(key, _Slot())
            if not slot.busy:
                self._start(key, slot, fn)

    def close(self) -> None:
        self._watch.close()

    def _current(self, slot: _Slot, marker: object, day: object) -> bool:
        return (slot.at is not None and not slot.busy and marker is not None and slot.marker == marker
                and slot.day == day and time.monotonic() - slot.ended < self.max_age)

    def _start(self, key: str, slot: _Slot, fn: Callable[[Site], Any]) -> None:
        slot.busy = True
        slot.done = threading.Event()
        threading.Thread(target=self._compute, args=(slot, fn), daemon=True, name=f"web-answer-{key}").start()

    def _compute(self, slot: _Slot, fn: Callable[[Site], Any]) -> None:
        marker = self._watch.marker()            # before reading: a change meanwhile makes it stale
        try:
            with self.pool.site() as site:
                value = fn(site)
                at = datetime.now(site.config.tz)
        except BaseException as exc:             # noqa: BLE001 - shown by the request that waits for it
            with self._lock:
                slot.error, slot.busy = exc, False
                slot.done.set()
            return
        with self._lock:
            slot.value, slot.at, slot.marker, slot.day = value, at, marker, at.date()
            slot.ended, slot.error, slot.busy = time.monotonic(), None, False
            slot.done.set()
