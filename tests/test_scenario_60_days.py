"""Sixty evenings of a factoring client, through the CLI only.

Every day the ERP exports what is new or changed (invoices issued, partial and full payments,
credit notes, new customers, a changed customer) and `reskontro import` reads it; every
evening `reskontro export` writes the file, the stand-in receiver (the receiver model) takes
it and writes its receipt into the site's inbox, and `reskontro receipts` reads it. Then, for
EVERY invoice the receiver knows, its open balance must equal the ledger's, to the øre.

The ledger's open balance of an invoice is the sum of the amounts of the entries of its match
group that are decided `transfer` (or the invoice's own amount when it is in no group). An
opted-out write-off stays in-house: it is decided `exclude`, Lowell never sees it, and Lowell
keeps following up the part it wrote off; so it is not part of that sum.

Also along the way:
- factoring mode: the customer CF (factoring_default) and one invoice flagged factoring are
  followed up in-house; they and everything linked to them never leave, for 60 days;
- day 1-5: a write-off opted out (IW: paid 400.00, 600.00 written off in-house);
- day 10: a many-to-many match (held), split into two valid matches on day 11;
- day 20: a payment booked on the wrong invoice, delivered; day 21 `reskontro correct-payment`
  (a payout on the wrong invoice's group, a new payment on the right invoice);
- day 25: a delivered customer changes address: sent again;
- day 30: the receiver rejects the evening's file; its content goes again on day 31.
- before day 0: the ledger's history goes as the backlog file; matches settled by then are
  history and never go (unless one reopens: HS1 does on day 8), open invoices do;
- day 12: the ERP sends its own reminder on a delivered invoice (dunning level, a field the
  file does not carry): nothing is held, and its payment on day 13 closes it at Lowell too;
- day 14: a payment booked and reversed in the ERP the same day (PR, RR): neither goes, and
  the invoice stays open at Lowell;
- day 21: the ERP reverses the wrongly booked PX (RX): held until the correction on day 22,
  then off the hold list;
- day 17: the bank's CREMUL pays IB1: the service books the payment and sends it; day 18 the
  ERP exports the same payment under its own id (with the bank's reference) in a match of its
  own: one payment, one entry, at Lowell and in the ledger.
"""
from __future__ import annotations

import random
from collections import defaultdict
from datetime import date, timedelta
from decimal import Decimal

from reskontro.adapters.cremul import render_cremul
from reskontro.rules.decide import decide_ledger
from reskontro.domain import BankPayment
from reskontro.payments.booking import payment_id
from reskontro.ledger.sample import valid_org_no
from reskontro.site import Site
from test_export import (Lowell, cli, customer, entry, export, flat, import_records, invoice,
                         make_site, match, outbox_xml, status_json, valid_kid)

DAYS = 60
START = date(2026, 9, 1)
CENT = Decimal("0.01")
REJECT_DAY = 30
HISTORY = 1          # the backlog file goes before day 0: every daily file's sequence is d + 2
BANK_REF = "*60017"  # the bank's archive reference of the payment of IB1 (day 17)


