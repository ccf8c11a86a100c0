"""`explain ID` by any identifier, with delivery (every file that carried each version, its
state, the receipt and the receiver's errors), the fields of an entry changed after it was
sent (sent value, current value; also from a file dropped by hand), the match and its history,
the next step; and `held` / `excluded`, which agree with `plan`."""
from __future__ import annotations

import io
import json
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from reskontro import services
from reskontro.domain import Address, Customer, Entry
from reskontro.exchange.remote import send
from reskontro.site import Site
from reskontro.transfer.render import FileHeader, make_environment, render_transfer
from test_export import (Lowell, cli, customer, day_one, entry, export, flat, import_records, invoice, make_site,
                         match, payment, valid_kid)
from test_journal_receipts import FakeSftp, tamper_kid

KID1 = valid_kid("10000010")


def explained(site: Path, ident: str) -> dict:
    r = cli(site, "explain", ident, "--json", code=0)
    return json.loads(r.stdout)


def files_of(doc: dict) -> list[tuple[str, str, bool]]:
    return [(f["name"], f["state"], f["current"]) for f in doc["delivery"]["files"]]


@pytest.fixture
def site(tmp_path: Path) -> Path:
    site = make_site(tmp_path)
    import_records(site, [customer("C1", "Kari Nordmann"), customer("C3", "Uten Postnummer", post_code=""),
                          invoice("I1", "C1", "1000.00", document_no="F1", kid=KID1),
                          payment("P1", "C1", "-400.00", kid=KID1), match("M1", "I1", "P1"),
                          invoice("I3", "C3", "700.00", document_no="F3")])
    return site


def test_an_entry_from_held_to_in_flight_to_delivered(site: Path) -> None:
    doc = explained(site, "I3")
    assert (doc["decision"], doc["rule"]) == ("hold", "customer-address-incomplete")
    assert doc["delivery"] == {"state": "never_sent", "file_id": None, "changed": False, "changes": None, "files": []}
    assert doc["next"].startswith("A person must act (rule customer-address-incomplete): The customer's postal")

    f1 = export(site)
    doc = explained(site, "F1")                                       # by document number
    assert (doc["entry"], doc["asked"], doc["found_by"]) == ("I1", "F1", "document_no")
    assert doc["ledger"]["amount"] == "1000.00" and doc["ledger"]["customer_name"] == "Kari Nordmann"
    assert doc["delivery"]["state"] == "in_flight" and doc["delivery"]["file_id"] == f1.path.stem
    assert files_of(doc) == [(f1.path.name, "written", True)]
    assert f"it is in {f1.path.name} in outbox/" in doc["next"] and "reskontro send" in doc["next"]
    assert doc["match"]["id"] == "M1" and doc["match"]["open"] == "600.00"
    assert [(m["id"], m["at_lowell"]) for m in doc["match"]["members"]] == [("I1", "in_flight"), ("P1", "in_flight")]
    assert [f["members"] for f in doc["match"]["delivery"]["files"]] == [["I1", "P1"]]

    Lowell().accept(site, f1)
    doc = explained(site, KID1)                     # a KID the invoice and its payment share: the invoice
    assert (doc["entry"], doc["found_by"]) == ("I1", "kid")
    assert doc["delivery"]["state"] == "delivered" and files_of(doc) == [(f1.path.name, "accepted", True)]
    receipt = doc["delivery"]["files"][0]["receipt"]
    assert receipt["status"] == "accepted" and receipt["received_at"] and receipt["errors"] == []
    assert doc["next"] == f"Nothing: Lowell has it ({f1.path.name}, accepted)"
    history = [h["what"] for h in doc["history"]]
    assert history[0].startswith(f"{f1.path.name} (daily) carried this version")
    assert f"receipt for {f1.path.name}: accepted" in history

    text = flat(cli(site, "explain", "F1").stdout)
    assert "F1 is the document number of I1:" in text and "Delivery: delivered:" in text
    assert "Files that carried it" in text and f"Next: Nothing: Lowell has it ({f1.path.name}, accepted)" in text


