"""ISO 20022 camt.054 (BankToCustomerDebitCreditNotification, v02/v04/v08) -> PaymentFile.

Elements are matched on their local names, so every camt.054.001.0N version reads alike
(v08 moves the debtor name to Dbtr/Pty/Nm and the status to Sts/Cd; both are handled).

Sign and reversals: one BankPayment per TxDtls (per Ntry when it has none). CRDT is money
received: positive amount. DBIT is money leaving the account: *negative* amount and
``bank_code`` prefixed ``DBIT:``; an entry with RvslInd=true is prefixed ``RVSL:`` (a
DBIT reversal takes back an earlier incoming payment, e.g. a direct-debit refund). The
booking side must not book a negative amount as a customer payment: it should reverse
the original payment (same payer/reference) or send it to manual review.

Other choices: KID = first RmtInf/Strd/CdtrRefInf/Ref (SCOR or proprietary type), else a
labelled ``KID`` with a valid check digit in Ustrd; archive_ref = TxDtls/Refs/AcctSvcrRef,
else the Ntry's AcctSvcrRef when it has a single TxDtls, else ``<MsgId>/<ntfctn>/<ntry>/<tx>``
(positions); booking_date = BookgDt; payment_date = RltdDts/AccptncDtTm or
IntrBkSttlmDt, else ValDt. Only booked entries (Sts BOOK, or no status) are read; PDNG
and INFO entries are skipped with a warning.

Security: the parser never loads a DTD, resolves entities or touches the network, and a
document with any DOCTYPE is refused outright (entity bombs, external entities).
"""
from __future__ import annotations

import dataclasses
import re
from collections import Counter
from datetime import date
from decimal import Decimal

from lxml import etree

from reskontro.domain import BankPayment, InputError, PaymentFile, money

from .cremul import find_kid_in_text

FORMAT = "camt054"
_DOCTYPE = re.compile(rb"<!DOCTYPE|<!ENTITY", re.IGNORECASE)
# [0-9], not \d: a str pattern's \d takes any Unicode digit, and Decimal() reads them too
_AMOUNT = re.compile(r"-?[0-9]{1,15}(?:\.[0-9]{0,2})?")
_El = etree._Element


def _parser() -> etree.XMLParser:
    # a new parser per document: lxml parsers keep state (error log) between uses
    return etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False,
                           dtd_validation=False, huge_tree=False, remove_comments=True,
                           remove_pis=True)


def _strip_namespaces(root: _El) -> None:
    for el in root.iter():
        if isinstance(el.tag, str) and "}" in el.tag:
            el.tag = el.tag.split("}", 1)[1]


def _text(el: _El | None, path: str) -> str | None:
    if el is None:
        return None
    found = el.find(path)
    if found is None or found.text is None:
        return None
    return found.text.strip() or None