class Erp:
    """The creditor's ERP: the whole ledger, and what it exports each day."""

    def __init__(self, seed: int = 60) -> None:
        self.rng = random.Random(seed)
        self.amount: dict[str, Decimal] = {}         # entry id -> amount
        self.etype: dict[str, str] = {}
        self.customer_of: dict[str, str] = {}
        self.group_of: dict[str, str] = {}           # entry id -> match id
        self.groups: dict[str, list[str]] = {}       # match id -> members
        self.excluded: set[str] = set()              # factoring: never to Lowell (with their groups)
        self.opted_out: set[str] = set()             # opted-out vouchers
        self.held: set[str] = set()                  # invoices held today (many-to-many)
        self.special: set[str] = set()               # invoices the random payments leave alone
        self.cancelled: set[str] = set()             # reversed before any file carried them
        self.history: set[str] = set()               # settled before the service started
        self.record_of: dict[str, dict] = {}         # entry id -> the ERP's record
        self.customers: list[str] = []
        self.records: list[dict] = []
        self.n = defaultdict(int)

    # ------------------------------------------------------------------ building blocks
    def next_id(self, prefix: str) -> str:
        self.n[prefix] += 1
        return f"{prefix}{self.n[prefix]:04d}"

    def add_customer(self, cid: str, **kw) -> None:
        if not kw.get("factoring_default"):
            self.customers.append(cid)           # random invoices go to the others
        self.records.append(customer(cid, **kw))

    def add_invoice(self, cid: str, amount: Decimal, day: date, eid: str | None = None, **kw) -> str:
        eid = eid or self.next_id("F")
        kid = valid_kid(f"{len(self.amount) + 1:07d}")
        self.record_of[eid] = invoice(eid, cid, f"{amount:.2f}", day=day.isoformat(), kid=kid,
                                      due_date=(day + timedelta(days=14)).isoformat(), **kw)
        self.records.append(self.record_of[eid])
        self.amount[eid], self.etype[eid], self.customer_of[eid] = amount, "invoice", cid
        return eid

    def add_counter(self, etype: str, cid: str, amount: Decimal, day: date, eid: str | None = None,
                    **kw) -> str:
        prefix = {"payment": "B", "credit_note": "K", "manual_voucher": "V", "payout": "U", "reversal": "R"}[etype]
        eid = eid or self.next_id(prefix)
        self.records.append(entry(eid, cid, etype, f"{amount:.2f}", day=day.isoformat(), **kw))
        self.amount[eid], self.etype[eid], self.customer_of[eid] = amount, etype, cid
        return eid

    def link(self, invoice_id: str, *ids: str) -> None:
        """Add entries to the invoice's match (created on first use); the ERP exports the
        match with all its members (the import replaces membership)."""
        mid = self.group_of.get(invoice_id) or f"M{invoice_id}"
        members = self.groups.setdefault(mid, [invoice_id])
        for i in (invoice_id, *ids):
            if i not in members:
                members.append(i)
            self.group_of[i] = mid
        self.records.append(match(mid, *members))

    def erp_balance(self, invoice_id: str) -> Decimal:
        """What is still owed in the ERP (write-offs included)."""
        mid = self.group_of.get(invoice_id)
        return sum((self.amount[i] for i in self.groups[mid]), Decimal("0.00")) if mid else self.amount[invoice_id]

    def export_day(self) -> list[dict]:
        out, self.records = self.records, []
        return out

    # ------------------------------------------------------------------ what Lowell should hold
    def invoices(self) -> list[str]:
        return [i for i, t in self.etype.items() if t == "invoice"]

    def transferred_invoices(self) -> set[str]:
        return {i for i in self.invoices()
                if i not in self.excluded and i not in self.held and i not in self.history}

    def lowell_balance(self, invoice_id: str) -> Decimal:
        """The ledger's open balance as Lowell must see it: the group without opted-out
        vouchers, and without what was reversed before it was ever sent."""
        mid = self.group_of.get(invoice_id)
        members = self.groups[mid] if mid else [invoice_id]
        return sum((self.amount[i] for i in members if i not in self.opted_out | self.cancelled),
                   Decimal("0.00"))

    # ------------------------------------------------------------------ before the service
    def before_service(self) -> None:
        """The ledger's history, sent as the backlog: settled pairs (history, never sent),
        open and partly paid invoices (sent)."""
        rng, day = self.rng, START - timedelta(days=40)
        for n in range(1, 26):
            business = n % 4 == 0
            self.add_customer(f"C{n:02d}", name=f"Kunde {n} {'AS' if business else 'Hansen'}",
                              type="business" if business else "private",
                              **({"org_no": valid_org_no(rng)} if business else {}))
        self.add_customer("CF", name="Factoring & Sønn AS", type="business",
                          org_no=valid_org_no(rng), factoring_default=True)
        for n in range(1, 6):                    # paid in full before the service started
            inv = self.add_invoice(f"C{n:02d}", Decimal(100 * n), day, eid=f"HS{n}")
            self.link(inv, self.add_counter("payment", f"C{n:02d}", -Decimal(100 * n), day, eid=f"HP{n}"))
            self.history.add(inv)
            self.special.add(inv)
        for n in range(1, 4):                    # open, and partly paid, when the service starts
            inv = self.add_invoice(f"C{n + 10:02d}", Decimal(300 * n), day, eid=f"HO{n}")
            if n == 3:
                self.link(inv, self.add_counter("payment", f"C{n + 10:02d}", Decimal("-100.00"), day))

    # ------------------------------------------------------------------ one day
    def day(self, d: int) -> None:
        rng, today = self.rng, START + timedelta(days=d)
        if d == 8:   # a settled group of the history reopens: the payment is partly paid back
            self.link("HS1", self.add_counter("payout", "C01", Decimal("40.00"), today, eid="HU1"))
            self.history.discard("HS1")
        if d == 12:  # the ERP's own reminder on a delivered invoice
            self.records.append(dict(self.record_of["IR1"], dunning_level=1))
        if d == 13:  # and the customer pays it
            self.link("IR1", self.add_counter("payment", "C06", Decimal("-650.00"), today, eid="PR1"))
        if d == 14:  # a payment booked and reversed the same day: the pair cancels out
            self.special.add(self.add_invoice("C08", Decimal("800.00"), today, eid="IR"))
            self.link("IR", self.add_counter("payment", "C08", Decimal("-800.00"), today, eid="PR"))
            self.add_counter("reversal", "C08", Decimal("800.00"), today, eid="RR", reverses="PR")
            self.cancelled |= {"PR", "RR"}
        if d == 21:  # the ERP reverses the payment booked on the wrong invoice
            self.add_counter("reversal", "C03", Decimal("500.00"), today, eid="RX", reverses="PX")
        if d == 16:
            self.special.add(self.add_invoice("C09", Decimal("900.00"), today, eid="IB1"))
        if d == 17:  # booked by the service from the bank's file (see test_sixty_days)
            pid = payment_id(BANK_REF)
            self.amount[pid], self.etype[pid], self.customer_of[pid] = Decimal("-900.00"), "payment", "C09"
            self.groups["MIB1"] = ["IB1", pid]
            self.group_of.update(IB1="MIB1", **{pid: "MIB1"})
        if d == 18:  # the ERP books the same bank payment, under its own ids
            self.records += [entry("E-IB1", "C09", "payment", "-900.00", day=today.isoformat(), bank_ref=BANK_REF),
                             match("EM-IB1", "IB1", "E-IB1")]
        if d == 15:
            self.add_customer("C26", name="Ny Kunde Dag 15")
        if d == 40:
            self.add_customer("C27", name="Ny Kunde Dag 40")
        if d == 25:
            self.records.append(customer("C02", name="Kunde 2 Hansen", address1="Flyttet vei 9",
                                         post_code="5003", city="BERGEN"))

        # invoices issued today
        for _ in range(rng.randint(2, 5)):
            cid = rng.choice(self.customers)
            self.add_invoice(cid, Decimal(rng.randint(10000, 500000)) / 100, today)
        if d % 5 == 0:                           # the factoring customer, followed up in-house
            self.excluded.add(self.add_invoice("CF", Decimal(rng.randint(10000, 90000)) / 100, today))
        if d == 3:                               # one invoice flagged factoring: in-house
            self.excluded.add(self.add_invoice("C05", Decimal("777.70"), today, eid="IFX", factoring=True))

        # special cases
        if d == 1:
            self.special.add(self.add_invoice("C01", Decimal("1000.00"), today, eid="IW"))
        if d == 3:
            self.link("IW", self.add_counter("payment", "C01", Decimal("-400.00"), today, eid="PW"))
        if d == 5:   # the rest is written off, in-house (opted out)
            v = self.add_counter("manual_voucher", "C01", Decimal("-600.00"), today, eid="VW",
                                 opt_out=True, text="Tap på fordring")
            self.opted_out.add(v)
            self.link("IW", v)
        if d == 10:  # two invoices paid by two payments in one match: many to many, held
            for x, amt in (("A", "300.00"), ("B", "200.00")):
                self.special.add(self.add_invoice("C07", Decimal(amt), today, eid=f"I{x}"))
                self.add_counter("payment", "C07", -Decimal(amt), today, eid=f"P{x}")
            self.groups["MMAB"] = ["IA", "IB", "PA", "PB"]
            self.group_of.update(dict.fromkeys(self.groups["MMAB"], "MMAB"))
            self.records.append(match("MMAB", "IA", "IB", "PA", "PB"))
            self.held |= {"IA", "IB"}
        if d == 11:  # split into valid matches
            self.groups["MMAB"] = ["IA", "PA"]
            self.groups["MMB"] = ["IB", "PB"]
            self.group_of.update({"IB": "MMB", "PB": "MMB"})
            self.records += [match("MMAB", "IA", "PA"), match("MMB", "IB", "PB")]
            self.held -= {"IA", "IB"}
        if d == 11:
            self.special.add(self.add_invoice("C06", Decimal("650.00"), today, eid="IR1"))
        if d == 18:
            self.special.add(self.add_invoice("C03", Decimal("500.00"), today, eid="IX"))
            self.special.add(self.add_invoice("C04", Decimal("500.00"), today, eid="IY"))
        if d == 20:  # IY's payment, booked on IX by mistake
            self.link("IX", self.add_counter("payment", "C03", Decimal("-500.00"), today, eid="PX"))

        # payments and credit notes on open invoices (also on the in-house ones)
        for inv in self.invoices():
            if inv in self.special or self.erp_balance(inv) <= 0 or rng.random() > 0.12:
                continue
            cid, rest, fate = self.customer_of[inv], self.erp_balance(inv), rng.random()
            if fate < 0.5:
                self.link(inv, self.add_counter("payment", cid, -rest, today))
            elif fate < 0.85:
                part = (rest / 3).quantize(CENT)
                if part > 0:
                    self.link(inv, self.add_counter("payment", cid, -part, today))
            else:
                self.link(inv, self.add_counter("credit_note", cid, -rest, today))
        for inv in list(self.invoices()):
            if inv in self.excluded:             # everything linked to an in-house invoice stays
                self.excluded.update(self.groups.get(self.group_of.get(inv, ""), []))

    def correct_payment(self, payment_id: str, to_invoice: str) -> None:
        """Mirror of `reskontro correct-payment`: payout U<payment> in the wrong group, new
        payment N<payment> in the right invoice's group."""
        amt = self.amount[payment_id]
        payout, again = f"U{payment_id}", f"N{payment_id}"
        self.amount[payout], self.etype[payout] = -amt, "payout"
        self.amount[again], self.etype[again] = amt, "payment"
        wrong = self.group_of[payment_id]
        self.groups[wrong].append(payout)
        self.group_of[payout] = wrong
        mid = self.group_of.get(to_invoice) or f"M{to_invoice}"
        self.groups.setdefault(mid, [to_invoice]).append(again)
        self.group_of[to_invoice] = self.group_of[again] = mid


