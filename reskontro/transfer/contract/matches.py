"""Match groups: their members and their shape, within one file.

Spec rules enforced ("Meaning": a match group; code ``match_shape``, ``match_overlap``):
- a group holds at least one invoice, and at most one of its two sides has more than one
  member: one invoice with any counterparts, or several invoices with exactly one
  counterpart; many invoices with many counterparts is rejected (``match_shape``; not judged
  while a member names nothing);
- every entry belongs to at most one group: no EntryRef twice in a Match, no entry in two
  Matches of the file (``match_overlap``);
- "EntryRef 2 or more" is the XSD's (structure.py).

Across files (a Match sent again lists a superset of its earlier members, ``match_shrunk``;
an entry never joins a second group, ``entry_in_two_groups``) the rules need the earlier
files' groups: the receiver model (reskontro.testing.receiver_model) checks them.

``MatchRules.match`` also registers the Match @id and resolves each EntryRef to an Entry of
this file or an earlier one (ids.py's rules, ``unknown_entry``): one call per record.
"""
from __future__ import annotations

from bisect import bisect_left

from lxml import etree

from reskontro.transfer.contract.ids import _INVOICE, _KEY, _MATCHED
from reskontro.transfer.contract.records import MatchRecord
from reskontro.transfer.contract.structure import T_ENTRYREF


class MatchRules:
    """The Match check (a mixin of scan._Scan, which holds the id tables)."""

    def match(self, el: etree._Element, fast: bool) -> None:
        self.n_matches += 1
        line, mid = el.sourceline, el.get("id") or ""
        if fast:   # XSD-valid: every child is an EntryRef
            refs = [c.text or "" for c in el]
        else:
            refs = [c.text or "" for c in el if c.tag == T_ENTRYREF]
        # ids.py: Match @id unique in the file
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
                if etype is None:         # ids.py: EntryRef names an Entry
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
