"""The export's helper processes, behind one small interface: a big export uses the
machine's second core to decide the unmatched half of a ledger decided whole, and to check
the file while it is written. The plain case is no helper at all: every method then does
nothing, and the export does the work itself. A helper that fails, or cannot start, costs
time, never a decision or a check: its work falls back to the export.
"""
from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path
from typing import BinaryIO

from sqlalchemy import Connection, func, select

from reskontro.config import Config
from reskontro.ledger import schema as s
from reskontro.transfer.check_worker import Announcing, CheckWorker
from reskontro.transfer.decide_worker import DecideWorker

# From this many unmatched entries a ledger decided whole decides them in a second process.
PARALLEL_DECIDE_FROM = 50_000
# From this many entries the check runs in a second process while the file is written (its
# start-up, ~0.3 s of one core, is then small beside the work it takes over).
PARALLEL_CHECK_FROM = 20_000


def _worker_can_read(url: str) -> bool:
    """A second process sees the same database (not an in-memory SQLite)."""
    return not (url.startswith("sqlite") and (url.rstrip("/") in ("sqlite:", "sqlite+pysqlite:")
                                               or ":memory:" in url or "mode=memory" in url))


class Helpers:
    """The helper processes of one export; closed with `stack`, whatever happens."""

    def __init__(self, config: Config, stack: ExitStack) -> None:
        self.config, self.stack = config, stack
        self.decider: DecideWorker | None = None
        self.checker: CheckWorker | None = None

    # --- deciding -------------------------------------------------------------------------
    def start_deciding(self, conn: Connection, rule_file, full: bool, backlog: bool, today=None) -> bool:
        """A big ledger decided whole: its unmatched entries in a second process, started
        now, while the export holds SQLite's write lock (both then read the same ledger).
        True when it took the unmatched half."""
        url = self.config.database
        if full and conn.dialect.name == "sqlite" and _worker_can_read(url):
            e = s.entries
            unmatched = conn.execute(select(func.count()).select_from(e).where(e.c.match_id.is_(None))).scalar_one()
            if unmatched >= PARALLEL_DECIDE_FROM:
                self.decider = self.stack.enter_context(DecideWorker(rule_file, self.config.mode, url, backlog,
                                                                     today))
        return self.decider is not None

    def decided(self):
        """The decide process's records, or None when it failed (decide its half here)."""
        return self.decider.results() if self.decider is not None else None

    # --- checking -------------------------------------------------------------------------
    def start_checking(self, entries: int, backlog: bool) -> None:
        """A big file is checked in a second process while it is written; started before
        rendering, so its start-up overlaps the rest of step 1."""
        if (backlog or entries >= PARALLEL_CHECK_FROM) and _worker_can_read(self.config.database):
            self.checker = self.stack.enter_context(CheckWorker(self.config.xsd))

    def writing(self, f: BinaryIO, part: Path, records: int) -> BinaryIO:
        """Where the renderer writes: the file, announced to the check process as it grows."""
        if self.checker is None:
            return f
        # ~300 bytes per record: it only sizes the checker's id tables
        self.checker.begin(part, 300 * records, self.config.database)
        return Announcing(f, self.checker)

    def written(self, size: int) -> None:
        if self.checker is not None:
            self.checker.done(size)

    @property
    def checking(self) -> bool:
        return self.checker is not None

    def check_result(self) -> list | None:
        """The check process's errors, or None: no process, or it failed (check here)."""
        return self.checker.finish() if self.checker is not None else None
