"""KID, the Norwegian payment reference: 2-25 characters, the last a MOD10 (Luhn) or MOD11 check
digit, a MOD11 check value of 10 written '-' (reskontro/kid.py)."""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from stdnum import luhn

from reskontro.domain.kid import is_valid, luhn_is_valid, mod11_check_digit, state


def mod11_by_definition(body: str) -> str:
    """Weights 2,3,4,5,6,7,2,... from the right; remainder r -> 11 - r, 11 -> 0, 10 -> '-'."""
    r = sum(int(d) * w for d, w in zip(reversed(body), [2, 3, 4, 5, 6, 7] * 5)) % 11
    return {0: "0", 1: "-"}.get(r, str(11 - r))


@pytest.mark.parametrize("body, check", [
    ("12345678", "5"),          # 8*2+7*3+6*4+5*5+4*6+3*7+2*2+1*3 = 138; 138 % 11 = 6 -> 5
    ("1000005", "-"),           # remainder 1 -> 10 -> '-'
    ("0", "0"), ("000000", "0"),  # remainder 0 -> 11 -> 0
    ("1", "9"),                 # 1*2 = 2 -> 9
    ("1000000", "9"),           # weight 2 again at the 7th digit from the right
    ("100000", "4"),            # weight 7 at the 6th
])
def test_mod11_check_digit_known_values(body, check):
    assert mod11_check_digit(body) == check == mod11_by_definition(body)


@given(st.text(alphabet="0123456789", min_size=1, max_size=24))
def test_mod11_check_digit_is_the_definition(body):
    assert mod11_check_digit(body) == mod11_by_definition(body)


@given(st.text(alphabet="0123456789", min_size=1, max_size=25))
def test_luhn_agrees_with_stdnum(digits):
    assert luhn_is_valid(digits) == (luhn.checksum(digits) == 0)


@pytest.mark.parametrize("digits, ok", [
    ("0", True), ("18", True), ("26", True), ("59", True), ("12345678903", True),
    ("1", False), ("19", False), ("12345678904", False), ("91", True), ("90", False),
])
def test_luhn_known_values(digits, ok):
    assert luhn_is_valid(digits) is ok


def test_valid_kids_by_mod10_and_by_mod11():
    assert is_valid("12345678903")                 # MOD10 only
    assert not luhn_is_valid("123456785") and is_valid("123456785")     # MOD11 only
    assert is_valid("1000005-")                    # MOD11 check value 10
    assert not is_valid("123456789")               # MOD10 wants 2, MOD11 wants 5


def test_length_is_2_to_25_characters():
    assert is_valid("00") and not is_valid("0")
    assert is_valid("0" * 25) and not is_valid("0" * 26)
    body = "1" * 24
    assert is_valid(body + luhn.calc_check_digit(body))
    body = "1" * 25
    assert not is_valid(body + luhn.calc_check_digit(body))   # valid Luhn, but 26 long


def test_a_dash_terminated_kid_is_only_valid_with_mod11_check_value_10():
    assert mod11_check_digit("1000010") == "6"
    # the Luhn sum of "1000010-" (counting '-' as a digit) is 0 mod 10: only the MOD11 test
    # may judge a '-' at the end
    assert luhn_is_valid("1000010-")
    assert not is_valid("1000010-")
    assert not is_valid("11-") and not is_valid("1-")


@pytest.mark.parametrize("kid", ["12a4", "1-5", "-18", "1 8", "١٨", "１８", "18\n", ""])
def test_anything_but_ascii_digits_and_a_final_dash_is_refused(kid):
    assert not is_valid(kid)


def test_state_absent_valid_invalid():
    assert state(None) == "absent" and state("") == "absent"
    assert state("12345678903") == "valid" and state("1000005-") == "valid"
    assert state("12345678904") == "invalid" and state("1") == "invalid"
