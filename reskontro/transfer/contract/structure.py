"""Reading a file: the XML, the XSD, streaming.

Spec rules enforced here (and by the XSD, ``templates/ledger-transfer-1.xsd``):
- "Encoding UTF-8, XML 1.0, no DTD, no external entities": ``_prolog_problem`` refuses a
  DOCTYPE or a non-UTF-8 file before lxml sees it, the parser is hardened (no network, no
  DTD, no entity expansion), and ``StructureRules.document`` reports what the parser saw
  (codes ``doctype``, ``encoding``, ``not_well_formed``);
- "Structure": the namespace, root and version, element order, cardinalities (``+ ? *``, a
  Match's 2 or more EntryRefs), the lengths and patterns (ids 1-35 chars, SenderId,
  FileId's shape, Kind, Type, dates, Amount with exactly 2 fraction digits, ISO currency and
  country codes, KID's 2-25 digits) are the XSD's (code ``xsd``).

The XSD is validated while parsing (libxml2's streaming validator). Its identity constraints
(xs:unique) are stripped from the copy used here: libxml2 keeps every key of the file in
memory (~1 KB per entry, 190 MB at 200k entries), and the same checks are done in Python
(ids.py, matches.py, sums.py) with less memory and better messages. libxml2's streaming
validator gives no line numbers and stops at its first bad chunk, so a file that fails is
read a second time without it: each record is validated on its own (``record_xsd``), which
names the line and id of every XSD error.
"""
from __future__ import annotations

import re
from copy import deepcopy
from datetime import datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import BinaryIO, Iterator

from lxml import etree

NS = "urn:reskontro:ledger-transfer:1"
_XS = "{http://www.w3.org/2001/XMLSchema}"
_PROLOG_LIMIT = 65536
# records kept in the tree before the finished ones are dropped
_BATCH = 1024   # no mutate: memory


def _q(local: str) -> str:
    return f"{{{NS}}}{local}"


T_HEADER, T_CUSTOMER, T_ENTRY, T_MATCH, T_TRAILER = map(
    _q, ("Header", "Customer", "Entry", "Match", "Trailer"))
T_CREF, T_DOCNO, T_DOCDATE, T_DUE, T_AMOUNT, T_KID, T_TEXT = map(
    _q, ("CustomerRef", "DocumentNo", "DocumentDate", "DueDate", "Amount", "KID", "Text"))
T_ADDRESS, T_LINE, T_ENTRYREF, T_CONTROLSUM, T_ORGNO = map(
    _q, ("Address", "Line", "EntryRef", "ControlSum", "OrgNo"))
_RECORD_KIND = {T_HEADER: "Header", T_CUSTOMER: "Customer", T_ENTRY: "Entry",
                T_MATCH: "Match", T_TRAILER: "Trailer"}

_CUSTOMER_FIELDS = {_q(k): k for k in ("Type", "Name", "OrgNo", "Email", "Phone")}
_ADDRESS_FIELDS = {_q(k): k for k in ("PostCode", "City", "Country")}
_HEADER_FIELDS = {_q(k): k for k in ("SenderId", "CreditorOrgNo", "FileId", "Sequence", "Kind",
                                      "CreatedAt", "CutOff")}
_TRAILER_COUNTS = {_q(k): k for k in ("CustomerCount", "EntryCount", "MatchCount")}

_NS_PREFIX = re.compile(r"\{" + re.escape(NS) + r"\}")
_POSITION = re.compile(r"\s*\([^()]*, line 0\)$")
_PROLOG_ITEM = re.compile(rb"\s+|<\?.*?\?>|<!--.*?-->", re.S)


# ---------------------------------------------------------------- the XSD

def _hardened_parser() -> etree.XMLParser:
    return etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False,
                           dtd_validation=False, huge_tree=False)


def _schemas(xsd_path: Path) -> tuple[etree.XMLSchema, etree.XMLSchema]:
    """(streaming schema without identity constraints, per-record schema for diagnosis)."""
    doc = etree.parse(str(xsd_path), _hardened_parser())
    for unique in list(doc.getroot().iter(_XS + "unique", _XS + "key", _XS + "keyref")):
        unique.getparent().remove(unique)
    streaming = etree.XMLSchema(doc)
    records = deepcopy(doc)
    root = records.getroot()
    for local in ("Header", "Customer", "Entry", "Match", "Trailer"):
        etree.SubElement(root, _XS + "element", name=local, type=f"lt:{local}")
    return streaming, etree.XMLSchema(records)


def _clean(message: str) -> str:
    """libxml2's message without the namespace noise and the useless "(<string>, line 0)"."""
    return _POSITION.sub("", _NS_PREFIX.sub("", message))


