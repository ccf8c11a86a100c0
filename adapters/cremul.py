"""CREMUL D.96A (Norwegian BSK/Nets credit advice) -> PaymentFile, and a writer for tests.

Structure (see shared/notes/payment-formats.md §1): ``UNB (UNH … UNT)+ UNZ``; in each
message LIN starts a credit entry on our account (level B) and SEQ one payment in it
(level C). A payment runs until the next SEQ, LIN, CNT or UNT.

Field choices:

* amount: SEQ MOA 143 | 119 | 60, else 98 (Danish); currency from that MOA, else the LIN's,
  else NOK. Every LIN amount (MOA 60/346/349) must equal the sum of its SEQ amounts.
* booking date: DTM 202, else 209, else 171 (SEQ level first, then LIN);
  payment date: DTM 203, else 193 (SEQ level). DTMs inside a DOC group date the document.
* KID: DOC+999 (MOA+12 is that document's amount); invoice number: DOC+380. Without a
  DOC, a ``KID <digits>`` in FTX free text is taken when its MOD10 or MOD11 check holds.
  Several KIDs/invoices in one SEQ whose MOA+12 add up to the payment become one
  BankPayment each (archive_ref ``<ref>#<n>``); otherwise one payment with the first.
* archive_ref: RFF+ACD, else RFF+AII (SEQ level), else the derived id
  ``<UNB ref>:<UNH ref>:<LIN no>:<SEQ no>`` (positions, 1-based). Real files repeat an
  ACD within one file (CREMUL0003 has 890209152 twice); a repeated reference gets
  ``/<derived id>`` appended on every occurrence, so archive_ref stays unique per payment.
* bank_code: the BUS operation code (230 valid KID, 233 electronic, ...), else the
  DO/IN indicator when the bank omits the code.
* only customers' payments are payments: a CREMUL is a *credit* advice (debits come in
  DEBMUL), and its BUS operation codes (230-234, 240) all name incoming payments; the one
  thing that is not money received is a SEQ amount of zero or below (the amount syntax
  allows a sign). Such an item counts in the LIN total check but goes to
  ``PaymentFile.skipped``, never to the payments.
* payer_name: NAD+PL (structured C080 first component, else unstructured C058 first
  line), else the FII+OR holder name, else NAD+OY (Danish).
"""
from __future__ import annotations

import dataclasses
import hashlib
import re
from collections import Counter
from collections.abc import Sequence
from datetime import date, datetime
from decimal import Decimal

from reskontro.domain.kid import is_valid as kid_is_valid

from reskontro.domain import BankPayment, InputError, PaymentFile, money

from .edifact import Segment, Tokens, tokenize

FORMAT = "cremul"
# [0-9], not \d: a str pattern's \d takes any Unicode digit, and Decimal() reads them too
_AMOUNT = re.compile(r"-?[0-9]{1,15}(?:[.,][0-9]{0,2})?|-?[.,][0-9]{1,2}")
_SEQ_AMOUNT_QUALIFIERS = ("143", "119", "60", "98")
_LIN_AMOUNT_QUALIFIERS = ("60", "346", "349")
#: "KID 123", "KID: 123", "(KID) 123", "KID-nr 123": the digits after a KID label
_KID_IN_TEXT = re.compile(r"\bKID\b\)?(?:[ .:-]*(?:NR|NUMMER)\.?)?[ .:)-]*(\d{2,25})\b",
                          re.IGNORECASE)


# --------------------------------------------------------------------------- KID checks

def kid_valid(kid: str) -> bool:
    """True when the KID passes MOD10 (Luhn) or MOD11 (reskontro.domain.kid)."""
    return kid_is_valid(kid)


def find_kid_in_text(text: str) -> tuple[str | None, list[str]]:
    """Best effort: a KID labelled ``KID`` in free text whose check digit holds.

    Returns (kid or None, the labelled candidates that failed the check).
    """
    rejected: list[str] = []
    for m in _KID_IN_TEXT.finditer(text):
        if kid_valid(m[1]):
            return m[1], rejected
        rejected.append(m[1])
    return None, rejected