def test_a_rejected_file_names_the_receivers_error_on_the_entry_and_it_goes_again(site: Path) -> None:
    f1 = export(site)
    lowell = Lowell()
    receipt = lowell.take(site, f1, tamper_kid(f1.path.read_bytes(), KID1))
    assert receipt.status == "rejected"
    cli(site, "receipts", code=3)
    doc = explained(site, "I1")
    assert doc["delivery"]["state"] == "never_sent"
    [carried] = doc["delivery"]["files"]
    assert carried["state"] == "rejected"
    errors = carried["receipt"]["errors"]
    assert errors[0]["ref"] == "I1" and errors[0]["code"] == "kid" and errors[0]["about_this"] is True
    assert doc["next"].startswith(f"Nothing, unless the receiver's reason is about it: {f1.path.name} was rejected "
                                  "([kid] ")
    assert "KID 100000100 fails MOD10 and MOD11" in doc["next"]
    assert "goes again in the next file" in doc["next"]
    f2 = export(site)
    assert files_of(explained(site, "I1")) == [(f1.path.name, "rejected", True), (f2.path.name, "written", True)]


def test_changed_after_sent_shows_each_field_sent_and_now(site: Path) -> None:
    f1 = export(site)
    Lowell().accept(site, f1)
    import_records(site, [invoice("I1", "C1", "1200.00", document_no="F1-B", kid=KID1)])
    doc = explained(site, "I1")
    assert (doc["decision"], doc["rule"]) == ("hold", "changed-after-sent")
    d = doc["delivery"]
    assert d["state"] == "delivered" and d["changed"] is True
    assert d["changes"] == [{"field": "document_no", "sent": "F1", "current": "F1-B"},
                            {"field": "amount", "sent": "1000.00", "current": "1200.00"}]
    assert files_of(doc) == [(f1.path.name, "accepted", False)]           # it carried the earlier version
    assert doc["next"].startswith("A person must act (rule changed-after-sent)")
    text = flat(cli(site, "explain", "I1").stdout)
    assert "Changed after it was sent" in text and "F1 │ F1-B" in text and "1000.00 │ 1200.00" in text
    # changed once more: what Lowell has is still the first version
    import_records(site, [invoice("I1", "C1", "1300.00", document_no="F1-B", kid=KID1)])
    assert [c["sent"] for c in explained(site, "I1")["delivery"]["changes"]] == ["F1", "1000.00"]
    # and back as sent: nothing differs, nothing is held
    import_records(site, [invoice("I1", "C1", "1000.00", document_no="F1", kid=KID1)])
    doc = explained(site, "I1")
    assert doc["delivery"]["changed"] is False and doc["delivery"]["changes"] == [] and doc["decision"] == "transfer"


def _hand_dropped(site: Path, seq: int, amount: str) -> Path:
    """A backlog file support drops into outbox/, carrying C1 and I1 with `amount`."""
    oslo = ZoneInfo("Europe/Oslo")
    cut = datetime.now(oslo).replace(microsecond=0)
    header = FileHeader("123456", "923609016", seq, "backlog", cut, cut)
    cust = Customer("C1", "Kari Nordmann", "private", Address(("Storgata 1",), "0150", "OSLO", "NO"))
    inv = Entry("I1", "C1", "invoice", "F1", date(2026, 11, 2), Decimal(amount), due_date=date(2026, 12, 31),
                kid=KID1, status="invoiced")
    out = io.BytesIO()
    render_transfer(out, header, [cust], [inv], [], make_environment(site / "templates"))
    path = site / "outbox" / f"{header.file_id}.xml"
    path.write_bytes(out.getvalue())
    return path


def test_a_file_dropped_by_hand_is_part_of_the_entrys_delivery_with_what_it_carried(site: Path, tmp_path: Path) -> None:
    path = _hand_dropped(site, 40, "999.00")
    cfg = Site.open(site).config
    sent = send(cfg, Site.open(site).db, client_factory=lambda: FakeSftp(tmp_path / "lowell" / "inbound"))
    assert sent.refused == [], sent
    doc = explained(site, "I1")
    assert files_of(doc) == [(path.name, "uploaded", False)]
    assert doc["delivery"]["files"][0]["kind"] == "manual"
    assert doc["delivery"]["changes"] == [{"field": "amount", "sent": "999.00", "current": "1000.00"}]
    assert (doc["decision"], doc["rule"]) == ("hold", "changed-after-sent")


