"""The one amount reader (reskontro.domain.amount): what it accepts means the same number to a
Norwegian and to an English reader, and everything else is refused with a reason."""
from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from reskontro.domain.amount import MAX_AMOUNT, AmountError, format_amount, ore_text, parse_amount
from reskontro.domain import money, to_ore

ASCII_DIGITS = set("0123456789")
CENT = Decimal("0.01")


# --- two human readers, written independently of the implementation --------------------------
def _read_convention(s: str, dec: str, groups: str) -> Decimal | None:
    """`s` (no sign, no blanks at the ends) read with decimal mark `dec` and thousands
    separators `groups`; None when it is not well formed in that convention."""
    if s.count(dec) > 1:
        return None
    whole, has_dec, frac = s.partition(dec)
    if not whole or (has_dec and not frac) or not set(frac) <= ASCII_DIGITS:
        return None
    seps = {c for c in whole if c in groups}
    if len(seps) > 1:
        return None
    if seps:
        parts = whole.split(seps.pop())
        if not 1 <= len(parts[0]) <= 3 or any(len(p) != 3 for p in parts[1:]):
            return None
        whole = "".join(parts)
    if not whole or not set(whole) <= ASCII_DIGITS:
        return None
    return Decimal(f"{whole}.{frac or '0'}")


def _reader(dec: str, groups: str, foreign_dec: str, foreign_groups: str):
    def read(text: str) -> Decimal | None:
        """A person reads their own convention first; a string that is not well formed in it
        they read in the other one (a Norwegian reads 1500.50 as 1500,50)."""
        s = text.strip(" \t")
        sign = -1 if s[:1] == "-" else 1
        s = s[1:] if s[:1] in "+-" else s
        got = _read_convention(s, dec, groups)
        if got is None:
            got = _read_convention(s, foreign_dec, foreign_groups)
        return None if got is None else sign * got
    return read


norwegian = _reader(",", ". \u00a0", ".", ",")
english = _reader(".", ",", ",", ". \u00a0")


def grammar(text: str) -> Decimal | None:
    """The README's grammar, by hand (no regex): what parse_amount must accept, and nothing else."""
    s = text.strip(" \t")
    sign = ""
    if s[:1] in ("+", "-"):
        sign, s = s[0], s[1:]
    if s.count(".") + s.count(",") > 1:
        return None
    mark = "." if "." in s else "," if "," in s else None
    whole, frac = s.split(mark) if mark else (s, None)
    if not whole or not set(whole) <= ASCII_DIGITS:
        return None
    if frac is not None and (not 1 <= len(frac) <= 2 or not set(frac) <= ASCII_DIGITS):
        return None
    if len(whole.lstrip("0")) > 9:
        return None
    return Decimal(f"{sign}{whole}.{frac or '0'}").quantize(CENT) + 0


def reads(text: str) -> Decimal | None:
    try:
        return parse_amount(text)
    except AmountError:
        return None


# --- properties over strings from a broad alphabet ---------------------------------------------
ALPHABET = list("0123456789" "0123456789" ".,  _eE+-'") + [
    "\t", "\u00a0", "\u202f", "\u0661", "\u0662", "\u00b2", "\uff15", "\u07c1", "\u09e9", "\u0966",
    "N", "a", "n", "I", "f", "x", "\n"]
# number-shaped: runs of digits joined by marks, so that readings (and disagreements) are common
shaped = st.builds(
    lambda pad1, sign, runs, seps, pad2: pad1 + sign + "".join(r + s for r, s in zip(runs[:-1], seps)) + runs[-1] + pad2,
    st.sampled_from(["", " ", "\t"]),
    st.sampled_from(["", "", "-", "+", "--", "+-"]),
    st.lists(st.text(st.sampled_from("0123456789" * 6 + "\u0661\u00b2\uff15"), min_size=1, max_size=4),
             min_size=1, max_size=4),
    st.lists(st.sampled_from([".", ",", ".", ",", " ", "_", "\u00a0", "'", "e", ".,"]), min_size=3, max_size=3),
    st.sampled_from(["", " ", "  ", "\n"]),
)
broad = st.one_of(
    shaped,
    shaped,
    st.text(st.sampled_from(ALPHABET), max_size=16),
    st.text(max_size=8),                                  # any Unicode at all
    st.sampled_from(["NaN", "nan", "-NaN", "sNaN", "inf", "-inf", "Infinity", "+Infinity", "1e20",
                     "1E5", "1.5e3", "0x10", "1:30", "1_000", "١٢٣", "²", "12.500", "1.500,00",
                     "1 500", "1,500", "2,000", "1500,50", "1500,5", " 7 ", "-0", "+0,00"]),
)


