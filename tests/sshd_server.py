"""pytest plugin: a real OpenSSH sshd on 127.0.0.1 (loaded by conftest.py via pytest_plugins).

The `sshd` fixture is function-scoped: every test gets fresh keys, an empty inbound/ and
outbound/, and may kill or restart the server without affecting others (start-up ~50 ms).
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from reskontro.testing.loopback_sshd import LoopbackSshd, SshdUnavailable, ensure_openssh_server


@pytest.fixture(scope="session")
def sshd_binary() -> Path:
    """Path of sshd; installs openssh-server where missing, skips if that is impossible."""
    try:
        return ensure_openssh_server()
    except SshdUnavailable as exc:
        pytest.skip(f"no OpenSSH sshd for the SFTP tests: {exc}")


@pytest.fixture
def sshd(tmp_path_factory: pytest.TempPathFactory, sshd_binary: Path) -> Iterator[LoopbackSshd]:
    server = LoopbackSshd.start(tmp_path_factory.mktemp("sshd"), sshd=sshd_binary)
    try:
        yield server
    finally:
        server.stop()
