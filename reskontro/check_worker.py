"""The pre-send check in a second process, reading the file while it is being written.

Checking a big file costs about as much as writing it (each is a pass in Python over every
record), so on two cores the two overlap: the export writes each chunk to the ``.part`` file
and to this process's stdin. The child reads exactly the bytes written; a second reading
(diagnosing a failing file, confirming a repeated id) reads the ``.part`` file, complete by
then. It is a subprocess, not a fork: a fork would inherit the run lock and the open database.

Protocol: ``python -m reskontro.check_worker XSD``; the child compiles the XSD while the
parent decides, then reads one JSON line (path, name, size, database URL: on stdin, so a
password in the URL never shows in the process list), then the file's bytes to EOF, and
prints the errors as one JSON array. No header line (stdin closed): nothing to check.

The parent falls back to checking in its own process whenever the child is missing or fails,
so a broken child costs time, never a check.
"""
from __future__ import annotations

import json
import logging
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path
from typing import BinaryIO

from .contract import ContractError
from .helper_process import HelperProcess

log = logging.getLogger(__name__)
_PIPE_SIZE = 1 << 20      # a bigger pipe: the writer blocks less on a reader a chunk behind
_F_SETPIPE_SZ = 1031      # Linux fcntl


class CheckWorker(HelperProcess):
    """A child process checking one file; start it early (its start-up then overlaps)."""

    def __init__(self, xsd: Path) -> None:
        super().__init__("reskontro.check_worker", str(xsd), stdout=subprocess.PIPE)
        self._broken = False
        try:
            import fcntl
            fcntl.fcntl(self._proc.stdin.fileno(), _F_SETPIPE_SZ, _PIPE_SIZE)
        except (ImportError, OSError):
            pass      # the default pipe size works, a little slower

    def begin(self, path: Path, size: int, db_url: str) -> None:
        job = {"path": str(path), "name": path.name, "size": size, "db": db_url}
        self.write(json.dumps(job).encode() + b"\n")

    def write(self, data: bytes) -> None:
        if self._broken or self._proc is None:
            return
        try:
            self._proc.stdin.write(data)
        except (BrokenPipeError, OSError):
            self._broken = True          # the child died: the parent checks (finish -> None)

    def finish(self) -> list[ContractError] | None:
        """The child's errors (empty: the file may be sent); None if the child failed."""
        proc, self._proc = self._proc, None
        if proc is None:
            return None
        try:
            proc.stdin.close()
        except (BrokenPipeError, OSError):
            self._broken = True
        with proc.stdout:
            out = proc.stdout.read()
        code = proc.wait()
        if code != 0 or self._broken:
            log.warning("the check process failed (%s); checking in this process instead", self._why(code))
            return None
        try:
            return [ContractError(**e) for e in json.loads(out)]
        except (ValueError, TypeError) as e:
            log.warning("the check process answered %r (%s); checking in this process instead", out[:200], e)
            return None

class Tee:
    """Writes to the file and to the check process."""

    def __init__(self, out: BinaryIO, worker: CheckWorker) -> None:
        self._out, self._worker = out, worker

    def write(self, data: bytes) -> int:
        n = self._out.write(data)
        self._worker.write(data)
        return n


def _main(argv: list[str]) -> int:
    # Imported here: the parent needs none of this.
    from sqlalchemy import create_engine

    from . import journal
    from .contract import TransferChecker

    checker = TransferChecker(Path(argv[1]))      # compiled while the parent decides
    stdin = sys.stdin.buffer
    line = stdin.readline()
    if not line.strip():
        return 0
    job = json.loads(line)
    engine = create_engine(job["db"])
    try:
        with engine.connect() as conn:
            result = checker.check_stream(stdin, Path(job["path"]), size=job["size"], name=job["name"],
                                          known_customer=journal.known_customer(conn),
                                          known_entry_type=journal.known_entry_type(conn))
    finally:
        engine.dispose()
    sys.stdout.write(json.dumps([asdict(e) for e in result.errors]))
    return 0


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv))
