"""`reskontro export`: what goes in the daily and the backlog file, exactly once.

Everything goes through the CLI (click's CliRunner on reskontro.cli.main) against a site made
with init_site in tmp_path, with small ledgers written here as JSON Lines. Every file written
is checked against the receiver's contract: the XSD and reskontro.transfer.contract, and (where the
test reads receipts or chains files) the receiver model across files.

The helpers at the top are shared with the other transfer tests (test_journal_receipts,
test_scenario_60_days, test_crash_export import them).
"""
from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

import pytest
from click.testing import CliRunner
from lxml import etree
from stdnum import luhn

from reskontro.cli import main
from reskontro.transfer.contract import check_transfer_file
from reskontro.rules.facts import kid_state
from reskontro.transfer.receipts import Receipt, render_receipt
from reskontro.testing.receiver_model import ReceiverModel, default_xsd_path
from reskontro.site import Site, init_site

NS = "{urn:reskontro:ledger-transfer:1}"
XSD = default_xsd_path()          # the receiver's XSD (a test site may carry a stricter copy)


# ============================================================================ helpers (shared)

def make_site(tmp_path: Path, name: str = "site", mode: str = "full_ledger") -> Path:
    site = tmp_path / name
    init_site(site)
    if mode != "full_ledger":
        cfg = site / "reskontro.toml"
        text = cfg.read_text(encoding="utf-8")
        assert 'mode = "full_ledger"' in text
        cfg.write_text(text.replace('mode = "full_ledger"', f'mode = "{mode}"'), encoding="utf-8")
    return site


def cli(site: Path, *args: str, code: int | None = None):
    """Run one reskontro command on the site; assert its exit status: `code`, or by default
    done (0, or 3 when it says a person is needed: entries held tonight, say)."""
    result = CliRunner().invoke(main, ["--site", str(site), *args], catch_exceptions=False)
    ok = (0, 3) if code is None else (code,)
    assert result.exit_code in ok, f"reskontro {' '.join(args)} -> {result.exit_code}:\n{result.output}"
    return result


def flat(text: str) -> str:
    """CLI output with rich's line wrapping undone (words are never split)."""
    return " ".join(text.split())


_files = itertools.count(1)


def import_records(site: Path, records: list[dict]) -> None:
    path = site.parent / f"{site.name}-import-{next(_files):04d}.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    cli(site, "import", str(path))


def customer(cid: str, name: str | None = None, **kw) -> dict:
    rec = {"record": "customer", "id": cid, "name": name or f"Kunde {cid}", "type": "private",
           "address1": "Storgata 1", "post_code": "0150", "city": "OSLO", "country": "NO"}
    rec.update(kw)
    return rec


def entry(eid: str, cid: str, etype: str, amount: str, day: str = "2026-11-02", **kw) -> dict:
    rec = {"record": "entry", "id": eid, "customer_id": cid, "type": etype,
           "document_no": f"D-{eid}"[:35], "document_date": day, "amount": amount, "currency": "NOK"}
    if etype == "invoice":
        rec.update(status="invoiced", due_date="2026-12-31")
    rec.update(kw)
    return rec


def invoice(eid: str, cid: str, amount: str, **kw) -> dict:
    return entry(eid, cid, "invoice", amount, **kw)


def payment(eid: str, cid: str, amount: str, **kw) -> dict:
    return entry(eid, cid, "payment", amount, **kw)


def match(mid: str, *ids: str) -> dict:
    return {"record": "match", "id": mid, "entries": list(ids)}


def valid_kid(body: str) -> str:
    return body + luhn.calc_check_digit(body)


def invalid_kid(body: str) -> str:
    """A KID that fails both MOD10 and MOD11."""
    for d in "0123456789":
        if kid_state(body + d) == "invalid":
            return body + d
    raise AssertionError("no invalid check digit found")   # pragma: no cover


@dataclass
class TransferFile:
    path: Path
    header: dict[str, str]
    customers: dict[str, dict[str, str]]
    entries: dict[str, dict[str, str]]
    matches: dict[str, list[str]]
    trailer: dict[str, str]
    control_sums: list[tuple[str, str]]
    order: list[tuple[str, str]] = field(default_factory=list)    # (kind, id) in document order

    @property
    def sequence(self) -> int:
        return int(self.header["Sequence"])


