"""`reskontro import`: ERP exports into the ledger store, idempotent and all-or-nothing per file."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine

from reskontro.adapters.ledger_import import LedgerBatch, read_ledger_file, refusal

from reskontro.ledger import schema as s
from reskontro.ledger.bankref import resolve, write_resolved
from reskontro.ledger.store import Ledger


@dataclass(frozen=True)
class ImportResult:
    path: Path
    customers: tuple[int, int]     # (new, changed)
    entries: tuple[int, int]
    matches: tuple[int, int]
    same_as_booked: int = 0        # the ERP's copies of entries this service booked (not stored twice)
    notes: tuple[str, ...] = ()    # what the import holds for a person (bank-ref-conflict)

    @property
    def unchanged(self) -> bool:
        return not any(self.customers + self.entries + self.matches)


def _customers(path: Path, batch: LedgerBatch, ledger: Ledger) -> list[str]:
    """Every entry's customer must be in this file or in the store."""
    errors: list[str] = []
    in_file_c = {c.id for c in batch.customers} | {i for k, i in batch.refused if k == "customer"}
    want_c = {e.customer_id for e in batch.entries} - in_file_c
    known_c = ledger.existing_ids(s.customers, want_c)
    for e in batch.entries:
        if e.customer_id not in in_file_c and e.customer_id not in known_c:
            errors.append(f"{path.name}:{batch.lines[('entry', e.id)]}: customer_id: "
                          f"unknown customer {e.customer_id!r}")
    return errors


def _references(path: Path, batch: LedgerBatch, ledger: Ledger, refused: set) -> list[str]:
    """Entries named by matches and reversals must be in this file (`refused`: bad rows, which
    are reported already) or in the store."""
    errors: list[str] = []
    line = lambda kind, i: f"{path.name}:{batch.lines[(kind, i)]}"  # noqa: E731
    in_file_e = {e.id for e in batch.entries} | {i for k, i in refused if k == "entry"}
    wanted = {m for mt in batch.matches for m in mt.entry_ids} | {e.reverses for e in batch.entries if e.reverses}
    # in-file entries too: re-exporting an entry must not let a new match take it from a stored one
    known_e = ledger.entry_matches(wanted)
    for e in batch.entries:
        if e.reverses and e.reverses not in in_file_e and e.reverses not in known_e:
            errors.append(f"{line('entry', e.id)}: reverses: unknown entry {e.reverses!r}")
    file_matches = {m.id for m in batch.matches}
    for mt in batch.matches:
        for eid in mt.entry_ids:
            if eid not in in_file_e and eid not in known_e:
                errors.append(f"{line('match', mt.id)}: entries: unknown entry {eid!r}")
            current = known_e.get(eid)
            if current and current != mt.id and current not in file_matches:
                errors.append(f"{line('match', mt.id)}: entries: {eid!r} is in match {current!r}; "
                              "an entry belongs to at most one match (send that match's new members too)")
    return errors


def import_files(engine: Engine, paths: list[Path],
                 progress: Callable[[Path, int], None] | None = None) -> list[ImportResult]:
    """Import each file in its own transaction; stop at the first bad file (earlier ones stay).
    A bad file is refused with every problem at once: its bad rows, and what its good rows
    name that is in neither the file nor the store. `progress(path, i)` as file i starts."""
    results = []
    for i, path in enumerate(paths):
        if progress:
            progress(path, i)
        problems: list[str] = []
        batch = read_ledger_file(path, problems)
        with engine.begin() as conn:
            ledger = Ledger(conn)
            errors = problems + _customers(path, batch, ledger)
            # In the store's ids: the ERP's copies of what this service booked map onto it.
            res = resolve(path, batch, conn)
            errors += res.errors or _references(path, res.batch, ledger, batch.refused)
            if errors:
                raise refusal(path, errors)
            c = ledger.upsert_customers(res.batch.customers)
            e = ledger.upsert_entries(res.batch.entries)
            m = ledger.set_matches(res.batch.matches)
            write_resolved(conn, res)
        results.append(ImportResult(path, c, e, m, res.same, tuple(res.messages)))
    return results