# --------------------------------------------------------------------------- builders

#: a MOA/DTM kept for later: its segment number. Keeping only the number (the text is in
#: tokens.raw) keeps the reader from holding a list per segment until the LIN ends.
_Composite = int


class _Doc:
    __slots__ = ("index", "qualifier", "number", "amount")

    def __init__(self, index: int, qualifier: str, number: str) -> None:
        self.index = index
        self.qualifier = qualifier
        self.number = number
        self.amount: _Composite | None = None


class _Seq:
    __slots__ = ("index", "moa", "dtm", "refs", "account", "holder", "pl_name", "oy_name",
                 "docs", "texts", "bus")

    def __init__(self, index: int) -> None:
        self.index = index
        self.moa: dict[str, _Composite] = {}
        self.dtm: dict[str, _Composite] = {}
        self.refs: dict[str, str] = {}
        self.account: str | None = None
        self.holder: str | None = None
        self.pl_name: str | None = None
        self.oy_name: str | None = None
        self.docs: list[_Doc] | None = None      # created on first use: most SEQs have
        self.texts: list[str] | None = None     # at most one DOC and no text
        self.bus: str | None = None


class _Lin:
    __slots__ = ("index", "moa", "dtm", "bus", "seqs")

    def __init__(self, index: int) -> None:
        self.index = index
        self.moa: dict[str, _Composite] = {}
        self.dtm: dict[str, _Composite] = {}
        self.bus: str | None = None
        self.seqs: list[_Seq] = []


def _first(raw: str, element: str, component: str) -> list[str]:
    """Components of the first data element of a segment (MOA, DTM, RFF have only one)."""
    value = raw[4:]
    if element in value:
        value = value.split(element, 1)[0]
    return value.split(component)