def parse_file(path: Path) -> TransferFile:
    root = etree.parse(str(path), etree.XMLParser(resolve_entities=False, no_network=True)).getroot()
    assert root.tag == NS + "LedgerTransfer" and root.get("version") == "1.0"
    header = {c.tag[len(NS):]: c.text for c in root.find(NS + "Header")}
    customers, entries, matches, order = {}, {}, {}, []
    for c in root.iter(NS + "Customer"):
        customers[c.get("id")] = {x.tag[len(NS):]: x.text for x in c.iter() if x is not c and x.text}
        order.append(("customer", c.get("id")))
    for e in root.iter(NS + "Entry"):
        rec = {x.tag[len(NS):]: x.text for x in e}
        rec["type"] = e.get("type")
        rec["currency"] = e.find(NS + "Amount").get("currency")
        entries[e.get("id")] = rec
        order.append(("entry", e.get("id")))
    for m in root.iter(NS + "Match"):
        matches[m.get("id")] = [r.text for r in m]
    trailer_el = root.find(NS + "Trailer")
    trailer = {c.tag[len(NS):]: c.text for c in trailer_el if c.tag != NS + "ControlSum"}
    sums = [(c.get("currency"), c.text) for c in trailer_el.iter(NS + "ControlSum")]
    return TransferFile(path, header, customers, entries, matches, trailer, sums, order)


def outbox_xml(site: Path) -> list[Path]:
    """Complete transfer files in the outbox, in sequence order."""
    return sorted((site / "outbox").glob("LT_*.xml"), key=lambda p: int(p.stem.rsplit("_", 1)[1]))


def ledger_entry_type(site: Path):
    """known_entry_type for the contract check: the type of any entry of the site's ledger."""
    from sqlalchemy import select

    from reskontro.ledger import schema as s
    db = Site.open(site).db

    def known(ref: str) -> str | None:
        with db.connect() as conn:
            return conn.execute(select(s.entries.c.type).where(s.entries.c.id == ref)).scalar()
    return known


def export(site: Path, *args: str) -> TransferFile:
    """`reskontro export`; returns the new file, checked against the receiver's XSD and the
    contract's single-file rules (references to earlier files are the receiver model's part)."""
    before = set(outbox_xml(site))
    cli(site, "export", *args)
    new = [p for p in outbox_xml(site) if p not in before]
    assert len(new) == 1, f"expected one new file in the outbox, got {new}"
    assert not list((site / "outbox").glob("*.part")), "a .part file was left in the outbox"
    problems = check_transfer_file(new[0], XSD, known_customer=lambda _cid: True,
                                   known_entry_type=ledger_entry_type(site))
    assert problems == [], [str(p) for p in problems]
    return parse_file(new[0])


class Lowell:
    """The stand-in receiver: the receiver model, which writes its receipts into the site's inbox."""

    def __init__(self) -> None:
        # The receiver's clock: its receipts are dated after the files they answer.
        self.model = ReceiverModel(XSD, clock=lambda: datetime.now(timezone.utc).replace(microsecond=0))
        self.receipts: list[Receipt] = []

    def take(self, site: Path, f: TransferFile | Path, data: bytes | None = None) -> Receipt:
        """Receive the file (or `data`, the file as it arrived) and write the receipt into the inbox.
        A file still in the outbox is journalled uploaded first, as `reskontro send` would: only
        a file that left can have a receipt."""
        path = f.path if isinstance(f, TransferFile) else f
        _journal_uploaded(site, path.stem)
        receipt = self.model.receive(data if data is not None else path.read_bytes(), path.name)
        (site / "inbox" / f"{receipt.file_id}.receipt.xml").write_bytes(render_receipt(receipt))
        self.receipts.append(receipt)
        return receipt

    def accept(self, site: Path, f: TransferFile | Path) -> None:
        """The file must pass the contract (XSD and reskontro.transfer.contract, with what the receiver
        knows from earlier files) and be accepted; `reskontro receipts` reads the receipt."""
        path = f.path if isinstance(f, TransferFile) else f
        problems = check_transfer_file(
            path, XSD, known_customer=self.model.customers.__contains__,
            known_entry_type=lambda ref: e.type if (e := self.model.entries.get(ref)) else None)
        assert problems == [], [str(p) for p in problems]
        receipt = self.take(site, path)
        assert receipt.accepted, receipt.errors
        out = cli(site, "receipts")
        assert f"{receipt.file_id}: accepted" in flat(out.output)


