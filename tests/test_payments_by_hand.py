"""`reskontro match-payment` and `dismiss-payment`: an unmatched bank payment linked by hand
(post's checks, post's booking: the invoice closes and the next file carries it like any
other) or taken off the list (never booked, never tried or reported again); each recorded
with who and when and shown by `explain`; the payments page, unmatched first.

The site is test_payments_booking's: its ledger sent and accepted, its bank file posted, so
*1004 (overpayment on I4), *1005 (KID of the closed I5) and *1099 (an unknown KID) are
unmatched."""
from __future__ import annotations

import getpass
import json
from decimal import Decimal

import pytest
from sqlalchemy import select

from reskontro import services
from reskontro.domain import BankPayment, InputError
from reskontro.ledger import schema as s
from reskontro.payments.booking import payment_id
from reskontro.site import Site
from clirun import cli, flat
from test_payments_booking import (BOOKED_ON, BP, PAID_ON, Ledger, bank, entries_of, kid10, ledger,  # noqa: F401
                                   matches_of, posted)

UNMATCHED = {"*1004", "*1005", "*1099"}


def snapshot(lg: Ledger) -> tuple:
    with lg.db.connect() as conn:
        return (conn.execute(select(s.entries).order_by(s.entries.c.id)).all(),
                conn.execute(select(s.bank_payments).order_by(s.bank_payments.c.id)).all(),
                conn.execute(select(s.actions)).all())


def test_a_payment_matched_by_hand_closes_the_invoice_and_goes_like_any_other(posted: Ledger) -> None:
    posted.drop("CREMUL_3.DAT", [bank("*3003", "1000.00", kid10(77))], "B3")     # a KID no invoice has
    assert cli(posted.site, "post").exit_code == 3
    pid = payment_id("*3003")
    assert posted.payments()["*3003"]["status"] == "unmatched"

    r = cli(posted.site, "match-payment", pid, "--to", "F3", "--json")          # the invoice by its document number
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert (doc["payment"], doc["invoice"], doc["match"], doc["amount"], doc["still_open"], doc["closed"]) == \
        (pid, "I3", "MI3", "1000.00", "0.00", True)
    assert doc["action"]["who"] == getpass.getuser() and doc["action"]["action"] == "match-payment"

    # booked exactly as post books one: compare with *1001, which post matched to I1
    mine, auto = posted.entry(pid), posted.entry(BP["*1001"])
    same = ("type", "source", "origin", "customer_id", "document_date", "currency")
    assert {k: mine[k] for k in same} == {k: auto[k] for k in same}
    assert (mine["bank_ref"], mine["amount_ore"], mine["match_id"]) == ("*3003", -100000, "MI3")
    listed = posted.payments()["*3003"]
    assert (listed["status"], listed["invoice"], listed["note"], listed["entry"]) == ("matched", "I3", "invoice closed", pid)
    assert posted.open_in_store("I3") == Decimal("0.00")

    root = posted.export_and_deliver()
    assert pid in entries_of(root) and matches_of(root)["MI3"] == {"I3", pid}
    assert posted.receiver.open_balances()["I3"] == Decimal("0.00")             # closed at Lowell too


def test_a_partial_match_by_hand_leaves_the_rest_open(posted: Ledger) -> None:
    m = services.match_payment(Site.open(posted.site), BP["*1099"], "I3", who="web:kari", reason="customer called")
    assert (m.invoice, m.still_open, m.closed) == ("I3", Decimal("950.00"), False)
    assert (m.action.who, m.action.reason) == ("web:kari", "customer called")
    assert posted.payments()["*1099"]["note"] == "partial: 950.00 still open"


