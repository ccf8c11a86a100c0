"""Every `--json` output writes amounts as the import takes them: kroner text with two decimals
("1234.50", "-500.00"), never øre, never a JSON number.

One small site is taken through import, export, a bank payment and its booking, then every
command that has --json runs on it and its output is walked key by key.
"""
from __future__ import annotations

import json
import re
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path

import click
import pytest
from stdnum import luhn

from reskontro.adapters.cremul import render_cremul
from reskontro.cli import main
from reskontro.domain import BankPayment
from reskontro.site import init_site
from clirun import cli  # noqa: E402  (tests/ is on sys.path)

#: a key that names money (plan's "totals" and status's "items" are counts, and say so)
AMOUNT_KEY = re.compile(r"amount|balance|sum|ore$|øre|kroner", re.IGNORECASE)
KRONER = re.compile(r"-?[0-9]+\.[0-9]{2}")


def kid10(n: int) -> str:
    body = f"{n:09d}"
    return body + luhn.calc_check_digit(body)


LEDGER = [
    {"record": "customer", "id": "C1", "name": "Kari Nordmann", "type": "private",
     "address1": "Storgata 1", "post_code": "0150", "city": "OSLO", "country": "NO"},
    {"record": "customer", "id": "C2", "name": "Uten Type", "address1": "Vei 2", "post_code": "5003",
     "city": "BERGEN", "country": "NO"},                                  # held: check has a row
    {"record": "entry", "id": "I1", "customer_id": "C1", "type": "invoice", "document_no": "F1",
     "document_date": "2026-11-01", "due_date": "2026-11-15", "amount": "1234.50", "status": "invoiced",
     "kid": kid10(1)},
    {"record": "entry", "id": "I2", "customer_id": "C1", "type": "invoice", "document_no": "F2",
     "document_date": "2026-11-01", "due_date": "2026-11-15", "amount": "100000,05", "status": "invoiced",
     "kid": kid10(2)},
    {"record": "entry", "id": "P1", "customer_id": "C1", "type": "payment", "document_no": "P1",
     "document_date": "2026-11-05", "amount": "-500"},
    {"record": "match", "id": "M1", "entries": ["I1", "P1"]},
    {"record": "entry", "id": "I3", "customer_id": "C2", "type": "invoice", "document_no": "F3",
     "document_date": "2026-11-01", "due_date": "2026-11-15", "amount": "10.00", "status": "invoiced"},
]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("json")
    site = root / "site"
    init_site(site)
    ledger = root / "ledger.jsonl"
    ledger.write_text("\n".join(json.dumps(r) for r in LEDGER) + "\n", encoding="utf-8")
    assert cli(site, "import", str(ledger)).exit_code == 0
    assert cli(site, "export").exit_code == 0               # status then lists a file
    payment = BankPayment("cremul", "*7001", Decimal("734.50"), "NOK", date(2026, 11, 19),
                          date(2026, 11, 20), kid=kid10(1), payer_name="Kari Nordmann")
    data = render_cremul([payment], reference="R1", created=datetime(2026, 11, 20, 6, 0))
    (site / "inbox" / "cremul1.txt").write_bytes(data.encode("latin-1"))
    assert cli(site, "watch", "--once").exit_code == 0
    assert cli(site, "post").exit_code == 0
    return site


# every --json invocation this test makes; the set of commands is checked against the CLI below
RUNS = [("plan",), ("plan", "--all"), ("explain", "I1"), ("explain", "P1"), ("explain", "I2"),
        ("explain", "I1", "--history"), ("check",), ("status",), ("payments",), ("payments", "--unposted"),
        ("rules", "coverage"), ("rules", "diff", "{site}/rules/transfer.yaml"),
        ("rules", "diff", "{site}/rules/transfer.yaml", "--base", "{site}/rules/over-1000.yaml")]


def json_commands(group: click.Group, prefix: tuple[str, ...] = ()) -> set[tuple[str, ...]]:
    """Every (sub)command of the CLI that has a --json option."""
    out = set()
    for name, cmd in group.commands.items():
        if isinstance(cmd, click.Group):
            out |= json_commands(cmd, prefix + (name,))
        elif any("--json" in p.opts for p in cmd.params):
            out.add(prefix + (name,))
    return out


def amounts_in(value: object, under_amount_key: bool = False, path: str = "$") -> list[tuple[str, object]]:
    """(path, value) of every leaf under an amount-like key; fails on an amount-like key that
    holds a number anywhere deeper."""
    found = []
    if isinstance(value, dict):
        for k, v in value.items():
            found += amounts_in(v, under_amount_key or bool(AMOUNT_KEY.search(k)), f"{path}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            found += amounts_in(v, under_amount_key, f"{path}[{i}]")
    elif under_amount_key:
        found.append((path, value))
    return found


def test_the_runs_cover_every_json_command() -> None:
    commands = json_commands(main)
    assert commands == {r[:len(c)] for r in RUNS for c in commands if r[:len(c)] == c}
    assert all(any(r[:len(c)] == c for c in commands) for r in RUNS)


@pytest.mark.parametrize("args", RUNS, ids=" ".join)
def test_every_amount_in_json_output_is_kroner_text(site: Path, args: tuple[str, ...]) -> None:
    rules = (site / "rules" / "transfer.yaml").read_text(encoding="utf-8")
    (site / "rules" / "over-1000.yaml").write_text(rules.replace("  - id: invoice\n", (
        "  - id: over-1000\n    when: {entry_type: invoice, amount: {gt: 1000}}\n    decision: hold\n"
        "    reason: Reviewed first.\n\n  - id: invoice\n"), 1), encoding="utf-8")
    args = tuple(a.format(site=site) for a in args)
    r = cli(site, *args, "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    leaves = amounts_in(doc)
    for path, v in leaves:
        assert isinstance(v, str) and KRONER.fullmatch(v), f"{args}: {path} = {v!r} is not kroner text"
    if args[0] in ("plan", "explain", "payments") and args != ("payments", "--unposted") or "--base" in args:
        assert leaves, f"{args}: no amount found: the walk would prove nothing"


def test_the_amounts_are_the_ones_imported(site: Path) -> None:
    """Kroner, not øre: an amount read in as "1234.50" comes out as "1234.50"."""
    def facts(eid: str) -> dict:
        return json.loads(cli(site, "explain", eid, "--json").stdout)["facts"]
    assert facts("I1")["amount"] == "1234.50"
    assert facts("I2")["amount"] == "100000.05"
    assert facts("P1")["amount"] == "-500.00"
    [pay] = json.loads(cli(site, "payments", "--json").stdout)
    assert (pay["amount"], pay["status"]) == ("734.50", "matched")
    plan = json.loads(cli(site, "plan", "--all", "--json").stdout)
    total = sum(Decimal(l["amounts"].get("NOK", "0")) for l in plan["lines"])
    # every entry of the ledger once, the booked bank payment (-734.50) among them
    assert total == Decimal("1234.50") + Decimal("100000.05") - Decimal("500.00") + Decimal("10.00") \
        - Decimal("734.50")