@settings(max_examples=1500)
@given(broad)
@example("1,500")
@example("12.500")
@example("1_000")
@example("١٢٣")
@example("1e20")
@example("")
def test_accepted_exactly_when_the_grammar_says_so(text: str) -> None:
    expected = grammar(text)
    try:
        got = parse_amount(text)
    except AmountError as exc:
        assert expected is None, f"{text!r} refused ({exc}) but is {expected} by the grammar"
        assert str(exc), "a refusal says what is wrong"
        return
    assert got == expected and got.as_tuple().exponent == -2, (text, got, expected)


@settings(max_examples=1500)
@given(broad)
@example("1,50")
@example("1500.50")
@example("+1,05")
def test_what_is_accepted_means_the_same_to_a_norwegian_and_to_an_english_reader(text: str) -> None:
    got = reads(text)
    if got is not None:
        assert norwegian(text) == english(text) == got, (text, norwegian(text), english(text), got)


@settings(max_examples=1000)
@given(broad)
def test_what_the_two_readers_read_differently_is_refused(text: str) -> None:
    n, e = norwegian(text), english(text)
    if n is not None and e is not None and n != e:
        assert reads(text) is None, (text, n, e)


# --- structured: every valid amount, however written, round-trips --------------------------------
values = st.integers(min_value=-int(MAX_AMOUNT * 100), max_value=int(MAX_AMOUNT * 100)).map(
    lambda ore: Decimal(ore).scaleb(-2))


@st.composite
def written(draw) -> tuple[Decimal, str]:
    """A valid amount and one of the ways the grammar lets it be written."""
    value = draw(values)
    whole, frac = f"{abs(value):.2f}".split(".")
    places = draw(st.sampled_from([p for p in (0, 1, 2) if frac[p:] == "0" * (2 - p)]))
    mark = draw(st.sampled_from(".,"))
    body = draw(st.sampled_from(["", "0", "000"])) + whole + (mark + frac[:places] if places else "")
    if value < 0:
        sign = "-"
    else:
        sign = draw(st.sampled_from(["", "+"] + (["-"] if value == 0 else [])))
    pad = st.text(st.sampled_from(" \t"), max_size=2)
    return value, draw(pad) + sign + body + draw(pad)


@given(written())
def test_every_written_form_of_a_valid_amount_reads_back(case: tuple[Decimal, str]) -> None:
    value, text = case
    got = parse_amount(text)
    assert got == value and str(got) == f"{value:.2f}" and str(got) != "-0.00"


@given(values)
def test_output_text_reads_back_as_the_same_amount(value: Decimal) -> None:
    text = format_amount(value)
    assert parse_amount(text) == value and text == f"{value:.2f}"
    assert ore_text(to_ore(value)) == text


@st.composite
def spoiled(draw) -> str:
    """A valid amount written in a way the grammar refuses."""
    value = draw(values.filter(lambda v: abs(v) >= 1000))
    whole, frac = f"{abs(value):.2f}".split(".")
    sign = "-" if value < 0 else ""
    how = draw(st.sampled_from(["group", "three", "exp", "digit", "two-marks", "bare-mark"]))
    if how == "group":
        sep = draw(st.sampled_from([",", ".", " ", "_", "\u00a0", "'"]))
        grouped = f"{int(whole):,}".replace(",", sep)
        return sign + grouped + draw(st.sampled_from(["", "." + frac, "," + frac]))
    if how == "three":
        return sign + whole + draw(st.sampled_from(".,")) + frac + draw(st.sampled_from("0123456789"))
    if how == "exp":
        return sign + whole + draw(st.sampled_from(["e0", "E2", "e+1", "e-1"]))
    if how == "digit":
        i = draw(st.integers(0, len(whole) - 1))
        local = draw(st.sampled_from(["\u0660", "\u06f0", "\u0966", "\uff10"]))   # that script's zero
        return sign + whole[:i] + chr(ord(local) + int(whole[i])) + whole[i + 1:] + "." + frac
    if how == "two-marks":
        return sign + whole + ".," [draw(st.integers(0, 1))] + frac + draw(st.sampled_from([".5", ",5"]))
    return sign + whole + draw(st.sampled_from(".,"))


@given(spoiled())
def test_grouping_exponents_foreign_digits_and_extra_decimals_are_refused(text: str) -> None:
    with pytest.raises(AmountError):
        parse_amount(text)


