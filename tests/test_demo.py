"""`make demo` runs the whole loop and ends by printing the command that opens the support page
on the demo site (issue 13, point 9); that page then shows the demo's files."""
from __future__ import annotations

import re
import shlex
import shutil
import urllib.request
from pathlib import Path

import pytest

from reskontro import demo
from reskontro.testing.live_web import start_web

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.sshd
def test_the_demo_ends_with_the_command_that_opens_its_page(tmp_path: Path, sshd_binary: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    site = tmp_path / "demo"
    site.mkdir()
    shutil.copy(ROOT / "reskontro.toml", site)
    for folder in ("rules", "templates"):
        shutil.copytree(ROOT / folder, site / folder)
    assert demo.main(site) == 0
    out = " ".join(capsys.readouterr().out.split())
    command = re.search(r"in a browser: (.+? web) and open (http://127\.0\.0\.1:\d+/)", out)
    assert command, out[-600:]
    words = shlex.split(command.group(1))
    assert words[-3:] == ["--site", str(site), "web"] and Path(words[0]).name in ("reskontro", "python", "python3")
    web = start_web(site, warm=False)
    try:
        files = urllib.request.urlopen(web.url + "/files", timeout=30).read().decode()
    finally:
        web.stop()
    assert files.count("state-accepted") >= 2
