"""Errors the operator must act on, as one line naming the file or resource: a full disk, a
damaged or unreadable store, an unreadable file. Used by the CLI (one line and exit status 1
instead of a traceback) and by the nightly cycle's step summaries."""
from __future__ import annotations

import sqlite3
from contextlib import contextmanager
from pathlib import Path
from collections.abc import Iterator

from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError


class StoreError(RuntimeError):
    """The store cannot be trusted (it failed its integrity check) or not be opened at all."""


class ExportError(RuntimeError):
    """Tonight's file could not be written (a read-only or full outbox, say); nothing of it
    counts as sent. The message names the file and what the operator does about it."""


# What an operator acts on, below the front ends: the disk, a file, the store.
OPERATOR_ERRORS: tuple[type[BaseException], ...] = (OSError, SQLAlchemyError, sqlite3.Error, StoreError,
                                                    ExportError)

_DAMAGED = ("file is not a database", "database disk image is malformed")


def store_name(url) -> str:
    """The store as a person knows it: the SQLite file, else the URL without its password."""
    u = make_url(str(url)) if not hasattr(url, "drivername") else url
    if u.drivername.startswith("sqlite"):
        return u.database or ":memory:"
    return u.render_as_string(hide_password=True)


def one_line(text: str, limit: int = 500) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


def describe(exc: BaseException, store: str | None = None) -> str:
    """One line for `exc`: the file or resource first, then what is wrong with it."""
    if isinstance(exc, OSError):
        what = exc.strerror or str(exc) or type(exc).__name__
        if exc.filename is not None:
            where = str(exc.filename) + (f" -> {exc.filename2}" if exc.filename2 is not None else "")
            return one_line(f"{where}: {what}")
        return one_line(what)
    if isinstance(exc, (SQLAlchemyError, sqlite3.Error)):
        orig = getattr(exc, "orig", None) or exc
        text = str(orig).splitlines()[0] if str(orig) else type(orig).__name__
        if any(d in text for d in _DAMAGED):
            text += ": the store is damaged; restore it from a backup"
        return one_line(f"store {store}: {text}" if store else f"store: {text}")
    return one_line(str(exc) or type(exc).__name__)


@contextmanager
def about(resource: Path | str) -> Iterator[None]:
    """An OSError that names no file (a write on a full disk) is about `resource`."""
    try:
        yield
    except OSError as exc:
        if exc.filename is None:
            exc.filename = str(resource)
        raise
