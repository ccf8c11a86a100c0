"""A real OpenSSH sshd on 127.0.0.1, for the SFTP tests, the benchmark and the demo.

Why real OpenSSH and not a paramiko stub server: the upload protocol relies on OpenSSH's
SFTP semantics (plain RENAME fails when the target exists), which stub servers do not share.

Everything lives in one work directory chosen by the caller (keys, config, pid file, log,
and the SFTP tree ``remote/inbound`` + ``remote/outbound``); nothing global is touched except,
where sshd is missing, installing the ``openssh-server`` package and creating ``/run/sshd``.
"""
from __future__ import annotations

import errno
import os
import pwd
import signal
import socket
import subprocess
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from reskontro.adapters.sftp import SftpSettings
from reskontro.testing.apt import Unavailable, ensure_package

HOST = "127.0.0.1"
SSHD_CANDIDATES = (Path("/usr/sbin/sshd"), Path("/usr/local/sbin/sshd"))
PRIVSEP_DIR = Path("/run/sshd")  # sshd refuses to start as root without it

KeyKind = Literal["ed25519", "rsa"]


class SshdUnavailable(RuntimeError):
    """OpenSSH's sshd is not installed and could not be installed."""


class SshdStartError(RuntimeError):
    """sshd was found but did not come up; the message carries the tail of its log."""


# --- installation -------------------------------------------------------------------------

def find_sshd() -> Path | None:
    for candidate in SSHD_CANDIDATES:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def ensure_openssh_server(timeout: float = 900.0) -> Path:
    """Return the path of sshd, installing ``openssh-server`` with apt-get where it is missing.

    Raises SshdUnavailable with the reason when that is impossible (not root, no apt-get,
    apt-get failing even after ``apt-get update``)."""
    try:
        return ensure_package("openssh-server", find_sshd, what="OpenSSH sshd", no_service_start=True,
                              timeout=timeout)
    except Unavailable as exc:
        raise SshdUnavailable(str(exc)) from None


# --- keys ---------------------------------------------------------------------------------

def generate_key(path: Path, kind: KeyKind = "ed25519", passphrase: str | None = None,
                 comment: str = "reskontro-test") -> str:
    """Write an OpenSSH private key to ``path`` (mode 0600) and ``path.pub``; return its .pub line.

    Done with cryptography rather than ssh-keygen so that no passphrase ever appears on a
    command line."""
    key: ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey
    key = ed25519.Ed25519PrivateKey.generate() if kind == "ed25519" else \
        rsa.generate_private_key(public_exponent=65537, key_size=3072)
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase.encode()) if passphrase
        else serialization.NoEncryption())
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                encryption)
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                           serialization.PublicFormat.OpenSSH).decode()
    _write_private(path, private)
    line = f"{public} {comment}"
    Path(f"{path}.pub").write_text(line + "\n")
    return line


def _write_private(path: Path, data: bytes) -> None:
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def free_port() -> int:
    # Small race with other processes; start() retries with a new port if sshd cannot bind.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


# --- the server ---------------------------------------------------------------------------