def _journal_uploaded(site: Path, file_id: str) -> None:
    from reskontro.transfer import journal
    with Site.open(site).db.begin() as conn:
        rec = journal.file_record(conn, file_id)
        if rec is not None and rec.state == "written":
            journal.mark_uploaded(conn, file_id)


def status_json(site: Path) -> dict:
    return json.loads(cli(site, "status", "--json").output)


def control_sum(f: TransferFile) -> Decimal:
    return sum((Decimal(e["Amount"]) for e in f.entries.values()), Decimal("0.00"))


# ============================================================================ the ledgers

def day_one() -> list[dict]:
    """A small ledger of every kind. What goes: C1, C2; I1, P1 (M1); I2; I6, P6 (M6, without
    the opted-out write-off V6). What does not: C3's invoice (address incomplete: held), C4's
    draft (waits), C5's unmatched payment (waits), an invalid KID (held), a payment reversed
    before it was sent (excluded with its reversal: they cancel out),
    a many-to-many match (held), an opted-out write-off (excluded)."""
    return [
        customer("C1", "Ås & Sønn <AS>", type="business", org_no="923609016"),
        customer("C2", "Kari Nordmann"),
        customer("C3", "Ola Uten Postnummer", post_code=""),
        customer("C4", "Liv Utkast"),
        customer("C5", "Per Betaler"),
        invoice("I1", "C1", "1000.00", kid=valid_kid("10000010")),
        payment("P1", "C1", "-400.00", kid=valid_kid("10000010")),
        match("M1", "I1", "P1"),
        invoice("I2", "C2", "250.50"),
        invoice("I6", "C2", "300.00"),
        payment("P6", "C2", "-100.00"),
        entry("V6", "C2", "manual_voucher", "-200.00", opt_out=True, text="Tap på fordring"),
        match("M6", "I6", "P6", "V6"),
        invoice("I3", "C3", "700.00"),
        invoice("I4", "C4", "90.00", status="draft"),
        payment("P5", "C5", "-50.00"),
        invoice("I7", "C2", "100.00", kid=invalid_kid("20000020")),
        payment("P8", "C2", "-80.00"),
        entry("R8", "C2", "reversal", "80.00", reverses="P8"),
        invoice("I9a", "C2", "10.00"), invoice("I9b", "C2", "20.00"),
        payment("P9a", "C2", "-10.00"), payment("P9b", "C2", "-20.00"),
        match("M9", "I9a", "I9b", "P9a", "P9b"),
    ]


DAY_ONE_ENTRIES = {"I1": "1000.00", "P1": "-400.00", "I2": "250.50", "I6": "300.00", "P6": "-100.00"}
DAY_ONE_MATCHES = {"M1": ["I1", "P1"], "M6": ["I6", "P6"]}


# ============================================================================ the daily file

def test_daily_file_holds_exactly_what_is_decided_transfer(tmp_path):
    site = make_site(tmp_path)
    import_records(site, day_one())
    f = export(site)

    assert f.header["Kind"] == "daily" and f.sequence == 1
    assert {k: v["Amount"] for k, v in f.entries.items()} == DAY_ONE_ENTRIES
    assert {k: sorted(v) for k, v in f.matches.items()} == DAY_ONE_MATCHES
    assert set(f.customers) == {"C1", "C2"}
    assert f.entries["I1"]["type"] == "invoice" and f.entries["P1"]["type"] == "payment"
    assert f.entries["I1"]["KID"] == valid_kid("10000010") and f.entries["I1"]["DueDate"] == "2026-12-31"
    assert "DueDate" not in f.entries["P1"]
    assert {e["CustomerRef"] for e in f.entries.values()} <= set(f.customers)
    # nothing held, waiting, excluded or a reversal
    for never in ("I3", "I4", "P5", "I7", "P8", "R8", "I9a", "I9b", "P9a", "P9b", "V6"):
        assert never not in f.entries
    assert f.trailer == {"CustomerCount": "2", "EntryCount": "5", "MatchCount": "2"}
    assert f.control_sums == [("NOK", "1050.50")] and control_sum(f) == Decimal("1050.50")


