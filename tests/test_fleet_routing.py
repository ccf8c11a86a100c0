"""The fleet's shared drop folder (fleet.routing) on a real PostgreSQL and the real bank files
of the corpus: each file goes to the creditor whose account it credits (receipts: whose sender
id their FileId carries), into that creditor's inbox, and nowhere else; what is no one's,
several creditors', unreadable or oddly named is set aside with its reason; a crash between
copy and removal repeats nothing."""
from __future__ import annotations

import asyncio
import json
import os
import shutil
import threading
from datetime import date, datetime, timezone
from decimal import Decimal
from pathlib import Path

import pytest

from reskontro import services
from reskontro.adapters.cremul import render_cremul
from reskontro.domain import BankPayment, InputError
from reskontro.fleet import registry
from reskontro.transfer import journal
from reskontro.transfer.receipts import Receipt, render_receipt
from tests.test_fleet import add, ledger_file

CREMUL_A = "cremul/perspilling__CREMUL0003.DAT"          # FII+BF+70380518552
CAMT_A = "camt054/OCA__test-camt054"                      # Acct IBAN NL77ABNA0574908765
OCR_B = "ocr/Ondkloss__ocr1.txt"                          # assignment account 99991111111
CAMT_B = "camt054/viafintech__valid_example.xml"          # Acct IBAN CH0309000000250090342
CREMUL_NOBODY = "cremul/perspilling__cremul_multi_lines.txt"   # FII+BF+70580500043: no one's


@pytest.fixture
def fleet(pg_url: str, tmp_path: Path) -> str:
    services.fleet_init(pg_url, tmp_path / "fleet")
    add(pg_url, "a", "7001", accounts=["7038.05.18552", "NL77 ABNA 0574 9087 65"])
    add(pg_url, "b", "7002", accounts=["NO56 9999 1111 111", "CH0309000000250090342"])
    return pg_url


def folder(url: str, cid: str | None = None) -> Path:
    """The fleet's drop folder, or a creditor's inbox."""
    fleet = registry.open_fleet(url)
    fleet.dispose()
    return fleet.drop if cid is None else fleet.creditor_dir(cid) / "inbox"


def drop_dir(url: str) -> Path:
    return folder(url)


def inbox(url: str, cid: str) -> list[str]:
    return sorted(p.name for p in folder(url, cid).iterdir() if p.is_file())


def test_accounts_are_validated_and_each_is_one_creditors(fleet: str) -> None:
    a = services.creditor(fleet, "a")
    assert a.accounts == ("70380518552", "NL77ABNA0574908765")     # both forms of an account are one key
    with pytest.raises(registry.FleetError, match=r"'1234\.56\.78900'.*check digit"):
        add(fleet, "c", "7003", accounts=["1234.56.78900"])
    with pytest.raises(registry.FleetError, match="70380518552 \\(creditor a\\) belongs to another creditor"):
        services.creditor_add_accounts(fleet, "b", ["NO5570380518552"])    # a's account as an IBAN
    assert [c.id for c in services.creditors(fleet)] == ["a", "b"]     # the refused `add c` left nothing
    b = services.creditor_add_accounts(fleet, "b", ["8601.11.17947", "86011117947"])
    assert b.accounts == ("86011117947", "99991111111", "CH0309000000250090342")   # given twice: kept once
    with pytest.raises(registry.FleetError, match="not a valid IBAN"):
        services.creditor_add_accounts(fleet, "b", ["NO5670380518552"])      # the IBAN's check digits wrong


