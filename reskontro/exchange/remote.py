"""Moving files between outbox/inbox and the receiver's SFTP server, and the nightly cycle.

send: every complete file in outbox/ goes to the remote inbound/ (the adapter uploads as .part,
checks the size, renames, never overwrites), then moves to outbox/sent/ and is journalled
uploaded. Files support dropped by hand travel the same way once complete, after the same
pre-send check. What is uploaded is what was checked: the journal keeps the SHA-256 of the
checked bytes and the upload hashes what it sends; a file changed after its check is set
aside into outbox/rejected/ and its content goes again. Written files that disappeared from
the outbox are found (reconcile_outbox) and their content goes again. An odd name in the
outbox is set aside; every other file still goes. fetch: the remote outbound/ into inbox/
(receipts, payment files).
"""
from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from datetime import datetime, time as dtime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from lxml import etree
from sqlalchemy import Engine

from reskontro.adapters.sftp import (ContentChangedError, RemoteConflictError, RemoteRenameError,
                                     SftpClient, SftpError, SftpSettings, UnsafeNameError,
                                     unsafe_name_reason)

from reskontro.testing import faults
from reskontro.transfer import journal
from reskontro.config import Config, ConfigError
from reskontro.files.folders import is_temporary, printable_name, set_aside
from reskontro.transfer.manual_files import journal_manual_file

log = logging.getLogger("reskontro.exchange")
_FILE = re.compile(r"LT_[A-Za-z0-9]{1,35}_\d{8}_(\d{6})\.xml")
NS = "{urn:reskontro:ledger-transfer:1}"


def sftp_settings(config: Config) -> SftpSettings:
    c = config.sftp
    if c.key_file is None or c.known_hosts is None:
        raise ConfigError(f"{config.site / 'reskontro.toml'}: sftp.key_file and sftp.known_hosts are required to "
                          "send or fetch (the server's host key is pinned, never learnt)")
    return SftpSettings(host=c.host, port=c.port, user=c.user, key_file=c.key_file, known_hosts=c.known_hosts,
                        passphrase_env=c.passphrase_env, passphrase_file=c.passphrase_file,
                        remote_inbound=c.remote_inbound, remote_outbound=c.remote_outbound,
                        timeout=c.timeout, retries=c.retries, max_fetch_size=c.max_fetch_size)


@dataclass
class SendResult:
    sent: list[str] = field(default_factory=list)
    already: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)      # failed the pre-send check, changed after it, odd name
    skipped: list[str] = field(default_factory=list)      # not complete yet, or not a transfer file
    lost: list[str] = field(default_factory=list)         # written files gone from the outbox
    answered: list[str] = field(default_factory=list)     # its receipt was read already: moved to sent/


@dataclass
class FetchResult:
    files: list[Path] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)      # unsafe remote names: left on the server
    failed: list[str] = field(default_factory=list)       # too big, or an error: left on the server
    changed: list[str] = field(default_factory=list)      # changed while fetched: fetched next time

    @property
    def ok(self) -> bool:
        return not (self.refused or self.failed)


def _header(path: Path) -> tuple[str, int, str] | None:
    """(FileId, Sequence, Kind) from a transfer file's header, reading only its start."""
    try:
        with path.open("rb") as f:
            for _ev, el in etree.iterparse(f, events=("end",), resolve_entities=False, no_network=True,
                                           load_dtd=False, tag=f"{NS}Header"):
                return el.findtext(f"{NS}FileId"), int(el.findtext(f"{NS}Sequence")), el.findtext(f"{NS}Kind")
    except (etree.XMLSyntaxError, TypeError, ValueError, OSError):
        return None
    return None


def _complete(path: Path) -> bool:
    """Does the file end with the closing root (a writer has finished it)? Reads its tail only."""
    with path.open("rb") as f:
        size = os.fstat(f.fileno()).st_size
        f.seek(max(0, size - 4096))
        return f.read().rstrip().endswith(b"LedgerTransfer>")


def outbox_files(outbox: Path) -> list[Path]:
    """Complete transfer files waiting in the outbox, in sequence order."""
    found = []
    for p in outbox.iterdir() if outbox.is_dir() else []:
        if p.is_file() and not p.is_symlink() and not is_temporary(p.name) and p.suffix == ".xml":
            found.append(p)
    return sorted(found, key=lambda p: (int(m.group(1)) if (m := _FILE.fullmatch(p.name)) else 0, p.name))


def _refuse(path: Path, outbox: Path, why: str) -> None:
    set_aside(path, outbox / "rejected", f"{printable_name(path.name)} was not sent: {why}",
              printable_name(path.name))


