"""`reskontro import`: a 1,000,000-entry JSON Lines file into an empty SQLite store, end to end,
against the plain sqlite3 executemany of the same rows in the same run.

1. For each file size (default 100,000 and 1,000,000 entries) write a sample ledger
   (reskontro.ledger.sample: customers, entries, matches; ~1.64 records per entry) as ONE file,
   and import it into an empty store in a subprocess of its own, timed there: wall time, the
   CPU time of the process and of its helper (the second half's reader, from 16 MB), and the
   peak RSS of the two together (sampled every 20 ms; VmHWM of the importer alone beside it).
   Records = lines of the file.
2. The floor: in another subprocess, every row that import stored (customers, entries with
   their match, matches, pending), read into memory first, then written into an empty store of
   the same schema (same pragmas: WAL, synchronous=NORMAL) with plain sqlite3 executemany, one
   transaction, timed the same way. The ratio import/plain says what checking, versioning and
   staging cost on top of merely storing the rows, on this machine in this run.

Targets (issue 12, point 10): >= 50,000 records/s (wall clock) at 1,000,000 entries; peak RSS
<= 256 MiB; memory flat in file size. On a machine shared with other work the wall clock
suffers most: the CPU time is printed beside it, and the plain run in the same conditions.

    .venv/bin/python benchmarks/bench_import.py [--entries 1000000] [--small 100000] [--again]

Exit status 1 when a target is not met.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from reskontro.ledger.sample import generate  # noqa: E402

TARGET_RATE = 50_000
TARGET_RSS_MIB = 256

# The import, in a process of its own: times and peak RSS as one JSON line.
IMPORT_CHILD = """
import glob, json, resource, sys, threading, time
from pathlib import Path

def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            return next(int(l.split()[1]) for l in f if l.startswith("VmRSS:"))
    except (OSError, StopIteration):
        return 0

