"""Opening a store: a store marked current is opened with one query (no create_all, no
reflection of every table: a quarter of a fleet creditor's night on PostgreSQL); a new store,
an older one, or one changed by hand since it was marked, is brought up to date."""
from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from reskontro.ledger import migrate
from reskontro.ledger.store import open_engine


@pytest.fixture
def upgrades(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    real = migrate.upgrade

    def counting(engine):
        calls.append(str(engine.url))
        return real(engine)
    monkeypatch.setattr(migrate, "upgrade", counting)
    return calls


def test_a_current_store_is_not_upgraded_again_and_a_changed_one_is(tmp_path: Path, upgrades: list[str]) -> None:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    open_engine(url).dispose()
    assert len(upgrades) == 1                                   # new: made and marked
    open_engine(url).dispose()
    assert len(upgrades) == 1                                   # current: one query, nothing else
    con = sqlite3.connect(tmp_path / "store.db")
    con.execute("DROP INDEX ix_entries_bank_ref")               # someone changed it by hand
    con.commit()
    con.close()
    open_engine(url).dispose()
    assert len(upgrades) == 2
    con = sqlite3.connect(tmp_path / "store.db")
    assert con.execute("SELECT 1 FROM sqlite_master WHERE name = 'ix_entries_bank_ref'").fetchone() == (1,)
    con.execute("UPDATE meta SET value = 'an older version' WHERE key = 'schema'")
    con.commit()
    con.close()
    open_engine(url).dispose()
    assert len(upgrades) == 3
    open_engine(url).dispose()
    assert len(upgrades) == 3


def test_the_fingerprint_follows_the_schema(monkeypatch: pytest.MonkeyPatch) -> None:
    from reskontro.ledger import schema as s
    before = migrate.fingerprint()
    migrate.fingerprint.cache_clear()
    monkeypatch.setattr(s.bank_payments.c.kid.type, "length", 36)
    try:
        assert migrate.fingerprint() != before
    finally:
        migrate.fingerprint.cache_clear()