class _Reader:
    """State of one read_cremul call (no module-level state).

    Works on the raw segment texts of the tokenizer and splits only what it uses: this
    loop runs once per segment, so it is written for speed (locals, no per-segment objects).
    """

    def __init__(self, name: str, tokens: Tokens) -> None:
        self.name = name
        self.tokens = tokens
        self.raws = tokens.raw
        self.warnings: list[str] = []
        self.accounts: list[str] = []      # FII+BF at LIN level: the accounts credited
        # caches keyed by segment text: bank files repeat the same DTM and MOA a lot
        self._dates: dict[str, date] = {}
        self._amounts: dict[str, tuple[Decimal, str]] = {}
        #: per returned payment: (reference as read, derived id, part of a split SEQ)
        self.origins: list[tuple[str, str, bool]] = []

    def err(self, index: int, message: str) -> InputError:
        return InputError(f"{self.name}: segment {index} ({self.raws[index - 1][:3]}): "
                          f"{message}")

    # ----- field parsing (cached: bank files repeat the same dates and amounts a lot)

    def components(self, index: _Composite) -> list[str]:
        return _first(self.raws[index - 1], self.tokens.delimiters.element,
                      self.tokens.delimiters.component)

    def amount(self, index: _Composite) -> tuple[Decimal, str]:
        """(amount, currency or "") of a MOA; cached by segment text."""
        raw = self.raws[index - 1]
        got = self._amounts.get(raw)
        if got is None:
            comps = self.components(index)
            value = comps[1] if len(comps) > 1 else ""
            if not _AMOUNT.fullmatch(value):
                raise self.err(index, f"invalid amount {self.tokens.unescape(value)!r}")
            # the UNA decimal mark is not trusted (cremul_multi_lines says '.', writes ',')
            # EDIFACT's own form (",5", "12."), checked above; not the import's reader
            got = money(Decimal(value.replace(",", "."))), comps[2] if len(comps) > 2 else ""
            self._amounts[raw] = got
        return got

    def date(self, index: _Composite) -> date:
        """The date of a DTM (formats 102, 203, 204, 101); cached by segment text."""
        raw = self.raws[index - 1]
        got = self._dates.get(raw)
        if got is None:
            comps = self.components(index)
            value = comps[1] if len(comps) > 1 else ""
            fmt = comps[2] if len(comps) > 2 and comps[2] else "102"
            try:
                if fmt in ("102", "203", "204") and len(value) >= 8 and value[:8].isdigit():
                    got = date(int(value[:4]), int(value[4:6]), int(value[6:8]))
                elif fmt == "101" and len(value) == 6 and value.isdigit():
                    got = datetime.strptime(value, "%y%m%d").date()
                else:
                    raise ValueError(f"unsupported date {value!r} in format {fmt!r}")
            except ValueError as e:
                raise self.err(index, f"invalid date: {e}") from None
            self._dates[raw] = got
        return got

    # ----- interchange

    def read(self) -> PaymentFile:
        tokens, raws = self.tokens, self.raws
        unb = tokens.segment(1)
        unb_ref = unb.get(5)
        last = tokens.segment(len(raws))
        if last.tag != "UNZ":
            raise InputError(f"{self.name}: interchange without UNZ, file truncated? "
                             f"(last segment is {last.where()})")
        payments: list[BankPayment] = []
        totals: list[tuple[Decimal, str]] = []
        messages = 0
        k, end = 1, len(raws) - 1            # 0-based: raws[0] is UNB, raws[end] is UNZ
        while k < end:
            if raws[k][:3] != "UNH":
                raise self.err(k + 1, "expected UNH (start of a message)")
            messages += 1
            k = self.message(k, unb_ref, payments, totals) + 1
        if last.get(1) != str(messages):
            raise self.err(len(raws), f"UNZ says {last.get(1)!r} messages, the interchange "
                           f"holds {messages} (UNH)")
        if last.get(2) != unb_ref:
            raise self.err(len(raws), f"UNZ reference {last.get(2)!r} differs from UNB "
                           f"reference {unb_ref!r}")
        self.make_unique(payments)
        currencies = {c for _, c in totals}
        control = sum((a for a, _ in totals), Decimal("0.00")) if len(currencies) <= 1 else None
        pf = PaymentFile(format=FORMAT, payments=payments, reference=unb_ref,
                         control_total=control, warnings=self.warnings, accounts=self.accounts)
        pf.set_aside_non_incoming()     # a CREMUL is a credit advice: no debits, no reversals
        return pf

    # ----- message

    def message(self, start: int, unb_ref: str, payments: list[BankPayment],
                totals: list[tuple[Decimal, str]]) -> int:
        """Read the message whose UNH is raws[start]; returns the position of its UNT."""
        raws = self.raws
        E, C = self.tokens.delimiters.element, self.tokens.delimiters.component
        unh = self.tokens.segment(start + 1)
        msg_ref = unh.get(1)
        if unh.get(2, 0) != "CREMUL":
            raise self.err(unh.index, f"not a CREMUL message: {unh.get(2, 0)!r}")
        if (unh.get(2, 1), unh.get(2, 2)) != ("D", "96A"):
            self.warnings.append(f"{self.name}: {unh.where()}: CREMUL version "
                                 f"{unh.get(2, 1)}:{unh.get(2, 2)}, read as D96A")
        msg_id = f"{unb_ref}:{msg_ref}"
        n_lins = 0           # each LIN is turned into payments as soon as it ends (memory)
        lin: _Lin | None = None
        seq: _Seq | None = None
        doc: _Doc | None = None
        cnt: Segment | None = None
        unt = -1
        for k in range(start + 1, len(raws)):
            raw = raws[k]
            tag = raw[:3]
            if tag == "MOA" or tag == "DTM":
                value = raw[4:]
                if E in value:          # MOA and DTM have one data element; ignore extras
                    value = value.split(E, 1)[0]
                comps = value.split(C)
                q = comps[0]
                if seq is not None:
                    if tag == "MOA":
                        if doc is not None and q == "12":
                            doc.amount = k + 1
                        elif q not in seq.moa:
                            seq.moa[q] = k + 1
                    elif doc is None and q not in seq.dtm:
                        # a DTM inside a DOC group dates the document, not the payment
                        seq.dtm[q] = k + 1
                elif lin is not None:
                    level = lin.moa if tag == "MOA" else lin.dtm
                    if q not in level:
                        level[q] = k + 1
            elif tag == "RFF":
                if seq is not None and doc is None:
                    comps = _first(raw, E, C)
                    if len(comps) > 1 and comps[0] not in seq.refs and comps[1].strip():
                        seq.refs[comps[0]] = comps[1].strip()
            elif tag == "SEQ":
                if lin is None:
                    raise self.err(k + 1, "SEQ before any LIN")
                seq, doc = _Seq(k + 1), None
                lin.seqs.append(seq)
            elif tag == "DOC":
                if seq is not None:
                    parts = raw.split(E)
                    doc = _Doc(k + 1, parts[1].split(C)[0] if len(parts) > 1 else "",
                               parts[2].split(C)[0].strip() if len(parts) > 2 else "")
                    if seq.docs is None:
                        seq.docs = []
                    seq.docs.append(doc)
            elif tag == "GIS":
                doc = None
            elif tag == "PRC":
                pass                    # PRC 8/11 only announces DOC or FTX
            elif tag == "FII":
                if seq is None and lin is not None:      # SG6 FII+BF: the account credited (ours)
                    parts = raw.split(E)
                    if len(parts) > 2 and parts[1] == "BF":
                        account = parts[2].split(C)[0].strip()
                        if account and account not in self.accounts:
                            self.accounts.append(account)
                elif seq is not None:
                    parts = raw.split(E)
                    if len(parts) > 2 and parts[1] == "OR":
                        comps = parts[2].split(C)
                        seq.account = comps[0].strip() or None
                        seq.holder = comps[1].strip() or None if len(comps) > 1 else None
            elif tag == "NAD":
                if seq is not None:
                    parts = raw.split(E)
                    q = parts[1] if len(parts) > 1 else ""
                    if q == "PL" or q == "OY":
                        # structured C080 (4th element) first, else unstructured C058 (3rd)
                        name = (parts[4].split(C)[0].strip() if len(parts) > 4 else "") or \
                            (parts[3].split(C)[0].strip() if len(parts) > 3 else "")
                        if q == "PL":
                            seq.pl_name = name or None
                        else:
                            seq.oy_name = name or None
            elif tag == "FTX":
                if seq is not None:
                    parts = raw.split(E)
                    if len(parts) > 4 and parts[1] in ("PMD", "AAG"):
                        text = _ftx_text(parts[4].split(C))
                        if text:
                            if seq.texts is None:
                                seq.texts = []
                            seq.texts.append(text)
            elif tag == "BUS":
                parts = raw.split(E)
                code = (parts[4].split(C)[0] if len(parts) > 4 else "") or \
                    (parts[2] if len(parts) > 2 else "")
                if seq is not None:
                    seq.bus = code or None
                elif lin is not None:
                    lin.bus = code or None
            elif tag == "LIN":
                if lin is not None:
                    self.lin(lin, n_lins, msg_id, payments, totals)
                n_lins += 1
                lin, seq, doc = _Lin(k + 1), None, None
            elif tag == "CNT":
                comps = _first(raw, E, C)
                if comps[0] in ("LI", "LIN"):
                    cnt = self.tokens.segment(k + 1)
                if lin is not None:
                    self.lin(lin, n_lins, msg_id, payments, totals)
                lin = seq = doc = None
            elif tag == "UNT":
                unt = k
                break
            elif tag == "UNH" or tag == "UNZ" or tag == "UNB":
                raise self.err(start + 1, f"message not closed by UNT before segment {k + 1} "
                               f"({tag})")
            elif tag == "BGM":
                code = self.tokens.segment(k + 1).get(1)
                if code not in ("435", "455", "X1"):
                    self.warnings.append(f"{self.name}: segment {k + 1} (BGM): unknown "
                                         f"CREMUL document code {code!r}")
        if unt < 0:
            raise self.err(start + 1, "message not closed by UNT")
        if lin is not None:
            self.lin(lin, n_lins, msg_id, payments, totals)
        unt_seg = self.tokens.segment(unt + 1)
        if unt_seg.get(2) != msg_ref:
            raise self.err(unt + 1, f"UNT reference {unt_seg.get(2)!r} differs from UNH "
                           f"reference {msg_ref!r}")
        if unt_seg.get(1) != str(unt - start + 1):
            # real files get this wrong (cremul_multi_lines: UNT+55 over 53 segments)
            self.warnings.append(f"{self.name}: {unt_seg.where()}: UNT says "
                                 f"{unt_seg.get(1)!r} segments, the message has "
                                 f"{unt - start + 1}")
        if cnt is not None and cnt.get(1, 1) != str(n_lins):
            raise self.err(cnt.index, f"control count says {cnt.get(1, 1)!r} LIN, the "
                           f"message has {n_lins}")
        return unt

    # ----- level B / C -> payments

    def lin(self, lin: _Lin, lin_no: int, msg_id: str, payments: list[BankPayment],
            totals: list[tuple[Decimal, str]]) -> None:
        checked = [lin.moa[q] for q in _LIN_AMOUNT_QUALIFIERS if q in lin.moa]
        if not checked:
            raise self.err(lin.index, "LIN without a posted amount (MOA 60/346/349)")
        lin_currency = self.amount(checked[0])[1] or "NOK"
        total = Decimal("0.00")
        for seq_no, seq in enumerate(lin.seqs, 1):
            total += self.seq(seq, lin, lin_currency, f"{msg_id}:{lin_no}:{seq_no}", payments)
        for moa in checked:
            stated = self.amount(moa)[0]
            if stated != total:
                raise self.err(lin.index, f"LIN amount {stated} (MOA+"
                               f"{self.components(moa)[0]}, segment {moa}) differs from the "
                               f"sum of its {len(lin.seqs)} SEQ amounts {total}")
        totals.append((total, lin_currency))

    def seq(self, seq: _Seq, lin: _Lin, lin_currency: str, derived: str,
            payments: list[BankPayment]) -> Decimal:
        for q in _SEQ_AMOUNT_QUALIFIERS:
            moa = seq.moa.get(q)
            if moa is not None:
                break
        else:
            raise self.err(seq.index, "payment without an amount (MOA 143/119/60/98)")
        amount, currency = self.amount(moa)
        currency = currency or lin_currency
        if currency != lin_currency:
            raise self.err(moa, f"currency {currency} differs from the LIN currency "
                           f"{lin_currency} (segment {lin.index})")
        text = " / ".join(seq.texts) if seq.texts else None
        ref = seq.refs.get("ACD") or seq.refs.get("AII") or derived
        dtm = seq.dtm
        found = dtm.get("203") or dtm.get("193")
        payment_date = self.date(found) if found else None
        found = dtm.get("202") or lin.dtm.get("202") or dtm.get("209") or \
            lin.dtm.get("209") or dtm.get("171") or lin.dtm.get("171")
        booking_date = self.date(found) if found else None
        payer_name = seq.pl_name or seq.holder or seq.oy_name
        account = seq.account
        bank_code = seq.bus or lin.bus
        if self.tokens.escaped:
            un = self.tokens.unescape
            text, ref = text and un(text), un(ref)
            payer_name, account = payer_name and un(payer_name), account and un(account)
            bank_code = bank_code and un(bank_code)
        else:
            un = _same
        parts = self.references(seq, amount, text)
        split = len(parts) > 1
        for n, (part_amount, kid, invoice_no, part_text) in enumerate(parts, 1):
            payments.append(BankPayment(
                format=FORMAT, archive_ref=f"{ref}#{n}" if split else ref,
                amount=part_amount, currency=currency, payment_date=payment_date,
                booking_date=booking_date, kid=kid and un(kid),
                invoice_no=invoice_no and un(invoice_no),
                payer_name=payer_name, payer_account=account,
                bank_code=bank_code, text=part_text))
            self.origins.append((ref, derived, split))
        return amount

    def references(self, seq: _Seq, amount: Decimal, text: str | None
                   ) -> list[tuple[Decimal, str | None, str | None, str | None]]:
        """(amount, kid, invoice_no, text) for each BankPayment to make of this SEQ."""
        docs = seq.docs
        if docs is not None and len(docs) == 1:        # the usual case, kept cheap
            d = docs[0]
            number = d.number or None
            return [(amount, number if d.qualifier == "999" else None,
                     number if d.qualifier == "380" else None, text)]
        docs = docs or []
        kids = [d for d in docs if d.qualifier == "999" and d.number]
        invoices = [d for d in docs if d.qualifier == "380" and d.number]
        kid = kids[0].number if kids else None
        invoice_no = invoices[0].number if invoices else None
        if len(kids) <= 1 and len(invoices) <= 1:
            if kid is None and not docs and text:
                kid, rejected = find_kid_in_text(text)
                for r in rejected:
                    self.warnings.append(f"{self.name}: segment {seq.index} (SEQ): free text "
                                         f"names KID {r}, but its check digit is invalid; "
                                         "not used")
            return [(amount, kid, invoice_no, text)]
        refs = kids + invoices
        amounts = [self.amount(d.amount)[0] for d in refs if d.amount is not None]
        if len(amounts) == len(refs) and sum(amounts) == amount:
            return [(a, d.number if d.qualifier == "999" else None,
                     d.number if d.qualifier == "380" else None, text)
                    for a, d in zip(amounts, refs)]
        self.warnings.append(f"{self.name}: segment {seq.index} (SEQ): pays {len(refs)} "
                             "documents whose MOA+12 do not add up to the payment; kept as "
                             "one payment with the first reference")
        listing = "documents: " + ", ".join(self.tokens.unescape(d.number) for d in refs)
        return [(amount, kid, invoice_no, f"{text} / {listing}" if text else listing)]

    def make_unique(self, payments: list[BankPayment]) -> None:
        """Give archive references that repeat within the file the derived id as suffix."""
        # count each SEQ once: a split SEQ has one origin per document, all alike
        per_ref = Counter(ref for ref, _derived, _split in dict.fromkeys(self.origins))
        dups = {ref for ref, n in per_ref.items() if n > 1}
        if not dups:
            return
        for i, (ref, derived, split) in enumerate(self.origins):
            if ref in dups:
                p = payments[i]
                unique = f"{ref}/{derived}" + (p.archive_ref[len(ref):] if split else "")
                payments[i] = dataclasses.replace(p, archive_ref=unique)
        self.warnings.append(f"{self.name}: archive reference(s) {', '.join(sorted(dups))} "
                             "repeat within the file; made unique with the LIN/SEQ position")