class LoopbackSshd:
    """One sshd process listening on 127.0.0.1 only, with its own host and client keys."""

    def __init__(self, workdir: Path, sshd: Path) -> None:
        self.workdir = workdir.resolve()
        self.sshd = sshd
        self.host = HOST
        self.port = 0
        self.user = pwd.getpwuid(os.getuid()).pw_name
        self.remote_root = self.workdir / "remote"
        self.inbound = self.remote_root / "inbound"
        self.outbound = self.remote_root / "outbound"
        self.host_key = self.workdir / "host_ed25519"
        self.client_key = self.workdir / "client_ed25519"
        self.authorized_keys = self.workdir / "authorized_keys"
        self.known_hosts = self.workdir / "known_hosts"
        self.config = self.workdir / "sshd_config"
        self.pid_file = self.workdir / "sshd.pid"
        self.log_path = self.workdir / "sshd.log"
        self._proc: subprocess.Popen[bytes] | None = None

    # -- lifecycle --

    @classmethod
    def start(cls, workdir: Path, sshd: Path | None = None,
              startup_timeout: float = 15.0) -> LoopbackSshd:
        """Create keys, config and folders in ``workdir`` and start sshd on a free port."""
        if any(c.isspace() or c in "\"'" for c in str(workdir.resolve())):
            raise ValueError(f"work dir {workdir} contains blanks or quotes, which sshd_config "
                             f"and ForceCommand cannot carry safely")
        workdir.mkdir(parents=True, exist_ok=True)
        server = cls(workdir, sshd or ensure_openssh_server())
        server._prepare()
        last_error: Exception | None = None
        for _ in range(3):  # a port taken between free_port() and bind: pick another
            server.port = free_port()
            try:
                server._launch(startup_timeout)
                return server
            except SshdStartError as exc:
                if "Address already in use" not in str(exc):
                    raise
                last_error = exc
        raise SshdStartError(f"no free port for sshd after 3 tries: {last_error}")

    def restart(self, startup_timeout: float = 15.0) -> None:
        """Start again on the same port with the same keys (after kill() or stop())."""
        if self.running:
            self.stop()
        self._launch(startup_timeout)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the listener and its session processes, wait; SIGKILL what is left."""
        self._signal_all(signal.SIGTERM, timeout)

    def kill(self) -> None:
        """SIGKILL the listener and every session process: the server 'crashes' mid-transfer."""
        self._signal_all(signal.SIGKILL, 10.0)

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def __enter__(self) -> LoopbackSshd:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- what clients need --

    def settings(self, **overrides: Any) -> SftpSettings:
        """Adapter settings for this server (client ed25519 key, pinned host key)."""
        base = SftpSettings(host=self.host, port=self.port, user=self.user,
                            key_file=self.client_key, known_hosts=self.known_hosts,
                            remote_inbound="inbound", remote_outbound="outbound")
        return replace(base, **overrides)

    def add_client_key(self, name: str, kind: KeyKind = "ed25519",
                       passphrase: str | None = None) -> Path:
        """Generate another client key in the work dir and authorise it; return its path.

        sshd reads authorized_keys at every login, so no restart is needed."""
        if "/" in name or name.startswith("."):
            raise ValueError(f"key name {name!r} must be a plain file name")
        path = self.workdir / name
        line = generate_key(path, kind, passphrase)
        with self.authorized_keys.open("a") as f:
            f.write(line + "\n")
        return path

    def host_public_key(self) -> str:
        return Path(f"{self.host_key}.pub").read_text().split()[1]

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except FileNotFoundError:
            return ""

    # -- internals --

    def _prepare(self) -> None:
        for folder in (self.inbound, self.outbound):
            folder.mkdir(parents=True, exist_ok=True)
        generate_key(self.host_key, "ed25519", comment="reskontro-loopback-host")
        client_line = generate_key(self.client_key, "ed25519")
        self.authorized_keys.write_text(client_line + "\n")
        if os.geteuid() == 0 and not PRIVSEP_DIR.is_dir():
            PRIVSEP_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)

    def _config_text(self, penalties: bool) -> str:
        lines = [
            f"Port {self.port}",
            f"ListenAddress {HOST}",
            f"HostKey {self.host_key}",
            f"PidFile {self.pid_file}",
            f"AuthorizedKeysFile {self.authorized_keys}",
            f"AllowUsers {self.user}",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "PermitRootLogin prohibit-password",
            "StrictModes no",  # tmp dirs are world-writable; with 'yes' sshd rejects the keys
            "UsePAM no",
            "UseDNS no",
            "PrintMotd no",
            "AllowTcpForwarding no",
            "X11Forwarding no",
            "PermitTTY no",
            "Subsystem sftp internal-sftp",
            # -d: relative names 'inbound/' and 'outbound/' land in <workdir>/remote.
            f"ForceCommand internal-sftp -d {self.remote_root}",
        ]
        if penalties:
            # OpenSSH >= 9.8 penalises sources whose connections end before auth; the host-key
            # tests and the readiness probe do exactly that from 127.0.0.1.
            lines.append("PerSourcePenalties no")
        return "\n".join(lines) + "\n"

    def _write_config(self) -> None:
        for penalties in (True, False):
            self.config.write_text(self._config_text(penalties))
            check = subprocess.run([str(self.sshd), "-t", "-f", str(self.config)],
                                   stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                   check=False)
            if check.returncode == 0:
                return
            if penalties and "PerSourcePenalties" in check.stderr:
                continue  # older sshd (e.g. 9.2) does not know the option and needs nothing
            raise SshdStartError(f"sshd -t rejected {self.config}: {check.stderr.strip()}")

    def _launch(self, startup_timeout: float) -> None:
        self._write_config()
        self.known_hosts.write_text(self._known_hosts_line())
        log = self.log_path.open("ab")
        try:
            # -D: stay in the foreground so that we own the pid; -e: log to the log file.
            # A new session keeps Ctrl-C at the terminal from reaching sshd directly.
            self._proc = subprocess.Popen(
                [str(self.sshd), "-D", "-e", "-f", str(self.config)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)
        finally:
            log.close()
        try:
            self._wait_ready(startup_timeout)
        except BaseException:
            self.kill()
            raise

    def _known_hosts_line(self) -> str:
        kind, blob = Path(f"{self.host_key}.pub").read_text().split()[:2]
        return f"[{HOST}]:{self.port} {kind} {blob}\n"

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        assert self._proc is not None
        while True:
            if self._proc.poll() is not None:
                raise SshdStartError(f"sshd on {HOST}:{self.port} exited with "
                                     f"{self._proc.returncode}:\n{self.log_tail()}")
            if self._banner_seen():
                return
            if time.monotonic() > deadline:
                raise SshdStartError(f"sshd on {HOST}:{self.port} did not answer within "
                                     f"{timeout:.0f} s:\n{self.log_tail()}")
            time.sleep(0.01)  # polling interval, not a wait for readiness

    def _banner_seen(self) -> bool:
        try:
            with socket.create_connection((HOST, self.port), timeout=1.0) as s:
                return s.recv(8).startswith(b"SSH-")
        except OSError:
            return False

    def _signal_all(self, sig: signal.Signals, timeout: float) -> None:
        proc = self._proc
        if proc is None or proc.poll() is not None:
            self._proc = None
            return
        # sshd forks a process per connection (and a privilege-separated child under it) that
        # calls setsid(), so a process-group kill would miss them. Freeze the listener so it
        # forks nothing new, collect its descendants, then signal them all.
        try:
            os.kill(proc.pid, signal.SIGSTOP)
        except ProcessLookupError:
            pass
        victims = _descendants(proc.pid)
        for pid in victims:
            _signal(pid, sig)
        _signal(proc.pid, sig)
        _signal(proc.pid, signal.SIGCONT)  # a stopped process does not act on SIGTERM
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            _signal(proc.pid, signal.SIGKILL)
            proc.wait(timeout)
        if sig != signal.SIGKILL:
            _reap_deadline = time.monotonic() + timeout
            while any(_alive(p) for p in victims) and time.monotonic() < _reap_deadline:
                time.sleep(0.01)
            for pid in victims:
                _signal(pid, signal.SIGKILL)
        self._proc = None
        self.pid_file.unlink(missing_ok=True)


def _signal(pid: int, sig: signal.Signals) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != "Z"


def _descendants(root: int) -> list[int]:
    """All live descendants of ``root`` (Linux /proc), children before grandchildren."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            # comm may contain blanks and ')': the fields after the last ')' are fixed.
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError) as exc:
            if isinstance(exc, OSError) and exc.errno not in (errno.ENOENT, errno.ESRCH):
                raise
            continue
        parents.setdefault(ppid, []).append(int(entry.name))
    found: list[int] = []
    queue = [root]
    while queue:
        for child in parents.get(queue.pop(0), []):
            found.append(child)
            queue.append(child)
    return found
