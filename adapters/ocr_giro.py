"""Nets OCR giro (80-character records) -> PaymentFile, using netsgiro's record parser.

netsgiro parses each record's fields; the structure and the control totals are checked
here, line by line, so every error names the line. netsgiro's object layer is not used:
it asserts instead of raising, and its Transaction drops the sign (position 32).

Per transaction: amount in NOK, negative when the sign is ``-`` or the type is a
reversal (18, 20); booking_date = Nets settlement date (record 30), payment_date = the
payer's bank date (record 31, None when 000000); bank_code = the transaction type
("10".."21"); archive_ref = ``<archive ref>/<settlement date>/<assignment no>/<txn no>``
(the 9-digit archive reference alone repeats between transactions).

Only customers' payments are payments: a reversal (type 18 "reversal with KID", 20
"reversal with free text") and an item with the sign ``-`` (position 32) take money back
rather than bring it in. They count in the 88/89 checks like every transaction, but go to
``PaymentFile.skipped`` with their reason, never to the payments.

AvtaleGiro assignments (service 21: agreement notices, payment requests) are skipped
with a warning: they carry no incoming money.
"""
from __future__ import annotations

import re

from netsgiro import RecordType, ServiceCode
from netsgiro.records import (
    AssignmentEnd,
    AssignmentStart,
    AvtaleGiroAgreement,
    Record,
    TransactionAmountItem1,
    TransactionAmountItem2,
    TransactionAmountItem3,
    TransactionSpecification,
    TransmissionEnd,
    TransmissionStart,
)

from reskontro.domain import BankPayment, InputError, PaymentFile, SkippedItem, from_ore

FORMAT = "ocr_giro"
_RECORD_CLASSES: dict[str, type[Record]] = {
    f"{cls.RECORD_TYPE:02d}": cls for cls in (
        TransmissionStart, TransmissionEnd, AssignmentStart, AssignmentEnd,
        TransactionAmountItem1, TransactionAmountItem2, TransactionAmountItem3,
        TransactionSpecification, AvtaleGiroAgreement)
}
_REVERSALS = {18: "reversal with KID", 20: "reversal with free text"}


def _parse_line(name: str, line_no: int, line: str) -> Record:
    if len(line) != 80:
        raise InputError(f"{name}: line {line_no}: record is {len(line)} characters, "
                         "expected 80")
    if not line.startswith("NY"):
        raise InputError(f"{name}: line {line_no}: record does not start with 'NY': "
                         f"{line[:8]!r}")
    cls = _RECORD_CLASSES.get(line[6:8])
    if cls is None:
        raise InputError(f"{name}: line {line_no}: unknown record type {line[6:8]!r}")
    # netsgiro accepts only digits and blanks as KID, but a MOD11 KID whose check digit
    # is 10 ends in '-' (Nets OCR spec §5): parse a copy with '0', then put the KID back
    kid_with_dash = cls is TransactionAmountItem1 and "-" in line[49:74]
    try:
        if kid_with_dash:
            record = cls.from_string(line[:49] + line[49:74].replace("-", "0") + line[74:])
            kid = line[49:74].strip()
            if not re.fullmatch(r"\d+-", kid):
                raise ValueError(f"invalid KID {kid!r}")
            record.kid = kid
            return record
        return cls.from_string(line)
    except (ValueError, TypeError, KeyError) as e:   # netsgiro/attrs validation
        raise InputError(f"{name}: line {line_no}: invalid record {line[6:8]}: {e}") from None


def _check_total(name: str, line_no: int, what: str, stated: int, signed: int,
                 absolute: int) -> int:
    """The spec says reversals are *added* (absolute sum); ocr1.txt from the Norwegian
    spec has the signed sum. Accept either, return the signed total in øre."""
    if stated == signed:
        return signed
    if stated == absolute:
        return absolute
    raise InputError(f"{name}: line {line_no}: {what} total {from_ore(stated)} matches "
                     f"neither the signed sum {from_ore(signed)} nor the absolute sum "
                     f"{from_ore(absolute)} of the transactions")


