"""One run at a time: an exclusive, non-blocking lock file (released by the kernel on any exit,
so a killed run never leaves a stale lock)."""
from __future__ import annotations

import errno
import fcntl
import os
from contextlib import contextmanager
from pathlib import Path
from collections.abc import Iterator

from reskontro.files.private import private_dir


class LockedError(RuntimeError):
    pass


class LockHeldError(LockedError):
    """Another run holds the lock: try again when it has finished (not a fault of this one)."""


@contextmanager
def run_lock(path: Path) -> Iterator[None]:
    private_dir(path.parent)
    try:
        # never through a link planted at the name: the pid would be written wherever it points
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise LockedError(f"{path} is a symbolic link; the run lock is never taken through one "
                              "(remove it, a run creates the file)") from None
        raise
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
            raise LockHeldError(f"another reskontro run holds {path} (pid {holder}); "
                              "runs never overlap, try again when it has finished") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)
