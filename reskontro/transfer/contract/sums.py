"""The Trailer: record counts and control sums.

Spec rules enforced ("Trailer"; code ``trailer_count``, ``control_sum``):
- CustomerCount, EntryCount, MatchCount: the numbers of Customer, Entry and Match elements
  in the file;
- one ControlSum per currency present, the sum of the Amounts of the file's entries in that
  currency: none missing, none extra, none twice, none wrong;
- a file without entries: exactly one ControlSum, 0.00, in the creditor's base currency.

The sums are added up in the loop of ``scan._Scan.run`` (the hot path: ``sums`` there, with
the exact decimal context of the renderer), the counts as each record is handled.
"""
from __future__ import annotations

from decimal import Decimal

from lxml import etree

from reskontro.transfer.contract.structure import (_TRAILER_COUNTS, T_CONTROLSUM, _decimal,
                                                   _int)

ZERO = Decimal("0.00")


class SumRules:
    """The Trailer check (a mixin of scan._Scan, which holds the counts and sums)."""

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
