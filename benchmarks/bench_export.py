"""`reskontro export`: the backlog file end to end, and the daily file's cost against ledger size.

1. Backlog: for each ledger size (default 100,000 and 1,000,000 entries) build a site in a
   temporary folder, write a sample ledger (reskontro.ledger.sample) big enough for that many entries,
   import it, then time `export --backlog` end to end (decide + journal + render + XSD and
   contract check + rename) in a subprocess of its own, and read that subprocess's peak RSS
   (its VmHWM; os.wait4's ru_maxrss where /proc is missing: on Linux that one also counts the
   parent's memory the child had before exec), and the peak of its RSS and its helper
   processes' (the check and decide processes) summed, sampled every 20 ms. Targets: >= 60,000
   ledger entries/s, peak RSS (with the helpers) <= 256 MiB, and memory flat in ledger size.
2. Daily ratio: on the largest ledger and on a 10,000-entry ledger, both exported and accepted
   (backlog, then one daily file, receipts read), import 5,000 new entries (new invoices, each
   paid by a new payment, matched) and time the daily `export`. Target: ratio <= 1.5.
3. --profile: cProfile of the backlog export of the --profile-entries ledger (default 100,000),
   the top entries by cumulative time.

    .venv/bin/python benchmarks/bench_export.py [--entries 1000000] [--small 100000] [--profile]

Times are those of export() inside the subprocess (the process's own start-up, ~0.7 s of
imports, is printed beside them as wall time). Exit status 1 when a target is not met.
"""
from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import func, select  # noqa: E402

from reskontro.ledger import schema as s  # noqa: E402
from reskontro.ledger.importer import import_files  # noqa: E402
from reskontro.payments.inbox import process_inbox  # noqa: E402
from reskontro.transfer.receipts import Receipt, render_receipt  # noqa: E402
from reskontro.ledger.sample import generate  # noqa: E402
from reskontro.site import Site, init_site  # noqa: E402

TARGET_RATE = 60_000
TARGET_RSS_MIB = 256
TARGET_RATIO = 1.5
CHUNK_RECORDS = 250_000      # records per import file (progress lines while the ledger is built)

# The child: one export, timed inside the process; prints a JSON line.
CHILD = """
import glob, json, sys, threading, time
from pathlib import Path

def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            return next(int(l.split()[1]) for l in f if l.startswith("VmRSS:"))
    except (OSError, StopIteration):
        return 0

tree_peak = [0]
def sample():   # this process and its helpers (check, decide), summed: their peak together
    while True:
        kids = set()
        for path in glob.glob("/proc/self/task/*/children"):
            try:
                kids.update(open(path).read().split())
            except OSError:
                pass
        tree_peak[0] = max(tree_peak[0], rss_kib("self") + sum(rss_kib(k) for k in kids))
        time.sleep(0.02)   # a sampling interval, not a wait for anything
threading.Thread(target=sample, daemon=True).start()

t0 = time.perf_counter()
from reskontro.transfer.export import export
from reskontro.files.lock import run_lock
from reskontro.site import Site
site = Site.open(Path(sys.argv[1]))
t1 = time.perf_counter()
with run_lock(site.config.site / "var" / "reskontro.lock"):
    r = export(site.config, site.db, site.rules, backlog=sys.argv[2] == "backlog")
t2 = time.perf_counter()
try:   # this process's own peak RSS (the high-water mark of its memory since exec)
    hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:"))
except (OSError, StopIteration):
    hwm = None
print(json.dumps({"seconds": t2 - t1, "hwm_kib": hwm, "tree_kib": tree_peak[0] or None,
                  "imports": t1 - t0, "file_id": r.file_id,
                  "path": str(r.path) if r.path else None, "entries": r.entries,
                  "customers": r.customers, "matches": r.matches, "problems": list(r.problems[:5])}))
"""


def say(text: str) -> None:
    print(text, flush=True)


def entries_per_customer() -> float:
    """The sample generator's entries per customer (measured on 5,000 customers)."""
    n = sum(1 for r in generate(5000, seed=42) if r["record"] == "entry")
    return n / 5000


