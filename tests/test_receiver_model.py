"""The receiver model: each rule of the contract across files, balances, receipts, folders.

Files are rendered by the real renderer from domain objects (builders in test_contract.py)
and handed to the model as bytes, as the receiver gets them.
"""
from __future__ import annotations

import copy
from dataclasses import replace
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from reskontro.domain import InputError, Match
from reskontro.transfer.receipts import Receipt, ReceiptError, read_receipt, render_receipt
from reskontro.testing.receiver_model import ReceiverModel
from test_contract import OSLO, XSD, counter, customer, header, invoice, kid10, render

NOW = datetime(2026, 11, 28, 18, 30, tzinfo=OSLO)


@pytest.fixture
def model() -> ReceiverModel:
    return ReceiverModel(XSD, clock=lambda: NOW)


def send(model: ReceiverModel, tmp_path: Path, seq: int, customers=(), entries=(), matches=(),
         cut_off: datetime | None = None) -> Receipt:
    hdr = header(seq, cut_off or datetime(2026, 11, 28, 18, 0, tzinfo=OSLO))
    path, _ = render(tmp_path, customers, entries, matches, hdr)
    receipt = model.receive(path.read_bytes(), path.name)
    assert read_receipt(render_receipt(receipt), "receipt.xml") == receipt
    return receipt


def codes(receipt: Receipt) -> list[tuple[str, str | None]]:
    return [(e.code, e.ref) for e in receipt.errors]


def state(model: ReceiverModel) -> tuple:
    return copy.deepcopy((model.last_sequence, model.customers, model.entries, model.matches,
                          model.group_of))


def first_day(model: ReceiverModel, tmp_path: Path) -> Receipt:
    """C1 owes I1 1000.00, paid 400.00 (M1); I2 300.00 is open and ungrouped."""
    return send(model, tmp_path, 1, [customer("C1")],
                [invoice("I1", "1000.00", kid=kid10("100001")), counter("P1", "-400.00"),
                 invoice("I2", "300.00")], [Match("M1", ("I1", "P1"))])


# ------------------------------------------------------------------ accept / reject

def test_accepts_a_valid_file(model, tmp_path):
    receipt = first_day(model, tmp_path)
    assert receipt == Receipt("LT_123456_20261128_000001", "accepted", NOW, ())
    assert set(model.entries) == {"I1", "P1", "I2"} and model.last_sequence == 1


def test_contract_errors_become_coded_receipt_errors(model, tmp_path):
    receipt = send(model, tmp_path, 1, [customer("C1")], [invoice("I1", "1.00", kid="123456789")])
    assert receipt.status == "rejected" and codes(receipt) == [("kid", "I1")]
    assert "KID 123456789 fails MOD10 and MOD11" in receipt.errors[0].text
    assert model.entries == {}


def test_sequence_must_rise_but_may_skip(model, tmp_path):
    first_day(model, tmp_path)
    assert codes(send(model, tmp_path, 1, [customer("C2")])) == [("sequence", None)]
    assert send(model, tmp_path, 5, [customer("C2")]).status == "accepted"    # a gap is fine
    assert codes(send(model, tmp_path, 4, [customer("C3")])) == [("sequence", None)]
    assert model.last_sequence == 5 and "C3" not in model.customers


def test_entry_sent_again_identical_is_ignored(model, tmp_path):
    first_day(model, tmp_path)
    again = send(model, tmp_path, 2, [], [invoice("I2", "300.00")])
    assert again.status == "accepted" and model.entries["I2"].amount == Decimal("300.00")


def test_entry_sent_again_changed_rejects_the_file(model, tmp_path):
    first_day(model, tmp_path)
    receipt = send(model, tmp_path, 2, [], [invoice("I2", "300.01"), invoice("I3", "5.00")])
    assert codes(receipt) == [("entry_changed", "I2")]
    assert "I3" not in model.entries and model.entries["I2"].amount == Decimal("300.00")


def test_customer_sent_again_replaces(model, tmp_path):
    first_day(model, tmp_path)
    moved = replace(customer("C1", "Ola Nordmann"), address=replace(
        customer("C1").address, lines=("Kirkegata 2",), post_code="5003", city="Bergen"))
    assert send(model, tmp_path, 2, [moved]).status == "accepted"
    assert model.customers["C1"].lines == ("Kirkegata 2",)
    assert model.customers["C1"].city == "Bergen"


def test_match_sent_again_grows(model, tmp_path):
    first_day(model, tmp_path)
    receipt = send(model, tmp_path, 2, [], [counter("P2", "-600.00")],
                   [Match("M1", ("I1", "P1", "P2"))])
    assert receipt.status == "accepted"
    assert model.matches["M1"] == {"I1", "P1", "P2"}
    assert model.open_balances()["I1"] == Decimal("0.00")


def test_match_that_drops_a_member_is_rejected(model, tmp_path):
    first_day(model, tmp_path)
    receipt = send(model, tmp_path, 2, [], [counter("P2", "-600.00")],
                   [Match("M1", ("I1", "P2"))])
    assert codes(receipt) == [("match_shrunk", "M1")] and "drops P1" in receipt.errors[0].text
    assert model.matches["M1"] == {"I1", "P1"} and "P2" not in model.entries


