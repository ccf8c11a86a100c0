"""Every `--json` output is one object, `{"ok": ..., "exit_status": ..., <the command's fields>}`,
whose exit_status is the process's, and writes amounts as the import takes them: kroner text
with two decimals ("1234.50", "-500.00"), never øre, never a JSON number.

One small site is taken through import, export, a bank payment and its booking, then every
command that has --json runs on it and its output is walked key by key (send and fetch, which
need a server, in test_exit_status.py).
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
    assert cli(site, "export").exit_code == 3               # status then lists a file; C2's I3 is held
    payment = BankPayment("cremul", "*7001", Decimal("734.50"), "NOK", date(2026, 11, 19),
                          date(2026, 11, 20), kid=kid10(1), payer_name="Kari Nordmann")
    data = render_cremul([payment], reference="R1", created=datetime(2026, 11, 20, 6, 0))
    (site / "inbox" / "cremul1.txt").write_bytes(data.encode("latin-1"))
    assert cli(site, "watch", "--once").exit_code == 0
    assert cli(site, "post").exit_code == 0
    rules = (site / "rules" / "transfer.yaml").read_text(encoding="utf-8")
    (site / "rules" / "over-1000.yaml").write_text(rules.replace("  - id: invoice\n", (   # for rules diff --base
        "  - id: over-1000\n    when: {entry_type: invoice, amount: {gt: 1000}}\n    decision: hold\n"
        "    reason: Reviewed first.\n\n  - id: invoice\n"), 1), encoding="utf-8")
    return site


# every --json invocation this test makes ({root}: the folder holding the site and the ledger),
# with its exit status; the set of commands is checked against the CLI below
RUNS = [(("plan",), 0), (("plan", "--all"), 0), (("explain", "I1"), 0), (("explain", "P1"), 0),
        (("explain", "I2"), 0), (("explain", "I1", "--history"), 0), (("check",), 3), (("status",), 0),
        (("status", "--files", "1"), 0),
        (("payments",), 0), (("payments", "--unposted"), 0), (("import", "{root}/ledger.jsonl"), 0),
        (("post",), 0), (("receipts",), 0), (("watch", "--once"), 0), (("rules", "lint"), 0),
        (("rules", "test"), 0), (("rules", "fields"), 0), (("rules", "coverage"), 0),
        (("rules", "diff", "{root}/site/rules/transfer.yaml"), 0),
        (("rules", "diff", "{root}/site/rules/transfer.yaml", "--base", "{root}/site/rules/over-1000.yaml"), 0),
        (("run", "--no-sftp"), 0),
        (("sample", "--customers", "2", "--out", "{root}/sample.jsonl", "--force"), 0),
        (("init", "{root}/another"), 0), (("explain", "NOPE"), 1), (("export",), 0),
        (("correct-payment", "NOPE", "--to", "I2"), 1),   # refused: no such payment
        (("doctor", "--no-sftp"), 1),   # no SFTP key on this site: a FAIL line, exit 1
        (("find", "i"), 0), (("find", "F1"), 0), (("find", "ZZZZZZ"), 1),   # nothing found: exit 1
        (("explain", "F1"), 0),                              # by document number
        (("held",), 0), (("held", "--customer", "C2"), 0), (("excluded",), 0),
        (("match-payment", "NOPE", "--to", "I2"), 1),       # refused: no such bank payment
        (("dismiss-payment", "NOPE", "--reason", "refunded"), 1),
        # the fleet ({fleet}: a fresh PostgreSQL database of the test cluster, a fleet made in it)
        (("fleet", "init", "{fleet}", "--data-dir", "{root}/fleet"), 0),
        (("creditors", "add", "acme", "--sender-id", "777", "--org-no", "923609016", "--fleet", "{fleet}"), 0),
        (("creditors", "add", "bad", "--sender-id", "778", "--org-no", "1", "--fleet", "{fleet}"), 2),
        (("creditors", "list", "--fleet", "{fleet}"), 0), (("creditors", "show", "acme", "--fleet", "{fleet}"), 0),
        (("creditors", "show", "nope", "--fleet", "{fleet}"), 1),
        (("import", "{root}/ledger.jsonl", "--creditor", "acme", "--fleet", "{fleet}"), 0),
        (("creditors", "add-account", "acme", "8601.11.17947", "--fleet", "{fleet}"), 0),
        (("creditors", "add-account", "acme", "8601.11.17948", "--fleet", "{fleet}"), 1),
        (("fleet", "route", "--fleet", "{fleet}"), 0),
        (("fleet", "status", "--fleet", "{fleet}"), 0),
        (("creditors", "disable", "acme", "--fleet", "{fleet}"), 0)]
# need a server: test_exit_status.py runs them with --json
ELSEWHERE = {("send",), ("fetch",)}


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


def command_of(args: tuple[str, ...]) -> tuple[str, ...]:
    return args[:2] if args[0] in ("rules", "fleet", "creditors") else args[:1]


@pytest.fixture(scope="module")
def fleet_url(pg_cluster) -> str:
    """A fresh database for the fleet commands (`fleet init` in RUNS makes the fleet in it)."""
    pg_cluster.create_database("json_fleet")
    yield pg_cluster.url("json_fleet")
    pg_cluster.drop_database("json_fleet")


def test_the_runs_cover_every_json_command() -> None:
    assert json_commands(main) == {command_of(a) for a, _ in RUNS} | ELSEWHERE


@pytest.mark.parametrize("args, status", RUNS, ids=[" ".join(a) for a, _ in RUNS])
def test_every_amount_in_json_output_is_kroner_text(site: Path, fleet_url: str, args: tuple[str, ...],
                                                    status: int) -> None:
    args = tuple(a.replace("{root}", str(site.parent)).replace("{fleet}", fleet_url) for a in args)
    r = cli(site, *args, "--json")
    assert r.exit_code == status, r.output
    doc = json.loads(r.stdout)
    # one shape: an object with ok and exit_status (the process's), then the command's fields
    assert isinstance(doc, dict) and list(doc)[:2] == ["ok", "exit_status"], doc
    assert doc["exit_status"] == status and doc["ok"] is (status == 0)
    if status == 1:
        assert doc["error"] and r.stderr.startswith("error: ")
    leaves = amounts_in(doc)
    for path, v in leaves:
        assert isinstance(v, str) and KRONER.fullmatch(v), f"{args}: {path} = {v!r} is not kroner text"
    if (args[0] in ("plan", "explain", "payments", "find", "held") and args != ("payments", "--unposted")
            or "--base" in args) and status == 0:
        assert leaves, f"{args}: no amount found: the walk would prove nothing"


def test_the_amounts_are_the_ones_imported(site: Path) -> None:
    """Kroner, not øre: an amount read in as "1234.50" comes out as "1234.50"."""
    def facts(eid: str) -> dict:
        return json.loads(cli(site, "explain", eid, "--json").stdout)["facts"]
    assert facts("I1")["amount"] == "1234.50"
    assert facts("I2")["amount"] == "100000.05"
    assert facts("P1")["amount"] == "-500.00"
    [pay] = json.loads(cli(site, "payments", "--json").stdout)["payments"]
    assert (pay["amount"], pay["status"]) == ("734.50", "matched")
    plan = json.loads(cli(site, "plan", "--all", "--json").stdout)
    total = sum(Decimal(l["amounts"].get("NOK", "0")) for l in plan["lines"])
    # every entry of the ledger once, the booked bank payment (-734.50) among them
    assert total == Decimal("1234.50") + Decimal("100000.05") - Decimal("500.00") + Decimal("10.00") \
        - Decimal("734.50")
