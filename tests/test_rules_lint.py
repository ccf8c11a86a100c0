"""`rules lint` on broken rule files: the exact line and the kind of each problem."""
from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from reskontro.cli import main
from reskontro.rules.facts import FIELDS
from reskontro.rules.lint import lint_file, lint_text
from reskontro.rules.rulefile import RuleFileError, load_rule_file
from reskontro.site import init_site

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "rules" / "transfer.yaml"

HEAD = "default: {decision: wait, reason: Nothing decided.}\nrules:\n"   # lines 1-2; rules start on line 3


def rule(rid: str, when: str, *extra: str, decision: str | None = "hold", reason: str | None = "Because.") -> str:
    """A rule in block style: `- id` on its first line, `when:` on the second, then the rest."""
    out = [f"  - id: {rid}", f"    when: {when}"]
    if decision is not None:
        out.append(f"    decision: {decision}")
    if reason is not None:
        out.append(f"    reason: {reason}")
    out += [f"    {x}" for x in extra]
    return "\n".join(out) + "\n"


def lint(tmp_path: Path, text: str) -> list[tuple[int, str]]:
    path = tmp_path / "transfer.yaml"
    path.write_text(text, encoding="utf-8")
    _, problems = lint_file(path)
    for p in problems:
        assert p.path == path
        assert str(p) == f"{path}:{p.line}: {p.message}"
    return [(p.line, p.message) for p in problems]


def line_of(text: str, needle: str, nth: int = 1) -> int:
    """1-based line of the nth line containing needle."""
    hits = [i for i, l in enumerate(text.splitlines(), 1) if needle in l]
    assert len(hits) >= nth, (needle, text)
    return hits[nth - 1]


def one(problems: list[tuple[int, str]]) -> tuple[int, str]:
    assert len(problems) == 1, problems
    return problems[0]


# --- structure ------------------------------------------------------------------------------
def test_yaml_syntax_error_names_its_line(tmp_path: Path) -> None:
    text = HEAD + "  - id: a\n    when: {entry_type: invoice}\n   decision: hold\n    reason: r\n"
    line, msg = one(lint(tmp_path, text))
    assert line == line_of(text, "   decision: hold") == 5
    # where (the column, the block it breaks), what, and what usually causes it
    assert msg.startswith("YAML error at column 4 (parsing a block collection that starts on line 3): "), msg
    assert "hint: this line is indented differently from the lines of its block" in msg


def test_yaml_error_in_an_unclosed_flow_mapping(tmp_path: Path) -> None:
    text = HEAD + "  - id: a\n    when: {entry_type: invoice\n    decision: hold\n    reason: r\n"
    line, msg = one(lint(tmp_path, text))
    # the parser notices at the next line, where the mapping should have been closed
    assert line == line_of(text, "decision: hold")
    assert msg.startswith("YAML error at column ") and "'}'" in msg and "hint: " in msg


def test_unknown_top_level_key(tmp_path: Path) -> None:
    text = HEAD + rule("a", "{entry_type: invoice}") + "priority: high\n"
    line, msg = one(lint(tmp_path, text))
    assert line == line_of(text, "priority: high")
    assert msg.startswith("unknown key 'priority'") and "default, rules" in msg


def test_unknown_rule_key(tmp_path: Path) -> None:
    text = HEAD + rule("a", "{entry_type: invoice}", "salience: 3")
    line, msg = one(lint(tmp_path, text))
    assert line == line_of(text, "salience: 3")
    assert msg.startswith("unknown key 'salience'")


def test_unknown_field(tmp_path: Path) -> None:
    text = HEAD + rule("a", "{entry_type: invoice}") + rule("b", "\n      entry_type: payment\n      colour: red")
    line, msg = one(lint(tmp_path, text))
    assert line == line_of(text, "colour: red")
    assert msg.startswith("unknown field 'colour'") and "entry_type" in msg


def test_unknown_enum_value(tmp_path: Path) -> None:
    text = HEAD + rule("a", "\n      status: invoiced\n      entry_type: invoce")
    line, msg = one(lint(tmp_path, text))
    assert line == line_of(text, "entry_type: invoce")
    assert msg.startswith("entry_type: 'invoce' is not a known value") and "credit_note" in msg


