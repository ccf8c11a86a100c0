"""Render a Ledger Transfer 1.0 file from domain objects, streaming.

The layout lives in ``templates/ledger-transfer-1.xml.j2`` (Jinja2 sandbox, XML autoescape).
A backlog file can hold a million entries, so nothing is collected: customers, entries and
matches are consumed once, turned into rows of ready-made strings (the template's hot loop
then needs no filter calls), counted and summed on the way, and the output is written in
large UTF-8 chunks. The trailer reads the running totals after the loops have finished.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime
from decimal import MAX_EMAX, MAX_PREC, MIN_EMIN, Context, Decimal
from itertools import chain, islice
from pathlib import Path
from typing import BinaryIO, Iterable, Iterator
from zoneinfo import ZoneInfo

import traceback

from jinja2 import StrictUndefined
from jinja2.bccache import Bucket, BytecodeCache
from markupsafe import escape

from reskontro.domain import TRANSFER_TYPES, Customer, Entry, Match, money
from reskontro.transfer.sandbox import OUTPUT_BUDGET, BoundedSandbox, Records, TemplateLoader, TemplateRefused

TEMPLATE_NAME = "ledger-transfer-1.xml.j2"
OSLO = ZoneInfo("Europe/Oslo")
KINDS = ("daily", "backlog")
ZERO = Decimal("0.00")
#: sums must be exact however large the file: no rounding at 28 digits
EXACT = Context(prec=MAX_PREC, Emax=MAX_EMAX, Emin=MIN_EMIN)

_SENDER_ID = re.compile(r"[A-Za-z0-9]{1,35}")
# characters XML 1.0 cannot carry at all (not even escaped); one would make the file unreadable
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
# a value with none of these can go into the pre-escaped rows as it is (the common case)
_NEEDS_CARE = re.compile("[&<>\"'\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_CHUNK = 1024   # template pieces per write (a record is one piece): about 100-300 KB
_BIG = 4 * 1024 * 1024   # a chunk of more characters is written piece by piece, never joined


@dataclass(frozen=True)
class FileHeader:
    sender_id: str
    creditor_org_no: str
    sequence: int
    kind: str
    created_at: datetime
    cut_off: datetime
    base_currency: str = "NOK"

    def __post_init__(self) -> None:
        # FileId is derived from these; a bad one would make every file name wrong.
        if not _SENDER_ID.fullmatch(self.sender_id):
            raise ValueError(f"sender id {self.sender_id!r}: 1-35 letters or digits")
        if not 1 <= self.sequence <= 999_999:
            raise ValueError(f"sequence {self.sequence}: must be 1..999999 (6 digits in FileId)")
        if self.kind not in KINDS:
            raise ValueError(f"kind {self.kind!r}: must be one of {KINDS}")
        for name in ("created_at", "cut_off"):
            if getattr(self, name).utcoffset() is None:
                raise ValueError(f"{name} must carry a time zone")

    @property
    def file_id(self) -> str:
        day = self.cut_off.astimezone(OSLO).strftime("%Y%m%d")
        return f"LT_{self.sender_id}_{day}_{self.sequence:06d}"


@dataclass(frozen=True)
class TransferTotals:
    customer_count: int
    entry_count: int
    match_count: int
    control_sums: dict[str, Decimal]


class _RunningTotals:
    """Counted while the rows stream past; the template reads it only at the Trailer."""

    def __init__(self, base_currency: str) -> None:
        self.base_currency = base_currency
        self.customer_count = 0
        self.entry_count = 0
        self.match_count = 0
        self.records = 0          # rows read so far (a match counts its members): the budgets grow with it
        self.sums: dict[str, Decimal] = {}

    @property
    def control_sum_rows(self) -> list[tuple[str, str]]:
        sums = self.sums or {self.base_currency: ZERO}
        return [(cur, format(sums[cur], "f")) for cur in sorted(sums)]

    def freeze(self) -> TransferTotals:
        return TransferTotals(self.customer_count, self.entry_count, self.match_count,
                              dict(self.sums) if self.sums else {self.base_currency: ZERO})


class _Lazy(Records):
    """An iterable the template can test for emptiness (to omit an empty wrapper element)
    without the Python side reading ahead before the template gets there."""

    def __init__(self, rows: Iterator[tuple]) -> None:
        self._rows = rows
        self._first: list[tuple] | None = None

    def __bool__(self) -> bool:
        if self._first is None:
            self._first = list(islice(self._rows, 1))
        return bool(self._first)

    def __iter__(self) -> Iterator[tuple]:
        first, self._first = self._first or [], []
        return chain(first, self._rows)


def _iso_date(value: date) -> str:
    return value.isoformat()


def _iso_datetime(value: datetime) -> str:
    if value.utcoffset() is None:
        raise ValueError(f"datetime {value!r} has no time zone; the contract requires an offset")
    return value.isoformat(timespec="seconds")


def _amount(value: object) -> str:
    """Two-place plain decimal; money() refuses more than two places instead of rounding."""
    return format(money(value), "f")


class _CompiledTemplates(BytecodeCache):
    """Compiled templates kept for the life of the process, by file and source checksum (Jinja2
    compares the checksum, so an edited template is compiled again). A fleet worker renders the
    same template for thousands of creditors a night; compiling it cost ~8 ms each time. Shared
    only by make_environment's environments, which all compile alike."""

    def __init__(self, limit: int = 64) -> None:
        self._code: dict[tuple[str, str], object] = {}
        self._limit = limit

    def load_bytecode(self, bucket: Bucket) -> None:
        bucket.code = self._code.get((bucket.key, bucket.checksum))

    def dump_bytecode(self, bucket: Bucket) -> None:
        if len(self._code) >= self._limit:
            self._code.clear()
        self._code[(bucket.key, bucket.checksum)] = bucket.code

    def clear(self) -> None:
        self._code.clear()


