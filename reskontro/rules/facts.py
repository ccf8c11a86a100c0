"""Facts: a ledger entry enriched with what the rules need, as a flat dict of plain values.

The field list below is the vocabulary of the rule files; `rules lint` refuses any other name
or value. Values are strings, booleans and integers (what durable_rules compares well), and for
`tags` a sorted tuple of words (the engine asks durable_rules one truth value per word a rule
tests, never the list itself).

Kinds: enum (one of `values`), bool, number (an integer in fact units: øre for amounts),
text (any string: an id, a source; compared for equality only), date (a day, held as its
ordinal; rule files write YYYY-MM-DD) and words (the customer's tags: tested with has,
has_not, has_any, has_none).
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import NamedTuple
from datetime import date
from functools import lru_cache

from stdnum.no import orgnr

from reskontro.domain.amount import ore_text, parse_amount
from reskontro.domain import ENTRY_TYPES, MODES, to_ore
from reskontro.domain.kid import state as kid_state  # noqa: F401  (store keeps it per entry)


@dataclass(frozen=True)
class FieldSpec:
    name: str
    kind: str                      # enum | bool | number | text | date | words
    doc: str
    values: tuple = ()             # enum: the allowed values
    scale: int = 1                 # rule files write kroner; facts hold øre (exact integers)
    example: str = ""              # a condition as a rule file writes it (`rules fields`)
    # values that differ from entry to entry (amounts, dates, ids): the engine's cache tells
    # facts apart by where the value lies among the rules' constants, not by the value
    many: bool = False


DECISION_OR_NONE = ("none", "transfer", "wait", "exclude", "hold")

FIELDS: dict[str, FieldSpec] = {f.name: f for f in (
    FieldSpec("entry_type", "enum", "the entry's type", ENTRY_TYPES,
              example="entry_type: [payment, credit_note]"),
    FieldSpec("status", "enum", "invoice status (none for other types)", ("none", "draft", "invoiced"),
              example="status: draft"),
    FieldSpec("mode", "enum", "the client's mode (configuration creditor.mode)", MODES,
              example="mode: factoring"),
    FieldSpec("factoring", "bool", "invoice followed up in-house (its own flag, else the customer's default)",
              example="factoring: true"),
    FieldSpec("opt_out", "bool", "manual voucher opted out of the transfer (e.g. a write-off)",
              example="opt_out: true"),
    FieldSpec("amount", "number", "the signed amount, in kroner (e.g. 1000.50)", scale=100,
              example="amount: {gt: 1000000}", many=True),
    FieldSpec("currency", "enum", "ISO 4217 currency", ("NOK", "SEK", "DKK", "EUR", "USD", "GBP", "other"),
              example="currency: {not: NOK}"),
    FieldSpec("dunning_level", "number", "reminders the ERP itself has sent for this invoice",
              example="dunning_level: {gt: 0}"),
    FieldSpec("kid", "enum", "the KID: absent, valid (MOD10 or MOD11) or invalid", ("absent", "valid", "invalid"),
              example="kid: invalid"),
    FieldSpec("reverses_type", "enum", "for a reversal: the type of the entry it reverses", ("none",) + ENTRY_TYPES,
              example="reverses_type: payment"),
    FieldSpec("reverses_sent", "bool", "for a reversal: the reversed entry was already sent to Lowell",
              example="reverses_sent: true"),
    FieldSpec("match_shape", "enum", "the shape of the entry's match group",
              ("none", "one_to_one", "one_to_many", "many_to_one", "many_to_many", "no_invoice"),
              example="match_shape: many_to_many"),
    FieldSpec("invoice_decision", "enum",
              "for entries other than invoices: the best decision among the invoices in its match "
              "(transfer > hold > wait > exclude); none when it is linked to no invoice", DECISION_OR_NONE,
              example="invoice_decision: {in: [hold, wait]}"),
    FieldSpec("customer_type", "enum", "private, business, or none when the ERP has no type",
              ("none", "private", "business"),
              example="customer_type: none"),
    FieldSpec("customer_address_complete", "bool", "address line, post code (4 digits in Norway), city and country present",
              example="customer_address_complete: false"),
    FieldSpec("customer_org_no", "enum", "the customer's org no: absent, valid (MOD11) or invalid",
              ("absent", "valid", "invalid"),
              example="customer_org_no: invalid"),
    FieldSpec("customer_company_name", "bool", "the name ends in a company form (AS, ASA, ANS, DA, ENK, SA)",
              example="customer_company_name: true"),
    FieldSpec("reverses_corrected", "bool",
              "for a reversal: the reversed entry's match holds a payout of its amount (the correction is booked)",
              example="reverses_corrected: true"),
    FieldSpec("reversed", "bool", "a reversal in the ledger reverses this entry",
              example="reversed: true"),
    FieldSpec("sent", "bool", "Lowell has a version of this entry (delivered, or in flight in a file)",
              example="sent: false"),
    FieldSpec("changed_after_sent", "bool",
              "what the transfer file carries of the entry changed after it was sent to Lowell",
              example="changed_after_sent: true"),
    FieldSpec("match_lost_member", "bool", "its match lost a member after the match was sent",
              example="match_lost_member: true"),
    FieldSpec("split_with_excluded", "bool",
              "for entries other than invoices: its match also holds an invoice that is excluded "
              "while another goes to Lowell (the entry would settle both)",
              example="split_with_excluded: true"),
    FieldSpec("settled_before_service", "bool",
              "its match was settled (sums to 0.00) when the backlog was sent, and still is",
              example="settled_before_service: true"),
    FieldSpec("bank_ref_conflict", "bool",
              "the ERP's entry for a bank payment disagrees with the one entry the ledger keeps for it "
              "(other content, or a second entry for the same payment)",
              example="bank_ref_conflict: true"),
    FieldSpec("customer_id", "text", "the customer's id in the ERP (1-35 characters)",
              example="customer_id: [K1001, K1002]", many=True),
    FieldSpec("tags", "words", "the customer's tags (import field tags), compared without case",
              example="tags: {has: key-account}"),
    FieldSpec("days_past_due", "number",
              "days since the due date, on the run's date in the configured time zone "
              "(negative: not yet due; 0 without a due date)", example="days_past_due: {ge: 30}", many=True),
    FieldSpec("document_date", "date", "the document's date (YYYY-MM-DD)",
              example="document_date: {lt: 2025-01-01}", many=True),
    FieldSpec("source", "text", "where the entry comes from, as the ERP says (e.g. Lowell); none when not given",
              example="source: Lowell", many=True),
)}


#: Fields whose value changes with the run's date, not only with the ledger: a rule file that
#: reads one has every entry decided again each night (see transfer.export).
DATED_FIELDS = ("days_past_due",)
#: The customer data checks (holds for these are the data-quality report's business).
CUSTOMER_CHECK_FIELDS = ("customer_type", "customer_address_complete", "customer_org_no",
                         "customer_company_name")
#: A tag: one word, without blanks, ';' or ','; compared in lower case.
TAG = re.compile(r"[^\s;,]{1,35}")
#: Day 0 of DEFAULT_FACT's dates, and where examples and `rules fields` start from.
_DEFAULT_DAY = date(2026, 9, 1).toordinal()

#: A healthy invoice, invoiced, in full-ledger mode: the base that rule examples vary.
DEFAULT_FACT: dict = {
    "entry_type": "invoice", "status": "invoiced", "mode": "full_ledger", "factoring": False,
    "opt_out": False, "amount": 100000, "currency": "NOK", "dunning_level": 0, "kid": "valid",
    "reverses_type": "none", "reverses_sent": False, "match_shape": "none",
    "invoice_decision": "none", "customer_type": "private", "customer_address_complete": True,
    "customer_org_no": "absent", "customer_company_name": False, "reverses_corrected": False,
    "reversed": False, "sent": False, "changed_after_sent": False, "match_lost_member": False,
    "split_with_excluded": False, "settled_before_service": False, "bank_ref_conflict": False,
    "customer_id": "K1000", "tags": (), "days_past_due": 0, "document_date": _DEFAULT_DAY, "source": "none",
}

_WHOLE = re.compile(r"[+-]?[0-9]+")


def number_value(spec: FieldSpec, raw: object) -> int:
    """A number a rule file or rule example writes for `spec`, in fact units; ValueError says
    what is wrong. Amounts (kroner in, øre out) go through the one amount reader, from the
    text as written in the file when the YAML loader kept it (`1_000` is YAML's 1000, but
    refused here as for every amount the product takes in)."""
    if isinstance(raw, bool) or not isinstance(raw, (int, float, str)):
        raise ValueError(f"{raw!r} must be a number")
    text = getattr(raw, "text", None)
    if text is None:
        text = raw if isinstance(raw, str) else repr(raw)
    if spec.scale == 100:
        return to_ore(parse_amount(text))
    if spec.scale != 1:       # no such field today; fail loudly rather than guess a reader
        raise ValueError(f"{spec.name}: no reader for scale {spec.scale}")
    if _WHOLE.fullmatch(text.strip(" ")):
        return int(text)
    raise ValueError(f"{text!r} must be a whole number (digits 0-9)")


def literal(spec: FieldSpec, raw: object):
    """A value a rule file or rule example writes for `spec` (not enum or bool), in fact
    units; ValueError says what is wrong. number: see number_value; text: a string (an
    unquoted number is taken as written: `customer_id: 010023` is "010023"); date: YYYY-MM-DD,
    as its ordinal; words: one tag, lower case."""
    if spec.kind == "number":
        return number_value(spec, raw)
    if spec.kind == "date":
        if isinstance(raw, date) and not hasattr(raw, "hour"):
            return raw.toordinal()
        if isinstance(raw, str):
            try:
                return date.fromisoformat(raw.strip()).toordinal()
            except ValueError:
                pass
        raise ValueError(f"{raw!r} is not a date (YYYY-MM-DD)")
    text = getattr(raw, "text", None)          # an unquoted YAML number, as written
    if text is None:
        if isinstance(raw, bool) or not isinstance(raw, str):
            raise ValueError(f"{raw!r} must be text (put it in quotes)")
        text = raw
    if spec.kind == "words":
        word = text.strip().lower()
        if not TAG.fullmatch(word):
            raise ValueError(f"{text!r} is not a tag (one word of 1-35 characters, without blanks, ';' or ',')")
        return word
    if not text or len(text) > 35 or text != text.strip() or not text.isprintable():
        raise ValueError(f"{text!r} must be 1-35 characters without blanks at the ends")
    return text


def example_value(spec: FieldSpec, raw: object):
    """A value a rule example gives a field, in fact units (tags: a list of words, or words
    separated by blanks or ';'); ValueError says what is wrong."""
    if spec.kind == "bool":
        if not isinstance(raw, bool):
            raise ValueError(f"{raw!r} must be true or false")
        return raw
    if spec.kind == "enum":
        if raw not in spec.values:
            raise ValueError(f"{raw!r} is not a known value")
        return raw
    if spec.kind == "words":
        items = raw if isinstance(raw, list) else re.split(r"[\s;]+", raw.strip()) if isinstance(raw, str) else None
        if items is None:
            raise ValueError(f"{raw!r} must be a list of tags")
        return tuple(sorted({literal(spec, w) for w in items if w != ""}))
    return literal(spec, raw)


def fact_for_people(fact: dict) -> dict:
    """A fact as output shows it: amounts in kroner text with two decimals ("1234.50"), not
    the øre the rules compare (rule files write kroner too); dates as YYYY-MM-DD; tags as a
    list."""
    out = {}
    for k, v in fact.items():
        spec = FIELDS.get(k)
        if spec is not None and spec.scale == 100 and isinstance(v, int) and not isinstance(v, bool):
            v = ore_text(v)
        elif spec is not None and spec.kind == "date" and isinstance(v, int):
            v = date.fromordinal(v).isoformat()
        elif spec is not None and spec.kind == "words":
            v = list(v)
        out[k] = v
    return out


@lru_cache(maxsize=8192)
def _day(text: str) -> int:
    return date.fromisoformat(text).toordinal()


def day_number(value) -> int | None:
    """A stored date (text on SQLite read raw, a date on PostgreSQL) as its ordinal."""
    if value is None:
        return None
    return _day(value) if isinstance(value, str) else value.toordinal()


@lru_cache(maxsize=4096)
def stored_tags(text: str | None) -> tuple[str, ...]:
    """The customers.tags column (words separated by blanks) as the fact holds them."""
    return tuple(sorted(set(text.split()))) if text else ()


_COMPANY = re.compile(r"(?:^|[\s,.])(AS|ASA|ANS|DA|ENK|SA)\.?$", re.IGNORECASE)
_KNOWN_CURRENCIES = set(FIELDS["currency"].values)


_NINE_DIGITS = re.compile(r"[0-9]{9}")
_POST_CODE = re.compile(r"[0-9]{4}")
_ORG_WEIGHTS = (3, 2, 7, 6, 5, 4, 3, 2, 1)


def _org_no_valid(org: str) -> bool:
    """stdnum's orgnr.is_valid, the common case (nine digits 0-9) done here: MOD11 with
    weights 3 2 7 6 5 4 3 2 1 sums to 0 (a few µs less per customer, a million times)."""
    if _NINE_DIGITS.fullmatch(org):
        return sum(w * (ord(ch) - 48) for w, ch in zip(_ORG_WEIGHTS, org)) % 11 == 0
    return orgnr.is_valid(org)


class CustomerChecks(NamedTuple):
    """What the rules need to know of a customer, computed once per customer."""
    customer_type: str
    customer_address_complete: bool
    customer_org_no: str
    customer_company_name: bool
    factoring_default: bool
    tags: tuple[str, ...] = ()


def _checks(ctype, name, org, line1, post, city, country, factoring_default, tags) -> CustomerChecks:
    country = (country or "").strip()
    post = (post or "").strip()
    complete = bool((line1 or "").strip() and post and (city or "").strip() and country
                    and (country != "NO" or _POST_CODE.fullmatch(post)))
    return CustomerChecks(ctype or "none", complete,
                          "absent" if not org else ("valid" if _org_no_valid(org) else "invalid"),
                          bool(_COMPANY.search((name or "").strip())), bool(factoring_default),
                          stored_tags(tags))


def customer_checks(c: Mapping) -> CustomerChecks:
    """From a customers row (mapping with the schema's column names)."""
    return _checks(c["type"], c["name"], c["org_no"], c["line1"], c["post_code"], c["city"], c["country"],
                   c["factoring_default"], c.get("tags"))


def joined_customer_checks(m: Mapping) -> CustomerChecks:
    """From an entries row joined with its customer's columns as c_<name> (rules.decide)."""
    return _checks(m["c_type"], m["c_name"], m["c_org_no"], m["c_line1"], m["c_post_code"], m["c_city"],
                   m["c_country"], m["c_factoring_default"], m["c_tags"])


def match_shape(types: Iterable[str]) -> str:
    types = list(types)
    if not types:
        return "none"
    inv = sum(1 for t in types if t == "invoice")
    other = len(types) - inv
    if inv == 0:
        return "no_invoice"
    if inv > 1 and other > 1:
        return "many_to_many"
    if inv > 1:
        return "many_to_one"
    return "one_to_many" if other > 1 else "one_to_one"


def entry_fact(e: Mapping, checks: CustomerChecks, mode: str, *, shape: str = "none",
               invoice_decision: str = "none", reverses_type: str = "none",
               reverses_sent: bool = False, reverses_corrected: bool = False,
               reversed_: bool = False, sent: bool = False, changed_after_sent: bool = False,
               match_lost_member: bool = False, split_with_excluded: bool = False,
               settled_before_service: bool = False, bank_ref_conflict: bool = False,
               today: int = _DEFAULT_DAY) -> dict:
    """The fact for one entry row (mapping with the schema's column names); `today`: the
    run's date (an ordinal) in the configured time zone."""
    etype = e["type"]
    factoring = e["factoring"]
    currency = e["currency"]
    due = e["due_date"]
    return {
        "entry_type": etype,
        "status": e["status"] or "none",
        "mode": mode,
        "factoring": bool(checks.factoring_default if factoring is None else factoring),
        "opt_out": bool(e["opt_out"]),
        "amount": e["amount_ore"],
        "currency": currency if currency in _KNOWN_CURRENCIES else "other",
        "dunning_level": e["dunning_level"] or 0,
        "kid": e["kid_check"],
        "reverses_type": reverses_type,
        "reverses_sent": reverses_sent,
        "match_shape": shape,
        "invoice_decision": invoice_decision,
        "customer_type": checks.customer_type,
        "customer_address_complete": checks.customer_address_complete,
        "customer_org_no": checks.customer_org_no,
        "customer_company_name": checks.customer_company_name,
        "reverses_corrected": reverses_corrected,
        "reversed": reversed_,
        "sent": sent,
        "changed_after_sent": changed_after_sent,
        "match_lost_member": match_lost_member,
        "split_with_excluded": split_with_excluded,
        "settled_before_service": settled_before_service,
        "bank_ref_conflict": bank_ref_conflict,
        "customer_id": e["customer_id"],
        "tags": checks.tags,
        "days_past_due": 0 if due is None else today - day_number(due),
        "document_date": day_number(e["document_date"]),
        "source": e["source"] or "none",
    }