def test_explain_finds_by_the_erp_id_and_refuses_an_ambiguous_document_number(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    import_records(site, [customer("C1"), entry("K1", "C1", "credit_note", "-10.00", document_no="D-9"),
                          entry("K2", "C1", "credit_note", "-20.00", document_no="D-9"),
                          invoice("I5", "C1", "50.00", document_no="f-5")])
    r = cli(site, "explain", "D-9", code=1)
    assert flat(r.stderr) == ("error: D-9: the document number of 2 entries: K1 (credit note), K2 (credit note); "
                              "explain one by its id")
    assert explained(site, "F-5")["entry"] == "I5"                         # any case
    assert explained(site, "i5")["entry"] == "I5"
    r = cli(site, "explain", "I55", code=1)
    assert flat(r.stderr) == "error: no entry with id 'I55' in the ledger; did you mean: I5?"


# --- held and excluded ---------------------------------------------------------------------------
def test_held_and_excluded_list_what_plan_counts(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    import_records(site, day_one())
    plan = json.loads(cli(site, "plan", "--json").stdout)["totals"]
    held = json.loads(cli(site, "held", "--json").stdout)
    excluded = json.loads(cli(site, "excluded", "--json").stdout)
    assert held["total"] == plan["hold"] + plan["wait"] == len(held["entries"])
    assert excluded["total"] == plan["exclude"] == len(excluded["entries"])
    assert {e["entry_id"]: (e["decision"], e["rule_id"]) for e in held["entries"]} == {
        "I3": ("hold", "customer-address-incomplete"), "I7": ("hold", "kid-invalid"),
        "I9a": ("hold", "many-to-many"), "I9b": ("hold", "many-to-many"),
        "P9a": ("hold", "many-to-many"), "P9b": ("hold", "many-to-many"),
        "I4": ("wait", "invoice-not-invoiced"), "P5": ("wait", "unlinked-payment")}
    assert held["by_rule"] == {"customer-address-incomplete": 1, "invoice-not-invoiced": 1, "kid-invalid": 1,
                               "many-to-many": 4, "unlinked-payment": 1}
    i3 = next(e for e in held["entries"] if e["entry_id"] == "I3")
    assert (i3["customer_id"], i3["customer_name"], i3["amount"], i3["currency"]) == ("C3", "Ola Uten Postnummer",
                                                                                      "700.00", "NOK")
    assert {e["entry_id"] for e in excluded["entries"]} == {"V6", "P8", "R8"}
    assert {e["entry_id"] for e in json.loads(cli(site, "held", "--rule", "many-to-many", "--json").stdout)
            ["entries"]} == {"I9a", "I9b", "P9a", "P9b"}
    only = json.loads(cli(site, "held", "--customer", "C3", "--json").stdout)
    assert [e["entry_id"] for e in only["entries"]] == ["I3"] and only["by_rule"] == {"customer-address-incomplete": 1}
    assert "I3\tinvoice\tC3\tOla Uten Postnummer\t700.00 NOK\thold\tcustomer-address-incomplete" in \
        cli(site, "held", "--plain").stdout


def test_held_pages_through_the_same_list_and_says_since_when(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    import_records(site, day_one())
    s = Site.open(site)
    whole = services.held(s, limit=None)
    pages = [services.held(s, offset=o, limit=3) for o in range(0, whole.total, 3)]
    assert [r.entry_id for p in pages for r in p.rows] == [r.entry_id for r in whole.rows]
    assert all(p.total == whole.total for p in pages) and pages[0].more and not pages[-1].more
    assert all(r.held_since is None for r in whole.rows)
    cli(site, "run", "--no-sftp", code=3)                         # the cycle records what it holds, and since when
    held = services.held(s, rule="kid-invalid")
    assert [r.entry_id for r in held.rows] == ["I7"] and held.rows[0].held_since is not None
    assert [r.entry_id for r in services.excluded(s, customer="C2", rule="voucher-opted-out").rows] == ["V6"]
    assert services.excluded(s, customer="C2", rule="kid-invalid").total == 0
    assert services.excluded(s, customer="C2").total == 3