# --- the reasons, and the bound ----------------------------------------------------------------
@pytest.mark.parametrize("text, reason", [
    ("2,000", "ambiguous"), ("1,500", "ambiguous"), ("12.500", "ambiguous"), ("12.345", "at most two decimals"),
    ("1.2345", "4 decimals"), ("1 500", "thousands separator"), ("1_000", "thousands separator"),
    ("1.500,00", "more than one"), ("\u0661\u0662\u0663", "digits 0-9"), ("\u00b2", "digits 0-9"),
    ("1e20", "exponent"), ("NaN", "not a number"), ("-Infinity", "not a number"), ("", "empty"),
    ("   ", "empty"), ("1.", "without decimals"), (".5", "no digit before"), ("--1", "one sign"),
    ("1-", "one sign"), ("-", "no digits"), ("1000000000", "larger than"), ("1 500 kr", "'k'"), ("1\u202f500", "thousands separator"),
    ("12kr", "'k'"), ("1" * 5000, "larger than"),
])
def test_each_refusal_says_what_is_wrong(text: str, reason: str) -> None:
    with pytest.raises(AmountError) as info:
        parse_amount(text)
    msg = str(info.value)
    assert reason in msg
    assert len(msg) < 400            # a 5000-digit input is quoted cut short


def test_the_bound_fits_the_store_with_room_for_sums() -> None:
    assert parse_amount("999999999.99") == MAX_AMOUNT and parse_amount("-999999999,99") == -MAX_AMOUNT
    assert parse_amount("0000000999999999.99") == MAX_AMOUNT      # leading zeros are no size
    # the store keeps signed 64-bit øre: 92 million amounts at the bound still sum without overflow
    assert to_ore(MAX_AMOUNT) * 92_000_000 < 2 ** 63 - 1


def test_money_reads_text_with_the_same_reader_and_never_rounds() -> None:
    assert money(" 1500,5 ") == Decimal("1500.50")
    for bad in ("1,500", "1e3", "1 000"):
        with pytest.raises(AmountError):
            money(bad)
    assert money(Decimal("12.3")) == Decimal("12.30") and str(money(Decimal("-0.00"))) == "0.00"
    with pytest.raises(ValueError):
        money(Decimal("1.005"))
    with pytest.raises(TypeError):
        money(10.5)                  # a float has passed through binary floating point
    with pytest.raises(ValueError):
        format_amount(Decimal("0.001"))


# --- each check of the reader has a test that fails without it (make mutation) ----------------
@pytest.mark.parametrize("text, reason", [
    ("1X500", "the character 'X'"),      # a letter is named, not taken for a thousands separator
    ("1\u00bd", "digits 0-9"),            # '½' is numeric without being a digit: still a digit to us
    ("\u4e94", "digits 0-9"),             # '五' likewise
    ("sNaN", "not a number"), ("inf", "not a number"), (".inf", "not a number"),
    ("1+2", "one sign"), ("+1+", "one sign"),
])
def test_odd_characters_are_named_with_the_right_reason(text: str, reason: str) -> None:
    with pytest.raises(AmountError) as info:
        parse_amount(text)
    assert reason in str(info.value)


@pytest.mark.parametrize("text", ["X12", "12X", "X12X", "\n12", "12\n", "\r12", "\u00a012"])
def test_only_spaces_and_tabs_are_dropped_at_the_ends(text: str) -> None:
    with pytest.raises(AmountError):
        parse_amount(text)


def test_spaces_and_tabs_at_the_ends_are_dropped() -> None:
    assert parse_amount(" \t12,50\t ") == Decimal("12.50")


def test_a_refused_input_is_quoted_whole_up_to_40_characters_then_cut() -> None:
    with pytest.raises(AmountError) as info:
        parse_amount("a" * 40)
    assert repr("a" * 40) in str(info.value) and "…" not in str(info.value)
    with pytest.raises(AmountError) as info:
        parse_amount("a" * 41)
    assert repr("a" * 40 + "…") in str(info.value) and "a" * 41 not in str(info.value)


@pytest.mark.parametrize("value", [12, 12.5, None, b"12", Decimal("12")])
def test_only_text_is_read_as_an_amount(value) -> None:
    with pytest.raises(AmountError, match="is not text"):
        parse_amount(value)


@pytest.mark.parametrize("text", ["-0", "-0,00", "-0.0", "-000"])
def test_minus_zero_reads_as_zero(text: str) -> None:
    got = parse_amount(text)
    assert got == 0 and str(got) == "0.00" and not got.is_signed()


def test_output_never_writes_minus_zero() -> None:
    assert format_amount(Decimal("-0")) == "0.00" and format_amount(Decimal("-0.00")) == "0.00"
    assert ore_text(0) == "0.00" and ore_text(-5) == "-0.05"


@pytest.mark.parametrize("ore", [True, False, 1.5, "100", Decimal("100"), None])
def test_ore_text_takes_only_an_int(ore) -> None:
    with pytest.raises(TypeError):
        ore_text(ore)
