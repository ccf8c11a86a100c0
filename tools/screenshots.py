"""The screenshots in docs/screenshots/: the support page on the demo site, in Debian's
Chromium driven by Playwright (as the browser tests do).

    .venv/bin/python tools/screenshots.py [--out docs/screenshots]

Builds the demo site in a temporary folder (`make demo`'s loop), lists one bank payment with
a KID no invoice has (so the payments page has one to match), serves the page on 127.0.0.1 and
takes: the overview, an entry held by the rules, the held list, the payments, a file, and the
overview at a phone's width.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import shutil
import sys
import tempfile
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from playwright.sync_api import sync_playwright  # noqa: E402

from reskontro import demo, services  # noqa: E402
from reskontro.adapters.cremul import render_cremul  # noqa: E402
from reskontro.domain import BankPayment  # noqa: E402
from reskontro.site import Site  # noqa: E402
from reskontro.testing.live_web import start_web  # noqa: E402
from web_browser import CHROMIUM_FLAGS, find_chromium  # noqa: E402


def demo_site(folder: Path) -> Site:
    shutil.copy(ROOT / "reskontro.toml", folder)
    for name in ("rules", "templates"):
        shutil.copytree(ROOT / name, folder / name)
    with contextlib.redirect_stdout(io.StringIO()):
        assert demo.main(folder) == 0, "the demo failed: run make demo"
    stray = BankPayment("cremul", "*SHOT-1", Decimal("1250.00"), "NOK", date(2026, 11, 27), date(2026, 11, 30),
                        kid="000000000771", payer_name="Kari Nordmann", payer_account="12345678903")
    data = render_cremul([stray], reference="SHOT1", created=datetime(2026, 11, 30, 6, 0))
    (folder / "inbox" / "CREMUL_SHOT.DAT").write_bytes(data.encode("latin-1"))
    site = Site.open(folder)
    services.watch(site, once=True, rescan=60, stop=None)
    services.post(site)
    return site


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    args = ap.parse_args()
    chromium = find_chromium()
    if chromium is None:
        raise SystemExit("no chromium: apt-get install chromium (the browser tests install it)")
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        site = demo_site(Path(tmp))
        held = services.held(site, rule="customer-type-missing", limit=1).rows[0].entry_id
        first_file = services.files(site)[0].file_id
        web = start_web(site.config.site)
        shots = [("overview", "/", 1280), ("entry", f"/entries/{held}", 1280), ("held", "/held", 1280),
                 ("payments", "/payments", 1280), ("file", f"/files/{first_file}", 1280), ("phone", "/", 390)]
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=str(chromium), args=CHROMIUM_FLAGS)
                for name, url, width in shots:
                    page = browser.new_page(viewport={"width": width, "height": 900 if width > 600 else 800})
                    page.goto(web.url + url)
                    page.wait_for_load_state("networkidle")
                    page.screenshot(path=str(args.out / f"{name}.png"), full_page=False)
                    page.close()
                    print(f"{args.out / (name + '.png')}: {url} at {width} px")
                browser.close()
        finally:
            web.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