def test_entry_joins_at_most_one_group_across_files(model, tmp_path):
    first_day(model, tmp_path)
    receipt = send(model, tmp_path, 2, [], [], [Match("M2", ("I2", "P1"))])
    assert codes(receipt) == [("entry_in_two_groups", "M2")]
    assert "P1 is already in Match M1" in receipt.errors[0].text
    assert model.group_of["P1"] == "M1" and "M2" not in model.matches


def test_grown_match_must_keep_its_shape(model, tmp_path):
    first_day(model, tmp_path)
    receipt = send(model, tmp_path, 2, [], [invoice("I9", "10.00"), counter("P9", "-10.00")],
                   [Match("M1", ("I1", "P1", "I9", "P9"))])
    assert codes(receipt) == [("match_shape", "M1")]


def test_references_resolve_to_earlier_files(model, tmp_path):
    first_day(model, tmp_path)
    receipt = send(model, tmp_path, 2, [], [counter("P2", "-300.00")],   # C1 from file 1
                   [Match("M2", ("I2", "P2"))])                           # I2 from file 1
    assert receipt.status == "accepted" and model.group_of["I2"] == "M2"


def test_unknown_references_are_rejected(model, tmp_path):
    first_day(model, tmp_path)
    receipt = send(model, tmp_path, 2, [], [counter("P2", "-1.00", cust="C404")],
                   [Match("M2", ("I2", "P404"))])
    assert codes(receipt) == [("unknown_customer", "P2"), ("unknown_entry", "M2")]


def test_rejected_file_changes_nothing(model, tmp_path):
    first_day(model, tmp_path)
    before = state(model)
    receipt = send(model, tmp_path, 2, [customer("C1", "Changed"), customer("C2")],
                   [invoice("I2", "999.00"), invoice("I7", "7.00", cust="C2")],
                   [Match("M1", ("I1", "P1", "I7"))])
    assert receipt.status == "rejected" and ("entry_changed", "I2") in codes(receipt)
    assert state(model) == before


def test_file_leaning_on_a_rejected_file_is_rejected_too(model, tmp_path):
    first_day(model, tmp_path)
    bad = send(model, tmp_path, 2, [customer("C2")],
               [invoice("I5", "50.00", cust="C2", kid="123456789")])
    assert bad.status == "rejected"
    leaning = send(model, tmp_path, 3, [], [counter("P5", "-50.00", cust="C2")],
                   [Match("M5", ("I5", "P5"))])
    assert codes(leaning) == [("ref_to_rejected", "P5"), ("ref_to_rejected", "M5")]
    # the sender sends the content again, corrected, in a later file
    fixed = send(model, tmp_path, 4, [customer("C2")],
                 [invoice("I5", "50.00", cust="C2"), counter("P5", "-50.00", cust="C2")],
                 [Match("M5", ("I5", "P5"))])
    assert fixed.status == "accepted" and model.open_balances()["I5"] == Decimal("0.00")


# ------------------------------------------------------------------ balances

def test_open_balances_to_the_ore(model, tmp_path):
    send(model, tmp_path, 1, [customer("C1"), customer("C2", "Ås & Sønn <AS>", "business",
                                                        "923609016")],
         [invoice("I1", "1000.00"), counter("P1", "-333.33"), counter("CN1", "-0.01",
                                                                      etype="credit_note"),
          invoice("I2", "100.10", "C2"), invoice("I3", "200.20", "C2"),
          counter("P2", "-300.29", "C2"),
          invoice("I4", "49.99", cur="EUR"),
          invoice("I6", "10.00"), counter("PO6", "-10.00", etype="payment"),
          counter("X6", "10.00", etype="payout"), counter("V6", "-2.50", etype="manual_voucher")],
         [Match("M1", ("I1", "P1", "CN1")), Match("M2", ("I2", "I3", "P2")),
          Match("M6", ("I6", "PO6", "X6", "V6"))])
    assert model.open_balances() == {
        "I1": Decimal("666.66"),    # 1000.00 - 333.33 - 0.01
        "I2": Decimal("0.01"), "I3": Decimal("0.01"),     # one group, both map to it
        "I4": Decimal("49.99"),     # in no group: its own amount
        "I6": Decimal("7.50")}      # paid, paid back (payout), then a credit voucher
    groups = model.open_groups()
    assert groups["M2"] == (frozenset({"I2", "I3", "P2"}), Decimal("0.01"))
    assert groups["I4"] == (frozenset({"I4"}), Decimal("49.99"))
    assert set(groups) == {"M1", "M2", "M6", "I4"}


# ------------------------------------------------------------------ the folders