def _same(value: str) -> str:
    return value


def _ftx_text(comps: list[str]) -> str:
    """FTX C108 lines: a component of 35+ characters was cut by the bank's line length and
    continues in the next one; shorter components are separate lines (joined by a space)."""
    out = comps[0] if comps else ""
    for prev, comp in zip(comps, comps[1:]):
        out += ("" if len(prev) >= 35 else " ") + comp
    return out.strip()


# --------------------------------------------------------------------------- reader

def read_cremul(data: bytes, name: str = "<bytes>") -> PaymentFile:
    """Read a CREMUL interchange (any number of messages) into BankPayments.

    Raises InputError naming the file and the segment (ordinal and tag) for bad input:
    not EDIFACT, not CREMUL, truncated (no UNZ), UNZ/UNH count or reference mismatch,
    UNT reference or CNT mismatch, LIN total not equal to its SEQ sum, bad amounts or
    dates. A wrong UNT segment count only warns (real files get it wrong).
    """
    return _Reader(name, tokenize(data, name)).read()


# --------------------------------------------------------------------------- writer

def _escape(value: str) -> str:
    if "\r" in value or "\n" in value or any("\ue000" <= c <= "\ue003" for c in value):
        raise ValueError(f"value cannot be written to EDIFACT: {value!r}")
    return (value.replace("?", "??").replace("'", "?'").replace("+", "?+")
            .replace(":", "?:"))


