"""Decisions over a real store: small ledgers imported from JSON Lines, decided by the real rules."""
from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner
from stdnum.no import orgnr

from reskontro.cli import main
from reskontro.rules.decide import decide_ledger
from reskontro.rules.rulefile import load_rule_file
from reskontro.site import Site, init_site

ROOT = Path(__file__).resolve().parent.parent
RULES = load_rule_file(ROOT / "rules" / "transfer.yaml")
LINE = {r.id: r.line for r in RULES.rules}
REASON = {r.id: r.reason for r in RULES.rules}

VALID_ORG = "923609016"
assert orgnr.is_valid(VALID_ORG) and not orgnr.is_valid("923609017")


# --- a ledger with one case of each kind -----------------------------------------------------
def customer(cid: str, name: str, ctype: str | None = "private", **kw) -> dict:
    rec = {"record": "customer", "id": cid, "name": name, "type": ctype, "address1": "Storgata 1",
           "post_code": "0150", "city": "OSLO", "country": "NO", **kw}
    return {k: v for k, v in rec.items() if v is not None}


def invoice(iid: str, cid: str, amount: str = "1000.00", **kw) -> dict:
    return {"record": "entry", "id": iid, "customer_id": cid, "type": "invoice", "document_no": iid,
            "document_date": "2026-09-01", "due_date": "2026-09-15", "amount": amount, "status": "invoiced", **kw}


def entry(eid: str, cid: str, etype: str, amount: str = "-1000.00", **kw) -> dict:
    return {"record": "entry", "id": eid, "customer_id": cid, "type": etype, "document_no": eid,
            "document_date": "2026-09-10", "amount": amount, **kw}


def match(mid: str, *ids: str) -> dict:
    return {"record": "match", "id": mid, "entries": list(ids)}


LEDGER = [
    customer("CP", "Kari Nordmann"),
    customer("CF", "Per Faktura", factoring_default=True),
    customer("CT", "Uten Type", None),
    customer("CA", "Uten Postnummer", post_code=None),
    customer("CO", "Feil Orgnr AS", "business", org_no="923609017"),
    customer("CN", "Uten Orgnr AS", "business"),
    customer("CS", "Ås & Sønn AS", "private"),
    customer("CB", "Fjord Handel AS", "business", org_no=VALID_ORG),
    # healthy invoice and its payment
    invoice("I_OK", "CB"), entry("P_OK", "CB", "payment"), match("M_OK", "I_OK", "P_OK"),
    # a draft waits, and its payment with it
    invoice("I_DRAFT", "CP", status="draft"), entry("P_DRAFT", "CP", "payment"), match("M_DRAFT", "I_DRAFT", "P_DRAFT"),
    # a payment matched to nothing
    entry("P_FREE", "CP", "payment"),
    # partly paid, the rest written off in-house
    invoice("I_WO", "CP"), entry("P_WO", "CP", "payment", "-600.00"),
    entry("V_WO", "CP", "manual_voucher", "-400.00", opt_out=True), match("M_WO", "I_WO", "P_WO", "V_WO"),
    # a wrongly booked payment, reversed in the ERP
    entry("P_REV", "CP", "payment"), entry("R_REV", "CP", "reversal", "1000.00", reverses="P_REV"),
    # two invoices settled by two payments
    invoice("I_MM1", "CP"), invoice("I_MM2", "CP"), entry("P_MM1", "CP", "payment"), entry("P_MM2", "CP", "payment"),
    match("M_MM", "I_MM1", "I_MM2", "P_MM1", "P_MM2"),
    # customer data defects: the invoice and its payment are held
    invoice("I_CT", "CT"), entry("P_CT", "CT", "payment"), match("M_CT", "I_CT", "P_CT"),
    invoice("I_CA", "CA"), entry("P_CA", "CA", "payment"), match("M_CA", "I_CA", "P_CA"),
    invoice("I_CO", "CO"), entry("P_CO", "CO", "payment"), match("M_CO", "I_CO", "P_CO"),
    # warnings only
    invoice("I_CN", "CN"), invoice("I_CS", "CS"), invoice("I_DUN", "CP", dunning_level="2"),
    # factoring: the customer's default, the invoice's own choice either way, a payment of an in-house invoice
    invoice("I_F1", "CF"), entry("P_F1", "CF", "payment"), match("M_F1", "I_F1", "P_F1"),
    invoice("I_F2", "CF", factoring=False),
    invoice("I_F3", "CP", factoring=True),
]

