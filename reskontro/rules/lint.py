"""`rules lint` and `rules test`: problems in a rule file, and its examples checked.

Lint finds, with file and line: YAML and structure errors (via rulefile), conditions no entry
can meet, and deciding rules that can never decide because an earlier rule catches all they
catch. Coverage is checked rule against rule (not against a union of earlier rules).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import yaml

from reskontro.rules.engine import RuleEngine
from reskontro.rules.facts import DEFAULT_FACT, FIELDS, number_value
from reskontro.rules.rulefile import Problem, Rule, RuleFile, Test, parse_rule_text

_INF = math.inf   # interval bounds of rule thresholds (integers in fact units), never money


@dataclass(frozen=True)
class _Num:
    """Integers in [lo, hi] except `out`, or exactly `only` when that is set."""
    lo: float = -_INF
    hi: float = _INF
    out: frozenset = frozenset()
    only: frozenset | None = None

    def restrict(self, t: Test) -> "_Num":
        v = t.value
        if t.op == "eq":
            return self._only({v})
        if t.op == "in":
            return self._only(set(v))
        if t.op == "not":
            return self._without({v})
        if t.op == "not_in":
            return self._without(set(v))
        lo, hi = self.lo, self.hi
        if t.op == "gt":
            lo = max(lo, v + 1)
        elif t.op == "ge":
            lo = max(lo, v)
        elif t.op == "lt":
            hi = min(hi, v - 1)
        elif t.op == "le":
            hi = min(hi, v)
        only = None if self.only is None else frozenset(x for x in self.only if lo <= x <= hi)
        return _Num(lo, hi, self.out, only)

    def _only(self, values: set) -> "_Num":
        base = values if self.only is None else values & self.only
        return _Num(self.lo, self.hi, self.out,
                    frozenset(x for x in base if self.lo <= x <= self.hi and x not in self.out))

    def _without(self, values: set) -> "_Num":
        if self.only is not None:
            return _Num(self.lo, self.hi, self.out, self.only - values)
        return _Num(self.lo, self.hi, self.out | values)

    def empty(self) -> bool:
        if self.only is not None:
            return not self.only
        if self.lo > self.hi:
            return True
        span = self.hi - self.lo + 1
        return span != _INF and span <= len(self.out) and all(
            x in self.out for x in range(int(self.lo), int(self.hi) + 1))

    def within(self, other: "_Num") -> bool:
        if self.only is not None:
            return all(other.contains(x) for x in self.only)
        if other.only is not None:
            return False
        return (other.lo <= self.lo and self.hi <= other.hi
                and all(x in self.out for x in other.out if self.lo <= x <= self.hi))

    def contains(self, x) -> bool:
        if self.only is not None:
            return x in self.only
        return self.lo <= x <= self.hi and x not in self.out


def _domain(field: str):
    spec = FIELDS[field]
    if spec.kind == "number":
        return _Num()
    return frozenset((True, False) if spec.kind == "bool" else spec.values)


def _restrict(dom, t: Test):
    if isinstance(dom, _Num):
        return dom.restrict(t)
    if t.op == "eq":
        return dom & {t.value}
    if t.op == "in":
        return dom & set(t.value)
    if t.op == "not":
        return dom - {t.value}
    return dom - set(t.value)


def _conjunctions(rule: Rule) -> list[dict]:
    """The rule as alternatives, each a field -> allowed values map."""
    base: dict = {}
    for t in rule.when:
        base[t.field] = _restrict(base.get(t.field, _domain(t.field)), t)
    if not rule.any:
        return [base]
    out = []
    for alt in rule.any:
        conj = dict(base)
        for t in alt:
            conj[t.field] = _restrict(conj.get(t.field, _domain(t.field)), t)
        out.append(conj)
    return out


def _empty(conj: dict) -> bool:
    return any(d.empty() if isinstance(d, _Num) else not d for d in conj.values())


def _within(b: dict, a: dict) -> bool:
    """Every fact meeting conjunction b meets conjunction a."""
    for field, dom_a in a.items():
        dom_b = b.get(field, _domain(field))
        if isinstance(dom_a, _Num):
            if not dom_b.within(dom_a):
                return False
        elif not dom_b <= dom_a:
            return False
    return True


def coverage_problems(rf: RuleFile) -> list[Problem]:
    problems: list[Problem] = []
    earlier: list[tuple[Rule, list[dict]]] = []
    for rule in rf.rules:
        conjs = [c for c in _conjunctions(rule) if not _empty(c)]
        if not conjs:
            problems.append(Problem(rf.path, rule.line, f"{rule.id}: can never fire: no entry meets all its conditions"))
            continue
        if rule.decision is None:
            continue
        for prev, prev_conjs in earlier:
            if all(any(_within(b, a) for a in prev_conjs) for b in conjs):
                problems.append(Problem(
                    rf.path, rule.line,
                    f"{rule.id}: can never decide: rule {prev.id!r} (line {prev.line}) comes first "
                    "and catches every entry this rule catches"))
                break
        earlier.append((rule, conjs))
    return problems


def engine_problems(rf: RuleFile) -> list[Problem]:
    """Rules durable_rules itself refuses (e.g. too many `any` alternatives: its error 113),
    found by compiling them, so that lint says so instead of a crash at the first `plan`."""
    try:
        RuleEngine(rf)
        return []
    except Exception:  # noqa: BLE001 - any refusal, named per rule below
        pass
    problems = []
    for rule in rf.rules:
        try:
            RuleEngine(RuleFile(rf.path, (rule,), rf.default_decision, rf.default_reason))
        except Exception as exc:  # noqa: BLE001
            problems.append(Problem(rf.path, rule.line, f"{rule.id}: the rules engine (durable_rules) refuses "
                                    f"this rule: {exc}; split it into simpler rules"))
    return problems or [Problem(rf.path, 1, "the rules engine (durable_rules) refuses this rule file")]


def lint_text(text: str, path: Path) -> tuple[RuleFile | None, list[Problem]]:
    rf, problems = parse_rule_text(text, path)
    if rf is None:
        return None, problems
    return rf, coverage_problems(rf) + engine_problems(rf)


def lint_file(path: Path) -> tuple[RuleFile | None, list[Problem]]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        return None, [Problem(path, 0, f"cannot read: {exc.strerror}")]
    return lint_text(text, path)


# --- examples -----------------------------------------------------------------------------
@dataclass(frozen=True)
class ExampleResult:
    name: str
    line: int
    ok: bool
    message: str


def examples_path(rule_path: Path) -> Path:
    return rule_path.with_name(rule_path.stem + ".examples.yaml")


def is_examples_file(path: Path) -> bool:
    """An examples file (given where its rule file belongs): by its name, or by its content,
    a list of mappings with facts and expect."""
    if path.name.endswith(".examples.yaml") or path.name.endswith(".examples.yml"):
        return True
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return False
    return (isinstance(doc, list) and bool(doc)
            and all(isinstance(x, dict) and ("facts" in x or "expect" in x) for x in doc))


def run_examples(rf: RuleFile, path: Path) -> list[ExampleResult]:
    """Check each example; a malformed example is a failed example naming its line."""
    from reskontro.rules.rulefile import _Loader, _line, yaml_problem

    loader = _Loader(path.read_text(encoding="utf-8"))
    try:
        doc = loader.get_single_data()
    except yaml.YAMLError as exc:
        line, message = yaml_problem(exc)
        return [ExampleResult("(file)", line, False, message)]
    finally:
        loader.dispose()
    if not isinstance(doc, list):
        return [ExampleResult("(file)", 1, False, "the examples file is a list of examples")]
    engine = RuleEngine(rf)
    results = []
    for ex in doc:
        line = _line(ex)
        name = ex.get("name", f"example at line {line}") if isinstance(ex, dict) else "?"
        if not isinstance(ex, dict) or not isinstance(ex.get("facts"), dict) or not isinstance(ex.get("expect"), dict):
            results.append(ExampleResult(str(name), line, False, "needs name, facts (a mapping) and expect (a mapping)"))
            continue
        fact = dict(DEFAULT_FACT)
        bad = []
        for k, v in ex["facts"].items():
            if k not in FIELDS:
                bad.append(f"unknown field {k!r}")
                continue
            spec = FIELDS[k]
            if spec.kind == "number":
                try:
                    v = number_value(spec, v)      # amounts: the one amount reader, into øre
                except ValueError as exc:
                    bad.append(f"{k}: {exc}")
                    continue
            fact[k] = v
            if spec.kind == "enum" and v not in spec.values:
                bad.append(f"{k}: {v!r} is not a known value")
        if bad:
            results.append(ExampleResult(str(name), line, False, "; ".join(bad)))
            continue
        out = engine.decide(fact)
        exp = ex["expect"]
        got_w = sorted(w for w, _ in out.warnings)
        wrong = []
        if exp.get("decision") != out.decision:
            wrong.append(f"decision {out.decision} (rule {out.rule_id}), expected {exp.get('decision')}")
        if "rule" in exp and exp["rule"] != out.rule_id:
            wrong.append(f"rule {out.rule_id}, expected {exp['rule']}")
        if "warnings" in exp and sorted(exp["warnings"] or []) != got_w:
            wrong.append(f"warnings {got_w}, expected {sorted(exp['warnings'] or [])}")
        results.append(ExampleResult(str(name), line, not wrong, "; ".join(wrong) or
                                     f"{out.decision} by {out.rule_id}"))
    return results
