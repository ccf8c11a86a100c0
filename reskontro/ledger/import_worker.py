"""Reading the second half of a big JSON Lines file in a second process, for `reskontro import`.

A million-entry file spends most of its import reading it: the JSON, every field's checks, the
versions. The machine's second core reads the second half (from the start of the line after
the middle byte) into staging tables of a scratch SQLite file, exactly the rows the importer
stages itself, while the importer reads the first half; the importer then copies those rows in
(in SQL, nothing per row in Python) and goes on as if it had read them. Line numbers are the
file's own (this process counts the lines before its half), so its problems read as the
importer's. Should it fail, the importer reads that half itself: it costs time, never a check.

Protocol: ``python -m reskontro.ledger.import_worker FILE START SCRATCH``. The answer is the
scratch file: tables ``imp_*`` (as the importer's), ``problems`` (the first MAX_SHOWN texts, in
file order) and ``result`` (the count of problems, and the message of a file that cannot be
read at all, or NULL), all in one transaction committed last: no ``result`` row, no answer.
"""
from __future__ import annotations

import sqlite3
import sys
from pathlib import Path

from reskontro.adapters.ledger_import import Problems, lines_before, read_records
from reskontro.domain import InputError

TABLES = ("imp_customers", "imp_entries", "imp_matches", "imp_members")


class _Raw:
    """What the importer's _Stager needs of a connection, on a plain sqlite3 one."""

    class dialect:      # noqa: N801 - mirrors sqlalchemy's Connection.dialect
        name = "sqlite"
        paramstyle = "qmark"

    def __init__(self, con: sqlite3.Connection) -> None:
        self.exec_driver_sql = con.executemany


def main(argv: list[str]) -> int:
    from reskontro.ledger.importer import _STAGE, _Stager

    path, start, scratch = Path(argv[1]), int(argv[2]), argv[3]
    con = sqlite3.connect(scratch, isolation_level=None)
    con.execute("PRAGMA journal_mode=OFF")        # a scratch file: written once, read once, then gone
    con.execute("PRAGMA synchronous=OFF")
    con.execute("BEGIN")
    for t in _STAGE.sorted_tables:
        if t.name in TABLES:
            con.execute(f"CREATE TABLE {t.name} ({', '.join(t.c.keys())})")
    con.execute("CREATE TABLE problems (n INTEGER, text TEXT)")
    con.execute("CREATE TABLE result (count INTEGER, fatal TEXT)")
    problems = Problems(path.name)
    stager = _Stager(_Raw(con))
    fatal = None
    try:
        for kind, line, row in read_records(path, problems, start=start, first_line=lines_before(path, start) + 1):
            stager.add(kind, line, row)
        stager.flush()
    except InputError as exc:          # not UTF-8, unreadable: the file is refused whole
        fatal = str(exc)
    con.executemany("INSERT INTO problems VALUES (?, ?)", enumerate(problems.shown))
    con.execute("INSERT INTO result VALUES (?, ?)", (problems.count, fatal))
    con.execute("COMMIT")
    con.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