def test_unknown_enum_value_inside_a_list(tmp_path: Path) -> None:
    text = HEAD + rule("a", "\n      entry_type: [invoice, paymnt]")
    line, msg = one(lint(tmp_path, text))
    assert line == line_of(text, "paymnt")
    assert "'paymnt' is not a known value" in msg


def test_unknown_operator(tmp_path: Path) -> None:
    text = HEAD + rule("a", "\n      entry_type: invoice\n      amount:\n        gte: 5")
    line, msg = one(lint(tmp_path, text))
    assert line == line_of(text, "gte: 5")
    assert msg.startswith("amount: unknown operator 'gte'") and "ge" in msg


def test_unknown_decision(tmp_path: Path) -> None:
    text = HEAD + rule("a", "{entry_type: invoice}", decision="send")
    line, msg = one(lint(tmp_path, text))
    assert line == line_of(text, "decision: send")
    assert msg.startswith("a: unknown decision 'send'") and "transfer" in msg


def test_unknown_default_decision(tmp_path: Path) -> None:
    text = "rules:\n" + rule("a", "{entry_type: invoice}") + "default:\n  decision: later\n  reason: x\n"
    line, msg = one(lint(tmp_path, text))
    assert line == line_of(text, "decision: later")
    assert "default: decision 'later'" in msg


def test_duplicate_ids(tmp_path: Path) -> None:
    text = HEAD + rule("same", "{entry_type: invoice}") + rule("other", "{entry_type: payout}") \
        + rule("same", "{entry_type: payment}")
    line, msg = one(lint(tmp_path, text))
    assert line == line_of(text, "- id: same", 2)
    assert msg == f"duplicate id 'same' (first at line {line_of(text, '- id: same')})"


def test_duplicate_key_in_a_mapping(tmp_path: Path) -> None:
    text = HEAD + rule("a", "{entry_type: invoice}", "decision: wait")
    line, msg = one(lint(tmp_path, text))
    assert line == line_of(text, "    decision: wait") == 7
    assert "'decision' appears twice" in msg


def test_duplicate_field_in_a_condition(tmp_path: Path) -> None:
    text = HEAD + rule("a", "\n      entry_type: invoice\n      status: draft\n      entry_type: payment")
    line, msg = one(lint(tmp_path, text))
    assert line == line_of(text, "entry_type: payment")
    assert "'entry_type' appears twice" in msg


def test_missing_reason(tmp_path: Path) -> None:
    text = HEAD + rule("ok", "{entry_type: payout}") + rule("a", "{entry_type: invoice}", reason=None)
    line, msg = one(lint(tmp_path, text))
    assert line == line_of(text, "- id: a")
    assert msg.startswith("a: reason is required")


def test_both_decision_and_warning(tmp_path: Path) -> None:
    text = HEAD + rule("ok", "{entry_type: payout}") + rule("a", "{entry_type: invoice}", "warning: Look.")
    line, msg = one(lint(tmp_path, text))
    assert line == line_of(text, "- id: a")
    assert msg.startswith("a: has both decision and warning")


def test_neither_decision_nor_warning(tmp_path: Path) -> None:
    text = HEAD + rule("a", "{entry_type: invoice}", decision=None)
    line, msg = one(lint(tmp_path, text))
    assert line == line_of(text, "- id: a")
    assert msg.startswith("a: needs a decision")


def test_lt_on_a_bool_field(tmp_path: Path) -> None:
    text = HEAD + rule("a", "\n      entry_type: invoice\n      factoring: {lt: 1}")
    line, msg = one(lint(tmp_path, text))
    assert line == line_of(text, "factoring: {lt: 1}")
    assert msg == "factoring: lt compares numbers; factoring is bool"


def test_gt_on_an_enum_field(tmp_path: Path) -> None:
    text = HEAD + rule("a", "\n      status: {gt: draft}")
    line, msg = one(lint(tmp_path, text))
    assert line == line_of(text, "status: {gt: draft}")
    assert msg == "status: gt compares numbers; status is enum"


def test_too_many_decimals_for_the_field(tmp_path: Path) -> None:
    text = HEAD + rule("a", "\n      amount: {gt: 10.005}")
    line, msg = one(lint(tmp_path, text))
    assert line == line_of(text, "10.005")
    assert "at most two decimals" in msg


# --- rules that can never fire, rules that can never decide ---------------------------------
def test_rule_that_can_never_fire(tmp_path: Path) -> None:
    text = HEAD + rule("ok", "{entry_type: payout}") + rule("never", "\n      amount: {gt: 10, lt: 5}")
    line, msg = one(lint(tmp_path, text))
    assert line == line_of(text, "- id: never")
    assert msg == "never: can never fire: no entry meets all its conditions"


