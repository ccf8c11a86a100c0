"""SftpClient against a real OpenSSH sshd on 127.0.0.1 (fixture `sshd` in tests/sshd_server.py).

Remote folders are plain local directories (sshd.inbound / sshd.outbound), so every remote
effect is checked on disk, independently of the adapter.
"""
from __future__ import annotations

import base64
import hashlib
import logging
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from reskontro.adapters import sftp as sftp_module
from reskontro.adapters.sftp import (ContentChangedError, HostKeyError, RemoteConflictError,
                                     RemoteRenameError, SftpAuthError, SftpClient,
                                     SftpConnectionError, unsafe_name_reason)
from reskontro.testing.loopback_sshd import LoopbackSshd, generate_key

pytestmark = pytest.mark.sshd

NAME = "LT_123456_20261128_000042.xml"


# --- helpers ------------------------------------------------------------------------------

def write_random(path: Path, size: int) -> bytes:
    data = os.urandom(size)
    path.write_bytes(data)
    return data


def sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def openssh_fingerprint(pub: Path) -> str:
    """SHA256 fingerprint as OpenSSH prints it (ssh-keygen -l), computed by hand if absent."""
    keygen = shutil.which("ssh-keygen")
    if keygen:
        out = subprocess.run([keygen, "-l", "-E", "sha256", "-f", str(pub)], check=True,
                             capture_output=True, text=True).stdout
        return out.split()[1]
    blob = base64.b64decode(pub.read_text().split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def count_connects(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """Record every TCP connection the adapter opens."""
    calls: list[tuple[str, int]] = []
    real = socket.create_connection

    def spy(address: tuple[str, int], *args: object, **kwargs: object) -> socket.socket:
        calls.append(address)
        return real(address, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(sftp_module.socket, "create_connection", spy)
    return calls


class KillWhenGrowing(threading.Thread):
    """SIGKILL sshd (and optionally restart it) as soon as ``path`` holds some bytes."""

    def __init__(self, sshd: LoopbackSshd, path: Path, restart: bool, deadline: float = 30.0):
        super().__init__(daemon=True)
        self.sshd, self.path, self.restart, self.deadline = sshd, path, restart, deadline
        self.size_at_kill: int | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            end = time.monotonic() + self.deadline
            while time.monotonic() < end:
                try:
                    size = self.path.stat().st_size
                except FileNotFoundError:
                    size = 0
                if size > 0:
                    self.size_at_kill = size
                    self.sshd.kill()
                    if self.restart:
                        self.sshd.restart()
                    return
                time.sleep(0.0005)  # polling interval
        except BaseException as exc:  # surfaced by the test through .error
            self.error = exc


def run_with_killer(killer: KillWhenGrowing, action: Callable[[], object]) -> object:
    killer.start()
    try:
        return action()
    finally:
        killer.join(60)
        assert killer.error is None, killer.error
        assert killer.size_at_kill is not None, f"{killer.path} never appeared: sshd not killed"


# --- upload -------------------------------------------------------------------------------

def test_upload_puts_exact_bytes_under_final_name(sshd: LoopbackSshd, tmp_path: Path) -> None:
    data = write_random(tmp_path / NAME, 3_000_001)
    with SftpClient(sshd.settings()) as client:
        result = client.upload(tmp_path / NAME)
    assert (sshd.inbound / NAME).read_bytes() == data
    assert sorted(p.name for p in sshd.inbound.iterdir()) == [NAME]  # no .part left
    assert result.remote == f"inbound/{NAME}"
    assert result.size == len(data) and not result.already_delivered


def test_upload_replaces_stale_part(sshd: LoopbackSshd, tmp_path: Path) -> None:
    (sshd.inbound / f"{NAME}.part").write_bytes(b"stale" * 100_000)  # longer than the new file
    data = write_random(tmp_path / NAME, 1000)
    with SftpClient(sshd.settings()) as client:
        client.upload(tmp_path / NAME)
    assert (sshd.inbound / NAME).read_bytes() == data
    assert not (sshd.inbound / f"{NAME}.part").exists()


def test_existing_remote_with_other_content_is_a_conflict(sshd: LoopbackSshd,
                                                          tmp_path: Path) -> None:
    theirs = os.urandom(5000)
    (sshd.inbound / NAME).write_bytes(theirs)
    write_random(tmp_path / NAME, 5000)  # same size, different bytes: the hash must decide
    with SftpClient(sshd.settings()) as client, \
            pytest.raises(RemoteConflictError, match=NAME) as caught:
        client.upload(tmp_path / NAME)
    assert "not overwritten" in str(caught.value)
    assert (sshd.inbound / NAME).read_bytes() == theirs
    assert sorted(p.name for p in sshd.inbound.iterdir()) == [NAME]


def test_rename_does_not_overwrite_a_name_created_meanwhile(
        sshd: LoopbackSshd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Another writer creates the final name after our existence check, while we upload the
    # .part: the plain SFTP rename must fail rather than replace it (posix_rename would).
    theirs = os.urandom(4000)
    real_put = SftpClient._put

    def put_then_race(self: SftpClient, *args: object) -> None:
        real_put(self, *args)  # type: ignore[arg-type]
        (sshd.inbound / NAME).write_bytes(theirs)

    monkeypatch.setattr(SftpClient, "_put", put_then_race)
    write_random(tmp_path / NAME, 4000)
    with SftpClient(sshd.settings()) as client, pytest.raises(RemoteConflictError, match=NAME):
        client.upload(tmp_path / NAME)
    assert (sshd.inbound / NAME).read_bytes() == theirs
    assert sorted(p.name for p in sshd.inbound.iterdir()) == [NAME]  # our .part was removed


def test_existing_remote_with_same_content_counts_as_delivered(sshd: LoopbackSshd,
                                                               tmp_path: Path) -> None:
    data = write_random(tmp_path / NAME, 70_000)
    (sshd.inbound / NAME).write_bytes(data)
    before = (sshd.inbound / NAME).stat()
    with SftpClient(sshd.settings()) as client:
        result = client.upload(tmp_path / NAME)
    assert result.already_delivered
    after = (sshd.inbound / NAME).stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)  # untouched
    assert sorted(p.name for p in sshd.inbound.iterdir()) == [NAME]


# --- download -----------------------------------------------------------------------------

def test_download_fetches_exact_bytes_then_removes_remote(sshd: LoopbackSshd,
                                                          tmp_path: Path) -> None:
    receipt = write_random(sshd.outbound / "LT_1.receipt.xml", 2_500_000)
    cremul = write_random(sshd.outbound / "CREMUL_0001.edi", 10)
    local = tmp_path / "in"
    with SftpClient(sshd.settings()) as client:
        paths = client.download_all(local)
    assert paths == [local / "CREMUL_0001.edi", local / "LT_1.receipt.xml"]
    assert (local / "LT_1.receipt.xml").read_bytes() == receipt
    assert (local / "CREMUL_0001.edi").read_bytes() == cremul
    assert sorted(p.name for p in local.iterdir()) == ["CREMUL_0001.edi", "LT_1.receipt.xml"]
    assert list(sshd.outbound.iterdir()) == []


def test_download_never_overwrites_a_local_file(sshd: LoopbackSshd, tmp_path: Path) -> None:
    local = tmp_path / "in"
    local.mkdir()
    (local / "r.xml").write_bytes(b"ours")
    (local / "same.xml").write_bytes(b"identical")
    theirs = write_random(sshd.outbound / "r.xml", 100)
    (sshd.outbound / "same.xml").write_bytes(b"identical")
    with SftpClient(sshd.settings()) as client:
        paths = client.download_all(local)
    assert paths == [local / "r.1.xml", local / "same.xml"]
    assert (local / "r.xml").read_bytes() == b"ours"
    assert (local / "r.1.xml").read_bytes() == theirs
    assert (local / "same.xml").read_bytes() == b"identical"
    assert sorted(p.name for p in local.iterdir()) == ["r.1.xml", "r.xml", "same.xml"]
    assert list(sshd.outbound.iterdir()) == []


UNSAFE = [".hidden.xml", "a..b.xml", "..", "ctl\x07.xml", "new\nline.xml", "tab\t.xml",
          "del\x7f.xml", "back\\slash.xml", "..\\up.xml"]


def test_unsafe_remote_names_are_refused_and_written_nowhere(sshd: LoopbackSshd,
                                                             tmp_path: Path) -> None:
    for name in UNSAFE:
        if name != "..":  # ".." is always listed by the server itself; paramiko drops it
            (sshd.outbound / name).write_bytes(b"evil")
    (sshd.outbound / "ok.xml").write_bytes(b"fine")
    (sshd.outbound / "subdir").mkdir()
    (sshd.outbound / "link.xml").symlink_to("/etc/hostname")
    local = tmp_path / "in"
    before = sorted(p.name for p in tmp_path.iterdir())
    with SftpClient(sshd.settings()) as client:
        report = client.fetch_outbound(local)
    assert report.downloaded == [local / "ok.xml"]
    assert sorted(r.name for r in report.refused) == sorted(n for n in UNSAFE if n != "..")
    assert all(r.reason for r in report.refused)
    assert sorted(p.name for p in local.iterdir()) == ["ok.xml"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(before + ["in"])
    # refused files, the directory and the symlink stay on the server, untouched
    left = sorted(p.name for p in sshd.outbound.iterdir())
    assert left == sorted([n for n in UNSAFE if n != ".."] + ["subdir", "link.xml"])


@pytest.mark.parametrize("name", ["", "a/b", "/abs", "..", "x/../y", "nul\x00", "c\x1f",
                                  ".part", "w\\in", "x" * 201, "bad\udcff.xml"])
def test_unsafe_name_reason(name: str) -> None:
    assert unsafe_name_reason(name)


@pytest.mark.parametrize("name", ["LT_123456_20261128_000042.xml", "CREMUL.edi", "a.b.c",
                                  "ÆØÅ.xml"])
def test_safe_name_reason(name: str) -> None:
    assert unsafe_name_reason(name) is None


def test_non_utf8_remote_name_is_refused_and_every_other_file_comes(sshd: LoopbackSshd,
                                                                    tmp_path: Path) -> None:
    bad = os.fsencode(sshd.outbound) + b"/bad\xff.xml"
    os.close(os.open(bad, os.O_CREAT | os.O_WRONLY))
    (sshd.outbound / "ok.xml").write_bytes(b"fine")
    with SftpClient(sshd.settings()) as client:
        report = client.fetch_outbound(tmp_path / "in")
    assert report.downloaded == [tmp_path / "in" / "ok.xml"]
    assert [(r.name, r.reason) for r in report.refused] == [("bad\\xff.xml", "is not UTF-8")]
    assert os.path.exists(bad) and not (sshd.outbound / "ok.xml").exists()   # left on the server


def test_overlong_remote_name_is_refused_and_every_other_file_comes(sshd: LoopbackSshd,
                                                                   tmp_path: Path) -> None:
    # 250 characters: the local temporary name (".<name>.part") would pass the 255-byte limit
    # of a file name, and once failed every fetch.
    long_name = "R" * 246 + ".xml"
    (sshd.outbound / long_name).write_bytes(b"long")
    (sshd.outbound / "ok.xml").write_bytes(b"fine")
    with SftpClient(sshd.settings()) as client:
        report = client.fetch_outbound(tmp_path / "in")
    assert report.downloaded == [tmp_path / "in" / "ok.xml"]
    assert [r.name for r in report.refused] == [long_name]
    assert "250 bytes long" in report.refused[0].reason
    assert (sshd.outbound / long_name).read_bytes() == b"long"


@pytest.mark.parametrize("dangling", [False, True], ids=["to-a-file", "dangling"])
def test_link_planted_at_the_temporary_name_is_never_written_through(
        sshd: LoopbackSshd, tmp_path: Path, dangling: bool) -> None:
    local = tmp_path / "in"
    local.mkdir()
    victim = tmp_path / "victim.txt"
    if not dangling:
        victim.write_bytes(b"precious")
    (local / ".CREMUL0001.DAT.part").symlink_to(victim)
    data = write_random(sshd.outbound / "CREMUL0001.DAT", 5000)
    with SftpClient(sshd.settings()) as client:
        paths = client.download_all(local)
    assert paths == [local / "CREMUL0001.DAT"]
    assert not (local / "CREMUL0001.DAT").is_symlink()
    assert (local / "CREMUL0001.DAT").read_bytes() == data
    if dangling:
        assert not victim.exists()                       # nothing created through the link
    else:
        assert victim.read_bytes() == b"precious"
    assert sorted(p.name for p in local.iterdir()) == ["CREMUL0001.DAT"]   # the link is gone
    assert list(sshd.outbound.iterdir()) == []


def test_link_at_the_local_name_is_not_taken_for_the_same_file(sshd: LoopbackSshd,
                                                                tmp_path: Path) -> None:
    # A link to a file with the server's very bytes must not count as "fetched before": the
    # inbox never takes links, so the server's copy would be removed and the file lost.
    local = tmp_path / "in"
    local.mkdir()
    data = b"identical bytes"
    (tmp_path / "elsewhere.DAT").write_bytes(data)
    (local / "r.DAT").symlink_to(tmp_path / "elsewhere.DAT")
    (sshd.outbound / "r.DAT").write_bytes(data)
    with SftpClient(sshd.settings()) as client:
        paths = client.download_all(local)
    assert paths == [local / "r.1.DAT"]
    assert (local / "r.1.DAT").read_bytes() == data and not (local / "r.1.DAT").is_symlink()


def test_remote_file_growing_while_fetched_is_left_there_and_fetched_whole_next_time(
        sshd: LoopbackSshd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = b"UNA:+.? 'UNB+UNOC:3+half"
    rest = b" of the file'UNZ+1+1'"
    (sshd.outbound / "CREMUL.DAT").write_bytes(first)
    real_get = sftp_module._get
    grown: list[bool] = []

    def get_while_the_bank_writes(sftp, remote, out, request_size, **kw):
        n = real_get(sftp, remote, out, request_size, **kw)
        if not grown:
            grown.append(True)
            with (sshd.outbound / "CREMUL.DAT").open("ab") as f:   # the writer is not done
                f.write(rest)
        return n

    monkeypatch.setattr(sftp_module, "_get", get_while_the_bank_writes)
    local = tmp_path / "in"
    with SftpClient(sshd.settings()) as client:
        report = client.fetch_outbound(local)
    assert grown and report.downloaded == []
    assert [r.name for r in report.changed] == ["CREMUL.DAT"]
    assert "changed while it was fetched" in report.changed[0].reason
    assert list(local.iterdir()) == []                                  # nothing cut short
    assert (sshd.outbound / "CREMUL.DAT").read_bytes() == first + rest  # not removed

    with SftpClient(sshd.settings()) as client:
        assert client.download_all(local) == [local / "CREMUL.DAT"]
    assert (local / "CREMUL.DAT").read_bytes() == first + rest
    assert list(sshd.outbound.iterdir()) == []


def test_remote_file_over_the_size_limit_is_not_downloaded(
        sshd: LoopbackSshd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (sshd.outbound / "big.DAT").write_bytes(b"x" * 1001)
    (sshd.outbound / "small.DAT").write_bytes(b"x" * 1000)
    real_get = sftp_module._get
    read: list[str] = []

    def spy(sftp, remote, out, request_size, **kw):
        read.append(remote)
        return real_get(sftp, remote, out, request_size, **kw)

    monkeypatch.setattr(sftp_module, "_get", spy)
    local = tmp_path / "in"
    with SftpClient(sshd.settings(max_fetch_size=1000)) as client:
        report = client.fetch_outbound(local)
    assert read == ["outbound/small.DAT"]                     # judged from the listing
    assert report.downloaded == [local / "small.DAT"]
    assert [r.name for r in report.failed] == ["big.DAT"]
    assert "1001 bytes is over the 1000-byte limit" in report.failed[0].reason
    assert sorted(p.name for p in sshd.outbound.iterdir()) == ["big.DAT"]


def test_one_file_failing_to_download_leaves_it_there_and_the_others_come(
        sshd: LoopbackSshd, tmp_path: Path) -> None:
    (sshd.outbound / "a.DAT").write_bytes(b"first")
    (sshd.outbound / "b.DAT").write_bytes(b"second")
    local = tmp_path / "in"
    local.mkdir()
    (local / ".a.DAT.part").mkdir()                 # the temporary name cannot be a file
    with SftpClient(sshd.settings()) as client:
        report = client.fetch_outbound(local)
    assert report.downloaded == [local / "b.DAT"]
    assert [r.name for r in report.failed] == ["a.DAT"] and "directory" in report.failed[0].reason
    assert sorted(p.name for p in sshd.outbound.iterdir()) == ["a.DAT"]


# --- what is uploaded is what was checked -------------------------------------------------

def test_upload_refuses_bytes_other_than_the_checked_ones(sshd: LoopbackSshd,
                                                          tmp_path: Path) -> None:
    checked = hashlib.sha256(b"what the check saw").hexdigest()
    write_random(tmp_path / NAME, 4000)
    with SftpClient(sshd.settings()) as client, \
            pytest.raises(ContentChangedError, match="not the file that passed the pre-send check"):
        client.upload(tmp_path / NAME, expected_sha256=checked)
    assert list(sshd.inbound.iterdir()) == []                 # no final name, no .part


def test_upload_sends_the_file_it_opened_even_if_the_name_is_swapped(
        sshd: LoopbackSshd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = write_random(tmp_path / NAME, 4000)
    real_put = SftpClient._put

    def swap_then_put(self: SftpClient, *args: object) -> str:
        other = tmp_path / "other"
        other.write_bytes(b"swapped in")
        os.replace(other, tmp_path / NAME)               # a new file under the same name
        return real_put(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(SftpClient, "_put", swap_then_put)
    with SftpClient(sshd.settings()) as client:
        client.upload(tmp_path / NAME, expected_sha256=hashlib.sha256(data).hexdigest())
    assert remote_bytes(sshd) == {NAME: data}


def test_existing_remote_with_the_checked_content_counts_even_if_local_changed(
        sshd: LoopbackSshd, tmp_path: Path) -> None:
    checked = os.urandom(3000)
    (sshd.inbound / NAME).write_bytes(checked)        # delivered earlier; the reply was lost
    write_random(tmp_path / NAME, 10)                 # edited since
    with SftpClient(sshd.settings()) as client:
        result = client.upload(tmp_path / NAME, expected_sha256=hashlib.sha256(checked).hexdigest())
    assert result.already_delivered
    with SftpClient(sshd.settings()) as client, pytest.raises(ContentChangedError):
        client.upload(tmp_path / NAME, expected_sha256=hashlib.sha256(b"else").hexdigest())
    assert remote_bytes(sshd) == {NAME: checked}


def test_rename_refused_by_the_server_removes_the_part(
        sshd: LoopbackSshd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = write_random(tmp_path / NAME, 4000)

    def refuse(self: object, old: str, new: str) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(sftp_module.SFTPClient, "rename", refuse)
    with SftpClient(sshd.settings()) as client, \
            pytest.raises(RemoteRenameError, match="refused to rename") as caught:
        client.upload(tmp_path / NAME)
    assert "stays to be sent again" in str(caught.value)
    assert list(sshd.inbound.iterdir()) == []                 # no .part left behind
    monkeypatch.undo()
    with SftpClient(sshd.settings()) as client:
        assert not client.upload(tmp_path / NAME).already_delivered
    assert remote_bytes(sshd) == {NAME: data}


def remote_bytes(sshd: LoopbackSshd) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sshd.inbound.iterdir()}


# --- host keys and authentication ---------------------------------------------------------

def test_changed_host_key_is_refused_with_fingerprint(sshd: LoopbackSshd, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    other = generate_key(tmp_path / "other_host", "ed25519").split()
    sshd.known_hosts.write_text(f"[127.0.0.1]:{sshd.port} {other[0]} {other[1]}\n")
    offered = openssh_fingerprint(Path(f"{sshd.host_key}.pub"))
    pinned = openssh_fingerprint(tmp_path / "other_host.pub")
    connects = count_connects(monkeypatch)
    with pytest.raises(HostKeyError) as caught:
        SftpClient(sshd.settings(backoff=30)).connect()
    err = caught.value
    assert (err.fingerprint, err.expected) == (offered, pinned)
    assert offered in str(err) and pinned in str(err) and "CHANGED" in str(err)
    assert f"ssh-keyscan -p {sshd.port} -t ed25519 127.0.0.1 >> {sshd.known_hosts}" in str(err)
    assert len(connects) == 1  # not retried


def test_unknown_host_is_refused_with_fingerprint(sshd: LoopbackSshd, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    # Pinned for another port only: [127.0.0.1]:PORT is unknown.
    kind, blob = Path(f"{sshd.host_key}.pub").read_text().split()[:2]
    sshd.known_hosts.write_text(f"[127.0.0.1]:{sshd.port + 1} {kind} {blob}\n")
    write_random(tmp_path / NAME, 10)
    connects = count_connects(monkeypatch)
    with pytest.raises(HostKeyError) as caught, SftpClient(sshd.settings(backoff=30)) as client:
        client.upload(tmp_path / NAME)
    err = caught.value
    assert err.expected is None
    assert err.fingerprint == openssh_fingerprint(Path(f"{sshd.host_key}.pub"))
    assert err.fingerprint in str(err) and "not in known_hosts" in str(err)
    assert f"ssh-keyscan -p {sshd.port} -t ed25519 127.0.0.1 >> {sshd.known_hosts}" in str(err)
    assert len(connects) == 1
    assert list(sshd.inbound.iterdir()) == []


def test_unauthorised_key_is_refused_and_not_retried(sshd: LoopbackSshd, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    generate_key(tmp_path / "stranger", "ed25519")
    connects = count_connects(monkeypatch)
    with pytest.raises(SftpAuthError, match="refused key"):
        SftpClient(sshd.settings(key_file=tmp_path / "stranger", backoff=30)).connect()
    assert len(connects) == 1


PASSPHRASE = "korrekt hest batteri stift"


def assert_logged_in_with(sshd: LoopbackSshd, key: Path) -> None:
    fingerprint = openssh_fingerprint(Path(f"{key}.pub"))
    log = sshd.log_tail(100_000).splitlines()
    accepted = [line for line in log if "Accepted publickey" in line]
    assert accepted and all(fingerprint in line for line in accepted), accepted


def test_passphrase_from_environment(sshd: LoopbackSshd, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch,
                                     caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    key = sshd.add_client_key("pp_ed25519", "ed25519", passphrase=PASSPHRASE)
    data = write_random(tmp_path / NAME, 1000)
    settings = sshd.settings(key_file=key, passphrase_env="RESKONTRO_TEST_SFTP_PASSPHRASE")
    with pytest.raises(SftpAuthError, match="RESKONTRO_TEST_SFTP_PASSPHRASE"):
        SftpClient(settings).connect()  # variable not set yet
    monkeypatch.setenv("RESKONTRO_TEST_SFTP_PASSPHRASE", PASSPHRASE)
    with SftpClient(settings) as client:
        client.upload(tmp_path / NAME)
    assert (sshd.inbound / NAME).read_bytes() == data
    assert_logged_in_with(sshd, key)
    assert PASSPHRASE not in caplog.text


def test_passphrase_from_file(sshd: LoopbackSshd, tmp_path: Path,
                              caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    key = sshd.add_client_key("pp_ed25519", "ed25519", passphrase=PASSPHRASE)
    secret = tmp_path / "passphrase"
    secret.write_text("wrong horse\n")
    with pytest.raises(SftpAuthError, match="wrong passphrase") as caught:
        SftpClient(sshd.settings(key_file=key, passphrase_file=secret)).connect()
    assert "wrong horse" not in str(caught.value)
    secret.write_text(PASSPHRASE + "\n")  # the trailing newline of `echo > file` is dropped
    (sshd.outbound / "r.xml").write_bytes(b"receipt")
    with SftpClient(sshd.settings(key_file=key, passphrase_file=secret)) as client:
        assert client.download_all(tmp_path / "in") == [tmp_path / "in" / "r.xml"]
    assert_logged_in_with(sshd, key)
    assert PASSPHRASE not in caplog.text and "wrong horse" not in caplog.text


def test_rsa_key_works_without_sha1(sshd: LoopbackSshd, tmp_path: Path) -> None:
    key = sshd.add_client_key("client_rsa", "rsa")
    data = write_random(tmp_path / NAME, 1000)
    with SftpClient(sshd.settings(key_file=key)) as client:
        client.upload(tmp_path / NAME)
        transport = client._ssh.get_transport() if client._ssh else None
        assert transport is not None and "ssh-rsa" not in transport.preferred_pubkeys
    assert (sshd.inbound / NAME).read_bytes() == data
    assert_logged_in_with(sshd, key)


# --- the server dies mid-transfer ---------------------------------------------------------

BIG = 64_000_000


def test_kill_mid_upload_leaves_only_part_and_next_upload_completes(
        sshd: LoopbackSshd, tmp_path: Path) -> None:
    data = write_random(tmp_path / NAME, BIG)
    client = SftpClient(sshd.settings(retries=1, backoff=0.01))
    killer = KillWhenGrowing(sshd, sshd.inbound / f"{NAME}.part", restart=False)
    with client, pytest.raises(SftpConnectionError, match=f"upload of {NAME}"):
        run_with_killer(killer, lambda: client.upload(tmp_path / NAME))
    assert killer.size_at_kill is not None and killer.size_at_kill < BIG
    assert [p.name for p in sshd.inbound.iterdir()] == [f"{NAME}.part"]  # never the final name
    assert (sshd.inbound / f"{NAME}.part").stat().st_size < BIG

    sshd.restart()
    with client:  # the same client object reconnects
        result = client.upload(tmp_path / NAME)
    assert not result.already_delivered
    assert [p.name for p in sshd.inbound.iterdir()] == [NAME]
    assert sha256(sshd.inbound / NAME) == hashlib.sha256(data).hexdigest()


def test_kill_and_restart_mid_upload_is_retried_to_completion(sshd: LoopbackSshd,
                                                              tmp_path: Path) -> None:
    data = write_random(tmp_path / NAME, BIG)
    killer = KillWhenGrowing(sshd, sshd.inbound / f"{NAME}.part", restart=True)
    with SftpClient(sshd.settings(retries=8, backoff=0.05, backoff_max=1)) as client:
        result = run_with_killer(killer, lambda: client.upload(tmp_path / NAME))
    assert killer.size_at_kill is not None and killer.size_at_kill < BIG
    assert not result.already_delivered  # type: ignore[attr-defined]
    assert [p.name for p in sshd.inbound.iterdir()] == [NAME]
    assert sha256(sshd.inbound / NAME) == hashlib.sha256(data).hexdigest()
    assert sshd.log_tail(100_000).count("Accepted publickey") >= 2  # it did reconnect


def test_kill_mid_download_leaves_no_local_file_and_next_download_completes(
        sshd: LoopbackSshd, tmp_path: Path) -> None:
    data = write_random(sshd.outbound / "big.xml", BIG)
    local = tmp_path / "in"
    local.mkdir()
    client = SftpClient(sshd.settings(retries=0))
    killer = KillWhenGrowing(sshd, local / ".big.xml.part", restart=False)
    with client, pytest.raises(SftpConnectionError, match="download of big.xml"):
        run_with_killer(killer, lambda: client.download_all(local))
    assert killer.size_at_kill is not None and killer.size_at_kill < BIG
    assert list(local.iterdir()) == []  # the local .part was removed
    assert (sshd.outbound / "big.xml").stat().st_size == BIG  # remote kept

    killer = KillWhenGrowing(sshd, local / ".big.xml.part", restart=True)
    sshd.restart()
    with SftpClient(sshd.settings(retries=8, backoff=0.05, backoff_max=1)) as client:
        paths = run_with_killer(killer, lambda: client.download_all(local))
    assert paths == [local / "big.xml"]
    assert [p.name for p in local.iterdir()] == ["big.xml"]
    assert sha256(local / "big.xml") == hashlib.sha256(data).hexdigest()
    assert list(sshd.outbound.iterdir()) == []
