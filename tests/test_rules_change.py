"""Changing a rule safely (issue 14): `rules diff`, `rules coverage`, the new fields (customer id,
tags, days past due, document date, source), the new lint checks, the decision history, and
the README's worked example run as written."""
from __future__ import annotations

import json
import re
import shutil
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

import reskontro.rules.diff as diff_mod
from reskontro.cli import main
from reskontro.domain import ENTRY_TYPES
from reskontro.ledger import schema as s
from reskontro.rules import lint as lint_mod
from reskontro.rules.decide import decide_ledger, run_day
from reskontro.rules.engine import RuleEngine
from reskontro.rules.facts import DEFAULT_FACT, FIELDS, example_value
from reskontro.rules.lint import engine_problems, lint_file, lint_text
from reskontro.rules.rulefile import parse_rule_text
from reskontro.site import Site
from test_engine_property import PROPS, compile_doc, facts, matches, reference, rule_files
from test_export import (Lowell, cli, customer, entry, export, flat, import_records, invoice, make_site, match,
                         payment)

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
HEAD = "default: {decision: wait, reason: Nothing decided.}\nrules:\n"


def rules_of(site: Path) -> Path:
    return site / "rules" / "transfer.yaml"


def candidate(site: Path, before: str, text: str, name: str = "next.yaml") -> Path:
    """A copy of the site's rules with `text` inserted before the line `before`."""
    rules = rules_of(site).read_text(encoding="utf-8")
    assert before in rules
    path = site / "rules" / name
    path.write_text(rules.replace(before, text + before, 1), encoding="utf-8")
    return path


BIG = """\
  - id: invoice-over-a-million
    when: {entry_type: invoice, currency: NOK, amount: {gt: 1000000}, sent: false}
    decision: hold
    reason: Reviewed before Lowell gets it.

"""
KEY = """\
  - id: key-accounts-in-house
    when: {entry_type: invoice, tags: {has: key-account}}
    decision: exclude
    reason: Key accounts are followed up in-house.

"""
INVOICE = "  - id: invoice\n"
DRAFTS = "  - id: invoice-not-invoiced\n"


def small_ledger(site: Path) -> Lowell:
    """Customers (one tagged), invoices and a payment; the first file accepted by Lowell."""
    import_records(site, [
        customer("C1", tags=["Key-Account"]), customer("C2"), customer("C3", tags="key-account; vip"),
        invoice("I1", "C1", "5000.00"), invoice("I2", "C2", "2500000.00"), payment("P1", "C1", "-5000.00"),
        match("M1", "I1", "P1")])
    lowell = Lowell()
    lowell.accept(site, export(site))
    import_records(site, [invoice("I3", "C3", "300.00"), invoice("I4", "C2", "1200000.00")])
    return lowell


def diff_json(site: Path, *args: str) -> dict:
    out = json.loads(cli(site, "rules", "diff", *args, "--json").output)
    assert out["ok"] is True and out["exit_status"] == 0
    return out


def wide(site: Path, *args: str, code: int = 0) -> str:
    """A command's output on a wide terminal, wrapping undone (tables fold long cells)."""
    result = CliRunner().invoke(main, ["--site", str(site), *args], env={"COLUMNS": "250"})
    assert result.exit_code == code, result.output
    return flat(result.output)


def table_counts(site: Path) -> dict:
    with Site.open(site).db.connect() as conn:
        return {t.name: conn.execute(select(func.count()).select_from(t)).scalar_one()
                for t in s.metadata.sorted_tables}


