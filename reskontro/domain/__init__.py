"""The domain in plain data: customers, ledger entries, matches, decisions, bank payments.

Money is ``Decimal`` with two places; dates are ``datetime.date``. Nothing here knows about
databases, files or rules: adapters turn the outside world into these types.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal

from reskontro.domain.amount import CENT, parse_amount

CUSTOMER_TYPES = ("private", "business")
ENTRY_TYPES = ("invoice", "credit_note", "payment", "payout", "manual_voucher", "reversal")
#: entry types the receiver knows (a reversal is never transferred)
TRANSFER_TYPES = ("invoice", "credit_note", "payment", "payout", "manual_voucher")
INVOICE_STATUSES = ("draft", "invoiced")
DECISIONS = ("transfer", "wait", "exclude", "hold")
MODES = ("full_ledger", "factoring")


def money(value: str | Decimal | int) -> Decimal:
    """A two-place Decimal. Text is read by the one amount reader (`amount.parse_amount`:
    one decimal mark, at most two decimals, no grouping, bounded); a Decimal or int must
    already have at most two places (refused, never rounded). Floats are refused: they have
    passed through binary floating point."""
    if isinstance(value, str):
        return parse_amount(value)
    if isinstance(value, bool) or not isinstance(value, (Decimal, int)):
        raise TypeError(f"an amount is text, Decimal or int, not {type(value).__name__} ({value!r})")
    d = Decimal(value)
    if not d.is_finite():
        raise ValueError(f"not a finite amount: {value!r}")
    q = d.quantize(CENT)
    if q != d:
        raise ValueError(f"more than two decimals: {value!r}")
    return q + 0     # + 0: no -0.00


def to_ore(amount: Decimal) -> int:
    """Amount in øre, the integer the store keeps (exact on every database)."""
    return int(amount.scaleb(2).to_integral_value())


def from_ore(ore: int) -> Decimal:
    return (Decimal(ore) / 100).quantize(CENT)


@dataclass(frozen=True, slots=True)
class Address:
    lines: tuple[str, ...] = ()
    post_code: str = ""
    city: str = ""
    country: str = "NO"

    @property
    def complete(self) -> bool:
        return bool(self.lines and self.lines[0].strip() and self.post_code.strip()
                    and self.city.strip() and self.country.strip())


@dataclass(frozen=True, slots=True)
class Customer:
    id: str
    name: str
    type: str | None            # private | business; None when the ERP has none
    address: Address = field(default_factory=Address)
    org_no: str | None = None
    email: str | None = None
    phone: str | None = None
    factoring_default: bool = False   # factoring mode: invoices followed up in-house by default
    tags: tuple[str, ...] = ()  # words the rules may test (lower case, sorted); never sent to Lowell


@dataclass(frozen=True, slots=True)
class Entry:
    id: str
    customer_id: str
    type: str                   # one of ENTRY_TYPES
    document_no: str
    document_date: date
    amount: Decimal             # signed: + the customer owes more
    currency: str = "NOK"
    due_date: date | None = None
    kid: str | None = None
    status: str | None = None   # invoices: draft | invoiced
    factoring: bool | None = None   # invoices: True = followed up in-house; None = customer default
    opt_out: bool = False       # manual vouchers: never sent (e.g. write-offs)
    reverses: str | None = None  # reversals: the entry reversed
    source: str | None = None   # e.g. "Lowell" for payments through Lowell's payment agreement
    dunning_level: int = 0      # the ERP's own reminders on this invoice
    text: str | None = None
    bank_ref: str | None = None  # the bank's archive reference of the payment this entry is


@dataclass(frozen=True, slots=True)
class Match:
    """A group of entries that settle each other (kobling)."""
    id: str
    entry_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Decision:
    entry_id: str
    decision: str               # one of DECISIONS
    rule_id: str
    reason: str
    warnings: tuple[tuple[str, str], ...] = ()   # (rule id, text); never block


@dataclass(frozen=True, slots=True)
class BankPayment:
    """One incoming payment as a bank file reports it (CREMUL SEQ, camt.054 TxDtls, OCR item)."""
    format: str                 # cremul | camt054 | ocr_giro
    archive_ref: str            # the bank's reference for this payment; unique per payment
    amount: Decimal             # money received: always positive in a PaymentFile's payments
    currency: str
    payment_date: date | None
    booking_date: date | None
    kid: str | None = None
    invoice_no: str | None = None
    payer_name: str | None = None
    payer_account: str | None = None
    bank_code: str | None = None    # bank transaction code (BUS operation code, BkTxCd, OCR type)
    text: str | None = None
    source: str = "Lowell"


@dataclass(frozen=True, slots=True)
class SkippedItem:
    """Something a payment file reports that is not a customer's incoming payment: a debit (our
    own outgoing payment or a withdrawal), a reversal, a returned transfer, a negative amount.
    It is never listed or booked, only reported in the file's summary with its reason."""
    reference: str              # the bank's reference, as a payment's archive_ref would be
    amount: Decimal             # signed like the account moves: + money in, - money out
    currency: str
    reason: str                 # e.g. "debit (outgoing payment)", "returned transfer, reason AC04"
    kid: str | None = None      # a KID-like reference it carries (it must never be booked on it)
    bank_code: str | None = None

    def describe(self) -> str:
        """One line for people, the reason last (it may hold the bank's own text):
        "1,250.00 NOK, ref X, KID 123: debit (outgoing payment)"."""
        text = f"{abs(self.amount):,.2f} {self.currency}, ref {self.reference}"
        if self.kid:
            text += f", KID {self.kid}"
        if self.bank_code:
            text += f", bank code {self.bank_code}"
        return f"{text}: {self.reason}"


@dataclass(slots=True)
class PaymentFile:
    """What a payment-file reader returns: the payments, what is not a payment, the file's
    control totals, warnings.

    ``payments`` holds only customers' incoming payments (positive amounts); everything else
    the file reports is in ``skipped``. ``control_total`` is the net of everything the file
    reports (credits +, debits -), checked against the file's own totals where it states them:
    the payments and the skipped items together add up to it.
    """
    format: str
    payments: list[BankPayment]
    reference: str | None = None          # interchange / message / transmission id
    control_total: Decimal | None = None  # the total the file states, already checked
    warnings: list[str] = field(default_factory=list)
    skipped: list[SkippedItem] = field(default_factory=list)
    # The accounts the file reports money into (the creditor's own: CREMUL FII+BF, camt.054
    # Ntfctn/Acct/Id, OCR giro's assignment account), as written, each once, in file order.
    # They say whose file it is where one drop folder serves many creditors (fleet.routing).
    accounts: list[str] = field(default_factory=list)

    def set_aside_non_incoming(self) -> None:
        """Move any payment whose amount is not positive to ``skipped``: whatever a reader
        made of the file, money that did not come in is never a customer's payment."""
        keep = []
        for p in self.payments:
            if p.amount > 0:
                keep.append(p)
            else:
                why = "negative amount: not money received" if p.amount < 0 \
                    else "zero amount: no money received"
                self.skipped.append(SkippedItem(p.archive_ref, p.amount, p.currency, why,
                                                kid=p.kid, bank_code=p.bank_code))
        self.payments[:] = keep


class InputError(ValueError):
    """Bad input from outside: names the file, line/segment/id and what is wrong."""
