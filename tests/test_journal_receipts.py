"""`reskontro receipts` and the journal: receipts written by the receiver model, the file
states shown by `status --json`, and ledger changes after transfer never resent silently."""
from __future__ import annotations

import hashlib
import shutil

import pytest
from decimal import Decimal
from pathlib import Path

from reskontro.adapters.sftp import UploadResult
from reskontro.exchange.remote import send
from reskontro.site import Site
from test_export import (Lowell, cli, customer, day_one, export, flat, import_records, invalid_kid,
                         invoice, make_site, match, payment, status_json, valid_kid)


class FakeSftp:
    """Stands in for the SFTP client: `upload` copies into the receiver's inbound folder."""

    def __init__(self, inbound: Path):
        self.inbound = inbound
        inbound.mkdir(parents=True, exist_ok=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None

    def upload(self, local: Path, expected_sha256: str | None = None) -> UploadResult:
        target = self.inbound / local.name
        assert not target.exists()
        if expected_sha256 is not None:     # the real client's promise: only the checked bytes go
            assert hashlib.sha256(local.read_bytes()).hexdigest() == expected_sha256
        shutil.copyfile(local, target)
        return UploadResult(local, f"inbound/{local.name}", local.stat().st_size)


def tamper_kid(data: bytes, kid: str) -> bytes:
    """The file as the receiver got it, with the first entry carrying `kid` damaged in transit
    (its KID fails MOD10 and MOD11)."""
    bad = invalid_kid(kid[:-1])
    assert f"<KID>{kid}</KID>".encode() in data
    return data.replace(f"<KID>{kid}</KID>".encode(), f"<KID>{bad}</KID>".encode(), 1)


def items_total(site: Path) -> int:
    """Customers + entries + matches in the ledger."""
    from sqlalchemy import func, select

    from reskontro.ledger import schema as s
    with Site.open(site).db.connect() as conn:
        return sum(conn.execute(select(func.count()).select_from(t)).scalar_one()
                   for t in (s.customers, s.entries, s.matches))


# day_one(): what goes is C1, C2 + I1, P1, I2, I6, P6 + M1, M6 = 9 items; what is held:
# I3 (address), I7 (KID), I9a, I9b, P9a, P9b (many-to-many) = 6 entries (R8 reverses P8,
# which never left: the pair cancels out and is excluded).
SENT_ITEMS = 9
HELD = 6


# ============================================================================ accepted / rejected

def test_accepted_receipt_makes_the_content_delivered(tmp_path):
    site = make_site(tmp_path)
    import_records(site, day_one())
    f = export(site)
    st = status_json(site)
    assert [(x["file_id"], x["state"], x["entries"]) for x in st["files"]] == [(f.path.stem, "written", 5)]
    assert st["items"]["in_flight"] == SENT_ITEMS and st["items"]["delivered"] == 0
    lowell = Lowell()
    lowell.accept(site, f)
    st = status_json(site)
    assert [x["state"] for x in st["files"]] == ["accepted"]
    assert st["items"]["delivered"] == SENT_ITEMS and st["items"]["in_flight"] == 0
    assert (site / "inbox" / "done" / f"{f.path.stem}.receipt.xml").is_file()
    # the same receipt again changes nothing
    (site / "inbox" / f"{f.path.stem}.receipt.xml").write_bytes(
        (site / "inbox" / "done" / f"{f.path.stem}.receipt.xml").read_bytes())
    cli(site, "receipts")
    assert status_json(site)["items"]["delivered"] == SENT_ITEMS


def test_rejected_file_goes_again_and_the_receivers_errors_are_shown(tmp_path):
    site = make_site(tmp_path)
    import_records(site, day_one())
    f1 = export(site)
    lowell = Lowell()
    receipt = lowell.take(site, f1, tamper_kid(f1.path.read_bytes(), valid_kid("10000010")))
    assert receipt.status == "rejected" and [(e.code, e.ref) for e in receipt.errors] == [("kid", "I1")]
    assert lowell.model.entries == {}
    pending_before = status_json(site)["items"]["pending"]

    out = flat(cli(site, "receipts", code=3).output)
    assert f1.path.stem in out and "REJECTED" in out
    assert "I1" in out and "KID 100000100 fails MOD10 and MOD11" in out

    st = status_json(site)
    assert [x["state"] for x in st["files"]] == ["rejected"]
    assert st["items"]["in_flight"] == 0 and st["items"]["delivered"] == 0
    # nothing of it counts as sent: every item of the file is pending again
    assert st["items"]["pending"] == pending_before + len(f1.customers) + len(f1.entries) + len(f1.matches)

    f2 = export(site)
    assert f2.sequence == 2
    assert f2.entries.keys() == f1.entries.keys() and f2.matches == f1.matches
    assert f2.customers.keys() == f1.customers.keys()
    lowell.accept(site, f2)
    assert lowell.model.open_balances() == {"I1": Decimal("600.00"), "I2": Decimal("250.50"),
                                            "I6": Decimal("200.00")}


def test_receipts_output_names_the_receivers_error_code(tmp_path):
    """The user must see the receiver's error code (here `kid`) beside the ref, as the journal
    keeps it ("[kid] I1 ...")."""
    site = make_site(tmp_path)
    import_records(site, day_one())
    f1 = export(site)
    receipt = Lowell().take(site, f1, tamper_kid(f1.path.read_bytes(), valid_kid("10000010")))
    assert [(e.code, e.ref) for e in receipt.errors] == [("kid", "I1")]
    out = flat(cli(site, "receipts", code=3).output)
    assert "[kid] I1" in out, f"the receiver's error code is not shown: {out}"
    detail = status_json(site)["files"][0]["detail"]
    assert detail.startswith("[kid] I1 ")


def test_later_file_leaning_on_a_rejected_one_is_rejected_and_its_content_goes_again(tmp_path):
    site = make_site(tmp_path)
    import_records(site, [customer("C1"), invoice("I1", "C1", "100.00", kid=valid_kid("77"))])
    f1 = export(site)
    import_records(site, [invoice("I2", "C1", "20.00")])
    f2 = export(site)                          # before f1's receipt: C1 is in flight
    assert set(f2.entries) == {"I2"} and f2.customers == {}
    lowell = Lowell()
    r1 = lowell.take(site, f1, tamper_kid(f1.path.read_bytes(), valid_kid("77")))
    r2 = lowell.take(site, f2)
    assert r1.status == "rejected"
    assert r2.status == "rejected" and [(e.code, e.ref) for e in r2.errors] == [("ref_to_rejected", "I2")]
    cli(site, "receipts", code=3)
    assert [x["state"] for x in status_json(site)["files"]] == ["rejected", "rejected"]
    f3 = export(site)
    assert set(f3.customers) == {"C1"} and set(f3.entries) == {"I1", "I2"}
    lowell.accept(site, f3)
    assert lowell.model.open_balances() == {"I1": Decimal("100.00"), "I2": Decimal("20.00")}


# ============================================================================ status --json

def test_status_json_shows_every_file_state_and_the_item_counts(tmp_path):
    site = make_site(tmp_path)
    cfg = Site.open(site).config
    sftp = FakeSftp(tmp_path / "lowell" / "inbound")
    lowell = Lowell()
    import_records(site, day_one())
    total = items_total(site)
    st = status_json(site)
    assert st["files"] == [] and st["items"]["pending"] == total and st["items"]["held"] == HELD

    f1 = export(site)                                            # accepted
    send(cfg, Site.open(site).db, client_factory=lambda: sftp)
    assert [x["state"] for x in status_json(site)["files"]] == ["uploaded"]
    assert not f1.path.exists() and (site / "outbox" / "sent" / f1.path.name).is_file()
    lowell.accept(site, sftp.inbound / f1.path.name)

    import_records(site, [invoice("I20", "C2", "20.00")])
    f2 = export(site)                                            # rejected
    send(cfg, Site.open(site).db, client_factory=lambda: sftp)
    sent2 = sftp.inbound / f2.path.name
    tampered = sent2.read_bytes().replace(b'<ControlSum currency="NOK">20.00<', b'<ControlSum currency="NOK">20.01<')
    assert tampered != sent2.read_bytes()
    assert lowell.take(site, sent2, tampered).status == "rejected"
    pending_before = status_json(site)["items"]["pending"]
    cli(site, "receipts", code=3)
    assert status_json(site)["items"]["pending"] == pending_before + 1     # I20 is pending again

    f3 = export(site)                                            # uploaded, no receipt yet
    assert set(f3.entries) == {"I20"}
    send(cfg, Site.open(site).db, client_factory=lambda: sftp)
    import_records(site, [invoice("I30", "C2", "30.00")])
    f4 = export(site)                                            # written, not sent
    assert set(f4.entries) == {"I30"}

    st = status_json(site)
    assert [(x["sequence"], x["kind"], x["state"]) for x in st["files"]] == [
        (1, "daily", "accepted"), (2, "daily", "rejected"), (3, "daily", "uploaded"), (4, "daily", "written")]
    assert [x["entries"] for x in st["files"]] == [5, 1, 1, 1]
    items = st["items"]
    assert items["delivered"] == SENT_ITEMS
    assert items["in_flight"] == 2                               # I20 (f3) and I30 (f4)
    assert items["to_send"] == 0
    # the 7 entries held since day one still need a person: status must say so
    assert items["held"] == HELD, f"status shows {items['held']} held; the ledger holds {HELD}"


def test_status_json_times_carry_a_zone(tmp_path):
    """DESIGN: "times carry a zone". A file's created_at in `status --json` must say which."""
    from datetime import datetime, timezone

    from reskontro.transfer.export import export as do_export

    site_dir = make_site(tmp_path)
    import_records(site_dir, day_one())
    site = Site.open(site_dir)
    now = datetime(2026, 11, 28, 23, 30, tzinfo=timezone.utc)
    do_export(site.config, site.db, site.rules, now=now)
    created = datetime.fromisoformat(status_json(site_dir)["files"][0]["created_at"])
    assert created.utcoffset() is not None, f"created_at {created.isoformat()} has no UTC offset"
    assert created == now


# ============================================================================ changes after transfer

def test_entry_changed_after_it_was_sent_is_held_not_resent(tmp_path):
    site = make_site(tmp_path)
    import_records(site, day_one())
    lowell = Lowell()
    lowell.accept(site, export(site))
    # the ERP changes the amount of I2 (delivered) and of P6 (delivered)
    import_records(site, [invoice("I2", "C2", "260.50"), payment("P6", "C2", "-110.00"),
                          invoice("I40", "C2", "40.00")])
    out = flat(cli(site, "explain", "I2").output)
    assert "I2: hold by rule changed-after-sent" in out
    assert "changed-after-sent" in flat(cli(site, "explain", "P6").output)
    f = export(site)
    assert set(f.entries) == {"I40"} and f.matches == {}
    lowell.accept(site, f)
    assert lowell.model.entries["I2"].amount == Decimal("250.50")     # Lowell keeps what it got
    # still held on the following evenings
    assert export(site).entries == {}


def test_entry_changed_while_in_flight_is_held_too(tmp_path):
    site = make_site(tmp_path)
    import_records(site, day_one())
    f1 = export(site)
    import_records(site, [invoice("I2", "C2", "999.00")])
    assert "I2: hold by rule changed-after-sent" in flat(cli(site, "explain", "I2").output)
    f2 = export(site)
    assert f2.entries == {}
    lowell = Lowell()
    lowell.accept(site, f1)
    lowell.accept(site, f2)


def test_match_that_lost_a_member_after_it_was_sent_is_held(tmp_path):
    site = make_site(tmp_path)
    import_records(site, [customer("C1"), invoice("I1", "C1", "1000.00"),
                          payment("P1", "C1", "-300.00"), payment("P2", "C1", "-200.00"),
                          match("M1", "I1", "P1", "P2")])
    lowell = Lowell()
    lowell.accept(site, export(site))
    import_records(site, [match("M1", "I1", "P1")])             # P2 taken out of M1
    out = flat(cli(site, "explain", "I1").output)
    assert "I1: hold by rule match-lost-member" in out
    assert "match-lost-member" in flat(cli(site, "explain", "P1").output)
    f = export(site)
    assert f.entries == {} and f.matches == {}
    lowell.accept(site, f)
    assert lowell.model.open_balances() == {"I1": Decimal("500.00")}


def test_member_moved_to_another_match_after_it_was_sent_is_not_sent_in_the_new_match(tmp_path):
    """P2 was delivered in M1; the ERP moves it to a new match M2 with I2. Lowell rejects an
    entry joining a second group, so M2 must be held (like M1, which lost it), and tonight's
    file must stay acceptable."""
    site = make_site(tmp_path)
    import_records(site, [customer("C1"), invoice("I1", "C1", "1000.00"), invoice("I2", "C1", "200.00"),
                          payment("P1", "C1", "-300.00"), payment("P2", "C1", "-200.00"),
                          match("M1", "I1", "P1", "P2")])
    lowell = Lowell()
    lowell.accept(site, export(site))
    import_records(site, [match("M1", "I1", "P1"), match("M2", "I2", "P2")])
    assert "match-lost-member" in flat(cli(site, "explain", "I1").output)
    f = export(site)
    assert "M2" not in f.matches, f"M2 sent although P2 is in M1 at Lowell: {f.matches}"
    receipt = lowell.take(site, f)
    assert receipt.accepted, receipt.errors


def test_sent_holds_the_newest_live_version_whichever_file_is_marked_written_last(tmp_path):
    """mark_written upserts when its file is the newest live one, else rebuilds: either way
    `sent` holds the version of the newest live file (an older file completed by recovery
    must not overwrite a newer one)."""
    from datetime import datetime, timezone

    from sqlalchemy import select

    from reskontro.transfer import journal
    from reskontro.ledger import schema as s
    from reskontro.ledger.store import open_engine

    def sent_rows(conn):
        return {(r.kind, r.id): (r.version, r.file_id, r.state) for r in conn.execute(select(s.sent))}

    for order in (("F1", "F2"), ("F2", "F1")):
        db = open_engine(f"sqlite:///{tmp_path / ('-'.join(order) + '.db')}")
        now = datetime(2026, 11, 29, 17, tzinfo=timezone.utc)
        with db.begin() as conn:
            for seq, fid, version in ((1, "F1", "v1"), (2, "F2", "v2")):
                journal.reserve_file(conn, fid, seq, "daily", fid + ".xml", now, now)
                w = journal.ItemWriter(conn, fid)
                w.add([("entry", "E1", version, None), ("match", "M1", version, "E1 E2")])
                if fid == "F1":
                    w.add([("entry", "E0", "v1", None)])
                w.close()
            for fid in order:
                journal.mark_written(conn, fid, 1)
            assert sent_rows(conn) == {("entry", "E1"): ("v2", "F2", "in_flight"),
                                       ("match", "M1"): ("v2", "F2", "in_flight"),
                                       ("entry", "E0"): ("v1", "F1", "in_flight")}, order
            journal.accept(conn, "F2")
            journal.reject(conn, "F1", "test")
            assert sent_rows(conn) == {("entry", "E1"): ("v2", "F2", "delivered"),
                                       ("match", "M1"): ("v2", "F2", "delivered")}, order
        db.dispose()



def write_items(url: str, memory: int, monkeypatch) -> tuple[list[tuple], list[str]]:
    """Ten items through an ItemWriter holding `memory` of them: file_items' rows, and the
    statements that made a temporary table."""
    from datetime import datetime, timezone

    from sqlalchemy import event, select

    from reskontro.ledger import schema as s
    from reskontro.ledger.store import open_engine
    from reskontro.transfer import journal
    monkeypatch.setattr(journal.ItemWriter, "MEMORY", memory)
    db = open_engine(url)
    made: list[str] = []
    event.listen(db, "before_cursor_execute",
                 lambda conn, cur, stmt, *a: made.append(stmt) if "TEMPORARY" in stmt else None)
    now = datetime(2026, 11, 29, 17, tzinfo=timezone.utc)
    items = [("entry" if i % 2 else "match", f"X{9 - i}", "v1", "a b" if i % 2 == 0 else None) for i in range(10)]
    with db.begin() as conn:
        journal.reserve_file(conn, "F1", 1, "daily", "F1.xml", now, now)
        w = journal.ItemWriter(conn, "F1")
        w.add(items[:4])
        w.add(items[4:])
        w.close()
    with db.connect() as conn:
        rows = [tuple(r) for r in conn.execute(select(s.file_items.c.file_id, s.file_items.c.kind, s.file_items.c.id,
                                                      s.file_items.c.version, s.file_items.c.members)
                                               .order_by(s.file_items.c.kind, s.file_items.c.id))]
    db.dispose()
    return rows, made


@pytest.mark.parametrize("memory", [10_000, 3])
def test_a_files_items_reach_the_journal_held_in_memory_or_staged(tmp_path, monkeypatch, memory):
    """A night's few items go into file_items straight (no temporary table: on PostgreSQL one
    a night writes the system catalogs); past ItemWriter.MEMORY they are staged as before.
    Either way every item is there once, with its file."""
    rows, made = write_items(f"sqlite:///{tmp_path / 'j.db'}", memory, monkeypatch)
    assert rows == sorted(("F1", "entry" if i % 2 else "match", f"X{9 - i}", "v1", "a b" if i % 2 == 0 else None)
                          for i in range(10))
    assert bool(made) == (memory < 10)


# ============================================================================ hand-dropped files

def _ledger_objects(site: Path, kind: str, *ids: str):
    """Customers or entries of the site's ledger as domain objects (as our export reads them)."""
    from sqlalchemy import select

    from reskontro.ledger import schema as s
    from reskontro.ledger.store import row_customer, row_entry
    table, conv = (s.customers, row_customer) if kind == "customer" else (s.entries, row_entry)
    with Site.open(site).db.connect() as conn:
        rows = {r.id: conv(r) for r in conn.execute(select(table).where(table.c.id.in_(ids)))}
    return [rows[i] for i in ids]


def drop_manual_file(site: Path, sequence: int, customers, entries, matches) -> Path:
    """A Ledger Transfer file rendered elsewhere and dropped into the outbox by support."""
    import io
    from datetime import datetime

    from reskontro.transfer.render import OSLO, FileHeader, make_environment, render_transfer
    cfg = Site.open(site).config
    now = datetime.now(OSLO).replace(microsecond=0)
    header = FileHeader(cfg.sender_id, cfg.creditor_org_no, sequence, "backlog", now, now)
    out = io.BytesIO()
    render_transfer(out, header, customers, entries, matches, make_environment(site / "templates"))
    path = site / "outbox" / f"{header.file_id}.xml"
    path.write_bytes(out.getvalue())
    return path


def test_rejected_hand_dropped_file_sends_the_ledgers_content_again(tmp_path):
    """Support drops a file carrying the ledger's C1, I1, P1, M1, a changed copy of I2 (the
    ledger has 500.00, the file 450.00) and C9, I9, which the ledger does not have. The
    receiver rejects it. `receipts` must say what goes again and what cannot, and the next
    export must send exactly that: the ledger's versions, accepted by the receiver."""
    from dataclasses import replace

    from reskontro.domain import Address, Customer, Entry, Match

    site = make_site(tmp_path)
    cfg = Site.open(site).config
    sftp = FakeSftp(tmp_path / "lowell" / "inbound")
    lowell = Lowell()
    import_records(site, [customer("C2"), invoice("I3", "C2", "70.00")])
    f1 = export(site)
    send(cfg, Site.open(site).db, client_factory=lambda: sftp)
    lowell.accept(site, sftp.inbound / f1.path.name)

    kid = valid_kid("90000090")
    import_records(site, [customer("C1"), invoice("I1", "C1", "1000.00", kid=kid),
                          payment("P1", "C1", "-400.00"), match("M1", "I1", "P1"),
                          invoice("I2", "C1", "500.00")])
    (c1,) = _ledger_objects(site, "customer", "C1")
    i1, p1, i2 = _ledger_objects(site, "entry", "I1", "P1", "I2")
    c9 = Customer("C9", "Ola Bare-i-fila", "private", Address(("Kirkeveien 2",), "5003", "BERGEN", "NO"))
    i9 = replace(i1, id="I9", customer_id="C9", document_no="F-I9", kid=None, amount=Decimal("99.00"))
    manual = drop_manual_file(site, 20, [c1, c9], [i1, p1, replace(i2, amount=Decimal("450.00")), i9],
                              [Match("M1", ("I1", "P1"))])
    sent = send(cfg, Site.open(site).db, client_factory=lambda: sftp)
    assert sent.sent == [manual.name] and sent.refused == []
    assert status_json(site)["items"]["pending"] == 0          # all of it is in flight now

    # The receiver rejects the file (I1's KID damaged in transit): nothing of it is there.
    receipt = lowell.take(site, sftp.inbound / manual.name,
                          tamper_kid((sftp.inbound / manual.name).read_bytes(), kid))
    assert receipt.status == "rejected"
    out = flat(cli(site, "receipts", code=3).output)
    assert "REJECTED" in out
    # C1, I1, P1, M1, I2 go again (the ledger's versions); C9, I9 only the file had.
    assert "5 items go again in the next file" in out, out
    assert "2 were only in the hand-dropped file and are not in the ledger (customer C9, entry I9)" in out, out
    assert "drop a corrected file" in out

    f2 = export(site)
    assert set(f2.customers) == {"C1"} and set(f2.entries) == {"I1", "P1", "I2"}
    assert f2.matches == {"M1": ["I1", "P1"]}
    assert f2.entries["I2"]["Amount"] == "500.00"               # the ledger's, not the file's
    send(cfg, Site.open(site).db, client_factory=lambda: sftp)
    lowell.accept(site, sftp.inbound / f2.path.name)
    assert lowell.model.open_balances() == {"I1": Decimal("600.00"), "I2": Decimal("500.00"),
                                            "I3": Decimal("70.00")}
    assert "C9" not in lowell.model.customers and "I9" not in lowell.model.entries
    items = status_json(site)["items"]
    assert items["pending"] == 0 and items["in_flight"] == 0    # nothing waits for ever
    assert items["delivered"] == 2 + 5                          # C2, I3 and C1, I1, P1, I2, M1
    assert export(site).entries == {}                           # and nothing goes twice


# ============================================================================ receipts not believed

def _receipt(file_id: str, status: str = "accepted", at=None) -> bytes:
    from datetime import datetime, timezone

    from reskontro.transfer.receipts import Receipt, render_receipt
    return render_receipt(Receipt(file_id, status, at or datetime.now(timezone.utc).replace(microsecond=0)))


def _state(site: Path, file_id: str) -> str:
    from reskontro.transfer import journal
    with Site.open(site).db.connect() as conn:
        return journal.file_record(conn, file_id).state


def _failed_reason(site: Path, name: str) -> str:
    failed = site / "inbox" / "failed"
    assert (failed / name).is_file(), f"{name} not set aside: {sorted(p.name for p in failed.iterdir())}"
    return (failed / f"{name}.reason.txt").read_text(encoding="utf-8")


@pytest.fixture
def no_log_handlers():
    """`run` adds a log file handler to the 'reskontro' logger of this process: remove it again."""
    import logging
    logger = logging.getLogger("reskontro")
    before, level = list(logger.handlers), logger.level
    yield
    for h in logger.handlers[:]:
        if h not in before:
            logger.removeHandler(h)
            h.close()
    logger.setLevel(level)


@pytest.mark.parametrize("path", ["receipts", "run", "watch"])
def test_receipt_for_a_file_that_never_left_is_refused_on_every_path(tmp_path, path, no_log_handlers):
    """An accepted receipt for a file still only written in the outbox is not believed, whether
    `reskontro receipts`, the nightly `run` or the inbox watcher reads it: set aside with the
    reason, nothing delivered, a non-zero exit where there is one. Once the file is sent, the
    same receipt put back is read."""
    site = make_site(tmp_path)
    import_records(site, [customer("C1"), invoice("I1", "C1", "100.00")])
    f = export(site)
    fid = f.path.stem
    name = f"{fid}.receipt.xml"
    (site / "inbox" / name).write_bytes(_receipt(fid))

    if path == "receipts":
        out = flat(cli(site, "receipts", code=3).output)
    elif path == "run":
        out = flat(cli(site, "run", "--no-sftp", code=3).output)   # done, but a person is needed
        assert "needs a person" in out and "inbox file set aside in inbox/failed/" in out, out
    else:
        out = flat(cli(site, "watch", "--once", code=3).output)
    assert f"{name}: refused" in out and "state written" in out, out
    reason = _failed_reason(site, name)
    assert f"a receipt (accepted) for {fid}, which is in state written" in reason
    assert "reskontro send" in reason                  # what to do if it did leave after all
    assert _state(site, fid) == "written"
    items = status_json(site)["items"]
    assert items["delivered"] == 0 and items["in_flight"] == 2

    # It leaves; the receipt put back is believed (a refused receipt is not remembered as read).
    sftp = FakeSftp(tmp_path / "lowell" / "inbound")
    send(Site.open(site).config, Site.open(site).db, client_factory=lambda: sftp)
    assert _state(site, fid) == "uploaded"
    (site / "inbox" / "failed" / name).rename(site / "inbox" / name)
    assert f"{fid}: accepted" in flat(cli(site, "receipts").output)
    assert _state(site, fid) == "accepted" and status_json(site)["items"]["delivered"] == 2


def _uploaded_file(tmp_path: Path):
    site = make_site(tmp_path)
    import_records(site, [customer("C1"), invoice("I1", "C1", "100.00")])
    f = export(site)
    sftp = FakeSftp(tmp_path / "lowell" / "inbound")
    send(Site.open(site).config, Site.open(site).db, client_factory=lambda: sftp)
    assert _state(site, f.path.stem) == "uploaded"
    return site, f.path.stem


def _created_at(site: Path, file_id: str):
    from reskontro.transfer import journal
    with Site.open(site).db.connect() as conn:
        return journal.file_record(conn, file_id).created_at


def test_contradicting_receipts_are_refused_and_a_repeated_one_is_harmless(tmp_path):
    from datetime import timedelta

    site, fid = _uploaded_file(tmp_path)
    name = f"{fid}.receipt.xml"
    inbox = site / "inbox"
    created = _created_at(site, fid)
    (inbox / name).write_bytes(_receipt(fid, "rejected"))
    assert "REJECTED" in flat(cli(site, "receipts", code=3).output)
    assert status_json(site)["items"]["pending"] == 2

    # A later "accepted" for the rejected file: refused (red, exit 1), the journal unchanged.
    (inbox / name).write_bytes(_receipt(fid, "accepted", created + timedelta(minutes=10)))
    out = flat(cli(site, "receipts", code=3).output)
    assert f"{name}: refused: it says {fid} was accepted, but an earlier receipt said rejected" in out
    assert "earlier receipt said rejected" in _failed_reason(site, name)
    assert _state(site, fid) == "rejected"
    st = status_json(site)["items"]
    assert st["delivered"] == 0 and st["pending"] == 2

    # The same answer again (other bytes: another ReceivedAt) changes nothing and is no error.
    (inbox / name).write_bytes(_receipt(fid, "rejected", created + timedelta(minutes=20)))
    out = flat(cli(site, "receipts").output)
    assert f"{fid}: already rejected; this receipt repeats it and changes nothing" in out
    assert (inbox / "done" / name).is_file()

    # And the other way round: "rejected" after "accepted" is refused too.
    site2, fid2 = _uploaded_file(tmp_path / "two")
    (site2 / "inbox" / f"{fid2}.receipt.xml").write_bytes(_receipt(fid2, "accepted"))
    cli(site2, "receipts")
    delivered = status_json(site2)["items"]["delivered"]
    assert delivered == 2
    (site2 / "inbox" / f"{fid2}.receipt.xml").write_bytes(
        _receipt(fid2, "rejected", _created_at(site2, fid2) + timedelta(minutes=5)))
    out = flat(cli(site2, "receipts", code=3).output)
    assert "refused" in out and "earlier receipt said accepted" in out
    assert _state(site2, fid2) == "accepted" and status_json(site2)["items"]["delivered"] == delivered


def test_receipt_dated_before_its_file_was_created_is_refused(tmp_path):
    from datetime import timedelta

    from reskontro.payments.inbox import CLOCK_SKEW

    site, fid = _uploaded_file(tmp_path)
    name = f"{fid}.receipt.xml"
    created = _created_at(site, fid)
    (site / "inbox" / name).write_bytes(_receipt(fid, "accepted", created - CLOCK_SKEW - timedelta(seconds=1)))
    out = flat(cli(site, "receipts", code=3).output)
    assert "refused" in out and "before the file was created" in out
    assert "before the file was created" in _failed_reason(site, name)
    assert _state(site, fid) == "uploaded"
    # A receiver clock a little behind ours (within CLOCK_SKEW) is not a reason to refuse.
    (site / "inbox" / name).write_bytes(_receipt(fid, "accepted", created - timedelta(seconds=30)))
    assert f"{fid}: accepted" in flat(cli(site, "receipts").output)
    assert _state(site, fid) == "accepted"


BAD_RECEIPTS = {
    "unknown-file": (lambda fid: _receipt("LT_123456_20261130_000999"),
                     "a receipt for LT_123456_20261130_000999, a file this site never wrote"),
    "empty-file-id": (lambda fid: _receipt(fid).replace(f"<FileId>{fid}</FileId>".encode(), b"<FileId> </FileId>"),
                      "FileId is empty"),
    "bad-status": (lambda fid: _receipt(fid).replace(b"<Status>accepted<", b"<Status>ok<"),
                   "Status 'ok' is not accepted or rejected"),
    "no-offset": (lambda fid: _receipt(fid, at=None).replace(b"+00:00</ReceivedAt>", b"</ReceivedAt>"),
                  "is not a date-time with a UTC offset"),
    # The entity would expand to the real FileId: only the DOCTYPE check stands in the way.
    "doctype-internal-entity": (
        lambda fid: _receipt(fid).replace(b"?>\n", f'?>\n<!DOCTYPE TransferReceipt [<!ENTITY f "{fid}">]>\n'.encode(), 1)
        .replace(f"<FileId>{fid}</FileId>".encode(), b"<FileId>&f;</FileId>"),
        "DOCTYPE"),
    "doctype-alone": (lambda fid: _receipt(fid).replace(b"?>\n", b"?>\n<!DOCTYPE TransferReceipt>\n", 1),
                      "DOCTYPE"),
    "doctype-external-dtd": (
        lambda fid: _receipt(fid).replace(b"?>\n", b'?>\n<!DOCTYPE TransferReceipt SYSTEM "http://127.0.0.1:9/r.dtd">\n', 1),
        "DOCTYPE"),
}


@pytest.mark.parametrize("case", sorted(BAD_RECEIPTS))
def test_a_receipt_that_is_not_believed_is_set_aside_with_its_reason(tmp_path, case):
    site, fid = _uploaded_file(tmp_path)
    make, why = BAD_RECEIPTS[case]
    data = make(fid)
    assert data != _receipt(fid)
    name = f"{fid}.receipt.xml"
    (site / "inbox" / name).write_bytes(data)
    out = flat(cli(site, "receipts", code=3).output)
    assert why in out, out
    assert why in _failed_reason(site, name)
    assert (site / "inbox" / "failed" / name).read_bytes() == data       # kept as it came
    assert _state(site, fid) == "uploaded"
    assert status_json(site)["items"]["delivered"] == 0


def test_receipt_parser_resolves_no_entity_and_reads_no_dtd(tmp_path):
    """The parser itself, below the DOCTYPE check: an external entity is not read, an internal
    one not expanded, an external DTD not loaded."""
    from lxml import etree

    from reskontro.transfer.receipts import _parser

    secret = tmp_path / "secret.txt"
    secret.write_text("SECRET-42", encoding="utf-8")
    dtd = tmp_path / "r.dtd"
    dtd.write_text('<!ENTITY d "FROM-DTD">', encoding="utf-8")
    for doc in (f'<!DOCTYPE r [<!ENTITY x SYSTEM "{secret.as_uri()}">]><r>&x;</r>',
                '<!DOCTYPE r [<!ENTITY x "INTERNAL">]><r>&x;</r>',
                f'<!DOCTYPE r SYSTEM "{dtd.as_uri()}"><r>&d;</r>'):
        root = etree.fromstring(doc.encode(), _parser())
        text = etree.tostring(root).decode()
        assert root.text is None and not any(s in text for s in ("SECRET-42", "INTERNAL", "FROM-DTD")), text


def test_rejected_hand_dropped_file_repeating_what_the_receiver_has_sends_only_the_rest(tmp_path):
    """Support's file repeats C1 and I1, which our accepted file delivered, and carries I2 the
    ledger has not sent yet. On its rejection only I2 goes again; C1 and I1 are not counted as
    going again, not resent, and not left pending."""
    site = make_site(tmp_path)
    cfg = Site.open(site).config
    sftp = FakeSftp(tmp_path / "lowell" / "inbound")
    lowell = Lowell()
    import_records(site, [customer("C1"), invoice("I1", "C1", "100.00")])
    f1 = export(site)
    send(cfg, Site.open(site).db, client_factory=lambda: sftp)
    lowell.accept(site, sftp.inbound / f1.path.name)
    import_records(site, [invoice("I2", "C1", "20.00")])
    (c1,) = _ledger_objects(site, "customer", "C1")
    manual = drop_manual_file(site, 7, [c1], _ledger_objects(site, "entry", "I1", "I2"), [])
    send(cfg, Site.open(site).db, client_factory=lambda: sftp)
    (site / "inbox" / f"{manual.stem}.receipt.xml").write_bytes(_receipt(manual.stem, "rejected"))
    out = flat(cli(site, "receipts", code=3).output)
    assert "1 item goes again in the next file; 2 items the receiver has or will have from another file" in out, out
    assert "not in the ledger" not in out
    f2 = export(site)
    assert set(f2.entries) == {"I2"} and f2.customers == {}
    send(cfg, Site.open(site).db, client_factory=lambda: sftp)
    lowell.accept(site, sftp.inbound / f2.path.name)
    assert lowell.model.open_balances() == {"I1": Decimal("100.00"), "I2": Decimal("20.00")}
    items = status_json(site)["items"]
    assert items["pending"] == 0 and items["delivered"] == 3


# ============================================================================ the receipt itself
# read_receipt / render_receipt directly: every check of the reader, each with its message.

RECEIPT_NS = "urn:reskontro:ledger-transfer:1"


def _text(body: str, decl: str = '<?xml version="1.0" encoding="UTF-8"?>\n') -> bytes:
    return (decl + f'<TransferReceipt xmlns="{RECEIPT_NS}">\n{body}</TransferReceipt>\n').encode()


GOOD_BODY = ("  <FileId>LT_123456_20261128_000001</FileId>\n  <Status>rejected</Status>\n"
             "  <ReceivedAt>2026-11-28T18:20:00+01:00</ReceivedAt>\n"
             '  <Error code="E1" ref="I1">bad KID</Error>\n  <Error code="E2"/>\n')


def test_a_receipt_as_the_receiver_writes_it_is_read():
    from datetime import datetime, timedelta, timezone

    from reskontro.transfer.receipts import Receipt, ReceiptError, read_receipt
    got = read_receipt(_text(GOOD_BODY), "r.xml")
    assert got == Receipt("LT_123456_20261128_000001", "rejected",
                          datetime(2026, 11, 28, 18, 20, tzinfo=timezone(timedelta(hours=1))),
                          (ReceiptError("E1", "I1", "bad KID"), ReceiptError("E2", None, "")))
    assert not got.accepted and read_receipt(_text(GOOD_BODY.replace("rejected", "accepted")), "r").accepted


def test_comments_processing_instructions_and_blanks_in_a_receipt_change_nothing():
    from reskontro.transfer.receipts import read_receipt
    odd = ("  <!-- from the receiver -->\n  <FileId> LT_1 </FileId><?pi x?>\n  <!-- c -->"
           "<Status>\n accepted\n </Status>\n  <ReceivedAt>2026-11-28T18:20:00Z</ReceivedAt>\n")
    got = read_receipt(_text(odd), "r.xml")
    assert (got.file_id, got.status, got.errors) == ("LT_1", "accepted", ())


@pytest.mark.parametrize("data, message", [
    (b"<TransferReceipt", "r.xml line 1: receipt is not well-formed XML"),
    (_text(GOOD_BODY).replace(b"</Status>", b"</Statu>"), "r.xml line 4: receipt is not well-formed XML"),
    (_text(GOOD_BODY).replace(b"?>\n", b"?>\n<!DOCTYPE TransferReceipt>\n", 1),
     "r.xml: receipt has a DOCTYPE; no DTD is allowed"),
    (_text(GOOD_BODY).replace(b"?>\n", b'?>\n<!DOCTYPE TransferReceipt [<!ENTITY x "y">]>\n', 1),
     "r.xml: receipt has a DOCTYPE; no DTD is allowed"),
    (_text(GOOD_BODY).replace(b"?>\n", b'?>\n<!DOCTYPE TransferReceipt SYSTEM "r.dtd">\n', 1),
     "r.xml: receipt has a DOCTYPE; no DTD is allowed"),
    (_text(GOOD_BODY).replace(f'xmlns="{RECEIPT_NS}"'.encode(), b'xmlns="urn:other"'),
     "r.xml line 2: root element is {urn:other}TransferReceipt, expected TransferReceipt in namespace "
     + RECEIPT_NS),
    (_text(GOOD_BODY).replace(b"TransferReceipt", b"Receipt"), "r.xml line 2: root element is"),
    (_text(""), "receipt must hold FileId, Status, ReceivedAt, then Error*; it holds nothing"),
    (_text(GOOD_BODY.replace("  <Status>rejected</Status>\n", "")),
     "it holds FileId, ReceivedAt, Error, Error"),
    (_text('  <Error code="E0"/>\n' + GOOD_BODY), "it holds Error, FileId, Status, ReceivedAt, Error, Error"),
    (_text(GOOD_BODY.replace('  <Error code="E2"/>\n', '  <Error code="E2"/>\n  <Note/>\n')),
     "it holds FileId, Status, ReceivedAt, Error, Error, Note"),
    (_text(GOOD_BODY.replace("<Status>", '<Error code="E0"/><Status>')),
     "it holds FileId, Error, Status, ReceivedAt, Error, Error"),
    (_text(GOOD_BODY.replace("LT_123456_20261128_000001", "")), "r.xml line 3: FileId is empty"),
    (_text(GOOD_BODY.replace("LT_123456_20261128_000001", "  \n ")), "r.xml line 3: FileId is empty"),
    (_text(GOOD_BODY.replace(">rejected<", ">ok<")), "line 4: Status 'ok' is not accepted or rejected"),
    (_text(GOOD_BODY.replace(">rejected<", "><")), "line 4: Status '' is not accepted or rejected"),
    (_text(GOOD_BODY.replace("+01:00", "")), "line 5: ReceivedAt '2026-11-28T18:20:00' is not a date-time "
     "with a UTC offset"),
    (_text(GOOD_BODY.replace("2026-11-28T18:20:00+01:00", "yesterday")), "ReceivedAt 'yesterday' is not"),
    (_text(GOOD_BODY.replace("2026-11-28T18:20:00+01:00", "")), "ReceivedAt '' is not"),
    (_text(GOOD_BODY.replace('code="E2"', 'code=" "')), "r.xml line 7: Error without a code"),
    (_text(GOOD_BODY.replace('<Error code="E2"/>', "<Error>text</Error>")), "line 7: Error without a code"),
    (_text(GOOD_BODY.replace("bad KID", "bad <b>KID</b>")), "r.xml line 6: Error holds elements, not text"),
    (_text(GOOD_BODY.replace("bad KID", "x" * 11_000_000)), "r.xml line 6: receipt is not well-formed XML"),
])
def test_each_thing_wrong_with_a_receipt_is_named(data, message):
    from reskontro.domain import InputError
    from reskontro.transfer.receipts import read_receipt
    with pytest.raises(InputError) as info:
        read_receipt(data, "r.xml")
    assert message in str(info.value), str(info.value)


def test_a_receipt_written_and_read_back():
    from datetime import datetime, timezone

    from reskontro.transfer.receipts import Receipt, ReceiptError, read_receipt, render_receipt
    r = Receipt("LT_1", "rejected", datetime(2026, 11, 28, 17, 20, tzinfo=timezone.utc),
                (ReceiptError("E1", "I1", "a & b"), ReceiptError("E2", None, "")))
    data = render_receipt(r)
    assert data.startswith(b"<?xml version='1.0' encoding='UTF-8'?>\n<TransferReceipt xmlns=\"" +
                           RECEIPT_NS.encode() + b'">\n  <FileId>LT_1</FileId>\n')
    assert b"<Error code=\"E2\"></Error>" in data and b"ref=" not in data.split(b"E2")[1]
    assert read_receipt(data, "r") == r


@pytest.mark.parametrize("status, at, message", [
    ("ok", "2026-11-28T18:20:00+01:00", "receipt status 'ok': must be accepted or rejected"),
    ("accepted", "2026-11-28T18:20:00", "receipt received_at must carry a time zone"),
])
def test_a_receipt_is_only_written_right(status, at, message):
    from datetime import datetime

    from reskontro.transfer.receipts import Receipt, render_receipt
    with pytest.raises(ValueError, match=message):
        render_receipt(Receipt("LT_1", status, datetime.fromisoformat(at)))
