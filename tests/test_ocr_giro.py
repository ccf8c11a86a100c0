"""OCR giro reader on the real files of ../shared/corpus/ocr (facts read off the files)."""
from __future__ import annotations

from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reskontro.adapters.ocr_giro import read_ocr_giro
from reskontro.domain import InputError

FILES = ["Ondkloss__ocr1.txt", "Ondkloss__ocr3.txt", "otovo__avtalegiro_agreements.txt",
         "otovo__ocr_giro_transactions.txt"]


@pytest.fixture
def ocr_dir(corpus: Path) -> Path:
    return corpus / "ocr"


def lines(ocr_dir: Path, name: str) -> list[str]:
    return (ocr_dir / name).read_text("iso-8859-1").splitlines()


def read_lines(ls: list[str], name: str = "t.txt"):
    return read_ocr_giro("\n".join(ls).encode("iso-8859-1"), name)


def test_corpus_has_every_listed_file(ocr_dir: Path) -> None:
    assert {p.name for p in ocr_dir.iterdir()} == set(FILES)


@pytest.mark.parametrize("name", FILES)
def test_every_file_reconciles(ocr_dir: Path, name: str) -> None:
    pf = read_ocr_giro((ocr_dir / name).read_bytes(), name)
    assert pf.format == "ocr_giro"
    refs = [p.archive_ref for p in pf.payments]
    assert len(refs) == len(set(refs))
    # only money received is a payment; the rest (reversals, negative items) is set aside
    assert all(p.amount > 0 for p in pf.payments) and all(s.amount < 0 for s in pf.skipped)
    # the 89 total is either the signed or the absolute sum of all transactions (checked by
    # the reader), payments and set-aside items together
    every = [p.amount for p in pf.payments] + [s.amount for s in pf.skipped]
    assert pf.control_total in (sum(every, Decimal("0.00")),
                                sum((abs(a) for a in every), Decimal("0.00")))


def test_ocr1_negative_amounts_and_signed_total(ocr_dir: Path) -> None:
    pf = read_ocr_giro((ocr_dir / "Ondkloss__ocr1.txt").read_bytes(), "ocr1.txt")  # no final \n
    ps = pf.payments
    assert len(ps) == 20 and pf.reference == "0170031"
    # the 3 items with the sign '-' are not money received: set aside with their reason
    assert [(s.amount, s.kid, s.bank_code) for s in pf.skipped] == [
        (Decimal("-250.00"), "44000366370078", "13"), (Decimal("-400.00"), "44000366980090", "13"),
        (Decimal("-1500.00"), "44000007860156", "13")]
    assert {s.reason for s in pf.skipped} == {
        "negative amount (sign '-', OCR transaction type 13): not money received"}
    assert pf.skipped[0].reference == "600101140/20040324/0000001/15"
    every = [p.amount for p in ps] + [s.amount for s in pf.skipped]
    assert pf.control_total == Decimal("15630.00") == sum(every)           # the signed sum
    assert sum(abs(a) for a in every) == Decimal("19930.00")
    assert sum(p.amount for p in ps) == Decimal("17780.00")
    first = ps[0]
    assert first.amount == Decimal("440.00") and first.currency == "NOK"
    assert first.kid == "33000083672049"                 # right-aligned, blanks dropped
    assert first.payment_date == date(2004, 3, 23)      # bank date, record 31
    assert first.booking_date == date(2004, 3, 24)      # Nets settlement date, record 30
    assert first.payer_account == "88881011128" and first.bank_code == "10"
    assert first.archive_ref == "094561154/20040324/0000001/1"
    assert {p.bank_code for p in ps} == {"10", "13"}
    assert pf.warnings == []


def test_otovo_transactions(ocr_dir: Path) -> None:
    pf = read_ocr_giro((ocr_dir / "otovo__ocr_giro_transactions.txt").read_bytes(), "o.txt")
    ps = pf.payments
    assert len(ps) == 20 and pf.control_total == Decimal("51449.00")
    assert ps[0].bank_code == "21" and ps[0].text == "Foo bar baz"    # amount item 3
    assert ps[0].kid == "0000531" and ps[0].amount == Decimal("1020.00")
    assert ps[13].amount == Decimal("20500.00") and ps[13].payment_date is None  # 000000
    assert ps[13].booking_date == date(1992, 1, 20)
    assert {p.bank_code for p in ps} == {"10", "11", "12", "13", "21"}


def test_ocr3_free_text_without_kid(ocr_dir: Path) -> None:
    (p,) = read_ocr_giro((ocr_dir / "Ondkloss__ocr3.txt").read_bytes(), "ocr3.txt").payments
    assert p.kid is None and p.payer_account is None      # debit account 00000000000
    assert p.text == "ABCDEFGHIJKLMNOPQRSTUVWXZYabcdefghijklmn"
    assert p.amount == Decimal("440.00") and p.bank_code == "21"


def test_avtalegiro_agreements_are_skipped_with_a_warning(ocr_dir: Path) -> None:
    pf = read_ocr_giro((ocr_dir / "otovo__avtalegiro_agreements.txt").read_bytes(), "ag.txt")
    assert pf.payments == [] and pf.control_total == Decimal("0.00")
    assert pf.warnings == ["ag.txt: lines 2-19: AvtaleGiro assignment 0000002 (type 24) "
                           "skipped: no payments"]


