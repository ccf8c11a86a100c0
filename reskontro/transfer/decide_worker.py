"""Deciding a big ledger's unmatched entries in a second process.

Deciding the whole ledger (a backlog, or the first night after the rules changed) is the
export's longest step, and it falls in two independent halves: the entries in no match (each
its own group) and the match groups. This process decides and selects the first half while
the export does the second; the export then takes in what this one chose.

Only on SQLite, and only once the export holds the write lock: no other writer can commit
until the export does, so both processes read the same committed ledger. (A PostgreSQL
transaction has no such guarantee without sharing its snapshot: there the export decides
alone.) The child only reads; the export writes everything.

Protocol: ``python -m reskontro.transfer.decide_worker FD PARENT_PID``; the job comes pickled on stdin (the rule
file as the export loaded it, the mode, the database URL, backlog or not, the run's date) and
the answer goes to FD, an unlinked temporary file of the parent: pickled ("items", rows),
("handled", ids) and ("decisions", (changes, states)) records (rules.history), ("held", count),
then ("done", count). The parent reads it only after the child
exited 0 with "done" at the end; anything else and the parent decides that half itself.
"""
from __future__ import annotations

import logging
import os
import pickle
import sys
import tempfile
from collections.abc import Iterator

from reskontro.transfer.helper_process import HelperProcess

log = logging.getLogger(__name__)


class DecideWorker(HelperProcess):
    """The child deciding its share; `results()` once the export wants it."""

    def __init__(self, rule_file: object, mode: str, db_url: str, backlog: bool, today=None) -> None:
        self._out = tempfile.TemporaryFile()
        fd = self._out.fileno()
        super().__init__("reskontro.transfer.decide_worker", str(fd), str(os.getpid()), pass_fds=(fd,))
        if self._proc is None:
            return      # could not start: results() says so
        try:
            # the URL goes on stdin, not the command line: a password never shows in `ps`
            pickle.dump((rule_file, mode, db_url, backlog, today), self._proc.stdin)
            self._proc.stdin.close()
        except (BrokenPipeError, OSError):
            # the child died at start-up: results() says so. The pipe is closed here (its
            # buffered bytes can never be written), not left for the garbage collector.
            try:
                self._proc.stdin.close()
            except OSError:
                pass

    def results(self) -> Iterator[tuple] | None:
        """The child's records; None when it failed (the caller then decides its share)."""
        proc, self._proc = self._proc, None
        if proc is None:
            return None
        code = proc.wait()
        if code != 0:
            log.warning("the decide process failed (%s); deciding here instead", self._why(code))
            return None
        self._out.seek(0)
        return self._records()

    def _records(self) -> Iterator[tuple]:
        # Exit status 0 means the child wrote "done" last; a file without it is a bug, and
        # raising rolls the export's transaction back (nothing half-done).
        while True:
            try:
                rec = pickle.load(self._out)
            except EOFError:
                raise RuntimeError("the decide process's answer ends early") from None
            if rec[0] == "done":
                return
            yield rec

    def close(self) -> None:
        super().close()
        self._out.close()


def _while_parent_lives(items: Iterator, parent: int, every: int = 5000) -> Iterator:
    """Stop (exit status 3) once the export that started us is gone: killed, it will never
    read the answer, and the next run decides again."""
    for i, x in enumerate(items):
        if i % every == 0 and os.getppid() != parent:
            raise SystemExit(3)
        yield x


def _main(argv: list[str]) -> int:
    from sqlalchemy import create_engine

    from reskontro.rules.decide import decide_ledger
    from reskontro.rules.engine import RuleEngine
    from reskontro.rules.history import Recorder
    from reskontro.transfer.selection import Batch, select_all

    rule_file, mode, db_url, backlog, today = pickle.load(sys.stdin.buffer)
    engine = RuleEngine(rule_file)
    with os.fdopen(int(argv[1]), "wb") as out:
        batch = Batch(lambda rows: pickle.dump(("items", rows), out, pickle.HIGHEST_PROTOCOL))
        handled: list[tuple[str, str]] = []

        def flush() -> None:
            pickle.dump(("handled", handled), out, pickle.HIGHEST_PROTOCOL)
            handled.clear()
        history = Recorder(lambda changes, states: pickle.dump(("decisions", (changes, states)), out,
                                                              pickle.HIGHEST_PROTOCOL))
        db = create_engine(db_url, connect_args={"timeout": 30})
        try:
            with db.connect() as conn:
                decided = _while_parent_lives(decide_ledger(conn, engine, mode, matched=False, today=today),
                                              int(argv[2]))
                n = select_all(history.watch(decided), batch, backlog, handled, flush)
        finally:
            db.dispose()
        batch.flush()
        flush()
        history.flush()
        pickle.dump(("held", batch.held), out, pickle.HIGHEST_PROTOCOL)
        pickle.dump(("done", n), out, pickle.HIGHEST_PROTOCOL)
    return 0


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv))
