"""Ledger integrity: Lowell never sees a wrong amount, and never duns what is paid.

Each case follows the ledger to the receiver model and checks its open balances against the
ledger's, to the øre: a reminder in the ERP after transfer, a reversal before sending, a
correction of a reversed payment, settled history before the backlog, a payment split between
a Lowell invoice and an in-house one, an invoice marked in-house after it was sent.
"""
from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

from test_export import (Lowell, cli, customer, entry, export, import_records, invoice, make_site,
                         match, payment, status_json)


def plan_json(site: Path, *args: str) -> dict:
    return json.loads(cli(site, "plan", "--json", *args).output)


def decisions(site: Path, *args: str) -> dict[str, int]:
    """The plan's counts per (decision, rule) as 'decision/rule'."""
    return {f"{l['decision']}/{l['rule']}": l["count"] for l in plan_json(site, *args)["lines"]}


def explain(site: Path, eid: str) -> dict:
    return json.loads(cli(site, "explain", "--json", eid).output)


def test_a_reminder_in_the_erp_after_transfer_never_freezes_the_invoice(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    lowell = Lowell()
    import_records(site, [customer("C1"), invoice("I1", "C1", "1000.00", text="Faktura 1")])
    lowell.accept(site, export(site))

    # The ERP sends its own reminder: a field the transfer file does not carry.
    import_records(site, [invoice("I1", "C1", "1000.00", text="Faktura 1", dunning_level=1)])
    ex = explain(site, "I1")
    assert (ex["decision"], ex["rule"]) == ("transfer", "invoice")
    assert ex["facts"]["changed_after_sent"] is False and ex["facts"]["sent"] is True
    assert plan_json(site)["totals"] == {}                  # nothing new to send, nothing held

    # The customer pays: the payment goes, and closes the invoice at Lowell too.
    import_records(site, [payment("P1", "C1", "-1000.00"), match("M1", "I1", "P1")])
    assert decisions(site) == {"transfer/linked": 1}
    f2 = export(site)
    assert set(f2.entries) == {"P1"} and f2.matches == {"M1": ["I1", "P1"]}
    lowell.accept(site, f2)
    assert lowell.model.open_balances() == {"I1": Decimal("0.00")}

    # A change Lowell would see (the amount) is held, with the correction procedure.
    import_records(site, [invoice("I1", "C1", "900.00", text="Faktura 1", dunning_level=1)])
    ex = explain(site, "I1")
    assert (ex["decision"], ex["rule"]) == ("hold", "changed-after-sent")
    assert "amount" in ex["reason"]


def test_an_invoice_marked_in_house_after_it_was_sent_is_held_with_what_to_tell_lowell(tmp_path: Path) -> None:
    site = make_site(tmp_path, mode="factoring")
    lowell = Lowell()
    import_records(site, [customer("C1"), invoice("I1", "C1", "1000.00", factoring=False),
                          invoice("I2", "C1", "500.00", factoring=True),
                          entry("V1", "C1", "manual_voucher", "-100.00"), match("M1", "I1", "V1")])
    f1 = export(site)
    assert set(f1.entries) == {"I1", "V1"}                  # I2 is followed up in-house
    lowell.accept(site, f1)

    import_records(site, [invoice("I1", "C1", "1000.00", factoring=True),
                          entry("V1", "C1", "manual_voucher", "-100.00", opt_out=True)])
    ex = explain(site, "I1")
    assert (ex["decision"], ex["rule"]) == ("hold", "in-house-after-sent")
    assert "Ask Lowell to stop following it up" in " ".join(ex["reason"].split())
    ex = explain(site, "V1")
    assert (ex["decision"], ex["rule"]) == ("hold", "voucher-opted-out-after-sent")
    # Nothing new goes, and what Lowell has stays as it was.
    f2 = export(site)
    assert f2.entries == {} and f2.matches == {}
    assert lowell.model.open_balances() == {"I1": Decimal("900.00")}


def test_a_payment_reversed_before_any_file_carried_it_is_not_sent(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    lowell = Lowell()
    import_records(site, [customer("C1"), invoice("I1", "C1", "1000.00"),
                          payment("P1", "C1", "-1000.00"), match("M1", "I1", "P1"),
                          entry("R1", "C1", "reversal", "1000.00", reverses="P1")])
    assert decisions(site) == {"transfer/invoice": 1, "exclude/reversed-before-sent": 1,
                               "exclude/reversal-before-sent": 1}
    ex = explain(site, "R1")
    assert "cancel out" in ex["reason"] and "(P1)" in ex["reason"]
    f1 = export(site)
    assert set(f1.entries) == {"I1"} and f1.matches == {}
    lowell.accept(site, f1)
    # Lowell follows up the invoice, as the ERP has it: open.
    assert lowell.model.open_balances() == {"I1": Decimal("1000.00")}
    assert status_json(site)["items"]["held"] == 0


def test_a_reversal_of_a_payment_lowell_has_is_held_until_the_correction_is_booked(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    lowell = Lowell()
    import_records(site, [customer("C1"), invoice("I1", "C1", "1000.00"), invoice("I2", "C1", "1000.00"),
                          payment("P1", "C1", "-1000.00"), match("M1", "I1", "P1")])
    lowell.accept(site, export(site))
    assert lowell.model.open_balances() == {"I1": Decimal("0.00"), "I2": Decimal("1000.00")}

    # P1 belonged to I2: the ERP reverses it.
    import_records(site, [entry("R1", "C1", "reversal", "1000.00", reverses="P1")])
    ex = explain(site, "R1")
    assert (ex["decision"], ex["rule"]) == ("hold", "reversed-payment")
    assert status_json(site)["items"]["held"] == 1

    out = cli(site, "correct-payment", "P1", "--to", "I2")
    assert "UP1" in out.output
    ex = explain(site, "R1")
    assert (ex["decision"], ex["rule"]) == ("exclude", "reversal-corrected")
    assert "payout UP1" in ex["reason"] and "P1" in ex["reason"]
    assert status_json(site)["items"]["held"] == 0          # the hold list shows only what needs a person
    f2 = export(site)
    assert set(f2.entries) == {"UP1", "NP1"}
    lowell.accept(site, f2)
    assert lowell.model.open_balances() == {"I1": Decimal("1000.00"), "I2": Decimal("0.00")}


def test_settled_history_before_the_backlog_is_shown_for_what_it_is(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    lowell = Lowell()
    import_records(site, [customer("C1"), invoice("I1", "C1", "1000.00"), payment("P1", "C1", "-1000.00"),
                          match("M1", "I1", "P1"), invoice("I2", "C1", "300.00")])
    # Previewing the backlog: the settled group is history.
    assert decisions(site, "--backlog") == {"transfer/invoice": 1, "exclude/settled-before-service": 2}
    f1 = export(site, "--backlog")
    assert set(f1.entries) == {"I2"}
    lowell.accept(site, f1)

    # From now on plan, explain and status agree with what the export did.
    assert decisions(site) == {"exclude/settled-before-service": 2}
    assert status_json(site)["items"]["to_send"] == 0
    ex = explain(site, "I1")
    assert (ex["decision"], ex["rule"]) == ("exclude", "settled-before-service")
    assert "goes only if the match reopens" in " ".join(ex["reason"].split())
    assert export(site).entries == {}

    # The group reopens (the payment is partly paid back): now it is Lowell's business.
    import_records(site, [entry("U1", "C1", "payout", "200.00"), match("M1", "I1", "P1", "U1")])
    assert decisions(site) == {"transfer/invoice": 1, "transfer/linked": 2}
    assert status_json(site)["items"]["to_send"] == 3
    f3 = export(site)
    assert set(f3.entries) == {"I1", "P1", "U1"}
    lowell.accept(site, f3)
    assert lowell.model.open_balances() == {"I1": Decimal("200.00"), "I2": Decimal("300.00")}

    # Settled again at Lowell: later members go too (the group is no longer history).
    import_records(site, [payment("P2", "C1", "-200.00"), match("M1", "I1", "P1", "U1", "P2")])
    f4 = export(site)
    assert set(f4.entries) == {"P2"}
    lowell.accept(site, f4)
    assert lowell.model.open_balances() == {"I1": Decimal("0.00"), "I2": Decimal("300.00")}


def test_a_payment_split_between_a_lowell_invoice_and_an_in_house_invoice_is_held(tmp_path: Path) -> None:
    site = make_site(tmp_path, mode="factoring")
    lowell = Lowell()
    import_records(site, [customer("C1"), invoice("I1", "C1", "1000.00", factoring=False),
                          invoice("I2", "C1", "500.00", factoring=True),
                          payment("P1", "C1", "-1500.00"), match("M1", "I1", "I2", "P1")])
    ex = explain(site, "P1")
    assert (ex["decision"], ex["rule"]) == ("hold", "payment-split-in-house")
    assert "one payment per invoice" in " ".join(ex["reason"].split())
    f1 = export(site)
    assert set(f1.entries) == {"I1"} and f1.matches == {}
    lowell.accept(site, f1)
    # Lowell never shows a credit balance: it has the invoice, open, until the split arrives.
    assert lowell.model.open_balances() == {"I1": Decimal("1000.00")}

    # The ERP splits the payment: the Lowell part goes and closes the invoice.
    import_records(site, [payment("P1", "C1", "-1000.00"), payment("P1b", "C1", "-500.00"),
                          match("M1", "I1", "P1"), match("M2", "I2", "P1b")])
    f2 = export(site)
    assert set(f2.entries) == {"P1"} and f2.matches == {"M1": ["I1", "P1"]}
    lowell.accept(site, f2)
    assert lowell.model.open_balances() == {"I1": Decimal("0.00")}


def test_a_store_from_before_the_two_stamps_is_upgraded_without_false_changes(tmp_path: Path) -> None:
    """An older store had one version over every field; opening it gives every row its two
    stamps, and the journal's sent versions follow, so nothing Lowell has looks changed."""
    import sqlite3

    site = make_site(tmp_path)
    lowell = Lowell()
    import_records(site, [customer("C1"), invoice("I1", "C1", "1000.00")])
    lowell.accept(site, export(site))
    db = site / "reskontro.db"
    assert db.is_file()
    with sqlite3.connect(db) as con:       # as the older version left it
        for table in ("entries", "customers"):
            con.execute(f"ALTER TABLE {table} DROP COLUMN stamp")
        con.execute("UPDATE entries SET version = 'old-entry-vers'")
        con.execute("UPDATE customers SET version = 'old-cust-versn'")
        con.execute("UPDATE sent SET version = 'old-entry-vers' WHERE kind = 'entry'")
        con.execute("UPDATE sent SET version = 'old-cust-versn' WHERE kind = 'customer'")
    ex = explain(site, "I1")
    assert (ex["decision"], ex["rule"]) == ("transfer", "invoice") and ex["facts"]["changed_after_sent"] is False
    assert plan_json(site)["totals"] == {}
    assert export(site).entries == {}
    with sqlite3.connect(db) as con:
        assert con.execute("SELECT count(*) FROM entries WHERE stamp IS NULL OR stamp = ''").fetchone() == (0,)
