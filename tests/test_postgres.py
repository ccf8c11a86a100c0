"""The same store on PostgreSQL: import, decide, export, receipts and booking.

On a real PostgreSQL in every run: a fresh database of the throwaway cluster the `pg_url`
fixture starts (tests/pg_server.py: initdb + pg_ctl in a temporary folder, a unix socket).
"""
from __future__ import annotations

import shutil
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest
from click.testing import CliRunner

from reskontro.cli import main
from reskontro.site import init_site


def run(site: Path, *args: str) -> str:
    r = CliRunner().invoke(main, ["--site", str(site), *args], catch_exceptions=False)
    assert r.exit_code in (0, 3), r.output          # done (3: the sample's defects are held for a person)
    return r.output


def test_the_nightly_loop_on_postgresql(tmp_path: Path, pg_url: str) -> None:
    from sqlalchemy import create_engine

    from reskontro.transfer import journal
    from reskontro.ledger import schema as s
    from reskontro.adapters.cremul import render_cremul
    from reskontro.domain import BankPayment
    from reskontro.testing.receiver_model import ReceiverModel

    URL = pg_url
    engine = create_engine(URL)

    def uploaded(file_id: str) -> None:
        """As `reskontro send` journals a file it uploads: only then can it have a receipt."""
        with engine.begin() as conn:
            journal.mark_uploaded(conn, file_id)

    s.metadata.drop_all(engine)
    site = tmp_path / "site"
    init_site(site)
    cfg = site / "reskontro.toml"
    cfg.write_text(cfg.read_text().replace('database = "sqlite:///reskontro.db"', f'database = "{URL}"'))
    run(site, "sample", "--customers", "60", "--seed", "3", "--out", str(tmp_path / "l.jsonl"))
    assert "60 / 0" in run(site, "import", str(tmp_path / "l.jsonl"))
    assert "0 / 0" in run(site, "import", str(tmp_path / "l.jsonl"))   # idempotent on PostgreSQL too
    run(site, "export", "--backlog")      # checked in a second process reading PostgreSQL
    receiver = ReceiverModel()
    inbound, outbound = tmp_path / "in", tmp_path / "out"
    inbound.mkdir()
    outbound.mkdir()
    for f in (site / "outbox").glob("*.xml"):
        shutil.copy(f, inbound / f.name)
        uploaded(f.stem)
    (receipt,) = receiver.serve_folder(inbound, outbound)
    assert receipt.status == "accepted", receipt.errors
    for f in outbound.iterdir():
        shutil.copy(f, site / "inbox" / f.name)
    open_invoice, balance = next((i, b) for i, b in sorted(receiver.open_balances().items()) if b > 0)
    with engine.connect() as conn:
        kid = conn.execute(s.entries.select().where(s.entries.c.id == open_invoice)).first().kid
    (site / "inbox" / "CREMUL1.DAT").write_text(render_cremul([BankPayment(
        format="cremul", archive_ref="*1", amount=balance, currency="NOK", payment_date=date.today(),
        booking_date=date.today(), kid=kid)], reference="PG1"), encoding="latin-1")
    assert f"{receipt.file_id}: accepted" in " ".join(run(site, "watch", "--once").split())
    assert "1 invoice closed" in run(site, "post")
    run(site, "export")
    for f in sorted((site / "outbox").glob("*.xml")):
        if not (inbound / "processed" / f.name).exists():
            shutil.copy(f, inbound / f.name)
            uploaded(f.stem)
    (receipt2,) = receiver.serve_folder(inbound, outbound)
    assert receipt2.status == "accepted", receipt2.errors
    assert receiver.open_balances()[open_invoice] == Decimal("0.00")
    s.metadata.drop_all(engine)
    engine.dispose()


def test_a_store_from_before_the_wider_columns_is_widened_in_place(pg_url: str) -> None:
    """bank_payments.kid and bank_code were varchar(25) and (16): a camt.054 creditor reference
    (Max35Text, 27 characters in a real file of the corpus) was refused by PostgreSQL. A store
    made then is widened at open, its rows kept."""
    from sqlalchemy import create_engine, inspect, text

    from reskontro.ledger.store import open_engine
    open_engine(pg_url).dispose()
    old = create_engine(pg_url)
    with old.begin() as conn:
        conn.execute(text("ALTER TABLE bank_payments ALTER COLUMN kid TYPE varchar(25)"))
        conn.execute(text("ALTER TABLE bank_payments ALTER COLUMN bank_code TYPE varchar(16)"))
        conn.execute(text("DELETE FROM meta WHERE key = 'schema'"))     # that version left no mark
        conn.execute(text("INSERT INTO bank_payments (id, archive_ref, format, file_sha256, amount_ore, currency, "
                          "kid, source, status) VALUES ('BP1', 'AR1', 'cremul', 'x', 100, 'NOK', '1234567890123', "
                          "'Lowell', 'unposted')"))
    old.dispose()
    db = open_engine(pg_url)
    widths = {c["name"]: getattr(c["type"], "length", None) for c in inspect(db).get_columns("bank_payments")}
    assert (widths["kid"], widths["bank_code"]) == (35, 35)
    with db.begin() as conn:
        assert conn.execute(text("SELECT kid FROM bank_payments WHERE id = 'BP1'")).scalar() == "1234567890123"
        conn.execute(text("UPDATE bank_payments SET kid = :k WHERE id = 'BP1'"), {"k": "0" * 35})
    db.dispose()


