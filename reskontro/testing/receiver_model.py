"""A model of the receiver (Lowell): what it does with each file, per the contract.

The real server cannot run here; the demo's stand-in receiver and the tests use this. It
keeps its state in memory and applies every rule of ../shared/spec/ledger-transfer-1.md:
the single-file rules through reskontro.transfer.contract (the same checker the sender runs before
upload), and the rules across files here: rising Sequence, immutable entries, replaced
customers, growing matches, one group per entry, references to earlier files.

Files are processed in the order given, so "in flight" (received earlier, not rejected) is
the same as accepted. A rejected file changes nothing; a later file that refers to what only
a rejected file carried is rejected too (code ``ref_to_rejected``).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Callable

from reskontro.transfer.contract import (ContractError, CustomerRecord, EntryRecord, MatchRecord,
                                TransferChecker)
from reskontro.files.folders import create_temporary
from reskontro.transfer.receipts import Receipt, ReceiptError, render_receipt
from reskontro.transfer.render import EXACT

XSD_NAME = "ledger-transfer-1.xsd"
_FILE_ID = re.compile(r"LT_[A-Za-z0-9]{1,35}_[0-9]{8}_([0-9]{6})")
ZERO = Decimal("0.00")


def default_xsd_path() -> Path:
    """The XSD in a checkout (templates/) or in an installed package (site_templates/)."""
    here = Path(__file__).resolve().parents[1]          # the reskontro package
    for candidate in (here.parent / "templates" / XSD_NAME, here / "site_templates" / XSD_NAME):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"{XSD_NAME} not found beside {here}")


@dataclass
class _Staged:
    """What an accepted file would change; applied only when the file has no error."""
    customers: dict[str, CustomerRecord] = field(default_factory=dict)
    entries: dict[str, EntryRecord] = field(default_factory=dict)
    matches: dict[str, frozenset[str]] = field(default_factory=dict)


class ReceiverModel:
    def __init__(self, xsd_path: Path | None = None, *, base_currency: str = "NOK",
                 clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc).replace(
                     microsecond=0)) -> None:
        self._checker = TransferChecker(xsd_path or default_xsd_path(),
                                        base_currency=base_currency)
        self._clock = clock
        self.last_sequence = 0
        self.customers: dict[str, CustomerRecord] = {}
        self.entries: dict[str, EntryRecord] = {}
        self.matches: dict[str, frozenset[str]] = {}
        self.group_of: dict[str, str] = {}          # entry id -> match id
        self._rejected_only: set[str] = set()       # ids carried only by rejected files

    # ------------------------------------------------------------------ receiving

    def receive(self, data: bytes, name: str) -> Receipt:
        """Apply one file; the receipt says accepted or rejected, with coded errors."""
        result = self._checker.check(
            data, name, collect=True,
            known_customer=self.customers.__contains__,
            known_entry_type=lambda ref: e.type if (e := self.entries.get(ref)) else None)
        errors = [self._receipt_error(e) for e in result.errors]
        header = result.header
        if header is not None and header.sequence and header.sequence <= self.last_sequence:
            errors.append(ReceiptError(
                "sequence", None, f"Sequence {header.sequence} is not higher than "
                f"{self.last_sequence}, the last accepted"))
        staged = _Staged()
        errors += self._entries_again(result.entries, staged)
        errors += self._matches_again(result.matches, staged)
        staged.customers = {c.id: c for c in result.customers}
        file_id = header.file_id if header and _FILE_ID.fullmatch(header.file_id) else \
            name.removesuffix(".xml")
        if errors or header is None:
            self._rejected_only |= ({c.id for c in result.customers} - self.customers.keys())
            self._rejected_only |= ({e.id for e in result.entries} - self.entries.keys())
            self._rejected_only |= ({m.id for m in result.matches} - self.matches.keys())
            return Receipt(file_id, "rejected", self._clock(), tuple(errors))
        self._apply(header.sequence, staged)
        return Receipt(file_id, "accepted", self._clock(), ())

    def _receipt_error(self, e: ContractError) -> ReceiptError:
        code = e.code
        if e.target is not None and e.target in self._rejected_only:
            code = "ref_to_rejected"     # it leans on a file that was rejected
        where = f"line {e.line}: " if e.line else ""
        return ReceiptError(code, e.ref, where + e.message)

    def _entries_again(self, entries: list[EntryRecord], staged: _Staged) -> list[ReceiptError]:
        """Entries are immutable: the same id again must carry the same content."""
        errors = []
        for e in entries:
            before = self.entries.get(e.id)
            if before is None:
                staged.entries[e.id] = e
            elif before.content() != e.content():
                errors.append(ReceiptError(
                    "entry_changed", e.id, f"line {e.line}: Entry {e.id} was sent before with "
                    "different content; entries are immutable"))
        return errors

    def _matches_again(self, matches: list[MatchRecord], staged: _Staged) -> list[ReceiptError]:
        """A Match sent again must grow; no entry may join a second group."""
        errors = []
        for m in matches:
            members = frozenset(m.entry_refs)
            before = self.matches.get(m.id, frozenset())
            dropped = before - members
            if dropped:
                errors.append(ReceiptError(
                    "match_shrunk", m.id, f"line {m.line}: Match {m.id} drops "
                    f"{', '.join(sorted(dropped))}; a Match sent again must list a superset"))
            for ref in sorted(members):
                other = self.group_of.get(ref)
                if other is not None and other != m.id:
                    errors.append(ReceiptError(
                        "entry_in_two_groups", m.id, f"line {m.line}: Entry {ref} is already "
                        f"in Match {other}; an entry belongs to at most one group"))
            staged.matches[m.id] = members | before
        return errors

    def _apply(self, sequence: int, staged: _Staged) -> None:
        self.last_sequence = sequence
        self.customers.update(staged.customers)     # a customer sent again replaces
        self.entries.update(staged.entries)         # identical repeats were left out
        for mid, members in staged.matches.items():
            self.matches[mid] = members
            for ref in members:
                self.group_of[ref] = mid
        self._rejected_only -= staged.customers.keys() | staged.entries.keys() \
            | staged.matches.keys()

    # ------------------------------------------------------------------ balances

    def open_groups(self) -> dict[str, tuple[frozenset[str], Decimal]]:
        """Every group holding an invoice, keyed by match id (an invoice in no group: by its
        own id), with its open balance, the sum of its entries' amounts (0.00 = closed)."""
        groups: dict[str, tuple[frozenset[str], Decimal]] = {}
        for mid, members in self.matches.items():
            total = ZERO
            for ref in members:
                total = EXACT.add(total, self.entries[ref].amount)
            groups[mid] = (members, total)
        for eid, e in self.entries.items():
            if e.type == "invoice" and eid not in self.group_of:
                groups[eid] = (frozenset((eid,)), e.amount)
        return groups

    def open_balances(self) -> dict[str, Decimal]:
        """Every invoice the receiver knows -> the open balance of its group."""
        balances: dict[str, Decimal] = {}
        for members, total in self.open_groups().values():
            for ref in members:
                if self.entries[ref].type == "invoice":
                    balances[ref] = total
        return balances

    # ------------------------------------------------------------------ the folders

    def serve_folder(self, inbound: Path, outbound: Path) -> list[Receipt]:
        """Process every complete ``*.xml`` in ``inbound`` in Sequence order (``.part`` and
        other names are ignored), write ``outbound/<FileId>.receipt.xml``, and move each file
        to ``inbound/processed/``. An existing receipt is never overwritten (a second upload
        of a FileId is rejected for its Sequence, and must not hide the first receipt)."""
        inbound, outbound = Path(inbound), Path(outbound)
        outbound.mkdir(parents=True, exist_ok=True)
        processed = inbound / "processed"
        files = [p for p in inbound.iterdir() if p.is_file() and p.name.endswith(".xml")]
        receipts = []
        for path in sorted(files, key=_sequence_order):
            receipt = self.receive(path.read_bytes(), path.name)
            _write_new(outbound / f"{receipt.file_id}.receipt.xml", render_receipt(receipt))
            processed.mkdir(exist_ok=True)
            os.replace(path, _free_name(processed / path.name))
            receipts.append(receipt)
        return receipts


def _sequence_order(path: Path) -> tuple[int, str]:
    m = _FILE_ID.fullmatch(path.name.removesuffix(".xml"))
    return (int(m.group(1)) if m else 1_000_000, path.name)


def _write_new(target: Path, data: bytes) -> None:
    """Write under a temporary name and rename, so a reader never sees half a receipt (the
    temporary file created exclusively, never through a link)."""
    if os.path.lexists(target):
        return
    tmp = target.with_name(f".{target.name}.part")
    fd = create_temporary(tmp)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, target)


def _free_name(target: Path) -> Path:
    n = 1
    candidate = target
    while candidate.exists():
        candidate = target.with_name(f"{target.name}.{n}")
        n += 1
    return candidate