def build_site(folder: Path, entries: int, ratio: float) -> tuple[Site, int]:
    """A site holding a sample ledger of about `entries` entries (at least that many)."""
    init_site(folder)
    customers = max(1, int(entries / ratio) + 1)
    t0 = time.perf_counter()
    chunks: list[Path] = []
    out = None
    n_records = n_entries = in_chunk = 0
    for rec in generate(customers, seed=42):
        # a new import file at a customer: every reference points back (store or this file)
        if out is None or (in_chunk >= CHUNK_RECORDS and rec["record"] == "customer"):
            if out is not None:
                out.close()
            chunks.append(folder / f"ledger-{len(chunks):03d}.jsonl")
            out = chunks[-1].open("w", encoding="utf-8")
            in_chunk = 0
        out.write(json.dumps(rec, ensure_ascii=False) + "\n")
        in_chunk += 1
        n_records += 1
        n_entries += rec["record"] == "entry"
        if n_records % 500_000 == 0:
            say(f"    generated {n_records:,} records ({time.perf_counter() - t0:.0f} s)")
    out.close()
    t_gen = time.perf_counter() - t0
    site = Site.open(folder)
    t0 = time.perf_counter()
    for i, chunk in enumerate(chunks, 1):
        import_files(site.db, [chunk])
        chunk.unlink()
        if len(chunks) > 1:
            say(f"    imported file {i}/{len(chunks)} ({time.perf_counter() - t0:.0f} s)")
    t_imp = time.perf_counter() - t0
    with site.db.connect() as conn:
        count = conn.execute(select(func.count()).select_from(s.entries)).scalar_one()
    say(f"  ledger: {customers:,} customers, {count:,} entries; generated in {t_gen:.1f} s, "
        f"imported in {t_imp:.1f} s")
    return site, count