# (decision, rule, warnings) in full-ledger mode
FULL = {
    "I_OK": ("transfer", "invoice", set()), "P_OK": ("transfer", "linked", set()),
    "I_DRAFT": ("wait", "invoice-not-invoiced", set()), "P_DRAFT": ("wait", "linked-to-waiting", set()),
    "P_FREE": ("wait", "unlinked-payment", {"warn-unlinked-payment"}),
    "I_WO": ("transfer", "invoice", set()), "P_WO": ("transfer", "linked", set()),
    "V_WO": ("exclude", "voucher-opted-out", set()),
    "P_REV": ("exclude", "reversed-before-sent", set()),
    "R_REV": ("exclude", "reversal-before-sent", set()),
    **{i: ("hold", "many-to-many", set()) for i in ("I_MM1", "I_MM2", "P_MM1", "P_MM2")},
    "I_CT": ("hold", "customer-type-missing", set()), "P_CT": ("hold", "customer-type-missing", set()),
    "I_CA": ("hold", "customer-address-incomplete", set()), "P_CA": ("hold", "customer-address-incomplete", set()),
    "I_CO": ("hold", "customer-org-no-invalid", set()), "P_CO": ("hold", "customer-org-no-invalid", set()),
    "I_CN": ("transfer", "invoice", {"warn-business-without-org-no"}),
    "I_CS": ("transfer", "invoice", {"warn-private-company-name"}),
    "I_DUN": ("transfer", "invoice", {"warn-erp-dunning"}),
    "I_F1": ("transfer", "invoice", set()), "P_F1": ("transfer", "linked", set()),
    "I_F2": ("transfer", "invoice", set()), "I_F3": ("transfer", "invoice", set()),
}
# what differs in factoring mode
FACTORING = {
    **FULL,
    "I_F1": ("exclude", "factoring-in-house", set()),          # the customer's default: in-house
    "P_F1": ("exclude", "linked-to-excluded", set()),          # linked only to an in-house invoice
    "I_F3": ("exclude", "factoring-in-house", set()),          # the invoice's own choice: in-house
    "I_DUN": ("transfer", "invoice", set()),                   # ERP dunning is fine in factoring mode
}


def test_the_expectations_cover_the_ledger() -> None:
    ids = {r["id"] for r in LEDGER if r["record"] == "entry"}
    assert set(FULL) == ids == set(FACTORING)


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def set_mode(site: Path, mode: str) -> None:
    cfg = site / "reskontro.toml"
    text = cfg.read_text(encoding="utf-8")
    new = re.sub(r'(?m)^mode = "[a-z_]+"', f'mode = "{mode}"', text)
    assert new != text or f'mode = "{mode}"' in text
    cfg.write_text(new, encoding="utf-8")


@pytest.fixture
def site(tmp_path: Path) -> Path:
    target = tmp_path / "site"
    init_site(target)
    result = CliRunner().invoke(main, ["--site", str(target), "import", str(write_jsonl(tmp_path / "l.jsonl", LEDGER))])
    assert result.exit_code == 0, result.output
    return target


def decisions(site: Path, mode: str) -> dict[str, tuple[str, str, set[str]]]:
    s = Site.open(site)
    out = {}
    with s.db.connect() as conn:
        for d in decide_ledger(conn, s.rules, mode):
            assert d.entry["id"] not in out, "each entry decided once"
            out[d.entry["id"]] = (d.outcome.decision, d.outcome.rule_id, {w for w, _ in d.outcome.warnings})
    s.db.dispose()
    return out


@pytest.mark.parametrize("mode, expected", [("full_ledger", FULL), ("factoring", FACTORING)])
def test_every_entry_gets_its_decision(site: Path, mode: str, expected: dict) -> None:
    got = decisions(site, mode)
    wrong = {k: (got.get(k), v) for k, v in expected.items() if got.get(k) != v}
    assert not wrong, wrong
    assert set(got) == set(expected)


def test_decisions_follow_the_site_mode(site: Path) -> None:
    """plan --json sums per decision what the expectations say, in the configured mode."""
    runner = CliRunner()
    for mode, expected in (("full_ledger", FULL), ("factoring", FACTORING)):
        set_mode(site, mode)
        result = runner.invoke(main, ["--site", str(site), "plan", "--json"])
        assert result.exit_code == 0, result.output
        plan = json.loads(result.stdout)
        assert plan["entries"] == len(expected)
        assert plan["totals"] == dict(Counter(d for d, _, _ in expected.values()))
        by_rule = Counter(r for _, r, _ in expected.values())
        assert {l["rule"]: l["count"] for l in plan["lines"]} == dict(by_rule)
        warnings = Counter(w for _, _, ws in expected.values() for w in ws)
        assert {w["rule"]: w["count"] for w in plan["warnings"]} == dict(warnings)


