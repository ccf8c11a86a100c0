"""pytest plugin: Debian's Chromium for pytest-playwright (Playwright cannot download its own
browser here), installed with apt-get where missing, like openssh-server for the SFTP tests."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from reskontro.testing.apt import Unavailable, ensure_package

# Chromium on a closed network: no background connections, no first-run, no sandbox as root.
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage"]


def find_chromium() -> Path | None:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return Path(found)
    return None


@pytest.fixture(scope="session")
def chromium_binary() -> Path:
    try:
        return ensure_package("chromium", find_chromium, what="Chromium")
    except Unavailable as exc:
        pytest.skip(f"no Chromium for the browser tests: {exc}")


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict, chromium_binary: Path) -> dict:
    return {**browser_type_launch_args, "executable_path": str(chromium_binary), "args": CHROMIUM_FLAGS}

