"""Facts: a ledger entry enriched with what the rules need, as a flat dict of plain values.

The field list below is the vocabulary of the rule files; `rules lint` refuses any other name
or value. Values are strings, booleans and integers only (what durable_rules compares well).
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from stdnum.no import orgnr

from reskontro.domain.amount import ore_text, parse_amount
from reskontro.domain import ENTRY_TYPES, MODES, to_ore
from reskontro.domain.kid import state as kid_state  # noqa: F401  (store keeps it per entry)


@dataclass(frozen=True)
class FieldSpec:
    name: str
    kind: str                      # enum | bool | number
    doc: str
    values: tuple = ()             # enum: the allowed values
    scale: int = 1                 # rule files write kroner; facts hold øre (exact integers)


DECISION_OR_NONE = ("none", "transfer", "wait", "exclude", "hold")

FIELDS: dict[str, FieldSpec] = {f.name: f for f in (
    FieldSpec("entry_type", "enum", "the entry's type", ENTRY_TYPES),
    FieldSpec("status", "enum", "invoice status (none for other types)", ("none", "draft", "invoiced")),
    FieldSpec("mode", "enum", "the client's mode (configuration creditor.mode)", MODES),
    FieldSpec("factoring", "bool", "invoice followed up in-house (its own flag, else the customer's default)"),
    FieldSpec("opt_out", "bool", "manual voucher opted out of the transfer (e.g. a write-off)"),
    FieldSpec("amount", "number", "the signed amount, in kroner (e.g. 1000.50)", scale=100),
    FieldSpec("currency", "enum", "ISO 4217 currency", ("NOK", "SEK", "DKK", "EUR", "USD", "GBP", "other")),
    FieldSpec("dunning_level", "number", "reminders the ERP itself has sent for this invoice"),
    FieldSpec("kid", "enum", "the KID: absent, valid (MOD10 or MOD11) or invalid", ("absent", "valid", "invalid")),
    FieldSpec("reverses_type", "enum", "for a reversal: the type of the entry it reverses", ("none",) + ENTRY_TYPES),
    FieldSpec("reverses_sent", "bool", "for a reversal: the reversed entry was already sent to Lowell"),
    FieldSpec("match_shape", "enum", "the shape of the entry's match group",
              ("none", "one_to_one", "one_to_many", "many_to_one", "many_to_many", "no_invoice")),
    FieldSpec("invoice_decision", "enum",
              "for entries other than invoices: the best decision among the invoices in its match "
              "(transfer > hold > wait > exclude); none when it is linked to no invoice", DECISION_OR_NONE),
    FieldSpec("customer_type", "enum", "private, business, or none when the ERP has no type",
              ("none", "private", "business")),
    FieldSpec("customer_address_complete", "bool", "address line, post code (4 digits in Norway), city and country present"),
    FieldSpec("customer_org_no", "enum", "the customer's org no: absent, valid (MOD11) or invalid",
              ("absent", "valid", "invalid")),
    FieldSpec("customer_company_name", "bool", "the name ends in a company form (AS, ASA, ANS, DA, ENK, SA)"),
    FieldSpec("reverses_corrected", "bool",
              "for a reversal: the reversed entry's match holds a payout of its amount (the correction is booked)"),
    FieldSpec("reversed", "bool", "a reversal in the ledger reverses this entry"),
    FieldSpec("sent", "bool", "Lowell has a version of this entry (delivered, or in flight in a file)"),
    FieldSpec("changed_after_sent", "bool",
              "what the transfer file carries of the entry changed after it was sent to Lowell"),
    FieldSpec("match_lost_member", "bool", "its match lost a member after the match was sent"),
    FieldSpec("split_with_excluded", "bool",
              "for entries other than invoices: its match also holds an invoice that is excluded "
              "while another goes to Lowell (the entry would settle both)"),
    FieldSpec("settled_before_service", "bool",
              "its match was settled (sums to 0.00) when the backlog was sent, and still is"),
    FieldSpec("bank_ref_conflict", "bool",
              "the ERP's entry for a bank payment disagrees with the one entry the ledger keeps for it "
              "(other content, or a second entry for the same payment)"),
)}

#: A healthy invoice, invoiced, in full-ledger mode: the base that rule examples vary.
DEFAULT_FACT: dict = {
    "entry_type": "invoice", "status": "invoiced", "mode": "full_ledger", "factoring": False,
    "opt_out": False, "amount": 100000, "currency": "NOK", "dunning_level": 0, "kid": "valid",
    "reverses_type": "none", "reverses_sent": False, "match_shape": "none",
    "invoice_decision": "none", "customer_type": "private", "customer_address_complete": True,
    "customer_org_no": "absent", "customer_company_name": False, "reverses_corrected": False,
    "reversed": False, "sent": False, "changed_after_sent": False, "match_lost_member": False,
    "split_with_excluded": False, "settled_before_service": False, "bank_ref_conflict": False,
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


def fact_for_people(fact: dict) -> dict:
    """A fact as output shows it: amounts in kroner text with two decimals ("1234.50"), not
    the øre the rules compare (rule files write kroner too)."""
    return {k: ore_text(v) if k in FIELDS and FIELDS[k].scale == 100 and isinstance(v, int)
            and not isinstance(v, bool) else v for k, v in fact.items()}


_COMPANY = re.compile(r"(?:^|[\s,.])(AS|ASA|ANS|DA|ENK|SA)\.?$", re.IGNORECASE)
_KNOWN_CURRENCIES = set(FIELDS["currency"].values)
@dataclass(frozen=True, slots=True)
class CustomerChecks:
    """What the rules need to know of a customer, computed once per customer."""
    customer_type: str
    customer_address_complete: bool
    customer_org_no: str
    customer_company_name: bool
    factoring_default: bool


def customer_checks(c: Mapping) -> CustomerChecks:
    """From a customers row (mapping with the schema's column names)."""
    org = c["org_no"]
    country = (c["country"] or "").strip()
    post = (c["post_code"] or "").strip()
    complete = bool((c["line1"] or "").strip() and post and (c["city"] or "").strip() and country
                    and (country != "NO" or re.fullmatch(r"[0-9]{4}", post)))
    return CustomerChecks(
        customer_type=c["type"] or "none",
        customer_address_complete=complete,
        customer_org_no="absent" if not org else ("valid" if orgnr.is_valid(org) else "invalid"),
        customer_company_name=bool(_COMPANY.search((c["name"] or "").strip())),
        factoring_default=bool(c["factoring_default"]),
    )


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
               settled_before_service: bool = False, bank_ref_conflict: bool = False) -> dict:
    """The fact for one entry row (mapping with the schema's column names)."""
    etype = e["type"]
    factoring = e["factoring"]
    currency = e["currency"]
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
    }
