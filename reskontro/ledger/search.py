"""Finding what a person has at hand: an entry by its id, document number or KID, a customer by
id or name, a bank payment by id, archive reference or KID (`reskontro find`, the web page's
search box, and `explain` of any of these identifiers).

Every lookup is a prefix, case-insensitive, and a range scan over an index (schema: lower(id),
lower(document_no), lower(name), kid, ...), never a scan of a table: each asks for at most
`limit` + 1 rows. SQLite's lower() folds ASCII letters only, so a prefix holding other letters
(Æ, Ø, Å) is also tried with those in the other case, as SQLite keeps them; every hit is then
checked in Python (casefold). Near misses ("did you mean") come from a bounded set of
neighbours in the same indexes (a few rows each side of the text and of its shorter prefixes
and swapped letters), ranked by difflib.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from itertools import product

from sqlalchemy import Connection, func, select

from reskontro.domain import from_ore
from reskontro.ledger import schema as s

TOP = "\U0010ffff"        # sorts after every character: [p, p + TOP) is "starts with p"
_VARIANT_LETTERS = 3      # non-ASCII letters tried in both cases (2**3 range scans at most)
_NEIGHBOURS = 8           # rows each side of an anchor, per index, for suggestions


@dataclass(frozen=True)
class EntryHit:
    id: str
    type: str
    customer_id: str
    customer_name: str
    document_no: str
    document_date: date
    kid: str | None
    amount: Decimal
    currency: str
    status: str | None
    match_id: str | None
    found_by: str             # id | erp_id | document_no | kid


@dataclass(frozen=True)
class CustomerHit:
    id: str
    name: str
    type: str | None
    city: str | None
    found_by: str             # id | name


@dataclass(frozen=True)
class PaymentHit:
    id: str
    archive_ref: str
    kid: str | None
    amount: Decimal
    currency: str
    date: date | None         # booking date (else payment date)
    payer: str | None
    status: str               # unposted | matched | unmatched | booked_in_erp | dismissed
    invoice_id: str | None
    found_by: str             # id | archive_ref | kid


@dataclass(frozen=True)
class Found:
    text: str
    entries: list[EntryHit]
    customers: list[CustomerHit]
    payments: list[PaymentHit]
    suggestions: list[str]    # near misses, best first (only when nothing was found)
    truncated: bool           # some kind had more than `limit` hits: narrow the text

    @property
    def empty(self) -> bool:
        return not (self.entries or self.customers or self.payments)


def _fold(text: str) -> str:
    return text.casefold()


def variants(text: str) -> list[str]:
    """The lower-cased prefix as lower(...) may hold it: ASCII folded, other letters in either
    case (the first few of them; the rest lower)."""
    low = text.lower()
    spots = [i for i, ch in enumerate(low) if not ch.isascii() and ch.upper() != ch][:_VARIANT_LETTERS]
    if not spots:
        return [low]
    out = []
    for cases in product((False, True), repeat=len(spots)):
        chars = list(low)
        for i, up in zip(spots, cases):
            if up:
                chars[i] = chars[i].upper()
        out.append("".join(chars))
    return out


def _rows(conn: Connection, key, shown, ident, text: str, limit: int) -> list[tuple[str, str]]:
    """(value, id) of the rows whose `key` starts with `text` (each of its variants when the key
    is lower(...)), in key order, at most limit + 1."""
    found: list[tuple[str, str]] = []
    for v in (variants(text) if key is not shown else [text]):
        q = select(shown, ident).where(key >= v, key < v + TOP).order_by(key).limit(limit + 1)
        found += [(x, i) for x, i in conn.execute(q) if x is not None and (x, i) not in found]
    return found[:limit + 1]


def _keys():
    e, c, b = s.entries, s.customers, s.bank_payments
    # (kind, found_by, the indexed key expression, the value shown, the row's id)
    return [("entry", "id", func.lower(e.c.id), e.c.id, e.c.id),
            ("entry", "document_no", func.lower(e.c.document_no), e.c.document_no, e.c.id),
            ("entry", "kid", e.c.kid, e.c.kid, e.c.id),
            ("customer", "id", func.lower(c.c.id), c.c.id, c.c.id),
            ("customer", "name", func.lower(c.c.name), c.c.name, c.c.id),
            ("payment", "id", b.c.id, b.c.id, b.c.id),
            ("payment", "archive_ref", b.c.archive_ref, b.c.archive_ref, b.c.id),
            ("payment", "kid", b.c.kid, b.c.kid, b.c.id)]


def _normal(found_by: str, key, text: str) -> str:
    """The text as the key holds it: lower-cased for lower(...); a bank payment id is BP + hex."""
    if found_by == "kid" or found_by == "archive_ref":
        return text
    if key is s.bank_payments.c.id:
        return "BP" + text[2:].lower() if text[:2].lower() == "bp" else text
    return text.lower()


def find(conn: Connection, text: str, limit: int = 20) -> Found:
    """Entries, customers and bank payments whose identifiers (or a customer's name) start with
    `text`, case-insensitive; exact matches first. `limit` per kind."""
    text = text.strip()
    if not text:
        return Found(text, [], [], [], [], False)
    ids: dict[str, dict[str, str]] = {"entry": {}, "customer": {}, "payment": {}}
    truncated = False
    for kind, found_by, key, shown, ident in _keys():
        got = [i for v, i in _rows(conn, key, shown, ident, _normal(found_by, key, text), limit)
               if _fold(v).startswith(_fold(text))]
        truncated |= len(got) > limit
        for i in got[:limit]:
            ids[kind].setdefault(i, found_by)
    alias = conn.execute(select(s.aliases.c.target_id).where(s.aliases.c.kind == "entry",
                                                             s.aliases.c.erp_id == text)).scalar()
    if alias is not None:
        ids["entry"] = {alias: "erp_id", **ids["entry"]}
    entries = _entries(conn, ids["entry"], text)
    customers = _customers(conn, ids["customer"], text)
    payments = _payments(conn, ids["payment"], text)
    truncated |= any(len(x) > limit for x in (entries, customers, payments))
    found = Found(text, entries[:limit], customers[:limit], payments[:limit], [], truncated)
    if found.empty:
        found = Found(text, [], [], [], suggest(conn, text), False)
    return found


def _exact_first(hits: list, text: str, fields) -> list:
    t = _fold(text)
    return sorted(hits, key=lambda h: (not any(_fold(getattr(h, f) or "") == t for f in fields), h.id))


def _entries(conn: Connection, by: dict[str, str], text: str) -> list[EntryHit]:
    if not by:
        return []
    e, c = s.entries, s.customers
    rows = conn.execute(select(e.c.id, e.c.type, e.c.customer_id, c.c.name, e.c.document_no, e.c.document_date,
                               e.c.kid, e.c.amount_ore, e.c.currency, e.c.status, e.c.match_id)
                        .join(c, c.c.id == e.c.customer_id).where(e.c.id.in_(list(by)))).all()
    hits = [EntryHit(r.id, r.type, r.customer_id, r.name, r.document_no, r.document_date, r.kid,
                     from_ore(r.amount_ore), r.currency, r.status, r.match_id, by[r.id]) for r in rows]
    hits = _exact_first(hits, text, ("id", "document_no", "kid"))
    return sorted(hits, key=lambda h: h.found_by != "erp_id")     # the alias asked for, first


def _customers(conn: Connection, by: dict[str, str], text: str) -> list[CustomerHit]:
    if not by:
        return []
    c = s.customers
    rows = conn.execute(select(c.c.id, c.c.name, c.c.type, c.c.city).where(c.c.id.in_(list(by)))).all()
    return _exact_first([CustomerHit(r.id, r.name, r.type, r.city, by[r.id]) for r in rows], text, ("id", "name"))


def _payments(conn: Connection, by: dict[str, str], text: str) -> list[PaymentHit]:
    if not by:
        return []
    b = s.bank_payments
    rows = conn.execute(select(b).where(b.c.id.in_(list(by)))).all()
    hits = [PaymentHit(r.id, r.archive_ref, r.kid, from_ore(r.amount_ore), r.currency,
                       r.booking_date or r.payment_date, r.payer_name, r.status, r.invoice_id, by[r.id])
            for r in rows]
    return _exact_first(hits, text, ("id", "archive_ref", "kid"))


# --- did you mean ---------------------------------------------------------------------------------

def anchors(text: str) -> list[str]:
    """Where near misses of `text` sit in an index's order: the text itself, its shorter
    prefixes (a wrong last letters), and the text with two neighbouring letters swapped, cut
    after the swap (a typo early on)."""
    out = [text] + [text[:k] for k in range(len(text) - 1, max(0, len(text) - 4), -1)]
    for i in range(min(len(text) - 1, 6)):
        out.append(text[:i] + text[i + 1] + text[i] + text[i + 2:i + 3])
    return [a for a in dict.fromkeys(out) if a]


def _could_be(found_by: str, key, text: str) -> bool:
    """Whether `text` could be a near miss of this kind of value at all (a KID is digits, a bank
    payment's id starts BP, a name has letters): fewer lookups for a suggestion."""
    if found_by == "kid":
        return text.isdigit()
    if key is s.bank_payments.c.id:
        return text[:2].lower() == "bp"
    if found_by == "name":
        return any(ch.isalpha() for ch in text)
    return True


def suggest(conn: Connection, text: str, n: int = 5) -> list[str]:
    """Identifiers and names close to `text` (difflib), from a bounded set of index neighbours:
    each side of the text, and after each anchor."""
    candidates: dict[str, str] = {}
    for _kind, found_by, key, shown, _ident in _keys():
        if not _could_be(found_by, key, text):
            continue
        norm = _normal(found_by, key, text)
        queries = [select(shown).where(key < norm).order_by(key.desc()).limit(_NEIGHBOURS)]
        queries += [select(shown).where(key >= a).order_by(key).limit(_NEIGHBOURS) for a in anchors(norm)]
        for q in queries:
            for v in conn.execute(q).scalars():
                if v:
                    candidates.setdefault(_fold(v), v)
    close = difflib.get_close_matches(_fold(text), list(candidates), n=n, cutoff=0.6)
    return [candidates[c] for c in close]