def reconcile_outbox(config: Config, db: Engine) -> list[str]:
    """Written files that are gone from the outbox (deleted or moved by hand: not in outbox/,
    not in outbox/sent/) never reach the receiver: each is marked abandoned and its content
    returns to pending, to go in the next file. What was found, for the run's report."""
    outbox = config.outbox
    if not outbox.is_dir():
        return []          # a missing outbox folder is a configuration matter, not a lost file
    lost = []
    with db.connect() as conn:
        written = journal.files(conn, ["written"])
    for f in written:
        if os.path.lexists(outbox / f.name) or os.path.lexists(outbox / "sent" / f.name):
            continue
        with db.begin() as conn:
            n = journal.withdraw(conn, f.file_id, "abandoned",
                                 "the file disappeared from the outbox before it was sent").again
        log.error("%s disappeared from %s before it was sent: abandoned; its %d items go again",
                  f.name, outbox, n)
        lost.append(f"{f.name} disappeared from the outbox before it was sent: abandoned, its "
                    f"content ({n} items) goes in the next file")
    return lost


def send(config: Config, db: Engine, client_factory=None) -> SendResult:
    """Upload every complete outbox file. The caller holds the run lock."""
    outbox = config.outbox
    res = SendResult(lost=reconcile_outbox(config, db))
    todo: list[tuple[Path, str | None]] = []
    for path in outbox_files(outbox):
        odd = unsafe_name_reason(path.name)
        if odd:
            # Not a name any transfer file has; kept out of the journal, the log and the
            # terminal as it is (a name that is not UTF-8 cannot even be stored there).
            why = f"its file name {odd}"
            _refuse(path, outbox, why)
            res.refused.append(f"{printable_name(path.name)}: {why}")
            continue
        with db.connect() as conn:
            rec = journal.file_record(conn, path.stem)
        if rec is not None and rec.state == "writing":
            res.skipped.append(f"{path.name}: an export is completing it")
            continue
        if rec is None:
            # Dropped by hand (support's backlog export): the same check as our own files.
            if not _complete(path):
                res.skipped.append(f"{path.name}: not complete yet (no closing LedgerTransfer)")
                continue
            head = _header(path)
            if head is None or head[0] + ".xml" != path.name:
                _refuse(path, outbox, "not a Ledger Transfer file whose FileId matches its name")
                res.refused.append(f"{path.name}: not a Ledger Transfer file whose FileId matches its name")
                continue
            # The same check as our own files, and its items journalled like ours (in one
            # pass, one transaction: all of it or, when the check fails, nothing). The hash of
            # the checked bytes is journalled: only those bytes are uploaded.
            with db.connect() as conn, conn.begin() as tx:
                why = None
                if journal.sequence_taken(conn, head[1]):
                    why = f"sequence {head[1]} is taken by another file; give it a sequence above {journal.next_sequence(conn) - 1}"
                else:
                    journal.reserve_file(conn, head[0], head[1], "manual", path.name,
                                         datetime.now(ZoneInfo("Europe/Oslo")), None)
                    problems = journal_manual_file(conn, path, config.xsd, head[0])
                    if problems:
                        why = "; ".join(str(p) for p in problems[:20])
                if why is not None:
                    tx.rollback()
                    _refuse(path, outbox, why)
                    res.refused.append(f"{path.name}: {why}")
                    continue
                rec = journal.file_record(conn, head[0])
        elif rec.state in ("accepted", "rejected"):
            # The receiver has answered for it (its upload was never confirmed here, or the run
            # died before the move): it left, and sending it again would only be refused.
            (outbox / "sent").mkdir(exist_ok=True)
            os.replace(path, outbox / "sent" / path.name)
            res.answered.append(f"{path.name} ({rec.state})")
            continue
        elif rec.state not in ("written", "uploading", "uploaded"):
            res.skipped.append(f"{path.name}: journal state {rec.state}")
            continue
        todo.append((path, rec.sha256))
    if not todo:
        return res
    factory = client_factory or (lambda: SftpClient(sftp_settings(config)))
    sent_dir = outbox / "sent"
    with factory() as client:
        for path, sha256 in todo:
            before_upload(path)
            # Journalled before the upload starts: should the confirmation never come (the
            # connection drops after the remote rename, the run dies), the receiver may still
            # have the file, and its receipt must then be believed.
            with db.begin() as conn:
                rec = journal.file_record(conn, path.stem)
                if rec is not None and rec.state == "written":
                    journal.mark_uploading(conn, path.stem)
            try:
                result = client.upload(path, expected_sha256=sha256)
            except ContentChangedError as exc:
                # Not what was checked: refused before the remote rename, it never goes. A file
                # of ours not yet uploaded is withdrawn (its content goes again, from the
                # ledger, in the next file).
                with db.begin() as conn:
                    rec = journal.file_record(conn, path.stem)
                    note = ""
                    if rec is not None and rec.state in ("written", "uploading"):
                        journal.withdraw(conn, path.stem, "invalid", str(exc)[:4000])
                        note = "; its content goes again in the next file"
                _refuse(path, outbox, f"{exc}{note}")
                res.refused.append(f"{path.name}: {exc}{note}")
                log.error("%s: %s%s", path.name, exc, note)
                continue
            except (RemoteConflictError, RemoteRenameError, UnsafeNameError):
                # Refused before anything was renamed remotely: it certainly did not leave.
                with db.begin() as conn:
                    rec = journal.file_record(conn, path.stem)
                    if rec is not None and rec.state == "uploading":
                        journal.set_state(conn, path.stem, "written")
                raise
            faults.point("after-upload")
            with db.begin() as conn:
                rec = journal.file_record(conn, path.stem)
                if rec is not None and rec.state == "uploading":
                    journal.mark_uploaded(conn, path.stem)
            try:
                sent_dir.mkdir(exist_ok=True)
                os.replace(path, sent_dir / path.name)
            except OSError as exc:
                raise OSError(exc.errno, f"{path.name} was delivered, but cannot be moved to "
                              f"{sent_dir}/: {exc.strerror}; it is counted as delivered when "
                              "sent again") from None
            (res.already if result.already_delivered else res.sent).append(path.name)
    return res


