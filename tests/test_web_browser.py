"""The support page in a real browser (issue 13, point 7): Debian's Chromium driven by
pytest-playwright against the page served on 127.0.0.1."""
from __future__ import annotations

import re
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from clirun import cli
from reskontro.payments.booking import payment_id
from reskontro.testing.live_web import LiveWeb, start_web
from reskontro.web.security import hash_password
from test_export import customer, import_records, invoice, make_site  # noqa: E402
from test_payments_booking import Ledger, bank, kid10, ledger, posted  # noqa: E402,F401  (fixtures)

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


@pytest.fixture
def support_web(posted: Ledger) -> Iterator[LiveWeb]:
    """The payments site of test_payments_booking (sent, accepted, its bank file posted), with
    a customer whose address is missing (their invoice held) and a bank payment of 1,000.00
    with a KID no invoice has (unmatched: meant for I3, as the payer's bank statement shows)."""
    import_records(posted.site, [customer("C9", "Ola Uten Adresse", address1="", post_code="", city=""),
                                 invoice("H1", "C9", "2500.00", document_no="FH1")])
    posted.drop("CREMUL_3.DAT", [bank("*3003", "1000.00", kid10(77))], "B3")
    assert cli(posted.site, "post").exit_code == 3
    web = start_web(posted.site)
    yield web
    web.stop()


def test_support_finds_an_invoice_sees_why_it_is_held_and_opens_a_file(page: Page, support_web: LiveWeb) -> None:
    page.goto(support_web.url + "/")
    page.get_by_role("searchbox", name="Search").fill("fh1")
    page.locator("#hits").get_by_role("link", name=re.compile("H1")).click()     # the live results
    expect(page.get_by_role("heading", name="Invoice H1")).to_be_visible()
    expect(page.locator("main")).to_contain_text("hold by rule")
    expect(page.locator(".next")).to_contain_text("Next:")

    page.get_by_role("searchbox", name="Search").fill("F3")
    page.get_by_role("searchbox", name="Search").press("Enter")                 # one hit: straight to it
    expect(page.get_by_role("heading", name="Invoice I3")).to_be_visible()
    file_link = page.locator("table", has_text="Files that carried it").get_by_role("link").first
    name = file_link.inner_text()
    file_link.click()
    expect(page.get_by_role("heading", name=name)).to_be_visible()
    expect(page.locator("main")).to_contain_text("accepted")
    expect(page.get_by_role("link", name="I3", exact=True)).to_be_visible()


def test_support_matches_an_unmatched_payment_and_the_invoice_closes(page: Page, support_web: LiveWeb,
                                                                      posted: Ledger) -> None:
    page.goto(support_web.url + "/payments?status=unmatched")
    pid = payment_id("*3003")
    row = page.locator(f"#payment-{pid}")
    expect(row).to_contain_text("unmatched")
    row.get_by_label(f"Invoice to match {pid} to").fill("I3")
    row.get_by_label(f"Why match {pid} by hand").fill("the payer's statement names F3")
    row.get_by_role("button", name="Match").click()
    expect(page.locator(f"#payment-{pid}")).to_contain_text("invoice closed")     # swapped in place by htmx
    assert posted.open_in_store("I3") == Decimal("0.00")
    page.goto(support_web.url + "/entries/I3")
    expect(page.locator("main")).to_contain_text("Closed")
    expect(page.locator("main")).to_contain_text("the payer's statement names F3")


@pytest.mark.parametrize("width", [390, 1280])
def test_pages_fit_a_phone_and_a_desktop_without_sideways_scrolling(browser: Browser, support_web: LiveWeb,
                                                                    width: int) -> None:
    context = browser.new_context(viewport={"width": width, "height": 800})
    page = context.new_page()
    for url in ("/", "/files", "/held", "/payments", "/entries/I3", "/customers"):
        page.goto(support_web.url + url)
        # wide tables scroll inside their own box; the page itself never does
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), f"{url} at {width} px"
        expect(page.get_by_role("searchbox", name="Search")).to_be_visible()
    context.close()
