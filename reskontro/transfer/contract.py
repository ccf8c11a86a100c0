"""The pre-send checker: does a Ledger Transfer 1.0 file keep every rule of the receiver's contract?

One streaming pass with lxml ``iterparse``: the XSD is validated while parsing (libxml2's
streaming validator) and the rules XSD 1.0 cannot express are checked on each record as it
ends; finished records are then dropped, so memory grows only with the ids kept for the
uniqueness and reference checks (~9 bytes per entry, customer and match).

libxml2's streaming validator gives no line numbers and stops at its first bad chunk, so a
file that fails is read a second time without it: each record (Header, Customer, Entry,
Match, Trailer) is validated on its own, which names the line and id of every XSD error.

The XSD's identity constraints (xs:unique) are stripped from the copy used here: libxml2
keeps every key of the file in memory (~1 KB per entry, 190 MB at 200k entries), and the
same checks are done in Python with less memory and better messages.

The receiver model uses the same pass (``TransferChecker.check(..., collect=True)``) to get
the file's content, so each rule lives here only.
"""
from __future__ import annotations

import io
import os
import re
from array import array
from bisect import bisect_left
from copy import deepcopy
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import BinaryIO, Callable

from lxml import etree
from stdnum.no import orgnr

from reskontro.domain.kid import is_valid as kid_is_valid  # noqa: F401  (re-exported)
from reskontro.domain.kid import luhn_is_valid  # noqa: F401
from reskontro.domain.kid import mod11_check_digit as mod11_kid_check  # noqa: F401
from reskontro.transfer.render import EXACT, OSLO

NS = "urn:reskontro:ledger-transfer:1"
_XS = "{http://www.w3.org/2001/XMLSchema}"
ZERO = Decimal("0.00")
MAX_ERRORS = 1000
_PROLOG_LIMIT = 65536
_BATCH = 1024   # records kept in the tree before the finished ones are dropped


def _q(local: str) -> str:
    return f"{{{NS}}}{local}"


T_HEADER, T_CUSTOMER, T_ENTRY, T_MATCH, T_TRAILER = map(
    _q, ("Header", "Customer", "Entry", "Match", "Trailer"))
T_CREF, T_DOCNO, T_DOCDATE, T_DUE, T_AMOUNT, T_KID, T_TEXT = map(
    _q, ("CustomerRef", "DocumentNo", "DocumentDate", "DueDate", "Amount", "KID", "Text"))
T_ADDRESS, T_LINE, T_ENTRYREF, T_CONTROLSUM, T_ORGNO = map(
    _q, ("Address", "Line", "EntryRef", "ControlSum", "OrgNo"))
_RECORD_KIND = {T_HEADER: "Header", T_CUSTOMER: "Customer", T_ENTRY: "Entry",
                T_MATCH: "Match", T_TRAILER: "Trailer"}

_DIGITS4 = re.compile(r"[0-9]{4}")
_ORGNO = re.compile(r"[0-9]{9}")
_NS_PREFIX = re.compile(r"\{" + re.escape(NS) + r"\}")
_POSITION = re.compile(r"\s*\([^()]*, line 0\)$")
_PROLOG_ITEM = re.compile(rb"\s+|<\?.*?\?>|<!--.*?-->", re.S)

# Ids are kept as their 64-bit str hash, 8 bytes each in sorted array('q') buckets (no Python
# object per id: memory stays nearly flat in file size). Equal hashes are confirmed against
# the real ids by reading the file again (_confirm_repeats); a collision of two different ids
# (odds ~1e-7 in a million-entry file) can at worst lend one entry's type to another in the
# match checks, or let a CustomerRef pass for a Customer of the file.
# An Entry is kept as (hash & _KEY) | kind: its kind and _MATCHED flag in the 3 low bits.
_INVOICE, _OTHER, _MATCHED = 1, 2, 4
_KEY = ~7
_MAX_BUCKET_BITS = 12     # at most 4096 buckets per set
_BYTES_PER_BUCKET = 32768  # ~70 entries: a short sorted bucket, and few buckets for a small file


