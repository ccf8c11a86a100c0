"""`reskontro sample`: a realistic ledger in the import format (JSON Lines), deterministic by seed.

It holds what a real creditor's ledger holds: private and business customers (valid org nos,
and a few defects; every 40th tagged key-account), invoices with valid MOD10/MOD11 KIDs, full
and partial payments, credit notes, write-offs opted out, drafts, factoring choices, ERP
reminders, a wrongly booked payment that was reversed, and one many-to-many match. Written streaming: memory flat in its size.
"""
from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path
from typing import TextIO

from stdnum import luhn
from stdnum.no import orgnr

from reskontro.domain.kid import mod11_check_digit

FIRST = ("Kari", "Ola", "Ingrid", "Lars", "Sofie", "Jonas", "Nora", "Emil", "Åse", "Øystein", "Bjørn", "Liv")
LAST = ("Nordmann", "Hansen", "Johansen", "Olsen", "Larsen", "Berg", "Haugen", "Dahl", "Ås", "Sæther")
FIRMS = ("Fjord", "Nord", "Vest", "Bygg", "Data", "Fisk", "Tre", "Ås & Sønn", "Lys", "Havn")
FORMS = ("AS", "AS", "AS", "ASA", "ANS", "DA", "ENK")
STREETS = ("Storgata", "Kirkeveien", "Strandgata", "Bakkeveien", "Skolegata", "Fjordveien")
CITIES = (("0150", "OSLO"), ("5003", "BERGEN"), ("7010", "TRONDHEIM"), ("4006", "STAVANGER"),
          ("9008", "TROMSØ"), ("1530", "MOSS"))


def valid_org_no(rng: random.Random) -> str:
    while True:  # about 1 body in 11 has no valid check digit (MOD11 value 10): draw again
        body = str(rng.randint(80000000, 99999999))
        for d in "0123456789":
            if orgnr.is_valid(body + d):
                return body + d


def make_kid(rng: random.Random, customer_no: int, invoice_no: int) -> str:
    body = f"{customer_no:07d}{invoice_no:07d}"
    if rng.random() < 0.7:
        return body + luhn.calc_check_digit(body)
    return body + mod11_check_digit(body)


def _amount(rng: random.Random, lo: int = 150, hi: int = 25000) -> Decimal:
    return Decimal(rng.randint(lo * 100, hi * 100)) / 100


def _s(d: Decimal) -> str:
    return f"{d:.2f}"


