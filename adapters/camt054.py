"""ISO 20022 camt.054 (BankToCustomerDebitCreditNotification, v02/v04/v08) -> PaymentFile.

Elements are matched on their local names, so every camt.054.001.0N version reads alike
(v08 moves the debtor name to Dbtr/Pty/Nm and the status to Sts/Cd; both are handled).

Only customers' payments are payments. One BankPayment per credited TxDtls (per Ntry when
it has none). Everything else the file reports goes to ``PaymentFile.skipped`` with its
reason, and is never listed or booked:

* a debit: CdtDbtInd DBIT (our own outgoing payment, a withdrawal), at the entry or at the
  transaction (TxDtls/CdtDbtInd; absent in v02 files, then inherited from the entry);
* a reversal: Ntry/RvslInd true, for every transaction of the entry (CRDT + RvslInd undoes
  an earlier debit, DBIT + RvslInd an earlier credit);
* a return: TxDtls/RtrInf (its Rsn/Cd or Rsn/Prtry is the reason given), or a bank
  transaction code whose sub-family is a return or reversal (PMNT/ICDT/RRTN, RPCR, PRDD,
  UPDD, ARET, AREV, UPCQ, UPCT; the TxDtls code, else the entry's). An entry may be CRDT
  and still hold a returned transaction beside customers' credits.

The checks count everything: a batch's TxDtls must add up to the entry amount per direction
(CRDT +, DBIT -, relative to the entry), and ``control_total`` is the net of all entries, so
the payments and the skipped items together add up to it.

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

from reskontro.domain import BankPayment, InputError, PaymentFile, SkippedItem, money

from .cremul import find_kid_in_text

FORMAT = "camt054"
_DOCTYPE = re.compile(rb"<!DOCTYPE|<!ENTITY", re.IGNORECASE)
# [0-9], not \d: a str pattern's \d takes any Unicode digit, and Decimal() reads them too
_AMOUNT = re.compile(r"-?[0-9]{1,15}(?:\.[0-9]{0,2})?")
_El = etree._Element
#: BkTxCd sub-families that return or reverse an earlier payment (ISO external code set):
#: reversal due to payment return / cancellation request / payment reversal, unpaid direct
#: debit, ACH return and reversal, unpaid cheque, unpaid card transaction
RETURN_SUBFAMILIES = frozenset({"RRTN", "RPCR", "PRDD", "UPDD", "ARET", "AREV", "UPCQ", "UPCT"})


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
        self.skipped: list[SkippedItem] = []

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
        accounts: list[str] = []
        for n_pos, ntfctn in enumerate(ntfctns, 1):
            account = _text(ntfctn, "Acct/Id/IBAN") or _text(ntfctn, "Acct/Id/Othr/Id")
            if account and account not in accounts:
                accounts.append(account)
            for e_pos, ntry in enumerate(ntfctn.findall("Ntry"), 1):
                self.entry(ntry, f"{msg_id}/{n_pos}/{e_pos}", e_pos, payments, totals)
        self.make_unique(payments)
        currencies = {c for _, c in totals}
        control = sum((a for a, _ in totals), Decimal("0.00")) if len(currencies) <= 1 else None
        pf = PaymentFile(format=FORMAT, payments=payments, reference=msg_id,
                         control_total=control, warnings=self.warnings, skipped=self.skipped,
                         accounts=accounts)
        pf.set_aside_non_incoming()          # e.g. a CRDT of 0.00: no money received
        return pf

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
        reversal = _text(ntry, "RvslInd") in ("true", "1")
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
        signed_entry = amount if direction == "CRDT" else -amount
        totals.append((signed_entry, ccy))
        if not txs:
            ref = acct_ref or _text(ntry, "NtryRef") or derived
            why = _not_a_payment(direction, reversal, entry_code, None)
            if why is not None:
                self.skipped.append(SkippedItem(ref, signed_entry, ccy, why,
                                                bank_code=entry_code))
                return
            payments.append(BankPayment(
                format=FORMAT, archive_ref=ref, amount=amount, currency=ccy,
                payment_date=value_date, booking_date=booking, bank_code=entry_code,
                text=_text(ntry, "AddtlNtryInf")))
            return
        parts: list[tuple[Decimal, str, str]] = []
        for t_pos, tx in enumerate(txs, 1):
            tx_amount, tx_ccy = self.tx_amount(tx, ccy, label, amount if len(txs) == 1 else None)
            tx_direction = _text(tx, "CdtDbtInd") or direction    # v02: inherited
            if tx_direction not in ("CRDT", "DBIT"):
                raise self.err(tx, f"{label}: TxDtls CdtDbtInd must be CRDT or DBIT, got "
                               f"{tx_direction!r}")
            parts.append((tx_amount, tx_ccy, tx_direction))
            ref = _text(tx, "Refs/AcctSvcrRef") or (acct_ref if len(txs) == 1 else None) \
                or f"{derived}/{t_pos}"
            ustrd = [u.text.strip() for u in tx.findall("RmtInf/Ustrd") if u.text and u.text.strip()]
            refs = [r.text.strip() for r in tx.findall("RmtInf/Strd/CdtrRefInf/Ref")
                    if r.text and r.text.strip()]
            text = " / ".join(ustrd) or None
            kid = refs[0] if refs else None
            if kid is None and text:
                kid, _rejected = find_kid_in_text(text)
            code = _bank_code(tx) or entry_code
            why = _not_a_payment(tx_direction, reversal, code, _return_reason(tx))
            if why is None and _is_return(entry_code):
                why = _not_a_payment(tx_direction, reversal, entry_code, None)
            if why is not None:
                self.skipped.append(SkippedItem(
                    ref, tx_amount if tx_direction == "CRDT" else -tx_amount, tx_ccy, why,
                    kid=kid, bank_code=code))
                continue
            if len(refs) > 1:
                extra = "references: " + ", ".join(refs)
                text = f"{text} / {extra}" if text else extra
            payments.append(BankPayment(
                format=FORMAT, archive_ref=ref, amount=tx_amount, currency=tx_ccy,
                payment_date=self.date(tx, "RltdDts/AccptncDtTm", "RltdDts/IntrBkSttlmDt")
                or value_date,
                booking_date=booking, kid=kid,
                payer_name=_text(tx, "RltdPties/Dbtr/Nm") or _text(tx, "RltdPties/Dbtr/Pty/Nm"),
                payer_account=_text(tx, "RltdPties/DbtrAcct/Id/IBAN")
                or _text(tx, "RltdPties/DbtrAcct/Id/Othr/Id"),
                bank_code=code, text=text))
        if all(c == ccy for _, c, _ in parts):
            # per direction: a transaction in the entry's direction adds, the other subtracts
            total = sum((a if d == direction else -a for a, _, d in parts), Decimal("0.00"))
            if total != amount:
                raise self.err(ntry, f"{label}: the {len(parts)} TxDtls add up to {total} "
                               f"{ccy}, the entry amount is {amount} {ccy}")
        else:
            self.warnings.append(f"{self.name}: line {ntry.sourceline}: {label}: TxDtls in "
                                 f"another currency than the entry ({ccy}); total not checked")

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


def _is_return(code: str | None) -> bool:
    parts = code.split("/") if code else []
    return len(parts) == 3 and parts[2] in RETURN_SUBFAMILIES


def _return_reason(tx: _El) -> str | None:
    """"reason AC04 (text)" from TxDtls/RtrInf; "no reason given" for an RtrInf without one;
    None when the transaction has no RtrInf."""
    rtr = tx.find("RtrInf")
    if rtr is None:
        return None
    code = _text(rtr, "Rsn/Cd") or _text(rtr, "Rsn/Prtry")
    info = " ".join(t.text.strip() for t in rtr.findall("AddtlInf") if t.text and t.text.strip())
    if code is None:
        return f"no reason code ({info[:140]})" if info else "no reason given"
    return f"reason {code}" + (f" ({info[:140]})" if info else "")


def _not_a_payment(direction: str, reversal: bool, code: str | None,
                   returned: str | None) -> str | None:
    """Why an entry or transaction is not a customer's payment; None when it is one.
    ``returned`` is the RtrInf reason (see _return_reason), None without RtrInf."""
    if returned is None and _is_return(code):
        returned = "no reason given"
    if reversal:
        why = f"reversal of an earlier {'debit' if direction == 'CRDT' else 'credit'} (RvslInd)"
        return f"{why}, returned, {returned}" if returned else why
    if returned is not None:
        what = "returned transfer" if direction == "CRDT" else "payment returned to the payer"
        return f"{what}, {returned}"
    if direction == "DBIT":
        return "debit (outgoing payment)"
    return None


def read_camt054(data: bytes, name: str = "<bytes>") -> PaymentFile:
    """Read a camt.054 notification. Raises InputError naming the file and XML line."""
    return _Reader(name).read(data)
