"""Plan, status and export agree, always: whatever `plan` lists as transfer is exactly what the
next `export` writes, and `status --json`'s `to_send` is that count. Random ledgers (hypothesis)
go through imports, plans, exports (daily and backlog), accepted and rejected receipts and more
imports; the equality is checked before every export, and every file must pass the receiver
model."""
from __future__ import annotations

import itertools
from datetime import datetime, timezone

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from reskontro.transfer import journal
from reskontro.transfer.receipts import Receipt, ReceiptError, render_receipt
from reskontro.site import Site
from test_export import (Lowell, cli, customer, entry, export, import_records, invoice, make_site, match,
                         payment, status_json)
from test_integrity import plan_json

AMOUNTS = st.sampled_from(["100.00", "250.50", "1000.00", "40.00"])


@st.composite
def ledgers(draw) -> list[list[dict]]:
    """A few days of ERP exports: customers, invoices, counterparts, matches, reversals, and
    re-imports that change what the file carries or only what it does not."""
    n = itertools.count(1)
    days: list[list[dict]] = []
    customers = [customer("C1"), customer("C2", post_code=draw(st.sampled_from(["0150", ""]))),
                 customer("C3", type="business", org_no="923609016")]
    entries: dict[str, dict] = {}
    for _day in range(draw(st.integers(1, 3))):
        earlier = sorted(e for e in entries if e.startswith("I"))
        recs: list[dict] = list(customers) if not days else []
        new_invoices = []
        for _ in range(draw(st.integers(1, 3))):
            i = f"I{next(n)}"
            entries[i] = invoice(i, draw(st.sampled_from(["C1", "C2", "C3"])), draw(AMOUNTS),
                                 status=draw(st.sampled_from(["invoiced", "invoiced", "draft"])))
            recs.append(entries[i])
            new_invoices.append(i)
        for i in new_invoices:
            shape = draw(st.sampled_from(["open", "paid", "partial", "reversed", "voucher"]))
            inv = entries[i]
            if shape == "open":
                continue
            p = f"P{next(n)}"
            amount = "-" + inv["amount"] if shape in ("paid", "reversed") else "-10.00"
            etype = "manual_voucher" if shape == "voucher" else "payment"
            entries[p] = entry(p, inv["customer_id"], etype, amount,
                               opt_out=draw(st.booleans()) if etype == "manual_voucher" else False)
            recs += [entries[p], match(f"M{i}", i, p)]
            if shape == "reversed":
                recs.append(entry(f"R{p}", inv["customer_id"], "reversal", amount[1:], reverses=p))
        if earlier and draw(st.booleans()):
            # a re-import of an earlier invoice: a reminder, or an amount Lowell would see
            i = draw(st.sampled_from(earlier))
            changed = dict(entries[i], dunning_level=1)
            if draw(st.booleans()):
                changed["amount"] = "999.00"
            if draw(st.booleans()):
                changed["status"] = "invoiced"
            recs.append(changed)
        days.append(recs)
    return days


def check_agreement(site, backlog: bool) -> int:
    """plan's transfer count = status to_send; returns it."""
    args = ("--backlog",) if backlog else ()
    planned = plan_json(site, *args)["totals"].get("transfer", 0)
    if not backlog:
        assert status_json(site)["items"]["to_send"] == planned
    return planned


# The cases found wanting before (each also reached by the generator, less often).
SETTLED_THEN_REOPENED = [
    [customer("C1"), invoice("I1", "C1", "100.00"), payment("P1", "C1", "-100.00"), match("M1", "I1", "P1"),
     invoice("I2", "C1", "40.00"), payment("P2", "C1", "-40.00"), match("M2", "I2", "P2"),
     entry("R2", "C1", "reversal", "40.00", reverses="P2")],
    [entry("U1", "C1", "payout", "100.00"), match("M1", "I1", "P1", "U1"), invoice("I3", "C1", "250.50")],
]


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(days=ledgers(), outcomes=st.lists(st.sampled_from(["accept", "reject"]), min_size=3, max_size=3),
       backlog_first=st.booleans())
@example(days=SETTLED_THEN_REOPENED, outcomes=["accept", "reject", "accept"], backlog_first=True)
@example(days=SETTLED_THEN_REOPENED, outcomes=["reject", "accept", "accept"], backlog_first=False)
def test_plan_status_and_export_agree_on_random_ledgers(tmp_path_factory, days, outcomes, backlog_first) -> None:
    site = make_site(tmp_path_factory.mktemp("agree"))
    lowell = Lowell()
    outcome = iter(outcomes)
    for day, recs in enumerate(days):
        import_records(site, recs)
        backlog = backlog_first and day == 0
        planned = check_agreement(site, backlog)
        f = export(site, *(("--backlog",) if backlog else ()))
        assert len(f.entries) == planned, (planned, sorted(f.entries))
        if next(outcome) == "accept":
            lowell.accept(site, f)
        else:
            with Site.open(site).db.begin() as conn:     # it left (only then is a receipt believed)
                journal.mark_uploaded(conn, f.header["FileId"])
            receipt = Receipt(f.header["FileId"], "rejected", datetime.now(timezone.utc),
                              (ReceiptError("test", None, "rejected by the test"),))
            (site / "inbox" / f"{receipt.file_id}.receipt.xml").write_bytes(render_receipt(receipt))
            assert "REJECTED" in cli(site, "receipts", code=3).output
        # after the receipt, the next plan still agrees with the next export
        planned = check_agreement(site, False)
        f2 = export(site)
        assert len(f2.entries) == planned, (planned, sorted(f2.entries))
        lowell.accept(site, f2)
