"""SFTP exchange with the receiver (Lowell), on paramiko.

Protocol (spec ledger-transfer-1, "Exchange"):
- upload to ``<inbound>/<name>.part``, verify the size, then plain SFTP RENAME to ``<name>``.
  On OpenSSH a plain RENAME fails when the target exists, so a remote name is never
  overwritten (posix_rename would overwrite: never used). The local file is opened once and
  its bytes are hashed as they are sent: given the SHA-256 of what passed the pre-send check,
  bytes that differ are never renamed into place (the .part is removed). A rename the server
  refuses removes the .part too; the file stays to be sent again.
- fetch every regular file in ``<outbound>/`` (up to ``max_fetch_size``, judged from the
  listing before anything is downloaded) to ``<local>/.<name>.part`` (created exclusively,
  never through a link), fsync, check that the remote file did not change meanwhile (size and
  mtime as listed), link to ``<local>/<name>`` without overwriting anything, and only then
  remove it remotely. A file that changed stays on the server and is fetched next time. One
  odd file (a name that is not UTF-8 or too long, a file too big, an error reading it) is
  left on the server with a reason; every other file still comes.

Security: key authentication only, the host key pinned in our own known_hosts file
(unknown or changed key -> HostKeyError with the SHA256 fingerprint), ssh-rsa (SHA-1)
disabled, passphrases only from an environment variable or a file and never logged.

Network failures (dropped or refused connection, EOF, timeouts) are retried with exponential
backoff: reconnect and redo the one file operation. Authentication, host-key and conflict
errors are not retried.
"""
from __future__ import annotations

import errno
import functools
import hashlib
import logging
import os
import posixpath
import secrets
import socket
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, TypeVar

import paramiko
from paramiko.sftp import (CMD_CLOSE, CMD_EXTENDED, CMD_EXTENDED_REPLY, CMD_HANDLE, CMD_NAME,
                           CMD_OPENDIR, CMD_READ, CMD_READDIR, int64)
from paramiko.sftp_client import SFTPClient
from paramiko.sftp_file import SFTPFile
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt
from tenacity import wait_exponential

from reskontro.files.folders import create_temporary

log = logging.getLogger(__name__)

T = TypeVar("T")

# SHA-1 signatures are broken; paramiko no longer prefers them, but say so explicitly.
_DISABLED_ALGORITHMS = {
    "pubkeys": ["ssh-rsa", "ssh-rsa-cert-v01@openssh.com"],
    "keys": ["ssh-rsa", "ssh-rsa-cert-v01@openssh.com"],
}
# paramiko lists aes*-ctr + HMAC first; AES-GCM needs no separate HMAC pass in Python and
# measured faster (see benchmarks/bench_sftp.py). The others stay as fallbacks.
_PREFERRED_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com",
                      "aes128-ctr", "aes192-ctr", "aes256-ctr")

# SFTP request size. 32 KiB is what every server must accept (draft-ietf-secsh-filexfer);
# OpenSSH accepts up to 255 KiB per READ/WRITE and advertises so via limits@openssh.com.
_SAFE_REQUEST = 32 * 1024
_LOCAL_BLOCK = 1024 * 1024
# Reads kept in flight by prefetch, counted in bytes to bound memory. paramiko's prefetch
# thread polls every 10 ms when the limit is reached, so the window must hold more than
# 10 ms of data: 16 MiB is 64 requests of 255 KiB (OpenSSH sftp's count) or 512 of 32 KiB.
_PREFETCH_BYTES = 16 * 1024 * 1024


# --- errors -------------------------------------------------------------------------------

class SftpError(Exception):
    """Base class of the adapter's errors."""


class HostKeyError(SftpError):
    """The server's host key is unknown or differs from the one pinned in known_hosts."""

    def __init__(self, message: str, *, host: str, port: int, fingerprint: str,
                 expected: str | None) -> None:
        super().__init__(message)
        self.host, self.port = host, port
        self.fingerprint = fingerprint  # what the server offered, "SHA256:..."
        self.expected = expected  # what known_hosts pins; None when the host is unknown


class SftpAuthError(SftpError):
    """Our key could not be loaded or was refused by the server (never retried)."""


class RemoteConflictError(SftpError):
    """The remote name already exists with different content; it is left untouched."""


class SftpConnectionError(SftpError):
    """Network failure (refused, dropped, timed out) that outlived the retries."""


class UnsafeNameError(SftpError, ValueError):
    """A file name that must not be used as a path."""


class ContentChangedError(SftpError):
    """The local file's bytes are not the ones that were checked; nothing was renamed into
    place remotely (the .part is removed)."""


