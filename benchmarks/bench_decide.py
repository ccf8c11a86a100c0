"""Deciding 1,000,000 entries: entries/s, peak memory, and the ratio against asking
durable_rules for every fact one by one (the naive path), in the same run.

Targets (issue 2): >= 300,000 entries/s, >= 3x the naive path, memory flat in the number of
entries. The facts are those of a real sample ledger (reskontro sample), cycled with fresh
amounts so that no two entries are the same object.

    .venv/bin/python benchmarks/bench_decide.py [--entries 1000000] [--customers 5000]
"""
from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from reskontro.rules.decide import decide_ledger  # noqa: E402
from reskontro.rules.engine import RuleEngine  # noqa: E402
from reskontro.ledger.importer import import_files  # noqa: E402
from reskontro.rules.rulefile import load_rule_file  # noqa: E402
from reskontro.ledger.sample import write_sample_file  # noqa: E402
from reskontro.ledger.store import open_engine  # noqa: E402


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--entries", type=int, default=1_000_000)
    ap.add_argument("--customers", type=int, default=5000)
    ap.add_argument("--naive", type=int, default=20_000, help="facts sent through the naive path")
    args = ap.parse_args()

    rules = load_rule_file(ROOT / "rules" / "transfer.yaml")
    with tempfile.TemporaryDirectory() as tmp:
        sample = Path(tmp) / "ledger.jsonl"
        write_sample_file(sample, args.customers, seed=42)
        db = open_engine(f"sqlite:///{tmp}/bench.db")
        import_files(db, [sample])
        t0 = time.perf_counter()
        with db.connect() as conn:
            pool = [d.fact for d in decide_ledger(conn, RuleEngine(rules), "full_ledger")]
        t_store = time.perf_counter() - t0
    print(f"facts from a real sample ledger: {len(pool):,} entries of {args.customers:,} customers; "
          f"decided from the store end to end at {len(pool) / t_store:,.0f} entries/s")

    def facts(n: int):
        k = len(pool)
        for i in range(n):
            f = dict(pool[i % k])
            f["amount"] = f["amount"] + (i // k)     # a fresh amount each cycle
            yield f

    engine = RuleEngine(rules)
    base_rss = rss_mib()
    marks = {}
    counts: dict[str, int] = {}
    t0 = time.perf_counter()
    for i, f in enumerate(facts(args.entries), 1):
        d = engine.decide(f).decision
        counts[d] = counts.get(d, 0) + 1
        if i in (args.entries // 4, args.entries // 2, args.entries):
            marks[i] = rss_mib()
    t_fast = time.perf_counter() - t0
    fast = args.entries / t_fast

    naive_engine = RuleEngine(rules)
    t0 = time.perf_counter()
    agree = 0
    for f in facts(args.naive):
        agree += naive_engine.decide_uncached(f).decision == engine.decide(f).decision
    t_naive = time.perf_counter() - t0
    naive = args.naive / t_naive

    print(f"decided {args.entries:,} entries in {t_fast:.2f} s: {fast:,.0f} entries/s "
          f"({engine.engine_calls:,} durable_rules calls for distinct fact shapes)")
    print("decisions: " + ", ".join(f"{k} {v:,}" for k, v in sorted(counts.items())))
    print(f"naive path (every fact asserted to durable_rules): {naive:,.0f} entries/s "
          f"on {args.naive:,} entries; agreement {agree}/{args.naive}")
    print(f"ratio cached/naive: {fast / naive:.1f}x")
    print("peak RSS MiB: before {:.1f}; ".format(base_rss)
          + "; ".join(f"after {n:,}: {m:.1f}" for n, m in sorted(marks.items())))
    ok = fast >= 300_000 and fast / naive >= 3 and agree == args.naive
    print("targets (>= 300,000 entries/s, >= 3x naive, same decisions):", "met" if ok else "NOT met")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
