"""Helpers several test files share: running the CLI, reading its output, polling."""
from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from click.testing import CliRunner, Result

from reskontro.cli import main


def cli(site: Path, *args: str) -> Result:
    """Run `reskontro --site SITE ARGS`; a crash (anything but an exit) fails the test."""
    result = CliRunner().invoke(main, ["--site", str(site), *args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def flat(text: str) -> str:
    """CLI output with rich's line wrapping undone."""
    return " ".join(text.split())


def wait_for(predicate: Callable[[], object], timeout: float, what: str) -> object:
    """Poll `predicate` until it is true (returning its value) or fail after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)   # polling interval, not a wait for the result