class _Reader:
    def __init__(self, name: str) -> None:
        self.name = name
        self.warnings: list[str] = []

    def err(self, el: _El, message: str) -> InputError:
        return InputError(f"{self.name}: line {el.sourceline}: {message}")

    def amount(self, el: _El) -> tuple[Decimal, str]:
        text = (el.text or "").strip()
        if not _AMOUNT.fullmatch(text):
            raise self.err(el, f"invalid amount {text!r} in <{el.tag}>")
        ccy = el.get("Ccy")
        if not ccy or not re.fullmatch(r"[A-Z]{3}", ccy):
            raise self.err(el, f"<{el.tag}> without a valid Ccy attribute")
        # camt.054's own lexical form (xs:decimal, e.g. "1."), checked above; not the import's
        return money(Decimal(text)), ccy

    def date(self, el: _El | None, *paths: str) -> date | None:
        if el is None:
            return None
        for path in paths:
            found = el.find(path)
            if found is not None and found.text and found.text.strip():
                value = found.text.strip()
                try:
                    return date.fromisoformat(value[:10])
                except ValueError:
                    raise self.err(found, f"invalid date {value!r} in <{found.tag}>") from None
        return None

    def read(self, data: bytes) -> PaymentFile:
        if _DOCTYPE.search(data):
            raise InputError(f"{self.name}: XML with a DOCTYPE/ENTITY declaration refused "
                             "(entity expansion and external entities are not accepted)")
        try:
            root = etree.fromstring(data, _parser())
        except etree.XMLSyntaxError as e:
            raise InputError(f"{self.name}: line {e.lineno}: not well-formed XML: {e.msg}") \
                from None
        except (etree.LxmlError, ValueError) as e:
            raise InputError(f"{self.name}: unreadable XML: {e}") from None
        if root is None:
            raise InputError(f"{self.name}: empty XML document")
        if root.getroottree().docinfo.doctype:
            raise InputError(f"{self.name}: XML with a DOCTYPE refused")
        namespace = etree.QName(root).namespace or ""
        _strip_namespaces(root)
        if root.tag != "Document" or root.find("BkToCstmrDbtCdtNtfctn") is None:
            raise self.err(root, f"not a camt.054 document (root <{root.tag}>, namespace "
                           f"{namespace!r})")
        if namespace and "camt.054" not in namespace:
            raise self.err(root, f"namespace {namespace!r} is not camt.054")
        msg = root.find("BkToCstmrDbtCdtNtfctn")
        msg_id = _text(msg, "GrpHdr/MsgId")
        if msg_id is None:
            raise self.err(msg, "GrpHdr/MsgId missing")
        if _text(msg, "GrpHdr/MsgPgntn/LastPgInd") == "false":
            self.warnings.append(f"{self.name}: message {msg_id} is page "
                                 f"{_text(msg, 'GrpHdr/MsgPgntn/PgNb')} of several; the other "
                                 "pages arrive in other files")
        payments: list[BankPayment] = []
        totals: list[tuple[Decimal, str]] = []
        ntfctns = msg.findall("Ntfctn")
        if not ntfctns:
            raise self.err(msg, "no Ntfctn")
        for n_pos, ntfctn in enumerate(ntfctns, 1):
            for e_pos, ntry in enumerate(ntfctn.findall("Ntry"), 1):
                self.entry(ntry, f"{msg_id}/{n_pos}/{e_pos}", e_pos, payments, totals)
        self.make_unique(payments)
        currencies = {c for _, c in totals}
        control = sum((a for a, _ in totals), Decimal("0.00")) if len(currencies) <= 1 else None
        return PaymentFile(format=FORMAT, payments=payments, reference=msg_id,
                           control_total=control, warnings=self.warnings)

    def entry(self, ntry: _El, derived: str, position: int, payments: list[BankPayment],
              totals: list[tuple[Decimal, str]]) -> None:
        acct_ref = _text(ntry, "AcctSvcrRef")
        label = f"Ntry {position}" + (f" (AcctSvcrRef {acct_ref})" if acct_ref else "")
        amt_el = ntry.find("Amt")
        if amt_el is None:
            raise self.err(ntry, f"{label}: no Amt")
        amount, ccy = self.amount(amt_el)
        direction = _text(ntry, "CdtDbtInd")
        if direction not in ("CRDT", "DBIT"):
            raise self.err(ntry, f"{label}: CdtDbtInd must be CRDT or DBIT, got {direction!r}")
        status = _text(ntry, "Sts/Cd") or _text(ntry, "Sts")
        if status not in (None, "BOOK"):
            self.warnings.append(f"{self.name}: line {ntry.sourceline}: {label} has status "
                                 f"{status}, not booked: skipped")
            return
        reversal = _text(ntry, "RvslInd") == "true"
        entry_code = _bank_code(ntry)
        booking = self.date(ntry, "BookgDt/Dt", "BookgDt/DtTm")
        value_date = self.date(ntry, "ValDt/Dt", "ValDt/DtTm")
        txs: list[_El] = []
        for details in ntry.findall("NtryDtls"):
            batch_txs = details.findall("TxDtls")
            count = _text(details, "Btch/NbOfTxs")
            if count is not None and count != str(len(batch_txs)):
                raise self.err(details, f"{label}: Btch/NbOfTxs says {count}, the entry has "
                               f"{len(batch_txs)} TxDtls")
            txs.extend(batch_txs)
        if not txs:
            payments.append(BankPayment(
                format=FORMAT, archive_ref=acct_ref or _text(ntry, "NtryRef") or derived,
                amount=amount if direction == "CRDT" else -amount, currency=ccy,
                payment_date=value_date, booking_date=booking,
                bank_code=_prefixed(entry_code, direction, reversal),
                text=_text(ntry, "AddtlNtryInf")))
            totals.append((amount if direction == "CRDT" else -amount, ccy))
            return
        parts: list[tuple[Decimal, str, str]] = []
        for t_pos, tx in enumerate(txs, 1):
            tx_amount, tx_ccy = self.tx_amount(tx, ccy, label, amount if len(txs) == 1 else None)
            tx_direction = _text(tx, "CdtDbtInd") or direction
            parts.append((tx_amount, tx_ccy, tx_direction))
            signed = tx_amount if tx_direction == "CRDT" else -tx_amount
            ref = _text(tx, "Refs/AcctSvcrRef") or (acct_ref if len(txs) == 1 else None) \
                or f"{derived}/{t_pos}"
            ustrd = [u.text.strip() for u in tx.findall("RmtInf/Ustrd") if u.text and u.text.strip()]
            refs = [r.text.strip() for r in tx.findall("RmtInf/Strd/CdtrRefInf/Ref")
                    if r.text and r.text.strip()]
            text = " / ".join(ustrd) or None
            kid = refs[0] if refs else None
            if kid is None and text:
                kid, _rejected = find_kid_in_text(text)
            if len(refs) > 1:
                extra = "references: " + ", ".join(refs)
                text = f"{text} / {extra}" if text else extra
            payments.append(BankPayment(
                format=FORMAT, archive_ref=ref, amount=signed, currency=tx_ccy,
                payment_date=self.date(tx, "RltdDts/AccptncDtTm", "RltdDts/IntrBkSttlmDt")
                or value_date,
                booking_date=booking, kid=kid,
                payer_name=_text(tx, "RltdPties/Dbtr/Nm") or _text(tx, "RltdPties/Dbtr/Pty/Nm"),
                payer_account=_text(tx, "RltdPties/DbtrAcct/Id/IBAN")
                or _text(tx, "RltdPties/DbtrAcct/Id/Othr/Id"),
                bank_code=_prefixed(_bank_code(tx) or entry_code, tx_direction, reversal),
                text=text))
        if all(c == ccy for _, c, _ in parts):
            total = sum((a if d == direction else -a for a, _, d in parts), Decimal("0.00"))
            if total != amount:
                raise self.err(ntry, f"{label}: the {len(parts)} TxDtls add up to {total} "
                               f"{ccy}, the entry amount is {amount} {ccy}")
        else:
            self.warnings.append(f"{self.name}: line {ntry.sourceline}: {label}: TxDtls in "
                                 f"another currency than the entry ({ccy}); total not checked")
        totals.append((amount if direction == "CRDT" else -amount, ccy))

    def tx_amount(self, tx: _El, entry_ccy: str, label: str,
                  single: Decimal | None) -> tuple[Decimal, str]:
        """TxDtls/Amt (v04+), else AmtDtls/TxAmt/Amt (v02), else the entry's amount when
        the entry has a single TxDtls. Prefers an AmtDtls amount in the account currency."""
        candidates = [el for el in (tx.find("Amt"), tx.find("AmtDtls/TxAmt/Amt"),
                                    tx.find("AmtDtls/CntrValAmt/Amt")) if el is not None]
        for el in candidates:
            if el.get("Ccy") == entry_ccy:
                return self.amount(el)
        if candidates:
            return self.amount(candidates[0])
        if single is not None:
            return single, entry_ccy
        raise self.err(tx, f"{label}: TxDtls without an amount in a batch entry")

    def make_unique(self, payments: list[BankPayment]) -> None:
        counts = Counter(p.archive_ref for p in payments)
        dups = {r for r, n in counts.items() if n > 1}
        if not dups:
            return
        seen: Counter[str] = Counter()
        for i, p in enumerate(payments):
            if p.archive_ref in dups:
                seen[p.archive_ref] += 1
                payments[i] = _with_ref(p, f"{p.archive_ref}#{seen[p.archive_ref]}")
        self.warnings.append(f"{self.name}: reference(s) {', '.join(sorted(dups))} repeat; "
                             "numbered #1, #2, ... in file order")


def _with_ref(p: BankPayment, ref: str) -> BankPayment:
    return dataclasses.replace(p, archive_ref=ref)


def _bank_code(el: _El) -> str | None:
    domain = _text(el, "BkTxCd/Domn/Cd")
    if domain:
        return "/".join(x for x in (domain, _text(el, "BkTxCd/Domn/Fmly/Cd"),
                                    _text(el, "BkTxCd/Domn/Fmly/SubFmlyCd")) if x)
    return _text(el, "BkTxCd/Prtry/Cd")


def _prefixed(code: str | None, direction: str, reversal: bool) -> str | None:
    prefix = "RVSL:" if reversal else "DBIT:" if direction == "DBIT" else ""
    return (prefix + (code or "")) or None


def read_camt054(data: bytes, name: str = "<bytes>") -> PaymentFile:
    """Read a camt.054 notification. Raises InputError naming the file and XML line."""
    return _Reader(name).read(data)