def test_plan_sums_amounts_per_rule(site: Path) -> None:
    result = CliRunner().invoke(main, ["--site", str(site), "plan", "--json", "--all"])
    plan = json.loads(result.stdout)
    lines = {l["rule"]: l for l in plan["lines"]}
    # many-to-many: 1000 + 1000 - 1000 - 1000
    assert lines["many-to-many"]["amounts"] == {"NOK": "0.00"}
    assert lines["voucher-opted-out"]["amounts"] == {"NOK": "-400.00"}
    # a plan line shows the rule's own text (an entry's reason may name that entry's records)
    assert lines["reversal-before-sent"]["reason"] == REASON["reversal-before-sent"]
    assert lines["reversal-before-sent"]["amounts"] == {"NOK": "1000.00"}


def test_explain_names_the_deciding_rule_its_reason_and_the_other_matches(site: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(main, ["--site", str(site), "explain", "I_CT"])
    assert result.exit_code == 0, result.output
    text = " ".join(result.stdout.split())
    assert "I_CT: hold by rule customer-type-missing" in text
    assert " ".join(REASON["customer-type-missing"].split()) in text
    # an invoiced invoice also meets `invoice`; that rule comes later and did not decide
    assert f"line {LINE['invoice']}: invoice -> transfer" in text
    assert re.search(r"customer_type\s+│\s+none\s+│", result.stdout)

    result = runner.invoke(main, ["--site", str(site), "explain", "--json", "P_CT"])
    ex = json.loads(result.stdout)
    assert (ex["decision"], ex["rule"]) == ("hold", "customer-type-missing")
    assert ex["matched"] == ["customer-type-missing", "linked-to-held"]
    assert ex["facts"]["invoice_decision"] == "hold" and ex["facts"]["match_shape"] == "one_to_one"


def test_explain_of_a_reversal_before_sending_names_the_pair_that_cancels_out(site: Path) -> None:
    result = CliRunner().invoke(main, ["--site", str(site), "explain", "--json", "R_REV"])
    ex = json.loads(result.stdout)
    assert (ex["decision"], ex["rule"]) == ("exclude", "reversal-before-sent")
    assert "cancel out" in ex["reason"] and "(P_REV)" in ex["reason"]
    assert ex["matched"] == ["reversal-before-sent", "reversed-payment", "reversal"]
    assert ex["facts"]["reverses_type"] == "payment" and ex["facts"]["reverses_sent"] is False


def test_explain_of_a_matched_payment_sees_its_whole_group(site: Path) -> None:
    ex = json.loads(CliRunner().invoke(main, ["--site", str(site), "explain", "--json", "P_WO"]).stdout)
    assert (ex["decision"], ex["rule"]) == ("transfer", "linked")
    assert ex["facts"]["match_shape"] == "one_to_many" and ex["facts"]["invoice_decision"] == "transfer"
    ex = json.loads(CliRunner().invoke(main, ["--site", str(site), "explain", "--json", "P_FREE"]).stdout)
    assert ex["warnings"] == [{"rule": "warn-unlinked-payment",
                               "text": next(r.warning for r in RULES.rules if r.id == "warn-unlinked-payment")}]


def test_explain_agrees_with_the_plan_for_every_entry(site: Path) -> None:
    runner = CliRunner()
    for eid, (decision, rule, warnings) in FULL.items():
        ex = json.loads(runner.invoke(main, ["--site", str(site), "explain", "--json", eid]).stdout)
        assert (ex["decision"], ex["rule"], {w["rule"] for w in ex["warnings"]}) == (decision, rule, warnings), eid


def test_explain_an_unknown_entry(site: Path) -> None:
    result = CliRunner().invoke(main, ["--site", str(site), "explain", "NO_SUCH_ENTRY"])
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    assert "no entry with id 'NO_SUCH_ENTRY' in the ledger" in result.stderr


def test_check_lists_the_defective_customers(site: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(main, ["--site", str(site), "check", "--json"])
    assert result.exit_code == 3, result.output                 # held entries: a person fixes the data
    doc = json.loads(result.stdout)
    assert (doc["ok"], doc["exit_status"]) == (False, 3)
    report = {r["customer"]: r for r in doc["customers"]}
    assert set(report) == {"CT", "CA", "CO", "CN", "CS"}
    assert report["CT"]["holds"] == {"customer-type-missing": 2}
    assert report["CA"]["holds"] == {"customer-address-incomplete": 2}
    assert report["CO"]["holds"] == {"customer-org-no-invalid": 2}
    assert report["CN"] == {"customer": "CN", "name": "Uten Orgnr AS", "holds": {},
                            "warnings": {"warn-business-without-org-no": 1}}
    assert report["CS"]["warnings"] == {"warn-private-company-name": 1} and report["CS"]["name"] == "Ås & Sønn AS"

    result = runner.invoke(main, ["--site", str(site), "check"])
    assert result.exit_code == 3
    for cid in ("CT", "CA", "CO", "CN", "CS"):
        assert re.search(rf"│ {cid}\s+│", result.stdout), cid
    for cid in ("CP", "CF", "CB"):
        assert not re.search(rf"│ {cid}\s+│", result.stdout), cid


def test_a_customer_fix_re_decides_its_entries(site: Path, tmp_path: Path) -> None:
    fixed = customer("CT", "Uten Type", "private")
    result = CliRunner().invoke(main, ["--site", str(site), "import", str(write_jsonl(tmp_path / "fix.jsonl", [fixed]))])
    assert result.exit_code == 0
    got = decisions(site, "full_ledger")
    assert got["I_CT"] == ("transfer", "invoice", set()) and got["P_CT"] == ("transfer", "linked", set())


# --- the sample generator ----------------------------------------------------------------------
def _sample(runner: CliRunner, path: Path, seed: int, customers: int = 500) -> bytes:
    result = runner.invoke(main, ["sample", "--customers", str(customers), "--seed", str(seed), "--out", str(path)])
    assert result.exit_code == 0, result.output
    return path.read_bytes()


def test_sample_is_deterministic_by_seed(tmp_path: Path) -> None:
    runner = CliRunner()
    a = _sample(runner, tmp_path / "a.jsonl", 7)
    b = _sample(runner, tmp_path / "b.jsonl", 7)
    c = _sample(runner, tmp_path / "c.jsonl", 8)
    assert a == b
    assert a != c
    assert sum(1 for r in map(json.loads, a.decode().splitlines()) if r["record"] == "customer") == 500


def _healthy(c: dict) -> bool:
    """What the customer rules want, computed from the sample's own record."""
    org = c.get("org_no")
    return (c.get("type") in ("private", "business") and bool(c.get("address1")) and bool(c.get("city"))
            and re.fullmatch(r"\d{4}", c.get("post_code", "")) is not None and (not org or orgnr.is_valid(org)))


def test_sample_imports_cleanly_and_has_every_kind_of_decision(tmp_path: Path) -> None:
    runner = CliRunner()
    target = tmp_path / "site"
    init_site(target)
    path = tmp_path / "sample.jsonl"
    _sample(runner, path, 7)
    records = [json.loads(l) for l in path.read_text(encoding="utf-8").splitlines()]
    kinds = Counter(r["record"] for r in records)
    result = runner.invoke(main, ["--site", str(target), "import", str(path)])
    assert result.exit_code == 0, result.output
    row = next(l for l in result.stdout.splitlines() if "sample.jsonl" in l)
    assert re.findall(r"\d+ / \d+", row) == [f"{kinds['customer']} / 0", f"{kinds['entry']} / 0", f"{kinds['match']} / 0"]

    got = decisions(target, "full_ledger")
    assert len(got) == kinds["entry"]
    assert {d for d, _, _ in got.values()} == {"transfer", "wait", "exclude", "hold"}

    customers = {r["id"]: r for r in records if r["record"] == "customer"}
    entries = {r["id"]: r for r in records if r["record"] == "entry"}

    # nothing is sent yet: every reversal of a payment cancels out with the payment it reverses
    reversals = [e for e in entries.values() if e["type"] == "reversal"]
    assert reversals
    for r in reversals:
        assert entries[r["reverses"]]["type"] == "payment"
        assert got[r["id"]][:2] == ("exclude", "reversal-before-sent")
        assert got[r["reverses"]][:2] == ("exclude", "reversed-before-sent")

    # a many-to-many match holds all its members
    mm = [m for m in records if m["record"] == "match"
          and sum(entries[e]["type"] == "invoice" for e in m["entries"]) > 1
          and sum(entries[e]["type"] != "invoice" for e in m["entries"]) > 1]
    assert mm
    for m in mm:
        healthy = _healthy(customers[entries[m["entries"][0]]["customer_id"]])
        for e in m["entries"]:
            assert got[e][0] == "hold"
            if healthy:
                assert got[e][1] == "many-to-many"
    assert any(got[e][1] == "many-to-many" for m in mm for e in m["entries"])

    # opted-out write-offs are excluded (unless the customer's data holds them first)
    opted = [e for e in entries.values() if e.get("opt_out") is True]
    assert opted
    for v in opted:
        if _healthy(customers[v["customer_id"]]):
            assert got[v["id"]][:2] == ("exclude", "voucher-opted-out")
    assert any(got[v["id"]][1] == "voucher-opted-out" for v in opted)

    # drafts wait; every defective customer's entries are held
    for e in entries.values():
        c = customers[e["customer_id"]]
        if not _healthy(c):
            assert got[e["id"]][0] == "hold", (e, c)
        elif e.get("status") == "draft":
            assert got[e["id"]][:2] == ("wait", "invoice-not-invoiced")
