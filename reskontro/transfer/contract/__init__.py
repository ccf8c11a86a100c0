"""The pre-send checker: does a Ledger Transfer 1.0 file keep every rule of the receiver's contract?

The rules are those of the receiver's spec (ledger-transfer-1.md); each module names the ones
it enforces and the error codes it reports:

- ``structure.py``: UTF-8, no DTD or entities, well-formed, the XSD (order, cardinalities,
  lengths, patterns, currency and country codes); the streaming reading of the file;
- ``ids.py``: ids unique in the file; CustomerRef and EntryRef name a record of this file or
  of an earlier one (``known_customer``, ``known_entry_type``);
- ``values.py``: FileId from SenderId, CutOff and Sequence; organisation numbers (MOD11);
  PostCode for Norway; DueDate only and always for invoices; KID check digits (MOD10/MOD11);
- ``matches.py``: a group's shape (an invoice, not many-to-many), one group per entry;
- ``sums.py``: the Trailer's counts and control sums;
- ``records.py``: the errors (with the codes receipts carry) and the records read;
- ``scan.py``: the one pass over a file that runs them all (an Entry's rules inline, for
  speed); ``checker.py``: ``TransferChecker``, the entry point.

Rules across files (Sequence rising, an Entry sent again unchanged, a Match growing, an entry
in one group ever) need what the receiver already has: the receiver model
(reskontro.testing.receiver_model) checks them on top of this package.

Import from here: the names below are the package's interface.
"""
from __future__ import annotations

from reskontro.transfer.contract.checker import (TransferChecker, assert_sendable,
                                                 check_transfer_file)
from reskontro.transfer.contract.records import (MAX_ERRORS, CheckResult, ContractError,
                                                 ContractViolation, CustomerRecord,
                                                 EntryRecord, HeaderRecord, MatchRecord)
from reskontro.transfer.contract.structure import NS
from reskontro.transfer.contract.sums import ZERO
from reskontro.transfer.contract.values import (expected_file_id, kid_is_valid, luhn_is_valid,
                                                mod11_kid_check, org_no_is_valid)

__all__ = [
    "MAX_ERRORS", "NS", "ZERO",
    "CheckResult", "ContractError", "ContractViolation", "CustomerRecord", "EntryRecord",
    "HeaderRecord", "MatchRecord",
    "TransferChecker", "assert_sendable", "check_transfer_file",
    "expected_file_id", "kid_is_valid", "luhn_is_valid", "mod11_kid_check", "org_no_is_valid",
]
