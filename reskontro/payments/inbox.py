"""Files arriving in inbox/: receipts go to the journal, payment files to the bank payments.

Every path into the inbox (the watcher, `watch --once`, `receipts`, the nightly cycle) takes a
file only when :func:`complete` says so, and only while it holds the claim lock (an flock on
``inbox/processing/`` itself): one pass at a time owns that folder. A file is claimed by a
rename into ``processing/``, handled, then moved to ``inbox/done/`` or to ``inbox/failed/``
with ``<name>.reason.txt`` beside it. A file whose content was processed before (same
SHA-256) is not processed again. A crash leaves the file in processing/ (and releases the
lock), and the next pass takes it up again; the content hash and the archive references make
that retry idempotent.
"""
from __future__ import annotations

import fcntl
import hashlib
import os
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from sqlalchemy import Engine, insert, select

from reskontro.adapters.payment_files import is_complete, is_unknown

from reskontro.testing import faults
from reskontro.transfer import journal
from reskontro.ledger import schema as s
from reskontro.domain import InputError
from reskontro.files.folders import is_temporary, printable_name, set_aside, unique
from reskontro.transfer.receipts import read_receipt

# The names the inbox takes: what a bank or a person would give a file (`CREMUL 2026-11-30.DAT`,
# `innbetalinger@nets.no (2).xml`, `Bergen_æøå.dat`), never a name that could mislead a shell or
# a terminal, hide itself, or not fit beside its reason file.
_NAME_PUNCTUATION = " ._-+@=,()[]#"
_SAFE_NAME = re.compile(r"[^\W_][\w .\-+@=,()\[\]#]*")
MAX_NAME_BYTES = 200
NAME_RULE = (f"a name is letters, digits, spaces and {' '.join(_NAME_PUNCTUATION.strip())}, starts with a "
             f"letter or digit, does not end with a space, and is at most {MAX_NAME_BYTES} bytes (UTF-8)")


def name_problem(name: str) -> str | None:
    """Why the inbox will not take a file of this name (None: it will). The reason says which
    characters are allowed, so that whoever named it can rename it."""
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:          # a name that is not UTF-8 (read with surrogateescape)
        return f"the name is not UTF-8 text; {NAME_RULE}"
    if size > MAX_NAME_BYTES:
        return f"the name is {size} bytes long; {NAME_RULE}"
    if not _SAFE_NAME.fullmatch(name) or name.endswith(" "):
        bad = sorted({c for c in name if not (c.isalnum() or c in _NAME_PUNCTUATION)})
        shown = " ".join(repr(c) for c in bad[:10])
        what = (f"it holds {shown}, which the inbox does not take" if bad
                else "it does not start with a letter or digit, or ends with a space")
        return f"{what}; {NAME_RULE}"
    return None
_RECEIPT_END = re.compile(rb"</(?:[A-Za-z_][\w.-]*:)?TransferReceipt\s*>\s*\Z")
STALE_AFTER = 600.0   # seconds: an incomplete file unchanged this long is taken anyway (and fails loudly)


class InboxBusy(RuntimeError):
    """Another pass (the cycle, or another watcher) owns processing/ right now."""


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
    """Regular files waiting in the inbox (temporary names are left alone)."""
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
def complete(path: Path, now: float | None = None) -> bool:
    """The one completeness test of the inbox: the format's end marker is present (UNZ for
    CREMUL, the closed root for camt.054 and receipts, record 89 for OCR giro), the file's head
    is no known format (it fails at once), or the file has not changed for STALE_AFTER seconds
    (then it is taken, and a truncated one fails loudly).
    A file still being written or uploaded in place is therefore left where it is."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return False
    now = time.time() if now is None else now
    if now - st.st_mtime >= STALE_AFTER:
        return True
    if st.st_size == 0:
        return False
    with path.open("rb") as f:   # the head tells the format, the tail holds its end marker
        if st.st_size <= 1 << 17:
            data = f.read()
        else:
            head = f.read(4096)
            f.seek(-65536, 2)
            data = head + f.read()
    if path.name.endswith(".receipt.xml"):
        return bool(_RECEIPT_END.search(data))
    # a head that is no known format, and can no longer become one, is as complete as it gets:
    # it fails now ("not a known payment file format"), not once it has gone stale
    return is_complete(data) or is_unknown(data)


@contextmanager
def claim_lock(inbox: Path, *, wait: bool = True) -> Iterator[None]:
    """Own processing/ for one pass: held by one pass at a time, in this process or another
    (flock; released by the kernel if the process dies). `wait=False`: InboxBusy if taken."""
    processing = inbox / "processing"
    processing.mkdir(parents=True, exist_ok=True)
    fd = os.open(processing, os.O_RDONLY | os.O_DIRECTORY)   # the folder itself is the lock
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            raise InboxBusy(f"{inbox}: another pass is processing the inbox") from None
        yield
    finally:
        os.close(fd)


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
        journal.note_receipt(conn, fid, receipt.status, receipt.received_at, name,
                             [(e.code, e.ref, e.text) for e in receipt.errors])
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
                  only_receipts: bool = False, wait: bool = True, waiting: list[str] | None = None,
                  now: float | None = None, max_bytes: int = 64 << 20) -> list[Processed]:
    """One pass over the inbox (and anything a crash left in processing/), holding the claim
    lock: it waits for another pass to end, or with `wait=False` raises InboxBusy. The names of
    files not complete yet are added to `waiting`."""
    for d in (inbox / "done", inbox / "failed"):
        d.mkdir(parents=True, exist_ok=True)
    try:
        with claim_lock(inbox, wait=False):
            return _process(db, inbox, payments, only_receipts, waiting, now, max_bytes)
    except InboxBusy:
        faults.point("inbox-busy")
        if not wait:
            raise
    with claim_lock(inbox, wait=True):
        return _process(db, inbox, payments, only_receipts, waiting, now, max_bytes)


def _process(db: Engine, inbox: Path, payments, only_receipts: bool, waiting: list[str] | None,
             now: float | None, max_bytes: int) -> list[Processed]:
    processing, done, failed = inbox / "processing", inbox / "done", inbox / "failed"
    results = []
    # What is in processing/ now was left by a pass that died: this pass owns the folder.
    leftovers = candidates(processing)
    for path in leftovers + candidates(inbox):
        is_receipt = path.name.endswith(".receipt.xml")
        if only_receipts and not is_receipt:
            continue
        if path.parent == inbox and not complete(path, now):
            if waiting is not None:
                waiting.append(path.name)
            continue
        problem = name_problem(path.name)
        if problem is not None:
            shown = printable_name(path.name)
            why = f"refused: the file name {shown!r} is not a safe name: {problem}; rename it and put it back into inbox/"
            set_aside(path, failed, why, "unsafe-name")
            results.append(Processed(shown, "failed", f"{why} (set aside as inbox/failed/unsafe-name)"))
            continue
        claimed = path if path.parent == processing else processing / path.name
        if claimed != path:
            if claimed.exists():
                claimed = unique(processing, path.name)
            try:
                os.replace(path, claimed)   # the claim: atomic on one filesystem
            except FileNotFoundError:
                continue                    # gone meanwhile (the sender took it back)
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