def _decode(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("iso-8859-1")


def read_ocr_giro(data: bytes, name: str = "<bytes>") -> PaymentFile:
    """Read an OCR giro transmission. Raises InputError naming the file and line."""
    lines = _decode(data).split("\n")
    while lines and not lines[-1].strip():      # final newline or none: both occur
        lines.pop()
    if not lines:
        raise InputError(f"{name}: empty file")
    records: list[tuple[int, Record]] = []
    for line_no, line in enumerate(lines, 1):
        records.append((line_no, _parse_line(name, line_no, line.rstrip("\r"))))

    first_no, first = records[0]
    if not isinstance(first, TransmissionStart):
        raise InputError(f"{name}: line {first_no}: expected transmission start (record 10)")
    last_no, last = records[-1]
    if not isinstance(last, TransmissionEnd):
        raise InputError(f"{name}: no transmission end record (89) after line {last_no}: "
                         "file truncated?")
    warnings: list[str] = []
    payments: list[BankPayment] = []
    signed_total = absolute_total = n_transactions = 0
    accounts: list[str] = []

    i, end = 1, len(records) - 1
    while i < end:
        start_no, start = records[i]
        if not isinstance(start, AssignmentStart):
            raise InputError(f"{name}: line {start_no}: expected assignment start (record 20), "
                             f"found record {start.RECORD_TYPE:02d}")
        j = i + 1
        while j < end and not isinstance(records[j][1], AssignmentEnd):
            if isinstance(records[j][1], AssignmentStart):
                break
            j += 1
        if j >= end or not isinstance(records[j][1], AssignmentEnd):
            raise InputError(f"{name}: line {start_no}: assignment "
                             f"{start.assignment_number} has no end record (88)")
        end_no, assignment_end = records[j]
        body = records[i + 1:j]
        if start.service_code == ServiceCode.OCR_GIRO:
            account = start.assignment_account
            if account and account.strip("0") and account not in accounts:
                accounts.append(account)
            got = _ocr_assignment(name, start, body)
            count, signed, absolute = len(got), sum(_ore(p) for p in got), \
                sum(abs(_ore(p)) for p in got)
            payments.extend(got)
        else:
            warnings.append(f"{name}: lines {start_no}-{end_no}: AvtaleGiro assignment "
                            f"{start.assignment_number} (type {start.assignment_type:02d}) "
                            "skipped: no payments")
            count = sum(1 for _, r in body if r.RECORD_TYPE in (
                RecordType.TRANSACTION_AMOUNT_ITEM_1, RecordType.TRANSACTION_AGREEMENTS))
            signed = absolute = sum(r.amount for _, r in body
                                    if isinstance(r, TransactionAmountItem1))
        _check_counts(name, end_no, "assignment", assignment_end, count, len(body) + 2)
        if assignment_end.total_amount is not None and start.service_code == ServiceCode.OCR_GIRO:
            _check_total(name, end_no, "assignment", assignment_end.total_amount, signed, absolute)
        n_transactions += count
        signed_total += signed
        absolute_total += absolute
        i = j + 1

    _check_counts(name, last_no, "transmission", last, n_transactions, len(records))
    total = _check_total(name, last_no, "transmission", last.total_amount, signed_total,
                         absolute_total)
    _unique(payments, name)
    incoming, skipped = [], []
    for p in payments:
        why = _not_a_payment(p)
        if why is None:
            incoming.append(p)
        else:
            skipped.append(SkippedItem(p.archive_ref, p.amount, p.currency, why, kid=p.kid,
                                       bank_code=p.bank_code))
    return PaymentFile(format=FORMAT, payments=incoming, reference=first.transmission_number,
                       control_total=from_ore(total), warnings=warnings, skipped=skipped,
                       accounts=accounts)


def _not_a_payment(p: BankPayment) -> str | None:
    ttype = int(p.bank_code or 0)
    if ttype in _REVERSALS:
        return f"reversal (OCR transaction type {ttype}, {_REVERSALS[ttype]})"
    if p.amount < 0:
        return f"negative amount (sign '-', OCR transaction type {ttype:02d}): not money received"
    if p.amount == 0:
        return "zero amount: no money received"
    return None


def _ore(p: BankPayment) -> int:
    return int(p.amount.scaleb(2))


def _check_counts(name: str, line_no: int, what: str, rec: AssignmentEnd | TransmissionEnd,
                  transactions: int, records: int) -> None:
    if rec.num_transactions != transactions:
        raise InputError(f"{name}: line {line_no}: {what} end says {rec.num_transactions} "
                         f"transactions, found {transactions}")
    if rec.num_records != records:
        raise InputError(f"{name}: line {line_no}: {what} end says {rec.num_records} records, "
                         f"found {records}")


def _ocr_assignment(name: str, start: AssignmentStart,
                    body: list[tuple[int, Record]]) -> list[BankPayment]:
    """Group records 30/31[/32] by transaction number into BankPayments."""
    out: list[BankPayment] = []
    k = 0
    while k < len(body):
        no1, item1 = body[k]
        if not isinstance(item1, TransactionAmountItem1):
            raise InputError(f"{name}: line {no1}: expected amount item 1 (record 30), found "
                             f"record {item1.RECORD_TYPE:02d}")
        if k + 1 >= len(body) or not isinstance(body[k + 1][1], TransactionAmountItem2):
            raise InputError(f"{name}: line {no1}: transaction {item1.transaction_number} "
                             "has no amount item 2 (record 31)")
        no2, item2 = body[k + 1]
        linked: list[tuple[int, Record]] = [(no2, item2)]
        text = None
        k += 2
        if k < len(body) and isinstance(body[k][1], TransactionAmountItem3):
            linked.append(body[k])
            text = body[k][1].text
            k += 1
        for no, rec in linked:
            if rec.transaction_number != item1.transaction_number:
                raise InputError(f"{name}: line {no}: transaction number "
                                 f"{rec.transaction_number} differs from "
                                 f"{item1.transaction_number} on line {no1}")
        ttype = int(item1.transaction_type)
        ore = -item1.amount if item1.sign == "-" or ttype in _REVERSALS else item1.amount
        debit = item2.debit_account
        out.append(BankPayment(
            format=FORMAT,
            archive_ref=f"{item2.reference}/{item1.nets_date:%Y%m%d}/"
                        f"{start.assignment_number}/{item1.transaction_number}",
            amount=from_ore(ore),
            currency="NOK",
            payment_date=item2.bank_date,
            booking_date=item1.nets_date,
            kid=item1.kid,
            payer_account=debit if debit and debit.strip("0") else None,
            bank_code=f"{ttype:02d}",
            text=text,
        ))
    return out


def _unique(payments: list[BankPayment], name: str) -> None:
    seen: set[str] = set()
    for p in payments:
        if p.archive_ref in seen:
            raise InputError(f"{name}: transaction {p.archive_ref} occurs twice")
        seen.add(p.archive_ref)

