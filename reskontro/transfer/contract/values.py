"""Values: what the XSD's patterns cannot say about a field.

Spec rules enforced:
- Header: FileId = ``LT_<SenderId>_<yyyymmdd of CutOff in Europe/Oslo>_<Sequence as 6 digits>``
  (code ``file_id``); CreditorOrgNo MOD11-valid (``org_no``). That Sequence rises from file
  to file is the receiver model's (``sequence``);
- Customer: OrgNo only for business customers, and MOD11-valid (``org_no``); PostCode exactly
  4 digits when Country is NO (``post_code``);
- Entry: DueDate required for invoices, absent for other types (``due_date``); KID's last
  digit a valid MOD10 (Luhn) or MOD11 check digit, '-' for a MOD11 check value of 10
  (``kid``). Both run in the loop of ``scan._Scan.run`` (the hot path), with the KID
  functions imported here.

Lengths, SenderId's characters, the shapes of FileId, dates and amounts, the currency
(ISO 4217) and country (ISO 3166-1 alpha-2) codes are the XSD's (structure.py).

``ValueRules.customer`` also registers the Customer @id (ids.py's rule: one call per record).
"""
from __future__ import annotations

import re
from bisect import bisect_left
from datetime import datetime

from lxml import etree
from stdnum.no import orgnr

from reskontro.domain.kid import is_valid as kid_is_valid  # noqa: F401  (re-exported)
from reskontro.domain.kid import luhn_is_valid  # noqa: F401
from reskontro.domain.kid import mod11_check_digit as mod11_kid_check  # noqa: F401
from reskontro.transfer.contract.records import CustomerRecord, HeaderRecord
from reskontro.transfer.contract.structure import (_ADDRESS_FIELDS, _CUSTOMER_FIELDS,
                                                   _HEADER_FIELDS, T_ADDRESS, T_LINE, T_ORGNO,
                                                   _dt, _int)
from reskontro.transfer.render import OSLO

_DIGITS4 = re.compile(r"[0-9]{4}")
_ORGNO = re.compile(r"[0-9]{9}")


def org_no_is_valid(org_no: str) -> bool:
    return bool(_ORGNO.fullmatch(org_no)) and orgnr.is_valid(org_no)


def expected_file_id(sender_id: str, cut_off: datetime, sequence: int) -> str:
    return f"LT_{sender_id}_{cut_off.astimezone(OSLO):%Y%m%d}_{sequence:06d}"


class ValueRules:
    """The Header and Customer checks (a mixin of scan._Scan)."""

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
        # ids.py: Customer @id unique in the file
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