# --- 1. rules diff ------------------------------------------------------------------------------
def test_diff_shows_each_change_with_amounts_rules_and_lowell(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    small_ledger(site)
    cand = candidate(site, INVOICE, BIG + KEY)
    before, files = table_counts(site), sorted(p.name for p in (site / "outbox").iterdir())
    d = diff_json(site, str(cand))
    assert d["entries"] == 5 and d["changed"] == 4
    lines = {(c["from"], c["to"]): c for c in d["changes"]}
    assert set(lines) == {("transfer", "hold"), ("transfer", "exclude")}
    assert lines["transfer", "hold"]["count"] == 1 and lines["transfer", "hold"]["amounts"] == {"NOK": "1200000.00"}
    ex = lines["transfer", "exclude"]
    assert ex["count"] == 3 and ex["amounts"] == {"NOK": "300.00"}        # I1 5000 + P1 -5000 + I3 300
    by_id = {e["id"]: e for c in d["changes"] for e in c["entries"]}
    assert by_id["I4"] == {**by_id["I4"], "customer": "C2", "amount": "1200000.00", "old_rule": "invoice",
                           "new_rule": "invoice-over-a-million", "new_reason": "Reviewed before Lowell gets it.",
                           "lowell": None, "note": None}
    assert (by_id["P1"]["old_rule"], by_id["P1"]["new_rule"]) == ("linked", "linked-to-excluded")
    # I1 and P1 are Lowell's: flagged with the date and file that carried them
    told = {e["id"]: e for e in d["tell_lowell"]}
    assert set(told) == {"I1", "P1"}
    day = told["I1"]["lowell_since"]
    assert told["I1"]["note"] == f"now excluded, but delivered on {day} (file {told['I1']['file']}): tell Lowell"
    assert told["I1"]["file"].startswith("LT_123456_")
    # I2 (over a million, but Lowell has it) does not change
    assert "I2" not in by_id
    # it wrote nothing
    assert table_counts(site) == before
    assert sorted(p.name for p in (site / "outbox").iterdir()) == files
    text = wide(site, "rules", "diff", str(cand))
    assert "5 entries decided by both" in text and "4 would change" in text
    assert "Lowell has 2 of these entries" in text and "I1: now excluded, but delivered on" in text
    assert "invoice-over-a-million" in text and "Reviewed before Lowell gets it." in text


def test_diff_against_a_base_file_and_of_a_file_with_itself(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    small_ledger(site)
    cand = candidate(site, INVOICE, BIG)
    assert diff_json(site, str(rules_of(site)))["changed"] == 0
    back = diff_json(site, str(rules_of(site)), "--base", str(cand))            # undoing the change
    assert [(c["from"], c["to"], c["count"]) for c in back["changes"]] == [("hold", "transfer", 1)]


def test_diff_refuses_a_candidate_with_problems(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    bad = candidate(site, INVOICE, "  - id: x\n    when: {entry_type: payment, status: draft}\n"
                                   "    decision: hold\n    reason: r\n\n")
    result = cli(site, "rules", "diff", str(bad), code=1)
    line = rules_of(site).read_text().splitlines().index(INVOICE.rstrip("\n")) + 1
    assert result.stderr.startswith(f"{bad}:{line}: x: can never fire: no entry meets its conditions together")


def test_diff_limits_the_listing_but_not_the_counts_nor_what_lowell_has(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    small_ledger(site)
    cand = candidate(site, INVOICE, KEY)
    d = diff_json(site, str(cand), "--limit", "1")
    ex = d["changes"][0]
    assert ex["count"] == 3
    assert {e["id"] for e in ex["entries"]} >= {"I1", "P1"}                 # Lowell's: always listed
    assert len([e for e in ex["entries"] if e["lowell"] is None]) == 1


def _two_passes(site: Path, cand: Path) -> dict:
    """The changes by two separate passes of decide_ledger (the reference for the diff)."""
    st_ = Site.open(site)
    base, new = st_.rules, RuleEngine(lint_file(cand)[0])
    out = {}
    with st_.db.connect() as conn:
        a = {d.entry["id"]: d.outcome for d in decide_ledger(conn, base, st_.config.mode)}
        b = {d.entry["id"]: d.outcome for d in decide_ledger(conn, new, st_.config.mode)}
    for k in a:
        if (a[k].decision, a[k].rule_id) != (b[k].decision, b[k].rule_id):
            out[k] = (a[k].decision, b[k].decision, b[k].rule_id)
    return out


@pytest.mark.parametrize("processes", [1, 2])
def test_diff_agrees_with_two_separate_passes_on_a_sample_ledger(tmp_path: Path, monkeypatch, processes: int) -> None:
    site = make_site(tmp_path, mode="factoring")
    sample = tmp_path / "ledger.jsonl"
    cli(site, "sample", "--customers", "300", "--seed", "7", "--out", str(sample))
    cli(site, "import", str(sample))
    cand = candidate(site, INVOICE, BIG.replace("1000000", "15000") + KEY
                     + "  - id: late\n    when: {entry_type: invoice, days_past_due: {ge: 40}, document_date: {lt: 2026-10-01}}\n"
                       "    decision: wait\n    reason: Late and old.\n\n")
    monkeypatch.setattr(diff_mod, "PARALLEL_FROM", 1 if processes == 2 else 10 ** 9)
    site_obj = Site.open(site)
    from reskontro import services
    d = services.rules_diff(site_obj, cand)
    site_obj.db.dispose()
    assert d.processes == processes
    got = {c.entry_id: (c.old_decision, c.new_decision, c.new_rule) for l in d.lines.values() for c in l.entries}
    want = _two_passes(site, cand)
    assert want and got == want
    assert d.changed == len(want)
    with Site.open(site).db.connect() as conn:
        assert d.entries == conn.execute(select(func.count()).select_from(s.entries)).scalar_one()


# --- 2. rules coverage --------------------------------------------------------------------------
def test_coverage_counts_tonight_the_whole_ledger_and_examples(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    small_ledger(site)
    cov = json.loads(cli(site, "rules", "coverage", "--json").output)
    assert cov["ok"] is True and cov["examples"].endswith("transfer.examples.yaml")
    rows = {r["rule"]: r for r in cov["rules"]}
    # I1, I2 and P1 went (delivered); I3 and I4 go tonight
    assert (rows["invoice"]["tonight"], rows["invoice"]["whole"]) == (2, 4)
    assert (rows["linked"]["tonight"], rows["linked"]["whole"]) == (0, 1)
    assert rows["invoice"]["examples"] >= 5 and rows["kid-invalid"]["examples"] == 1
    assert rows["kid-invalid"]["idle"] and not rows["invoice"]["idle"]
    # idle rules and rules without an example come first, then the rest in file order
    order = [r["rule"] for r in cov["rules"]]
    busy = [r for r in order if not rows[r]["idle"] and not rows[r]["untested"]]
    assert order[-len(busy):] == busy == ["invoice", "linked"]
    # a rule without an example comes before the rules that decide and have one
    (site / "rules" / "transfer.yaml").write_text(
        rules_of(site).read_text().replace(INVOICE, BIG + INVOICE, 1), encoding="utf-8")
    cov = json.loads(cli(site, "rules", "coverage", "--json").output)
    assert [r["rule"] for r in cov["rules"]][-3:] == ["invoice-over-a-million", "invoice", "linked"]
    new = cov["rules"][-3]
    assert (new["whole"], new["tonight"], new["examples"], new["idle"], new["untested"]) == (1, 1, 0, False, True)
    assert all(r["idle"] for r in cov["rules"][:-3])
    text = wide(site, "rules", "coverage")
    assert "no example" in text and "decides nothing" in text


# --- 3. the new fields ----------------------------------------------------------------------------
def test_tags_are_imported_from_json_and_csv_and_refused_with_their_line(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    csv_file = tmp_path / "customers.csv"
    csv_file.write_text("id,name,type,address1,post_code,city,country,tags\n"
                        "C5,Kunde C5,private,Storgata 1,0150,OSLO,NO,Key-Account;vip  other\n"
                        "C6,Kunde C6,private,Storgata 1,0150,OSLO,NO,\n", encoding="utf-8")
    cli(site, "import", str(csv_file))
    import_records(site, [customer("C7", tags=["VIP", "vip"])])
    with Site.open(site).db.connect() as conn:
        tags = dict(conn.execute(select(s.customers.c.id, s.customers.c.tags)).all())
    assert tags == {"C5": "key-account other vip", "C6": None, "C7": "vip"}
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(customer("C8", tags=["two words"])) + "\n"
                   + json.dumps(customer("C9", tags={"a": 1})) + "\n", encoding="utf-8")
    out = cli(site, "import", str(bad), code=1).output
    assert "bad.jsonl:1: tags: 'two words' is not a tag" in flat(out)
    assert "bad.jsonl:2: tags: must be a list of words or text" in flat(out)


def test_a_tag_change_decides_the_customers_entries_again(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    import_records(site, [customer("C1"), invoice("I1", "C1", "100.00"), invoice("I2", "C1", "1.00", status="draft")])
    rules_of(site).write_text(rules_of(site).read_text().replace(INVOICE, KEY + INVOICE, 1), encoding="utf-8")
    assert set(export(site).entries) == {"I1"}
    import_records(site, [customer("C1", tags=["key-account"]), invoice("I3", "C1", "7.00")])
    plan = json.loads(cli(site, "plan", "--json", "--all").output)
    assert {(l["decision"], l["rule"], l["count"]) for l in plan["lines"]} == {
        ("exclude", "key-accounts-in-house", 2), ("wait", "invoice-not-invoiced", 1)}
    # the customer's change made its entries pending: tonight's export decides I1 again
    assert set(export(site).entries) == set()
    assert history(site) == [("I1", "transfer", "exclude", "key-accounts-in-house")]


def test_explain_shows_the_new_facts(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    import_records(site, [customer("C1", tags=["b", "a"]),
                          invoice("I1", "C1", "100.00", day="2026-11-02", due_date="2026-11-16", source="Lowell")])
    facts = json.loads(cli(site, "explain", "I1", "--json").output)["facts"]
    today = run_day(Site.open(site).config.tz)
    assert facts["customer_id"] == "C1" and facts["tags"] == ["a", "b"] and facts["source"] == "Lowell"
    assert facts["document_date"] == "2026-11-02"
    assert facts["days_past_due"] == (today - date(2026, 11, 16)).days
    assert facts["amount"] == "100.00"


def test_days_past_due_counts_from_the_run_date_in_the_configured_zone() -> None:
    # 23:30 UTC on 31 December is already 1 January in Oslo
    assert run_day("Europe/Oslo", datetime(2026, 12, 31, 23, 30, tzinfo=timezone.utc)) == date(2027, 1, 1)
    assert run_day("UTC", datetime(2026, 12, 31, 23, 30, tzinfo=timezone.utc)) == date(2026, 12, 31)


def test_a_rule_on_days_past_due_decides_every_night_again(tmp_path: Path) -> None:
    """No ledger change, yet the invoice turns 30 days past due: the export decides it again."""
    from reskontro import services
    from reskontro.transfer.export import export as do_export
    site = make_site(tmp_path)
    rules_of(site).write_text(rules_of(site).read_text().replace(DRAFTS, (
        "  - id: late-draft\n    when: {entry_type: invoice, status: draft, days_past_due: {ge: 30}}\n"
        "    decision: hold\n    reason: A draft 30 days past its due date.\n\n") + DRAFTS, 1), encoding="utf-8")
    assert lint_file(rules_of(site))[1] == []
    import_records(site, [customer("C1"), invoice("I1", "C1", "100.00", status="draft", due_date="2026-12-01")])
    s_ = Site.open(site)
    day1 = datetime(2026, 12, 20, 18, tzinfo=timezone.utc)
    do_export(s_.config, s_.db, s_.rules, now=day1)
    with s_.db.connect() as conn:
        assert conn.execute(select(s.entries.c.decision).where(s.entries.c.id == "I1")).scalar() == "wait"
    do_export(s_.config, s_.db, s_.rules, now=day1 + timedelta(days=12))
    with s_.db.connect() as conn:
        assert conn.execute(select(s.entries.c.decision).where(s.entries.c.id == "I1")).scalar() == "hold"
        h = conn.execute(select(s.decision_history)).all()
    assert [(r.entry_id, r.from_decision, r.to_decision, r.rule_id) for r in h] == [("I1", "wait", "hold", "late-draft")]
    s_.db.dispose()
    assert services  # (the service layer is what the CLI calls; the export's date is given here)


def test_the_cache_tells_amounts_apart_by_the_rules_thresholds_only() -> None:
    rf, problems = parse_rule_text(HEAD + BIG + KEY + (
        "  - id: c\n    when: {customer_id: [K1, K2], document_date: {ge: 2026-01-01}, days_past_due: {gt: 10}}\n"
        "    decision: transfer\n    reason: r\n"), Path("x.yaml"))
    assert problems == []
    e = RuleEngine(rf)
    for i in range(3000):
        f = dict(DEFAULT_FACT, amount=i * 997 + 1, customer_id=f"K{i % 50}", days_past_due=i % 40,
                 document_date=DEFAULT_FACT["document_date"] - i, tags=(("key-account",) if i % 3 else ("x", f"w{i}")))
        assert e.decide(f) == e.decide_uncached(f)
    # amount: 2 cells; customer ids: 3; days: 3; dates: 2; tags: 2 — not 3,000 shapes
    assert e.engine_calls - 3000 <= 2 * 3 * 3 * 2 * 2


def test_tags_with_any_characters_a_tag_may_have() -> None:
    rf, problems = parse_rule_text(HEAD + "  - id: a\n    when: {tags: {has: a.b}}\n    decision: hold\n    reason: x\n"
                                   "  - id: b\n    when: {tags: {has_any: [$x, 'q\"z', Æøå]}}\n    decision: exclude\n"
                                   "    reason: y\n  - id: c\n    when: {tags: {has_none: [a.b, $x]}}\n"
                                   "    decision: transfer\n    reason: z\n", Path("x.yaml"))
    assert problems == []
    e = RuleEngine(rf)
    for tags, rule in [((), "c"), (("a.b",), "a"), (("$x",), "b"), (('q"z',), "b"), (("æøå",), "b"), (("a",), "c"),
                       (("$x", "a.b"), "a")]:
        fact = dict(DEFAULT_FACT, tags=tags)
        assert e.decide_uncached(fact).rule_id == e.decide(fact).rule_id == rule, tags


def test_lint_types_the_new_fields(tmp_path: Path) -> None:
    cases = [
        ("{tags: {gt: 1}}", "tags: unknown operator 'gt' for tags (known: has, has_not, has_any, has_none)"),
        ("{tags: {has: two words}}", "tags: 'two words' is not a tag"),
        ("{tags: {has: [a, b]}}", "tags: has takes one word"),
        ("{tags: {has_any: []}}", "tags: has_any needs a non-empty list of words"),
        ("{document_date: {lt: 2026-13-01}}", "document_date: '2026-13-01' is not a date (YYYY-MM-DD)"),
        ("{customer_id: yes}", "customer_id: True must be text (put it in quotes)"),
        ("{customer_id: {gt: K1}}", "customer_id: gt compares numbers; customer_id is text"),
        ("{days_past_due: {gt: 1.5}}", "days_past_due: '1.5' must be a whole number"),
        ("{tags: {has: a, has_not: a}}", "can never fire: no entry meets all its conditions"),
        ("{source: {in: [Lowell]}, any: [{source: ERP}]}", "can never fire: no entry meets all its conditions"),
    ]
    for when, message in cases:
        _, problems = lint_text(HEAD + f"  - id: r\n    when: {when}\n    decision: hold\n    reason: x\n",
                                tmp_path / "t.yaml")
        # a value or operator: the line of the condition; a rule that never fires: the rule's
        assert [p.line for p in problems] == [3 if "never" in message else 4], (when, problems)
        assert message in problems[0].message, (when, problems[0].message)
    # written as in the examples: an unquoted id is taken as written; a date; tags
    rf, problems = parse_rule_text(HEAD + "  - id: r\n    when: {customer_id: 010023, document_date: {ge: 2026-01-01},"
                                   " tags: [A, b]}\n    decision: hold\n    reason: x\n", Path("t.yaml"))
    assert problems == []
    assert {t.field: t.value for t in rf.rules[0].when} == {
        "customer_id": "010023", "document_date": date(2026, 1, 1).toordinal(), "tags": ("a", "b")}


def test_rules_fields_lists_every_field_with_a_condition(tmp_path: Path) -> None:
    out = CliRunner().invoke(main, ["rules", "fields"], env={"COLUMNS": "300"}).output
    for f in FIELDS.values():
        assert f.example, f.name
        assert re.search(rf"│ {f.name}\s+│ {f.kind}\s", out), f.name
        rf, problems = parse_rule_text(HEAD + f"  - id: r\n    when: {{{f.example}}}\n    decision: hold\n    reason: x\n",
                                       Path("x.yaml"))
        assert problems == [], (f.name, problems)
    for name in ("customer_id", "tags", "amount", "currency", "days_past_due", "document_date", "source"):
        assert name in out


def test_examples_may_give_the_new_fields(tmp_path: Path) -> None:
    spec = FIELDS["tags"]
    assert example_value(spec, ["B", "a"]) == ("a", "b") and example_value(spec, "x; y z") == ("x", "y", "z")
    assert example_value(FIELDS["document_date"], date(2026, 1, 2)) == date(2026, 1, 2).toordinal()
    site = make_site(tmp_path)
    vip = KEY.replace("{has: key-account}", "{has: vip}")
    rules_of(site).write_text(rules_of(site).read_text().replace(INVOICE, vip + INVOICE, 1), encoding="utf-8")
    ex = site / "rules" / "transfer.examples.yaml"
    ex.write_text(ex.read_text() + "\n- name: key accounts stay home\n  facts: {tags: [Key-Account, VIP]}\n"
                  "  expect: {decision: exclude, rule: key-accounts-in-house}\n"
                  "- name: a bad date\n  facts: {document_date: 2026-02-30}\n  expect: {decision: transfer}\n",
                  encoding="utf-8")
    result = cli(site, "rules", "test", code=1)
    assert "1 failed" in result.output
    assert "FAIL a bad date: document_date:" in result.stderr


# --- 4. lint grows --------------------------------------------------------------------------------
def _lint(tmp_path: Path, body: str) -> list[tuple[int, str]]:
    path = tmp_path / "transfer.yaml"
    path.write_text(HEAD + body, encoding="utf-8")
    _, problems = lint_file(path)
    for p in problems:
        assert str(p) == f"{path}:{p.line}: {p.message}"
    return [(p.line, p.message) for p in problems]


def r(rid: str, when: str, decision: str = "hold") -> str:
    return f"  - id: {rid}\n    when: {when}\n    decision: {decision}\n    reason: x\n"


def test_lint_finds_a_rule_shadowed_by_the_union_of_earlier_rules(tmp_path: Path) -> None:
    body = (r("drafts", "{entry_type: invoice, status: draft}", "wait")            # line 3
            + r("invoiced", "{entry_type: invoice, status: invoiced}", "transfer")  # line 7
            + r("all-invoices", "{entry_type: invoice}")                            # line 11
            + r("small", "{entry_type: payment, amount: {lt: 0}}")                 # line 15
            + r("big", "{entry_type: payment, amount: {ge: 0}}")                   # line 19
            + r("payments", "{entry_type: payment, kid: valid}")                   # line 23
            + r("tagged", "{entry_type: payout, tags: {has_any: [a, b]}}")         # line 27
            + r("untagged", "{entry_type: payout, tags: {has_none: [a, b]}}")      # line 31
            + r("payouts", "{entry_type: payout, customer_id: K1}")                # line 35
            + r("not-all", "{entry_type: credit_note, amount: {lt: 0}}")           # line 39
            + r("credit-notes", "{entry_type: credit_note}"))                       # line 43: not shadowed
    got = _lint(tmp_path, body)
    assert [line for line, _ in got] == [11, 23, 35]
    assert got[0][1] == ("all-invoices: can never decide: the rules before it together catch every entry this "
                         "rule catches: 'drafts' (line 3), 'invoiced' (line 7)")
    assert "'small' (line 15), 'big' (line 19)" in got[1][1]
    assert "'tagged' (line 27), 'untagged' (line 31)" in got[2][1]


def test_lint_keeps_reporting_one_earlier_rule_as_before(tmp_path: Path) -> None:
    got = _lint(tmp_path, r("a", "{entry_type: invoice}") + r("b", "{entry_type: invoice, status: draft}"))
    assert got == [(7, "b: can never decide: rule 'a' (line 3) comes first and catches every entry this rule catches")]


@pytest.mark.parametrize("when, why", [
    ("{entry_type: payment, status: draft}", "(entry_type payment with status draft: only invoices have a status)"),
    ("{entry_type: [payment, payout], status: [draft, invoiced]}", "only invoices have a status"),
    ("{entry_type: payout, reverses_sent: true}", "only a reversal reverses an entry"),
    ("{entry_type: invoice, invoice_decision: transfer}", "none for an invoice"),
    ("{opt_out: true, entry_type: invoice}", "only manual vouchers are opted out"),
    ("{changed_after_sent: true, sent: false}", "only an entry Lowell has can change after it was sent"),
    ("{match_shape: none, invoice_decision: hold}", "has invoice_decision none"),
    ("{split_with_excluded: true, invoice_decision: exclude}", "another invoice that is not excluded"),
])
def test_lint_finds_conditions_no_entry_meets_across_fields(tmp_path: Path, when: str, why: str) -> None:
    got = _lint(tmp_path, r("x", when))
    assert len(got) == 1 and got[0][0] == 3, got
    assert got[0][1].startswith("x: can never fire: no entry meets its conditions together ("), got
    assert why in got[0][1]


def test_lint_accepts_what_entries_can_be(tmp_path: Path) -> None:
    for when in ("{entry_type: [payment, invoice], status: draft}", "{entry_type: reversal, reverses_type: payment}",
                 "{changed_after_sent: true, sent: true}", "{entry_type: payment, invoice_decision: exclude}",
                 "{settled_before_service: true, match_shape: one_to_one}"):
        assert _lint(tmp_path, r("x", when)) == [], when
    assert lint_file(ROOT / "rules" / "transfer.yaml")[1] == []


def _any_rule(n: int, per_alt_in: bool) -> str:
    alts = ", ".join((f"{{amount: {{gt: {i}}}, kid: [valid, absent]}}" if per_alt_in else f"{{amount: {{gt: {i}}}}}")
                     for i in range(n))
    return r("many", f"{{any: [{alts}]}}")


def _raw_refuses(rule) -> bool:
    """durable_rules' own answer on the rule's JSON alone (without the engine's count first)."""
    import copy

    import durable_rules_engine

    from reskontro.rules.engine import _Host, _rule_json
    raw = {"r1": {"pri": 1, "all": [{"m": _rule_json(rule)}], "run": "r1"}}
    try:
        _Host({"r1": lambda c: None}, {"raw": copy.deepcopy(raw)})
    except durable_rules_engine.error:
        return True
    return False


@pytest.mark.parametrize("n, per_alt_in, refused", [(32, False, False), (6, True, False), (7, True, True)])
def test_lint_names_an_any_heavy_rule_exactly_when_durable_rules_refuses_it(tmp_path: Path, n, per_alt_in,
                                                                            refused) -> None:
    text = _any_rule(n, per_alt_in)
    got = _lint(tmp_path, text)
    rf, _ = parse_rule_text(HEAD + text, Path("x.yaml"))
    assert _raw_refuses(rf.rules[0]) == refused
    if refused:
        assert len(got) == 1 and got[0][0] == 3
        assert got[0][1].startswith("many: too complex for the rules engine: 16 groups of conditions"), got
        assert "split it into several rules" in got[0][1]
    else:
        assert got == []
        RuleEngine(rf)


@settings(PROPS, max_examples=120)
@given(doc=rule_files())
def test_lint_names_every_rule_durable_rules_refuses(doc: dict) -> None:
    """Every rule durable_rules itself refuses is named by lint (engine.rule_costs); a rule lint
    names for its groups of conditions (error 113) durable_rules refuses; one it names for the
    tests pending at once would fail on a fact (error 303), or hang it (its tables full)."""
    rf = compile_doc(doc)
    flagged = {p.line: p.message for p in engine_problems(rf)}
    for rule in rf.rules:
        refused = _raw_refuses(rule)
        if refused:
            assert rule.line in flagged, (rule, doc)
        if "groups of conditions" in flagged.get(rule.line, ""):
            assert refused, (rule, doc)


def consistent(fact: dict) -> dict:
    """The fact made one that an entry can be (lint.ALWAYS)."""
    f = dict(fact)
    inv = f["entry_type"] == "invoice"
    if not inv:
        f["status"] = "none"
    elif f["status"] == "none":
        f["status"] = "invoiced"
    if f["entry_type"] != "manual_voucher":
        f["opt_out"] = False
    if f["entry_type"] != "reversal":
        f.update(reverses_type="none", reverses_sent=False, reverses_corrected=False)
    elif f["reverses_type"] == "none":
        f["reverses_type"] = "payment"
    if f["settled_before_service"] and f["match_shape"] == "none":
        f["match_shape"] = "one_to_one"
    if inv and f["match_shape"] == "no_invoice":
        f["match_shape"] = "one_to_one"
    if inv or f["match_shape"] in ("none", "no_invoice"):
        f.update(invoice_decision="none", split_with_excluded=False)
    if f["split_with_excluded"] and f["invoice_decision"] not in ("transfer", "hold", "wait"):
        f["split_with_excluded"] = False
    if f["changed_after_sent"]:
        f["sent"] = True
    box = {k: frozenset({v}) for k, v in f.items() if FIELDS[k].kind in ("enum", "bool")}
    assert not lint_mod._impossible(box), f
    return f


@settings(PROPS, max_examples=150, suppress_health_check=list(HealthCheck))
@given(doc=rule_files(), sample=st.lists(facts, min_size=1, max_size=12))
def test_what_lint_says_can_never_decide_never_decides(doc: dict, sample: list[dict]) -> None:
    """Soundness of the union and across-fields checks: on facts an entry can be, a rule lint
    says can never fire never matches, and one that can never decide never decides."""
    rf = compile_doc(doc)
    problems = lint_mod.coverage_problems(rf)
    problems += lint_mod.more_problems(rf, {p.line for p in problems})
    never_fire = {p.line for p in problems if "can never fire" in p.message}
    never_decide = {p.line for p in problems if "can never decide" in p.message}
    for fact in sample:
        fact = consistent(fact)
        out = reference(rf, fact)
        for rule in rf.rules:
            if rule.line in never_fire:
                assert not matches(rule, fact), (rule, fact)
            if rule.line in never_decide:
                assert out.rule_id != rule.id, (rule, fact)


def test_the_entry_types_of_the_ledger_are_what_lint_knows() -> None:
    assert set(lint_mod._NOT_INVOICE) | {"invoice"} == set(ENTRY_TYPES)


# --- 5. the decision history ------------------------------------------------------------------------
def history(site: Path) -> list[tuple]:
    with Site.open(site).db.connect() as conn:
        return [(r.entry_id, r.from_decision, r.to_decision, r.rule_id) for r in
                conn.execute(select(s.decision_history).order_by(s.decision_history.c.seq))]


def test_history_journals_only_changes_at_export(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    lowell = small_ledger(site)           # the first export noted decisions, journaled none
    assert history(site) == []
    lowell.accept(site, export(site))     # I3, I4 go: first decisions are not changes
    assert history(site) == []
    rules_of(site).write_text(rules_of(site).read_text().replace(INVOICE, KEY + INVOICE, 1), encoding="utf-8")
    import_records(site, [invoice("I5", "C2", "1.00", status="draft")])
    export(site)
    assert sorted(history(site)) == [("I1", "transfer", "exclude", "key-accounts-in-house"),
                                     ("I3", "transfer", "exclude", "key-accounts-in-house"),
                                     ("P1", "transfer", "exclude", "linked-to-excluded")]
    with Site.open(site).db.connect() as conn:
        kept = dict(conn.execute(select(s.entries.c.id, s.entries.c.decision)).all())
    # transfer with Lowell having it is implied (NULL); other decisions are kept
    assert kept == {"I1": "exclude", "I2": None, "I3": "exclude", "I4": None, "P1": "exclude", "I5": "wait"}
    export(site)                          # nothing changed: nothing journaled
    assert len(history(site)) == 3
    # explain --history
    out = json.loads(cli(site, "explain", "I1", "--json", "--history").output)
    (h,) = out["decision_history"]
    assert (h["from"], h["to"], h["rule"]) == ("transfer", "exclude", "key-accounts-in-house")
    assert h["file"].startswith("LT_123456_") and len(h["rules_digest"]) == 16
    assert h["date"] == datetime.now(Site.open(site).config.tz).date().isoformat()
    text = wide(site, "explain", "I1", "--history")
    assert "Decision history (changes only)" in text and "transfer │ exclude" in text
    assert "No decision changes journaled" in flat(cli(site, "explain", "I2", "--history").output)
    # status: the rule file in force, since when, and how many entries it decided differently
    st_ = json.loads(cli(site, "status", "--json").output)["rules"]
    assert st_["digest"] == h["rules_digest"] == st_["exported"]["digest"]
    assert st_["exported"]["decided_differently"] == 3 and st_["exported"]["previous"] not in (None, st_["digest"])
    assert st_["changed_since_export"] is False
    assert "3 entries decided differently" in wide(site, "status")
    # the file changes again: status says the next export uses it
    rules_of(site).write_text(rules_of(site).read_text().replace(KEY, "", 1), encoding="utf-8")
    st_ = json.loads(cli(site, "status", "--json").output)["rules"]
    assert st_["changed_since_export"] is True and st_["digest"] != st_["exported"]["digest"]
    assert "the file changed since" in wide(site, "status")


def test_history_of_a_match_settled_before_the_service_that_reopens(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    import_records(site, [customer("C1"), invoice("I1", "C1", "100.00"), payment("P1", "C1", "-100.00"),
                          match("M1", "I1", "P1"), invoice("I2", "C1", "5.00")])
    lowell = Lowell()
    lowell.accept(site, export(site, "--backlog"))          # M1 is history; I2 goes
    export(site)
    with Site.open(site).db.connect() as conn:                # all implied: nothing kept
        assert set(conn.execute(select(s.entries.c.decision)).scalars()) == {None}
    import_records(site, [entry("U1", "C1", "payout", "100.00"), match("M1", "I1", "P1", "U1")])
    f = export(site)
    assert set(f.entries) == {"I1", "P1", "U1"}
    # (U1 joined the match that was history: it is journaled from the match's exclude)
    assert sorted(history(site)) == [("I1", "exclude", "transfer", "invoice"), ("P1", "exclude", "transfer", "linked"),
                                     ("U1", "exclude", "transfer", "linked")]


def test_history_when_the_unmatched_half_is_decided_in_a_second_process(tmp_path: Path, monkeypatch) -> None:
    import reskontro.transfer.helpers as helpers
    monkeypatch.setattr(helpers, "PARALLEL_DECIDE_FROM", 1)
    site = make_site(tmp_path)
    import_records(site, [customer("C1"), customer("C2", tags=["key-account"]), invoice("I1", "C1", "5.00"),
                          invoice("I2", "C2", "6.00"), invoice("I3", "C2", "7.00", status="draft")])
    export(site)
    rules_of(site).write_text(rules_of(site).read_text().replace(DRAFTS, KEY + DRAFTS, 1), encoding="utf-8")
    export(site)
    assert sorted(history(site)) == [("I2", "transfer", "exclude", "key-accounts-in-house"),
                                     ("I3", "wait", "exclude", "key-accounts-in-house")]


def test_the_rules_digest_ignores_comments_and_layout(tmp_path: Path) -> None:
    from reskontro.rules.history import rules_digest
    site = make_site(tmp_path)
    a = lint_file(rules_of(site))[0]
    text = rules_of(site).read_text()
    p = tmp_path / "b.yaml"
    p.write_text("# a comment\n\n" + text.replace("# ---", "#  ---"), encoding="utf-8")
    assert rules_digest(lint_file(p)[0]) == rules_digest(a)
    assert "it goes the evening after" in text
    p.write_text(text.replace("it goes the evening after", "it goes the night after"), encoding="utf-8")
    assert rules_digest(lint_file(p)[0]) != rules_digest(a)


# --- 6. the README's worked example, as written ------------------------------------------------------
def _section() -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index("### Changing a rule safely")
    return text[start:text.index("\n## ", start)]


def _blocks(section: str) -> list[tuple[str, str]]:
    return re.findall(r"```(\w+)\n(.*?)```", section, re.S)


def _apply_rules(path: Path, block: str) -> None:
    """A README yaml block: its first line says where it goes."""
    head, body = block.split("\n", 1)
    text = path.read_text(encoding="utf-8")
    if head.endswith("added at the end"):
        path.write_text(text.rstrip("\n") + "\n\n" + body, encoding="utf-8")
        return
    rules = re.split(r"(?m)^(?=  - id: )", body)
    rules = [x.rstrip("\n") + "\n\n" for x in rules if x.strip()]
    if head.endswith("in place of the rules with the same ids"):
        for rule in rules:
            rid = re.match(r"  - id: (\S+)", rule).group(1)
            old = re.search(rf"(?ms)^  - id: {re.escape(rid)}\n.*?(?=^  - id: |^  # ---|\Z)", text)
            assert old, rid
            text = text[:old.start()] + rule + text[old.end():]
    else:
        m = re.search(r"new, just before the rule (\S+)$", head)
        assert m, head
        anchor = f"  - id: {m.group(1)}\n"
        assert anchor in text
        text = text.replace(anchor, "".join(rules) + anchor, 1)
    path.write_text(text, encoding="utf-8")


def test_the_worked_example_works_as_written(tmp_path: Path, monkeypatch) -> None:
    section = _section()
    blocks = _blocks(section)
    jsonl = [b for k, b in blocks if k == "jsonl"]
    yamls = [b for k, b in blocks if k == "yaml"]
    shells = [b for k, b in blocks if k == "sh"]
    assert len(jsonl) == 2 and len(yamls) == 3 and len(shells) == 2
    assert 'creditor.mode = "factoring"' in section
    site = make_site(tmp_path, mode="factoring")
    monkeypatch.chdir(site)
    for i, b in enumerate(jsonl):
        path = tmp_path / f"erp-{i}.jsonl"
        path.write_text(b, encoding="utf-8")
        cli(site, "import", str(path))
        if i == 0:
            assert set(export(site).entries) == {"F1", "F2", "F3"}      # "Lowell has F1, F2 and F3"
    outputs = {}

    def run(block: str) -> None:
        for line in block.strip().splitlines():
            for cmd in line.split(" && "):
                words = cmd.split()
                if words[0] in ("cp", "mv"):
                    (shutil.copy if words[0] == "cp" else shutil.move)(words[1], words[2])
                elif words[0] == "reskontro":
                    result = cli(site, *words[1:])
                    outputs[" ".join(words[1:3])] = result
                else:
                    assert words[0] == "git", cmd      # the site's own history: not in the test
    run(shells[0])
    for b in yamls:
        target = Path(b.split(":", 1)[0].lstrip("# "))
        _apply_rules(target, b)
    # what the diff says, before the commands run the text version
    d = diff_json(site, "rules/next.yaml")
    run(shells[1])
    assert flat(outputs["rules lint"].output) == "rules/next.yaml: ok"
    passed = re.search(r"`rules test` says `(\d+ passed, 0 failed)`", section).group(1)
    assert passed in outputs["rules test"].output
    n = int(re.search(r"decides the (\d+) invoices", section).group(1))
    changes = int(re.search(r"finds (\d+) changes", section).group(1))
    assert (d["entries"], d["changed"]) == (n, changes)
    table = re.findall(r"^\| (\w+) \| (\w+) \| (\d+) \| ([\d,.]+) NOK \|$", section, re.M)
    assert [(c["from"], c["to"], str(c["count"]), f"{float(c['amounts']['NOK']):,.2f}") for c in d["changes"]] == table
    by_id = {e["id"]: e for c in d["changes"] for e in c["entries"]}
    for eid, rules in (("F5", "invoice → invoice-over-a-million"), ("F4", "invoice →\nfactoring-in-house"),
                       ("F1", "invoice → in-house-after-sent")):
        assert f"{eid} " in section and rules in section
        old, new = rules.replace("\n", " ").split(" → ")
        assert (by_id[eid]["old_rule"], by_id[eid]["new_rule"]) == (old, new)
    assert [e["id"] for e in d["tell_lowell"]] == ["F1"]
    assert d["tell_lowell"][0]["note"].startswith("now held, but in flight on ")
    assert "now held, but in flight on <date> (file LT_…): tell Lowell" in section
    assert "F2" not in by_id
    assert "3 would change" in flat(outputs["rules diff"].output)
    cov = {r["rule"]: r for r in json.loads(cli(site, "rules", "coverage", "--json").output)["rules"]}
    assert cov["invoice-over-a-million"]["examples"] == 1 and cov["invoice-over-a-million"]["whole"] == 1
    assert cov["factoring-in-house"]["whole"] == 1 and cov["in-house-after-sent"]["whole"] == 1
    # installed: the next export uses it; status and explain --history say so
    f = export(site)
    assert set(f.entries) == set()                   # F4 excluded, F5 held
    st_ = json.loads(cli(site, "status", "--json").output)["rules"]
    assert st_["exported"]["decided_differently"] == 1 and not st_["changed_since_export"]
    h = json.loads(cli(site, "explain", "F1", "--json", "--history").output)["decision_history"]
    assert [(x["from"], x["to"], x["rule"]) for x in h] == [("transfer", "hold", "in-house-after-sent")]
