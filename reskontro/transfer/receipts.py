"""The receiver's receipt for one transfer file (spec: Receipts): read it, and write it.

A receipt is small, so it is parsed whole, with a hardened parser (no network, no DTD, no
entity expansion) and every field checked: the sender books files as delivered on the
strength of it, so anything unexpected is an InputError naming the file.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from lxml import etree

from reskontro.domain import InputError

NS = "urn:reskontro:ledger-transfer:1"
STATUSES = ("accepted", "rejected")


def _q(local: str) -> str:
    return f"{{{NS}}}{local}"


@dataclass(frozen=True)
class ReceiptError:
    code: str
    ref: str | None     # an Entry, Customer or Match id
    text: str


@dataclass(frozen=True)
class Receipt:
    file_id: str
    status: str         # accepted | rejected
    received_at: datetime
    errors: tuple[ReceiptError, ...] = ()

    @property
    def accepted(self) -> bool:
        return self.status == "accepted"


def _parser() -> etree.XMLParser:
    return etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False,
                           dtd_validation=False, huge_tree=False, remove_comments=True,
                           remove_pis=True, remove_blank_text=True)


def read_receipt(data: bytes, name: str) -> Receipt:
    """Parse a receipt; InputError (naming ``name`` and the line) on anything malformed."""
    try:
        root = etree.fromstring(data, _parser())
    except etree.XMLSyntaxError as e:
        raise InputError(f"{name} line {e.lineno}: receipt is not well-formed XML: {e.msg}") from e
    info = root.getroottree().docinfo
    if info.doctype or info.internalDTD is not None:
        raise InputError(f"{name}: receipt has a DOCTYPE; no DTD is allowed")
    if root.tag != _q("TransferReceipt"):
        raise InputError(f"{name} line {root.sourceline}: root element is {root.tag}, "
                         f"expected TransferReceipt in namespace {NS}")
    children = list(root)
    fixed = [c for c in children if c.tag != _q("Error")]
    tags = [c.tag for c in fixed]
    want = [_q("FileId"), _q("Status"), _q("ReceivedAt")]
    if tags != want or children[:3] != fixed:
        got = ", ".join(etree.QName(t).localname for t in (c.tag for c in children))
        raise InputError(f"{name} line {root.sourceline}: receipt must hold FileId, Status, "
                         f"ReceivedAt, then Error*; it holds {got or 'nothing'}")
    file_id_el, status_el, at_el = fixed
    file_id = (file_id_el.text or "").strip()
    if not file_id:
        raise InputError(f"{name} line {file_id_el.sourceline}: FileId is empty")
    status = (status_el.text or "").strip()
    if status not in STATUSES:
        raise InputError(f"{name} line {status_el.sourceline}: Status {status!r} is not "
                         f"accepted or rejected")
    received_at = _datetime(at_el, name)
    errors = []
    for el in children[3:]:
        code = (el.get("code") or "").strip()
        if not code:
            raise InputError(f"{name} line {el.sourceline}: Error without a code")
        if len(el):
            raise InputError(f"{name} line {el.sourceline}: Error holds elements, not text")
        errors.append(ReceiptError(code, el.get("ref"), el.text or ""))
    return Receipt(file_id, status, received_at, tuple(errors))


def _datetime(el: etree._Element, name: str) -> datetime:
    text = (el.text or "").strip()
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        value = None
    if value is None or value.utcoffset() is None:
        raise InputError(f"{name} line {el.sourceline}: ReceivedAt {text!r} is not a date-time "
                         "with a UTC offset")
    return value


def render_receipt(receipt: Receipt) -> bytes:
    if receipt.status not in STATUSES:
        raise ValueError(f"receipt status {receipt.status!r}: must be accepted or rejected")
    if receipt.received_at.utcoffset() is None:
        raise ValueError("receipt received_at must carry a time zone")
    root = etree.Element(_q("TransferReceipt"), nsmap={None: NS})
    etree.SubElement(root, _q("FileId")).text = receipt.file_id
    etree.SubElement(root, _q("Status")).text = receipt.status
    etree.SubElement(root, _q("ReceivedAt")).text = receipt.received_at.isoformat()
    for err in receipt.errors:
        el = etree.SubElement(root, _q("Error"), code=err.code)
        if err.ref is not None:
            el.set("ref", err.ref)
        el.text = err.text
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)