@pytest.mark.parametrize("payment, invoice, message", [
    ("NOPE", "I3", "NOPE: no bank payment with this id or archive reference (`reskontro payments` lists them)"),
    ("*1099", "NOPE", "NOPE: unknown invoice (no invoice with this id or document number in the ledger)"),
    ("*1099", "K7", "K7: not an invoice (it is a credit note)"),
    ("*1001", "I3", "{*1001}: already matched to invoice I1 (invoice closed)"),
    ("*1004", "I4", "{*1004} cannot be matched to I4: overpayment: 400.00 against 300.00 open on invoice I4"),
    ("*1005", "I5", "{*1005} cannot be matched to I5: invoice I5 is closed (nothing open on it)"),
    ("*1099", "I1", "{*1099} cannot be matched to I1: invoice I1 is closed (nothing open on it)"),
    ("*1099", "I8", "{*1099} cannot be matched to I8: invoice I8 shares its match with other invoices and one "
                    "counterpart; a second counterpart would make it many-to-many"),
])
def test_match_payment_refuses_naming_the_id_and_what_is_wrong(posted: Ledger, payment: str, invoice: str,
                                                                message: str) -> None:
    # a payment by its id, and *1099 by the bank's archive reference (either names it)
    ident = BP[payment] if payment.startswith("*") and payment != "*1099" else payment
    before = snapshot(posted)
    r = cli(posted.site, "match-payment", ident, "--to", invoice)
    assert r.exit_code == 1
    assert flat(r.stderr) == "error: " + message.format_map({k: v for k, v in BP.items()}), r.stderr
    assert snapshot(posted) == before


def test_match_payment_refuses_another_currency(posted: Ledger) -> None:
    eur = BankPayment("cremul", "*4004", Decimal("100.00"), "EUR", PAID_ON, BOOKED_ON, kid=kid10(98))
    posted.drop("CREMUL_4.DAT", [eur], "B4")
    cli(posted.site, "post")
    with pytest.raises(InputError, match=r"cannot be matched to I3: currency EUR differs from invoice's NOK"):
        services.match_payment(Site.open(posted.site), "*4004", "I3")


def test_dismissed_is_off_the_list_never_tried_nor_reported_again(posted: Ledger) -> None:
    site = Site.open(posted.site)
    r = cli(posted.site, "dismiss-payment", BP["*1099"], "--reason", "refunded to the payer 2026-12-01")
    assert r.exit_code == 0, r.output
    assert flat(r.stdout) == f"Dismissed {BP['*1099']} (was unmatched): refunded to the payer 2026-12-01. It is off the list."
    got = posted.payments()["*1099"]
    assert got["status"] == "dismissed"
    assert got["note"] == f"dismissed by {getpass.getuser()}: refunded to the payer 2026-12-01"
    assert "*1099" not in posted.payments("--unposted")
    assert posted.entry(BP["*1099"]) is None                                    # booked nowhere
    for ref in ("*1004", "*1005"):
        services.dismiss_payment(site, BP[ref], "returned by the bank", who="web:ola")
    post = cli(posted.site, "post")
    assert post.exit_code == 0 and flat(post.stdout).startswith("Booked 0 payments; 0 invoices closed; 0 unmatched")
    run = json.loads(cli(posted.site, "run", "--no-sftp", "--json").stdout)
    step = next(x for x in run["steps"] if x["name"] == "post")
    assert step["attention"] == [] and step["detail"].endswith("0 unmatched")
    # refused once dismissed, changing nothing
    before = snapshot(posted)
    again = cli(posted.site, "dismiss-payment", BP["*1099"], "--reason", "again")
    assert again.exit_code == 1 and "dismissed (dismissed by" in flat(again.stderr)
    matched = cli(posted.site, "match-payment", BP["*1099"], "--to", "I3")
    assert matched.exit_code == 1 and flat(matched.stderr).startswith(f"error: {BP['*1099']}: dismissed (")
    assert snapshot(posted) == before


def test_dismiss_needs_a_reason_and_a_payment_on_the_list(posted: Ledger) -> None:
    site = Site.open(posted.site)
    with pytest.raises(InputError, match="a reason is needed"):
        services.dismiss_payment(site, BP["*1099"], "   ")
    with pytest.raises(InputError, match=r"already matched to invoice I1"):
        services.dismiss_payment(site, BP["*1001"], "refunded")
    assert cli(posted.site, "dismiss-payment", BP["*1099"]).exit_code == 2          # --reason is required