tree_peak = [0]
def sample():   # this process and its helper (the second half's reader), summed: their peak together
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
from reskontro.ledger.importer import import_files
from reskontro.ledger.store import open_engine
db = open_engine(sys.argv[1])
files = [Path(p) for p in sys.argv[2:]]
def cpu():
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + kids.ru_utime + kids.ru_stime
t1, c1 = time.perf_counter(), cpu()
results = import_files(db, files)
t2, c2 = time.perf_counter(), cpu()
hwm = next((int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:")), None)
r = results[-1]
print(json.dumps({"seconds": t2 - t1, "cpu": c2 - c1, "hwm_kib": hwm, "tree_kib": tree_peak[0] or None,
                  "imports": t1 - t0, "customers": r.customers, "entries": r.entries, "matches": r.matches}))
"""

# The floor: the same rows, read first, then plain executemany into an empty store.
PLAIN_CHILD = """
import json, sqlite3, sys, time
from reskontro.ledger.store import open_engine
src, dst = sys.argv[1], sys.argv[2]
open_engine("sqlite:///" + dst).dispose()          # the same schema and indexes, empty
s = sqlite3.connect(src)
tables = {}
for t in ("customers", "entries", "matches", "pending"):
    cols = [r[1] for r in s.execute(f"PRAGMA table_info({t})")]
    tables[t] = (cols, s.execute(f"SELECT {', '.join(cols)} FROM {t}").fetchall())
s.close()
d = sqlite3.connect(dst, isolation_level=None)
d.execute("PRAGMA journal_mode=WAL"); d.execute("PRAGMA synchronous=NORMAL")
t1, c1 = time.perf_counter(), time.process_time()
d.execute("BEGIN")
for t, (cols, rows) in tables.items():
    d.executemany(f"INSERT INTO {t} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})", rows)
d.execute("COMMIT")
t2, c2 = time.perf_counter(), time.process_time()
print(json.dumps({"seconds": t2 - t1, "cpu": c2 - c1, "rows": {t: len(r) for t, (_c, r) in tables.items()}}))
"""


def say(text: str) -> None:
    print(text, flush=True)


def child(code: str, *args: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, cwd=str(ROOT))
    if proc.returncode != 0:
        raise SystemExit(f"child failed ({proc.returncode}):\n{proc.stderr.decode()}")
    return json.loads(proc.stdout.decode().strip().splitlines()[-1])


def write_ledger(path: Path, entries: int) -> tuple[int, int]:
    """A sample ledger of at least `entries` entries as one JSON Lines file: (records, entries)."""
    per_customer = sum(1 for r in generate(2000, seed=42) if r["record"] == "entry") / 2000
    records = n_entries = 0
    with path.open("w", encoding="utf-8") as f:
        for rec in generate(int(entries / per_customer * 1.01) + 1, seed=42):
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
            records += 1
            n_entries += rec["record"] == "entry"
    return records, n_entries


def load_avg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--entries", type=int, default=1_000_000, help="the largest file (entries)")
    ap.add_argument("--small", type=int, default=None, help="the smaller file (default entries/10)")
    ap.add_argument("--again", action="store_true", help="also import the largest file a second time (unchanged)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = ap.parse_args()
    sizes = sorted({args.small or max(args.entries // 10, 10_000), args.entries})

    tmp = Path(tempfile.mkdtemp(prefix="bench_import_"))
    say(f"bench_import: files and stores in {tmp}; {os.cpu_count()} cores, load average {load_avg()}")
    try:
        runs: dict[int, dict] = {}
        for size in sizes:
            say(f"\n== a file of {size:,} entries")
            path = tmp / f"ledger-{size}.jsonl"
            t0 = time.perf_counter()
            records, n_entries = write_ledger(path, size)
            say(f"  file: {records:,} records ({n_entries:,} entries), {path.stat().st_size / 1e6:.0f} MB, "
                f"written in {time.perf_counter() - t0:.0f} s")
            db = tmp / f"store-{size}.db"
            r = child(IMPORT_CHILD, f"sqlite:///{db}", str(path))
            r.update(records=records, rate=records / r["seconds"], cpu_rate=records / r["cpu"],
                     rss_mib=max(r["hwm_kib"] or 0, r["tree_kib"] or 0) / 1024)
            runs[size] = r
            say(f"  import: {r['seconds']:.1f} s wall, {r['cpu']:.1f} s CPU (with its helper): {r['rate']:,.0f} "
                f"records/s ({r['cpu_rate']:,.0f} per CPU second); peak RSS {r['rss_mib']:.0f} MiB (with its "
                f"helper; {(r['hwm_kib'] or 0) / 1024:.0f} MiB alone); "
                f"new customers/entries/matches {r['customers'][0]:,}/{r['entries'][0]:,}/{r['matches'][0]:,}")
            if size == max(sizes):
                p = child(PLAIN_CHILD, str(db), str(tmp / f"plain-{size}.db"))
                rows = sum(p["rows"].values())
                r["plain"] = p
                say(f"  plain sqlite3 executemany of the same {rows:,} rows "
                    f"({', '.join(f'{k} {v:,}' for k, v in p['rows'].items())}): {p['seconds']:.1f} s wall, "
                    f"{p['cpu']:.1f} s CPU = {records / p['seconds']:,.0f} records/s")
                say(f"  ratio import / plain: {r['seconds'] / p['seconds']:.2f}x wall, "
                    f"{r['cpu'] / p['cpu']:.2f}x CPU")
                if args.again:
                    a = child(IMPORT_CHILD, f"sqlite:///{db}", str(path))
                    say(f"  the same file again (nothing changes): {a['seconds']:.1f} s wall, {a['cpu']:.1f} s CPU "
                        f"= {records / a['seconds']:,.0f} records/s; peak RSS {(a['hwm_kib'] or 0) / 1024:.0f} MiB")
            path.unlink()
        big, small = runs[max(sizes)], runs[min(sizes)]
        checks = [
            (f"throughput at {max(sizes):,} entries: {big['rate']:,.0f} records/s wall clock "
             f"({big['cpu_rate']:,.0f} per CPU second; target >= {TARGET_RATE:,}/s)", big["rate"] >= TARGET_RATE),
            (f"peak RSS {big['rss_mib']:.0f} MiB at {max(sizes):,} entries, {small['rss_mib']:.0f} MiB at "
             f"{min(sizes):,} (target <= {TARGET_RSS_MIB} MiB, flat)", big["rss_mib"] <= TARGET_RSS_MIB),
        ]
        say(f"\n== results (load average now {load_avg()})")
        for text, ok in checks:
            say(f"  {'met    ' if ok else 'NOT met'}  {text}")
        return 0 if all(ok for _, ok in checks) else 1
    finally:
        if args.keep:
            say(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