def ledger_balances(site) -> dict[str, Decimal]:
    """The ledger's open balance of each invoice decided transfer: the sum of the entries of
    its group decided transfer (from the store, decided by the site's rules)."""
    s = Site.open(site)
    groups: dict[str, list] = defaultdict(list)
    with s.db.connect() as conn:
        for d in decide_ledger(conn, s.rules, s.config.mode):
            key = d.entry["match_id"] or d.entry["id"]
            groups[key].append((d.entry["id"], d.entry["type"], d.outcome.decision, d.entry["amount_ore"]))
    out = {}
    for members in groups.values():
        total = sum(ore for _i, _t, dec, ore in members if dec == "transfer")
        for eid, etype, dec, _ore in members:
            if etype == "invoice" and dec == "transfer":
                out[eid] = (Decimal(total) / 100).quantize(CENT)
    return out


def test_sixty_days(tmp_path):
    site = make_site(tmp_path, mode="factoring")
    erp = Erp()
    lowell = Lowell()
    files = []
    never: set[str] = set()

    erp.before_service()
    import_records(site, erp.export_day())
    backlog = export(site, "--backlog")
    assert backlog.header["Kind"] == "backlog" and backlog.sequence == HISTORY
    assert not {f"HS{n}" for n in range(1, 6)} & set(backlog.entries)
    assert {"HO1", "HO2", "HO3"} <= set(backlog.entries)
    lowell.accept(site, backlog)
    assert "settled before the service started" in " ".join(
        flat(cli(site, "explain", "HS2").output).split()).lower()

    for d in range(DAYS):
        if d == 22:
            out = flat(cli(site, "correct-payment", "PX", "--to", "IY").output)
            assert "UPX" in out and "NPX" in out
            erp.correct_payment("PX", "IY")
            assert "exclude by rule reversal-corrected" in flat(cli(site, "explain", "RX").output)
        erp.day(d)
        import_records(site, erp.export_day())
        if d == 17:   # the bank's payment file arrives; the service books it
            kid = erp.record_of["IB1"]["kid"]
            day = START + timedelta(days=d)
            (site / "inbox" / "CREMUL-IB1.txt").write_text(render_cremul(
                [BankPayment("cremul", BANK_REF, Decimal("900.00"), "NOK", day, day, kid=kid)]), encoding="latin-1")
            cli(site, "watch", "--once")
            assert "Booked 1 payment; 1 invoice closed" in flat(cli(site, "post").output)
        if d == 21:
            assert "hold by rule reversed-payment" in flat(cli(site, "explain", "RX").output)
        f = export(site)
        files.append(f)
        assert f.sequence == d + 1 + HISTORY
        never |= erp.history - {"HS1"} | erp.cancelled

        # what must never leave: factoring (in-house) entries, opted-out vouchers, held groups
        never |= erp.excluded | erp.opted_out
        assert not set(f.entries) & never, sorted(set(f.entries) & never)
        assert "CF" not in f.customers
        assert not set(f.entries) & erp.held

        if d == REJECT_DAY:
            before = lowell.model.open_balances()
            data = f.path.read_bytes()
            sums = f'<ControlSum currency="NOK">{f.control_sums[0][1]}</ControlSum>'.encode()
            tampered = data.replace(sums, b'<ControlSum currency="NOK">0.01</ControlSum>')
            assert tampered != data and f.entries
            receipt = lowell.take(site, f, tampered)
            assert receipt.status == "rejected" and receipt.errors[0].code == "control_sum"
            out = flat(cli(site, "receipts", code=3).output)
            assert f"{f.path.stem}: REJECTED" in out
            assert lowell.model.open_balances() == before        # a rejected file changes nothing
            continue
        lowell.accept(site, f)

        if d == REJECT_DAY + 1:                                  # yesterday's content, again
            assert set(files[-2].entries) <= set(f.entries)
            assert set(files[-2].customers) <= set(f.customers)
            assert {m: set(v) for m, v in files[-2].matches.items()}.items() <= \
                {m: set(v) for m, v in f.matches.items()}.items()
        if d == 10:
            assert not {"IA", "IB", "PA", "PB"} & set(f.entries) and "MMAB" not in f.matches
        if d == 11:
            assert {"IA", "IB", "PA", "PB"} <= set(f.entries)
            assert {m: sorted(v) for m, v in f.matches.items() if m in ("MMAB", "MMB")} == {
                "MMAB": ["IA", "PA"], "MMB": ["IB", "PB"]}
        if d == 8:
            assert {"HS1", "HP1", "HU1"} <= set(f.entries)      # history reopened: now Lowell's
        if d == 12:
            assert "IR1" not in f.entries
            assert "transfer by rule invoice" in flat(cli(site, "explain", "IR1").output)
        if d == 13:
            assert "PR1" in f.entries
        if d == 14:
            assert "IR" in f.entries and not {"PR", "RR"} & set(f.entries)
        if d == 17:
            assert payment_id(BANK_REF) in f.entries and set(f.matches["MIB1"]) == {"IB1", payment_id(BANK_REF)}
        if d == 18:   # the ERP's copy is the payment Lowell has: nothing new, nothing twice
            assert "E-IB1" not in f.entries and "EM-IB1" not in f.matches
            assert "E-IB1 is the ERP's id of" in flat(cli(site, "explain", "E-IB1").output)
        if d == 22:
            assert {"UPX", "NPX"} <= set(f.entries)
            assert f.entries["UPX"]["type"] == "payout" and f.entries["UPX"]["Amount"] == "500.00"
            assert f.entries["NPX"]["Amount"] == "-500.00"
        if d == 25:
            assert "C02" in f.customers and f.customers["C02"]["City"] == "BERGEN"
            assert lowell.model.customers["C02"].city == "BERGEN"

        # the receiver's open balance equals the ledger's, for every invoice, to the øre
        lowell_has = lowell.model.open_balances()
        expected = {i: erp.lowell_balance(i) for i in erp.transferred_invoices()}
        assert lowell_has.keys() == expected.keys(), (
            d, sorted(lowell_has.keys() ^ expected.keys()))
        ledger = ledger_balances(site)
        assert ledger == expected, (d, {i: (ledger.get(i), expected.get(i))
                                        for i in ledger.keys() | expected.keys()
                                        if ledger.get(i) != expected.get(i)})
        wrong = {i: (lowell_has[i], ledger[i]) for i in ledger if lowell_has[i] != ledger[i]}
        assert wrong == {}, (d, wrong)

    # the scenario did what it says (partial payments, credit notes, in-house payments)
    assert sum(1 for m in erp.groups.values() if len(m) > 2) >= 10
    assert sum(1 for t in erp.etype.values() if t == "credit_note") >= 5
    assert sum(1 for i in erp.excluded if erp.etype[i] == "payment") >= 5

    # the special cases, as Lowell sees them after 60 days
    balances = lowell.model.open_balances()
    assert balances["IW"] == Decimal("600.00")      # paid 400.00; the in-house write-off is not Lowell's
    assert balances["IX"] == Decimal("500.00")      # the wrong payment is paid out again: open
    assert balances["IR"] == Decimal("800.00")      # reversed before sending: open at Lowell too
    assert balances["IR1"] == Decimal("0.00")       # the ERP's reminder froze nothing
    assert balances["HS1"] == Decimal("40.00") and "HS2" not in balances
    assert not {"PR", "RR", "RX", "E-IB1"} & set(lowell.model.entries)
    assert balances["IB1"] == Decimal("0.00")       # paid once, though booked by the bank and the ERP
    assert balances["IY"] == Decimal("0.00")
    assert balances["IA"] == Decimal("0.00") and balances["IB"] == Decimal("0.00")
    assert lowell.model.group_of["UPX"] == lowell.model.group_of["PX"] == "MIX"
    assert "VW" not in lowell.model.entries
    # factoring: in-house for 60 days
    assert never & erp.excluded and not never & set(lowell.model.entries)
    assert "CF" not in lowell.model.customers and "IFX" not in lowell.model.entries
    assert "exclude by rule factoring-in-house" in flat(cli(site, "explain", "IFX").output)
    # 60 files, one a day; one rejected, its content in the next
    st = status_json(site)
    assert [f["sequence"] for f in st["files"]] == list(range(1, DAYS + HISTORY + 1))
    assert [f["state"] for f in st["files"]].count("rejected") == 1
    assert st["files"][REJECT_DAY + HISTORY]["state"] == "rejected"    # day 30 = sequence 32
    assert st["files"][REJECT_DAY + HISTORY + 1]["state"] == "accepted"
    assert st["items"]["in_flight"] == 0 and st["items"]["held"] == 0
    assert len(outbox_xml(site)) == DAYS + HISTORY
