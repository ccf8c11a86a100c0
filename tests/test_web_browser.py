"""The support page in a real browser (issue 13, point 7): Debian's Chromium driven by
pytest-playwright against the page served on 127.0.0.1."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, expect

from reskontro.testing.live_web import LiveWeb, start_web
from reskontro.web.security import hash_password
from test_export import customer, import_records, invoice, make_site  # noqa: E402

PASSWORD = "correct horse battery staple"


@pytest.fixture
def locked_site(tmp_path: Path) -> Path:
    site = make_site(tmp_path)
    import_records(site, [customer("C1", "Kari Nordmann"), invoice("I1", "C1", "100.00")])
    cfg = site / "reskontro.toml"
    cfg.write_text(cfg.read_text(encoding="utf-8") + f'\n[web.users]\nsupport = "{hash_password(PASSWORD)}"\n',
                   encoding="utf-8")
    return site


@pytest.fixture
def locked_web(locked_site: Path) -> Iterator[LiveWeb]:
    web = start_web(locked_site)
    yield web
    web.stop()


def test_a_wrong_password_is_refused_and_the_right_one_logs_in(browser: Browser, locked_web: LiveWeb) -> None:
    wrong = browser.new_context(http_credentials={"username": "support", "password": "not it"})
    response = wrong.new_page().goto(locked_web.url + "/")
    assert response is not None and response.status == 401
    wrong.close()
    right = browser.new_context(http_credentials={"username": "support", "password": PASSWORD})
    page = right.new_page()
    response = page.goto(locked_web.url + "/")
    assert response is not None and response.status == 200
    expect(page.locator(".login")).to_have_text("support")
    expect(page.get_by_role("heading", name="Overview")).to_be_visible()
    right.close()