def test_real_bank_files_reach_their_creditors_inbox_and_only_it(fleet: str, corpus: Path) -> None:
    drop = drop_dir(fleet)
    for rel in (CREMUL_A, CAMT_A, OCR_B, CAMT_B, CREMUL_NOBODY):
        shutil.copyfile(corpus / rel, drop / Path(rel).name)
    (drop / "notes.txt").write_text("not a bank file\n")
    (drop / "-rf x.dat").write_bytes((corpus / CREMUL_A).read_bytes())     # a name the inbox refuses

    routed = {r.name: r for r in services.fleet_route(fleet)}

    assert inbox(fleet, "a") == sorted([Path(CREMUL_A).name, Path(CAMT_A).name])
    assert inbox(fleet, "b") == sorted([Path(OCR_B).name, Path(CAMT_B).name])
    assert routed[Path(CREMUL_A).name].detail == "account 70380518552"
    assert routed[Path(OCR_B).name].kind == "payments" and routed[Path(OCR_B).name].creditor == "b"
    unrouted = drop / "unrouted"
    assert sorted(p.name for p in drop.iterdir() if p.is_file()) == []           # nothing left behind
    for name, why in ((Path(CREMUL_NOBODY).name, "account 70580500043 is no creditor's"),
                      ("notes.txt", "not a known payment file format"),
                      ("-rf x.dat", "does not start with a letter or digit")):
        assert routed[name].creditor is None and why in routed[name].detail
        assert why in (unrouted / f"{name}.reason.txt").read_text()
        assert (unrouted / name).exists()

    # Each creditor's own pass reads its inbox into its own store, and only its payments are there.
    listed = {}
    for cid in ("a", "b"):
        site = services.creditor_site(fleet, cid)
        services.watch(site, once=True, rescan=0, stop=threading.Event())
        listed[cid] = {p["archive_ref"] for p in services.payments(site)}
        site.db.dispose()
    assert listed["a"] and listed["b"] and not listed["a"] & listed["b"]


def test_a_file_crediting_two_creditors_is_set_aside_not_split(fleet: str) -> None:
    pays = [BankPayment("cremul", f"AR{i}", Decimal("100.00"), "NOK", date(2026, 11, 30), date(2026, 11, 30),
                        kid=None, bank_code=str(230 + i)) for i in range(2)]
    text = render_cremul(pays, per_lin=1, account="70380518552")
    first = text.index("FII+BF+70380518552'")
    text = text[:first + 1] + text[first + 1:].replace("FII+BF+70380518552'", "FII+BF+99991111111'", 1)
    drop = drop_dir(fleet)
    (drop / "mixed.edi").write_text(text, encoding="latin-1")
    [r] = services.fleet_route(fleet)
    assert r.creditor is None
    assert "credits the accounts of 2 creditors (a: 70380518552; b: 99991111111)" in r.detail
    assert inbox(fleet, "a") == inbox(fleet, "b") == []


def test_receipts_go_to_the_creditor_of_their_file_id(fleet: str, tmp_path: Path) -> None:
    site = services.creditor_site(fleet, "b")
    services.import_ledger(site, [ledger_file(tmp_path)])
    fid = services.export(site).file_id
    assert fid.startswith("LT_7002_")
    with site.db.begin() as conn:                       # as `send` leaves it: uploaded, awaiting its receipt
        journal.mark_uploading(conn, fid)
        journal.mark_uploaded(conn, fid)
    drop = drop_dir(fleet)
    (drop / f"{fid}.receipt.xml").write_bytes(render_receipt(Receipt(fid, "accepted", datetime.now(timezone.utc))))
    stranger = "LT_9999_20261130_000001"
    (drop / f"{stranger}.receipt.xml").write_bytes(
        render_receipt(Receipt(stranger, "accepted", datetime.now(timezone.utc))))

    routed = {r.name: r for r in services.fleet_route(fleet)}

    assert routed[f"{fid}.receipt.xml"].creditor == "b" and routed[f"{fid}.receipt.xml"].detail == f"FileId {fid}"
    assert "sender id 9999 is no creditor of this fleet" in routed[f"{stranger}.receipt.xml"].detail
    assert inbox(fleet, "a") == [] and inbox(fleet, "b") == [f"{fid}.receipt.xml"]
    services.watch(site, once=True, rescan=0, stop=threading.Event())
    assert {f.file_id: f.state for f in services.files(site)}[fid] == "accepted"
    site.db.dispose()


def test_a_crash_between_copy_and_removal_repeats_nothing(fleet: str, corpus: Path) -> None:
    drop = drop_dir(fleet)
    name = Path(CREMUL_A).name
    a_inbox = folder(fleet, "a")
    shutil.copyfile(corpus / CREMUL_A, drop / name)
    shutil.copyfile(corpus / CREMUL_A, a_inbox / name)          # copied there before the crash
    [r] = services.fleet_route(fleet)
    assert r.creditor == "a" and inbox(fleet, "a") == [name] and not (drop / name).exists()
    # Other content under a taken name: a new name, nothing overwritten.
    (drop / name).write_bytes((corpus / CREMUL_A).read_bytes().replace(b"UNB+", b"UNB+", 1) + b"\n")
    [r] = services.fleet_route(fleet)
    assert inbox(fleet, "a") == [name, f"{name}.1"] and "as " + f"{name}.1" in r.detail


