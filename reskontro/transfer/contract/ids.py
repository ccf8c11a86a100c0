"""Ids and references: the id tables of one pass, and the second reading that confirms a repeat.

Spec rules enforced (code ``duplicate_id``, ``unknown_customer``, ``unknown_entry``):
- Customer @id unique in the file; Entry @id unique (in the file: across files the receiver
  model compares an Entry sent again with what it has, code ``entry_changed``); Match @id
  unique in the file;
- CustomerRef names a Customer of this file or of an earlier one (``known_customer``);
- EntryRef names an Entry of this file or of an earlier one (``known_entry_type``, which also
  gives an earlier entry's type to the match checks).

Where: the tables, their helpers and the second reading are here; the checks themselves run
where the pass already handles each record (no extra call per record): Entry ids and
CustomerRef in the loop of ``scan._Scan.run``, Customer ids in ``values.ValueRules.customer``,
Match ids and EntryRef in ``matches.MatchRules.match``.

Ids are kept as their 64-bit str hash, 8 bytes each in sorted array('q') buckets (no Python
object per id: memory stays nearly flat in file size, ~9 bytes per entry, customer and
match). Equal hashes are confirmed against the real ids by reading the file again
(``_confirm_repeats``); a collision of two different ids (odds ~1e-7 in a million-entry
file) can at worst lend one entry's type to another in the match checks, or let a
CustomerRef pass for a Customer of the file.
"""
from __future__ import annotations

from array import array
from typing import TYPE_CHECKING, BinaryIO, Callable

from lxml import etree

from reskontro.transfer.contract.records import ContractError
from reskontro.transfer.contract.structure import (_BATCH, _RECORD_KIND, T_CUSTOMER, T_ENTRY,
                                                   T_MATCH, _drop_finished, _iterparse)

if TYPE_CHECKING:
    from reskontro.transfer.contract.scan import _Scan

# An Entry is kept as (hash & _KEY) | kind: its kind and _MATCHED flag in the 3 low bits.
_INVOICE, _OTHER, _MATCHED = 1, 2, 4
_KEY = ~7
# at most 4096 buckets per set
_MAX_BUCKET_BITS = 12     # no mutate: speed
# ~70 entries a bucket: a short sorted bucket, and few buckets for a small file
_BYTES_PER_BUCKET = 32768  # no mutate: speed


def _bucket_bits(size: int) -> int:   # no mutate: speed (any count gives the same answers)
    """log2 of the number of buckets for a file of ``size`` bytes."""
    return min(_MAX_BUCKET_BITS, (size // _BYTES_PER_BUCKET).bit_length())


def _buckets(bits: int) -> list[array]:
    """2**bits sorted arrays; hash >> (64 - bits) picks one (a negative index is fine)."""
    return [array("q") for _ in range(1 << bits)]


class IdRules:
    """The Entry table's upkeep (a mixin of scan._Scan, which holds the tables)."""

    def sort_entries(self) -> None:
        """Sort each bucket of the Entries appended so far; of ids seen twice (equal hashes)
        keep the first, as the checks would have, and note them for _confirm_repeats."""
        self.entries_sorted = True
        entries, repeats = self.entries, self.entry_repeats
        for n, b in enumerate(entries):
            if len(b) < 2:       # no mutate: speed (a bucket of one is sorted)
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
    n = 0        # no mutate: memory (counts records between drops)
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
            n += 1                   # no mutate: memory
            if n % _BATCH == 0:      # no mutate: memory
                _drop_finished(el)
    except etree.XMLSyntaxError:
        pass      # the main pass reports it
