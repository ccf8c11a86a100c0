"""The inbox: `reskontro watch --once` and the watcher (reskontro.payments.watcher.watch) on real files.

Every test works on a site in tmp_path (reskontro.site.init_site). Corpus files are copied
from ../shared/corpus into that inbox (fixture `corpus`, skipped when absent), never into the
repository. Results are read back from the folders (done/, failed/, processing/) and from
the store (`payments --json`, the bank_payments and inbox_files tables).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import date, datetime, timezone
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import func, select
from stdnum import luhn

from reskontro.transfer import journal
from reskontro.ledger import schema as s
from reskontro.adapters.cremul import render_cremul
from reskontro.domain import BankPayment
from reskontro.payments.inbox import Processed, process_inbox
from reskontro.payments.booking import list_payment_file
from reskontro.transfer.receipts import Receipt, render_receipt
from reskontro.site import Site, init_site
from reskontro.payments.watcher import STALE_AFTER, watch
from clirun import cli, wait_for  # noqa: E402  (tests/ is on sys.path)

DAY = date(2026, 11, 20)


# --- helpers ------------------------------------------------------------------------------

def kid10(body: str) -> str:
    return body + luhn.calc_check_digit(body)


def payment(ref: str, amount: str = "100.00", kid: str | None = None, **kw) -> BankPayment:
    return BankPayment("cremul", ref, Decimal(amount), "NOK", DAY, DAY,
                       kid=kid or kid10(f"{int(ref.lstrip('*')):09d}"), payer_name="Kari Nordmann", **kw)


def cremul(refs: list[str], reference: str) -> bytes:
    return render_cremul([payment(r) for r in refs], reference=reference,
                         created=datetime(2026, 11, 20, 6, 0)).encode("latin-1")


LEDGER = [
    {"record": "customer", "id": "C1", "name": "Kari Nordmann", "type": "private",
     "address1": "Storgata 1", "post_code": "0150", "city": "OSLO", "country": "NO"},
    {"record": "entry", "id": "I1", "customer_id": "C1", "type": "invoice", "document_no": "F1",
     "document_date": "2026-11-01", "due_date": "2026-11-15", "amount": "1000.00",
     "currency": "NOK", "kid": kid10("000000001"), "status": "invoiced"},
]


def make_site(tmp_path: Path) -> Path:
    site = tmp_path / "site"
    init_site(site)
    ledger = tmp_path / "ledger.jsonl"
    ledger.write_text("\n".join(json.dumps(r) for r in LEDGER) + "\n", encoding="utf-8")
    assert cli(site, "import", str(ledger)).exit_code == 0
    return site


def listed(site: Path) -> list[dict]:
    r = cli(site, "payments", "--json")
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)["payments"]


def refs(site: Path) -> list[str]:
    return sorted(p["archive_ref"] for p in listed(site))


def names(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir() if p.is_file()} if folder.is_dir() else set()


def age(path: Path, seconds: float = STALE_AFTER + 60) -> None:
    """The file has sat unchanged for longer than the watcher waits for an incomplete file."""
    old = time.time() - seconds
    os.utime(path, (old, old))


def uploaded(site: Path, file_id: str) -> None:
    """Journal an exported file uploaded, as `reskontro send` does: only then can it have a receipt."""
    with Site.open(site).db.begin() as conn:
        journal.mark_uploaded(conn, file_id)


def inbox_rows(site: Path) -> int:
    with Site.open(site).db.connect() as conn:
        return conn.execute(select(func.count()).select_from(s.inbox_files)).scalar_one()


@pytest.fixture(autouse=True)
def _wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "400")      # rich wraps at 80 columns without a terminal


BOMB = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<Document xmlns="urn:iso:std:iso:20022:tech:xsd:camt.054.001.04"><BkToCstmrDbtCdtNtfctn>
<GrpHdr><MsgId>&lol9;</MsgId></GrpHdr></BkToCstmrDbtCdtNtfctn></Document>
"""