_COMPILED = _CompiledTemplates()


def make_environment(templates_dir: Path) -> BoundedSandbox:
    """Jinja2's sandbox, reading only regular files inside templates_dir, with bounds on what a
    template may build and write (reskontro/sandbox.py)."""
    env = BoundedSandbox(
        loader=TemplateLoader(templates_dir),
        bytecode_cache=_COMPILED,
        autoescape=True,
        undefined=StrictUndefined,   # a typo in a template is an error, not an empty element
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["amount"] = _amount
    env.filters["isodate"] = _iso_date
    env.filters["isodatetime"] = _iso_datetime
    return env


def _text(owner: str, values: str) -> None:
    bad = _NOT_XML.search(values)
    if bad:
        raise ValueError(f"{owner}: character U+{ord(bad.group()):04X} cannot be written in XML")


def _escaped(owner: str, values: tuple[str, ...]) -> tuple[str, ...]:
    """The slow path for pre-escaped rows: refuse what XML cannot carry, escape the rest.
    Escaped values are Markup, so a template that still autoescapes them leaves them as
    they are: rows are right with autoescape on or off."""
    _text(owner, "".join(values))
    return tuple(escape(v) for v in values)


def _customer_rows(customers: Iterable[Customer], totals: _RunningTotals) -> Iterator[tuple]:
    needs_care = _NEEDS_CARE.search
    for c in customers:
        a = c.address
        lines = a.lines
        row = (c.id, c.type or "", c.name, c.org_no or "", lines, a.post_code, a.city,
               a.country, c.email or "", c.phone or "")
        # pre-escaped like entry rows: a plain string needs no escaping (autoescape or not)
        if needs_care("".join((*row[:4], *lines, *row[5:]))):
            owner = f"Customer {c.id!r}"
            flat = _escaped(owner, (*row[:4], *row[5:]))
            row = (*flat[:4], _escaped(owner, lines), *flat[4:])
        totals.customer_count += 1
        totals.records += 1
        yield row


def _entry_rows(entries: Iterable[Entry], totals: _RunningTotals) -> Iterator[tuple]:
    sums = totals.sums
    add = EXACT.add
    transfer_types = frozenset(TRANSFER_TYPES)
    needs_care = _NEEDS_CARE.search
    n = 0
    try:
        for e in entries:
            t = e.type
            if t not in transfer_types:
                if t == "reversal":
                    raise ValueError(f"Entry {e.id!r}: a reversal is never transferred")
                raise ValueError(f"Entry {e.id!r}: unknown entry type {t!r}")
            amount = e.amount
            s = str(amount)
            if s[-3:-2] != ".":          # fast path: already 2 places, not scientific notation
                amount = money(amount)   # raises on more than two places
                s = format(amount, "f")
            eid, cust, doc, cur = e.id, e.customer_id, e.document_no, e.currency
            kid = e.kid or ""
            text = e.text or ""
            # the template does not escape entry rows (speed): do it here when needed
            if needs_care(f"{eid}{cust}{doc}{kid}{text}{cur}"):
                eid, cust, doc, kid, text, cur = _escaped(f"Entry {e.id!r}",
                                                          (eid, cust, doc, kid, text, cur))
            sums[e.currency] = add(sums.get(e.currency, ZERO), amount)
            n += 1
            totals.records += 1
            yield (eid, t, cust, doc, e.document_date.isoformat(),
                   e.due_date.isoformat() if t == "invoice" and e.due_date else "",
                   s, cur, kid, text)
    finally:
        totals.entry_count = n


def _match_rows(matches: Iterable[Match], totals: _RunningTotals) -> Iterator[tuple]:
    needs_care = _NEEDS_CARE.search
    for m in matches:
        row = (m.id, *m.entry_ids)
        if needs_care("".join(row)):   # the template does not escape match rows (speed)
            row = _escaped(f"Match {m.id!r}", row)
        totals.match_count += 1
        totals.records += len(row)
        yield (row[0], row[1:])


def render_transfer(out: BinaryIO, header: FileHeader, customers: Iterable[Customer],
                    entries: Iterable[Entry], matches: Iterable[Match],
                    env: BoundedSandbox) -> TransferTotals:
    """Stream the file as UTF-8 to ``out``; return what its trailer says.

    A template that reads outside the templates folder, or builds or writes more than its
    bounds, is refused with TemplateRefused naming the template file and line."""
    totals = _RunningTotals(header.base_currency)
    env.start(lambda: totals.records)
    try:
        template = env.get_template(TEMPLATE_NAME)
        pieces = template.generate(
            header=header,
            customers=_Lazy(_customer_rows(customers, totals)),
            entries=_Lazy(_entry_rows(entries, totals)),
            matches=_Lazy(_match_rows(matches, totals)),
            totals=totals,
        )
        _write(out, pieces, totals)
    except TemplateRefused as exc:
        raise TemplateRefused(f"{_where(exc, env)}{exc}") from None
    except RecursionError as exc:         # a macro or an include that calls itself
        raise TemplateRefused(f"{_where(exc, env)}template {TEMPLATE_NAME!r}: macros or includes call "
                              "themselves too deep") from None
    return totals.freeze()


def _write(out: BinaryIO, pieces: Iterator[str], totals: _RunningTotals) -> None:
    """Write the pieces in large chunks, within the output budget (bytes: a fixed part plus a
    part per record read so far). Sizes are summed before anything is joined."""
    write = out.write
    written = 0
    base, per_record = OUTPUT_BUDGET
    while chunk := list(islice(pieces, _CHUNK)):
        n = sum(map(len, chunk))                      # characters: at most the bytes they make
        parts = ["".join(chunk)] if n <= _BIG else chunk
        for part in parts:
            if written + len(part) > (limit := base + per_record * totals.records):
                raise TemplateRefused(
                    f"template {TEMPLATE_NAME!r}: the file would grow past {limit:,} bytes (for {totals.records:,} "
                    f"records: {base:,} plus {per_record:,} a record)")
            data = part.encode("utf-8")
            written += len(data)
            write(data)


def _where(exc: BaseException, env: BoundedSandbox) -> str:
    """'file:line: ' of the template line that was running (Jinja2 puts template lines into
    the traceback), or ''."""
    folder = str(getattr(env.loader, "folder", "")) + "/"
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename.startswith(folder)]
    return f"{frames[-1].filename}:{frames[-1].lineno}: " if frames else ""
