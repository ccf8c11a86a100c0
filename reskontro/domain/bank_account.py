"""A creditor's bank account, as the fleet registers it and as bank files name it.

A Norwegian account is 11 digits with a MOD11 check digit (python-stdnum's `no.kontonr`),
written `1234.56.78903`, `1234 56 78903` or as its IBAN `NO93 8601 1117 947`; a foreign
account is its IBAN (`stdnum.iban`). Both forms of a Norwegian account are one key, the
11 digits, so that a CREMUL's `FII+BF+86011117947` and a camt.054's `<IBAN>NO9386011117947`
find the same creditor.
"""
from __future__ import annotations

import re

from stdnum import iban
from stdnum.exceptions import ValidationError
from stdnum.no import kontonr

from . import InputError

_SEPARATORS = re.compile(r"[\s.\-]")


def key(text: str) -> str:
    """The account as one comparable key, without validating it (bank files name accounts
    in any of the forms): separators dropped, upper case, a Norwegian IBAN as its 11 digits."""
    compact = _SEPARATORS.sub("", text).upper()
    if len(compact) == 15 and compact.startswith("NO") and compact[2:].isdigit():
        return compact[4:]
    return compact


def validate(text: str) -> str:
    """The account's key, or InputError saying what is wrong: 11 digits with a valid MOD11
    check digit, or a valid IBAN."""
    given = _SEPARATORS.sub("", text).upper()
    if given[:2].isalpha():             # an IBAN: its own check digits first, then the account's
        try:
            iban.validate(given)
        except ValidationError as exc:
            raise InputError(f"bank account {text!r}: not a valid IBAN: {exc}") from None
    compact = key(given)
    if compact.isdigit():
        try:
            return kontonr.validate(compact)
        except ValidationError as exc:
            raise InputError(f"bank account {text!r}: not a Norwegian account number "
                             f"(11 digits, MOD11 check digit): {exc}") from None
    if not given[:2].isalpha():
        raise InputError(f"bank account {text!r}: neither a Norwegian account number (11 digits) nor an IBAN")
    return compact