def test_the_nightly_analyze_touches_only_tables_changed_enough(pg_url: str) -> None:
    """ANALYZE of every table every night was a good part of a fleet creditor's night; only
    the never-analysed ones and those changed by more than autovacuum's threshold are."""
    from sqlalchemy import text

    from reskontro.ledger.store import analyze, open_engine
    db = open_engine(pg_url)

    def counts() -> dict[str, int]:
        with db.connect() as conn:
            return dict(conn.execute(text("SELECT relname, analyze_count FROM pg_stat_user_tables "
                                          "WHERE relname IN ('meta', 'entries')")).all())
    analyze(db)
    assert counts() == {"meta": 1, "entries": 1}                 # never analysed: both
    analyze(db)
    assert counts() == {"meta": 1, "entries": 1}                 # nothing changed: neither
    with db.begin() as conn:
        conn.execute(text("INSERT INTO meta (key, value) SELECT 'k' || g, 'v' FROM generate_series(1, 200) g"))
        conn.execute(text("SELECT pg_stat_force_next_flush()"))
    analyze(db)
    assert counts() == {"meta": 2, "entries": 1}                 # 200 rows > 50 + 10 %: meta only
    db.dispose()


def test_the_stores_cursors_are_planned_for_their_whole_result(pg_url: str) -> None:
    """The decide reads its server-side cursors to the end: planned for the first 10 % of the
    rows (PostgreSQL's default for cursors) it cost three times as much a night. The setting
    holds on every connection of the store, after a rollback too."""
    from reskontro.ledger.store import open_engine
    db = open_engine(pg_url)
    for _ in range(2):
        with db.connect() as conn:
            assert conn.exec_driver_sql("SHOW cursor_tuple_fraction").scalar() == "1"
            conn.rollback()
    db.dispose()


def test_an_index_dropped_by_hand_is_made_again_at_the_next_open(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The mark that lets a current store open with one query counts the store's own tables,
    columns and indexes through the catalog's indexes; a change by hand is still seen."""
    from reskontro.ledger import migrate
    from reskontro.ledger.store import open_engine
    calls: list[str] = []
    real = migrate.upgrade
    monkeypatch.setattr(migrate, "upgrade", lambda engine: calls.append("upgrade") or real(engine))
    open_engine(pg_url).dispose()
    open_engine(pg_url).dispose()
    assert calls == ["upgrade"]                          # made once, then current
    db = open_engine(pg_url)
    with db.begin() as conn:
        conn.exec_driver_sql("CREATE SCHEMA elsewhere")   # another creditor's schema does not count
        conn.exec_driver_sql("CREATE TABLE elsewhere.entries (id int)")
    db.dispose()
    open_engine(pg_url).dispose()
    assert calls == ["upgrade"]
    db = open_engine(pg_url)
    with db.begin() as conn:
        conn.exec_driver_sql("DROP INDEX ix_entries_bank_ref")
    db.dispose()
    db = open_engine(pg_url)
    assert calls == ["upgrade", "upgrade"]
    with db.connect() as conn:
        assert conn.exec_driver_sql("SELECT to_regclass('ix_entries_bank_ref')").scalar() is not None
    db.dispose()


@pytest.mark.parametrize("memory", [10_000, 3])
def test_a_files_items_reach_the_journal_on_postgresql_too(pg_url: str, monkeypatch: pytest.MonkeyPatch, memory: int) -> None:
    """As on SQLite (tests/test_journal_receipts.py): held in memory, or staged past MEMORY."""
    from test_journal_receipts import write_items
    rows, made = write_items(pg_url, memory, monkeypatch)
    assert len(rows) == 10 and len({r[1:3] for r in rows}) == 10 and {r[0] for r in rows} == {"F1"}
    assert bool(made) == (memory < 10)
