"""Running the CLI in tests: one place for the helpers several test files share."""
from __future__ import annotations

from pathlib import Path

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