def test_a_file_still_arriving_stays_in_the_drop_folder(fleet: str, corpus: Path) -> None:
    drop = drop_dir(fleet)
    data = (corpus / CREMUL_A).read_bytes()
    (drop / "arriving.dat").write_bytes(data[: data.rindex(b"UNZ")])      # no UNZ yet, just written
    waiting: list[str] = []
    assert services.fleet_route(fleet, waiting=waiting) == [] and waiting == ["arriving.dat"]
    assert (drop / "arriving.dat").exists() and inbox(fleet, "a") == []


def test_the_worker_routes_the_drop_folder_and_reads_each_creditors_inbox(fleet: str, corpus: Path) -> None:
    """The periodic routing task queues one `inbox` job per creditor that got files, under the
    creditor's lock; the worker runs it as `watch --once` runs on a site."""
    from reskontro.worker import fleet_app, route_drop_async
    drop = drop_dir(fleet)
    for rel in (CREMUL_A, CAMT_A, OCR_B):
        shutil.copyfile(corpus / rel, drop / Path(rel).name)

    async def go(app) -> int:
        async with app.open_async():
            n = await route_drop_async(app, fleet)
            jobs = await app.connector.execute_query_all_async(
                "SELECT args->>'creditor' AS c, lock, queueing_lock FROM procrastinate_jobs "
                "WHERE task_name = 'inbox' ORDER BY 1")
            assert [(j["c"], j["lock"], j["queueing_lock"]) for j in jobs] == [
                ("a", "creditor:a", "inbox:a"), ("b", "creditor:b", "inbox:b")]
            await app.run_worker_async(wait=False, concurrency=1, delete_jobs="never")
            done = await app.connector.execute_query_all_async(
                "SELECT status FROM procrastinate_jobs WHERE task_name = 'inbox'")
            assert [d["status"] for d in done] == ["succeeded", "succeeded"]
            return n
    with fleet_app(fleet, sftp=False) as app:
        assert asyncio.run(go(app)) == 3
    for cid, n_files in (("a", 2), ("b", 1)):
        site = services.creditor_site(fleet, cid)
        done = site.config.inbox / "done"
        assert len([p for p in done.iterdir() if not p.name.endswith(".reason.txt")]) == n_files
        assert services.payments(site)
        site.db.dispose()


def test_fleet_route_command_reports_and_exits_3_when_a_file_was_set_aside(fleet: str, corpus: Path) -> None:
    from click.testing import CliRunner

    from reskontro.cli import main
    drop = drop_dir(fleet)
    shutil.copyfile(corpus / CREMUL_A, drop / "a.dat")
    shutil.copyfile(corpus / CREMUL_NOBODY, drop / "nobody.dat")
    r = CliRunner().invoke(main, ["fleet", "route", "--fleet", fleet, "--json"], env={"NO_COLOR": "1"})
    assert r.exit_code == 3, r.output
    out = json.loads(r.stdout)
    assert {f["name"]: f["creditor"] for f in out["files"]} == {"a.dat": "a", "nobody.dat": None}
    assert any("70580500043" in a for a in out["attention"])
    assert os.listdir(drop / "unrouted") and inbox(fleet, "a") == ["a.dat"]
    st = CliRunner().invoke(main, ["fleet", "status", "--fleet", fleet, "--json"], env={"NO_COLOR": "1"})
    assert st.exit_code == 3 and json.loads(st.stdout)["unrouted"] == ["nobody.dat"]


def test_a_fleet_made_before_the_accounts_table_gets_it_on_first_use(fleet: str) -> None:
    from sqlalchemy import create_engine, text
    admin = create_engine(fleet)
    with admin.begin() as conn:
        conn.execute(text("DROP TABLE fleet.accounts"))
    admin.dispose()
    folder(fleet).rmdir()                                                  # nor the drop folder
    assert [c.accounts for c in services.creditors(fleet)] == [(), ()]     # works, and the table is back
    assert services.fleet_route(fleet) == [] and folder(fleet).is_dir()
    with pytest.raises(InputError, match="no such folder"):
        services.fleet_route(fleet, folder(fleet) / "nope")
    services.creditor_add_accounts(fleet, "a", ["7038.05.18552"])
    assert services.creditor(fleet, "a").accounts == ("70380518552",)