def generate(customers: int, seed: int = 1, start: date = date(2026, 9, 1)) -> Iterator[dict]:
    """Yield customer, entry and match records; every match follows its members."""
    rng = random.Random(seed)
    inv_no = 0
    pay_no = 0
    many_to_many_done = False
    for cno in range(1, customers + 1):
        cid = f"C{cno:07d}"
        business = rng.random() < 0.3
        postcode, city = rng.choice(CITIES)
        cust = {"record": "customer", "id": cid, "type": "business" if business else "private",
                "address1": f"{rng.choice(STREETS)} {rng.randint(1, 120)}", "post_code": postcode,
                "city": city, "country": "NO", "factoring_default": rng.random() < 0.1}
        if cno % 40 == 0:                                       # a customer group the rules may follow
            cust["tags"] = ["key-account"]
        if business:
            cust["name"] = f"{rng.choice(FIRMS)} {rng.choice(('Handel', 'Service', 'Invest', 'Drift'))} {rng.choice(FORMS)}"
            cust["org_no"] = valid_org_no(rng)
            cust["email"] = f"faktura@{cid.lower()}.example.no"
        else:
            cust["name"] = f"{rng.choice(FIRST)} {rng.choice(LAST)}"
            cust["phone"] = f"+47 4{rng.randint(1000000, 9999999)}"
        defect = rng.random()
        if defect < 0.01:
            cust["type"] = ""                                   # held: no type
        elif defect < 0.02:
            cust["post_code"] = ""                               # held: incomplete address
        elif defect < 0.03 and business:
            cust["org_no"] = cust["org_no"][:-1] + str((int(cust["org_no"][-1]) + 1) % 10)  # MOD11 fails
        elif defect < 0.05 and business:
            cust.pop("org_no")                                   # warning only
        elif defect < 0.06 and not business:
            cust["name"] += " AS"                                # warning: looks like a company
        yield cust
        for _ in range(rng.randint(1, 3)):
            inv_no += 1
            iid = f"I{inv_no:08d}"
            ddate = start + timedelta(days=rng.randint(0, 80))
            total = _amount(rng)
            inv = {"record": "entry", "id": iid, "customer_id": cid, "type": "invoice",
                   "document_no": f"F{inv_no}", "document_date": ddate.isoformat(),
                   "due_date": (ddate + timedelta(days=14)).isoformat(), "amount": _s(total),
                   "currency": "NOK", "kid": make_kid(rng, cno, inv_no),
                   "status": "draft" if rng.random() < 0.08 else "invoiced",
                   "text": f"Faktura {inv_no}"}
            if rng.random() < 0.05:
                inv["factoring"] = not cust["factoring_default"]
            if rng.random() < 0.1:
                inv["dunning_level"] = str(rng.randint(1, 2))
            yield inv
            if inv["status"] == "draft":
                continue
            fate = rng.random()
            members: list[str] = []
            pay_date = ddate + timedelta(days=rng.randint(3, 30))

            def entry(kind: str, amount: Decimal, **extra) -> dict:
                nonlocal pay_no
                pay_no += 1
                prefix = {"payment": "P", "credit_note": "K", "manual_voucher": "V", "payout": "U",
                          "reversal": "R"}[kind]
                rec = {"record": "entry", "id": f"{prefix}{pay_no:08d}", "customer_id": cid, "type": kind,
                       "document_no": f"{prefix}{pay_no}", "document_date": pay_date.isoformat(),
                       "amount": _s(amount), "currency": "NOK"}
                rec.update(extra)
                return rec

            if fate < 0.45:                                      # paid in full
                p = entry("payment", -total, kid=inv["kid"], source="Lowell" if rng.random() < 0.5 else None)
                p = {k: v for k, v in p.items() if v is not None}
                members = [p["id"]]
                yield p
            elif fate < 0.60:                                    # partial payments
                part = (total / 3).quantize(Decimal("0.01"))
                for _ in range(rng.randint(1, 2)):
                    p = entry("payment", -part, kid=inv["kid"])
                    members.append(p["id"])
                    yield p
            elif fate < 0.67:                                    # credit note
                k = entry("credit_note", -total)
                members = [k["id"]]
                yield k
            elif fate < 0.71:                                    # partly paid, rest written off
                half = (total / 2).quantize(Decimal("0.01"))
                p = entry("payment", -half, kid=inv["kid"])
                v = entry("manual_voucher", -(total - half), opt_out=True, text="Tap på fordring")
                members = [p["id"], v["id"]]
                yield p
                yield v
            elif fate < 0.72:                                    # wrong payment, reversed in the ERP
                p = entry("payment", -total, kid=inv["kid"])
                yield p
                yield entry("reversal", total, reverses=p["id"])
            elif fate < 0.75:                                    # payment not matched yet
                yield entry("payment", -total)
            if members:
                yield {"record": "match", "id": f"M{iid[1:]}", "entries": [iid] + members}
        if not many_to_many_done and cno >= 3 and rng.random() < 0.5:
            many_to_many_done = True                             # two invoices, two payments
            ids = []
            for _ in range(2):
                inv_no += 1
                pay_no += 1
                iid, pid = f"I{inv_no:08d}", f"P{pay_no:08d}"
                amt = _amount(rng)
                yield {"record": "entry", "id": iid, "customer_id": cid, "type": "invoice",
                       "document_no": f"F{inv_no}", "document_date": start.isoformat(),
                       "due_date": (start + timedelta(days=14)).isoformat(), "amount": _s(amt),
                       "currency": "NOK", "kid": make_kid(rng, cno, inv_no), "status": "invoiced"}
                yield {"record": "entry", "id": pid, "customer_id": cid, "type": "payment",
                       "document_no": f"P{pay_no}", "document_date": (start + timedelta(days=20)).isoformat(),
                       "amount": _s(-amt), "currency": "NOK"}
                ids += [iid, pid]
            yield {"record": "match", "id": f"MM{cno}", "entries": ids}


def write_sample(out: TextIO, customers: int, seed: int = 1,
                 progress: Callable[[int], None] | None = None) -> int:
    """The records, one JSON line each; `progress(customers written)` now and then."""
    n = done = 0
    for rec in generate(customers, seed):
        out.write(json.dumps(rec, ensure_ascii=False))
        out.write("\n")
        n += 1
        if rec["record"] == "customer":
            done += 1
            if progress and done % 500 == 0:
                progress(done)
    return n


def write_sample_file(path: Path, customers: int, seed: int = 1, *, force: bool = True,
                      progress: Callable[[int], None] | None = None) -> int:
    """Write the sample to `path`; unless `force`, an existing file is refused (FileExistsError)."""
    with path.open("w" if force else "x", encoding="utf-8") as f:
        return write_sample(f, customers, seed, progress)
