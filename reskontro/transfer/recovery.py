"""Completing or abandoning what a crashed export left: a file still ``writing``."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

from sqlalchemy import func, select

from reskontro.files.folders import check_pinned, set_aside
from reskontro.ledger import schema as s
from reskontro.transfer import journal
from reskontro.transfer.contract import TransferChecker


def recover(conn_factory, outbox: Path, xsd: Path | None = None) -> list[str]:
    """Finish or abandon files a crashed run left in state ``writing``. A complete file (it
    was renamed only after passing its check) is taken if it still holds the bytes written,
    whose SHA-256 was journalled before the check; a file with other bytes is set aside.
    (A file reserved by an older version has no hash: it is checked again, with `xsd`.)"""
    done = []
    with conn_factory() as conn:
        writing = journal.files(conn, ["writing"])
    for f in writing:
        final = outbox / f.name
        part = outbox / (f.name + ".part")
        with conn_factory() as conn:
            if final.is_file() and not final.is_symlink():
                n = conn.execute(select(func.count()).select_from(s.file_items).where(
                    s.file_items.c.file_id == f.file_id, s.file_items.c.kind == "entry")).scalar_one()
                sha256, problems = None, []
                if f.sha256 is not None:
                    now = _pinned_sha256(final)
                    if now != f.sha256:
                        problems = [f"{f.name}: not the file that was written and checked (SHA-256 "
                                    f"{(now or '?')[:16]}…, written {f.sha256[:16]}…): changed in the outbox"]
                    sha256 = f.sha256
                elif xsd is not None:
                    problems, sha256 = check_pinned(final, lambda source: TransferChecker(xsd).check(
                        source, f.name, known_customer=journal.known_customer(conn),
                        known_entry_type=journal.known_entry_type(conn)).errors)
                    if not problems and sha256 is None:
                        problems = [f"{f.name}: the file changed while it was being checked"]
                if problems:
                    text = "\n".join(str(p) for p in problems)
                    set_aside(final, outbox / "rejected", f"{f.name} failed the pre-send check when a run "
                              f"completed it after a crash, and was not sent; its content stays pending.\n{text}")
                    journal.drop_file(conn, f.file_id, "invalid", text[:4000])
                    done.append(f"{f.file_id}: failed its check when completed after a crash; moved to "
                                "outbox/rejected/, its content goes in the next file")
                    continue
                journal.mark_written(conn, f.file_id, n, sha256=sha256)
                done.append(f"{f.file_id}: completed (the file was whole in the outbox)")
            else:
                if os.path.lexists(part):
                    part.unlink()
                journal.drop_file(conn, f.file_id, "abandoned", "the run stopped before the file was complete")
                done.append(f"{f.file_id}: abandoned (incomplete); its content goes in the next file")
    return done


def _pinned_sha256(path: Path) -> str | None:
    """SHA-256 of the regular file at `path` (never through a link); None if it is not one."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


