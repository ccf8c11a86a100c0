"""`reskontro import`: ERP exports into the ledger store, idempotent and all-or-nothing per file."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine

from reskontro.adapters.ledger_import import LedgerBatch, read_ledger_file

from reskontro.ledger import schema as s
from reskontro.ledger.bankref import resolve, write_resolved
from reskontro.domain import InputError
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


def _references(path: Path, batch: LedgerBatch, ledger: Ledger) -> list[str]:
    """References must resolve in this file or in the store."""
    errors: list[str] = []
    line = lambda kind, i: f"{path.name}:{batch.lines[(kind, i)]}"  # noqa: E731
    in_file_c = {c.id for c in batch.customers}
    want_c = {e.customer_id for e in batch.entries} - in_file_c
    known_c = ledger.existing_ids(s.customers, want_c)
    for e in batch.entries:
        if e.customer_id not in in_file_c and e.customer_id not in known_c:
            errors.append(f"{line('entry', e.id)}: customer_id: unknown customer {e.customer_id!r}")
    in_file_e = {e.id for e in batch.entries}
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


def import_files(engine: Engine, paths: list[Path]) -> list[ImportResult]:
    """Import each file in its own transaction; stop at the first bad file (earlier ones stay)."""
    results = []
    for path in paths:
        batch = read_ledger_file(path)
        with engine.begin() as conn:
            ledger = Ledger(conn)
            # In the store's ids: the ERP's copies of what this service booked map onto it.
            res = resolve(path, batch, conn)
            batch = res.batch
            errors = res.errors or _references(path, batch, ledger)
            if errors:
                raise InputError(f"{path.name}: {len(errors)} problem(s), nothing imported:\n"
                                 + "\n".join(errors[:25]))
            c = ledger.upsert_customers(batch.customers)
            e = ledger.upsert_entries(batch.entries)
            m = ledger.set_matches(batch.matches)
            write_resolved(conn, res)
        results.append(ImportResult(path, c, e, m, res.same, tuple(res.messages)))
    return results
