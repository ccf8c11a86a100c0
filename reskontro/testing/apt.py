"""Installing a Debian package the tests need (openssh-server, chromium) where it is missing."""
from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path


class Unavailable(RuntimeError):
    """The program is not installed and could not be installed; the message says why."""


def ensure_package(package: str, find: Callable[[], Path | None], *, what: str,
                   no_service_start: bool = False, timeout: float = 900.0) -> Path:
    """The program `find` locates, installing `package` with apt-get where it is missing (as
    root; an `apt-get update` first when the install fails on a stale index). With
    `no_service_start`, the package's postinst may not start a system service."""
    found = find()
    if found:
        return found
    if os.geteuid() != 0:
        raise Unavailable(f"{what} is not installed and we are not root, so "
                          f"`apt-get install -y {package}` cannot be run")
    apt = shutil.which("apt-get")
    if apt is None:
        raise Unavailable(f"{what} is not installed and there is no apt-get to install {package} with")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = [apt, "install", "-y", "--no-install-recommends", package]
    # The standard "deny" policy keeps a postinst from starting the system's own service (sshd
    # on port 22); created only if none exists, and removed after.
    policy = Path("/usr/sbin/policy-rc.d")
    own_policy = no_service_start and not policy.exists()
    if own_policy:
        policy.write_text("#!/bin/sh\n# temporary, written by reskontro.testing.apt\nexit 101\n")
        policy.chmod(0o755)
    try:
        result = _run(install, env, timeout)
        if result.returncode != 0:  # typically a stale or empty package index on a fresh machine
            _run([apt, "update"], env, timeout)
            result = _run(install, env, timeout)
    finally:
        if own_policy:
            policy.unlink(missing_ok=True)
    found = find()
    if found is None:
        tail = (result.stdout or "")[-1500:]
        raise Unavailable(f"`apt-get install -y {package}` did not provide {what} (exit {result.returncode}):\n{tail}")
    return found


def _run(cmd: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(cmd, env=env, timeout=timeout, text=True, stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise Unavailable(f"running {' '.join(cmd)} failed: {exc}") from exc
