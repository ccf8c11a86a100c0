"""Every rule of rules/transfer.yaml by example: the examples pass, and each rule has one.

A new deciding rule or warning without an example that exercises it fails this suite.
"""
from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from reskontro.cli import main
from reskontro.rules.engine import RuleEngine
from reskontro.rules.facts import DEFAULT_FACT, FIELDS, example_value
from reskontro.rules.lint import examples_path, run_examples
from reskontro.rules.rulefile import load_rule_file
from reskontro.site import init_site

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "rules" / "transfer.yaml"
EXAMPLES = ROOT / "rules" / "transfer.examples.yaml"


def _examples() -> list[dict]:
    doc = yaml.safe_load(EXAMPLES.read_text(encoding="utf-8"))
    assert isinstance(doc, list) and doc, "the examples file is a non-empty list"
    return doc


def _fact(facts: dict) -> dict:
    """The fact an example describes: the healthy default invoice, changed as listed (kroner → øre)."""
    fact = dict(DEFAULT_FACT)
    for k, v in facts.items():
        assert k in FIELDS, f"example uses unknown field {k!r}"
        spec = FIELDS[k]
        if spec.kind == "number":
            assert isinstance(v, (int, float)) and not isinstance(v, bool)
            v = int(Decimal(str(v)) * spec.scale)
        elif spec.kind in ("date", "words", "text"):
            v = example_value(spec, v)        # YYYY-MM-DD as its ordinal; tags as sorted words
        fact[k] = v
    return fact


def test_the_examples_file_sits_beside_the_rules() -> None:
    assert examples_path(RULES) == EXAMPLES
    assert EXAMPLES.is_file()


def test_every_example_passes() -> None:
    rf = load_rule_file(RULES)
    results = run_examples(rf, EXAMPLES)
    assert len(results) == len(_examples())
    failed = [f"{EXAMPLES.name}:{r.line}: {r.name}: {r.message}" for r in results if not r.ok]
    assert not failed, "\n".join(failed)
    # Every example names what it expects; a passing example's message names the deciding rule.
    for r, ex in zip(results, _examples()):
        assert r.name == ex["name"]
        assert r.message.startswith(f"{ex['expect']['decision']} by "), (r.name, r.message)
        if "rule" in ex["expect"]:
            assert r.message == f"{ex['expect']['decision']} by {ex['expect']['rule']}"


def test_every_rule_and_every_warning_is_exercised_by_an_example() -> None:
    rf = load_rule_file(RULES)
    engine = RuleEngine(rf)
    decided: set[str] = set()
    warned: set[str] = set()
    for ex in _examples():
        out = engine.decide_uncached(_fact(ex.get("facts") or {}))
        # the example's own expectations hold (independent of run_examples' bookkeeping)
        assert out.decision == ex["expect"]["decision"], ex["name"]
        if "rule" in ex["expect"]:
            assert out.rule_id == ex["expect"]["rule"], ex["name"]
        if "warnings" in ex["expect"]:
            assert sorted(w for w, _ in out.warnings) == sorted(ex["expect"]["warnings"] or []), ex["name"]
        decided.add(out.rule_id)
        warned.update(w for w, _ in out.warnings)
    deciding = {r.id for r in rf.deciding}
    warnings = {r.id for r in rf.warnings}
    assert deciding and warnings
    assert not deciding - decided, f"deciding rules without an example: {sorted(deciding - decided)}"
    assert not warnings - warned, f"warnings without an example: {sorted(warnings - warned)}"
    assert "default" in decided, "no example shows the file's default decision"


def test_a_rule_without_example_is_noticed(tmp_path: Path) -> None:
    """The coverage check above can fail: a rule added to a copy of the file has no example."""
    text = RULES.read_text(encoding="utf-8")
    extra = ("\n  - id: brand-new-rule\n    when: {entry_type: payout, amount: {gt: 1000000}}\n"
             "    decision: hold\n    reason: Big payouts need a second look.\n")
    text = text.rstrip() + "\n" + extra             # `rules:` is the file's last key
    path = tmp_path / "transfer.yaml"
    path.write_text(text, encoding="utf-8")
    rf = load_rule_file(path)
    engine = RuleEngine(rf)
    decided = {engine.decide_uncached(_fact(ex.get("facts") or {})).rule_id for ex in _examples()}
    assert "brand-new-rule" in {r.id for r in rf.deciding} - decided


# --- the CLI ------------------------------------------------------------------------------
@pytest.fixture
def site(tmp_path: Path) -> Path:
    target = tmp_path / "site"
    init_site(target)
    return target


def test_cli_rules_test_passes_on_a_fresh_site(site: Path) -> None:
    assert (site / "rules" / "transfer.examples.yaml").read_bytes() == EXAMPLES.read_bytes()
    result = CliRunner().invoke(main, ["--site", str(site), "rules", "test"])
    assert result.exit_code == 0, result.output
    assert f"{len(_examples())} passed, 0 failed" in result.stdout


def test_cli_rules_test_fails_on_a_wrong_expectation(site: Path) -> None:
    path = site / "rules" / "transfer.examples.yaml"
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    name = "a draft waits until invoiced"
    start = next(i for i, l in enumerate(lines) if l.strip() == f"- name: {name}")
    expect = next(i for i in range(start, len(lines)) if "expect:" in lines[i])
    assert "decision: wait" in lines[expect]
    lines[expect] = lines[expect].replace("decision: wait", "decision: transfer")
    path.write_text("".join(lines), encoding="utf-8")

    result = CliRunner().invoke(main, ["--site", str(site), "rules", "test"])
    assert result.exit_code == 1
    n = len(_examples())
    assert f"{n - 1} passed, 1 failed" in result.stdout
    # file:line of the example (1-based line of its `- name:`), its name and what went wrong
    fail_lines = [l for l in result.stderr.splitlines() if "FAIL" in l]
    assert len(fail_lines) == 1, result.stderr
    assert fail_lines[0].startswith(f"{path}:{start + 1}: FAIL {name}: "), result.stderr
    assert re.search(r"decision wait \(rule invoice-not-invoiced\), expected transfer", fail_lines[0])


def test_cli_rules_test_reports_an_unknown_fact_field(site: Path) -> None:
    path = site / "rules" / "transfer.examples.yaml"
    path.write_text(path.read_text(encoding="utf-8")
                    + "\n- name: typo in a field\n  facts: {entry_typ: payment}\n  expect: {decision: wait}\n",
                    encoding="utf-8")
    line = len(path.read_text(encoding="utf-8").splitlines()) - 2
    result = CliRunner().invoke(main, ["--site", str(site), "rules", "test"])
    assert result.exit_code == 1
    assert f"{path}:{line}: FAIL typo in a field: unknown field 'entry_typ'" in result.stderr


def test_an_examples_file_with_a_character_yaml_does_not_take_fails_on_its_line(tmp_path: Path) -> None:
    path = tmp_path / "transfer.examples.yaml"
    path.write_text("- name: ok\n  facts: {}\n  expect: {decision: transfer}\n"
                    "- name: bell\x07\n  facts: {}\n", encoding="utf-8")
    [result] = run_examples(load_rule_file(RULES), path)
    assert (result.ok, result.line) == (False, 4) and "YAML error" in result.message
