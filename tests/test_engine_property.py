"""The engine decides exactly what the rule file says: durable_rules against a plain evaluation.

The reference below walks the rules in file order and evaluates each test directly on the fact;
the first deciding rule wins, else the default; the warnings are every matching warning rule.
"""
from __future__ import annotations

import threading
from datetime import date
from pathlib import Path
from unittest.mock import patch

import pytest
import yaml
from hypothesis import HealthCheck, event, given, reject, settings
from hypothesis import strategies as st

import reskontro.rules.engine as engine_mod
from reskontro.rules.engine import RULESET, Outcome, RuleEngine, RuleEngineError
from reskontro.rules.facts import DEFAULT_FACT, FIELDS
from reskontro.rules.rulefile import RuleFile, RuleFileError, load_rule_file, parse_rule_text
from reskontro.rules.rulefile import Test as Cond

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "rules" / "transfer.yaml"

# No example database in the repo's folders; deterministic enough for CI, fast.
PROPS = settings(database=None, deadline=None, max_examples=150,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


# --- the reference ----------------------------------------------------------------------------
def holds(t: Cond, fact: dict) -> bool:
    v = fact[t.field]
    if t.op == "has":
        return t.value in v
    if t.op == "has_not":
        return t.value not in v
    if t.op == "has_any":
        return any(w in v for w in t.value)
    if t.op == "has_none":
        return not any(w in v for w in t.value)
    if t.op == "eq":
        return v == t.value
    if t.op == "not":
        return v != t.value
    if t.op == "in":
        return v in t.value
    if t.op == "not_in":
        return v not in t.value
    if t.op == "lt":
        return v < t.value
    if t.op == "le":
        return v <= t.value
    if t.op == "gt":
        return v > t.value
    if t.op == "ge":
        return v >= t.value
    raise AssertionError(f"unknown op {t.op}")


def matches(rule, fact: dict) -> bool:
    if not all(holds(t, fact) for t in rule.when):
        return False
    return not rule.any or any(all(holds(t, fact) for t in alt) for alt in rule.any)


def reference(rf: RuleFile, fact: dict) -> Outcome:
    matched = [r for r in rf.rules if matches(r, fact)]
    warnings = tuple((r.id, r.warning) for r in matched if r.warning is not None)
    for r in matched:
        if r.decision is not None:
            return Outcome(r.decision, r.id, r.reason, warnings)
    return Outcome(rf.default_decision, "default", rf.default_reason, warnings)


# --- facts --------------------------------------------------------------------------------------
AMOUNTS = [-100_000_00, -50001, -50000, -49999, -1, 0, 1, 99, 100, 101, 500, 50000, 100000, 10_000_000_00]
LEVELS = [0, 1, 2, 3, 5]


TEXTS = ["K1000", "K1", "K2", "Lowell", "none", "ERP"]
WORDS = ["key-account", "vip", "other"]
DAY = DEFAULT_FACT["document_date"]
DAYS = [DAY - 1, DAY, DAY + 1, DAY + 30]


def value_of(name: str) -> st.SearchStrategy:
    spec = FIELDS[name]
    if spec.kind == "enum":
        return st.sampled_from(spec.values)
    if spec.kind == "bool":
        return st.booleans()
    if spec.kind == "text":
        return st.one_of(st.sampled_from(TEXTS), st.text(min_size=1, max_size=5))
    if spec.kind == "words":
        return st.lists(st.sampled_from(WORDS), unique=True).map(lambda ws: tuple(sorted(ws)))
    if spec.kind == "date":
        return st.one_of(st.sampled_from(DAYS), st.integers(DAY - 4000, DAY + 4000))
    if name == "amount":   # øre; the pool hits the thresholds the rule files use, exactly and ±1
        return st.one_of(st.sampled_from(AMOUNTS), st.integers(-(2 ** 62), 2 ** 62))
    if name == "days_past_due":
        return st.one_of(st.sampled_from([-1, 0, 1, 29, 30, 31]), st.integers(-400, 4000))
    return st.one_of(st.sampled_from(LEVELS), st.integers(0, 10 ** 6))


facts = st.fixed_dictionaries({name: value_of(name) for name in FIELDS})


def test_fact_strategy_covers_every_field() -> None:
    assert set(FIELDS) == set(DEFAULT_FACT)
    assert {s.kind for s in FIELDS.values()} == {"enum", "bool", "number", "text", "date", "words"}


# --- the real rule file -----------------------------------------------------------------------
REAL = load_rule_file(RULES)
REAL_ENGINE = RuleEngine(REAL)


@PROPS
@given(fact=facts)
def test_real_rules_decide_as_the_reference(fact: dict) -> None:
    expected = reference(REAL, fact)
    assert REAL_ENGINE.decide_uncached(fact) == expected
    assert REAL_ENGINE.decide(fact) == expected
    assert REAL_ENGINE.decide(fact) == expected          # from the cache now
    ex = REAL_ENGINE.explain(fact)
    assert ex.outcome == expected
    assert [r.id for r in ex.matched] == [r.id for r in REAL.rules if matches(r, fact)]


def test_real_rules_on_hand_picked_facts() -> None:
    """A few facts whose outcome is plain from the file (and the reference agrees)."""
    cases = [
        ({}, "transfer", "invoice"),
        ({"status": "draft"}, "wait", "invoice-not-invoiced"),
        ({"entry_type": "reversal", "status": "none", "reverses_type": "payment", "reverses_sent": True}, "hold", "reversed-payment"),
        ({"entry_type": "reversal", "status": "none", "reverses_type": "payment"}, "exclude", "reversal-before-sent"),
        ({"entry_type": "payout", "status": "none"}, "wait", "default"),
    ]
    for change, decision, rule_id in cases:
        fact = dict(DEFAULT_FACT, **change)
        out = REAL_ENGINE.decide_uncached(fact)
        assert (out.decision, out.rule_id) == (decision, rule_id)
        assert out == reference(REAL, fact)


# --- random rule files -------------------------------------------------------------------------
NUM_LITERALS = {"amount": [-1000, -500.01, -500, 0, 0.01, 0.99, 1, 5, 500, 1000], "dunning_level": [0, 1, 2, 3],
                "days_past_due": [-1, 0, 1, 30]}
OPS = ("eq", "not", "in", "not_in", "lt", "le", "gt", "ge")
WORD_OPS = ("has", "has_not", "has_any", "has_none")


def literal(name: str) -> st.SearchStrategy:
    spec = FIELDS[name]
    if spec.kind == "enum":
        return st.sampled_from(spec.values)
    if spec.kind == "bool":
        return st.booleans()
    if spec.kind == "text":
        return st.sampled_from(TEXTS)
    if spec.kind == "words":
        return st.sampled_from(WORDS)
    if spec.kind == "date":
        return st.sampled_from(DAYS).map(lambda d: date.fromordinal(d).isoformat())
    return st.sampled_from(NUM_LITERALS[name])


@st.composite
def condition(draw) -> tuple[str, object]:
    """One `field: condition` of a `when` mapping, in the rule file's own syntax."""
    name = draw(st.sampled_from(sorted(FIELDS)))
    if FIELDS[name].kind == "words":
        op = draw(st.sampled_from(WORD_OPS))
        if op in ("has_any", "has_none"):
            return name, {op: draw(st.lists(literal(name), min_size=1, max_size=3, unique=True))}
        return name, (draw(literal(name)) if draw(st.booleans()) and op == "has" else {op: draw(literal(name))})
    ops = OPS if FIELDS[name].kind in ("number", "date") else OPS[:4]
    chosen = draw(st.lists(st.sampled_from(ops), min_size=1, max_size=2, unique=True))
    cond = {}
    for op in chosen:
        if op in ("in", "not_in"):
            cond[op] = draw(st.lists(literal(name), min_size=1, max_size=3, unique=True))
        else:
            cond[op] = draw(literal(name))
    style = draw(st.integers(0, 2))
    if chosen == ["eq"] and style:                   # plain `field: value`
        return name, cond["eq"]
    if chosen == ["in"] and style:                   # plain `field: [a, b]`
        return name, cond["in"]
    return name, cond


@st.composite
def when_mapping(draw, allow_any: bool = True) -> dict:
    when = dict(draw(st.lists(condition(), max_size=3, unique_by=lambda c: c[0])))
    if allow_any and draw(st.integers(0, 3)) == 0:
        when["any"] = draw(st.lists(when_mapping(allow_any=False), min_size=1, max_size=3))
    return when


@st.composite
def rule_files(draw) -> dict:
    n = draw(st.integers(1, 7))
    rules = []
    for i in range(n):
        r = {"id": f"r{i}", "when": draw(when_mapping())}
        if draw(st.integers(0, 2)) == 0:
            r["warning"] = f"warning {i}"
        else:
            r["decision"] = draw(st.sampled_from(("transfer", "wait", "exclude", "hold")))
            r["reason"] = f"reason {i}"
        rules.append(r)
    default = {"decision": draw(st.sampled_from(("transfer", "wait", "exclude", "hold"))), "reason": "default"}
    return {"default": default, "rules": rules}


def compile_doc(doc: dict) -> RuleFile:
    text = yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)
    rf, problems = parse_rule_text(text, Path("random.yaml"))
    assert problems == [], (problems, text)
    assert rf is not None
    return rf