def test_serve_folder_processes_in_sequence_order(model, tmp_path):
    inbound, outbound, work = tmp_path / "inbound", tmp_path / "outbound", tmp_path / "work"
    inbound.mkdir()
    work.mkdir()
    # Sequence 2 is a backlog file cut off a day earlier: its name sorts first.
    p1, _ = render(work, [customer("C1")], [invoice("I1", "10.00")], (),
                   header(1, datetime(2026, 11, 29, 18, 0, tzinfo=OSLO)))
    p2, _ = render(work, [], [counter("P1", "-10.00")], [Match("M1", ("I1", "P1"))],
                   header(2, datetime(2026, 11, 28, 18, 0, tzinfo=OSLO), kind="backlog"))
    assert sorted([p1.name, p2.name]) == [p2.name, p1.name]
    for p in (p1, p2):
        (inbound / p.name).write_bytes(p.read_bytes())
    (inbound / "LT_123456_20261130_000003.xml.part").write_bytes(b"half a file")

    receipts = model.serve_folder(inbound, outbound)
    assert [(r.file_id, r.status) for r in receipts] == [
        ("LT_123456_20261129_000001", "accepted"), ("LT_123456_20261128_000002", "accepted")]
    for r in receipts:
        written = outbound / f"{r.file_id}.receipt.xml"
        assert read_receipt(written.read_bytes(), written.name) == r
    assert sorted(p.name for p in inbound.iterdir()) == [
        "LT_123456_20261130_000003.xml.part", "processed"]
    assert sorted(p.name for p in (inbound / "processed").iterdir()) == sorted([p1.name, p2.name])
    assert [p.name for p in outbound.iterdir() if p.name.startswith(".")] == []

    # the same file uploaded again is rejected, and the first receipt is kept
    (inbound / p1.name).write_bytes(p1.read_bytes())
    again = model.serve_folder(inbound, outbound)
    assert codes(again[0]) == [("sequence", None)]
    first = outbound / "LT_123456_20261129_000001.receipt.xml"
    assert read_receipt(first.read_bytes(), first.name).status == "accepted"
    assert (inbound / "processed" / f"{p1.name}.1").is_file()


# ------------------------------------------------------------------ receipts

def test_receipt_round_trip_with_errors():
    receipt = Receipt("LT_1_20261128_000001", "rejected", NOW,
                      (ReceiptError("kid", "I1", "line 3: KID 1 & <2> bad"),
                       ReceiptError("sequence", None, "Sequence 1 is not higher")))
    assert read_receipt(render_receipt(receipt), "r.xml") == receipt


@pytest.mark.parametrize("body, complaint", [
    (b"<TransferReceipt xmlns='urn:reskontro:ledger-transfer:1'><FileId>X</FileId>",
     "not well-formed"),
    (b"<!DOCTYPE r [<!ENTITY x 'accepted'>]><TransferReceipt xmlns='urn:reskontro:ledger-"
     b"transfer:1'><FileId>X</FileId><Status>&x;</Status><ReceivedAt>2026-11-28T18:00:00Z"
     b"</ReceivedAt></TransferReceipt>", "DOCTYPE"),
    (b"<Receipt><FileId>X</FileId></Receipt>", "root element"),
    (b"<TransferReceipt xmlns='urn:reskontro:ledger-transfer:1'><FileId>X</FileId>"
     b"<Status>ok</Status><ReceivedAt>2026-11-28T18:00:00Z</ReceivedAt></TransferReceipt>",
     "Status 'ok'"),
    (b"<TransferReceipt xmlns='urn:reskontro:ledger-transfer:1'><FileId>X</FileId>"
     b"<Status>accepted</Status><ReceivedAt>2026-11-28T18:00:00</ReceivedAt>"
     b"</TransferReceipt>", "UTC offset"),
    (b"<TransferReceipt xmlns='urn:reskontro:ledger-transfer:1'><Status>accepted</Status>"
     b"<FileId>X</FileId><ReceivedAt>2026-11-28T18:00:00Z</ReceivedAt></TransferReceipt>",
     "FileId, Status"),
    (b"<TransferReceipt xmlns='urn:reskontro:ledger-transfer:1'><FileId>X</FileId>"
     b"<Status>rejected</Status><ReceivedAt>2026-11-28T18:00:00Z</ReceivedAt>"
     b"<Error ref='I1'>no code</Error></TransferReceipt>", "without a code"),
])
def test_read_receipt_refuses_malformed(body, complaint):
    with pytest.raises(InputError, match=complaint) as info:
        read_receipt(body, "LT_1_20261128_000001.receipt.xml")
    assert str(info.value).startswith("LT_1_20261128_000001.receipt.xml")


def test_receipt_dates_are_kept_exactly():
    r = read_receipt(b"<TransferReceipt xmlns='urn:reskontro:ledger-transfer:1'><FileId>X"
                     b"</FileId><Status>accepted</Status><ReceivedAt>2026-11-28T17:00:00Z"
                     b"</ReceivedAt></TransferReceipt>", "r.xml")
    assert r.received_at == datetime(2026, 11, 28, 18, 0, tzinfo=OSLO) and r.accepted
    assert r.received_at.date() == date(2026, 11, 28)
