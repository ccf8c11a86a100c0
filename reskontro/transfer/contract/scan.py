"""One pass over one file: the loop that hands each record to the rules of each concern.

One streaming pass with lxml ``iterparse`` (structure.py): the XSD is validated while
parsing and the rules XSD 1.0 cannot express are checked on each record as it ends; finished
records are then dropped, so memory grows only with the ids kept for the uniqueness and
reference checks (ids.py).

``_Scan`` holds the pass's state and is put together from one mixin per concern:
``ValueRules`` (values.py: Header, Customer), ``MatchRules`` (matches.py: Match),
``SumRules`` (sums.py: Trailer), ``IdRules`` (ids.py: the Entry table) and
``StructureRules`` (structure.py: per-record XSD diagnosis, DOCTYPE and encoding). Each
record costs one call, as it always did; an Entry (the hot path: a million per backlog file)
costs none: its rules run inline in ``run``, each block marked with the module whose rule it
is (ids.py: Entry @id, CustomerRef; values.py: DueDate, KID; sums.py: the control sums).
"""
from __future__ import annotations

from bisect import bisect_left
from decimal import Decimal
from typing import Callable

from lxml import etree

from reskontro.transfer.contract.ids import (_INVOICE, _KEY, _OTHER, IdRules, _bucket_bits,
                                             _buckets)
from reskontro.transfer.contract.matches import MatchRules
from reskontro.transfer.contract.records import (CheckResult, ContractError, EntryRecord,
                                                 _TooMany)
from reskontro.transfer.contract.structure import (_BATCH, T_CUSTOMER, T_ENTRY, T_HEADER,
                                                   T_KID, T_MATCH, StructureRules,
                                                   _decimal, _drop_finished, _entry_by_tag,
                                                   _Events)
from reskontro.transfer.contract.sums import ZERO, SumRules
from reskontro.transfer.contract.values import ValueRules, kid_is_valid, luhn_is_valid
from reskontro.transfer.render import EXACT


class _Scan(ValueRules, MatchRules, SumRules, IdRules, StructureRules):
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
        # ids.py: the id tables
        bits = _bucket_bits(size)
        self.shift = 64 - bits   # no mutate: speed (any shift keeps the index in range)
        self.customers = _buckets(bits)             # hash(id) of this file's customers
        self.customer_repeats: list[tuple[int, ContractError]] = []   # confirmed after the pass
        self.known_customers: set[str] = set()    # cache of known_customer(id) == True
        self.entries = _buckets(bits)               # (hash(id) & _KEY) | _INVOICE|_OTHER, +_MATCHED
        self.entries_sorted = False               # appended unsorted until the first Match
        self.entry_repeats: set[int] = set()      # hash(id) & _KEY of Entry ids seen twice
        self.foreign_matched: set[str] = set()    # earlier files' entries matched in this one
        self.matches = _buckets(bits)               # hash(id) of every Match
        self.match_repeats: set[int] = set()      # hashes of Match ids seen twice
        # sums.py: what the Trailer must say
        self.sums: dict[str, Decimal] = {}
        self.n_customers = self.n_entries = self.n_matches = 0

    def error(self, line: int | None, kind: str | None, ref: str | None, code: str,
              message: str, target: str | None = None) -> None:
        errors = self.result.errors
        errors.append(ContractError(line, ref, message, kind, code, self.name, target))
        if len(errors) >= self.max_errors:
            raise _TooMany

    def run(self, events: _Events, records: etree.XMLSchema | None) -> None:
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
                # ids.py: Entry @id unique in the file
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
                # values.py: DueDate for invoices only
                if etype == "invoice":
                    if due is None:
                        error(el.sourceline, "Entry", eid, "due_date",
                              "an invoice needs a DueDate")
                elif due is not None:
                    error(el.sourceline, "Entry", eid, "due_date",
                          f"DueDate is only for invoices, not for type {etype}")
                # values.py: KID check digit, MOD10 or MOD11
                if kid is not None and not (fast and kid[-1] != "-" and luhn(kid)) \
                        and not kid_is_valid(kid):
                    error(el.sourceline, "Entry", eid, "kid", f"KID {kid} fails MOD10 and MOD11")
                # ids.py: CustomerRef names a Customer of this file or an earlier one
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
                # sums.py: the control sum per currency
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
            if records is not None:
                self.record_xsd(el, tag, records)
            n += 1                   # no mutate: memory
            if n % _BATCH == 0:      # no mutate: memory
                _drop_finished(el)
        self.n_entries = n_entries
        if appending:
            self.sort_entries()     # finds the repeated ids
        self.document(events.root)