@dataclass
class SendPreview:
    """What `send` would do now (`send --dry-run`); nothing is moved, journalled or uploaded."""
    upload: list[str] = field(default_factory=list)       # "name (N bytes)", in the order they would go
    refused: list[str] = field(default_factory=list)      # would be set aside into outbox/rejected/, with why
    skipped: list[str] = field(default_factory=list)      # would be left in the outbox, with why
    lost: list[str] = field(default_factory=list)         # written files gone: would be abandoned
    answered: list[str] = field(default_factory=list)     # receipt read already: would move to sent/


def preview_send(config: Config, db: Engine) -> SendPreview:
    """`send` without its effects: the same tests of every outbox file (its name, its journal
    state, a hand-dropped file's completeness, header and full pre-send check, our own file's
    bytes against the SHA-256 journalled at its check), read-only. No connection is made."""
    from reskontro.transfer.contract import check_transfer_file

    outbox = config.outbox
    res = SendPreview()
    with db.connect() as conn:
        if outbox.is_dir():
            for f in journal.files(conn, ["written"]):
                if not (os.path.lexists(outbox / f.name) or os.path.lexists(outbox / "sent" / f.name)):
                    res.lost.append(f"{f.name} disappeared from the outbox before it was sent: would be "
                                    "abandoned, its content going in the next file")
        for path in outbox_files(outbox):
            odd = unsafe_name_reason(path.name)
            if odd:
                res.refused.append(f"{printable_name(path.name)}: its file name {odd}")
                continue
            rec = journal.file_record(conn, path.stem)
            size = path.stat().st_size
            if rec is not None and rec.state == "writing":
                res.skipped.append(f"{path.name}: an export is completing it")
            elif rec is None:
                if not _complete(path):
                    res.skipped.append(f"{path.name}: not complete yet (no closing LedgerTransfer)")
                    continue
                head = _header(path)
                if head is None or head[0] + ".xml" != path.name:
                    res.refused.append(f"{path.name}: not a Ledger Transfer file whose FileId matches its name")
                elif journal.sequence_taken(conn, head[1]):
                    res.refused.append(f"{path.name}: sequence {head[1]} is taken by another file")
                else:
                    problems = check_transfer_file(path, config.xsd, known_customer=journal.known_customer(conn),
                                                   known_entry_type=journal.known_entry_type(conn))
                    if problems:
                        res.refused.append(f"{path.name}: {'; '.join(str(p) for p in problems[:20])}")
                    else:
                        res.upload.append(f"{path.name} ({size} bytes, dropped by hand: checked, would be journalled)")
            elif rec.state in ("accepted", "rejected"):
                res.answered.append(f"{path.name} ({rec.state})")
            elif rec.state not in ("written", "uploading", "uploaded"):
                res.skipped.append(f"{path.name}: journal state {rec.state}")
            elif rec.sha256 is not None and _sha256(path) != rec.sha256:
                res.refused.append(f"{path.name}: not the bytes that passed the pre-send check (changed in the "
                                   "outbox); its content would go again in the next file")
            else:
                res.upload.append(f"{path.name} ({size} bytes)")
    return res


def _sha256(path: Path) -> str:
    import hashlib
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def before_upload(path: Path) -> None:
    """A hook between the checks and each upload (tests use it to change files there)."""


def fetch(config: Config, client_factory=None) -> FetchResult:
    """Download the remote outbound/ into the inbox."""
    factory = client_factory or (lambda: SftpClient(sftp_settings(config)))
    with factory() as client:
        report = client.fetch_outbound(config.inbox)
    show = lambda rs: [f"{r.name!r}: {r.reason}" for r in rs]   # noqa: E731
    return FetchResult(report.downloaded, show(report.refused), show(report.failed), show(report.changed))


def next_run(now: datetime, at: dtime, tz: ZoneInfo) -> datetime:
    """The next wall-clock `at` in `tz` after `now` (DST-correct: 18:00 is 18:00 all year)."""
    local = now.astimezone(tz)
    candidate = datetime.combine(local.date(), at, tzinfo=tz)
    if candidate <= local:
        candidate = datetime.combine(local.date() + timedelta(days=1), at, tzinfo=tz)
    return candidate


__all__ = ["FetchResult", "SendPreview", "SendResult", "SftpError", "fetch", "next_run", "outbox_files",
           "preview_send", "reconcile_outbox", "send", "sftp_settings"]
