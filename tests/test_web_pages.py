"""The support page's answers (issue 13, point 5) read the same service functions as the CLI:
search by any identifier, an entry with its delivery and next step, held and excluded with
filters, payments unmatched first with match and dismiss (POST with the CSRF token, recorded
with the web login), a file with its content, a customer. Pages are paged and carry ids only."""
from __future__ import annotations

import re
from decimal import Decimal

import pytest
from starlette.testclient import TestClient

from reskontro.payments.booking import payment_id
from reskontro.web.app import create_app
from test_payments_booking import Ledger, ledger, posted  # noqa: F401  (fixtures)


@pytest.fixture
def web(posted: Ledger):
    with TestClient(create_app(posted.site, warm=False), base_url="http://127.0.0.1:8080",
                    client=("127.0.0.1", 40000)) as client:
        yield client


def csrf(html: str) -> str:
    return re.search(r'name="csrf" value="([0-9a-f]{64})"', html).group(1)


def token(web: TestClient) -> str:
    return csrf(web.get("/").text)


def test_search_by_document_number_goes_to_the_entry(web: TestClient) -> None:
    r = web.post("/search", data={"q": "F3", "csrf": token(web)}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/entries/I3"
    page = web.get("/entries/I3").text
    assert "Next:" in page and "Delivery" in page and "delivered" in page
    assert re.search(r'href="/files/LT_\w+"', page)                 # the file that carried it


def test_live_search_answers_a_fragment_with_did_you_mean(web: TestClient) -> None:
    hx = {"hx-request": "true", "hx-target": "hits"}
    r = web.post("/search", data={"q": "i", "csrf": token(web)}, headers=hx)
    assert r.status_code == 200 and "<html" not in r.text and 'href="/entries/I1"' in r.text
    miss = web.post("/search", data={"q": "I33", "csrf": token(web)}, headers=hx).text
    assert "Nothing found" in miss and "Did you mean" in miss and 'value="I3"' in miss


def test_what_support_types_never_lands_in_a_url(web: TestClient) -> None:
    page = web.get("/").text
    form = re.search(r'<form class="search"[^>]*>', page).group(0)
    assert 'method="post"' in form
    assert web.post("/search", data={"q": "Kari"}).status_code == 403          # the token, as for actions
    found = web.post("/search", data={"q": "kari", "csrf": token(web)})
    assert found.status_code == 200 and "Kari Nordmann" in found.text
    assert "kari" not in str(found.url).lower()


def test_an_unknown_id_is_a_404_that_suggests(web: TestClient) -> None:
    r = web.get("/entries/I33")
    assert r.status_code == 404 and "I3" in r.text


def test_held_lists_each_entry_with_rule_and_reason_and_filters(web: TestClient) -> None:
    page = web.get("/held").text
    rows = re.findall(r'<tr><td><a href="/entries/([^"]+)">', page)
    assert "P9" in rows                                             # waiting: a payment not yet linked
    one_rule = re.search(r'<option value="([^"]+)">', page.split('name="rule"')[1]).group(1)
    filtered = web.get(f"/held?rule={one_rule}").text
    assert one_rule in filtered and len(re.findall(r"<tr><td><a", filtered)) <= len(rows)
    assert web.get("/held?customer=NOBODY").text.count("<tr><td><a") == 0


def test_payments_come_unmatched_first_and_a_match_needs_the_token(web: TestClient, posted: Ledger) -> None:
    page = web.get("/payments").text
    statuses = re.findall(r'class="state state-(\w+)"', page)
    assert statuses[:3] == ["unmatched"] * 3
    pid = payment_id("*1099")
    refused = web.post(f"/payments/{pid}/match", data={"to": "I3"})
    assert refused.status_code == 403 and "security token" in refused.text
    cross = web.post(f"/payments/{pid}/match", data={"to": "I3", "csrf": csrf(page)},
                     headers={"origin": "https://evil.example"})
    assert cross.status_code == 403
    assert posted.payments()["*1099"]["status"] == "unmatched"      # nothing happened
    done = web.post(f"/payments/{pid}/match", data={"to": "I3", "reason": "customer called", "csrf": csrf(page)},
                    headers={"hx-request": "true"})
    assert done.status_code == 200 and "matched" in done.text
    assert posted.open_in_store("I3") == Decimal("950.00")
    who = web.get("/entries/I3").text
    assert re.search(r"match-payment by web:\S+", who) and "customer called" in who


def test_a_refused_match_says_why_and_changes_nothing(web: TestClient, posted: Ledger) -> None:
    token = csrf(web.get("/payments").text)
    pid = payment_id("*1004")
    r = web.post(f"/payments/{pid}/match", data={"to": "I4", "csrf": token}, headers={"hx-request": "true"})
    assert r.status_code == 200 and 'class="error"' in r.text and "overpayment" in r.text
    assert posted.payments()["*1004"]["status"] == "unmatched"


def test_a_dismissed_payment_leaves_the_unmatched_list(web: TestClient, posted: Ledger) -> None:
    token = csrf(web.get("/payments").text)
    pid = payment_id("*1005")
    r = web.post(f"/payments/{pid}/dismiss", data={"reason": "refunded to the payer", "csrf": token},
                 follow_redirects=False)
    assert r.status_code == 303                                        # without htmx: back to the payment
    assert posted.payments()["*1005"]["status"] == "dismissed"
    assert pid not in web.get("/payments?status=unmatched").text
    assert "refunded to the payer" in web.get(r.headers["location"]).text


def test_a_get_cannot_act(web: TestClient) -> None:
    assert web.get(f"/payments/{payment_id('*1099')}/match?to=I3").status_code == 405


def test_a_file_page_shows_what_it_carried(web: TestClient) -> None:
    files = web.get("/files").text
    first = re.search(r'href="/files/(LT_\w+)"', files).group(1)
    page = web.get(f"/files/{first}").text
    assert "accepted" in page and 'href="/entries/I3"' in page


def test_a_customer_page_links_its_lists(web: TestClient) -> None:
    page = web.get("/customers/C1").text
    assert 'href="/held?customer=C1"' in page and 'href="/excluded?customer=C1"' in page
    assert web.get("/customers/NOBODY").status_code == 404


def test_ids_with_slashes_spaces_and_letters_beyond_ascii_open_their_pages(tmp_path) -> None:
    from test_export import customer, import_records, invoice, make_site
    site = make_site(tmp_path)
    import_records(site, [customer("KUNDE/ØST 1", "Åse Øst"), invoice("F/2026/ÆØÅ 7", "KUNDE/ØST 1", "100.00")])
    with TestClient(create_app(site, warm=False), base_url="http://127.0.0.1:8080",
                    client=("127.0.0.1", 40000)) as web:
        found = web.post("/search", data={"q": "f/2026", "csrf": csrf(web.get("/").text)},
                         headers={"hx-request": "true", "hx-target": "hits"}).text
        link = re.search(r'href="(/entries/[^"]+)"', found).group(1)
        page = web.get(link)
        assert page.status_code == 200 and "F/2026/ÆØÅ 7" in page.text
        customer_link = re.search(r'href="(/customers/[^"]+)"', page.text).group(1)
        assert web.get(customer_link).status_code == 200 and "Åse Øst" in web.get(customer_link).text