def test_customers_travel_with_or_before_their_first_entry(tmp_path):
    site = make_site(tmp_path)
    import_records(site, day_one())
    f1 = export(site)
    # customers come before entries in the file
    kinds = [k for k, _ in f1.order]
    assert kinds == sorted(kinds, key=["customer", "entry"].index)
    # day 2: a new customer with an invoice, an old customer (in flight) with another
    import_records(site, [customer("C6", "Nora Ny"), invoice("I60", "C6", "60.00"),
                          invoice("I10", "C1", "10.00")])
    f2 = export(site)
    assert set(f2.entries) == {"I60", "I10"}
    assert set(f2.customers) == {"C6"}          # C1 is in flight in f1: not sent again
    seen: set[str] = set()
    for f in (f1, f2):
        seen |= set(f.customers)
        for eid, e in f.entries.items():
            assert e["CustomerRef"] in seen, f"{eid} refers to {e['CustomerRef']}, not sent before"
    lowell = Lowell()
    assert lowell.take(site, f1).accepted and lowell.take(site, f2).accepted


def test_second_export_without_changes_has_zero_entries_and_nothing_in_flight_goes_again(tmp_path):
    site = make_site(tmp_path)
    import_records(site, day_one())
    f1 = export(site)
    f2 = export(site)                  # f1 is in flight (no receipt yet)
    assert f2.sequence == f1.sequence + 1
    assert f2.entries == {} and f2.customers == {} and f2.matches == {}
    assert f2.trailer == {"CustomerCount": "0", "EntryCount": "0", "MatchCount": "0"}
    assert f2.control_sums == [("NOK", "0.00")]
    # after the receipt: still nothing to send
    lowell = Lowell()
    lowell.accept(site, f1)
    lowell.accept(site, f2)
    f3 = export(site)
    assert f3.entries == {} and f3.customers == {} and f3.matches == {}
    assert lowell.take(site, f3).accepted


def test_entry_in_flight_is_not_put_in_another_file(tmp_path):
    site = make_site(tmp_path)
    import_records(site, day_one())
    f1 = export(site)
    # a new payment joins M1 while f1 (which carries M1) is in flight
    import_records(site, [payment("P1b", "C1", "-100.00"), match("M1", "I1", "P1", "P1b")])
    f2 = export(site)
    assert set(f2.entries) == {"P1b"}
    assert not set(f2.entries) & set(f1.entries)
    assert f2.matches == {}            # M1 is in flight: it grows once f1 is accepted
    lowell = Lowell()
    lowell.accept(site, f1)
    lowell.accept(site, f2)
    f3 = export(site)
    assert f3.entries == {} and {k: sorted(v) for k, v in f3.matches.items()} == {"M1": ["I1", "P1", "P1b"]}
    assert lowell.take(site, f3).accepted
    assert lowell.model.open_balances()["I1"] == Decimal("500.00")


def test_grown_match_goes_again_with_the_superset_after_an_accepted_receipt(tmp_path):
    site = make_site(tmp_path)
    import_records(site, day_one())
    f1 = export(site)
    lowell = Lowell()
    lowell.accept(site, f1)
    # the second partial payment of I1
    import_records(site, [payment("P1c", "C1", "-600.00"), match("M1", "I1", "P1", "P1c")])
    f2 = export(site)
    assert set(f2.entries) == {"P1c"}
    assert {k: sorted(v) for k, v in f2.matches.items()} == {"M1": ["I1", "P1", "P1c"]}
    assert f2.customers == {}                 # C1 was delivered and has not changed
    assert f2.control_sums == [("NOK", "-600.00")]
    assert lowell.take(site, f2).accepted
    assert lowell.model.open_balances()["I1"] == Decimal("0.00")


def test_customer_changed_after_delivery_goes_again(tmp_path):
    site = make_site(tmp_path)
    import_records(site, day_one())
    f1 = export(site)
    lowell = Lowell()
    lowell.accept(site, f1)
    import_records(site, [customer("C2", "Kari Nordmann-Hansen", address1="Ny gate 2")])
    f2 = export(site)
    assert set(f2.customers) == {"C2"} and f2.entries == {} and f2.matches == {}
    assert f2.customers["C2"]["Name"] == "Kari Nordmann-Hansen"
    assert f2.customers["C2"]["Line"] == "Ny gate 2"
    lowell.accept(site, f2)
    assert lowell.model.customers["C2"].name == "Kari Nordmann-Hansen"
    assert export(site).customers == {}          # delivered now: not again


