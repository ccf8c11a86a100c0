"""`rules lint` on broken rule files: the exact line and the kind of each problem."""
from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from reskontro.cli import main
from reskontro.rules.facts import DEFAULT_FACT, FIELDS
from reskontro.rules.lint import lint_file, lint_text
from reskontro.rules.rulefile import RuleFileError, load_rule_file, parse_rule_text
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
def _alternatives(n: int) -> str:
    """n alternatives of two tests each: 2 + 2 + 2n and/or markers in durable_rules' expression
    sequence for the rule, which holds 31 (MAX_SEQUENCE_EXPRESSIONS 32, error 113)."""
    alts = ", ".join(f"{{amount: {{gt: {i}}}, kid: valid}}" for i in range(n))
    return HEAD + rule("many-alternatives", f"{{any: [{alts}]}}")


def _too_complex() -> str:
    return _alternatives(16)


@pytest.mark.parametrize("n, refused", [(13, False), (14, True), (16, True)])
def test_the_engine_counts_durable_rules_expression_limit_exactly(tmp_path: Path, n: int, refused: bool) -> None:
    """The engine refuses exactly what durable_rules would: its own answer on the same JSON."""
    import copy

    import durable_rules_engine

    from reskontro.rules.engine import RuleEngine, _Host, _rule_json

    path = tmp_path / "transfer.yaml"
    path.write_text(_alternatives(n), encoding="utf-8")
    rf = load_rule_file(path)
    raw = {"r1": {"pri": 1, "all": [{"m": _rule_json(rf.rules[0])}], "run": "r1"}}
    if refused:
        with pytest.raises(durable_rules_engine.error, match="error code: 113"):
            _Host({"r1": lambda c: None}, {"raw": copy.deepcopy(raw)})
        with pytest.raises(RuleFileError) as info:
            RuleEngine(rf)
        (problem,) = info.value.problems
        assert (problem.path, problem.line) == (path, 3)
        assert "many-alternatives: too complex for the rules engine" in problem.message
    else:
        _Host({"r1": lambda c: None}, {"raw": copy.deepcopy(raw)})
        assert RuleEngine(rf).decide_uncached(dict(DEFAULT_FACT, amount=100)).warnings == ()


def test_lint_reports_a_rule_the_engine_cannot_compile(tmp_path: Path) -> None:
    text = _too_complex()
    line, msg = one(lint(tmp_path, text))
    assert line == line_of(text, "- id: many-alternatives")
    assert "too complex for the rules engine" in msg and "split it" in msg


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
# --- long and hostile rule files: refused or handled, never a hang -----------------------------
def _many(n: int, when=lambda i: f"{{dunning_level: {i}}}", *extra: str, **kw) -> str:
    return HEAD + "".join(rule(f"r{i}", when(i), *extra, **kw) for i in range(n))


def test_600_rules_whose_first_tests_differ_lint_and_decide(tmp_path: Path) -> None:
    """durable_rules keeps a test node's children in a 512-slot hash set and probes it without
    a stop: 513 rules whose first tests differ made create_ruleset loop forever. The engine
    now spreads them over rulesets within durable_rules' limits."""
    from reskontro.rules.engine import _RULES_PER_SET, _STACK, RuleEngine

    text = _many(600)
    assert lint(tmp_path, text) == []
    rf = load_rule_file(tmp_path / "transfer.yaml")
    engine = RuleEngine(rf)
    assert len(engine.definition) >= 600 // _RULES_PER_SET
    assert all(len(rules) <= _RULES_PER_SET for rules in engine.definition.values())
    assert [r for rules in engine.definition.values() for r in rules] == [f"r{i}" for i in range(1, 601)]
    for level in (0, 511, 512, 513, 599):
        out = engine.decide_uncached(dict(DEFAULT_FACT, dunning_level=level))
        assert (out.decision, out.rule_id) == ("hold", f"r{level}")
    assert engine.decide_uncached(dict(DEFAULT_FACT, dunning_level=600)).rule_id == "default"
    assert _STACK == 64


