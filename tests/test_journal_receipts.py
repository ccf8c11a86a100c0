"""`reskontro receipts` and the journal: receipts written by the receiver model, the file
states shown by `status --json`, and ledger changes after transfer never resent silently."""
from __future__ import annotations

import hashlib
import shutil
from decimal import Decimal
from pathlib import Path

from reskontro.adapters.sftp import UploadResult
from reskontro.exchange import send
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

    from reskontro import schema as s
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

    out = flat(cli(site, "receipts", code=1).output)
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
    out = flat(cli(site, "receipts", code=1).output)
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
    cli(site, "receipts", code=1)
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
    cli(site, "receipts", code=1)
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

    from reskontro.export import export as do_export

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

    from reskontro import journal
    from reskontro import schema as s
    from reskontro.store import open_engine

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