def test_customer_changed_to_bad_data_after_delivery_does_not_stop_the_transfer(tmp_path):
    """C2 (delivered) loses its post code in the ERP: the rules hold its entries
    (customer-address-incomplete); the customer update must not go out either, and the rest of
    tonight's content (C1's new invoice) must still go."""
    site = make_site(tmp_path)
    import_records(site, day_one())
    lowell = Lowell()
    lowell.accept(site, export(site))
    import_records(site, [customer("C2", "Kari Nordmann", post_code=""), invoice("I77", "C1", "77.00")])
    assert "customer-address-incomplete" in flat(cli(site, "explain", "I2").output)
    out = CliRunner().invoke(main, ["--site", str(site), "export"])
    assert out.exit_code == 3, f"tonight's file failed: {flat(out.output)}"    # done; C2's entries held
    f = parse_file(outbox_xml(site)[-1])
    assert set(f.entries) == {"I77"} and "C2" not in f.customers
    lowell.accept(site, f)


def test_private_customer_with_an_org_no_is_only_a_warning(tmp_path):
    """The rules warn (warn-private-with-org-no, "never block") and decide transfer; the
    contract allows OrgNo only for business customers. Tonight's file must still pass."""
    site = make_site(tmp_path)
    import_records(site, [customer("C1", "Ola Privat", org_no="923609016"), invoice("I1", "C1", "5.00")])
    explained = flat(cli(site, "explain", "I1").output)
    assert "I1: transfer by rule invoice" in explained and "warn-private-with-org-no" in explained
    out = CliRunner().invoke(main, ["--site", str(site), "export"])
    assert out.exit_code == 0, f"tonight's file failed: {flat(out.output)}"
    f = parse_file(outbox_xml(site)[-1])
    assert set(f.entries) == {"I1"} and set(f.customers) == {"C1"}
    Lowell().accept(site, f)


def test_customer_changed_while_in_flight_goes_once_the_older_version_is_accepted(tmp_path):
    site = make_site(tmp_path)
    import_records(site, day_one())
    f1 = export(site)                                          # C2 in flight
    import_records(site, [customer("C2", "Kari Endret")])
    f2 = export(site)
    assert f2.customers == {}                                  # never in two files at once
    lowell = Lowell()
    lowell.accept(site, f1)
    lowell.accept(site, f2)
    f3 = export(site)
    assert set(f3.customers) == {"C2"} and f3.customers["C2"]["Name"] == "Kari Endret"
    assert lowell.take(site, f3).accepted


def test_names_with_markup_characters_come_out_well_formed(tmp_path):
    site = make_site(tmp_path)
    import_records(site, [
        customer("C1", "Ås & Sønn <AS>", type="business", org_no="923609016",
                 address1='Øvre "gate" 1 & 2', city="BÆRUM & CO"),
        invoice("I&1", "C1", "12.50", text="Faktura <1> & 'co'"),
        payment("P<1>", "C1", "-2.50", text="Innbetaling \"A&B\""),
        match("M&1", "I&1", "P<1>"),
    ])
    f = export(site)
    raw = f.path.read_bytes()
    assert "Ås &amp; Sønn &lt;AS&gt;".encode() in raw
    assert f.customers["C1"]["Name"] == "Ås & Sønn <AS>"
    assert f.customers["C1"]["Line"] == 'Øvre "gate" 1 & 2'
    assert f.customers["C1"]["City"] == "BÆRUM & CO"
    assert f.entries["I&1"]["Text"] == "Faktura <1> & 'co'"
    assert f.entries["P<1>"]["Text"] == 'Innbetaling "A&B"'
    assert f.matches == {"M&1": ["I&1", "P<1>"]}
    assert check_transfer_file(f.path, XSD) == []
    assert Lowell().take(site, f).accepted


# ============================================================================ backlog