def engine_for(rf: RuleFile) -> RuleEngine:
    """The engine, or a rejected example when the rule is too complex for durable_rules.

    durable_rules 2.0.28 refuses a rule whose `any` alternatives (with their `in` lists) expand
    to too many expressions (its error 113), and fails on a fact that passes more than 64 tests
    at once (error 303): the engine counts both from the JSON and refuses such a rule first,
    naming it (test_rules_lint.py and test_rules_change.py have the cases). Anything
    durable_rules itself refused would be a miss of that count, and fails here."""
    try:
        return RuleEngine(rf)
    except RuleFileError as exc:
        assert all("too complex for the rules engine" in p.message for p in exc.problems), exc
        assert any(r.any or any(t.op in ("in", "has_any", "has_none") for t in r.when) for r in rf.rules)
        event("too complex for durable_rules")
        reject()


@PROPS
@given(doc=rule_files(), sample=st.lists(facts, min_size=1, max_size=8))
def test_random_rule_files_decide_as_the_reference(doc: dict, sample: list[dict]) -> None:
    rf = compile_doc(doc)
    engine = engine_for(rf)
    for fact in sample:
        expected = reference(rf, fact)
        assert engine.decide_uncached(fact) == expected, (doc, fact)
        assert engine.decide(fact) == expected, (doc, fact)
        assert engine.explain(fact).matched == tuple(r for r in rf.rules if matches(r, fact))