XXE_CAMT = b"""<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE Document [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<Document xmlns="urn:iso:std:iso:20022:tech:xsd:camt.054.001.04">
<BkToCstmrDbtCdtNtfctn><GrpHdr><MsgId>&xxe;</MsgId><CreDtTm>2026-11-20T06:00:00</CreDtTm></GrpHdr>
<Ntfctn><Id>N1</Id><Ntry><Amt Ccy="NOK">100.00</Amt><CdtDbtInd>CRDT</CdtDbtInd><Sts>BOOK</Sts>
<BookgDt><Dt>2026-11-20</Dt></BookgDt><AcctSvcrRef>XXE-1</AcctSvcrRef></Ntry></Ntfctn>
</BkToCstmrDbtCdtNtfctn></Document>
"""

XXE_RECEIPT = b"""<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE TransferReceipt [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<TransferReceipt xmlns="urn:reskontro:ledger-transfer:1"><FileId>&xxe;</FileId>
<Status>accepted</Status><ReceivedAt>2026-11-29T18:05:00+00:00</ReceivedAt></TransferReceipt>
"""


# --- watch --once on a mixed inbox ----------------------------------------------------------

def test_watch_once_sorts_a_mixed_inbox(tmp_path: Path, corpus: Path) -> None:
    site = make_site(tmp_path)
    exported = cli(site, "export")
    assert exported.exit_code == 0, exported.output
    (sent,) = (site / "outbox").glob("LT_*.xml")
    uploaded(site, sent.stem)
    inbox = site / "inbox"

    good = cremul(["*2001", "*2002"], "V1")
    half_bad = cremul(["*3001", "*3002"], "HB1")       # first payment fine, the second's date bad
    cut = half_bad.rfind(b"DTM+203:20261120")
    half_bad = half_bad[:cut] + b"DTM+203:20261340" + half_bad[cut + 16:]
    whole = cremul(["*4001"], "T1")
    receipt = render_receipt(Receipt(sent.stem, "accepted", datetime.now(timezone.utc)))
    files = {
        "CREMUL_V1.DAT": good,
        "perspilling__CREMUL0003.DAT": (corpus / "cremul" / "perspilling__CREMUL0003.DAT").read_bytes(),
        f"{sent.stem}.receipt.xml": receipt,
        "truncated.DAT": whole[:len(whole) // 2],
        "empty.DAT": b"",
        "garbage.bin": bytes(range(256)) * 4,
        "bomb.xml": BOMB,
        "xxe.xml": XXE_CAMT,
        "evil.receipt.xml": XXE_RECEIPT,
        "half-bad.DAT": half_bad,
        "pay ment;rm -rf.DAT": cremul(["*5001"], "U1"),
        "CREMUL_P1.DAT.part": cremul(["*6001"], "P1")[:50],
    }
    for name, data in files.items():
        (inbox / name).write_bytes(data)
    # Complete-looking files are taken at once; an incomplete one (no end marker) only once it
    # has not changed for the watcher's stale limit: a fresh one may still be being written.
    for name in ("truncated.DAT", "empty.DAT", "garbage.bin"):
        age(inbox / name)
    part_stat = (inbox / "CREMUL_P1.DAT.part").stat()

    r = cli(site, "watch", "--once")
    assert r.exit_code == 3, r.output              # done, and the failed files are a person's
    out = r.stdout

    assert names(inbox / "done") == {"CREMUL_V1.DAT", "perspilling__CREMUL0003.DAT", f"{sent.stem}.receipt.xml"}
    assert (inbox / "done" / "perspilling__CREMUL0003.DAT").read_bytes() == files["perspilling__CREMUL0003.DAT"]
    failed = inbox / "failed"
    reasons = {p.name.removesuffix(".reason.txt"): p.read_text(encoding="utf-8")
               for p in failed.glob("*.reason.txt")}
    assert set(reasons) == {"truncated.DAT", "empty.DAT", "garbage.bin", "bomb.xml", "xxe.xml",
                            "evil.receipt.xml", "half-bad.DAT", "unsafe-name"}
    assert names(failed) == set(reasons) | {f"{n}.reason.txt" for n in reasons}
    assert re.match(r"truncated\.DAT: segment \d+ \([A-Z]{3}\) is not terminated .*file truncated",
                    reasons["truncated.DAT"])
    assert "empty.DAT: empty file" in reasons["empty.DAT"]
    assert "garbage.bin: not a known payment file" in reasons["garbage.bin"]
    assert "bomb.xml" in reasons["bomb.xml"] and "DOCTYPE" in reasons["bomb.xml"]
    assert "xxe.xml" in reasons["xxe.xml"] and "DOCTYPE" in reasons["xxe.xml"]
    assert "DOCTYPE" in reasons["evil.receipt.xml"]
    assert re.match(r"half-bad\.DAT: segment \d+ \(DTM\): invalid date", reasons["half-bad.DAT"])
    assert "'pay ment;rm -rf.DAT' is not a safe name" in reasons["unsafe-name"]
    for name in ("truncated.DAT", "empty.DAT", "garbage.bin", "bomb.xml", "xxe.xml", "half-bad.DAT"):
        assert (failed / name).read_bytes() == files[name]          # kept as it came
    assert (failed / "unsafe-name").read_bytes() == files["pay ment;rm -rf.DAT"]
    assert "root:" not in "".join(reasons.values())                # no external entity was read

    # The .part file is not touched; nothing is left in processing/.
    assert names(inbox) == {"CREMUL_P1.DAT.part"}
    st = (inbox / "CREMUL_P1.DAT.part").stat()
    assert (st.st_size, st.st_mtime_ns) == (part_stat.st_size, part_stat.st_mtime_ns)
    assert names(inbox / "processing") == set()

    # Listed: the good file's 2 and the corpus file's 29; nothing of a failed file, not half.
    got = refs(site)
    assert len(got) == 31 and len(set(got)) == 31
    assert {"*2001", "*2002"} <= set(got)
    assert not {"*3001", "*3002", "*4001", "*5001", "*6001", "XXE-1"} & set(got)
    with Site.open(site).db.connect() as conn:
        assert journal.file_record(conn, sent.stem).state == "accepted"
    assert "CREMUL_V1.DAT (payments): cremul: 2 payments listed" in out
    assert "perspilling__CREMUL0003.DAT (payments): cremul: 29 payments listed" in out
    assert f"{sent.stem}: accepted" in out


def test_same_file_again_is_a_duplicate_and_a_seen_payment_is_not_listed_twice(
        tmp_path: Path, corpus: Path) -> None:
    site = make_site(tmp_path)
    inbox = site / "inbox"
    (inbox / "CREMUL_A.DAT").write_bytes(cremul(["*7001", "*7002"], "A1"))
    shutil.copyfile(corpus / "cremul" / "perspilling__CREMUL0003.DAT", inbox / "perspilling__CREMUL0003.DAT")
    assert cli(site, "watch", "--once").exit_code == 0
    before = listed(site)
    assert len(before) == 31

    # 1. The same bytes under another name: not processed again.
    (inbox / "CREMUL_A_again.DAT").write_bytes(cremul(["*7001", "*7002"], "A1"))
    # 2. The same real bank file in another encoding (other bytes, the same 29 payments).
    shutil.copyfile(corpus / "cremul" / "perspilling__CREMUL0003-utf-8.txt", inbox / "CREMUL0003-utf-8.txt")
    assert (inbox / "CREMUL0003-utf-8.txt").read_bytes() != (inbox / "done" / "perspilling__CREMUL0003.DAT").read_bytes()
    # 3. Another file holding one payment seen before and one new.
    (inbox / "CREMUL_B.DAT").write_bytes(cremul(["*7002", "*7003"], "B1"))
    r = cli(site, "watch", "--once")
    assert r.exit_code == 0, r.output
    out = r.stdout
    assert "CREMUL_A_again.DAT (duplicate): same content as CREMUL_A.DAT, processed before" in out
    assert "CREMUL0003-utf-8.txt (payments): cremul: 0 payments listed, 29 seen before (not listed again)" in out
    assert "CREMUL_B.DAT (payments): cremul: 1 payments listed, 1 seen before (not listed again)" in out
    assert names(inbox / "done") == {"CREMUL_A.DAT", "perspilling__CREMUL0003.DAT", "CREMUL_A_again.DAT",
                                     "CREMUL0003-utf-8.txt", "CREMUL_B.DAT"}
    after = listed(site)
    assert len(after) == 32
    assert sorted(p["archive_ref"] for p in after) == sorted([p["archive_ref"] for p in before] + ["*7003"])
    assert {p["id"]: p for p in after if p["archive_ref"] != "*7003"} == {p["id"]: p for p in before}


# --- crash after the claim ----------------------------------------------------------------

def test_file_left_in_processing_is_completed_by_the_next_pass(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    inbox = site / "inbox"
    (inbox / "processing").mkdir(exist_ok=True)
    data = cremul(["*8001", "*8002"], "C1")
    (inbox / "processing" / "CREMUL_C.DAT").write_bytes(data)     # claimed, then the process died

    r = cli(site, "watch", "--once")
    assert r.exit_code == 0, r.output
    assert "CREMUL_C.DAT (payments): cremul: 2 payments listed" in r.stdout
    assert names(inbox / "processing") == set()
    assert (inbox / "done" / "CREMUL_C.DAT").read_bytes() == data
    assert refs(site) == ["*8001", "*8002"] and inbox_rows(site) == 1

    r = cli(site, "watch", "--once")                             # nothing left to do
    assert r.exit_code == 0 and "Nothing to process in the inbox." in r.stdout
    assert refs(site) == ["*8001", "*8002"]


@pytest.mark.parametrize("fault, listed_before_crash", [("inbox-claimed", 0), ("inbox-recorded", 2)])
def test_killed_watch_is_completed_by_the_next_pass_without_booking_twice(
        tmp_path: Path, fault: str, listed_before_crash: int) -> None:
    site = make_site(tmp_path)
    inbox = site / "inbox"
    # *9001 pays I1 in full (KID and amount); *9002 names no invoice.
    data = render_cremul([payment("*9001", "1000.00", kid10("000000001")), payment("*9002")],
                         reference="K1", created=datetime(2026, 11, 20, 6, 0)).encode("latin-1")
    (inbox / "CREMUL_K.DAT").write_bytes(data)
    env = {**os.environ, "RESKONTRO_FAULT": fault, "COLUMNS": "400"}
    proc = subprocess.run([sys.executable, "-m", "reskontro.cli", "--site", str(site), "watch", "--once"],
                          env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == -9, (proc.stdout, proc.stderr)     # SIGKILL at the fault point
    assert names(inbox / "processing") == {"CREMUL_K.DAT"} and names(inbox / "done") == set()
    assert len(refs(site)) == listed_before_crash

    r = cli(site, "watch", "--once")
    assert r.exit_code == 0, r.output
    assert names(inbox / "processing") == set()
    assert (inbox / "done" / "CREMUL_K.DAT").read_bytes() == data
    assert refs(site) == ["*9001", "*9002"] and inbox_rows(site) == 1
    post = cli(site, "post")                                     # each payment once, nothing twice
    assert post.exit_code == 3 and post.stdout.startswith("Booked 1 payment; 1 invoice closed; 1 unmatched.")
    assert refs(site) == ["*9001", "*9002"]
    with Site.open(site).db.connect() as conn:
        members = conn.execute(select(s.entries.c.id).where(s.entries.c.match_id == "MI1")).scalars().all()
        payments = conn.execute(select(s.entries.c.id).where(s.entries.c.type == "payment")).scalars().all()
    assert sorted(members) == sorted(["I1", payments[0]]) and len(payments) == 1


# --- the watcher, running -----------------------------------------------------------------

class Watcher:
    """reskontro.payments.watcher.watch in a thread, with small rescan and settle values."""

    def __init__(self, site: Path):
        self.site = site
        self.inbox = site / "inbox"
        self.db = Site.open(site).db
        self.stop = threading.Event()
        self.reports: list[Processed] = []
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self._run, name="watcher-under-test", daemon=True)

    def _run(self) -> None:
        try:
            watch(self.db, self.inbox, rescan=0.2, settle=0.05, stop=self.stop, report=self.reports.append)
        except BaseException as exc:   # reported by the test, not lost in the thread
            self.errors.append(exc)

    def report_for(self, name: str) -> Processed | None:
        return next((r for r in self.reports if r.name == name), None)

    def wait(self, name: str, timeout: float = 15) -> Processed:
        return wait_for(lambda: self.report_for(name), timeout, f"the watcher to take {name}")


@pytest.fixture
def watcher(tmp_path: Path) -> Iterator[Watcher]:
    w = Watcher(make_site(tmp_path))
    w.thread.start()
    yield w
    w.stop.set()
    w.thread.join(timeout=5)
    assert not w.thread.is_alive(), "the watcher did not stop within 5 s"
    assert w.errors == []


def drop(inbox: Path, name: str, data: bytes) -> None:
    """Write under a hidden temporary name, then rename: how a careful sender delivers."""
    tmp = inbox / f".{name}.part"
    tmp.write_bytes(data)
    os.replace(tmp, inbox / name)


def test_watcher_takes_a_file_dropped_while_it_runs(watcher: Watcher) -> None:
    drop(watcher.inbox, "CREMUL_W1.DAT", cremul(["*1101"], "W1"))
    r = watcher.wait("CREMUL_W1.DAT")
    assert r.kind == "payments" and "1 payments listed" in r.detail
    wait_for(lambda: (watcher.inbox / "done" / "CREMUL_W1.DAT").exists(), 5, "done/CREMUL_W1.DAT")
    assert refs(watcher.site) == ["*1101"]


def test_watcher_keeps_running_after_a_bad_file(watcher: Watcher) -> None:
    drop(watcher.inbox, "xxe.xml", XXE_CAMT)
    bad = watcher.wait("xxe.xml")
    assert bad.kind == "failed" and "DOCTYPE" in bad.detail
    assert (watcher.inbox / "failed" / "xxe.xml.reason.txt").exists()
    drop(watcher.inbox, "CREMUL_W2.DAT", cremul(["*1201"], "W2"))
    good = watcher.wait("CREMUL_W2.DAT")
    assert good.kind == "payments" and watcher.thread.is_alive()
    assert refs(watcher.site) == ["*1201"]


def test_watcher_leaves_a_file_being_written_until_it_is_complete(watcher: Watcher) -> None:
    data = cremul(["*1301", "*1302"], "W3")
    slow = watcher.inbox / "CREMUL_W3.DAT"
    with slow.open("wb") as f:                               # written in place, in two goes
        f.write(data[:len(data) // 2])
        f.flush()
        # A file dropped after the half one: once the watcher has taken it, it has looked at
        # the half file at least twice (stable size, but no UNZ): it must still be there.
        drop(watcher.inbox, "CREMUL_W4.DAT", cremul(["*1401"], "W4"))
        watcher.wait("CREMUL_W4.DAT")
        assert slow.read_bytes() == data[:len(data) // 2]
        assert watcher.report_for("CREMUL_W3.DAT") is None
        assert "CREMUL_W3.DAT" not in names(watcher.inbox / "processing") | names(watcher.inbox / "failed")
        assert refs(watcher.site) == ["*1401"]
        f.write(data[len(data) // 2:])
    r = watcher.wait("CREMUL_W3.DAT")
    assert r.kind == "payments" and "2 payments listed" in r.detail
    assert (watcher.inbox / "done" / "CREMUL_W3.DAT").read_bytes() == data
    assert refs(watcher.site) == ["*1301", "*1302", "*1401"]


def test_receipts_only_pass_leaves_payment_files_for_the_watcher(tmp_path: Path) -> None:
    """`reskontro receipts` (only_receipts) leaves payment files where they are for the watcher."""
    site = make_site(tmp_path)
    inbox = site / "inbox"
    data = cremul(["*1501"], "R1")
    (inbox / "CREMUL_R.DAT").write_bytes(data)
    db = Site.open(site).db
    assert process_inbox(db, inbox, only_receipts=True) == []
    assert (inbox / "CREMUL_R.DAT").read_bytes() == data
    results = process_inbox(db, inbox, payments=list_payment_file)
    assert [(r.name, r.kind) for r in results] == [("CREMUL_R.DAT", "payments")]


def test_watcher_leaves_a_receipt_being_written_until_it_is_complete(watcher: Watcher) -> None:
    """A receipt is complete when its root element is closed, not at any '>'."""
    assert cli(watcher.site, "export").exit_code == 0
    (sent,) = (watcher.site / "outbox").glob("LT_*.xml")
    uploaded(watcher.site, sent.stem)
    receipt = render_receipt(Receipt(sent.stem, "accepted", datetime.now(timezone.utc)))
    cut = receipt.index(b"</Status>") + len(b"</Status>")
    slow = watcher.inbox / f"{sent.stem}.receipt.xml"
    with slow.open("wb") as f:
        f.write(receipt[:cut])                               # ends in '>', but the root is open
        f.flush()
        drop(watcher.inbox, "CREMUL_W5.DAT", cremul(["*1501"], "W5"))
        watcher.wait("CREMUL_W5.DAT")
        taken = watcher.report_for(slow.name)
        assert taken is None, f"half a receipt was taken: {taken}"
        assert slow.read_bytes() == receipt[:cut]
        f.write(receipt[cut:])
    r = watcher.wait(slow.name)
    assert (r.kind, r.detail) == ("receipt", f"{sent.stem}: accepted")
    with watcher.db.connect() as conn:
        assert journal.file_record(conn, sent.stem).state == "accepted"


# --- one completeness test, one owner of processing/ (issue 10, point 13) --------------------

def test_the_cycle_leaves_a_payment_file_still_being_written(tmp_path: Path) -> None:
    """18:00: the cycle met a CREMUL still being uploaded in place. It must leave it (as the
    watcher does), so that once complete all its payments are listed."""
    site = make_site(tmp_path)
    inbox = site / "inbox"
    data = cremul([f"*{2100 + i}" for i in range(29)], "N1")
    path = inbox / "CREMUL_N1.DAT"
    path.write_bytes(data[:3000])                  # the upload so far

    r = cli(site, "watch", "--once")
    assert r.exit_code == 0, r.output
    r = cli(site, "run", "--no-sftp")
    assert r.exit_code == 0, r.output
    assert "1 not complete yet, left for the next pass: CREMUL_N1.DAT" in r.stdout
    assert path.read_bytes() == data[:3000]
    assert names(inbox / "failed") == set() and names(inbox / "processing") == set()

    with path.open("ab") as f:                     # the writer finishes, in place
        f.write(data[3000:])
    r = cli(site, "run", "--no-sftp")
    assert r.exit_code == 3, r.output              # done; the payments' KIDs name no invoice here
    assert "29 bank payments received tonight are not booked" in " ".join(r.stderr.split())
    assert (inbox / "done" / "CREMUL_N1.DAT").read_bytes() == data
    assert len(refs(site)) == 29


def test_receipts_leaves_a_receipt_still_being_written(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    assert cli(site, "export").exit_code == 0
    (sent,) = (site / "outbox").glob("LT_*.xml")
    from reskontro.transfer import journal
    with Site.open(site).db.begin() as conn:        # it left: only then is a receipt believed
        journal.mark_uploaded(conn, sent.stem)
    receipt = render_receipt(Receipt(sent.stem, "accepted", datetime.now(timezone.utc)))
    path = site / "inbox" / f"{sent.stem}.receipt.xml"
    path.write_bytes(receipt[:receipt.index(b"</Status>")])
    r = cli(site, "receipts")
    assert r.exit_code == 0 and "No receipts in the inbox." in r.stdout, r.output
    assert names(site / "inbox" / "failed") == set()
    path.write_bytes(receipt)
    r = cli(site, "receipts")
    assert r.exit_code == 0 and f"{sent.stem}: accepted" in r.stdout, r.output


def test_the_watcher_never_takes_a_file_the_cycle_has_claimed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`serve`: the cycle's inbox step has claimed a file (it is in processing/) when the
    watcher looks. The watcher must leave it to the cycle: neither take it as a crash leftover
    nor fail it; and it takes the next file as usual."""
    from reskontro.testing import faults

    site = make_site(tmp_path)
    inbox = site / "inbox"
    (inbox / "CREMUL_X.DAT").write_bytes(cremul(["*2201"], "X1"))
    db = Site.open(site).db
    claimed, go, watcher_saw = threading.Event(), threading.Event(), []

    def point(name: str) -> None:
        who = threading.current_thread().name
        if who == "cycle-pass" and name == "inbox-claimed":
            claimed.set()
            assert go.wait(15)
        elif who == "watcher-under-test" and name in ("inbox-claimed", "inbox-busy"):
            watcher_saw.append(name)
    monkeypatch.setattr(faults, "point", point)

    cycle_results: list[list[Processed]] = []
    cycle = threading.Thread(target=lambda: cycle_results.append(process_inbox(db, inbox, payments=list_payment_file)),
                             name="cycle-pass", daemon=True)
    cycle.start()
    assert claimed.wait(15)
    assert names(inbox / "processing") == {"CREMUL_X.DAT"}
    w = Watcher(site)
    w.thread.start()
    try:
        wait_for(lambda: watcher_saw, 15, "the watcher to look at the inbox")
        assert watcher_saw[0] == "inbox-busy", watcher_saw       # not a claim of the cycle's file
        assert w.report_for("CREMUL_X.DAT") is None
        go.set()
        cycle.join(timeout=15)
        assert [(r.name, r.kind) for r in cycle_results[0]] == [("CREMUL_X.DAT", "payments")]
        drop(inbox, "CREMUL_Y.DAT", cremul(["*2202"], "Y1"))
        assert w.wait("CREMUL_Y.DAT").kind == "payments"
    finally:
        go.set()
        w.stop.set()
        w.thread.join(timeout=5)
    assert w.errors == [] and w.report_for("CREMUL_X.DAT") is None
    assert names(inbox / "done") == {"CREMUL_X.DAT", "CREMUL_Y.DAT"} and names(inbox / "failed") == set()
    assert refs(site) == ["*2201", "*2202"] and inbox_rows(site) == 2


def test_watch_and_run_at_once_on_one_inbox_take_each_file_once(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    inbox = site / "inbox"
    n = 150
    for i in range(n):
        (inbox / f"CREMUL_{i:03d}.DAT").write_bytes(cremul([f"*{5000 + 2 * i}", f"*{5001 + 2 * i}"], f"S{i}"))
    env = {**os.environ, "COLUMNS": "400"}
    env.pop("RESKONTRO_FAULT", None)
    base = [sys.executable, "-m", "reskontro.cli", "--site", str(site)]
    procs = [subprocess.Popen(base + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for args in (["watch", "--once"], ["run", "--no-sftp"], ["watch", "--once"])]
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (out, err) in zip(procs, outs):
        # the run books what is listed: unknown KIDs, not booked, need a person (exit 3)
        assert p.returncode in ((0, 3) if "run" in p.args else (0,)), (out, err)
        assert "Traceback" not in err
    assert names(inbox / "done") == {f"CREMUL_{i:03d}.DAT" for i in range(n)}     # each once (no .1)
    assert names(inbox / "failed") == set() and names(inbox / "processing") == set()
    assert len(refs(site)) == 2 * n and inbox_rows(site) == n


def test_an_idle_watcher_remembers_nothing_and_does_not_rescan(tmp_path: Path) -> None:
    from reskontro.payments.watcher import InboxWatcher

    site = make_site(tmp_path)
    inbox = site / "inbox"
    w = InboxWatcher(Site.open(site).db, inbox, rescan=60.0)
    for i in range(30):
        (inbox / f"CREMUL_{i:03d}.DAT").write_bytes(cremul([f"*{6000 + i}"], f"I{i}"))
    half = cremul(["*6999"], "H1")
    (inbox / "CREMUL_H.DAT").write_bytes(half[:200])
    now = time.time()
    assert w.due(now, woken=False)                     # the first look
    assert len(w.run_pass(now)) == 30
    assert w.waiting == {"CREMUL_H.DAT"}
    assert w.due(now + 1, woken=False)                 # a file waits to be complete: look again soon
    (inbox / "CREMUL_H.DAT").write_bytes(half)
    assert [r.name for r in w.run_pass(now + 1)] == ["CREMUL_H.DAT"]
    # Idle: nothing remembered of the 31 files, no pass until an event or the rescan interval.
    assert w.waiting == frozenset() and not w.busy
    assert not w.due(now + 2, woken=False) and not w.due(now + 60, woken=False)
    assert w.due(now + 2, woken=True) and w.due(now + 61.5, woken=False)
    assert w.handled == 31
