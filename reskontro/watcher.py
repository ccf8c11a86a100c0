"""`reskontro watch`: the inbox watcher (watchdog), with a periodic rescan because events can
be lost (inotify overflow, network shares). Events are only hints: every pass looks at the
folder itself, and a file is taken only when complete (size and mtime stable between two looks,
and its format's end present), so a half-written or half-uploaded file is left alone.
"""
from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import Engine
from watchdog.events import FileSystemEventHandler
from watchdog.observers import Observer

from reskontro.adapters.payment_files import is_complete

from .inbox import Processed, candidates, process_inbox
from .payments import list_payment_file

log = logging.getLogger("reskontro.watch")
_RECEIPT_END = re.compile(rb"</(?:[A-Za-z_][\w.-]*:)?TransferReceipt\s*>\s*\Z")
STALE_AFTER = 600.0   # seconds: an incomplete file this old is processed anyway (and fails loudly)


def ready(path: Path, seen: dict[Path, tuple[int, int]], now: float) -> bool:
    """Complete: the same size and mtime as at the last look, and the format's end present."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return False
    key = (st.st_size, st.st_mtime_ns)
    stable = seen.get(path) == key
    seen[path] = key
    if not stable or st.st_size == 0 and now - st.st_mtime < STALE_AFTER:
        return False
    if now - st.st_mtime >= STALE_AFTER:
        return True
    with path.open("rb") as f:   # the head tells the format, the tail holds its end marker
        if st.st_size <= 1 << 17:
            data = f.read()
        else:
            head = f.read(4096)
            f.seek(-65536, 2)
            data = head + f.read()
    if path.name.endswith(".receipt.xml"):
        return bool(_RECEIPT_END.search(data))
    return is_complete(data)


class _Wake(FileSystemEventHandler):
    def __init__(self, event: threading.Event):
        self.event = event

    def on_any_event(self, event):   # any change: look again soon
        self.event.set()


def process_ready(db: Engine, inbox: Path, seen: dict, now: float) -> list[Processed]:
    """One pass: the files that are complete now."""
    waiting = [p for p in candidates(inbox) if not ready(p, seen, now)]
    hold = {p.name for p in waiting}
    # process_inbox takes everything in the inbox; move nothing that is not ready: filter by name
    return process_inbox(db, inbox, payments=list_payment_file, skip=hold)


def watch(db: Engine, inbox: Path, *, once: bool = False, rescan: float = 60.0, settle: float = 1.0,
          stop: threading.Event | None = None, report: Callable[[Processed], None] | None = None) -> int:
    """Process the inbox until `stop` is set (or once). Returns the number of files handled."""
    inbox.mkdir(parents=True, exist_ok=True)
    stop = stop or threading.Event()
    seen: dict[Path, tuple[int, int]] = {}
    handled = 0

    def one_pass() -> None:
        nonlocal handled
        for r in process_ready(db, inbox, seen, time.time()):
            handled += 1
            (log.warning if r.kind == "failed" else log.info)("%s (%s): %s", r.name, r.kind, r.detail)
            if report:
                report(r)

    if once:
        # Two looks a moment apart decide what is complete; what is still changing stays.
        candidates_now = candidates(inbox)
        for p in candidates_now:
            ready(p, seen, time.time())
        if candidates_now:
            time.sleep(settle)
        one_pass()
        return handled

    wake = threading.Event()
    observer = Observer()
    observer.schedule(_Wake(wake), str(inbox), recursive=False)
    observer.start()          # first the observer, then the scan: nothing arriving in between is missed
    try:
        last_scan = 0.0
        while not stop.is_set():
            now = time.time()
            if wake.is_set() or now - last_scan >= rescan or seen:
                wake.clear()
                try:
                    one_pass()
                except Exception:          # the watcher keeps running after anything
                    log.exception("inbox pass failed; will retry")
                last_scan = now
            stop.wait(settle)
    finally:
        observer.stop()
        observer.join(timeout=5)
    return handled