def run_export(site_dir: Path, kind: str) -> dict:
    """One export in a subprocess; its own peak RSS from os.wait4."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(site_dir), kind],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=str(ROOT))
    out, err = proc.stdout.read(), proc.stderr.read()
    _pid, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"export {kind} failed ({proc.returncode}):\n{err.decode()}")
    result = json.loads(out.decode().strip().splitlines()[-1])
    if result["path"] is None:
        raise SystemExit(f"export {kind} failed its pre-send check: {result['problems']}")
    result["wall"] = wall
    # ru_maxrss of a child on Linux also counts the memory it had before exec: the copy of this
    # (big) parent made by fork. VmHWM is the child's own, when /proc has it.
    result["rss_mib"] = (result["hwm_kib"] or usage.ru_maxrss) / 1024
    # with its helper processes (sampled every 20 ms): what the machine must have free
    result["tree_mib"] = (result["tree_kib"] or 0) / 1024 or result["rss_mib"]
    return result


def accept(site: Site, file_id: str) -> None:
    """The file left (a receipt is believed only then), and the receiver's receipt says
    accepted; `reskontro receipts` reads it."""
    from reskontro.transfer import journal
    with site.db.begin() as conn:
        journal.mark_uploaded(conn, file_id)
    receipt = Receipt(file_id, "accepted", datetime.now(timezone.utc).replace(microsecond=0))
    (site.config.inbox / f"{file_id}.receipt.xml").write_bytes(render_receipt(receipt))
    done = process_inbox(site.db, site.config.inbox, only_receipts=True)
    assert [p.kind for p in done] == ["receipt"] and "accepted" in done[0].detail, done


def new_day(folder: Path, n_entries: int) -> Path:
    """`n_entries` new entries: invoices of existing customers, each paid in full (matched)."""
    path = folder / "new-day.jsonl"
    with path.open("w", encoding="utf-8") as f:
        for i in range(n_entries // 2):
            cid = f"C{i % 500 + 1:07d}"
            iid, pid = f"NI{i:08d}", f"NP{i:08d}"
            amount = f"{100 + i % 9000}.{i % 100:02d}"
            f.write(json.dumps({"record": "entry", "id": iid, "customer_id": cid, "type": "invoice",
                                "document_no": iid, "document_date": "2026-12-01",
                                "due_date": "2026-12-15", "amount": amount, "currency": "NOK",
                                "status": "invoiced"}) + "\n")
            f.write(json.dumps({"record": "entry", "id": pid, "customer_id": cid, "type": "payment",
                                "document_no": pid, "document_date": "2026-12-02",
                                "amount": "-" + amount, "currency": "NOK"}) + "\n")
            f.write(json.dumps({"record": "match", "id": f"NM{i:08d}", "entries": [iid, pid]}) + "\n")
    return path


def profile_backlog(site_dir: Path, top: int = 10) -> None:
    from reskontro.transfer.export import export
    site = Site.open(site_dir)
    engine = site.rules
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.enable()
    r = export(site.config, site.db, engine, backlog=True)
    prof.disable()
    say(f"  profiled export --backlog: {r.entries:,} entries in the file, "
        f"{time.perf_counter() - t0:.2f} s under cProfile")
    for title, order, restrict in (("cumulative time, reskontro's own functions", "cumulative", "/reskontro/"),
                                   ("own time, everything", "tottime", "")):
        buf = io.StringIO()
        stats = pstats.Stats(prof, stream=buf).sort_stats(order)
        stats.print_stats(*((restrict, top) if restrict else (top,)))
        lines = buf.getvalue().splitlines()
        start = next(i for i, line in enumerate(lines) if line.lstrip().startswith("ncalls"))
        say(f"  top {top} by {title}:")
        say("\n".join(line.replace(str(ROOT) + "/", "") for line in lines[start:start + top + 1]))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--entries", type=int, default=1_000_000, help="the largest ledger (entries)")
    ap.add_argument("--small", type=int, default=None,
                    help="the second ledger size for the backlog (default entries/10, at least 10,000)")
    ap.add_argument("--daily-small", type=int, default=10_000, help="the small ledger of the daily ratio")
    ap.add_argument("--daily-new", type=int, default=5_000, help="new entries imported for the daily file")
    ap.add_argument("--profile", action="store_true", help="cProfile the backlog export of --profile-entries")
    ap.add_argument("--profile-entries", type=int, default=100_000)
    ap.add_argument("--keep", action="store_true", help="keep the temporary sites")
    args = ap.parse_args()
    small = args.small or max(args.entries // 10, 10_000)
    sizes = sorted({small, args.entries, args.daily_small})

    tmp = Path(tempfile.mkdtemp(prefix="bench_export_"))
    say(f"bench_export: sites in {tmp}")
    try:
        ratio = entries_per_customer()
        say(f"sample ledger: {ratio:.2f} entries per customer (payments, credit notes, vouchers included)")
        sites: dict[int, tuple[Site, int]] = {}
        backlog: dict[int, dict] = {}
        for size in sizes:
            say(f"\n== ledger of {size:,} entries")
            folder = tmp / f"site-{size}"
            sites[size] = build_site(folder, size, ratio)
            if args.profile and size == args.profile_entries:
                # close our connections first: closing any descriptor of a SQLite file drops
                # this process's POSIX locks on it, and copytree opens and closes them all
                sites[size][0].db.dispose()
                shutil.copytree(folder, tmp / "site-profile")
            r = run_export(folder, "backlog")
            count = sites[size][1]
            r["rate"] = count / r["seconds"]
            backlog[size] = r
            say(f"  export --backlog: {r['seconds']:.2f} s in export() ({r['wall']:.2f} s wall with "
                f"start-up); {count / r['seconds']:,.0f} ledger entries/s; file: {r['entries']:,} "
                f"entries, {r['customers']:,} customers, {r['matches']:,} matches "
                f"({r['entries'] / r['seconds']:,.0f} file entries/s); peak RSS {r['rss_mib']:.0f} MiB, "
                f"{r['tree_mib']:.0f} MiB with its helper processes")

        say("\n== daily file after 5,000 new entries")
        daily: dict[int, dict] = {}
        for size in sorted({args.daily_small, args.entries}):
            site, count = sites[size]
            folder = site.config.site
            accept(site, backlog[size]["file_id"])
            flush = run_export(folder, "daily")            # the evening after the backlog
            accept(site, flush["file_id"])
            t0 = time.perf_counter()
            import_files(site.db, [new_day(folder, args.daily_new)])
            t_imp = time.perf_counter() - t0
            r = run_export(folder, "daily")
            daily[size] = r
            say(f"  ledger {count:,} entries: import {t_imp:.2f} s; daily export {r['seconds']:.3f} s in "
                f"export() ({r['wall']:.2f} s wall): {r['entries']:,} entries, {r['matches']:,} matches; "
                f"peak RSS {r['rss_mib']:.0f} MiB (the evening before: {flush['entries']:,} entries, "
                f"{flush['seconds']:.3f} s)")

        if args.profile:
            say(f"\n== profile: export --backlog of {args.profile_entries:,} entries")
            if (tmp / "site-profile").is_dir():
                profile_backlog(tmp / "site-profile")
            else:
                say("  (no ledger of that size in this run: pass --profile-entries one of "
                    f"{', '.join(f'{x:,}' for x in sizes)})")

        big = max(sizes)
        rate = backlog[big]["rate"]
        # the export and its helper processes (check, decide) together
        rss = max(r["tree_mib"] for r in backlog.values())
        ratio_daily = daily[args.entries]["seconds"] / daily[args.daily_small]["seconds"]
        rss_small, rss_big = backlog[min(small, big)]["tree_mib"], backlog[big]["tree_mib"]
        checks = [
            (f"backlog throughput at {big:,} entries: {rate:,.0f} ledger entries/s (target >= {TARGET_RATE:,})",
             rate >= TARGET_RATE),
            (f"backlog peak RSS with helper processes: {rss:.0f} MiB (target <= {TARGET_RSS_MIB}); {rss_small:.0f} MiB at "
             f"{min(small, big):,} vs {rss_big:.0f} MiB at {big:,} entries", rss <= TARGET_RSS_MIB),
            (f"daily ratio {args.entries:,} / {args.daily_small:,} entries: "
             f"{daily[args.entries]['seconds']:.3f} s / {daily[args.daily_small]['seconds']:.3f} s = "
             f"{ratio_daily:.2f} (target <= {TARGET_RATIO})", ratio_daily <= TARGET_RATIO),
        ]
        say("\n== results")
        for text, ok in checks:
            say(f"  {'met    ' if ok else 'NOT met'}  {text}")
        return 0 if all(ok for _, ok in checks) else 1
    finally:
        if args.keep:
            say(f"sites kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