def _amount(value: Decimal) -> str:
    return f"{value:.2f}".replace(".", ",")


def render_cremul(payments: Sequence[BankPayment], *, sender: str = "00810506482",
                  recipient: str = "00000000000", reference: str | None = None,
                  per_lin: int = 100, account: str = "00000000000",
                  created: datetime | None = None, wrap: int | None = None) -> str:
    """Write payments as a Norwegian-style CREMUL (BGM+435, one message).

    Consecutive payments with the same booking date, currency and bank code share a LIN
    (at most ``per_lin``). Per payment: SEQ, DTM+203, FII+OR, RFF+ACD, MOA+143, NAD+PL,
    FTX+PMD, and PRC+8 with DOC+999 (KID, MOA+12) / DOC+380 (invoice). ``wrap=80`` cuts
    the text into 80-column lines like BBS/Nets files. read_cremul reads it back to the
    same payments (archive references must be unique).
    """
    if per_lin < 1:
        raise ValueError("per_lin must be at least 1")
    created = created or datetime.now()
    if reference is None:
        digest = hashlib.sha1("|".join(p.archive_ref for p in payments).encode()).hexdigest()
        reference = str(int(digest[:12], 16))[:14]
    out: list[str] = ["UNA:+,? '",
                      f"UNB+UNOC:3+{sender}+{recipient}+{created:%y%m%d:%H%M}+{reference}'",
                      "UNH+1+CREMUL:D:96A:UN'",
                      f"BGM+435+{reference}'",
                      f"DTM+137:{created:%Y%m%d}:102'",
                      f"NAD+MR+{recipient}'"]
    groups: list[list[BankPayment]] = []
    for p in payments:
        key = (p.booking_date, p.currency, p.bank_code)
        if groups and len(groups[-1]) < per_lin and \
                (groups[-1][0].booking_date, groups[-1][0].currency,
                 groups[-1][0].bank_code) == key:
            groups[-1].append(p)
        else:
            groups.append([p])
    for lin_no, group in enumerate(groups, 1):
        first = group[0]
        total = sum((p.amount for p in group), Decimal("0.00"))
        out.append(f"LIN+{lin_no}'")
        if first.booking_date:
            out.append(f"DTM+202:{first.booking_date:%Y%m%d}:102'")
        if first.bank_code:
            out.append(f"BUS++DO++{_escape(first.bank_code)}:25:124'")
        out.append(f"MOA+349:{_amount(total)}:{first.currency}'")
        out.append(f"FII+BF+{account}'")
        for seq_no, p in enumerate(group, 1):
            out.append(f"SEQ++{seq_no}'")
            if p.payment_date:
                out.append(f"DTM+203:{p.payment_date:%Y%m%d}:102'")
            if p.payer_account:
                out.append(f"FII+OR+{_escape(p.payer_account)}'")
            out.append(f"RFF+ACD:{_escape(p.archive_ref)}'")
            out.append(f"MOA+143:{_amount(p.amount)}:{p.currency}'")
            if p.payer_name:
                out.append(f"NAD+PL+++{_escape(p.payer_name)}'")
            if p.text:
                chunks = [_escape(p.text[i:i + 70]) for i in range(0, len(p.text), 70)]
                out.append(f"FTX+PMD+++{':'.join(chunks)}'")
            if p.kid or p.invoice_no:
                out.append("PRC+8'")
                if p.kid:
                    out.append(f"DOC+999+{_escape(p.kid)}'")
                    out.append(f"MOA+12:{_amount(p.amount)}'")
                if p.invoice_no:
                    out.append(f"DOC+380+{_escape(p.invoice_no)}'")
                out.append("GIS+37'")
    out.append(f"CNT+LI:{len(groups)}'")
    out.append(f"UNT+{len(out) - 1}+1'")      # UNH..UNT: everything after UNA and UNB
    out.append(f"UNZ+1+{reference}'")
    text = "".join(out)
    if wrap:
        lines = [text[i:i + wrap] for i in range(0, len(text), wrap)]
        lines[-1] = lines[-1].ljust(wrap)
        text = "\n".join(lines) + "\n"
    return text
