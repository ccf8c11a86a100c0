"""Which payment format is this file, is it complete, and read it without ever crashing.

``read_payment_file`` is the one entry point for the inbox: whatever the bytes are, the
caller gets a PaymentFile or an InputError naming the file.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from reskontro.domain import InputError, PaymentFile

from . import edifact
from .camt054 import read_camt054
from .cremul import read_cremul
from .ocr_giro import read_ocr_giro

DEFAULT_MAX_BYTES = 64 * 1024 * 1024
_READERS: dict[str, Callable[[bytes, str], PaymentFile]] = {
    "cremul": read_cremul,
    "camt054": read_camt054,
    "ocr_giro": read_ocr_giro,
}
_XML_END = re.compile(rb"</(?:[A-Za-z_][\w.-]*:)?Document\s*>\s*\Z")


def _head(data: bytes) -> bytes:
    return data[:4096].lstrip(b"\xef\xbb\xbf \t\r\n")


def sniff_format(data: bytes) -> str | None:
    """"cremul", "camt054", "ocr_giro" or None, from the first few KB only."""
    head = _head(data)
    if head.startswith((b"UNA", b"UNB")):
        return "cremul"
    # a broken service segment (UNE:+,...) still goes to the CREMUL reader for a precise error
    if head.startswith(b"UN") and b"CREMUL" in head.replace(b"\r", b"").replace(b"\n", b""):
        return "cremul"
    if head.startswith(b"NY000010"):
        return "ocr_giro"
    if head.startswith(b"<") and (b"camt.054" in head or b"BkToCstmrDbtCdtNtfctn" in head):
        return "camt054"
    return None


def is_complete(data: bytes) -> bool:
    """Whether the format's end marker is present: UNZ for EDIFACT, the closed root element
    for camt.054, record 89 for OCR giro. False for unknown formats."""
    fmt = sniff_format(data)
    if fmt == "cremul":
        return edifact.is_complete(data)
    if fmt == "camt054":
        return bool(_XML_END.search(data[-1024:]))
    if fmt == "ocr_giro":
        lines = data[-400:].rstrip(b"\r\n \t").splitlines()
        return bool(lines) and lines[-1].startswith(b"NY000089")
    return False


_SIGNATURES = (b"UNA", b"UNB", b"NY000010")
_SNIFF = 4096
# XML: what comes before the root (declaration, comments, processing instructions, DOCTYPE)
_XML_PROLOG = re.compile(rb"<\?.*?\?>|<!--.*?-->|<![^<>]*>", re.S)
_XML_START = re.compile(rb"<(?:[A-Za-z_][\w.-]*:)?([A-Za-z_][\w.-]*)(?:\s[^<>]*?)?(/?)>")


def is_unknown(data: bytes) -> bool:
    """Whether a file starting with `data` (possibly still being written) can be no known
    payment file: its head is none of the formats and can no longer become one. Then it is
    complete as it is, and fails at once ("not a known payment file format") instead of
    waiting for an end marker it will never have. A head that may still grow into a format
    (``UN``, an XML declaration with no root yet, nothing but white space) is not unknown."""
    if sniff_format(data) is not None:
        return False
    head = _head(data)
    if not head:
        return False
    settled = len(data) >= _SNIFF        # the sniffer never looks further: it stays unknown
    if head.startswith(b"<"):
        return settled or _xml_not_camt(head)
    if any(len(head) < len(sig) and sig.startswith(head) for sig in _SIGNATURES):
        return False
    if head.startswith(b"UN"):           # a broken service segment: CREMUL may still come
        return settled
    return True


def _xml_not_camt(head: bytes) -> bool:
    """The XML so far shows it is no camt.054: its root is not Document, or Document is empty,
    closed, or its first child is something else."""
    tags = _XML_START.findall(_XML_PROLOG.sub(b"", head))
    if not tags:
        return False                         # no root element yet
    root, empty = tags[0]
    if root != b"Document" or empty:
        return True
    if len(tags) > 1:
        return tags[1][0] != b"BkToCstmrDbtCdtNtfctn"
    return bool(_XML_END.search(head))       # <Document ...></Document>


def read_payment_bytes(data: bytes, name: str) -> PaymentFile:
    """Sniff and read; any failure becomes an InputError whose message starts with name."""
    if not data.strip():
        raise InputError(f"{name}: empty file")
    fmt = sniff_format(data)
    if fmt is None:
        raise InputError(f"{name}: not a known payment file format (CREMUL, camt.054, OCR giro): "
                         f"starts with {data[:16]!r}")
    try:
        pf = _READERS[fmt](data, name)
        pf.set_aside_non_incoming()     # whatever the reader made of it: only money received
        return pf
    except InputError as e:
        if str(e).startswith(f"{name}:"):
            raise
        raise InputError(f"{name}: {e}") from e
    except Exception as e:  # noqa: BLE001 - bad input must never crash the caller
        raise InputError(f"{name}: unexpected {type(e).__name__} while reading {fmt}: {e}") \
            from e


def read_payment_file(path: Path, *, max_bytes: int = DEFAULT_MAX_BYTES) -> PaymentFile:
    """Read a CREMUL, camt.054 or OCR giro file. Raises only InputError.

    Files over ``max_bytes`` are refused before reading (a payment file is kilobytes to a
    few megabytes; anything huge is a mistake or an attack).
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise InputError(f"{path.name}: {size} bytes is over the {max_bytes}-byte limit for "
                             "payment files")
        with path.open("rb") as f:
            data = f.read(max_bytes + 1)       # the file may grow after stat
    except OSError as e:
        raise InputError(f"{path.name}: cannot read: {e.strerror or e}") from e
    if len(data) > max_bytes:
        raise InputError(f"{path.name}: over the {max_bytes}-byte limit for payment files")
    return read_payment_bytes(data, path.name)
