"""The checker: the XSD compiled once, any number of files checked with it.

``TransferChecker.check`` runs one streaming pass (scan.py) with the XSD validated while
parsing, then confirms any repeated id (ids.py); a file that fails is read again, slowly
and thoroughly (``_diagnose``), so every error gets its line and id. The receiver model uses
the same pass (``check(..., collect=True)``) to get the file's content, so each rule lives in
this package only.
"""
from __future__ import annotations

import io
import os
from decimal import InvalidOperation
from pathlib import Path
from typing import BinaryIO, Callable

from lxml import etree

from reskontro.transfer.contract.ids import _confirm_repeats
from reskontro.transfer.contract.records import (MAX_ERRORS, CheckResult, ContractError,
                                                 ContractViolation, _TooMany)
from reskontro.transfer.contract.scan import _Scan
from reskontro.transfer.contract.structure import (_PROLOG_LIMIT, _clean, _iterparse, _Joined,
                                                   _prolog_problem, _schemas,
                                                   _streaming_xsd_message)


class TransferChecker:
    """The XSD compiled once; ``check`` any number of files with it."""

    def __init__(self, xsd_path: Path, *, base_currency: str | None = None,
                 max_errors: int = MAX_ERRORS) -> None:
        self.xsd_path = Path(xsd_path)
        self.base_currency = base_currency
        self.max_errors = max_errors
        self._streaming, self._records = _schemas(self.xsd_path)

    def check(self, source: Path | bytes, name: str | None = None, *,
              known_customer: Callable[[str], bool] = lambda _: False,
              known_entry_type: Callable[[str], str | None] = lambda _: None,
              collect: bool = False, into: CheckResult | None = None) -> CheckResult:
        """Every contract error of the file (none: it may be sent). With ``collect`` the
        result also carries the file's content (for the receiver model); ``into`` is a result
        whose customers, entries and matches are anything with ``append`` (records then
        stream there, e.g. into the journal, instead of piling up). With errors, what went
        there is incomplete: drop it."""
        if isinstance(source, bytes):
            name = name or "transfer file"
            head = source[:_PROLOG_LIMIT]
            size = len(source)
            open_source: Callable[[], BinaryIO | str] = lambda: io.BytesIO(source)
        else:
            path = Path(source)
            name = name or path.name
            with path.open("rb") as f:
                head = f.read(_PROLOG_LIMIT)
                size = os.fstat(f.fileno()).st_size
            open_source = lambda: str(path)
        return self._check(head, open_source(), open_source, size, name, lambda: None,
                           known_customer, known_entry_type, collect or into is not None, into)

    def check_stream(self, stream: BinaryIO, path: Path, *, size: int, name: str | None = None,
                     known_customer: Callable[[str], bool] = lambda _: False,
                     known_entry_type: Callable[[str], str | None] = lambda _: None,
                     ) -> CheckResult:
        """Check the bytes of ``path`` read from ``stream`` while they are being written, so
        checking overlaps writing. ``size`` is the expected size
        (it only sizes the id tables). A second reading (the diagnosis of a failing file,
        confirming a repeated id) reads ``path`` itself, complete once the stream has ended;
        the stream is read to its end first (when it is a pipe, the writer never waits on
        this reader)."""
        path = Path(path)
        head = b""        # a stream may give fewer bytes than asked before its end
        while len(head) < _PROLOG_LIMIT and (more := stream.read(_PROLOG_LIMIT - len(head))):
            head += more

        def drain() -> None:
            while stream.read(1 << 20):
                pass
        return self._check(head, _Joined(head, stream), lambda: str(path), size, name or path.name,
                           drain, known_customer, known_entry_type, False)

    def _check(self, head: bytes, first: BinaryIO | str, open_source: Callable[[], BinaryIO | str],
               size: int, name: str, drain: Callable[[], None],
               known_customer: Callable[[str], bool],
               known_entry_type: Callable[[str], str | None], collect: bool,
               into: CheckResult | None = None) -> CheckResult:
        problem = _prolog_problem(head)
        if problem:
            drain()
            code = "doctype" if "DOCTYPE" in problem else "not_well_formed"
            return CheckResult([ContractError(1, None, problem, None, code, name)])

        def new_scan() -> _Scan:
            return _Scan(name, known_customer, known_entry_type, self.base_currency,
                         collect, self.max_errors, size)

        scan = new_scan()
        if into is not None:
            scan.result = into
        xsd_message: str | None = None
        try:
            try:
                scan.run(_iterparse(first, self._streaming), None)
            finally:
                drain()
            _confirm_repeats(scan, open_source)
            return scan.result
        except etree.XMLSyntaxError as streamed:
            xsd_message = _clean(str(streamed))
        except (_TooMany, IndexError, AttributeError, TypeError, InvalidOperation):
            pass   # too many errors, or positional reading met a record the XSD rejects
        return self._diagnose(new_scan(), open_source, xsd_message)

    def _diagnose(self, scan: _Scan, open_source: Callable[[], BinaryIO | str],
                  xsd_message: str | None) -> CheckResult:
        """The slow, thorough pass for a file that failed: no streaming validator, each
        record validated alone (so each XSD error gets its line and id), children read by
        tag, errors sorted by line."""
        errors = scan.result.errors
        try:
            scan.run(_iterparse(open_source(), None), self._records)
        except etree.XMLSyntaxError as broken:
            errors.append(ContractError(broken.lineno or None, None,
                                        f"not well-formed XML: {_clean(broken.msg)}", None,
                                        "not_well_formed", scan.name))
        except _TooMany:
            errors.append(ContractError(None, None, f"stopped after {len(errors)} errors",
                                        None, "too_many_errors", scan.name))
        else:
            try:
                _confirm_repeats(scan, open_source)
            except _TooMany:      # the limit reached among the repeated ids: say so too
                errors.append(ContractError(None, None, f"stopped after {len(errors)} errors",
                                            None, "too_many_errors", scan.name))
            if not any(e.code == "xsd" for e in errors):
                # a document-level XSD error (order, wrappers, root): no single record has it
                if xsd_message is None:
                    xsd_message = _streaming_xsd_message(open_source(), self._streaming)
                if xsd_message is not None:
                    errors.append(ContractError(None, None, f"XSD: {xsd_message}", None, "xsd",
                                                scan.name))
        errors.sort(key=lambda e: e.line or 0)
        return scan.result


def check_transfer_file(path: Path, xsd_path: Path, *,
                        known_customer: Callable[[str], bool] = lambda _: False,
                        known_entry_type: Callable[[str], str | None] = lambda _: None,
                        ) -> list[ContractError]:
    """Every contract error of the file at ``path``; an empty list means it may be sent."""
    return TransferChecker(xsd_path).check(Path(path), known_customer=known_customer,
                                           known_entry_type=known_entry_type).errors


def assert_sendable(path: Path, xsd_path: Path, **kw: Callable) -> None:
    """Raise ContractViolation (carrying every error) unless the file may be sent."""
    errors = check_transfer_file(path, xsd_path, **kw)
    if errors:
        raise ContractViolation(errors)