def _bucket_bits(size: int) -> int:
    """log2 of the number of buckets for a file of ``size`` bytes."""
    return min(_MAX_BUCKET_BITS, (size // _BYTES_PER_BUCKET).bit_length())


def _buckets(bits: int) -> list[array]:
    """2**bits sorted arrays; hash >> (64 - bits) picks one (a negative index is fine)."""
    return [array("q") for _ in range(1 << bits)]


# ---------------------------------------------------------------- errors and records

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


# ---------------------------------------------------------------- check digits

def org_no_is_valid(org_no: str) -> bool:
    return bool(_ORGNO.fullmatch(org_no)) and orgnr.is_valid(org_no)


def expected_file_id(sender_id: str, cut_off: datetime, sequence: int) -> str:
    return f"LT_{sender_id}_{cut_off.astimezone(OSLO):%Y%m%d}_{sequence:06d}"


# ---------------------------------------------------------------- schema handling

def _hardened_parser() -> etree.XMLParser:
    return etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False,
                           dtd_validation=False, huge_tree=False)


def _schemas(xsd_path: Path) -> tuple[etree.XMLSchema, etree.XMLSchema]:
    """(streaming schema without identity constraints, per-record schema for diagnosis)."""
    doc = etree.parse(str(xsd_path), _hardened_parser())
    for unique in list(doc.getroot().iter(_XS + "unique", _XS + "key", _XS + "keyref")):
        unique.getparent().remove(unique)
    streaming = etree.XMLSchema(doc)
    records = deepcopy(doc)
    root = records.getroot()
    for local in ("Header", "Customer", "Entry", "Match", "Trailer"):
        etree.SubElement(root, _XS + "element", name=local, type=f"lt:{local}")
    return streaming, etree.XMLSchema(records)


def _clean(message: str) -> str:
    """libxml2's message without the namespace noise and the useless "(<string>, line 0)"."""
    return _POSITION.sub("", _NS_PREFIX.sub("", message))


# ---------------------------------------------------------------- the pass

class _TooMany(Exception):
    pass


_CUSTOMER_FIELDS = {_q(k): k for k in ("Type", "Name", "OrgNo", "Email", "Phone")}
_ADDRESS_FIELDS = {_q(k): k for k in ("PostCode", "City", "Country")}
_HEADER_FIELDS = {_q(k): k for k in ("SenderId", "CreditorOrgNo", "FileId", "Sequence", "Kind",
                                      "CreatedAt", "CutOff")}
_TRAILER_COUNTS = {_q(k): k for k in ("CustomerCount", "EntryCount", "MatchCount")}


class _Scan:
    """State and rules of one pass over one file."""

    def __init__(self, name: str, known_customer: Callable[[str], bool],
                 known_entry_type: Callable[[str], str | None], base_currency: str | None,
                 collect: bool, max_errors: int, size: int = 0) -> None:
        self.name = name
        self.known_customer = known_customer
        self.known_entry_type = known_entry_type
        self.base_currency = base_currency
        self.max_errors = max_errors
        self.collect = collect
        self.result = CheckResult([])
        bits = _bucket_bits(size)
        self.shift = 64 - bits
        self.customers = _buckets(bits)             # hash(id) of this file's customers
        self.customer_repeats: list[tuple[int, ContractError]] = []   # confirmed after the pass
        self.known_customers: set[str] = set()    # cache of known_customer(id) == True
        self.entries = _buckets(bits)               # (hash(id) & _KEY) | _INVOICE|_OTHER, +_MATCHED
        self.entries_sorted = False               # appended unsorted until the first Match
        self.entry_repeats: set[int] = set()      # hash(id) & _KEY of Entry ids seen twice
        self.foreign_matched: set[str] = set()    # earlier files' entries matched in this one
        self.matches = _buckets(bits)               # hash(id) of every Match
        self.match_repeats: set[int] = set()      # hashes of Match ids seen twice
        self.sums: dict[str, Decimal] = {}
        self.n_customers = self.n_entries = self.n_matches = 0

    def error(self, line: int | None, kind: str | None, ref: str | None, code: str,
              message: str, target: str | None = None) -> None:
        errors = self.result.errors
        errors.append(ContractError(line, ref, message, kind, code, self.name, target))
        if len(errors) >= self.max_errors:
            raise _TooMany

    def run(self, events: etree.iterparse, records: etree.XMLSchema | None) -> None:
        """Check every record as it ends. Without ``records`` (the caller validates while
        parsing) an Entry's children are read by position: right for every XSD-valid Entry,
        as comments and PIs are removed by the parser; a file the XSD rejects is read again
        with ``records``, which reads children by tag and validates each record alone."""
        fast = records is None
        entries, customers, known = self.entries, self.customers, self.known_customers
        known_customer, sums, add, error = self.known_customer, self.sums, EXACT.add, self.error
        collect, entries_out = self.collect, self.result.entries
        luhn = luhn_is_valid
        appending, shift = not self.entries_sorted, self.shift
        n_entries = n = 0
        for _, el in events:
            tag = el.tag
            if tag == T_ENTRY:   # the hot path: a million per backlog file
                n_entries += 1
                eid = el.get("id") or ""
                etype = el.get("type")
                due = kid = text = docno = docdate = None
                if fast:     # children by index: only the ones the checks need
                    cref = el[0].text
                    amount_el = el[3]
                    cur = amount_el.get("currency")
                    i = 4
                    if cur is None:          # el[3] is the DueDate
                        due, amount_el = amount_el.text, el[4]
                        cur = amount_el.get("currency")
                        i = 5
                    atext = amount_el.text
                    rest = len(el) - i       # KID? Text?
                    if rest == 2:
                        kid = el[i].text
                    elif rest == 1:
                        c = el[i]
                        if c.tag == T_KID:
                            kid = c.text
                        else:
                            text = c.text
                    if collect:
                        docno, docdate = el[1].text, el[2].text
                        if rest == 2:
                            text = el[i + 1].text
                else:
                    cref, docno, docdate, due, atext, cur, kid, text = _entry_by_tag(el)
                h = hash(eid)
                k = (h & _KEY) | (_INVOICE if etype == "invoice" else _OTHER)
                if appending:    # before any Match (always, in an XSD-valid file)
                    entries[h >> shift].append(k)
                else:
                    eb = entries[h >> shift]
                    j = bisect_left(eb, k & _KEY)
                    if j < len(eb) and eb[j] & _KEY == k & _KEY:
                        self.entry_repeats.add(k & _KEY)   # confirmed after the pass
                    else:
                        eb.insert(j, k)
                if etype == "invoice":
                    if due is None:
                        error(el.sourceline, "Entry", eid, "due_date",
                              "an invoice needs a DueDate")
                elif due is not None:
                    error(el.sourceline, "Entry", eid, "due_date",
                          f"DueDate is only for invoices, not for type {etype}")
                if kid is not None and not (fast and kid[-1] != "-" and luhn(kid)) \
                        and not kid_is_valid(kid):
                    error(el.sourceline, "Entry", eid, "kid", f"KID {kid} fails MOD10 and MOD11")
                if cref is not None:
                    hc = hash(cref)
                    cb = customers[hc >> shift]
                    j = bisect_left(cb, hc)
                    if not (j < len(cb) and cb[j] == hc) and cref not in known:
                        if known_customer(cref):
                            known.add(cref)
                        else:
                            error(el.sourceline, "Entry", eid, "unknown_customer",
                                  f"CustomerRef {cref} names no Customer in this file "
                                  "or an earlier one", cref)
                # fast: the XSD pattern holds (or the pass is redone); else None = unreadable
                amount = Decimal(atext) if fast else _decimal(atext)
                if amount is not None and cur is not None:
                    sums[cur] = add(sums.get(cur, ZERO), amount)
                if collect:
                    entries_out.append(EntryRecord(
                        eid, etype or "", cref or "", docno or "", docdate or "", due,
                        amount if amount is not None else ZERO, cur or "", kid, text,
                        el.sourceline))
            elif tag == T_MATCH:
                if appending:
                    self.sort_entries()
                    appending = False
                self.match(el, fast)
            elif tag == T_CUSTOMER:
                self.customer(el, fast)
            elif tag == T_HEADER:
                self.header(el)
            else:
                self.n_entries = n_entries
                self.trailer(el)
            if records is not None and not records(el):
                kind = _RECORD_KIND[tag]
                ref = el.get("id") if kind in ("Customer", "Entry", "Match") else None
                for err in records.error_log:
                    error(err.line or el.sourceline, kind, ref, "xsd",
                          f"XSD: {_clean(err.message)}")
            n += 1
            if n % _BATCH == 0:
                _drop_finished(el)
        self.n_entries = n_entries
        if appending:
            self.sort_entries()     # finds the repeated ids
        root = events.root
        if root is not None:
            info = root.getroottree().docinfo
            if info.doctype:
                error(None, None, None, "doctype", "the file has a DOCTYPE")
            if (info.encoding or "UTF-8").upper() not in ("UTF-8", "UTF8"):
                error(1, None, None, "encoding", f"the file is encoded {info.encoding}, not UTF-8")

    def sort_entries(self) -> None:
        """Sort each bucket of the Entries appended so far; of ids seen twice (equal hashes)
        keep the first, as the checks would have, and note them for _confirm_repeats."""
        self.entries_sorted = True
        entries, repeats = self.entries, self.entry_repeats
        for n, b in enumerate(entries):
            if len(b) < 2:
                continue
            ordered = sorted(b)
            keys = [x & _KEY for x in ordered]
            if len(set(keys)) != len(keys):
                first: dict[int, int] = {}
                for x in b:          # file order
                    if (kx := x & _KEY) in first:
                        repeats.add(kx)
                    else:
                        first[kx] = x
                ordered = sorted(first.values())
            entries[n] = array("q", ordered)

    # -- Header
    def header(self, el: etree._Element) -> None:
        v = {_HEADER_FIELDS[c.tag]: (c.text or "") for c in el if c.tag in _HEADER_FIELDS}
        line = el.sourceline
        sender, org, file_id = v.get("SenderId", ""), v.get("CreditorOrgNo", ""), v.get("FileId", "")
        if org and not org_no_is_valid(org):
            self.error(line, "Header", None, "org_no",
                       f"CreditorOrgNo {org} is not a valid organisation number (MOD11)")
        seq = _int(v.get("Sequence"))
        created, cut_off = _dt(v.get("CreatedAt")), _dt(v.get("CutOff"))
        if seq is not None and cut_off is not None and sender:
            want = expected_file_id(sender, cut_off, seq)
            if file_id != want:
                self.error(line, "Header", None, "file_id",
                           f"FileId {file_id} does not match SenderId, Sequence and the CutOff "
                           f"date in Europe/Oslo: expected {want}")
        self.result.header = HeaderRecord(sender, org, file_id, seq or 0, v.get("Kind", ""),
                                          created, cut_off)

    # -- Customer
    def customer(self, el: etree._Element, fast: bool) -> None:
        self.n_customers += 1
        line, cid = el.sourceline, el.get("id") or ""
        v: dict[str, str | None] = {}
        lines: list[str] = []
        if fast and not self.collect:   # XSD-valid: children by position, as for entries
            ctype = el[0].text or ""
            c = el[2]
            if c.tag == T_ORGNO:
                org, c = c.text or "", el[3]
            else:
                org = None
            post, country = c[-3].text or "", c[-1].text or ""
        else:
            for c in el:
                t = c.tag
                if t == T_ADDRESS:
                    for a in c:
                        if a.tag == T_LINE:
                            lines.append(a.text or "")
                        elif a.tag in _ADDRESS_FIELDS:
                            v[_ADDRESS_FIELDS[a.tag]] = a.text or ""
                elif t in _CUSTOMER_FIELDS:
                    v[_CUSTOMER_FIELDS[t]] = c.text or ""
            ctype, org = v.get("Type"), v.get("OrgNo")
            post, country = v.get("PostCode") or "", v.get("Country") or ""
        h = hash(cid)
        b = self.customers[h >> self.shift]
        i = bisect_left(b, h)
        if i < len(b) and b[i] == h:      # the real ids are compared after the pass
            self.error(line, "Customer", cid, "duplicate_id",
                       "Customer id appears more than once in the file")
            self.customer_repeats.append((h, self.result.errors[-1]))
        else:
            b.insert(i, h)
        if org is not None:
            if ctype != "business":
                self.error(line, "Customer", cid, "org_no",
                           f"OrgNo is only for business customers (Type is {ctype})")
            if not org_no_is_valid(org):
                self.error(line, "Customer", cid, "org_no",
                           f"OrgNo {org} is not a valid organisation number (MOD11)")
        if country == "NO" and not _DIGITS4.fullmatch(post):
            self.error(line, "Customer", cid, "post_code",
                       f"PostCode {post!r} must be exactly 4 digits when Country is NO")
        if self.collect:
            self.result.customers.append(CustomerRecord(
                cid, ctype or "", v.get("Name") or "", org, tuple(lines), post,
                v.get("City") or "", country, v.get("Email"), v.get("Phone"), line))

    # -- Match
    def match(self, el: etree._Element, fast: bool) -> None:
        self.n_matches += 1
        line, mid = el.sourceline, el.get("id") or ""
        if fast:   # XSD-valid: every child is an EntryRef
            refs = [c.text or "" for c in el]
        else:
            refs = [c.text or "" for c in el if c.tag == T_ENTRYREF]
        h = hash(mid)
        b = self.matches[h >> self.shift]
        i = bisect_left(b, h)
        if i < len(b) and b[i] == h:
            self.match_repeats.add(h)       # confirmed and reported after the pass
        else:
            b.insert(i, h)
        members = dict.fromkeys(refs)
        if len(members) != len(refs):
            self.error(line, "Match", mid, "match_overlap", "an EntryRef is listed twice")
        invoices = others = unknown = 0
        entries, shift = self.entries, self.shift
        for ref in members:
            h = hash(ref)
            k = h & _KEY
            b = entries[h >> shift]
            i = bisect_left(b, k)
            if i < len(b) and (kind := b[i]) & _KEY == k:    # an entry of this file
                if kind & _MATCHED:
                    self.error(line, "Match", mid, "match_overlap",
                               f"Entry {ref} is already in another Match of this file")
                b[i] = kind | _MATCHED
                is_invoice = kind & _INVOICE
            else:                         # an entry of an earlier file, or nothing
                etype = self.known_entry_type(ref)
                if etype is None:
                    self.error(line, "Match", mid, "unknown_entry",
                               f"EntryRef {ref} names no Entry in this file or an earlier one",
                               ref)
                    unknown += 1
                    continue
                if ref in self.foreign_matched:
                    self.error(line, "Match", mid, "match_overlap",
                               f"Entry {ref} is already in another Match of this file")
                self.foreign_matched.add(ref)
                is_invoice = etype == "invoice"
            if is_invoice:
                invoices += 1
            else:
                others += 1
        if unknown:
            pass     # the shape cannot be judged on part of the group
        elif invoices == 0:
            self.error(line, "Match", mid, "match_shape", "a Match needs at least one invoice")
        elif invoices > 1 and others > 1:
            self.error(line, "Match", mid, "match_shape",
                       f"many-to-many: {invoices} invoices with {others} counterparts "
                       "(allowed: one invoice with any counterparts, or several invoices "
                       "with one counterpart)")
        if self.collect:
            self.result.matches.append(MatchRecord(mid, tuple(refs), line))

    # -- Trailer
    def trailer(self, el: etree._Element) -> None:
        line = el.sourceline
        counts: dict[str, int | None] = {}
        stated: dict[str, Decimal] = {}
        for c in el:
            if c.tag == T_CONTROLSUM:
                cur = c.get("currency") or ""
                value = _decimal(c.text)
                if cur in stated:
                    self.error(c.sourceline, "Trailer", None, "control_sum",
                               f"more than one ControlSum for {cur}")
                elif value is not None:
                    stated[cur] = value
            elif c.tag in _TRAILER_COUNTS:
                counts[_TRAILER_COUNTS[c.tag]] = _int(c.text)
        for label, actual in (("CustomerCount", self.n_customers),
                              ("EntryCount", self.n_entries), ("MatchCount", self.n_matches)):
            said = counts.get(label)
            if said is not None and said != actual:
                self.error(line, "Trailer", None, "trailer_count",
                           f"{label} says {said} but the file has {actual}")
        if self.n_entries == 0:
            self._zero_control_sum(line, stated)
            return
        for cur in sorted(self.sums.keys() | stated.keys()):
            want, said = self.sums.get(cur), stated.get(cur)
            if said is None:
                self.error(line, "Trailer", None, "control_sum",
                           f"no ControlSum for {cur} (its entries sum to {want})")
            elif want is None:
                self.error(line, "Trailer", None, "control_sum",
                           f"ControlSum for {cur} but no entry is in {cur}")
            elif said != want:
                self.error(line, "Trailer", None, "control_sum",
                           f"ControlSum {cur} says {said} but the entries sum to {want}")

    def _zero_control_sum(self, line: int | None, stated: dict[str, Decimal]) -> None:
        if len(stated) != 1 or next(iter(stated.values())) != 0:
            self.error(line, "Trailer", None, "control_sum",
                       "a file without entries has exactly one ControlSum, of 0.00")
        elif self.base_currency and self.base_currency not in stated:
            self.error(line, "Trailer", None, "control_sum",
                       f"a file without entries has its ControlSum in the base currency "
                       f"{self.base_currency}, not {next(iter(stated))}")


def _entry_by_tag(el: etree._Element) -> tuple[str | None, ...]:
    """(CustomerRef, DocumentNo, DocumentDate, DueDate, Amount, currency, KID, Text) texts,
    found by tag: for entries the XSD may have rejected."""
    cref = docno = docdate = due = atext = cur = kid = text = None
    for c in el:
        t = c.tag
        if t == T_AMOUNT:
            atext = c.text
            cur = c.get("currency")
        elif t == T_CREF:
            cref = c.text
        elif t == T_DUE:
            due = c.text
        elif t == T_KID:
            kid = c.text
        elif t == T_DOCNO:
            docno = c.text
        elif t == T_DOCDATE:
            docdate = c.text
        elif t == T_TEXT:
            text = c.text
    return cref, docno, docdate, due, atext, cur, kid, text


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def _decimal(text: str | None) -> Decimal | None:
    if text is None:
        return None
    try:
        d = Decimal(text)
    except InvalidOperation:
        return None
    return d if d.is_finite() else None


def _dt(text: str | None) -> datetime | None:
    try:
        d = datetime.fromisoformat(text.strip()) if text else None
    except ValueError:
        return None
    return d if d is not None and d.utcoffset() is not None else None


# ---------------------------------------------------------------- reading the file

def _prolog_problem(head: bytes) -> str | None:
    """Refuse a DOCTYPE (so any entity declaration) before lxml sees the file."""
    if head.startswith(b"\xef\xbb\xbf"):
        head = head[3:]
    elif head[:2] in (b"\xff\xfe", b"\xfe\xff") or b"\x00" in head[:4]:
        return "the file is not UTF-8"
    pos = 0
    while (m := _PROLOG_ITEM.match(head, pos)) and m.end() > pos:
        pos = m.end()
    rest = head[pos:pos + 9]
    if rest.upper() == b"<!DOCTYPE":
        return "the file has a DOCTYPE: no DTD or entity declarations are allowed"
    if not re.match(rb"<[A-Za-z_:]", rest):
        return "no root element where the file should start"
    return None


def _confirm_repeats(scan: _Scan, open_source: Callable[[], BinaryIO | str]) -> None:
    """Report Entry and Match ids that occur more than once in the file, and withdraw the
    duplicate_id errors of Customers whose ids only share a hash. The pass kept only hashes;
    when two are equal, the file is read again to compare the ids themselves."""
    scan.customers = scan.entries = scan.matches = []     # done with: free them
    repeated = {T_ENTRY: (scan.entry_repeats, _KEY), T_MATCH: (scan.match_repeats, -1)}
    customer_errors: dict[int, list[ContractError]] = {}  # hash -> its duplicate_id errors
    for h, err in scan.customer_repeats:
        customer_errors.setdefault(h, []).append(err)
    if not (scan.entry_repeats or scan.match_repeats or customer_errors):
        return
    customer_ids: dict[int, list[str]] = {}   # hash -> the ids seen with it, in file order
    seen: dict[tuple[str, str], int | None] = {}
    n = 0
    try:
        for _, el in _iterparse(open_source(), None):
            if el.tag == T_CUSTOMER and customer_errors \
                    and (h := hash(rid := el.get("id") or "")) in customer_errors:
                ids = customer_ids.setdefault(h, [])
                if ids and rid not in ids and len(ids) <= len(customer_errors[h]):
                    err = customer_errors[h][len(ids) - 1]   # a collision, not a repeat
                    errors = scan.result.errors
                    for j, e in enumerate(errors):
                        if e is err:
                            del errors[j]
                            break
                ids.append(rid)
            hashes, mask = repeated.get(el.tag, (None, 0))
            if hashes and (hash(rid := el.get("id") or "") & mask) in hashes:
                kind = _RECORD_KIND[el.tag]
                if (kind, rid) in seen:
                    scan.error(el.sourceline, kind, rid, "duplicate_id",
                               f"{kind} id appears more than once in the file (first at line "
                               f"{seen[kind, rid]})")
                else:
                    seen[kind, rid] = el.sourceline
            n += 1
            if n % _BATCH == 0:
                _drop_finished(el)
    except etree.XMLSyntaxError:
        pass      # the main pass reports it


def _iterparse(source: BinaryIO | str, schema: etree.XMLSchema | None) -> etree.iterparse:
    """Hardened: no network, no DTD, no entity expansion; comments and PIs dropped (so a
    valid record's children are exactly its elements, in XSD order)."""
    kw = {"schema": schema} if schema is not None else {}
    return etree.iterparse(
        source, events=("end",), tag=list(_RECORD_KIND), resolve_entities=False,
        no_network=True, load_dtd=False, dtd_validation=False, huge_tree=False,
        remove_comments=True, remove_pis=True, **kw)


def _drop_finished(el: etree._Element) -> None:
    """Free the records before ``el`` (never those after: the parser may have built them)."""
    parent = el.getparent()
    if parent is not None:
        del parent[:parent.index(el)]
    el.clear()


def _streaming_xsd_message(source: BinaryIO | str, schema: etree.XMLSchema) -> str | None:
    """None when the file is XSD-valid, else libxml2's first message (it has no line)."""
    n = 0
    try:
        for _, el in _iterparse(source, schema):
            n += 1
            if n % _BATCH == 0:
                _drop_finished(el)
    except etree.XMLSyntaxError as e:
        return _clean(str(e))
    return None


class _Joined:
    """The first bytes of a stream (already read) followed by the rest of it."""

    def __init__(self, head: bytes, rest: BinaryIO) -> None:
        self._head, self._rest = head, rest

    def read(self, n: int = -1) -> bytes:
        if not self._head:
            return self._rest.read(n)
        if n < 0:
            out, self._head = self._head + self._rest.read(), b""
            return out
        out, self._head = self._head[:n], self._head[n:]
        return out


class TransferChecker:
    """The XSD compiled once; ``check`` any number of files with it."""

    def __init__(self, xsd_path: Path, *, base_currency: str | None = None,
                 max_errors: int = MAX_ERRORS) -> None:
        self.xsd_path = Path(xsd_path)
        self.base_currency = base_currency
        self.max_errors = max_errors
        self._streaming, self._records = _schemas(self.xsd_path)

    def check(self, source: Path | bytes, name: str | None = None, *,
              known_customer: Callable[[str], bool] = lambda _: False,
              known_entry_type: Callable[[str], str | None] = lambda _: None,
              collect: bool = False, into: CheckResult | None = None) -> CheckResult:
        """Every contract error of the file (none: it may be sent). With ``collect`` the
        result also carries the file's content (for the receiver model); ``into`` is a result
        whose customers, entries and matches are anything with ``append`` (records then
        stream there, e.g. into the journal, instead of piling up). With errors, what went
        there is incomplete: drop it."""
        if isinstance(source, bytes):
            name = name or "transfer file"
            head = source[:_PROLOG_LIMIT]
            size = len(source)
            open_source: Callable[[], BinaryIO | str] = lambda: io.BytesIO(source)
        else:
            path = Path(source)
            name = name or path.name
            with path.open("rb") as f:
                head = f.read(_PROLOG_LIMIT)
                size = os.fstat(f.fileno()).st_size
            open_source = lambda: str(path)
        return self._check(head, open_source(), open_source, size, name, lambda: None,
                           known_customer, known_entry_type, collect or into is not None, into)

    def check_stream(self, stream: BinaryIO, path: Path, *, size: int, name: str | None = None,
                     known_customer: Callable[[str], bool] = lambda _: False,
                     known_entry_type: Callable[[str], str | None] = lambda _: None,
                     ) -> CheckResult:
        """Check the bytes of ``path`` read from ``stream`` while they are being written, so
        checking overlaps writing. ``size`` is the expected size
        (it only sizes the id tables). A second reading (the diagnosis of a failing file,
        confirming a repeated id) reads ``path`` itself, complete once the stream has ended;
        the stream is read to its end first (when it is a pipe, the writer never waits on
        this reader)."""
        path = Path(path)
        head = b""        # a stream may give fewer bytes than asked before its end
        while len(head) < _PROLOG_LIMIT and (more := stream.read(_PROLOG_LIMIT - len(head))):
            head += more

        def drain() -> None:
            while stream.read(1 << 20):
                pass
        return self._check(head, _Joined(head, stream), lambda: str(path), size, name or path.name,
                           drain, known_customer, known_entry_type, False)

    def _check(self, head: bytes, first: BinaryIO | str, open_source: Callable[[], BinaryIO | str],
               size: int, name: str, drain: Callable[[], None],
               known_customer: Callable[[str], bool],
               known_entry_type: Callable[[str], str | None], collect: bool,
               into: CheckResult | None = None) -> CheckResult:
        problem = _prolog_problem(head)
        if problem:
            drain()
            code = "doctype" if "DOCTYPE" in problem else "not_well_formed"
            return CheckResult([ContractError(1, None, problem, None, code, name)])

        def new_scan() -> _Scan:
            return _Scan(name, known_customer, known_entry_type, self.base_currency,
                         collect, self.max_errors, size)

        scan = new_scan()
        if into is not None:
            scan.result = into
        xsd_message: str | None = None
        try:
            try:
                scan.run(_iterparse(first, self._streaming), None)
            finally:
                drain()
            _confirm_repeats(scan, open_source)
            return scan.result
        except etree.XMLSyntaxError as streamed:
            xsd_message = _clean(str(streamed))
        except (_TooMany, IndexError, AttributeError, TypeError, InvalidOperation):
            pass   # too many errors, or positional reading met a record the XSD rejects
        return self._diagnose(new_scan(), open_source, xsd_message)

    def _diagnose(self, scan: _Scan, open_source: Callable[[], BinaryIO | str],
                  xsd_message: str | None) -> CheckResult:
        """The slow, thorough pass for a file that failed: no streaming validator, each
        record validated alone (so each XSD error gets its line and id), children read by
        tag, errors sorted by line."""
        errors = scan.result.errors
        try:
            scan.run(_iterparse(open_source(), None), self._records)
        except etree.XMLSyntaxError as broken:
            errors.append(ContractError(broken.lineno or None, None,
                                        f"not well-formed XML: {_clean(broken.msg)}", None,
                                        "not_well_formed", scan.name))
        except _TooMany:
            errors.append(ContractError(None, None, f"stopped after {len(errors)} errors",
                                        None, "too_many_errors", scan.name))
        else:
            try:
                _confirm_repeats(scan, open_source)
            except _TooMany:
                pass
            if not any(e.code == "xsd" for e in errors):
                # a document-level XSD error (order, wrappers, root): no single record has it
                if xsd_message is None:
                    xsd_message = _streaming_xsd_message(open_source(), self._streaming)
                if xsd_message is not None:
                    errors.append(ContractError(None, None, f"XSD: {xsd_message}", None, "xsd",
                                                scan.name))
        errors.sort(key=lambda e: e.line or 0)
        return scan.result


def check_transfer_file(path: Path, xsd_path: Path, *,
                        known_customer: Callable[[str], bool] = lambda _: False,
                        known_entry_type: Callable[[str], str | None] = lambda _: None,
                        ) -> list[ContractError]:
    """Every contract error of the file at ``path``; an empty list means it may be sent."""
    return TransferChecker(xsd_path).check(Path(path), known_customer=known_customer,
                                           known_entry_type=known_entry_type).errors


def assert_sendable(path: Path, xsd_path: Path, **kw: Callable) -> None:
    """Raise ContractViolation (carrying every error) unless the file may be sent."""
    errors = check_transfer_file(path, xsd_path, **kw)
    if errors:
        raise ContractViolation(errors)