def test_a_fact_passing_more_than_64_tests_at_once(tmp_path: Path) -> None:
    """durable_rules holds the tests still to visit on a 64-slot stack: one ruleset of these
    100 warnings fails on a fact they all match (error 303); the engine's rulesets do not."""
    import copy

    import durable_rules_engine

    from reskontro.rules.engine import RuleEngine, _Host, _rule_json

    (tmp_path / "transfer.yaml").write_text(
        _many(100, lambda i: f"{{amount: {{gt: {i}}}}}", "warning: Large.", decision=None, reason=None))
    rf = load_rule_file(tmp_path / "transfer.yaml")
    fact = dict(DEFAULT_FACT, amount=10_000_00, _n=1, t="entry")
    one_set = {f"r{i}": {"pri": i, "all": [{"m": _rule_json(r)}], "run": "a"} for i, r in enumerate(rf.rules, 1)}
    host = _Host({"a": lambda c: None}, {"one": copy.deepcopy(one_set)})
    with pytest.raises(durable_rules_engine.error, match="error code: 303"):
        host.assert_fact("one", {k: fact[k] for k in ("t", "_n", "amount")})
    out = RuleEngine(rf).decide_uncached(fact)
    assert [w for w, _ in out.warnings] == [f"r{i}" for i in range(100)]


@pytest.mark.parametrize("rules", [32, 33])
def test_the_stack_count_is_exact_for_alternatives(tmp_path: Path, rules: int) -> None:
    """Each rule of two alternatives that both hold puts 2 tests on durable_rules' stack at
    once: 32 such rules are one ruleset (64), 33 are two; in one ruleset 33 fail (error 303)."""
    import copy

    import durable_rules_engine

    from reskontro.rules.engine import RuleEngine, _Host

    text = _many(rules, lambda i: f"{{any: [{{amount: {{gt: {i}}}}}, {{dunning_level: {{lt: {100 + i}}}}}]}}",
                 "warning: Both.", decision=None, reason=None)
    (tmp_path / "transfer.yaml").write_text(text, encoding="utf-8")
    engine = RuleEngine(load_rule_file(tmp_path / "transfer.yaml"))
    assert len(engine.definition) == (1 if rules == 32 else 2)
    fact = dict(DEFAULT_FACT, amount=10_000_00, dunning_level=0)
    assert len(engine.decide_uncached(fact).warnings) == rules
    together = {name: rule for rs in engine.definition.values() for name, rule in rs.items()}
    host = _Host({f"r{i}": (lambda c: None) for i in range(1, rules + 1)}, {"one": copy.deepcopy(together)})
    asserted = {"t": "entry", "_n": 1, "amount": fact["amount"], "dunning_level": 0}
    if rules == 32:
        host.assert_fact("one", asserted)
    else:
        with pytest.raises(durable_rules_engine.error, match="error code: 303"):
            host.assert_fact("one", asserted)


@pytest.mark.parametrize("values, problem", [
    (64, None),
    (65, "dunning_level: in has 65 values; at most 64 in one list (split the rule in several)"),
    (100_000, "dunning_level: in has 100000 values; at most 64 in one list"),
])
def test_long_in_lists(tmp_path: Path, values: int, problem: str | None) -> None:
    from reskontro.rules.engine import RuleEngine

    text = HEAD + rule("a", f"{{dunning_level: {{in: [{', '.join(map(str, range(values)))}]}}}}")
    problems = lint(tmp_path, text)
    if problem is None:
        assert problems == []
        engine = RuleEngine(load_rule_file(tmp_path / "transfer.yaml"))
        assert engine.decide_uncached(dict(DEFAULT_FACT, dunning_level=63)).rule_id == "a"
        assert engine.decide_uncached(dict(DEFAULT_FACT, dunning_level=64)).rule_id == "default"
        return
    line, msg = one(problems)
    assert line == line_of(text, "when:")
    assert msg.startswith(problem)


