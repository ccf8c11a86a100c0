"""ERP ledger exports (CSV or JSON Lines) into domain types.

JSON Lines: one object per line with ``"record": "customer" | "entry" | "match"``.
CSV: one kind of record per file, recognised by its header (see README, "Import format").
Every problem is reported as ``file:line: field: what is wrong``; nothing is returned from a
file that has one.
"""
from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from reskontro.domain.amount import AmountError, parse_amount
from reskontro.domain import (CUSTOMER_TYPES, ENTRY_TYPES, INVOICE_STATUSES, Address, Customer,
                              Entry, InputError, Match)

CUSTOMER_FIELDS = ("id", "name", "type", "org_no", "address1", "address2", "address3",
                   "post_code", "city", "country", "email", "phone", "factoring_default", "tags")
ENTRY_FIELDS = ("id", "customer_id", "type", "document_no", "document_date", "due_date", "amount",
                "currency", "kid", "status", "factoring", "opt_out", "reverses", "source",
                "dunning_level", "text", "bank_ref")
MATCH_CSV_FIELDS = ("match_id", "entry_id")
MAX_ERRORS = 25

_ID = re.compile(r"[^\s](.{0,33}[^\s])?")
# What the transfer file (XML 1.0) cannot carry: its Char production minus CR, which every
# XML parser reads as LF (the receiver would hold other text than we sent and journalled).
_NOT_XML = re.compile("[^\t\n\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_DUNNING = re.compile(r"[0-9]{1,3}")      # ASCII only: '²'.isdigit() is True, int('²') fails
_SHOWN = 60           # characters of a value quoted in a message (a value may be huge)
_TAG = re.compile(r"[^\s;,]{1,35}")   # one tag: a word (rules.facts.TAG)
_MAX_TAGS = 50
_TRUE = {"true", "1", "yes", "y", "ja", "j"}
_FALSE = {"false", "0", "no", "n", "nei", ""}


@dataclass
class LedgerBatch:
    """What one file holds, with the line each record came from (for later cross-checks)."""
    customers: list[Customer] = field(default_factory=list)
    entries: list[Entry] = field(default_factory=list)
    matches: list[Match] = field(default_factory=list)
    lines: dict[tuple[str, str], int] = field(default_factory=dict)   # (kind, id) -> line


def _show(v: object) -> str:
    """A value as a message quotes it: repr (control characters visible), cut short."""
    text = repr(v)
    return text if len(text) <= _SHOWN else text[:_SHOWN] + "…"


def _not_xml(value: str) -> str | None:
    """Why `value` cannot go into the transfer file, or None when it can."""
    m = _NOT_XML.search(value)
    if m is None:
        return None
    ch = m.group()
    code = ord(ch)
    if ch == "\r":
        what = "a carriage return (XML reads it as a line feed, so the receiver would get other text)"
    elif code < 0x20:
        what = "a control character"
    elif 0xD800 <= code <= 0xDFFF:
        what = "a lone surrogate (broken UTF-16 in the export)"
    else:
        what = "a noncharacter"
    return (f"has U+{code:04X} at character {m.start() + 1}, {what}, which the transfer file "
            "(XML 1.0) cannot carry; fix it in the ERP")


class _DuplicateKey(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _object(pairs: list[tuple[str, object]]) -> dict:
    """JSON objects without repeated keys: json.loads would keep the last one silently."""
    out: dict = {}
    for k, v in pairs:
        if k in out:
            raise _DuplicateKey(k)
        out[k] = v
    return out


class _Row:
    """One record being read; collects errors instead of stopping at the first."""

    def __init__(self, where: str, data: dict, errors: list[str]):
        self.where, self.data, self.errors = where, data, errors
        self.failed: set[str] = set()     # one message per field: the first thing wrong

    def missing(self, key: str) -> bool:
        """No value, and none refused (a refused value is not also reported as missing)."""
        return key not in self.failed

    def fail(self, key: str, why: str) -> None:
        self.failed.add(key)
        if not key.isprintable():        # an unknown key from the file: never print it raw
            key = _show(key)
        self.errors.append(f"{self.where}: {key}: {why}")

    def raw(self, key: str) -> str | None:
        v = self.data.get(key)
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, (str, int)):
            # JSON numbers for amounts would go through float: refuse them, ask for strings.
            self.fail(key, f"must be a string, not {type(v).__name__} ({_show(v)})")
            return None
        v = str(v)
        # before the strip: str.strip() would silently drop e.g. U+001F at the ends
        if (why := _not_xml(v)) is not None:
            self.fail(key, why)
            return None
        v = v.strip()
        return v or None

    def text(self, key: str, *, required: bool = False, max_len: int = 200) -> str | None:
        v = self.raw(key)
        if v is None:
            if required and self.missing(key):
                self.fail(key, "is required")
            return None
        if len(v) > max_len:
            self.fail(key, f"longer than {max_len} characters")
        return v

    def ident(self, key: str, *, required: bool = True) -> str | None:
        v = self.text(key, required=required, max_len=35)
        if v is not None and self.missing(key) and not _ID.fullmatch(v):
            self.fail(key, f"{_show(v)} must be 1-35 characters without leading/trailing blanks")
        return v

    def choice(self, key: str, options: tuple[str, ...], *, required: bool = True) -> str | None:
        v = self.raw(key)
        if v is None:
            if required and self.missing(key):
                self.fail(key, f"is required (one of {', '.join(options)})")
            return None
        if v not in options:
            self.fail(key, f"{_show(v)} is not one of {', '.join(options)}")
            return None
        return v

    def day(self, key: str, *, required: bool = False) -> date | None:
        v = self.raw(key)
        if v is None:
            if required and self.missing(key):
                self.fail(key, "is required (YYYY-MM-DD)")
            return None
        try:
            return date.fromisoformat(v)
        except ValueError:
            self.fail(key, f"{_show(v)} is not a date (YYYY-MM-DD)")
            return None

    def flag(self, key: str) -> bool | None:
        v = self.data.get(key)
        if isinstance(v, bool):
            return v
        if v is None or (isinstance(v, str) and not v.strip()):
            return None
        s = str(v).strip().lower()
        if s in _TRUE:
            return True
        if s in _FALSE:
            return False
        self.fail(key, f"{_show(v)} is not true/false")
        return None

    def code(self, key: str, letters: int, default: str, what: str) -> str:
        """An upper-case ASCII code (country, currency). Checked before upper(): 'ß'.upper()
        is 'SS', a valid-looking country."""
        v = self.raw(key)
        if v is None:
            return default
        if not re.fullmatch(rf"[A-Za-z]{{{letters}}}", v):
            self.fail(key, f"{_show(v)} is not an {what} code ({letters} letters A-Z)")
            return default
        return v.upper()

    def words(self, key: str) -> tuple[str, ...]:
        """Tags: a JSON list of words, or text of words separated by blanks or ';' (CSV).
        Lower case, each once, sorted (they are compared without case)."""
        v = self.data.get(key)
        if v is None:
            return ()
        if isinstance(v, list):
            if not all(isinstance(w, str) for w in v):
                self.fail(key, f"must be a list of words (text), not {_show(v)}")
                return ()
            items = v
        elif isinstance(v, str):
            items = re.split(r"[\s;]+", v)
        else:
            self.fail(key, f"must be a list of words or text, not {type(v).__name__} ({_show(v)})")
            return ()
        words = set()
        for w in items:
            if (why := _not_xml(w)) is not None:
                self.fail(key, why)
                return ()
            w = w.strip().lower()
            if not w:
                continue
            if not _TAG.fullmatch(w):
                self.fail(key, f"{_show(w)} is not a tag (one word of 1-35 characters, without blanks, ';' or ',')")
                return ()
            words.add(w)
        if len(words) > _MAX_TAGS:
            self.fail(key, f"{len(words)} tags; at most {_MAX_TAGS}")
            return ()
        return tuple(sorted(words))

    def unknown(self, known: tuple[str, ...]) -> None:
        for k in self.data:
            if k not in known and k != "record":
                self.fail(k, f"unknown field (known: {', '.join(known)})")


def _customer(r: _Row) -> Customer | None:
    r.unknown(CUSTOMER_FIELDS)
    cid = r.ident("id")
    name = r.text("name", required=True, max_len=100)
    ctype = r.choice("type", CUSTOMER_TYPES, required=False)   # missing type: held by the rules
    org_no = r.raw("org_no")
    if org_no is not None:
        org_no = org_no.replace(" ", "")
    lines = tuple(x for x in (r.text(f"address{i}", max_len=70) for i in (1, 2, 3)) if x)
    country = r.code("country", 2, "NO", "ISO 3166 alpha-2")
    addr = Address(lines, r.text("post_code", max_len=10) or "", r.text("city", max_len=35) or "", country)
    c = Customer(id=cid or "", name=name or "", type=ctype, address=addr, org_no=org_no,
                 email=r.text("email"), phone=r.text("phone", max_len=40),
                 factoring_default=bool(r.flag("factoring_default")), tags=r.words("tags"))
    return c


def _entry(r: _Row) -> Entry | None:
    r.unknown(ENTRY_FIELDS)
    eid = r.ident("id")
    cust = r.ident("customer_id")
    etype = r.choice("type", ENTRY_TYPES)
    doc = r.ident("document_no")
    ddate = r.day("document_date", required=True)
    due = r.day("due_date")
    amount = None
    raw_amount = r.raw("amount")
    if raw_amount is None:
        if r.missing("amount"):
            r.fail("amount", "is required")
    else:
        try:
            amount = parse_amount(raw_amount)     # the one reader of amounts (README)
        except AmountError as exc:
            r.fail("amount", str(exc))
    currency = r.code("currency", 3, "NOK", "ISO 4217")
    kid = r.raw("kid")
    if kid is not None and not re.fullmatch(r"[0-9]{1,24}[0-9-]", kid):
        r.fail("kid", f"{_show(kid)} must be 2-25 digits (the last may be '-')")
    status = r.choice("status", INVOICE_STATUSES, required=etype == "invoice")
    if etype and etype != "invoice" and status is not None:
        r.fail("status", f"only invoices have a status, not a {etype}")
    if etype == "invoice" and due is None and r.missing("due_date"):
        r.fail("due_date", "is required for invoices")
    factoring = r.flag("factoring")
    if factoring is not None and etype != "invoice":
        r.fail("factoring", "only invoices carry a factoring choice")
    opt_out = bool(r.flag("opt_out"))
    if opt_out and etype != "manual_voucher":
        r.fail("opt_out", "only manual vouchers can be opted out")
    reverses = r.ident("reverses", required=etype == "reversal")
    if reverses and etype != "reversal":
        r.fail("reverses", "only reversals name the entry they reverse")
    dunning = r.raw("dunning_level") or "0"
    if not _DUNNING.fullmatch(dunning):
        r.fail("dunning_level", f"{_show(dunning)} is not a whole number from 0 to 999 (digits 0-9)")
    bank_ref = r.text("bank_ref", max_len=120)    # the bank's archive reference of this payment
    if not (eid and cust and etype and doc and ddate and amount is not None):
        return None
    return Entry(id=eid, customer_id=cust, type=etype, document_no=doc, document_date=ddate,
                 amount=amount, currency=currency, due_date=due, kid=kid, status=status,
                 factoring=factoring, opt_out=opt_out, reverses=reverses, source=r.raw("source"),
                 dunning_level=int(dunning) if _DUNNING.fullmatch(dunning) else 0, text=r.text("text"),
                 bank_ref=bank_ref)


def _check_errors(path: Path, errors: list[str]) -> None:
    if errors:
        more = f"\n… and {len(errors) - MAX_ERRORS} more" if len(errors) > MAX_ERRORS else ""
        raise InputError(f"{path.name}: {len(errors)} problem(s), nothing imported:\n"
                         + "\n".join(errors[:MAX_ERRORS]) + more)


def read_ledger_file(path: Path) -> LedgerBatch:
    """Read one export; raise InputError listing every bad row (file, line, field)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(f"{path.name}: not UTF-8 text (byte {exc.start}); export as UTF-8") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror}") from None
    if path.suffix.lower() in (".jsonl", ".ndjson", ".json"):
        return _read_jsonl(path, text)
    if path.suffix.lower() == ".csv":
        return _read_csv(path, text)
    raise InputError(f"{path.name}: unknown file type {path.suffix!r}; use .csv or .jsonl")


def _add(batch: LedgerBatch, kind: str, obj, line: int, where: str, errors: list[str]) -> None:
    key = (kind, obj.id)
    if key in batch.lines:
        errors.append(f"{where}: id: {kind} {obj.id!r} already on line {batch.lines[key]}")
        return
    batch.lines[key] = line
    {"customer": batch.customers, "entry": batch.entries, "match": batch.matches}[kind].append(obj)


def _read_jsonl(path: Path, text: str) -> LedgerBatch:
    batch, errors = LedgerBatch(), []
    # lines end at "\n" only (JSON Lines): str.splitlines() would also cut at U+2028, U+0085,
    # \x1c... inside a JSON string, and the line numbers would no longer be an editor's
    for n, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        where = f"{path.name}:{n}"
        try:
            # a JSON fraction stays a float (refused by _Row.raw); integers are read exactly
            data = json.loads(line, parse_int=str, object_pairs_hook=_object)
        except json.JSONDecodeError as exc:
            errors.append(f"{where}: not valid JSON: {exc.msg} (column {exc.colno})")
            continue
        except _DuplicateKey as exc:
            errors.append(f"{where}: {exc.key if exc.key.isprintable() else _show(exc.key)}: "
                          "given twice in the object (which one is meant?)")
            continue
        except RecursionError:
            errors.append(f"{where}: not valid JSON here: nested too deeply")
            continue
        if not isinstance(data, dict):
            errors.append(f"{where}: each line must be a JSON object")
            continue
        kind = data.get("record")
        r = _Row(where, data, errors)
        if kind == "customer":
            obj = _customer(r)
        elif kind == "entry":
            obj = _entry(r)
        elif kind == "match":
            r.unknown(("id", "entries"))
            mid = r.ident("id")
            members = data.get("entries")
            if not isinstance(members, list) or len(members) < 2 or not all(isinstance(x, str) for x in members):
                r.fail("entries", "must be a list of two or more entry ids")
                continue
            bad = next((x for x in members if _not_xml(x) or not _ID.fullmatch(x)), None)
            if bad is not None:
                r.fail("entries", f"{_show(bad)} is not an entry id (1-35 characters)")
                continue
            if len(set(members)) != len(members):
                r.fail("entries", "lists an entry twice")
            obj = Match(mid, tuple(members)) if mid else None
        else:
            errors.append(f"{where}: record: {_show(kind)} must be customer, entry or match")
            continue
        if obj is not None:
            _add(batch, kind, obj, n, where, errors)
    _cross_check(path, batch, errors)
    _check_errors(path, errors)
    return batch


def _read_csv(path: Path, text: str) -> LedgerBatch:
    batch, errors = LedgerBatch(), []
    # newline="": the csv module finds the rows itself (a quoted value may hold a line break;
    # str.splitlines() would drop it and also cut rows at U+2028, U+0085, \x1c...)
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        header = tuple(h.strip() for h in (reader.fieldnames or ()))
    except csv.Error as exc:
        raise InputError(f"{path.name}:{reader.line_num}: not valid CSV: {exc}") from None
    hs = set(header)
    if {"match_id", "entry_id"} <= hs:
        kind = "match"
        known = MATCH_CSV_FIELDS
    elif {"customer_id", "document_no"} <= hs:
        kind, known = "entry", ENTRY_FIELDS
    elif {"name", "post_code"} <= hs:
        kind, known = "customer", CUSTOMER_FIELDS
    else:
        raise InputError(f"{path.name}:1: header {','.join(header) or '(empty)'} is none of: customers "
                         f"({','.join(CUSTOMER_FIELDS)}); entries ({','.join(ENTRY_FIELDS)}); "
                         f"matches ({','.join(MATCH_CSV_FIELDS)})")
    for h in header:
        if h not in known:
            errors.append(f"{path.name}:1: {h if h.isprintable() else _show(h)}: unknown column "
                          f"(known: {', '.join(known)})")
    groups: dict[str, list[str]] = {}
    group_line: dict[str, int] = {}
    reader.fieldnames = list(header)
    rows = iter(reader)
    while True:
        try:
            row = next(rows)
        except StopIteration:
            break
        except csv.Error as exc:          # e.g. a value longer than the csv module's limit
            errors.append(f"{path.name}:{reader.line_num}: not valid CSV: {exc}")
            break
        n = reader.line_num
        where = f"{path.name}:{n}"
        if None in row:
            errors.append(f"{where}: more values than columns")
            continue
        # a line break inside a quoted value arrives as written; CRLF reads as LF (as in XML)
        r = _Row(where, {k: v.replace("\r\n", "\n") if isinstance(v, str) else v
                         for k, v in row.items() if k in known}, errors)
        if kind == "customer":
            obj = _customer(r)
        elif kind == "entry":
            obj = _entry(r)
        else:
            mid, eid = r.ident("match_id"), r.ident("entry_id")
            if mid and eid:
                if eid in groups.setdefault(mid, []):
                    r.fail("entry_id", f"{eid!r} listed twice in match {mid!r}")
                groups[mid].append(eid)
                group_line.setdefault(mid, n)
            continue
        if obj is not None:
            _add(batch, kind, obj, n, where, errors)
    for mid, members in groups.items():
        if len(members) < 2:
            errors.append(f"{path.name}:{group_line[mid]}: match_id: match {mid!r} has one entry; a match needs two or more")
        _add(batch, "match", Match(mid, tuple(members)), group_line[mid], f"{path.name}:{group_line[mid]}", errors)
    _cross_check(path, batch, errors)
    _check_errors(path, errors)
    return batch


def _cross_check(path: Path, batch: LedgerBatch, errors: list[str]) -> None:
    """Rules within the file: an entry joins at most one match; a bank payment is one entry."""
    refs: dict[str, str] = {}
    for e in batch.entries:
        if e.bank_ref is not None:
            if e.bank_ref in refs:
                errors.append(f"{path.name}:{batch.lines[('entry', e.id)]}: bank_ref: entry "
                              f"{refs[e.bank_ref]!r} has {e.bank_ref!r} too; one bank payment is one entry")
            refs.setdefault(e.bank_ref, e.id)
    seen: dict[str, str] = {}
    for m in batch.matches:
        for eid in m.entry_ids:
            if eid in seen and seen[eid] != m.id:
                errors.append(f"{path.name}:{batch.lines[('match', m.id)]}: entries: {eid!r} is already "
                              f"in match {seen[eid]!r}; an entry belongs to at most one match")
            seen[eid] = m.id
