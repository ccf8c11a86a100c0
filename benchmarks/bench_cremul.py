"""CREMUL reader throughput vs pydifact's own parse of the same text.

Run: .venv/bin/python benchmarks/bench_cremul.py [payments]
Exits 1 when read_cremul is less than 10x faster than pydifact's Interchange.from_str.
"""
from __future__ import annotations

import resource
import sys
import time
import warnings
from datetime import date, timedelta
from decimal import Decimal

from reskontro.adapters.cremul import read_cremul, render_cremul
from reskontro.domain import BankPayment

TARGET_RATIO = 10.0


def make_payments(n: int) -> list[BankPayment]:
    start = date(2026, 1, 5)
    out = []
    for i in range(n):
        kid = f"{1000000 + i:010d}"
        out.append(BankPayment(
            format="cremul", archive_ref=f"{900000000 + i}",
            amount=Decimal(100 + i % 9000) + Decimal(i % 100) / 100,
            currency="NOK", payment_date=start + timedelta(days=i % 20),
            booking_date=start + timedelta(days=(i // 5000) % 20 + 1),
            kid=kid if i % 4 else None, invoice_no=None if i % 4 else f"F{i}",
            payer_name=f"Kunde {i % 997} AS", payer_account=f"{12345678901 + i % 1000}",
            bank_code="230", text="Betaling faktura" if i % 10 == 0 else None))
    return out


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024     # KiB on Linux


def best_of(runs: int, fn) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(runs):
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return best, result


def main() -> int:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 50_000
    payments = make_payments(n)
    text = render_cremul(payments, per_lin=100, wrap=80,
                         reference="BENCH1", recipient="00975945065")
    data = text.encode("iso-8859-1")
    mb = len(data) / 1e6
    ours, result = best_of(3, lambda: read_cremul(data, "bench.edi"))
    assert len(result.payments) == n, len(result.payments)
    print(f"file: {n} payments, {mb:.1f} MB, {text.count(chr(39))} segments, 80-column lines")
    print(f"read_cremul (best of 3): {ours:.3f} s = {n / ours:,.0f} payments/s, "
          f"{mb / ours:.1f} MB/s; peak RSS so far {peak_rss_mib():.0f} MiB")

    from pydifact.segmentcollection import Interchange
    stripped = text.replace("\r", "").replace("\n", "")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")         # pydifact: no D96A segment definitions
        t0 = time.perf_counter()
        Interchange.from_str(stripped)
        theirs = time.perf_counter() - t0
    print(f"pydifact Interchange.from_str (tokenize only, 1 run): {theirs:.3f} s = "
          f"{mb / theirs:.2f} MB/s")
    ratio = theirs / ours
    print(f"ratio: {ratio:.1f}x (target >= {TARGET_RATIO:.0f}x); "
          f"peak RSS with pydifact {peak_rss_mib():.0f} MiB")
    return 0 if ratio >= TARGET_RATIO else 1


if __name__ == "__main__":
    sys.exit(main())
