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
from datetime import datetime, timedelta, timezone
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


# A receiver's clock may run a little behind ours (and a receipt may give whole seconds): a
# receipt dated up to this much before its file was created is still believed.
CLOCK_SKEW = timedelta(minutes=5)
# Only a file that left can have a receipt: uploaded, or being uploaded when the connection
# dropped or the run died (the receipt then shows the receiver got it).
LEFT = ("uploading", "uploaded")


def _items(n: int) -> str:
    return f"{n} item{'' if n == 1 else 's'}"


def apply_receipt(db: Engine, data: bytes, name: str) -> str:
    """Read one receipt into the journal. A receipt that is not believed (malformed, for a file
    this site never wrote or that never left, dated before the file, or contradicting an
    earlier receipt) is an InputError saying why: the caller sets it aside, nothing changes."""
    receipt = read_receipt(data, name)
    fid = receipt.file_id
    with db.begin() as conn:
        rec = journal.file_record(conn, fid)
        if rec is None:
            raise InputError(f"{name}: refused: a receipt for {fid}, a file this site never wrote")
        if receipt.received_at < rec.created_at - CLOCK_SKEW:
            raise InputError(f"{name}: refused: it says {fid} was received at {receipt.received_at.isoformat()}, "
                             f"before the file was created ({rec.created_at.isoformat()}): it is not "
                             "this file's receipt")
        if rec.state in ("accepted", "rejected"):
            if receipt.status == rec.state:       # the same answer again: nothing to do
                return f"{fid}: already {rec.state}; this receipt repeats it and changes nothing"
            raise InputError(f"{name}: refused: it says {fid} was {receipt.status}, but an earlier receipt said "
                             f"{rec.state}, and the journal keeps that; ask the receiver which holds")
        if rec.state not in LEFT:
            hint = {"written": "it is complete in the outbox but was never uploaded; if it did reach the "
                               "receiver another way, run `reskontro send` (a remote copy with the same "
                               "content counts as delivered) and put this receipt back into inbox/",
                    "invalid": "it failed the pre-send check and was never sent"}.get(
                rec.state, "it was never completed, so never sent")
            raise InputError(f"{name}: refused: a receipt ({receipt.status}) for {fid}, which is in state "
                             f"{rec.state}: {hint}")
        if receipt.status == "accepted":
            journal.accept(conn, fid)
            return f"{fid}: accepted"
        errors = "; ".join(f"[{e.code}]{' ' + e.ref if e.ref else ''} {e.text}" for e in receipt.errors)
        errors = errors or "the receipt gives no reason"
        r = journal.reject(conn, fid, errors)
        text = f"{fid}: REJECTED by the receiver ({errors}); {_items(r.again)} {'goes' if r.again == 1 else 'go'} again in the next file"
        if r.elsewhere:
            text += f"; {_items(r.elsewhere)} the receiver has or will have from another file"
        if r.not_in_ledger:
            ids = ", ".join(f"{kind} {id_}" for kind, id_ in r.not_in_ledger_ids)
            more = ", …" if r.not_in_ledger > len(r.not_in_ledger_ids) else ""
            if rec.kind == "manual":
                text += (f"; {r.not_in_ledger} {'was' if r.not_in_ledger == 1 else 'were'} only in the "
                         f"hand-dropped file and {'is' if r.not_in_ledger == 1 else 'are'} not in the ledger "
                         f"({ids}{more}): we cannot send them; drop a corrected file if the receiver must "
                         "have them")
            else:
                text += (f"; {r.not_in_ledger} {'is' if r.not_in_ledger == 1 else 'are'} no longer in the "
                         f"ledger ({ids}{more}) and cannot go again")
        return text


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