def test_alternatives_with_long_in_lists_are_too_complex(tmp_path: Path) -> None:
    """3 alternatives of 64 values: 195 links into $or joins, durable_rules holds 127 per node."""
    values = ", ".join(map(str, range(64)))
    alts = ", ".join(f"{{dunning_level: {{in: [{values}]}}, kid: {k}}}" for k in ("valid", "absent", "invalid"))
    text = HEAD + rule("ok", "{entry_type: payout}") + rule("wide", f"{{any: [{alts}]}}")
    line, msg = one(lint(tmp_path, text))
    assert line == line_of(text, "- id: wide")
    assert msg == ("wide: too complex for the rules engine: its any alternatives and in lists make 199 tests and "
                   "195 joins, durable_rules takes at most 511 and 127; split it into several rules")
    from reskontro.rules.engine import RuleEngine

    rf, _ = parse_rule_text(text, tmp_path / "transfer.yaml")   # (load_rule_file would refuse it)
    with pytest.raises(RuleFileError, match="wide: too complex"):
        RuleEngine(rf)


def test_a_long_not_in_list_is_a_chain_and_fits(tmp_path: Path) -> None:
    from reskontro.rules.engine import RuleEngine

    text = HEAD + rule("a", f"{{dunning_level: {{not_in: [{', '.join(map(str, range(64)))}]}}}}")
    assert lint(tmp_path, text) == []
    engine = RuleEngine(load_rule_file(tmp_path / "transfer.yaml"))
    assert engine.decide_uncached(dict(DEFAULT_FACT, dunning_level=63)).rule_id == "default"
    assert engine.decide_uncached(dict(DEFAULT_FACT, dunning_level=64)).rule_id == "a"


def test_too_many_alternatives_are_refused_before_anything_else(tmp_path: Path) -> None:
    alts = ", ".join(f"{{dunning_level: {i}}}" for i in range(33))
    text = HEAD + rule("a", f"{{any: [{alts}]}}")
    line, msg = one(lint(tmp_path, text))
    assert line == line_of(text, "when:")
    assert msg == "any: 33 alternatives; at most 32 in one rule (split the rule in several)"


def test_too_many_rules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import reskontro.rules.rulefile as rulefile

    monkeypatch.setattr(rulefile, "MAX_RULES", 10)
    assert lint(tmp_path, _many(10)) == []
    line, msg = one(lint(tmp_path, _many(11)))
    assert line == 2
    assert msg == "rules: 11 rules; a rule file may hold at most 10 (lint compares every rule with the rules before it)"


def test_a_file_over_the_size_limit_is_not_parsed(tmp_path: Path) -> None:
    import reskontro.rules.rulefile as rulefile

    path = tmp_path / "transfer.yaml"
    with path.open("w", encoding="utf-8") as f:          # 100 MB: one comment line
        f.write(_many(1))
        f.truncate(100 * 1024 * 1024)
    for problems in (lint_file(path)[1], pytest.raises(RuleFileError, load_rule_file, path).value.problems):
        (p,) = problems
        assert (p.path, p.line) == (path, 1)
        assert p.message == f"the file is {100 * 1024 * 1024:,} bytes; a rule file may be at most 2 MiB"
    _, problems = lint_text("#" * (rulefile.MAX_BYTES + 1), path)
    assert [p.line for p in problems] == [1] and "at most 2 MiB" in problems[0].message


def test_a_fifo_or_a_folder_is_not_a_rule_file(tmp_path: Path) -> None:
    import os

    fifo = tmp_path / "transfer.yaml"
    os.mkfifo(fifo)                                      # nobody writes: reading would block
    for path in (fifo, tmp_path):
        _, problems = lint_file(path)
        assert [(p.line, p.message) for p in problems] in ([(1, "not a regular file")],
                                                           [(0, "cannot read: Is a directory")])


def test_not_utf8_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "transfer.yaml"
    path.write_bytes(HEAD.encode() + "  - id: bl\xe5b\xe6r\n".encode("latin-1"))
    (p,) = lint_file(path)[1]
    assert (p.line, p.message) == (3, f"not UTF-8 text (byte {len(HEAD) + 11} of the file)")


