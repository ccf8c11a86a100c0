"""What a check reports and what it reads out of a file.

Spec, "Receipts": each error carries a machine-readable ``code`` and, where it has one, the
``ref`` of the Entry, Customer or Match it is about (a receipt's ``Error @code @ref``). The
records (Header, Customer, Entry, Match) are a file's content, collected for the receiver
model and the journal (``TransferChecker.check(..., collect=True)`` or ``into=``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

MAX_ERRORS = 1000


@dataclass(frozen=True)
class ContractError:
    line: int | None
    ref: str | None            # the Entry / Customer / Match id, when the error has one
    message: str
    kind: str | None = None    # Entry | Customer | Match | Header | Trailer
    code: str = "contract"     # machine-readable; receipts carry it
    file: str = ""
    target: str | None = None  # reference errors: the id that names nothing

    def __str__(self) -> str:
        where = self.file or "transfer file"
        if self.line:
            where += f" line {self.line}"
        if self.ref is not None or self.kind:
            where += f" ({' '.join(p for p in (self.kind, self.ref) if p is not None)})"
        return f"{where}: {self.message}"


class ContractViolation(Exception):
    def __init__(self, errors: list[ContractError]) -> None:
        self.errors = list(errors)
        shown = "\n".join(f"  {e}" for e in self.errors[:20])
        more = f"\n  ... and {len(self.errors) - 20} more" if len(self.errors) > 20 else ""
        super().__init__(f"{len(self.errors)} contract error(s):\n{shown}{more}")


class _TooMany(Exception):
    """``max_errors`` errors reported: the pass stops."""


@dataclass(frozen=True, slots=True)
class HeaderRecord:
    sender_id: str
    creditor_org_no: str
    file_id: str
    sequence: int
    kind: str
    created_at: datetime | None
    cut_off: datetime | None


@dataclass(frozen=True, slots=True)
class CustomerRecord:
    id: str
    type: str
    name: str
    org_no: str | None
    lines: tuple[str, ...]
    post_code: str
    city: str
    country: str
    email: str | None
    phone: str | None
    line: int | None = None


@dataclass(frozen=True, slots=True)
class EntryRecord:
    id: str
    type: str
    customer_ref: str
    document_no: str
    document_date: str
    due_date: str | None
    amount: Decimal
    currency: str
    kid: str | None
    text: str | None
    line: int | None = None

    def content(self) -> tuple:
        """What must be identical when the same id is sent again."""
        return (self.type, self.customer_ref, self.document_no, self.document_date,
                self.due_date, self.amount, self.currency, self.kid, self.text)


@dataclass(frozen=True, slots=True)
class MatchRecord:
    id: str
    entry_refs: tuple[str, ...]
    line: int | None = None


@dataclass
class CheckResult:
    errors: list[ContractError]
    header: HeaderRecord | None = None
    customers: list[CustomerRecord] = field(default_factory=list)
    entries: list[EntryRecord] = field(default_factory=list)
    matches: list[MatchRecord] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors
