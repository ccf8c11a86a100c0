"""ERP ledger exports (CSV or JSON Lines) into plain rows, streaming.

JSON Lines: one object per line with ``"record": "customer" | "entry" | "match"``.
CSV: one kind of record per file, recognised by its header (see README, "Import format").
Every problem is reported as ``file:line: field: what is wrong``, into a `Problems` (which
keeps the first MAX_SHOWN and counts them all); the reader goes on after a bad row, so that a
file's every bad row is reported at once.

`read_records` reads a file one line at a time (memory flat in its size) and yields plain
tuples (`CUSTOMER_ROW`, `ENTRY_ROW` order), which the ledger's importer stages and checks in
SQL. A record that is plainly good takes the fast path (`_fast_entry`, `_fast_customer`): a
straight run of checks building the tuple, with no per-field objects; anything else (any
doubt at all) goes through `_Row`, which says exactly what is wrong. Both accept exactly the
same records and give the same row (the tests compare them). `read_ledger_file` is the
in-memory reader for a small file: domain objects and the file's own cross-checks.
"""
from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import BinaryIO

from reskontro.domain.amount import AmountError, parse_amount
from reskontro.domain import (CUSTOMER_TYPES, ENTRY_TYPES, INVOICE_STATUSES, Address, Customer,
                              Entry, InputError, Match, from_ore, to_ore)

CUSTOMER_FIELDS = ("id", "name", "type", "org_no", "address1", "address2", "address3",
                   "post_code", "city", "country", "email", "phone", "factoring_default", "tags")
ENTRY_FIELDS = ("id", "customer_id", "type", "document_no", "document_date", "due_date", "amount",
                "currency", "kid", "status", "factoring", "opt_out", "reverses", "source",
                "dunning_level", "text", "bank_ref")
MATCH_CSV_FIELDS = ("match_id", "entry_id")
MAX_SHOWN = 1000      # problems listed in the message; all are counted
#: the plain rows `read_records` yields (the store's columns; amounts in øre, dates as ISO text
#: YYYY-MM-DD)
CUSTOMER_ROW = ("id", "name", "type", "org_no", "line1", "line2", "line3", "post_code", "city", "country",
                "email", "phone", "factoring_default", "tags")   # tags: words blank-separated, or None
ENTRY_ROW = ("id", "customer_id", "type", "document_no", "document_date", "due_date", "amount_ore",
             "currency", "kid", "status", "factoring", "opt_out", "reverses", "source", "dunning_level",
             "text", "bank_ref")

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


class Problems:
    """Every problem of one file, as `file:line: field: what is wrong`: all counted, the first
    MAX_SHOWN kept (a file of a million bad rows must not fill the memory or the screen)."""

    def __init__(self, name: str, limit: int = MAX_SHOWN) -> None:
        self.name, self.limit = name, limit
        self.count = 0
        self.shown: list[str] = []

    def append(self, text: str) -> None:
        self.count += 1
        if len(self.shown) < self.limit:
            self.shown.append(text)

    def __len__(self) -> int:
        return self.count

    def extend(self, shown: list[str], count: int) -> None:
        """Another reader's problems (`count` of them, `shown` the first): after these."""
        for text in shown[:max(0, self.limit - len(self.shown))]:
            self.shown.append(text)
        self.count += count

    def message(self) -> str:
        more = f"\n… and {self.count - len(self.shown)} more" if self.count > len(self.shown) else ""
        n = self.count
        shown = sorted(self.shown, key=_line_of)            # in line order, whichever check found it
        return (f"{self.name}: {n} problem{'' if n == 1 else 's'}, nothing imported:\n"
                + "\n".join(shown) + more)

    def check(self) -> None:
        """InputError listing the problems, if there are any."""
        if self.count:
            raise InputError(self.message())


class _DuplicateKey(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _object(pairs: list[tuple[str, object]]) -> dict:
    """JSON objects without repeated keys: json.loads would keep the last one silently."""
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        for k, _v in pairs:
            if k in seen:
                raise _DuplicateKey(k)
            seen.add(k)
    return out


# a JSON fraction stays a float (refused by _Row.raw); integers are read exactly
_DECODER = json.JSONDecoder(parse_int=str, object_pairs_hook=_object)
# The same without the hook (a quarter cheaper), for a line that cannot repeat a key: one with
# no more colons than the keys read. Every key written is followed by a colon, so a key given
# twice (at any depth) makes more colons than keys read. (Its C scanner is called directly.)
_QUICK = json.JSONDecoder(parse_int=str)


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
    return c if cid else None    # no id (reported): no "already on line" for a second one


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


# --- rows -------------------------------------------------------------------------------------
def customer_to_row(c: Customer) -> tuple:
    lines = list(c.address.lines) + [None, None, None]
    return (c.id, c.name, c.type, c.org_no, lines[0], lines[1], lines[2], c.address.post_code, c.address.city,
            c.address.country, c.email, c.phone, c.factoring_default, " ".join(c.tags) or None)


def customer_from_row(r: tuple) -> Customer:
    return Customer(id=r[0], name=r[1], type=r[2], org_no=r[3],
                    address=Address(tuple(x for x in r[4:7] if x), r[7], r[8], r[9]),
                    email=r[10], phone=r[11], factoring_default=r[12], tags=tuple(r[13].split()) if r[13] else ())


def entry_to_row(e: Entry) -> tuple:
    return (e.id, e.customer_id, e.type, e.document_no, e.document_date.isoformat(),
            e.due_date.isoformat() if e.due_date is not None else None, to_ore(e.amount), e.currency, e.kid,
            e.status, e.factoring, bool(e.opt_out), e.reverses, e.source, e.dunning_level, e.text, e.bank_ref)


def entry_from_row(r: tuple) -> Entry:
    return Entry(id=r[0], customer_id=r[1], type=r[2], document_no=r[3], document_date=date.fromisoformat(r[4]),
                 amount=from_ore(r[6]), currency=r[7], due_date=date.fromisoformat(r[5]) if r[5] else None,
                 kid=r[8], status=r[9], factoring=r[10], opt_out=r[11], reverses=r[12], source=r[13],
                 dunning_level=r[14], text=r[15], bank_ref=r[16])


# --- the fast path: a plainly good record, straight into its row ------------------------------
class _Slow(Exception):
    """Not plainly good: `_Row` reads the record (and says what is wrong, if anything is)."""


_SLOW = _Slow()
_ENTRY_KEYS = frozenset(ENTRY_FIELDS) | {"record"}
_CUSTOMER_KEYS = frozenset(CUSTOMER_FIELDS) | {"record"}
_MATCH_KEYS = frozenset(("record", "id", "entries"))
_ENTRY_TYPES = frozenset(ENTRY_TYPES)
_CUSTOMER_TYPES = frozenset(CUSTOMER_TYPES)
_STATUSES = frozenset(INVOICE_STATUSES)
# a subset of what parse_amount takes (no '+', at most 9 digits): the rest goes the slow way
_PLAIN_AMOUNT = re.compile(r"(-?)([0-9]{1,9})(?:[.,]([0-9]{1,2}))?")
_KID = re.compile(r"[0-9]{1,24}[0-9-]")


def _xml_ok(d: dict) -> bool:
    """No value holds a character the transfer file cannot carry (one search for them all).
    Printable text, the usual case, never holds one (str.isprintable is false for every
    control character, surrogate and noncharacter); any other text goes through the regex."""
    try:
        text = "".join(d.values())
    except TypeError:                  # a flag given as JSON true/false, or a value to refuse
        text = "".join([v for v in d.values() if v.__class__ is str])
    return text.isprintable() or _NOT_XML.search(text) is None


def _plain_line(line: str) -> bool:
    """What `_xml_ok` says of every value read from this JSON line, for the whole line at the
    cost of three searches: without a backslash, each string is as written in the line (no
    escape); JSON refuses a raw control character in a string, a line read as UTF-8 holds no
    surrogate, so only the noncharacters U+FFFE and U+FFFF are left to look for. False says
    nothing (the values are then looked at one by one)."""
    return "\\" not in line and "\ufffe" not in line and "\uffff" not in line


def _opt(v) -> str | None:
    """What _Row.raw makes of a value: stripped text, None for nothing (or _Slow)."""
    if v is None:
        return None
    if v.__class__ is not str:
        raise _SLOW
    return v.strip() or None


def _ident(v, required: bool = True) -> str | None:
    if v is None:
        if required:
            raise _SLOW
        return None
    if v.__class__ is not str:
        raise _SLOW
    v = v.strip()
    if not v and not required:
        return None
    # _ID.fullmatch: 1-35 characters, no blank at either end (strip() and the regex's \s are the
    # same Unicode whitespace), no line break inside
    if not v or len(v) > 35 or "\n" in v:
        raise _SLOW
    return v


def _text(v, max_len: int) -> str | None:
    if v is None:
        return None
    if v.__class__ is not str:
        raise _SLOW
    v = v.strip()
    if len(v) > max_len:
        raise _SLOW
    return v or None


def _flag(v) -> bool | None:
    if v is None or v.__class__ is bool:
        return v
    if v.__class__ is not str:
        raise _SLOW
    s = v.strip().lower()
    if not s:
        return None
    if s in _TRUE:
        return True
    if s in _FALSE:
        return False
    raise _SLOW


def _iso_day(v: str) -> str:
    """The ISO text of a date the slow path's date.fromisoformat takes (or _Slow)."""
    try:
        d = date.fromisoformat(v)
    except ValueError:
        raise _SLOW from None
    # YYYY-MM-DD is already what isoformat() gives (a week date has no '-' at [7])
    return v if len(v) == 10 and v[4] == "-" and v[7] == "-" else d.isoformat()


_DAYS: dict[str, str] = {}      # a date as given -> its ISO text (a ledger has few distinct days)


def _day(v: str) -> str:
    """_iso_day of the stripped text, remembered (or _Slow)."""
    day = _DAYS.get(v)
    if day is None:
        day = _iso_day(v.strip())
        if len(_DAYS) >= 20_000:
            _DAYS.clear()
        _DAYS[v] = day
    return day


def _fast_entry(d: dict, plain: bool = False) -> tuple | None:
    """The ENTRY_ROW of a plainly good entry record, else None (then `_entry` reads it).
    `plain`: the line it came from passed `_plain_line` (no value need be looked at for
    characters the transfer file cannot carry).

    Straight-line on purpose (a million records: every call counts); the checks are those of
    `_entry`, in any order, each only ever saying "not plainly good"."""
    if not d.keys() <= _ENTRY_KEYS or not (plain or _xml_ok(d)):
        return None
    g = d.get
    eid, cust, etype, doc, ddate, amount = g("id"), g("customer_id"), g("type"), g("document_no"), \
        g("document_date"), g("amount")
    if (eid.__class__ is not str or cust.__class__ is not str or etype.__class__ is not str
            or doc.__class__ is not str or ddate.__class__ is not str or amount.__class__ is not str):
        return None
    eid, cust, etype, doc = eid.strip(), cust.strip(), etype.strip(), doc.strip()
    # (the ids as _ID.fullmatch takes them: see _ident)
    if (etype not in _ENTRY_TYPES or not 0 < len(eid) <= 35 or not 0 < len(cust) <= 35
            or not 0 < len(doc) <= 35 or "\n" in eid or "\n" in cust or "\n" in doc):
        return None
    m = _PLAIN_AMOUNT.fullmatch(amount.strip())
    if m is None:
        return None
    sign, whole, cents = m.groups()
    if cents is None:
        ore = int(whole) * 100
    elif len(cents) == 2:
        ore = int(whole + cents)
    else:
        ore = int(whole + cents) * 10
    if sign:
        ore = -ore
    try:
        ddate = _day(ddate)
        due, kid, status, currency, text, source, reverses, bank_ref, dunning = (
            g("due_date"), g("kid"), g("status"), g("currency"), g("text"), g("source"), g("reverses"),
            g("bank_ref"), g("dunning_level"))
        if due is not None:
            if due.__class__ is not str:
                return None
            due = _day(due) if due.strip() else None
        invoice = etype == "invoice"
        if status is not None:
            status = _opt(status)
        if (status not in _STATUSES or due is None) if invoice else status is not None:
            return None
        if currency is None:
            currency = "NOK"
        else:
            currency = _opt(currency)
            if currency is None:
                currency = "NOK"
            elif len(currency) == 3 and currency.isascii() and currency.isalpha():
                currency = currency.upper()
            else:
                return None
        if kid is not None:
            kid = _opt(kid)
            if kid is not None and _KID.fullmatch(kid) is None:
                return None
        factoring = g("factoring")
        if factoring is not None:
            factoring = _flag(factoring)
            if factoring is not None and not invoice:
                return None
        opt_out = g("opt_out")
        if opt_out is not None:
            opt_out = bool(_flag(opt_out))
            if opt_out and etype != "manual_voucher":
                return None
        else:
            opt_out = False
        if reverses is not None or etype == "reversal":
            reverses = _ident(reverses, required=etype == "reversal")
            if reverses is not None and etype != "reversal":
                return None
        if dunning is None:
            dunning = 0
        else:
            dunning = _opt(dunning) or "0"
            if _DUNNING.fullmatch(dunning) is None:
                return None
            dunning = int(dunning)
        return (eid, cust, etype, doc, ddate, due, ore, currency, kid, status, factoring, opt_out, reverses,
                source if source is None else _opt(source), dunning,
                text if text is None else _text(text, 200), bank_ref if bank_ref is None else _text(bank_ref, 120))
    except _Slow:
        return None


def _fast_tags(v) -> str | None | bool:
    """A customer's tags as stored (words, lower case, each once, sorted, blank-separated; None
    for none) when they are a plain list or text of tags, else False (the exact path reads them)."""
    if v is None:
        return None
    if v.__class__ is list:
        if not all(w.__class__ is str for w in v):
            return False
        items = v
    elif v.__class__ is str:
        items = re.split(r"[\s;]+", v)
    else:
        return False
    words = {w.strip().lower() for w in items} - {""}
    if len(words) > _MAX_TAGS or not all(_TAG.fullmatch(w) and w.isprintable() for w in words):
        return False
    return " ".join(sorted(words)) or None


def _fast_customer(d: dict, plain: bool = False) -> tuple | None:
    """The CUSTOMER_ROW of a plainly good customer record, else None (then `_customer` reads it).
    `plain` as for `_fast_entry`."""
    if not d.keys() <= _CUSTOMER_KEYS or not (plain or _xml_ok(d)):
        return None
    tags = _fast_tags(d.get("tags"))
    if tags is False:
        return None                       # (anything but plain words: `_Row.words` says what is wrong)
    g = d.get
    try:
        cid = _ident(g("id"))
        name = _text(g("name"), 100)
        ctype = g("type")
        if ctype is not None:
            ctype = _opt(ctype)
            if ctype is not None and ctype not in _CUSTOMER_TYPES:
                return None
        if name is None:
            return None
        org_no = g("org_no")
        if org_no is not None:
            org_no = _opt(org_no)
            if org_no is not None:
                org_no = org_no.replace(" ", "")
        l1, l2, l3 = g("address1"), g("address2"), g("address3")
        if l1 is not None:
            l1 = _text(l1, 70)
        if l2 is not None or l3 is not None:     # the lines given, compacted (as _customer does)
            lines = [x for x in (l1, _text(l2, 70), _text(l3, 70)) if x]
            lines += [None] * (3 - len(lines))
            l1, l2, l3 = lines
        country = g("country")
        if country is None:
            country = "NO"
        else:
            country = _opt(country)
            if country is None:
                country = "NO"
            elif len(country) == 2 and country.isascii() and country.isalpha():
                country = country.upper()
            else:
                return None
        post, city, email, phone, fd = g("post_code"), g("city"), g("email"), g("phone"), g("factoring_default")
        return (cid, name, ctype, org_no, l1, l2, l3, "" if post is None else _text(post, 10) or "",
                "" if city is None else _text(city, 35) or "", country,
                email if email is None else _text(email, 200), phone if phone is None else _text(phone, 40),
                fd if fd.__class__ is bool else bool(_flag(fd)), tags)
    except _Slow:
        return None


def _fast_match(d: dict, plain: bool = False) -> tuple[str, tuple[str, ...]] | None:
    if not d.keys() <= _MATCH_KEYS:
        return None
    members, raw_id = d.get("entries"), d.get("id")
    try:
        mid = _ident(raw_id)
    except _Slow:
        return None
    if members.__class__ is not list or len(members) < 2:
        return None
    for x in members:
        # _ID.fullmatch (see _ident) of an id not stripped
        if x.__class__ is not str or not 0 < len(x) <= 35 or "\n" in x or x != x.strip():
            return None
    # (the id as given: strip() drops e.g. U+001F at the ends, which the exact path refuses)
    if (not plain and _NOT_XML.search(raw_id + "".join(members))) or len(set(members)) != len(members):
        return None
    return mid, tuple(members)


# --- reading a file -----------------------------------------------------------------------------
def read_records(path: Path, problems: Problems, *, start: int = 0, stop: int | None = None,
                 first_line: int = 1) -> Iterator[tuple[str, int, tuple]]:
    """The records of one export as (kind, line, row), one line at a time: ("customer", n,
    CUSTOMER_ROW), ("entry", n, ENTRY_ROW), ("match", n, (id, members)); a CSV of matches gives
    its rows as ("member", n, (match_id, entry_id)) and the reader groups them. Every bad row
    goes to `problems` (its good rows are still yielded: the caller refuses the file); a file
    that cannot be read at all raises InputError.

    A JSON Lines file may be read in parts: the lines from byte `start` (the start of line
    `first_line`) to the first line ending at or after byte `stop`."""
    if path.suffix.lower() in (".jsonl", ".ndjson", ".json"):
        reader = _read_jsonl
    elif path.suffix.lower() == ".csv":
        if start or stop is not None:
            raise ValueError("a CSV file is read whole (a quoted value may hold a line break)")
        reader = _read_csv
    else:
        raise InputError(f"{path.name}: unknown file type {path.suffix!r}; use .csv or .jsonl")
    try:
        f = path.open("rb")
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror}") from None
    with f:
        yield from reader(path, _lines(path, f, start, stop), problems, first_line)


def split_point(path: Path) -> int | None:
    """Where a JSON Lines file can be cut in two (the start of the line after its middle byte),
    or None (not JSON Lines, too small to be worth it)."""
    if path.suffix.lower() not in (".jsonl", ".ndjson", ".json"):
        return None
    with path.open("rb") as f:
        size = f.seek(0, 2)
        f.seek(size // 2)
        f.readline()
        mid = f.tell()
    return mid if 0 < mid < size else None


def lines_before(path: Path, offset: int) -> int:
    """How many lines end before byte `offset` (the number of the line there, less one)."""
    n = 0
    with path.open("rb") as f:
        left = offset
        while left > 0:
            chunk = f.read(min(left, 1 << 20))
            if not chunk:
                break
            n += chunk.count(b"\n")
            left -= len(chunk)
    return n


def _lines(path: Path, f: BinaryIO, start: int, stop: int | None) -> Iterator[str]:
    """The file's lines, each ending at "\n" (and holding it), decoded as UTF-8 (a BOM at the
    start dropped). A byte that is not UTF-8 refuses the file, naming its offset."""
    offset = start
    if start:
        f.seek(start)
    try:
        for raw in f:
            if stop is not None and offset >= stop:
                return
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise InputError(f"{path.name}: not UTF-8 text (byte {offset + exc.start}); "
                                 "export as UTF-8") from None
            if offset == 0 and line.startswith("\ufeff"):
                line = line[1:]
            offset += len(raw)
            yield line
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror}") from None


def _read_jsonl(path: Path, lines: Iterator[str], errors: Problems,
                first_line: int) -> Iterator[tuple[str, int, tuple]]:
    name = path.name
    decode, scan = _DECODER.decode, _QUICK.scan_once
    # lines end at "\n" only (JSON Lines): str.splitlines() would also cut at U+2028, U+0085,
    # \x1c... inside a JSON string, and the line numbers would no longer be an editor's
    for n, line in enumerate(lines, first_line):
        # The usual line, the quick way: an object from its first character to the line feed
        # (what decode() takes, without its two regex passes for whitespace), with no more
        # colons than keys (see _QUICK). Anything else is read again below, exactly.
        data = None
        if line[:1] == "{":
            try:
                data, end = scan(line, 0)
            except (StopIteration, ValueError, RecursionError):
                data = None
            else:
                if (data.__class__ is not dict or line.count(":") != len(data)
                        or line[end:].strip(" \t\n\r")):
                    data = None
        if data is None:
            if not line or line.isspace():
                continue
            try:
                if line.startswith("\ufeff"):      # as json.loads says it (only the file's first is dropped)
                    raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", line, 0)
                data = decode(line)
            except json.JSONDecodeError as exc:
                errors.append(f"{name}:{n}: not valid JSON: {exc.msg} (column {exc.colno})")
                continue
            except _DuplicateKey as exc:
                errors.append(f"{name}:{n}: {exc.key if exc.key.isprintable() else _show(exc.key)}: "
                              "given twice in the object (which one is meant?)")
                continue
            except RecursionError:
                errors.append(f"{name}:{n}: not valid JSON here: nested too deeply")
                continue
            if data.__class__ is not dict:
                errors.append(f"{name}:{n}: each line must be a JSON object")
                continue
        kind = data.get("record")
        plain = _plain_line(line)
        if kind == "entry":
            row = _fast_entry(data, plain)
            if row is None:
                e = _entry(_Row(f"{name}:{n}", data, errors))
                row = e and entry_to_row(e)
        elif kind == "customer":
            row = _fast_customer(data, plain)
            if row is None:
                c = _customer(_Row(f"{name}:{n}", data, errors))
                row = c and customer_to_row(c)
        elif kind == "match":
            row = _fast_match(data, plain) or _slow_match(_Row(f"{name}:{n}", data, errors))
        else:
            errors.append(f"{name}:{n}: record: {_show(kind)} must be customer, entry or match")
            continue
        if row:
            yield kind, n, row


def _slow_match(r: _Row) -> tuple[str, tuple[str, ...]] | None:
    r.unknown(("id", "entries"))
    mid = r.ident("id")
    members = r.data.get("entries")
    if not isinstance(members, list) or len(members) < 2 or not all(isinstance(x, str) for x in members):
        r.fail("entries", "must be a list of two or more entry ids")
        return None
    bad = next((x for x in members if _not_xml(x) or not _ID.fullmatch(x)), None)
    if bad is not None:
        r.fail("entries", f"{_show(bad)} is not an entry id (1-35 characters)")
        return None
    if len(set(members)) != len(members):
        r.fail("entries", "lists an entry twice")
    return (mid, tuple(members)) if mid else None


_LONE_CR = re.compile(r"(?<=\r)(?!\n)")


def _csv_lines(lines: Iterator[str]) -> Iterator[str]:
    """Lines as the csv module wants them (what io.StringIO(newline="") gives): cut after
    "\n", "\r\n" or a lone "\r", and nowhere else (not at U+2028, U+0085, \x1c...)."""
    for line in lines:
        if "\r" in line:
            yield from (x for x in _LONE_CR.split(line) if x)
        else:
            yield line


def _read_csv(path: Path, lines: Iterator[str], errors: Problems,
              first_line: int) -> Iterator[tuple[str, int, tuple]]:
    name = path.name
    # newline semantics of _csv_lines: the csv module finds the rows itself (a quoted value may
    # hold a line break)
    reader = csv.DictReader(_csv_lines(lines))
    try:
        header = tuple(h.strip() for h in (reader.fieldnames or ()))
    except csv.Error as exc:
        raise InputError(f"{name}:{reader.reader.line_num}: not valid CSV: {exc}") from None
    hs = set(header)
    if {"match_id", "entry_id"} <= hs:
        kind = "match"
        known = MATCH_CSV_FIELDS
    elif {"customer_id", "document_no"} <= hs:
        kind, known = "entry", ENTRY_FIELDS
    elif {"name", "post_code"} <= hs:
        kind, known = "customer", CUSTOMER_FIELDS
    else:
        raise InputError(f"{name}:1: header {','.join(header) or '(empty)'} is none of: customers "
                         f"({','.join(CUSTOMER_FIELDS)}); entries ({','.join(ENTRY_FIELDS)}); "
                         f"matches ({','.join(MATCH_CSV_FIELDS)})")
    for h in header:
        if h not in known:
            errors.append(f"{name}:1: {h if h.isprintable() else _show(h)}: unknown column "
                          f"(known: {', '.join(known)})")
    reader.fieldnames = list(header)
    known_set = frozenset(known)
    rows = iter(reader)
    while True:
        try:
            row = next(rows)
        except StopIteration:
            break
        except csv.Error as exc:          # e.g. a value longer than the csv module's limit
            # reader.reader's count: DictReader's own line_num is only set after a good row
            errors.append(f"{name}:{reader.reader.line_num}: not valid CSV: {exc}")
            break
        n = reader.line_num
        if None in row:
            errors.append(f"{name}:{n}: more values than columns")
            continue
        # a line break inside a quoted value arrives as written; CRLF reads as LF (as in XML)
        data = {k: v.replace("\r\n", "\n") if isinstance(v, str) else v for k, v in row.items() if k in known_set}
        if kind == "entry":
            out = _fast_entry(data)
            if out is None:
                e = _entry(_Row(f"{name}:{n}", data, errors))
                out = e and entry_to_row(e)
        elif kind == "customer":
            out = _fast_customer(data)
            if out is None:
                c = _customer(_Row(f"{name}:{n}", data, errors))
                out = c and customer_to_row(c)
        else:
            r = _Row(f"{name}:{n}", data, errors)
            mid, eid = r.ident("match_id"), r.ident("entry_id")
            if mid and eid:
                yield "member", n, (mid, eid)
            continue
        if out:
            yield kind, n, out


def read_ledger_file(path: Path) -> LedgerBatch:
    """Read one (small) export into memory; raise InputError listing every bad row (file, line,
    field). The importer streams instead (`read_records`) and checks the same in SQL."""
    errors = Problems(path.name)
    batch = LedgerBatch()
    groups: dict[str, list[str]] = {}
    group_line: dict[str, int] = {}
    for kind, n, row in read_records(path, errors):
        where = f"{path.name}:{n}"
        if kind == "member":
            mid, eid = row
            if eid in groups.setdefault(mid, []):
                errors.append(f"{where}: entry_id: {eid!r} listed twice in match {mid!r}")
            groups[mid].append(eid)
            group_line.setdefault(mid, n)
            continue
        obj = (customer_from_row(row) if kind == "customer" else entry_from_row(row) if kind == "entry"
               else Match(*row))
        _add(batch, kind, obj, n, where, errors)
    for mid, members in groups.items():
        if len(members) < 2:
            errors.append(f"{path.name}:{group_line[mid]}: match_id: match {mid!r} has one entry; a match needs two or more")
        _add(batch, "match", Match(mid, tuple(members)), group_line[mid], f"{path.name}:{group_line[mid]}", errors)
    _cross_check(path, batch, errors)
    errors.check()
    return batch


def _add(batch: LedgerBatch, kind: str, obj, line: int, where: str, errors) -> None:
    key = (kind, obj.id)
    if key in batch.lines:
        errors.append(f"{where}: id: {kind} {obj.id!r} already on line {batch.lines[key]}")
        return
    batch.lines[key] = line
    {"customer": batch.customers, "entry": batch.entries, "match": batch.matches}[kind].append(obj)


def _cross_check(path: Path, batch: LedgerBatch, errors) -> None:
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


def _line_of(problem: str) -> int:
    """The line a `file:line: ...` problem names (0 when it names none)."""
    parts = problem.split(":", 2)
    return int(parts[1]) if len(parts) > 2 and parts[1].isdigit() else 0
