"""Files arriving in inbox/: receipts go to the journal, payment files to the bank payments.

Each file is claimed by a rename into ``inbox/processing/``, handled, then moved to
``inbox/done/`` or to ``inbox/failed/`` with ``<name>.reason.txt`` beside it. A file whose
content was processed before (same SHA-256) is not processed again. A crash leaves the file in
processing/, and the next pass takes it up again; the content hash and the archive references
make that retry idempotent.
"""
from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from sqlalchemy import Engine, insert, select

from . import faults, journal
from . import schema as s
from .domain import InputError
from .folders import is_temporary, set_aside, unique
from .receipts import read_receipt

_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._\-]{0,200}")


@dataclass(frozen=True)
class Processed:
    name: str
    kind: str            # receipt | payments | duplicate | failed
    detail: str


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def candidates(inbox: Path) -> list[Path]:
    """Complete-looking files waiting in the inbox (temporary names are left alone)."""
    out = []
    for p in sorted(inbox.iterdir()) if inbox.is_dir() else []:
        if p.is_file() and not p.is_symlink() and not is_temporary(p.name):
            out.append(p)
    return out


def apply_receipt(db: Engine, data: bytes, name: str) -> str:
    receipt = read_receipt(data, name)
    with db.begin() as conn:
        rec = journal.file_record(conn, receipt.file_id)
        if rec is None:
            raise InputError(f"{name}: receipt for {receipt.file_id}, a file this site never wrote")
        if rec.state in ("accepted", "rejected"):
            # Settled once: a rejected file's content has gone again, so a later receipt
            # (a duplicate, or a contradicting one) changes nothing.
            return f"{receipt.file_id}: already {rec.state}; this receipt ({receipt.status}) changes nothing"
        if receipt.status == "accepted":
            journal.accept(conn, receipt.file_id)
            return f"{receipt.file_id}: accepted"
        errors = "; ".join(f"[{e.code}]{' ' + e.ref if e.ref else ''} {e.text}" for e in receipt.errors)
        errors = errors or "the receipt gives no reason"
        n = journal.reject(conn, receipt.file_id, errors)
        return f"{receipt.file_id}: REJECTED by the receiver ({errors}); {n} items go again in the next file"


def process_inbox(db: Engine, inbox: Path, *, payments: Callable[[Engine, bytes, str, str], str] | None = None,
                  only_receipts: bool = False, skip: set[str] = frozenset(),
                  max_bytes: int = 64 << 20) -> list[Processed]:
    """One pass over the inbox (and anything a crash left in processing/)."""
    processing, done, failed = inbox / "processing", inbox / "done", inbox / "failed"
    for d in (processing, done, failed):
        d.mkdir(parents=True, exist_ok=True)
    results = []
    leftovers = candidates(processing)
    for path in leftovers + candidates(inbox):
        is_receipt = path.name.endswith(".receipt.xml")
        if (only_receipts and not is_receipt) or (path.parent == inbox and path.name in skip):
            continue
        if not _SAFE_NAME.fullmatch(path.name):
            set_aside(path, failed, f"refused: the file name {path.name!r} is not a safe name", "unsafe-name")
            results.append(Processed(path.name, "failed", "unsafe file name"))
            continue
        claimed = path if path.parent == processing else processing / path.name
        if claimed != path:
            if claimed.exists():
                claimed = unique(processing, path.name)
            try:
                os.replace(path, claimed)   # the claim: atomic on one filesystem
            except FileNotFoundError:
                continue                    # another pass (the watcher) claimed it first
        faults.point("inbox-claimed")
        digest = _sha256(claimed)
        try:
            with db.connect() as conn:
                seen = conn.execute(select(s.inbox_files.c.name).where(s.inbox_files.c.sha256 == digest)).scalar()
            if seen is not None:
                os.replace(claimed, unique(done, claimed.name))
                results.append(Processed(path.name, "duplicate", f"same content as {seen}, processed before"))
                continue
            if claimed.stat().st_size > max_bytes:
                raise InputError(f"{path.name}: {claimed.stat().st_size} bytes is over the "
                                 f"{max_bytes}-byte limit for inbox files")
            data = claimed.read_bytes()
            if is_receipt:
                detail = apply_receipt(db, data, path.name)
                kind = "receipt"
            elif payments is None:
                raise InputError(f"{path.name}: not a receipt (*.receipt.xml)")
            else:
                detail = payments(db, data, path.name, digest)
                kind = "payments"
            with db.begin() as conn:
                if conn.execute(select(s.inbox_files.c.sha256).where(s.inbox_files.c.sha256 == digest)).first() is None:
                    conn.execute(insert(s.inbox_files).values(
                        sha256=digest, name=path.name, format=kind,
                        processed_at=datetime.now(timezone.utc), payment_count=0))
            faults.point("inbox-recorded")
            os.replace(claimed, unique(done, claimed.name))
            results.append(Processed(path.name, kind, detail))
        except InputError as exc:
            set_aside(claimed, failed, str(exc))
            results.append(Processed(path.name, "failed", str(exc)))
    return results