def test_reversals_18_and_20_are_not_payments(ocr_dir: Path) -> None:
    ls = lines(ocr_dir, "otovo__ocr_giro_transactions.txt")
    assert ls[5].startswith("NY091030") and ls[6].startswith("NY091031")
    ls[5], ls[6] = "NY0918" + ls[5][6:], "NY0918" + ls[6][6:]
    pf = read_lines(ls)
    # a reversal is not a payment: set aside with its reason, never listed
    (s,) = pf.skipped
    assert (s.bank_code, s.amount, s.kid) == ("18", Decimal("-1020.00"), "0036633")
    assert s.reason == "reversal (OCR transaction type 18, reversal with KID)"
    assert len(pf.payments) == 19 and "18" not in {p.bank_code for p in pf.payments}
    # Nets adds reversals to the 88/89 totals: the unchanged totals now equal the absolute sum
    assert pf.control_total == Decimal("51449.00")
    assert sum(p.amount for p in pf.payments) + abs(s.amount) == Decimal("51449.00")
    # type 20 (reversal with free text) likewise
    ls[5], ls[6] = "NY0920" + ls[5][6:], "NY0920" + ls[6][6:]
    (s,) = read_lines(ls).skipped
    assert s.reason == "reversal (OCR transaction type 20, reversal with free text)"


def test_mod11_kid_with_dash(ocr_dir: Path) -> None:
    ls = lines(ocr_dir, "Ondkloss__ocr1.txt")
    ls[2] = ls[2][:49] + "1000005-".rjust(25) + ls[2][74:]
    assert len(ls[2]) == 80
    assert read_lines(ls).payments[0].kid == "1000005-"


def test_amount_changed_breaks_the_88_total(ocr_dir: Path) -> None:
    ls = lines(ocr_dir, "Ondkloss__ocr1.txt")
    ls[2] = ls[2][:32] + "00000000000044100" + ls[2][49:]      # 440.00 -> 441.00
    with pytest.raises(InputError, match=r"t\.txt: line 49: assignment total 15630\.00 "
                                         r"matches neither the signed sum 15631\.00 nor the "
                                         r"absolute sum 19931\.00"):
        read_lines(ls)


def test_wrong_counts_are_refused(ocr_dir: Path) -> None:
    ls = lines(ocr_dir, "Ondkloss__ocr1.txt")
    ls[-2] = ls[-2][:8] + "00000024" + ls[-2][16:]
    with pytest.raises(InputError, match="line 49: assignment end says 24 transactions, "
                                         "found 23"):
        read_lines(ls)
    ls = lines(ocr_dir, "Ondkloss__ocr1.txt")
    ls[-1] = ls[-1][:16] + "00000051" + ls[-1][24:]
    with pytest.raises(InputError, match="line 50: transmission end says 51 records, found 50"):
        read_lines(ls)


def test_truncated_files_are_refused(ocr_dir: Path, tmp_path: Path) -> None:
    data = (ocr_dir / "otovo__ocr_giro_transactions.txt").read_bytes()
    ls = data.decode("iso-8859-1").splitlines()
    with pytest.raises(InputError, match=r"no transmission end record \(89\) after line 44: "
                                         "file truncated"):
        read_lines(ls[:-1])
    cut = tmp_path / "cut.txt"
    cut.write_bytes(data[:1000])                         # in the middle of line 13
    with pytest.raises(InputError, match=r"cut\.txt: line 13: record is 28 characters"):
        read_ocr_giro(cut.read_bytes(), cut.name)
    with pytest.raises(InputError, match=r"line 1: expected transmission start"):
        read_lines(ls[1:])


def test_bad_records_name_the_line(ocr_dir: Path) -> None:
    ls = lines(ocr_dir, "Ondkloss__ocr1.txt")
    assert ls[10].startswith("NY091030")
    ls[10] = ls[10][:15] + "32" + ls[10][17:]           # Nets date 32.03.04
    with pytest.raises(InputError, match=r"line 11: invalid record 30: "):
        read_lines(ls)
    ls = lines(ocr_dir, "Ondkloss__ocr1.txt")
    ls[4] = "XX" + ls[4][2:]
    with pytest.raises(InputError, match=r"line 5: record does not start with 'NY'"):
        read_lines(ls)
    with pytest.raises(InputError, match="empty file"):
        read_ocr_giro(b"\n\n", "e.txt")


@settings(max_examples=300, deadline=None, suppress_health_check=[
    HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(name=st.sampled_from(FILES), data=st.data())
def test_mutated_files_only_ever_raise_input_error(ocr_dir: Path, name: str,
                                                   data: st.DataObject) -> None:
    raw = bytearray((ocr_dir / name).read_bytes())
    op = data.draw(st.sampled_from(["truncate", "flip", "insert", "delete"]))
    pos = data.draw(st.integers(0, len(raw) - 1))
    if op == "truncate":
        raw = raw[:pos]
    elif op == "flip":
        raw[pos] = data.draw(st.sampled_from(b"0123456789- \n\xff"))
    elif op == "insert":
        raw[pos:pos] = data.draw(st.sampled_from([b"\n", b"0", b"-", b"NY000089" + b"0" * 72]))
    else:
        del raw[pos:pos + data.draw(st.integers(1, 90))]
    try:
        pf = read_ocr_giro(bytes(raw), name)
    except InputError as e:
        assert str(e).startswith(f"{name}: ")
    else:
        assert all(p.amount.as_tuple().exponent == -2 for p in pf.payments)