@pytest.mark.parametrize("depth, refused", [(12, False), (20, False), (21, True), (100_000, True)])
def test_deep_yaml(tmp_path: Path, depth: int, refused: bool) -> None:
    """Nesting is refused past 20 levels (a rule file needs 9), before Python's recursion limit."""
    # the top mapping, rules, the rule, when, the field's mapping: 5 levels; the lists; the value
    nested = "[" * (depth - 6) + "1" + "]" * (depth - 6)
    text = HEAD + rule("a", f"{{dunning_level: {{in: {nested}}}}}")
    problems = lint(tmp_path, text)
    if not refused:
        assert problems and all("nested more" not in m for _, m in problems)    # refused as a value
        return
    line, msg = one(problems)
    assert line == line_of(text, "when:")
    if depth < 1000:
        assert msg == "YAML error: nested more than 20 levels deep (a rule file needs 9)"
    else:                                   # libyaml's own limit comes first
        assert msg.startswith("YAML error:") and "nest" in msg


def test_aliases_are_refused(tmp_path: Path) -> None:
    """A few nested aliases make a small file stand for billions of conditions."""
    text = (HEAD + rule("a", "&x {entry_type: invoice}") + rule("b", "*x"))
    line, msg = one(lint(tmp_path, text))
    assert line == line_of(text, "*x")
    assert msg == "YAML error: aliases (*x) are not allowed in a rule file; write the condition out"


@pytest.mark.parametrize("field, literal, problem", [
    # amounts go through the one amount reader (as the import reads them)
    ("amount", "1e999999999", "amount: '1e999999999' has an exponent"),
    ("amount", "-100000000000000", "amount: '-100000000000000' is larger than the largest amount accepted"),
    ("amount", ".inf", "amount: '.inf' is not a number"),
    ("amount", ".nan", "amount: '.nan' is not a number"),
    ("amount", "1" * 40, "amount: '1111111111111111111111111111111111111111' is larger than"),
    # other numbers: whole, and within what durable_rules compares exactly
    ("dunning_level", "100000000000000000000", "dunning_level: 100000000000000000000 is out of range"),
])
def test_numbers_out_of_range(tmp_path: Path, field: str, literal: str, problem: str) -> None:
    text = HEAD + rule("a", f"\n      {field}: {{gt: {literal}}}")
    line, msg = one(lint(tmp_path, text))
    assert line == line_of(text, literal)
    assert msg.startswith(problem), msg


def test_a_mapping_as_a_key_is_an_error_not_a_crash(tmp_path: Path) -> None:
    text = HEAD + rule("a", "\n      ? [entry_type]\n      : invoice")
    line, msg = one(lint(tmp_path, text))
    assert line == line_of(text, "? [entry_type]")
    assert msg == "YAML error: a key must be a plain name, not a mapping or a list"


# --- every structural check has its test (make mutation) ------------------------------------------
def test_a_rule_without_when_is_refused_not_widened_to_every_entry(tmp_path: Path) -> None:
    text = HEAD + "  - id: a\n    decision: hold\n    reason: r\n"
    line, msg = one(lint(tmp_path, text))
    assert line == line_of(text, "- id: a")
    assert msg.startswith("a: when is required") and "when: {}" in msg


def test_an_empty_when_is_refused_not_widened_to_every_entry(tmp_path: Path) -> None:
    text = HEAD + "  - id: a\n    when:\n    decision: hold\n    reason: r\n"
    line, msg = one(lint(tmp_path, text))
    assert line == line_of(text, "when:")
    assert msg.startswith("a: when is empty") and "when: {}" in msg