def test_explain_shows_the_actions_on_the_payment_and_on_the_invoice(posted: Ledger) -> None:
    site = Site.open(posted.site)
    services.match_payment(site, BP["*1099"], "I3", who="web:kari", reason="customer called")
    invoice = json.loads(cli(posted.site, "explain", "I3", "--json").stdout)
    [action] = invoice["actions"]
    assert (action["who"], action["action"], action["payment"], action["invoice"], action["reason"]) == \
        ("web:kari", "match-payment", BP["*1099"], "I3", "customer called")
    assert action["at"] and "booked 50.00 NOK on I3 in match MI3; 950.00 still open" in action["detail"]
    assert [p["id"] for p in invoice["payments"]] == [BP["*1099"]]
    assert any(h["what"].startswith("match-payment by web:kari (customer called)") for h in invoice["history"])
    payment = json.loads(cli(posted.site, "explain", BP["*1099"], "--json").stdout)
    assert payment["entry"] == BP["*1099"] and payment["found_by"] == "id"
    assert [a["action"] for a in payment["actions"]] == ["match-payment"]
    assert "match-payment by web:kari" in flat(cli(posted.site, "explain", "I3").stdout)

    services.dismiss_payment(site, BP["*1004"], "refunded", who="web:ola")
    dismissed = json.loads(cli(posted.site, "explain", "*1004", "--json").stdout)     # by archive reference
    assert (dismissed["entry"], dismissed["found_by"], dismissed["decision"]) == (None, "payment", None)
    assert dismissed["payment"]["status"] == "dismissed" and dismissed["payment"]["amount"] == "400.00"
    assert [(a["action"], a["who"], a["reason"]) for a in dismissed["actions"]] == [("dismiss-payment", "web:ola", "refunded")]
    assert dismissed["next"] == "Nothing: it is off the list (dismissed by web:ola: refunded)"


def test_explain_of_an_unmatched_bank_payment_says_what_to_do(posted: Ledger) -> None:
    doc = json.loads(cli(posted.site, "explain", BP["*1005"], "--json").stdout)
    assert doc["entry"] is None and doc["payment"]["note"] == "KID of invoice I5, which is closed"
    assert f"`reskontro match-payment {BP['*1005']} --to INVOICE`" in doc["next"]
    assert f"`reskontro dismiss-payment {BP['*1005']} --reason TEXT`" in doc["next"]
    text = flat(cli(posted.site, "explain", BP["*1005"]).stdout)
    assert f"{BP['*1005']}: bank payment 200.00 NOK (*1005), unmatched: KID of invoice I5, which is closed" in text


def test_correct_payment_points_an_unbooked_payment_to_match_payment_and_is_recorded(posted: Ledger) -> None:
    r = cli(posted.site, "correct-payment", BP["*1099"], "--to", "I3")
    assert r.exit_code == 1
    assert f"match it by hand: `reskontro match-payment {BP['*1099']} --to I3`" in flat(r.stderr)
    posted.export_and_deliver()
    services.correct_payment(Site.open(posted.site), BP["*1001"], "I3", who="web:kari")
    doc = json.loads(cli(posted.site, "explain", "I3", "--json").stdout)
    assert [(a["action"], a["who"], a["payment"]) for a in doc["actions"]] == [("correct-payment", "web:kari", BP["*1001"])]


def test_the_payments_page_puts_the_unmatched_first_and_pages(posted: Ledger) -> None:
    site = Site.open(posted.site)
    whole = services.payment_page(site, limit=100)
    assert [r.status for r in whole.rows][:3] == ["unmatched"] * 3
    assert {r.archive_ref for r in whole.rows[:3]} == UNMATCHED
    assert whole.by_status == {"unmatched": 3, "matched": 4} and whole.total == 7
    pages = [services.payment_page(site, offset=o, limit=2) for o in range(0, 7, 2)]
    assert [r.id for p in pages for r in p.rows] == [r.id for r in whole.rows]
    only = services.payment_page(site, status="matched", offset=1, limit=2)
    assert only.total == 4 and [r.id for r in only.rows] == [r.id for r in whole.rows[4:6]]
    assert all(r.entry_id == r.id for r in whole.rows if r.status == "matched")
