"""The pre-send check in a second process, reading the file while it is being written.

Checking a big file costs about as much as writing it (each is a pass in Python over every
record), so on two cores the two overlap. The export writes the ``.part`` file at its own
pace and tells this process how many bytes are in it; the child reads the file up to there
(it waits on the announcements, never polls) and so reads exactly the bytes written, and the
writer never waits for the reader: what the export still has to do meanwhile (its journal
work) overlaps the rest of the check. A second reading (diagnosing a failing file,
confirming a repeated id) reads the file once it is complete.

Protocol: ``python -m reskontro.transfer.check_worker XSD``; the child compiles the XSD while the
parent decides, then reads lines on stdin: one JSON job (path, name, size, database URL: on
stdin, so a password in the URL never shows in the process list), then ``<bytes written>``
lines and a last ``end <size>``; it prints the errors as one JSON array. No job line (stdin
closed): nothing to check. Stdin closed before ``end``: the export is gone, the child stops.

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

from reskontro.transfer.contract import ContractError
from reskontro.transfer.helper_process import HelperProcess

log = logging.getLogger(__name__)


class CheckWorker(HelperProcess):
    """A child process checking one file; start it early (its start-up then overlaps)."""

    def __init__(self, xsd: Path) -> None:
        super().__init__("reskontro.transfer.check_worker", str(xsd), stdout=subprocess.PIPE)
        self._broken = False

    def begin(self, path: Path, size: int, db_url: str) -> None:
        """The file to check (being written), its expected size, the database to look up
        earlier files' customers and entries in."""
        job = {"path": str(path), "name": path.name, "size": size, "db": db_url}
        self._say(json.dumps(job))

    def written(self, size: int) -> None:
        """The file's first `size` bytes are written (flushed to the file)."""
        self._say(str(size))

    def done(self, size: int) -> None:
        """The file is complete: `size` bytes."""
        self._say(f"end {size}")

    def _say(self, line: str) -> None:
        if self._broken or self._proc is None:
            return
        try:
            self._proc.stdin.write(line.encode() + b"\n")
            self._proc.stdin.flush()
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


class Announcing:
    """Writes to the file and tells the check process how far the file is written."""

    def __init__(self, out: BinaryIO, worker: CheckWorker) -> None:
        self._out, self._worker, self._size = out, worker, 0

    def write(self, data: bytes) -> int:
        n = self._out.write(data)
        self._out.flush()                # in the file before it is announced
        self._size += n
        self._worker.written(self._size)
        return n


class ExportGone(Exception):
    """Stdin ended before the file did: the export was stopped."""


class _Following:
    """The file being written, read as far as the export has announced (waits on stdin)."""

    def __init__(self, path: Path, control: BinaryIO) -> None:
        self._file = path.open("rb")
        self._control = control
        self._pos = self._announced = 0
        self._end: int | None = None

    def read(self, n: int = -1) -> bytes:
        while self._pos >= self._announced:
            if self._end is not None:
                return b""
            line = self._control.readline()
            if not line:
                raise ExportGone("the export stopped before the file was complete")
            if line.startswith(b"end "):
                self._end = self._announced = int(line[4:])
            else:
                self._announced = int(line)
        want = self._announced - self._pos if n < 0 else min(n, self._announced - self._pos)
        data = self._file.read(want)
        self._pos += len(data)
        return data

    def close(self) -> None:
        self._file.close()


def _main(argv: list[str]) -> int:
    # Imported here: the parent needs none of this.
    from sqlalchemy import create_engine

    from reskontro.transfer import journal
    from reskontro.transfer.contract import TransferChecker

    checker = TransferChecker(Path(argv[1]))      # compiled while the parent decides
    stdin = sys.stdin.buffer
    line = stdin.readline()
    if not line.strip():
        return 0
    job = json.loads(line)
    engine = create_engine(job["db"])
    source = _Following(Path(job["path"]), stdin)
    try:
        with engine.connect() as conn:
            result = checker.check_stream(source, Path(job["path"]), size=job["size"], name=job["name"],
                                          known_customer=journal.known_customer(conn),
                                          known_entry_type=journal.known_entry_type(conn))
    except ExportGone:
        return 3
    finally:
        source.close()
        engine.dispose()
    sys.stdout.write(json.dumps([asdict(e) for e in result.errors]))
    return 0


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv))