class StructureRules:
    """The pass's checks of the document and of each record against the XSD (a mixin of
    scan._Scan: ``self.error`` is the pass's)."""

    def record_xsd(self, el: etree._Element, tag: str, records: etree.XMLSchema) -> None:
        """The diagnosis pass: ``el`` validated on its own, each XSD error with its line and id."""
        if not records(el):
            kind = _RECORD_KIND[tag]
            ref = el.get("id") if kind in ("Customer", "Entry", "Match") else None
            for err in records.error_log:
                self.error(err.line or el.sourceline, kind, ref, "xsd",
                           f"XSD: {_clean(err.message)}")

    def document(self, root: etree._Element | None) -> None:
        """After the pass: no DOCTYPE, UTF-8."""
        if root is not None:
            info = root.getroottree().docinfo
            if info.doctype:
                self.error(None, None, None, "doctype", "the file has a DOCTYPE")
            if (info.encoding or "UTF-8").upper() not in ("UTF-8", "UTF8"):
                self.error(1, None, None, "encoding",
                           f"the file is encoded {info.encoding}, not UTF-8")


# ---------------------------------------------------------------- fields

def _entry_by_tag(el: etree._Element) -> tuple[str | None, ...]:
    """(CustomerRef, DocumentNo, DocumentDate, DueDate, Amount, currency, KID, Text) texts,
    found by tag: for entries the XSD may have rejected."""
    cref = docno = docdate = due = atext = cur = kid = text = None
    for c in el:
        t = c.tag
        if t == T_AMOUNT:
            atext = c.text
            cur = c.get("currency")
        elif t == T_CREF:
            cref = c.text
        elif t == T_DUE:
            due = c.text
        elif t == T_KID:
            kid = c.text
        elif t == T_DOCNO:
            docno = c.text
        elif t == T_DOCDATE:
            docdate = c.text
        elif t == T_TEXT:
            text = c.text
    return cref, docno, docdate, due, atext, cur, kid, text


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def _decimal(text: str | None) -> Decimal | None:
    if text is None:
        return None
    try:
        d = Decimal(text)
    except InvalidOperation:
        return None
    return d if d.is_finite() else None


def _dt(text: str | None) -> datetime | None:
    try:
        d = datetime.fromisoformat(text.strip()) if text else None
    except ValueError:
        return None
    return d if d is not None and d.utcoffset() is not None else None


# ---------------------------------------------------------------- reading the file

def _prolog_problem(head: bytes) -> str | None:
    """Refuse a DOCTYPE (so any entity declaration) before lxml sees the file."""
    if head.startswith(b"\xef\xbb\xbf"):
        head = head[3:]
    elif head[:2] in (b"\xff\xfe", b"\xfe\xff") or b"\x00" in head[:4]:
        return "the file is not UTF-8"
    pos = 0
    while (m := _PROLOG_ITEM.match(head, pos)) and m.end() > pos:
        pos = m.end()
    rest = head[pos:pos + 9]
    if rest.upper() == b"<!DOCTYPE":
        return "the file has a DOCTYPE: no DTD or entity declarations are allowed"
    if not re.match(rb"<[A-Za-z_:]", rest):
        return "no root element where the file should start"
    return None


class _Events:
    """lxml's iterparse over a file this module opens and always closes: a file lxml opens
    itself stays open until garbage collection when the loop over it stops on an exception of
    ours (the fast pass meeting a record the XSD rejects)."""

    def __init__(self, source: BinaryIO | str, schema: etree.XMLSchema | None) -> None:
        self._file = open(source, "rb") if isinstance(source, str) else None
        kw = {"schema": schema} if schema is not None else {}
        self._events = etree.iterparse(
            self._file or source, events=("end",), tag=list(_RECORD_KIND), resolve_entities=False,
            no_network=True, load_dtd=False, dtd_validation=False, huge_tree=False,
            remove_comments=True, remove_pis=True, **kw)

    def __iter__(self) -> Iterator[tuple[str, etree._Element]]:
        try:
            yield from self._events
        finally:
            if self._file is not None:
                self._file.close()

    @property
    def root(self) -> etree._Element | None:
        return self._events.root


def _iterparse(source: BinaryIO | str, schema: etree.XMLSchema | None) -> _Events:
    """Hardened: no network, no DTD, no entity expansion; comments and PIs dropped (so a
    valid record's children are exactly its elements, in XSD order)."""
    return _Events(source, schema)


def _drop_finished(el: etree._Element) -> None:   # no mutate: memory only
    """Free the records before ``el`` (never those after: the parser may have built them)."""
    parent = el.getparent()
    if parent is not None:
        del parent[:parent.index(el)]
    el.clear()


def _streaming_xsd_message(source: BinaryIO | str, schema: etree.XMLSchema) -> str | None:
    """None when the file is XSD-valid, else libxml2's first message (it has no line)."""
    n = 0        # no mutate: memory (counts records between drops)
    try:
        for _, el in _iterparse(source, schema):
            n += 1                   # no mutate: memory
            if n % _BATCH == 0:      # no mutate: memory
                _drop_finished(el)
    except etree.XMLSyntaxError as e:
        return _clean(str(e))
    return None


class _Joined:
    """The first bytes of a stream (already read) followed by the rest of it."""

    def __init__(self, head: bytes, rest: BinaryIO) -> None:
        self._head, self._rest = head, rest

    def read(self, n: int = -1) -> bytes:
        if not self._head:
            return self._rest.read(n)
        if n < 0:
            out, self._head = self._head + self._rest.read(), b""
            return out
        out, self._head = self._head[:n], self._head[n:]
        return out
