"""The fleet's shared drop folder: bank files and receipts for any creditor, each moved into
its creditor's inbox by the ids inside it.

Where a bank or an integration delivers every creditor's files to one place (one SFTP
account, one folder), `route_drop` reads each complete file and finds its one creditor:

- a receipt (`*.receipt.xml`) by its FileId, `LT_<SenderId>_<date>_<seq>`: the SenderId is
  one creditor's (the registry keeps sender ids unique);
- a bank file (CREMUL, camt.054, OCR giro) by the accounts it credits (CREMUL FII+BF, camt.054
  Ntfctn/Acct, OCR giro's assignment account), registered with `creditors add --account`.

A file goes to the creditor's `inbox/` under its own name (a `.N` suffix when the name is
taken by other content), where that creditor's own pass reads it, as in single-site mode. A
file nobody or more than one creditor owns, that cannot be read, or whose name the inbox would
not take, goes to `drop/unrouted/` with `<name>.reason.txt` beside it: it never lands with the
wrong creditor. A file not complete yet (the inbox's own test) stays where it is.

A crash between the copy into the inbox and the removal from the drop folder leaves the same
content in both: the next pass finds it in the inbox already and only removes it here.
"""
from __future__ import annotations

import errno
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from reskontro.adapters.payment_files import DEFAULT_MAX_BYTES, read_payment_bytes
from reskontro.domain import InputError, bank_account
from reskontro.files.folders import create_temporary, printable_name, set_aside, sha256_of
from reskontro.payments.inbox import candidates, complete, name_problem
from reskontro.transfer.receipts import read_receipt

from .registry import Fleet, owners

_FILE_ID = re.compile(r"LT_([A-Za-z0-9]{1,35})_\d{8}_\d{6}")
UNROUTED = "unrouted"


@dataclass(frozen=True)
class Routed:
    """What became of one file of the drop folder."""
    name: str
    kind: str                   # receipt | payments | unrouted
    creditor: str | None        # whose inbox it went to (None: set aside)
    detail: str                 # by what it was routed, or why not

    def as_dict(self) -> dict:
        return {"name": self.name, "kind": self.kind, "creditor": self.creditor, "detail": self.detail}


class Unroutable(InputError):
    """Whose the file is cannot be told (or it is several creditors'): set aside with this."""


def whose(data: bytes, name: str, by_account: dict[str, str], by_sender: dict[str, str]) -> tuple[str, str, str]:
    """(kind, creditor id, what routed it) of one file's content; Unroutable (or the reader's
    InputError, naming the file and line) when it is no one's, several creditors', or unreadable."""
    if name.endswith(".receipt.xml"):
        receipt = read_receipt(data, name)
        m = _FILE_ID.fullmatch(receipt.file_id)
        if m is None:
            raise Unroutable(f"{name}: FileId {receipt.file_id!r} is not LT_<SenderId>_<yyyymmdd>_<6 digits>")
        creditor = by_sender.get(m.group(1))
        if creditor is None:
            raise Unroutable(f"{name}: FileId {receipt.file_id}: sender id {m.group(1)} is no creditor of this fleet")
        return "receipt", creditor, f"FileId {receipt.file_id}"
    pf = read_payment_bytes(data, name)
    if not pf.accounts:
        raise Unroutable(f"{name}: the {pf.format} file names no account credited (CREMUL FII+BF, camt.054 "
                         "Ntfctn/Acct, OCR giro assignment account): put it into its creditor's inbox/ by hand")
    found = {a: by_account.get(bank_account.key(a)) for a in pf.accounts}
    unknown = [a for a, c in found.items() if c is None]
    creditors = sorted({c for c in found.values() if c is not None})
    if unknown:
        raise Unroutable(f"{name}: account {', '.join(unknown)} is no creditor's "
                         "(`reskontro creditors add-account ID ACCOUNT`)"
                         + (f"; the file also credits {', '.join(creditors)}'s" if creditors else ""))
    if len(creditors) > 1:
        mine = "; ".join(f"{c}: {', '.join(a for a, o in found.items() if o == c)}" for c in creditors)
        raise Unroutable(f"{name}: credits the accounts of {len(creditors)} creditors ({mine}): one file must "
                         "be one creditor's; ask the bank for a file per creditor, or split it and drop the parts")
    return "payments", creditors[0], f"account {', '.join(pf.accounts)}"