@pytest.mark.parametrize("when", [
    "{entry_type: invoice, status: {in: [draft], not: draft}}",
    "{amount: {ge: 5, le: 5, not: 5}}",
    "{dunning_level: {in: [1, 2], gt: 2}}",
    "{factoring: true, any: [{factoring: false}, {factoring: false, opt_out: true}]}",
    "{mode: factoring, any: [{mode: full_ledger}]}",
])
def test_other_impossible_conditions(tmp_path: Path, when: str) -> None:
    text = HEAD + rule("a", when)
    line, msg = one(lint(tmp_path, text))
    assert line == line_of(text, "- id: a")
    assert "can never fire" in msg


@pytest.mark.parametrize("when", [
    "{amount: {gt: 10, lt: 10.02}}",                  # exactly 10.01 kroner
    "{amount: {ge: 5, le: 5}}",
    "{dunning_level: {in: [1, 2], gt: 1}}",
    "{factoring: true, any: [{factoring: false}, {opt_out: true}]}",
])
def test_narrow_but_possible_conditions_are_not_reported(tmp_path: Path, when: str) -> None:
    assert lint(tmp_path, HEAD + rule("a", when)) == []


def test_rule_shadowed_by_an_earlier_broader_rule(tmp_path: Path) -> None:
    text = HEAD + rule("any-invoice", "{entry_type: invoice}", decision="transfer") \
        + rule("invoiced-invoice", "{entry_type: invoice, status: invoiced}")
    line, msg = one(lint(tmp_path, text))
    assert line == line_of(text, "- id: invoiced-invoice")          # the LATER rule
    assert msg == ("invoiced-invoice: can never decide: rule 'any-invoice' "
                   f"(line {line_of(text, '- id: any-invoice')}) comes first and catches every entry this rule catches")


def test_rule_not_shadowed_when_the_earlier_is_narrower(tmp_path: Path) -> None:
    text = HEAD + rule("invoiced-invoice", "{entry_type: invoice, status: invoiced}") \
        + rule("any-invoice", "{entry_type: invoice}", decision="transfer")
    assert lint(tmp_path, text) == []


@pytest.mark.parametrize("earlier, later, shadowed", [
    ("{amount: {gt: 100}}", "{amount: {gt: 200}}", True),
    ("{amount: {gt: 200}}", "{amount: {gt: 100}}", False),
    ("{amount: {not: 150}}", "{amount: {gt: 200}}", True),
    ("{amount: {not: 150}}", "{amount: {gt: 100}}", False),
    ("{status: {not: draft}}", "{status: invoiced, entry_type: invoice}", True),
    ("{status: {not_in: [draft, none]}}", "{status: [invoiced, draft]}", False),
    ("{entry_type: [invoice, payment]}", "{entry_type: payment}", True),
    ("{entry_type: [invoice, payment]}", "{entry_type: [payment, payout]}", False),
    ("{entry_type: invoice, mode: factoring}", "{entry_type: invoice}", False),
])
def test_shadowing_by_values_and_intervals(tmp_path: Path, earlier: str, later: str, shadowed: bool) -> None:
    text = HEAD + rule("first", earlier) + rule("second", later, decision="transfer")
    problems = lint(tmp_path, text)
    if shadowed:
        line, msg = one(problems)
        assert line == line_of(text, "- id: second") and "rule 'first'" in msg and "can never decide" in msg
    else:
        assert problems == []


def test_a_warning_never_shadows_and_is_never_shadowed(tmp_path: Path) -> None:
    text = HEAD + rule("look", "{entry_type: invoice}", "warning: Have a look.", decision=None, reason=None) \
        + rule("invoiced", "{entry_type: invoice, status: invoiced}") \
        + rule("look-again", "{entry_type: invoice, status: invoiced}", "warning: Again.", decision=None, reason=None)
    assert lint(tmp_path, text) == []


