"""The one reader of amounts the product takes in (ledger import, rule files, rule examples).

An amount is read one way only, so that it means the same number to a Norwegian reader (decimal
comma, '.' or blank between thousands) and to an English one (decimal point, ',' between
thousands). The grammar, after ASCII blanks (space, tab) at the ends are dropped:

    amount   = [ "+" | "-" ] digits [ mark decimals ]
    digits   = one or more of 0-9 (ASCII only)
    mark     = "." | ","           (one decimal mark, nothing else between the digits)
    decimals = one or two of 0-9

and |amount| <= MAX_AMOUNT. Everything else is refused with a reason: grouping of any kind
(``1,500``, ``1.500``, ``1 500``, ``1_000``, ``1.500,00``), three or more decimals (``12.500``
is 12500 to a Norwegian), exponents, NaN, infinity, non-ASCII digits (``١٢٣``, ``²``), a mark
without decimals (``1.``) or without digits before it (``.5``).

The bound: the store keeps signed 64-bit øre (max 9,223,372,036,854,775,807). One amount is at
most 999,999,999.99 kroner (< 10^11 øre), so a sum of up to 92 million amounts, each at the
bound, still fits: no ledger total, control sum or SQL SUM over a big ledger can overflow.
"""
from __future__ import annotations

import re
import unicodedata
from decimal import Decimal

CENT = Decimal("0.01")
MAX_AMOUNT = Decimal("999999999.99")
_MAX_WHOLE_DIGITS = 9          # digits before the mark, leading zeros aside: 999999999.99 at most

# [0-9], not \d: in a str pattern \d matches every Unicode digit (Arabic-Indic, superscripts)
_AMOUNT = re.compile(r"([+-]?)([0-9]+)(?:([.,])([0-9]{1,2}))?")
_BLANKS = " \t"
_GROUPING = " _'\u00a0\u202f\u2009"   # thousands separators people write (besides . and ,)
_SHOWN = 40       # characters of the input quoted in a message (the input may be huge)


class AmountError(ValueError):
    """An amount that is refused; the message says what is wrong with it."""


def _show(text: str) -> str:
    return repr(text if len(text) <= _SHOWN else text[:_SHOWN] + "…")


def _why(text: str) -> str:
    """Why `text` (blanks at the ends already dropped) is not an amount: the first problem a
    person should fix, most specific first."""
    if not text:
        return "is empty"
    odd = [ch for ch in text if ch not in "0123456789+-.,"]
    if odd:
        for ch in odd:
            if ch.isdigit() or ch.isnumeric() or unicodedata.digit(ch, None) is not None:
                return (f"has the digit {ch!r} (U+{ord(ch):04X} {unicodedata.name(ch, '?')}); "
                        "write amounts with the digits 0-9")
        if text.lower().lstrip("+-").lstrip(".") in ("nan", "snan", "inf", "infinity"):  # .inf: YAML
            return "is not a number"
        if re.fullmatch(r"[+-]?[0-9.,]+[eE][+-]?[0-9]+", text):
            return "has an exponent; write the amount in full, e.g. 1234.50"
        other = [ch for ch in odd if ch not in _GROUPING]
        if other:
            return f"has the character {other[0]!r}, which has no place in an amount (e.g. 1234.50)"
        return "has a thousands separator; write the amount without grouping, e.g. 1500.00 or 1500,00"
    body = text[1:] if text[0] in "+-" else text
    if not body:
        return "has a sign but no digits"
    if "+" in body or "-" in body:
        return "is not an amount: one sign at most, before the digits (e.g. -1234.50)"
    marks = [c for c in body if c in ".,"]
    if len(marks) > 1:
        return ("has more than one '.' or ','; write one decimal mark and no thousands "
                "separators, e.g. 1500.00")
    head, mark, tail = body.partition(marks[0]) if marks else (body, "", "")
    if not head:
        return "has no digit before the decimal mark; write a 0 there"
    if mark and not tail:
        return "has a decimal mark without decimals after it"
    if len(tail) == 3:
        return (f"is ambiguous: '{mark}' before three digits is a decimal mark to some readers "
                f"and a thousands separator to others (1{mark}500: 1.5 or 1500); write the "
                "amount with at most two decimals and no thousands separators, e.g. 1500.00")
    if len(tail) > 3:
        return f"has {len(tail)} decimals; an amount has at most two decimals"
    return "is not an amount (e.g. 1234.50 or -1234,50)"


def parse_amount(text: str) -> Decimal:
    """The amount `text` means, as a two-place Decimal; AmountError says what is wrong.

    Blanks (space, tab) at the ends are dropped; "-0" reads as 0.00.
    """
    if not isinstance(text, str):
        raise AmountError(f"{text!r} is not text; an amount is written as text, e.g. \"1234.50\"")
    s = text.strip(_BLANKS)
    m = _AMOUNT.fullmatch(s)
    if m is None:
        raise AmountError(f"{_show(text)} {_why(s)}")
    sign, digits, _mark, decimals = m.groups()
    # the length first: a long digit string would overflow Decimal's 28-digit quantize
    if len(digits.lstrip("0")) > _MAX_WHOLE_DIGITS:
        raise AmountError(f"{_show(text)} is larger than the largest amount accepted "
                          f"({MAX_AMOUNT:f}, either sign)")
    # built from the matched ASCII parts only: Decimal() itself would take '1_000', '١٢٣', 'NaN'
    value = Decimal(f"{sign}{digits}.{decimals or '0'}").quantize(CENT) + 0   # + 0: no -0.00
    assert abs(value) <= MAX_AMOUNT
    return value


def format_amount(value: Decimal | int) -> str:
    """An amount as output writes it, in kroner with two decimals ("1234.50", "-500.00");
    never scientific notation. Refuses more than two decimals instead of rounding."""
    d = Decimal(value)
    q = d.quantize(CENT)
    if q != d:
        raise ValueError(f"{value!r} has more than two decimals")
    return format(q + 0, "f")


def ore_text(ore: int) -> str:
    """Øre (the store's and the rules' integer) as kroner text: 123450 -> "1234.50"."""
    if isinstance(ore, bool) or not isinstance(ore, int):
        raise TypeError(f"øre must be an int, not {type(ore).__name__}")
    return format_amount(Decimal(ore).scaleb(-2))