def backlog_ledger() -> list[dict]:
    """C1: I1 settled by P1 (not sent), I2 partly paid (sent), I3 unpaid (sent).
    C2: only a settled group (I4 paid half, the rest written off in-house): C2 is not sent."""
    return [
        customer("C1"), customer("C2"),
        invoice("I1", "C1", "1000.00"), payment("P1", "C1", "-1000.00"), match("M1", "I1", "P1"),
        invoice("I2", "C1", "500.00"), payment("P2", "C1", "-200.00"), match("M2", "I2", "P2"),
        invoice("I3", "C1", "75.25"),
        invoice("I4", "C2", "1000.00"), payment("P4", "C2", "-600.00"),
        entry("V4", "C2", "manual_voucher", "-400.00", opt_out=True), match("M4", "I4", "P4", "V4"),
    ]


def test_backlog_sends_every_open_item_and_no_settled_group(tmp_path):
    site = make_site(tmp_path)
    import_records(site, backlog_ledger())
    f = export(site, "--backlog")
    assert f.header["Kind"] == "backlog" and f.sequence == 1
    assert set(f.entries) == {"I2", "P2", "I3"}
    assert {k: sorted(v) for k, v in f.matches.items()} == {"M2": ["I2", "P2"]}
    assert set(f.customers) == {"C1"}
    assert f.control_sums == [("NOK", "375.25")]
    assert Lowell().take(site, f).accepted


def test_daily_after_backlog_does_not_send_the_settled_groups(tmp_path):
    """The backlog leaves settled groups out; the next daily file must not bring them back."""
    site = make_site(tmp_path)
    import_records(site, backlog_ledger())
    backlog = export(site, "--backlog")
    daily = export(site)
    assert daily.entries == {}, f"settled groups sent after the backlog: {sorted(daily.entries)}"
    assert daily.matches == {} and daily.customers == {}
    lowell = Lowell()
    assert lowell.take(site, backlog).accepted and lowell.take(site, daily).accepted


def test_sequence_rises_by_one_across_daily_and_backlog_files(tmp_path):
    site = make_site(tmp_path)
    import_records(site, backlog_ledger())
    files = [export(site, "--backlog")]
    import_records(site, [invoice("I5", "C1", "55.00")])
    files.append(export(site))
    files.append(export(site, "--backlog"))
    files.append(export(site))
    assert [f.sequence for f in files] == [1, 2, 3, 4]
    assert [f.header["Kind"] for f in files] == ["backlog", "daily", "backlog", "daily"]
    assert "I5" in files[1].entries and "I5" not in files[0].entries
    assert files[3].entries == {}                     # everything is in flight already
    for f in files:
        assert f.header["FileId"] == f.path.stem and f.header["FileId"].endswith(f"_{f.sequence:06d}")
    lowell = Lowell()
    assert all(lowell.take(site, f).accepted for f in files)


# ============================================================================ dates, names, atomic write

@pytest.mark.parametrize("now, day, cut_off", [
    (datetime(2026, 11, 28, 23, 30, tzinfo=timezone.utc), "20261129", "2026-11-29T00:30:00+01:00"),
    (datetime(2026, 6, 30, 22, 30, tzinfo=timezone.utc), "20260701", "2026-07-01T00:30:00+02:00"),
    (datetime(2026, 11, 28, 17, 0, tzinfo=timezone.utc), "20261128", "2026-11-28T18:00:00+01:00"),
])
def test_file_id_date_and_cut_off_are_europe_oslo(tmp_path, now, day, cut_off):
    from reskontro.transfer.export import export as do_export

    site_dir = make_site(tmp_path)
    import_records(site_dir, day_one())
    site = Site.open(site_dir)
    result = do_export(site.config, site.db, site.rules, now=now)
    assert result.file_id == f"LT_123456_{day}_000001"
    assert result.path.name == result.file_id + ".xml"
    f = parse_file(result.path)
    assert f.header["FileId"] == result.file_id
    assert f.header["CutOff"] == cut_off and f.header["CreatedAt"] == cut_off
    assert check_transfer_file(result.path, XSD) == []