class RemoteRenameError(SftpError):
    """The server took the upload but refused to rename the .part to its final name; the .part
    was removed and the file can be sent again."""


# --- settings and results -----------------------------------------------------------------

@dataclass(frozen=True)
class SftpSettings:
    host: str
    user: str
    key_file: Path
    known_hosts: Path
    port: int = 22
    passphrase_env: str | None = None  # name of the variable, never the passphrase itself
    passphrase_file: Path | None = None
    remote_inbound: str = "inbound"
    remote_outbound: str = "outbound"
    timeout: float = 30.0
    retries: int = 5  # retries after the first attempt
    backoff: float = 1.0  # first wait in seconds, doubling up to backoff_max
    backoff_max: float = 60.0
    # SFTP READ/WRITE size: None = ask the server (limits@openssh.com), else 32 KiB.
    request_size: int | None = None
    # A remote file bigger than this is not fetched (judged from the listing, before any byte
    # is downloaded); 64 MiB, the inbox's own limit.
    max_fetch_size: int = 64 << 20

    def __post_init__(self) -> None:
        if self.passphrase_env and self.passphrase_file:
            raise ValueError("give passphrase_env or passphrase_file, not both")
        if self.retries < 0 or self.timeout <= 0 or self.backoff < 0 or self.max_fetch_size <= 0:
            raise ValueError("retries must be >= 0, timeout > 0, backoff >= 0 and max_fetch_size > 0")
        if not self.remote_inbound or not self.remote_outbound:
            raise ValueError("remote_inbound and remote_outbound must not be empty")

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class UploadResult:
    local: Path
    remote: str
    size: int
    # True when the final name already held identical bytes (an earlier run, or a rename whose
    # reply was lost): the file counts as delivered and nothing was written.
    already_delivered: bool = False


@dataclass(frozen=True)
class RefusedName:
    name: str
    reason: str


@dataclass(frozen=True)
class DownloadReport:
    downloaded: list[Path] = field(default_factory=list)
    refused: list[RefusedName] = field(default_factory=list)   # unsafe names: left on the server
    failed: list[RefusedName] = field(default_factory=list)    # too big, or an error: left there
    changed: list[RefusedName] = field(default_factory=list)   # changed while fetched: next time


# Longest name fetched or sent, in bytes: the local temporary name (".<name>.part") and a
# free name (<stem>.<n>.<ext>) must stay within the 255 bytes a file name may have.
MAX_NAME_BYTES = 200


def unsafe_name_reason(name: str) -> str | None:
    """Why ``name`` must not become a local or remote path component, or None if it is safe."""
    if not name:
        return "empty name"
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:         # a local name read with surrogateescape
        return "is not UTF-8"
    if size > MAX_NAME_BYTES:
        return f"is {size} bytes long (at most {MAX_NAME_BYTES})"
    if "/" in name or "\\" in name:
        return "contains a path separator"
    if ".." in name:
        return "contains '..'"
    if name.startswith("."):
        return "starts with '.'"
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        return "contains a control character or NUL"
    return None


# --- the client ---------------------------------------------------------------------------