def test_when_written_as_braces_matches_every_entry_on_purpose(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(HEAD + rule("all", "{}"), encoding="utf-8")
    [r] = load_rule_file(path).rules
    assert r.when == () and r.any == ()


@pytest.mark.parametrize("when", ["[entry_type, invoice]", "invoice", "5"])
def test_when_must_be_a_mapping(tmp_path: Path, when: str) -> None:
    text = HEAD + rule("a", when)
    line, msg = one(lint(tmp_path, text))
    assert line == line_of(text, "when:")
    assert msg == "when: must be a mapping of field: condition"


@pytest.mark.parametrize("alternatives", ["[]", "{entry_type: invoice}", "invoice"])
def test_any_must_be_a_non_empty_list(tmp_path: Path, alternatives: str) -> None:
    text = HEAD + rule("a", f"\n      entry_type: invoice\n      any: {alternatives}")
    line, msg = one(lint(tmp_path, text))
    assert line == line_of(text, "any:")
    assert msg.startswith("any: must be a list of one or more condition mappings")


def test_an_alternative_that_is_not_a_mapping_is_one_problem(tmp_path: Path) -> None:
    text = HEAD + rule("a", "\n      any:\n        - invoice\n        - {status: draft}")
    line, msg = one(lint(tmp_path, text))
    assert line == line_of(text, "any:")
    assert "each alternative must be a mapping" in msg


def test_an_unknown_operator_is_one_problem_whatever_its_value(tmp_path: Path) -> None:
    text = HEAD + rule("a", "\n      status: {equals: drafted}")
    line, msg = one(lint(tmp_path, text))
    assert line == line_of(text, "equals")
    assert msg.startswith("status: unknown operator 'equals'")


@pytest.mark.parametrize("cond", ["{in: invoice}", "{not_in: []}", "{in: {a: 1}}"])
def test_in_and_not_in_need_a_non_empty_list(tmp_path: Path, cond: str) -> None:
    text = HEAD + rule("a", f"\n      entry_type: {cond}")
    line, msg = one(lint(tmp_path, text))
    assert line == line_of(text, "entry_type:")
    assert msg.startswith("entry_type: ") and "needs a non-empty list" in msg


@pytest.mark.parametrize("op", ["lt", "le", "gt", "ge"])
def test_every_ordering_operator_needs_a_number_field(tmp_path: Path, op: str) -> None:
    text = HEAD + rule("a", f"\n      status: {{{op}: draft}}")
    line, msg = one(lint(tmp_path, text))
    assert msg == f"status: {op} compares numbers; status is enum"


@pytest.mark.parametrize("value", ["1", "'true'", "null", "[true, 0]"])
def test_a_bool_field_takes_only_true_or_false(tmp_path: Path, value: str) -> None:
    text = HEAD + rule("a", f"\n      factoring: {value}")
    problems = lint(tmp_path, text)
    assert problems and all(line == line_of(text, "factoring:") for line, _ in problems)
    assert any("must be true or false" in msg for _, msg in problems)


@pytest.mark.parametrize("text", ["", "- a\n- b\n", "just text\n", "42\n"])
def test_a_rule_file_is_a_mapping(tmp_path: Path, text: str) -> None:
    assert lint(tmp_path, text) == [(1, "a rule file is a mapping with 'default' and 'rules'")]


def test_default_is_required(tmp_path: Path) -> None:
    text = "rules:\n" + rule("a", "{entry_type: invoice}")
    assert one(lint(tmp_path, text)) == (1, "default: required, a mapping with decision and reason")


def test_default_takes_only_decision_and_reason(tmp_path: Path) -> None:
    text = "default: {decision: wait, reason: Nothing decided., when: {}}\nrules:\n" \
        + rule("a", "{entry_type: invoice}")
    line, msg = one(lint(tmp_path, text))
    assert line == 1 and msg.startswith("default: unknown key 'when'")


@pytest.mark.parametrize("reason", ["", "reason: '  '", "reason: 5"])
def test_default_needs_a_reason_in_words(tmp_path: Path, reason: str) -> None:
    text = "default:\n  decision: wait\n" + (f"  {reason}\n" if reason else "") + "rules:\n" \
        + rule("a", "{entry_type: invoice}")
    assert one(lint(tmp_path, text)) == (1, "default: reason is required, in plain words")


@pytest.mark.parametrize("rules", ["", "rules: {a: 1}\n", "rules: a rule\n"])
def test_rules_must_be_a_list(tmp_path: Path, rules: str) -> None:
    text = "default: {decision: wait, reason: Nothing decided.}\n" + rules
    line, msg = one(lint(tmp_path, text))
    assert msg == "rules: required, a list of rules"
    assert line == (2 if rules else 1)


def test_each_rule_must_be_a_mapping(tmp_path: Path) -> None:
    text = HEAD + "  - hold everything\n" + rule("a", "{entry_type: invoice}")
    line, msg = one(lint(tmp_path, text))
    assert line == 2 and msg == "each rule must be a mapping, not 'hold everything'"


@pytest.mark.parametrize("rid", [None, "''", "'  '", "5"])
def test_every_rule_needs_an_id(tmp_path: Path, rid: str | None) -> None:
    first = f"  - id: {rid}\n    when: {{entry_type: invoice}}\n" if rid is not None \
        else "  - when: {entry_type: invoice}\n"
    text = HEAD + first + "    decision: hold\n    reason: r\n"
    assert one(lint(tmp_path, text)) == (3, "id: every rule needs an id")


@pytest.mark.parametrize("warning", ["''", "5", "[a]"])
def test_a_warning_must_be_a_text(tmp_path: Path, warning: str) -> None:
    text = HEAD + rule("w", "{entry_type: invoice}", f"warning: {warning}", decision=None, reason=None)
    line, msg = one(lint(tmp_path, text))
    assert line == line_of(text, "warning:") and msg == "w: warning must be a text"


@pytest.mark.parametrize("before", ["", "\n", "# rules\n\n"])
def test_a_character_yaml_does_not_take_is_reported_on_its_line(tmp_path: Path, before: str) -> None:
    text = before + HEAD + rule("a", "{entry_type: invoice}", reason="Be\x07cause.")
    line, msg = one(lint(tmp_path, text))
    assert line == line_of(text, "reason: Be") and msg.startswith("YAML error:")


def test_rules_and_warnings_as_loaded(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(HEAD + rule("d", "{entry_type: invoice}", reason="Held, because.")
                    + rule("w", "{entry_type: payment}", "warning: Look at it.", decision=None,
                           reason=None), encoding="utf-8")
    rf = load_rule_file(path)
    d, w = rf.rules
    assert rf.deciding == (d,) and rf.warnings == (w,)
    assert (d.decision, d.warning, d.reason, d.text) == ("hold", None, "Held, because.", "Held, because.")
    assert (w.decision, w.warning, w.reason, w.text) == (None, "Look at it.", "Look at it.", "Look at it.")
    assert (rf.default_decision, rf.default_reason, rf.default_line) == ("wait", "Nothing decided.", 1)


def test_load_rule_file_error_lists_every_problem_with_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(HEAD + rule("a", "{entry_typ: invoice}") + rule("b", "{status: drafted}"),
                    encoding="utf-8")
    with pytest.raises(RuleFileError) as info:
        load_rule_file(path)
    assert str(info.value).splitlines() == [str(p) for p in info.value.problems]
    assert [p.line for p in info.value.problems] == [4, 8]
    assert str(info.value.problems[0]).startswith(f"{path}:4: unknown field 'entry_typ'")


def test_load_rule_file_that_cannot_be_read(tmp_path: Path) -> None:
    path = tmp_path / "missing.yaml"
    with pytest.raises(RuleFileError) as info:
        load_rule_file(path)
    [p] = info.value.problems
    assert (p.path, p.line) == (path, 0) and p.message.startswith("cannot read: ")
    assert str(info.value) == f"{path}:0: {p.message}"


# --- the bounds, at their exact values ----------------------------------------------------------
def test_the_size_bound_is_two_mib_exactly(tmp_path: Path) -> None:
    path = tmp_path / "transfer.yaml"
    limit = 2 * 1024 * 1024
    _, problems = lint_text("#" * (limit + 1), path)
    assert [p.message for p in problems] == [f"the text is {limit + 1:,} characters; a rule file may be at most 2 MiB"]
    _, problems = lint_text("#" * limit, path)
    assert not any("MiB" in p.message for p in problems), problems


def test_at_most_5000_rules(tmp_path: Path) -> None:
    text = "default: {decision: wait, reason: r}\nrules:\n" + "".join(f"  - {{id: r{i}}}\n" for i in range(5001))
    rf, problems = parse_rule_text(text, tmp_path / "transfer.yaml")
    assert rf is None and [p.message for p in problems] == [
        "rules: 5,001 rules; a rule file may hold at most 5,000 (lint compares every rule with the rules before it)"]


@pytest.mark.parametrize("literal, ok", [("9007199254740991", True), ("-9007199254740991", True),
                                         ("9007199254740992", False), ("-9007199254740992", False)])
def test_a_number_is_at_most_2_to_the_53_less_1(tmp_path: Path, literal: str, ok: bool) -> None:
    text = HEAD + rule("a", f"{{dunning_level: {{gt: {literal}}}}}")
    problems = lint(tmp_path, text)
    assert [m for _, m in problems if "out of range" in m] == ([] if ok else [
        f"dunning_level: {int(literal)} is out of range (at most 9,007,199,254,740,991 either way)"])


def test_an_integer_python_will_not_read_is_a_problem_on_its_line(tmp_path: Path) -> None:
    text = HEAD + rule("a", "\n      dunning_level: {gt: " + "9" * 5000 + "}")
    line, msg = one(lint(tmp_path, text))
    assert line == line_of(text, "9" * 50)
    assert msg.startswith("YAML error: Exceeds the limit (4300 digits) for integer string conversion"), msg


# --- YAML errors: which character, where, and the usual cause -----------------------------------
_TAB = "found character '\\t' that cannot start any token; hint: a tab: YAML indents with spaces only"
_END = "hint: check the indentation (spaces, siblings aligned) and the quotes"


@pytest.mark.parametrize("text, line, message", [
    (HEAD + "\t- id: a\n", 3, f"YAML error at column 1: {_TAB}"),
    (HEAD + "  - id: a\n    when: {entry_type: invoice}\n  \t  decision: hold\n", 5, f"YAML error at column 3: {_TAB}"),
    # not at a tab: the parser's words as they are
    (HEAD + "  - id: a\n    when: {entry_type: invoice}\n    decision: hold\n    reason: r\n  - @x\n", 7,
     f"YAML error at column 5: found character that cannot start any token; {_END}"),
    # libyaml's own words for a tab in an indentation
    (HEAD + "  - id: a\n\twhen: {entry_type: invoice}\n", 4, "YAML error at column 1 (scanning a plain scalar that "
     f"starts on line 3): found a tab character that violates indentation; {_END}"),
    (HEAD + "  - id: a\n    when: {entry_type: invoice}\n    decision: hold\n    reason: 'never closed\n", 7,
     "YAML error at column 1 (scanning a quoted scalar that starts on line 6): found unexpected end of stream; "
     "hint: a quote or bracket opened and never closed"),
    (HEAD + "  - id: a\n    when: {entry_type: invoice}\n    decision: hold\n    reason: a: b\n", 6,
     "YAML error at column 14: mapping values are not allowed in this context; hint: a `key: value` where YAML "
     "expected a plain value: this line is probably indented more than the keys above it (align it with them), "
     "or a value holding ': ' needs quotes"),
    (HEAD + "  - id: a\n    when: {entry_type: invoice}\n    decision\n    reason: r\n", 6,
     "YAML error at column 5 (scanning a simple key that starts on line 5): could not find expected ':'; hint: a "
     "key without its ':', or a line meant to continue the one above without indentation"),
    # the block it was in started on the same line: not named
    ("default: {decision: wait, reason: x]\n", 1, "YAML error at column 36: did not find expected ',' or '}'; hint: "
     "this line is indented differently from the lines of its block: align it with the keys (or the `- ` items) "
     "above it, with spaces"),
])
def test_a_yaml_error_names_its_line_column_block_and_cause(tmp_path: Path, text: str, line: int, message: str) -> None:
    assert lint(tmp_path, text) == [(line, message)]


def test_a_character_yaml_does_not_take_is_named_on_its_line(tmp_path: Path) -> None:
    text = HEAD + "  - id: a\n    when: {entry_type: invoice}\n    decision: hold\n    reason: a\x01b\n"
    [(line, message)] = lint(tmp_path, text)
    assert line == 6 and message.startswith("YAML error: unacceptable character #x0001"), message


def test_the_alternatives_of_a_rule_over_the_bound_are_not_read(tmp_path: Path) -> None:
    # 33 alternatives, each wrong: one problem (the count), not 34
    alts = ", ".join(f"{{colour_{i}: red}}" for i in range(33))
    line, msg = one(lint(tmp_path, HEAD + rule("a", f"{{any: [{alts}]}}")))
    assert msg == "any: 33 alternatives; at most 32 in one rule (split the rule in several)"


@pytest.mark.parametrize("when, message", [
    ("{dunning_level: {in: [" + ", ".join(f"x{i}" for i in range(65)) + "]}}",
     "dunning_level: in has 65 values; at most 64 in one list (split the rule in several)"),
    ("{tags: {gt: two words}}", "tags: unknown operator 'gt' for tags (known: has, has_not, has_any, has_none)"),
    ("{tags: {has_any: 5}}", "tags: has_any needs a non-empty list of words"),
    ("{tags: {has_none: two words}}", "tags: has_none needs a non-empty list of words"),
])
def test_a_condition_refused_whole_is_not_read_further(tmp_path: Path, when: str, message: str) -> None:
    """One problem for it, not one more for each of its values."""
    line, msg = one(lint(tmp_path, HEAD + rule("a", when)))
    assert msg == message


def test_a_recursion_error_of_the_loader_is_a_problem_not_a_traceback(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import reskontro.rules.rulefile as rulefile

    def deep(self):
        raise RecursionError("maximum recursion depth exceeded")
    monkeypatch.setattr(rulefile._Loader, "get_single_data", deep)
    rf, problems = parse_rule_text(HEAD + rule("a", "{entry_type: invoice}"), tmp_path / "transfer.yaml")
    assert rf is None
    assert [(p.line, p.message) for p in problems] == [
        (1, "YAML error: RecursionError('maximum recursion depth exceeded')")]


def test_a_rule_file_of_exactly_two_mib_is_read(tmp_path: Path) -> None:
    path = tmp_path / "transfer.yaml"
    text = HEAD + rule("a", "{entry_type: invoice}", reason="'Because.'").rstrip("\n")   # its last byte counts
    path.write_text("#" * (2 * 1024 * 1024 - len(text) - 1) + "\n" + text, encoding="utf-8")
    assert path.stat().st_size == 2 * 1024 * 1024
    assert lint_file(path)[1] == []
    path.write_text(path.read_text(encoding="utf-8") + "#", encoding="utf-8")
    assert [p.message for p in lint_file(path)[1]] == [
        f"the file is {2 * 1024 * 1024 + 1:,} bytes; a rule file may be at most 2 MiB"]


def test_a_rule_file_that_grew_after_its_size_was_read_is_refused(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    path = tmp_path / "transfer.yaml"
    path.write_text("#" * (2 * 1024 * 1024 + 1), encoding="utf-8")
    real = os.fstat

    def small(fd: int) -> os.stat_result:           # the size as it was a moment before
        st = list(real(fd))
        st[6] = 10
        return os.stat_result(st)
    monkeypatch.setattr(os, "fstat", small)
    problems = pytest.raises(RuleFileError, load_rule_file, path).value.problems
    assert [(p.line, p.message) for p in problems] == [
        (1, "the file is over 2,097,152 bytes; a rule file may be at most 2 MiB")]