def test_any_alternatives_shadowed_only_when_every_alternative_is_covered(tmp_path: Path) -> None:
    broad = rule("payments-and-credits", "{any: [{entry_type: payment}, {entry_type: credit_note}]}")
    covered = rule("payment-or-credit-waiting",
                   "{invoice_decision: wait, any: [{entry_type: payment}, {entry_type: credit_note}]}",
                   decision="wait")
    text = HEAD + broad + covered
    line, msg = one(lint(tmp_path, text))
    assert line == line_of(text, "- id: payment-or-credit-waiting")
    assert "rule 'payments-and-credits'" in msg

    partly = rule("payment-or-payout", "{any: [{entry_type: payment}, {entry_type: payout}]}", decision="wait")
    assert lint(tmp_path, HEAD + broad + partly) == []


def test_an_earlier_rule_with_alternatives_shadows_a_later_plain_rule(tmp_path: Path) -> None:
    text = HEAD + rule("either", "{any: [{entry_type: invoice}, {status: draft}]}") \
        + rule("draft-payout", "{entry_type: payout, status: draft}", decision="wait")
    line, msg = one(lint(tmp_path, text))
    assert line == line_of(text, "- id: draft-payout") and "rule 'either'" in msg


def test_an_impossible_alternative_is_ignored_when_another_is_possible(tmp_path: Path) -> None:
    text = HEAD + rule("a", "{entry_type: invoice, any: [{entry_type: payment}, {status: draft}]}")
    assert lint(tmp_path, text) == []


def test_nested_any_is_refused(tmp_path: Path) -> None:
    text = HEAD + rule("a", "\n      any:\n        - entry_type: invoice\n          any: [{status: draft}]")
    line, msg = one(lint(tmp_path, text))
    assert line == line_of(text, "- entry_type: invoice")
    assert "no nested any" in msg


def test_every_problem_is_reported_not_only_the_first(tmp_path: Path) -> None:
    text = HEAD + rule("a", "{entry_typ: invoice}") + rule("b", "{status: drafted}", decision="maybe")
    problems = lint(tmp_path, text)
    lines = sorted(l for l, _ in problems)
    assert lines == [line_of(text, "entry_typ"), line_of(text, "drafted"), line_of(text, "decision: maybe")]


def test_load_rule_file_refuses_a_broken_file(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(HEAD + rule("a", "{entry_typ: invoice}"), encoding="utf-8")
    with pytest.raises(RuleFileError) as info:
        load_rule_file(path)
    assert [p.line for p in info.value.problems] == [4]


# --- the real rule file ---------------------------------------------------------------------
def test_the_real_rule_file_lints_clean() -> None:
    rf, problems = lint_file(RULES)
    assert problems == [], "\n".join(map(str, problems))
    assert rf is not None and len(rf.rules) >= 20
    # every rule's line is the line of its `- id:` in the file
    text = RULES.read_text(encoding="utf-8")
    for r in rf.rules:
        assert text.splitlines()[r.line - 1].strip() == f"- id: {r.id}"


def test_lint_text_agrees_with_lint_file() -> None:
    rf, problems = lint_text(RULES.read_text(encoding="utf-8"), RULES)
    assert problems == [] and rf is not None


# --- the CLI ----------------------------------------------------------------------------------
@pytest.fixture
def site(tmp_path: Path) -> Path:
    target = tmp_path / "site"
    init_site(target)
    return target


def test_cli_lint_passes_on_the_site_rules(site: Path) -> None:
    result = CliRunner().invoke(main, ["--site", str(site), "rules", "lint"])
    assert result.exit_code == 0, result.output
    assert f"{site / 'rules' / 'transfer.yaml'}: ok" in result.stdout.replace("\n", "")
    assert result.stderr == ""


def test_cli_lint_fails_on_a_broken_file_with_path_line_message(site: Path, tmp_path: Path) -> None:
    bad = tmp_path / "broken.yaml"
    text = HEAD + rule("any-invoice", "{entry_type: invoice}", decision="transfer") \
        + rule("invoiced-invoice", "{entry_type: invoice, status: invoiced}") + rule("c", "{colour: red}")
    bad.write_text(text, encoding="utf-8")
    result = CliRunner().invoke(main, ["--site", str(site), "rules", "lint", str(bad)])
    assert result.exit_code == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"{bad}:{line_of(text, 'colour: red')}: unknown field 'colour' (known: entry_type, ")
    assert lines[0].endswith(f"(known: {', '.join(FIELDS)})")      # every field, in `rules fields` order
    assert "ok" not in result.stdout