@PROPS
@given(doc=rule_files(), sample=st.lists(facts, min_size=1, max_size=4), per_set=st.integers(1, 3))
def test_random_rule_files_spread_over_rulesets_decide_as_the_reference(doc: dict, sample: list[dict],
                                                                        per_set: int) -> None:
    """A long rule file is split into several durable_rules rulesets (its fixed-size tables):
    the same decisions, warnings and matched rules however the rules are spread."""
    rf = compile_doc(doc)
    with patch.object(engine_mod, "_RULES_PER_SET", per_set):
        engine = engine_for(rf)
    assert len(engine.definition) == -(-len(rf.rules) // per_set)
    for fact in sample:
        expected = reference(rf, fact)
        assert engine.decide_uncached(fact) == expected, (doc, fact)
        assert engine.explain(fact).matched == tuple(r for r in rf.rules if matches(r, fact))
        assert all(_facts_in(engine, name) == [] for name in engine.definition)


@PROPS
@given(doc=rule_files())
def test_random_rule_files_decide_their_own_corner_facts(doc: dict) -> None:
    """Facts built from the rules' own literals hit the boundaries more often than random ones."""
    rf = compile_doc(doc)
    engine = engine_for(rf)
    tests = [t for r in rf.rules for t in r.when + tuple(x for alt in r.any for x in alt)]
    for t in tests:
        values = t.value if isinstance(t.value, tuple) else (t.value,)
        for v in values:
            kind = FIELDS[t.field].kind
            for delta in ((-1, 0, 1) if kind in ("number", "date") else (0,)):
                fact = dict(DEFAULT_FACT, **{t.field: (v,) if kind == "words" else v + delta if delta else v})
                assert engine.decide_uncached(fact) == reference(rf, fact), (doc, fact)


def test_overlapping_alternatives_fire_a_rule_once() -> None:
    """Two `any` alternatives that both hold must not list the rule (or its warning) twice."""
    rf = compile_doc({"default": {"decision": "wait", "reason": "d"}, "rules": [
        {"id": "w", "when": {"any": [{"amount": {"gt": 0}}, {"dunning_level": {"gt": 0}}]}, "warning": "look"},
        {"id": "d", "when": {"any": [{"entry_type": "invoice"}, {"status": "invoiced"}]},
         "decision": "transfer", "reason": "r"}]})
    engine = RuleEngine(rf)
    fact = dict(DEFAULT_FACT, amount=100, dunning_level=2)
    out = engine.decide_uncached(fact)
    assert out == Outcome("transfer", "d", "r", (("w", "look"),))
    assert [r.id for r in engine.explain(fact).matched] == ["w", "d"]


# --- engines are independent, threads are not leaked, the cache is bounded -----------------------
def _facts_in(engine: RuleEngine, ruleset: str = RULESET) -> list:
    try:
        return engine._host.get_facts(ruleset)
    except Exception as exc:       # durable: error 309, no state at all = no facts
        assert "309" in str(exc)
        return []


def test_creating_engines_starts_no_threads() -> None:
    before = threading.active_count()
    engines = [RuleEngine(REAL) for _ in range(20)]
    for e in engines:
        e.decide_uncached(DEFAULT_FACT)
    assert threading.active_count() == before
    assert len({id(e._host) for e in engines}) == 20


def test_no_fact_stays_behind_handled_or_not() -> None:
    e = RuleEngine(REAL)
    unmatched = dict(DEFAULT_FACT, entry_type="payout", status="none")     # no rule, no warning
    assert reference(REAL, unmatched) == Outcome("wait", "default", REAL.default_reason, ())
    for fact in (unmatched, DEFAULT_FACT, unmatched):
        assert e.decide_uncached(fact) == reference(REAL, fact)
        assert _facts_in(e) == []


def test_two_engines_with_the_same_rules_share_no_facts() -> None:
    a, b = RuleEngine(REAL), RuleEngine(REAL)
    assert a._host is not b._host
    assert a.decide_uncached(DEFAULT_FACT) == b.decide_uncached(DEFAULT_FACT)
    assert _facts_in(a) == [] and _facts_in(b) == []          # every asserted fact was retracted
    stray = {"t": "entry", "_n": -1, **{k: DEFAULT_FACT[k] for k in a.fields}}
    a._host.assert_fact(RULESET, dict(stray))
    assert _facts_in(a) == [stray]
    assert _facts_in(b) == []
    b._host.assert_fact(RULESET, dict(stray))                   # not "already observed": b has its own
    # a's stray fact does not change what either engine decides
    for fact in (DEFAULT_FACT, dict(DEFAULT_FACT, status="draft"), dict(DEFAULT_FACT, entry_type="payout", status="none")):
        assert a.decide_uncached(fact) == b.decide_uncached(fact) == reference(REAL, fact)


def test_the_cache_answers_alike_facts_once() -> None:
    e = RuleEngine(REAL)
    e.decide(DEFAULT_FACT)
    calls = e.engine_calls
    # the currency is read by no rule: a fact differing only there is the same shape
    assert "currency" not in e.fields
    e.decide(dict(DEFAULT_FACT, currency="SEK"))
    assert e.engine_calls == calls
    e.decide(dict(DEFAULT_FACT, status="draft"))
    assert e.engine_calls == calls + 1


def test_the_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine_mod, "_CACHE_LIMIT", 7)
    e = RuleEngine(REAL)
    for i in range(60):
        fact = dict(DEFAULT_FACT, dunning_level=i, amount=i * 100)
        assert e.decide(fact) == reference(REAL, fact)
        assert len(e._cache) <= 7
    assert e.engine_calls == 60


def test_an_exception_in_an_action_surfaces(monkeypatch: pytest.MonkeyPatch) -> None:
    e = RuleEngine(REAL)

    class Exploding(list):
        def append(self, item):
            raise ValueError("boom in action")

    good = e._fired
    monkeypatch.setattr(e, "_fired", Exploding())
    with pytest.raises(RuleEngineError, match="boom in action"):
        e.decide_uncached(DEFAULT_FACT)
    with pytest.raises(RuleEngineError):
        e.decide(dict(DEFAULT_FACT, status="draft"))
    assert e._cache == {}                                   # a failure is never remembered
    monkeypatch.setattr(e, "_fired", good)
    assert e.decide(DEFAULT_FACT) == reference(REAL, DEFAULT_FACT)   # and the engine still works