def test_files_are_written_as_part_then_renamed(tmp_path, monkeypatch):
    from reskontro.testing import faults

    site = make_site(tmp_path)
    import_records(site, day_one())
    seen: dict[str, list[str]] = {}
    outbox = site / "outbox"
    monkeypatch.setattr(faults, "point", lambda name: seen.setdefault(
        name, sorted(p.name for p in outbox.iterdir() if p.is_file())))
    f = export(site)
    part = f.path.name + ".part"
    assert seen["mid-render"] == [part] and seen["after-render"] == [part]
    assert seen["after-check"] == [part]
    assert seen["after-rename"] == [f.path.name] and seen["after-commit"] == [f.path.name]
    assert sorted(p.name for p in outbox.iterdir() if p.is_file()) == [f.path.name]


# ============================================================================ the pre-send check

def test_file_failing_the_pre_send_check_moves_to_rejected_and_its_content_goes_next(tmp_path):
    site = make_site(tmp_path)
    import_records(site, day_one())
    xsd = site / "templates" / "ledger-transfer-1.xsd"
    good = xsd.read_text(encoding="utf-8")
    # stricter: names of at most 5 characters ("Kari Nordmann" fails)
    strict = good.replace('<xs:simpleType name="Text100">\n    <xs:restriction base="xs:string">\n'
                          '      <xs:minLength value="1"/>\n      <xs:maxLength value="100"/>',
                          '<xs:simpleType name="Text100">\n    <xs:restriction base="xs:string">\n'
                          '      <xs:minLength value="1"/>\n      <xs:maxLength value="5"/>')
    assert strict != good
    xsd.write_text(strict, encoding="utf-8")

    out = cli(site, "export", code=1)
    name = "LT_123456_"
    assert "failed the pre-send check" in flat(out.output)
    assert outbox_xml(site) == [] and not list((site / "outbox").glob("*.part"))
    rejected = sorted(p.name for p in (site / "outbox" / "rejected").iterdir())
    assert len(rejected) == 2 and rejected[0].startswith(name) and rejected[0].endswith("_000001.xml")
    assert rejected[1] == rejected[0] + ".reason.txt"
    reason = (site / "outbox" / "rejected" / rejected[1]).read_text(encoding="utf-8")
    assert "Kari Nordmann" in reason or "C2" in reason, reason
    st = status_json(site)
    assert [(f["sequence"], f["state"]) for f in st["files"]] == [(1, "invalid")]
    assert st["items"]["in_flight"] == 0 and st["items"]["delivered"] == 0

    xsd.write_text(good, encoding="utf-8")
    f = export(site)
    assert f.sequence == 2
    assert {k: v["Amount"] for k, v in f.entries.items()} == DAY_ONE_ENTRIES
    assert {k: sorted(v) for k, v in f.matches.items()} == DAY_ONE_MATCHES
    assert set(f.customers) == {"C1", "C2"}
    assert Lowell().take(site, f).accepted


def test_held_entries_leave_pending_but_a_new_rule_file_or_mode_decides_them_again(tmp_path):
    """What the rules keep back is not decided again every night (the nightly cost follows the
    day's changes), yet an edited rule file, or another mode, re-decides the whole ledger once."""
    site = make_site(tmp_path, mode="factoring")
    rules = site / "rules" / "transfer.yaml"
    original = rules.read_text(encoding="utf-8")
    extra = ("  - id: hold-large\n    when: {entry_type: invoice, amount: {gt: 150}}\n"
             "    decision: hold\n    reason: Large invoices wait for the credit manager.\n\n")
    rules.write_text(original.replace("rules:\n", "rules:\n" + extra, 1), encoding="utf-8")
    import_records(site, [customer("C1"), invoice("I1", "C1", "100.00"), invoice("I2", "C1", "200.00"),
                          invoice("I3", "C1", "50.00", factoring=True)])
    assert set(export(site).entries) == {"I1"}               # I2 held, I3 followed up in-house
    assert status_json(site)["items"]["pending"] == 0        # nothing left to decide tonight
    assert export(site).entries == {}
    rules.write_text(original, encoding="utf-8")             # the rule author drops the rule
    assert set(export(site).entries) == {"I2"}
    cfg = site / "reskontro.toml"
    cfg.write_text(cfg.read_text(encoding="utf-8").replace('mode = "factoring"', 'mode = "full_ledger"'),
                   encoding="utf-8")
    assert set(export(site).entries) == {"I3"}               # full ledger: every invoice goes