def test_cli_lint_reports_shadowing_on_the_later_line(site: Path, tmp_path: Path) -> None:
    bad = tmp_path / "shadow.yaml"
    text = HEAD + rule("any-invoice", "{entry_type: invoice}", decision="transfer") \
        + rule("invoiced-invoice", "{entry_type: invoice, status: invoiced}")
    bad.write_text(text, encoding="utf-8")
    result = CliRunner().invoke(main, ["--site", str(site), "rules", "lint", str(bad)])
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        f"{bad}:{line_of(text, '- id: invoiced-invoice')}: invoiced-invoice: can never decide: rule "
        f"'any-invoice' (line {line_of(text, '- id: any-invoice')}) comes first and catches every entry this rule catches"]


def test_cli_lint_good_and_bad_together_exits_1(site: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(HEAD + rule("a", "{entry_type: invoice}", decision="send"), encoding="utf-8")
    good = site / "rules" / "transfer.yaml"
    result = CliRunner().invoke(main, ["--site", str(site), "rules", "lint", str(good), str(bad)])
    assert result.exit_code == 1
    assert f"{good}: ok" in result.stdout.replace("\n", "")
    assert result.stderr.startswith(f"{bad}:5: a: unknown decision 'send'")


# --- rules the engine cannot take -------------------------------------------------------------
def _too_complex() -> str:
    """16 alternatives: durable_rules 2.0.28 refuses this rule (ERR_EXPRESSION_LIMIT_EXCEEDED, 113)."""
    alts = ", ".join(f"{{amount: {{gt: {i}}}, kid: valid}}" for i in range(16))
    return HEAD + rule("many-alternatives", f"{{any: [{alts}]}}")


def test_the_engine_refuses_a_rule_with_too_many_alternatives(tmp_path: Path) -> None:
    import durable_rules_engine

    from reskontro.rules.engine import RuleEngine

    path = tmp_path / "transfer.yaml"
    path.write_text(_too_complex(), encoding="utf-8")
    with pytest.raises(durable_rules_engine.error, match="error code: 113"):
        RuleEngine(load_rule_file(path))


def test_lint_reports_a_rule_the_engine_cannot_compile(tmp_path: Path) -> None:
    text = _too_complex()
    line, msg = one(lint(tmp_path, text))
    assert line == line_of(text, "- id: many-alternatives")
    assert "refuses this rule" in msg


def test_cli_plan_refuses_such_a_rule_without_a_traceback(site: Path) -> None:
    (site / "rules" / "transfer.yaml").write_text(_too_complex(), encoding="utf-8")
    result = CliRunner().invoke(main, ["--site", str(site), "plan"])
    assert result.exit_code == 2                     # the site's configuration: a rule file that does not load
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)


# --- amounts in rule files: the one amount reader, on the text as written --------------------------
@pytest.mark.parametrize("written, phrase", [
    ("1_000", "thousands separator"),      # YAML reads 1_000 as 1000: refused as the import refuses it
    ("'1,500'", "ambiguous"), ("12.500", "ambiguous"), ("1.0e+3", "exponent"), (".inf", "not a number"),
    ("0x10", "'x'"), ("1000000000", "larger than"),
])
def test_an_amount_threshold_is_read_like_every_amount(tmp_path: Path, written: str, phrase: str) -> None:
    text = HEAD + rule("a", f"\n      amount: {{gt: {written}}}")
    line, msg = one(lint(tmp_path, text))
    assert line == line_of(text, written)
    assert msg.startswith("amount: ") and phrase in msg, msg


@pytest.mark.parametrize("written, ore", [("1000", 100000), ("1500.5", 150050), ("'1500,50'", 150050),
                                          ("-0.01", -1), ("+7", 700)])
def test_an_amount_threshold_in_kroner_becomes_ore(tmp_path: Path, written: str, ore: int) -> None:
    path = tmp_path / "transfer.yaml"
    path.write_text(HEAD + rule("a", f"{{amount: {{gt: {written}}}}}"), encoding="utf-8")
    [r] = load_rule_file(path).rules
    [test] = r.when
    assert (test.field, test.value, type(test.value)) == ("amount", ore, int)


def test_a_whole_number_field_refuses_other_digits_and_infinity(tmp_path: Path) -> None:
    for written in ("'²'", ".inf", "2.5"):
        text = HEAD + rule("a", f"\n      dunning_level: {{gt: {written}}}")
        line, msg = one(lint(tmp_path, text))
        assert msg.startswith("dunning_level: ") and "whole number" in msg, msg
