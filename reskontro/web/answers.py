"""Service answers for the pages: each request borrows a site of its own, and answers that cost
more than a page may take are served from the last computation (its time shown) while the next
is computed in the background.

A site holds a rule engine (durable_rules keeps state in its host), so two requests never share
one: a small pool of sites, each with its own engine and database pool.
"""
from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from reskontro.site import Site

LIVE_UNDER = 0.15    # seconds: an answer computed faster than this is computed on every request
MAX_AGE = 60.0       # seconds: a slower answer is recomputed in the background when older


@dataclass(frozen=True)
class Answer:
    value: Any
    at: datetime          # when it was computed (the site's zone)
    live: bool            # computed for this request (else: the last one, `at`)
    refreshing: bool = False   # a newer one is being computed


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
    cost: float = 0.0             # seconds the last computation took
    cost_at: float = 0.0          # time.monotonic() when it ended
    stale: bool = False
    busy: bool = False


class Answers:
    """Cached answers by key (see the module's text)."""

    def __init__(self, pool: SitePool, *, live_under: float = LIVE_UNDER, max_age: float = MAX_AGE) -> None:
        self.pool = pool
        self.live_under = live_under
        self.max_age = max_age
        self._slots: dict[str, _Slot] = {}
        self._lock = threading.Lock()

    def call(self, fn: Callable[[Site], Any]) -> Any:
        """An answer that is always computed now (one entry, one file, an action)."""
        with self.pool.site() as site:
            return fn(site)

    def get(self, key: str, fn: Callable[[Site], Any]) -> Answer:
        with self._lock:
            slot = self._slots.setdefault(key, _Slot())
            have = slot.at is not None
            cheap = have and slot.cost < self.live_under
            old = have and (slot.stale or time.monotonic() - slot.cost_at > self.max_age)
            if have and not cheap:
                if old and not slot.busy:
                    slot.busy = True
                    threading.Thread(target=self._refresh, args=(key, fn), daemon=True,
                                     name=f"web-answer-{key}").start()
                return Answer(slot.value, slot.at, False, slot.busy)
        value = self._compute(key, fn)
        return Answer(value, self._slots[key].at, True)

    def forget(self) -> None:
        """After an action: every answer is recomputed before it is shown live again."""
        with self._lock:
            for slot in self._slots.values():
                slot.stale = True

    def warm(self, key: str, fn: Callable[[Site], Any]) -> None:
        """Compute an answer in the background now (at start), so the first page is quick."""
        with self._lock:
            slot = self._slots.setdefault(key, _Slot())
            if slot.busy:
                return
            slot.busy = True
        threading.Thread(target=self._refresh, args=(key, fn), daemon=True, name=f"web-warm-{key}").start()

    def _refresh(self, key: str, fn: Callable[[Site], Any]) -> None:
        try:
            self._compute(key, fn)
        except Exception:        # noqa: BLE001 - the next request computes it and shows the error
            pass
        finally:
            with self._lock:
                self._slots[key].busy = False

    def _compute(self, key: str, fn: Callable[[Site], Any]) -> Any:
        with self.pool.site() as site:
            start = time.monotonic()
            value = fn(site)
            at = datetime.now(site.config.tz)
        with self._lock:
            slot = self._slots[key]
            slot.value, slot.at, slot.cost, slot.stale = value, at, time.monotonic() - start, False
            slot.cost_at = time.monotonic()
        return value