class SftpClient:
    """Connection to one SFTP server; use as a context manager."""

    def __init__(self, settings: SftpSettings) -> None:
        self.settings = settings
        self._ssh: paramiko.SSHClient | None = None
        self._sftp: SFTPClient | None = None
        self._pkey: paramiko.PKey | None = None
        self._request_size = _SAFE_REQUEST

    def __enter__(self) -> SftpClient:
        self.connect()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # -- public operations --

    def connect(self) -> None:
        """Connect and authenticate (retrying network failures)."""
        self._retrying("connect", lambda sftp: None)

    def close(self) -> None:
        sftp, ssh = self._sftp, self._ssh
        self._sftp = self._ssh = None
        # On a dropped connection closing raises (EOFError, "Socket is closed"); nothing is
        # left to release then, so it must not mask the error that brought us here.
        for thing in (sftp, ssh):
            if thing is not None:
                try:
                    thing.close()
                except (OSError, EOFError, paramiko.SSHException) as exc:
                    log.debug("closing the connection to %s: %r", self.settings.address, exc)

    def upload(self, local: Path, expected_sha256: str | None = None) -> UploadResult:
        """Deliver ``local`` to ``<inbound>/<name>``: .part, size check, rename, never overwrite.

        The file is opened once (never through a link) and every attempt sends the bytes of
        that one open file, hashed as they go. With ``expected_sha256`` (the hash of what
        passed the pre-send check) bytes that differ are refused: ContentChangedError, the
        remote .part removed, nothing renamed into place."""
        local = Path(local)
        reason = unsafe_name_reason(local.name)
        if reason:
            raise UnsafeNameError(f"refusing to upload {local!r}: file name {reason}")
        final = posixpath.join(self.settings.remote_inbound, local.name)
        fd = os.open(local, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise SftpError(f"refusing to upload {local}: not a regular file")
            return self._retrying(f"upload of {local.name}",
                                  lambda sftp: self._upload_once(sftp, f, local, final, expected_sha256))

    def fetch_outbound(self, local_dir: Path) -> DownloadReport:
        """Fetch every safely named regular file of ``<outbound>/`` into ``local_dir``.

        A lost connection (after the retries) ends the fetch; anything wrong with one file
        leaves that file on the server, with a reason in the report, and the others come."""
        local_dir = Path(local_dir)
        local_dir.mkdir(parents=True, exist_ok=True)
        s = self.settings
        outbound = s.remote_outbound
        entries = self._retrying(f"listing of {outbound}/", lambda sftp: self._list(sftp, outbound))
        report = DownloadReport()
        for raw, entry in sorted(entries, key=lambda e: e[0]):
            if entry.st_mode is None or not stat.S_ISREG(entry.st_mode):
                continue  # directories, symlinks (readdir reports lstat), devices
            try:
                name = raw.decode("utf-8")
            except UnicodeDecodeError:
                name, reason = repr(raw)[2:-1], "is not UTF-8"
            else:
                reason = unsafe_name_reason(name)
            if reason:
                log.warning("refused remote file %r in %s/ on %s: %s", name, outbound, s.address, reason)
                report.refused.append(RefusedName(name, reason))
                continue
            size = entry.st_size or 0
            if size > s.max_fetch_size:
                why = (f"{size} bytes is over the {s.max_fetch_size}-byte limit (sftp.max_fetch_size); "
                       "left on the server")
                log.warning("remote file %r in %s/ on %s not fetched: %s", name, outbound, s.address, why)
                report.failed.append(RefusedName(name, why))
                continue
            fetch = functools.partial(self._download_once, name=name, local_dir=local_dir,
                                      listed=entry)
            try:
                report.downloaded.append(self._retrying(f"download of {name}", fetch))
            except _ChangedMeanwhile as exc:
                log.warning("remote file %r in %s/ on %s %s", name, outbound, s.address, exc)
                report.changed.append(RefusedName(name, str(exc)))
            except SftpConnectionError:
                raise
            except (SftpError, OSError) as exc:
                log.error("remote file %r in %s/ on %s not fetched: %s", name, outbound, s.address, exc)
                report.failed.append(RefusedName(name, f"not fetched, left on the server: {exc}"))
        return report

    def probe_folder(self, folder: str) -> None:
        """``folder`` exists on the server and takes a new file: a probe ``.part`` (a name no
        receiver takes, never ``.xml``) is created exclusively, then removed. SftpError says
        what is wrong (missing, not a folder, not writable)."""
        s = self.settings

        def once(sftp: SFTPClient) -> None:
            try:
                st = sftp.stat(folder)
            except OSError as exc:
                if self._connection_lost(exc):
                    raise
                raise SftpError(f"{folder}/ on {s.address}: {exc.strerror or exc}; create it, or set the "
                                "right folder in reskontro.toml") from None
            if st.st_mode is None or not stat.S_ISDIR(st.st_mode):
                raise SftpError(f"{folder} on {s.address} is not a folder")
            probe = posixpath.join(folder, f".reskontro-probe-{secrets.token_hex(6)}.part")
            try:
                with sftp.open(probe, "wx") as f:
                    f.write(b"reskontro doctor: a probe, removed at once\n")
            except OSError as exc:
                if self._connection_lost(exc):
                    raise
                raise SftpError(f"{folder}/ on {s.address} does not take files for {s.user!r}: "
                                f"{exc.strerror or exc}") from None
            try:
                sftp.remove(probe)
            except OSError as exc:
                if self._connection_lost(exc):
                    raise
                raise SftpError(f"{folder}/ on {s.address}: wrote {probe} but cannot remove it: "
                                f"{exc.strerror or exc}; remove it by hand") from None

        self._retrying(f"probe of {folder}/", once)

    def outbound_listing(self) -> list[tuple[str, int, str | None]]:
        """What a fetch would take from ``<outbound>/``, without taking it: (name, size, why it
        would stay there or None) for each regular file."""
        s = self.settings
        entries = self._retrying(f"listing of {s.remote_outbound}/",
                                 lambda sftp: self._list(sftp, s.remote_outbound))
        out = []
        for raw, entry in sorted(entries, key=lambda e: e[0]):
            if entry.st_mode is None or not stat.S_ISREG(entry.st_mode):
                continue
            try:
                name = raw.decode("utf-8")
            except UnicodeDecodeError:
                name, reason = repr(raw)[2:-1], "is not UTF-8"
            else:
                reason = unsafe_name_reason(name)
            size = entry.st_size or 0
            if reason is None and size > s.max_fetch_size:
                reason = f"{size} bytes is over the {s.max_fetch_size}-byte limit (sftp.max_fetch_size)"
            out.append((name, size, reason))
        return out

    def download_all(self, local_dir: Path) -> list[Path]:
        """fetch_outbound() returning only the local paths (refused names are logged)."""
        return self.fetch_outbound(local_dir).downloaded

    # -- one attempt of each operation --

    def _list(self, sftp: SFTPClient, folder: str) -> list[tuple[bytes, paramiko.SFTPAttributes]]:
        """(raw name, attributes) of every entry of ``folder`` but . and ..: like
        SFTPClient.listdir_attr, which decodes names strictly as UTF-8 and so fails the whole
        listing on one name that is not."""
        t, msg = sftp._request(CMD_OPENDIR, sftp._adjust_cwd(folder))
        if t != CMD_HANDLE:
            raise SftpError(f"listing {folder}/ on {self.settings.address}: expected a handle")
        handle = msg.get_binary()
        found = []
        try:
            while True:
                try:
                    t, msg = sftp._request(CMD_READDIR, handle)
                except EOFError:
                    # the end of the folder; a dropped connection fails the CLOSE below
                    break
                if t != CMD_NAME:
                    raise SftpError(f"listing {folder}/ on {self.settings.address}: expected names")
                for _ in range(msg.get_int()):
                    raw = msg.get_binary()
                    msg.get_binary()  # longname
                    attr = paramiko.SFTPAttributes._from_msg(msg)
                    if raw not in (b".", b".."):
                        found.append((raw, attr))
        finally:
            sftp._request(CMD_CLOSE, handle)
        return found

    def _upload_once(self, sftp: SFTPClient, f: BinaryIO, local: Path, final: str,
                     expected: str | None) -> UploadResult:
        part = final + ".part"
        size = os.fstat(f.fileno()).st_size
        if _exists(sftp, final):
            return self._compare_existing(sftp, f, local, size, final, expected)
        _remove_if_exists(sftp, part)  # stale .part from a dropped connection
        digest = self._put(sftp, f, local, part, size)
        if expected is not None and digest != expected:
            _remove_if_exists(sftp, part)
            raise ContentChangedError(
                f"{local.name} is not the file that passed the pre-send check (SHA-256 "
                f"{digest[:16]}…, checked {expected[:16]}…): it was changed or replaced in the "
                f"outbox; not sent (the remote .part was removed)")
        try:
            sftp.rename(part, final)  # SFTP v3 RENAME: fails if final exists; never overwrites
        except OSError as exc:
            if self._connection_lost(exc):
                raise
            if not _exists(sftp, final):
                _remove_if_exists(sftp, part)
                raise RemoteRenameError(
                    f"{self.settings.address} took {part} but refused to rename it to {final} "
                    f"({exc}); the .part was removed and {local.name} stays to be sent again") from exc
            # Another writer created it after our check: same bytes count as delivered,
            # different bytes are a conflict; our .part is not needed either way.
            try:
                return self._compare_existing(sftp, f, local, size, final, expected)
            finally:
                _remove_if_exists(sftp, part)
        log.info("uploaded %s to %s:%s (%d bytes)", local, self.settings.address, final, size)
        return UploadResult(local, final, size)

    def _compare_existing(self, sftp: SFTPClient, f: BinaryIO, local: Path, size: int,
                          final: str, expected: str | None) -> UploadResult:
        """``final`` exists remotely: delivered if it holds what we would send (the checked
        bytes, when their hash is given), else never touched."""
        remote_size = sftp.stat(final).st_size
        ours = _file_sha256(f)
        want = expected or ours
        # The checked bytes' size is known only while the local file still holds them.
        if (ours != want or remote_size == size) and \
                _remote_sha256(sftp, final, self._request_size) == want:
            log.info("%s already holds %s with identical content: counted as delivered",
                     self.settings.address, final)
            return UploadResult(local, final, remote_size or 0, already_delivered=True)
        if ours != want:
            raise ContentChangedError(
                f"{local.name} is not the file that passed the pre-send check: it was changed or "
                f"replaced in the outbox; not sent ({final} on {self.settings.address} holds "
                f"other content and was left as it is)")
        raise RemoteConflictError(
            f"{final} already exists on {self.settings.address} with different content "
            f"({remote_size} bytes there, {size} bytes in {local}); it was not overwritten")

    def _put(self, sftp: SFTPClient, f: BinaryIO, local: Path, remote: str, size: int) -> str:
        """Send the bytes of the open file ``f`` to ``remote``; the SHA-256 of what was sent.
        Like SFTPClient.putfo(confirm=True) but with the server's largest WRITE size: fewer
        SFTP round trips and less Python per byte."""
        sent = 0
        h = hashlib.sha256()
        f.seek(0)
        with sftp.open(remote, "wb") as fr:
            fr.set_pipelined(True)
            fr.MAX_REQUEST_SIZE = self._request_size
            while block := f.read(_LOCAL_BLOCK):
                fr.write(block)
                h.update(block)   # releases the GIL: overlaps the transport thread's work
                sent += len(block)
        remote_size = sftp.stat(remote).st_size
        if sent != size or remote_size != size:
            raise OSError(f"size mismatch uploading {local} to {remote} on "
                          f"{self.settings.address}: local {size}, sent {sent}, "
                          f"remote {remote_size} bytes")
        return h.hexdigest()

    def _download_once(self, sftp: SFTPClient, name: str, local_dir: Path,
                       listed: paramiko.SFTPAttributes | None = None) -> Path:
        remote = posixpath.join(self.settings.remote_outbound, name)
        part = local_dir / f".{name}.part"
        # Never through a link planted at the temporary name; a stale one is unlinked.
        fd = create_temporary(part)
        try:
            with os.fdopen(fd, "wb") as f:
                size = None if listed is None else (listed.st_size or 0)
                expected = _get(sftp, remote, f, self._request_size, size=size)
                f.flush()
                os.fsync(f.fileno())
                got = os.fstat(f.fileno()).st_size
                mine = os.fstat(f.fileno())
            if listed is not None:
                # Still the file that was listed? A file being written (growing) must not be
                # taken cut short, nor removed with its end unread.
                now = sftp.stat(remote)
                if (now.st_size, now.st_mtime) != (listed.st_size, listed.st_mtime):
                    raise _ChangedMeanwhile(
                        f"changed while it was fetched ({listed.st_size} -> {now.st_size} bytes); "
                        "left on the server, fetched next time")
            if got != expected:
                raise OSError(f"size mismatch downloading {remote} from {self.settings.address}:"
                              f" expected {expected}, got {got} bytes")
            target = _place_without_overwrite(part, local_dir, name, (mine.st_dev, mine.st_ino))
        finally:
            part.unlink(missing_ok=True)  # no half file ever stays behind
        _fsync_dir(local_dir)
        sftp.remove(remote)  # only now: the local copy is durable
        log.info("downloaded %s:%s to %s", self.settings.address, remote, target)
        return target

    # -- connection and retries --

    def _retrying(self, what: str, op: Callable[[SFTPClient], T]) -> T:
        s = self.settings
        retrying = Retrying(
            stop=stop_after_attempt(s.retries + 1),
            wait=wait_exponential(multiplier=s.backoff, max=s.backoff_max),
            retry=retry_if_exception_type(SftpConnectionError),
            before_sleep=self._log_retry(what),
            reraise=True,
        )
        for attempt in retrying:
            with attempt:
                try:
                    sftp = self._sftp or self._open()
                except SftpConnectionError as exc:
                    raise SftpConnectionError(f"{what}: {exc}") from exc.__cause__
                try:
                    return op(sftp)
                except (SftpError, _ChangedMeanwhile):  # host key, auth, conflict: retrying cannot help
                    raise
                except Exception as exc:
                    if not self._connection_lost(exc):
                        raise
                    self.close()
                    raise SftpConnectionError(
                        f"{what}: connection to {s.address} lost: {exc!r}") from exc
        raise AssertionError("unreachable")  # pragma: no cover - Retrying reraises

    def _log_retry(self, what: str) -> Callable[[RetryCallState], None]:
        def before_sleep(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            wait = state.next_action.sleep if state.next_action else 0.0
            log.warning("%s failed (attempt %d of %d), retrying in %.1f s: %s", what,
                        state.attempt_number, self.settings.retries + 1, wait, exc)
        return before_sleep

    def _connection_lost(self, exc: BaseException) -> bool:
        if isinstance(exc, (EOFError, ConnectionError, TimeoutError, socket.timeout)):
            return True
        if isinstance(exc, paramiko.SSHException):  # "Server connection dropped" etc.
            return not isinstance(exc, (paramiko.AuthenticationException,
                                        paramiko.BadHostKeyException))
        # SFTP status errors (no such file, permission denied) arrive as OSError on a healthy
        # connection; a dead transport or channel means the network, not the request, failed.
        ssh, sftp = self._ssh, self._sftp
        transport = ssh.get_transport() if ssh else None
        channel = sftp.get_channel() if sftp else None
        return (transport is None or not transport.is_active()
                or channel is None or channel.closed)

    def _open(self) -> SFTPClient:
        s = self.settings
        if self._pkey is None:
            self._pkey = load_private_key(s)
        ssh = paramiko.SSHClient()
        try:
            ssh.load_host_keys(str(s.known_hosts))
        except FileNotFoundError as exc:
            port = f"-p {s.port} " if s.port != 22 else ""
            raise SftpError(f"known_hosts file {s.known_hosts} does not exist: the server's host key is "
                            "pinned there, never learnt. Get the key's fingerprint from the receiver over "
                            "another channel, then fetch the key and compare (ssh-keygen -lf "
                            f"{s.known_hosts}):\n  ssh-keyscan {port}{s.host} >> {s.known_hosts}") from exc
        except (OSError, paramiko.SSHException) as exc:
            raise SftpError(f"cannot read known_hosts file {s.known_hosts}: {exc}") from exc
        ssh.set_missing_host_key_policy(_RefuseUnknownHost(s))
        try:
            sock = socket.create_connection((s.host, s.port), timeout=s.timeout)
        except OSError as exc:
            raise SftpConnectionError(f"cannot connect to {s.address}: {exc}") from exc
        # paramiko never sets TCP_NODELAY: without it every SFTP request/ack waits ~40 ms on
        # Nagle + delayed ACK (engineering notes 3.2).
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            ssh.connect(s.host, s.port, username=s.user, pkey=self._pkey, sock=sock,
                        timeout=s.timeout, banner_timeout=s.timeout, auth_timeout=s.timeout,
                        channel_timeout=s.timeout, look_for_keys=False, allow_agent=False,
                        disabled_algorithms=_DISABLED_ALGORITHMS,
                        transport_factory=_transport_factory)
            sftp = ssh.open_sftp()
            sftp.get_channel().settimeout(s.timeout)  # a silent server raises, not hangs
        except HostKeyError:
            ssh.close()
            raise
        except paramiko.BadHostKeyException as exc:
            ssh.close()
            raise _changed_host_key(s, exc.key, exc.expected_key) from None
        except paramiko.AuthenticationException as exc:
            ssh.close()
            raise SftpAuthError(
                f"{s.address} refused key {s.key_file} ({self._pkey.get_name()} "
                f"{self._pkey.fingerprint}) for user {s.user!r}: {exc}") from exc
        except paramiko.ssh_exception.IncompatiblePeer as exc:
            ssh.close()
            raise SftpError(f"no common algorithms with {s.address}: {exc}") from exc
        except (paramiko.SSHException, EOFError, OSError) as exc:
            ssh.close()
            raise SftpConnectionError(f"SSH session with {s.address} failed: {exc!r}") from exc
        self._ssh, self._sftp = ssh, sftp
        self._request_size = s.request_size or _negotiate_request_size(sftp)
        return sftp


# --- keys and host keys -------------------------------------------------------------------

def load_private_key(s: SftpSettings) -> paramiko.PKey:
    """Load the ed25519/RSA client key; if it is encrypted, with the passphrase from the env
    variable or the file named in the settings (never from the command line)."""
    path = Path(s.key_file)
    check_key_permissions(path)
    try:
        key = _load_key(path, None)
    except FileNotFoundError:
        raise SftpAuthError(f"key file {path} does not exist") from None
    except TypeError:
        # cryptography: "password-protected, but password was not provided".
        key = _load_key(path, _read_passphrase(s))
    except (paramiko.SSHException, ValueError) as exc:
        raise SftpAuthError(f"cannot load key file {path}: {exc}") from None
    if key.get_name() not in ("ssh-ed25519", "ssh-rsa"):
        raise SftpAuthError(f"key file {path} holds a {key.get_name()} key; use ed25519 or RSA")
    return key


def check_key_permissions(path: Path) -> None:
    """Refuse a private key others may read or write, as OpenSSH does (sshkey_perm_ok): only
    for a key we own; a missing or unreadable key is reported when it is loaded."""
    try:
        st = os.stat(path)
    except OSError:
        return
    if st.st_uid == os.getuid() and st.st_mode & 0o077:
        raise SftpAuthError(f"Permissions 0{st.st_mode & 0o777:03o} for '{path}' are too open. It is "
                            "required that your private key files are NOT accessible by others. "
                            "This private key will be ignored.")


def _load_key(path: Path, passphrase: bytes | None) -> paramiko.PKey:
    if passphrase is None:
        return paramiko.PKey.from_path(path, None)
    try:
        # paramiko 5 passes the password straight to cryptography, which wants bytes.
        return paramiko.PKey.from_path(path, passphrase)  # type: ignore[arg-type]
    except (paramiko.SSHException, ValueError, TypeError):
        # The underlying messages are misleading here ("no BEGIN/END delimiters"); they never
        # contain the passphrase, but neither do we.
        raise SftpAuthError(f"cannot decrypt key file {path}: wrong passphrase?") from None


def _read_passphrase(s: SftpSettings) -> bytes:
    if s.passphrase_env:
        value = os.environ.get(s.passphrase_env)
        if not value:
            raise SftpAuthError(f"key file {s.key_file} is passphrase-protected and environment "
                                f"variable {s.passphrase_env} is not set or empty")
        return value.encode()
    if s.passphrase_file:
        try:
            text = Path(s.passphrase_file).read_text(encoding="utf-8")
        except OSError as exc:
            raise SftpAuthError(f"cannot read passphrase file {s.passphrase_file}: "
                                f"{exc.strerror}") from None
        return text.rstrip("\r\n").encode()  # the newline of `echo ... > file` is not part of it
    raise SftpAuthError(f"key file {s.key_file} is passphrase-protected: set passphrase_env or "
                        f"passphrase_file")


class _RefuseUnknownHost(paramiko.RejectPolicy):
    """RejectPolicy whose refusal says which key was offered and how to accept it deliberately."""

    def __init__(self, settings: SftpSettings) -> None:
        self.settings = settings

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str,
                         key: paramiko.PKey) -> None:
        s = self.settings
        raise HostKeyError(
            f"host {hostname} is not in known_hosts file {s.known_hosts}; it offered "
            f"{key.get_name()} key {key.fingerprint}. Refusing to connect. Check this "
            f"fingerprint with the receiver over another channel, then accept it with:\n"
            f"  {_keyscan_hint(s, key)}",
            host=s.host, port=s.port, fingerprint=key.fingerprint, expected=None)


def _changed_host_key(s: SftpSettings, offered: paramiko.PKey,
                      pinned: paramiko.PKey) -> HostKeyError:
    name = s.host if s.port == 22 else f"[{s.host}]:{s.port}"
    return HostKeyError(
        f"HOST KEY CHANGED for {name}: it offered {offered.get_name()} key "
        f"{offered.fingerprint}, but known_hosts file {s.known_hosts} pins "
        f"{pinned.get_name()} key {pinned.fingerprint}. Someone may be intercepting the "
        f"connection; refusing to connect. Only if the receiver confirms the new "
        f"fingerprint, replace the entry:\n"
        f"  ssh-keygen -R '{name}' -f {s.known_hosts} && {_keyscan_hint(s, offered)}",
        host=s.host, port=s.port, fingerprint=offered.fingerprint, expected=pinned.fingerprint)


def _keyscan_hint(s: SftpSettings, key: paramiko.PKey) -> str:
    port = f"-p {s.port} " if s.port != 22 else ""
    kind = key.get_name().removeprefix("ssh-")
    return f"ssh-keyscan {port}-t {kind} {s.host} >> {s.known_hosts}"


def _transport_factory(sock: socket.socket, **kwargs: object) -> paramiko.Transport:
    transport = paramiko.Transport(sock, **kwargs)  # type: ignore[arg-type]
    options = transport.get_security_options()
    available = set(options.ciphers)
    options.ciphers = tuple(c for c in _PREFERRED_CIPHERS if c in available) + tuple(
        c for c in options.ciphers if c not in _PREFERRED_CIPHERS)
    return transport


# --- SFTP helpers -------------------------------------------------------------------------

def _negotiate_request_size(sftp: SFTPClient) -> int:
    """Largest READ/WRITE the server accepts, from limits@openssh.com; 32 KiB if unknown."""
    try:
        # paramiko has no public call for extended requests, and drops the extension list
        # of the version reply; servers without the extension answer OP_UNSUPPORTED.
        kind, msg = sftp._request(CMD_EXTENDED, "limits@openssh.com")
    except (OSError, paramiko.SSHException):
        return _SAFE_REQUEST
    if kind != CMD_EXTENDED_REPLY:
        return _SAFE_REQUEST
    msg.get_int64()  # max packet length
    max_read, max_write = msg.get_int64(), msg.get_int64()
    limit = min(max_read, max_write)
    return max(_SAFE_REQUEST, min(limit, 255 * 1024)) if limit else _SAFE_REQUEST


def _get(sftp: SFTPClient, remote: str, out: BinaryIO, request_size: int,
         size: int | None = None) -> int:
    """Read ``remote`` into ``out`` with prefetch (bounded in-flight reads); return its size.
    With ``size`` (as listed) exactly that many bytes are read at most."""
    if size is None:
        size = sftp.stat(remote).st_size or 0
    with sftp.open(remote, "rb") as fr:
        fr.MAX_REQUEST_SIZE = request_size
        _prefetch(fr, size, request_size)
        got = 0
        while got < size:
            data = fr.read(min(request_size, size - got))
            if not data:
                break
            out.write(data)
            got += len(data)
    return size


def _prefetch(fr: SFTPFile, size: int, request_size: int) -> None:
    """fr.prefetch() with a feeder thread that ends quietly when the connection dies.

    paramiko's own feeder (SFTPFile._prefetch_thread) dies with "Exception in thread ...
    Socket is closed" when the connection drops, and while throttled it polls forever once
    responses stop coming (paramiko #2454). This one polls every 1 ms, stops when the file or
    channel is closed, and hands a send error to the reading thread the way paramiko does
    (_saved_exception). If paramiko's internals change, fall back to its own feeder."""
    limit = max(1, _PREFETCH_BYTES // request_size)
    internals = ("_prefetch_thread", "_prefetch_lock", "_prefetch_extents", "_saved_exception",
                 "_closed", "handle")
    if all(hasattr(fr, name) for name in internals):
        channel = fr.sftp.get_channel()

        def feed(chunks: list[tuple[int, int]], max_requests: int) -> None:
            try:
                for offset, length in chunks:
                    while True:
                        if fr._closed or channel is None or channel.closed:
                            return
                        with fr._prefetch_lock:
                            if len(fr._prefetch_extents) < max_requests:
                                break
                        time.sleep(0.001)
                    num = fr.sftp._async_request(fr, CMD_READ, fr.handle, int64(offset),
                                                 int(length))
                    with fr._prefetch_lock:
                        fr._prefetch_extents[num] = (offset, length)
            except (OSError, EOFError, paramiko.SSHException) as exc:
                fr._saved_exception = exc

        fr._prefetch_thread = feed  # type: ignore[method-assign]
    fr.prefetch(size, limit)


def _exists(sftp: SFTPClient, path: str) -> bool:
    try:
        sftp.stat(path)
    except FileNotFoundError:
        return False
    return True


def _remove_if_exists(sftp: SFTPClient, path: str) -> None:
    try:
        sftp.remove(path)
    except FileNotFoundError:
        pass


class _Hasher:
    def __init__(self) -> None:
        self.h = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.h.update(data)
        return len(data)


def _remote_sha256(sftp: SFTPClient, path: str, request_size: int) -> str:
    hasher = _Hasher()
    _get(sftp, path, hasher, request_size)  # type: ignore[arg-type]
    return hasher.h.hexdigest()


def _file_sha256(f: BinaryIO) -> str:
    f.seek(0)
    return hashlib.file_digest(f, "sha256").hexdigest()


def _local_sha256(path: Path) -> str | None:
    """SHA-256 of the regular file at ``path``; None for a link or anything else."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            return None
        return _file_sha256(f)


class _ChangedMeanwhile(Exception):
    """The remote file changed while it was fetched: left there, fetched next time."""


def _place_without_overwrite(part: Path, local_dir: Path, name: str,
                             identity: tuple[int, int] | None = None) -> Path:
    """Link ``part`` as ``name``, or name.N.ext if a different file holds it; never overwrite.

    os.link fails atomically when the target exists, unlike os.rename. With ``identity``
    (st_dev, st_ino of the file we wrote) a ``part`` swapped meanwhile is refused."""
    stem, dot, ext = name.rpartition(".")
    if not stem:  # no extension, or only a leading dot (refused earlier anyway)
        stem, dot, ext = name, "", ""
    for n in range(0, 10_000):
        candidate = local_dir / (name if n == 0 else f"{stem}.{n}{dot}{ext}")
        try:
            os.link(part, candidate, follow_symlinks=False)
        except FileExistsError:
            ours = _local_sha256(part)
            if ours is not None and _local_sha256(candidate) == ours:
                return candidate  # fetched before, remote removal was lost: same file
            continue
        linked = os.lstat(candidate)
        if identity is not None and (linked.st_dev, linked.st_ino) != identity:
            os.unlink(candidate)
            raise OSError(errno.EEXIST, f"{part} was replaced while {name} was fetched; "
                          "not taken")
        return candidate
    raise OSError(errno.EEXIST, f"no free local name for {name} in {local_dir}")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