@contextmanager
def _drop_lock(drop: Path) -> Iterator[None]:
    """One routing pass at a time over the drop folder (an flock on the folder itself,
    released by the kernel when the process dies)."""
    import fcntl
    fd = os.open(drop, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _same_content(a: Path, b: Path) -> bool:
    try:
        if a.stat().st_size != b.stat().st_size:
            return False
        with a.open("rb") as fa, b.open("rb") as fb:
            return sha256_of(fa) == sha256_of(fb)
    except OSError:
        return False


def deliver(path: Path, inbox: Path) -> Path:
    """Move `path` into `inbox` under its name (`name.N` when another file holds it) without
    ever overwriting anything; the same content there already (a pass that died after the
    copy) only removes `path`. Across file systems: copied under a temporary name the inbox
    leaves alone, fsynced, linked to the final name, then removed here."""
    inbox.mkdir(parents=True, exist_ok=True)
    name = path.name
    for n in range(1000):
        target = inbox / (name if n == 0 else f"{name}.{n}")
        if os.path.lexists(target):
            if target.is_file() and not target.is_symlink() and _same_content(path, target):
                path.unlink()
                return target
            continue
        try:
            os.link(path, target)              # never replaces what holds the name
        except FileExistsError:
            continue
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.EPERM, errno.ENOTSUP):
                raise
            tmp = inbox / f".{name}.routing.tmp"
            fd = create_temporary(tmp, 0o640)
            with os.fdopen(fd, "wb") as out, path.open("rb") as src:
                while chunk := src.read(1 << 20):
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            try:
                os.link(tmp, target)
            except FileExistsError:
                tmp.unlink()
                continue
            tmp.unlink()
        path.unlink()
        return target
    raise FileExistsError(f"{inbox}: {name} and its next 999 names are taken")


def unrouted(fleet: Fleet, drop: Path | None = None) -> list[str]:
    """The files set aside in drop/unrouted/ (each with its reason beside it): a person's."""
    folder = (drop or fleet.drop) / UNROUTED
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if p.is_file() and not p.name.endswith(".reason.txt"))


def route_drop(fleet: Fleet, drop: Path | None = None, *, max_bytes: int = DEFAULT_MAX_BYTES,
               waiting: list[str] | None = None) -> list[Routed]:
    """One pass over the drop folder (fleet.drop unless given): every complete file routed to
    its creditor's inbox or set aside in `unrouted/` with its reason. Files not complete yet
    are left, their names added to `waiting`."""
    if drop is None:
        drop = fleet.drop
        drop.mkdir(exist_ok=True)       # a fleet made before the drop folder: the worker's pass makes it
    elif not drop.is_dir():
        raise InputError(f"{drop}: no such folder (the drop folder to route)")
    by_account, by_sender = owners(fleet)
    out: list[Routed] = []
    with _drop_lock(drop):
        for path in candidates(drop):
            name = printable_name(path.name)
            if not complete(path):
                if waiting is not None:
                    waiting.append(name)
                continue
            try:
                problem = name_problem(path.name)
                if problem:
                    raise Unroutable(f"{name}: {problem}")
                size = path.stat().st_size
                if size > max_bytes:
                    raise Unroutable(f"{name}: {size} bytes is over the {max_bytes}-byte limit of a bank file")
                kind, creditor, why = whose(path.read_bytes(), path.name, by_account, by_sender)
            except InputError as exc:
                reason = str(exc)
                set_aside(path, drop / UNROUTED, reason, name=name)
                out.append(Routed(name, "unrouted", None, reason))
                continue
            target = deliver(path, fleet.creditor_dir(creditor) / "inbox")
            detail = why if target.name == path.name else f"{why}; as {target.name} (the name was taken)"
            out.append(Routed(name, kind, creditor, detail))
    return out
