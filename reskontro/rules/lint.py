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

from reskontro.rules.engine import RuleEngine, rule_costs
from reskontro.rules.facts import DEFAULT_FACT, FIELDS, number_value
from reskontro.rules.rulefile import Problem, Rule, RuleFile, RuleFileError, Test, parse_rule_text, read_rule_text

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
        # (set operations where they can: lint compares up to millions of pairs)
        if self.only is not None:
            if other.only is not None:
                return self.only <= other.only
            return (other.lo <= min(self.only) and max(self.only) <= other.hi
                    and self.only.isdisjoint(other.out))
        if other.only is not None:
            return False
        if not (other.lo <= self.lo and self.hi <= other.hi):
            return False
        if self.lo == -_INF and self.hi == _INF:
            return other.out <= self.out
        return all(x in self.out for x in other.out if self.lo <= x <= self.hi)

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


class _Shape:
    """A conjunction made fast to compare: the enum and bool fields as one bit mask (a bit per
    value; a field no test restricts has all its bits), the restricted number fields apart."""
    __slots__ = ("mask", "nums", "box", "bounds")

    def __init__(self, conj: dict):
        self.mask = _ALL_BITS
        self.nums: dict[str, _Num] = {}
        self.box: dict[str, tuple] = {}     # number field -> (lowest, highest) value it allows
        for field, dom in conj.items():
            if isinstance(dom, _Num):
                self.nums[field] = dom
                self.box[field] = _bounds(dom)
            else:
                bits = _BITS[field]
                self.mask = (self.mask & ~_FIELD_BITS[field]) | sum(bits[v] for v in dom)
        self.bounds = tuple((f, lo, hi) for f, (lo, hi) in self.box.items())

    def within(self, a: "_Shape") -> bool:
        """Every fact meeting this conjunction meets conjunction a."""
        if self.mask & ~a.mask:
            return False
        box = self.box
        for field, lo, hi in a.bounds:           # quick: the bounds first
            b_lo, b_hi = box.get(field, _NO_BOUNDS)
            if b_lo < lo or b_hi > hi:
                return False
        nums = self.nums
        for field, dom_a in a.nums.items():
            if not nums.get(field, _FULL).within(dom_a):
                return False
        return True


def _bounds(dom: _Num) -> tuple:
    """The lowest and highest value the domain holds (it is not empty)."""
    if dom.only is not None:
        return min(dom.only), max(dom.only)
    lo, hi = dom.lo, dom.hi
    while lo in dom.out:
        lo += 1
    while hi in dom.out:
        hi -= 1
    return lo, hi


def _value_bits() -> tuple[dict, dict, int]:
    bits: dict[str, dict] = {}
    field_bits: dict[str, int] = {}
    pos = 0
    for name, spec in FIELDS.items():
        if spec.kind == "number":
            continue
        values = (True, False) if spec.kind == "bool" else spec.values
        bits[name] = {v: 1 << (pos + i) for i, v in enumerate(values)}
        field_bits[name] = ((1 << len(values)) - 1) << pos
        pos += len(values)
    return bits, field_bits, (1 << pos) - 1


_BITS, _FIELD_BITS, _ALL_BITS = _value_bits()
_FULL = _Num()
_NO_BOUNDS = (-_INF, _INF)


def coverage_problems(rf: RuleFile) -> list[Problem]:
    """Rules that can never fire, and deciding rules an earlier deciding rule shadows. Every
    later rule is compared with every earlier one (quadratic: 2,000 rules are 2 million
    comparisons, which is why a comparison is a mask test and the few number fields)."""
    problems: list[Problem] = []
    earlier: list[tuple[Rule, list[_Shape]]] = []
    for rule in rf.rules:
        shapes = [_Shape(c) for c in _conjunctions(rule) if not _empty(c)]
        if not shapes:
            problems.append(Problem(rf.path, rule.line, f"{rule.id}: can never fire: no entry meets all its conditions"))
            continue
        if rule.decision is None:
            continue
        for prev, prev_shapes in earlier:
            # shadowed when each of this rule's alternatives is within one of prev's
            # (for-else loops: this is the hot loop, and generators cost twice as much)
            for b in shapes:
                for a in prev_shapes:
                    if b.within(a):
                        break
                else:
                    break            # b is not within prev: not shadowed by prev
            else:
                problems.append(Problem(
                    rf.path, rule.line,
                    f"{rule.id}: can never decide: rule {prev.id!r} (line {prev.line}) comes first "
                    "and catches every entry this rule catches"))
                break
        earlier.append((rule, shapes))
    return problems


def engine_problems(rf: RuleFile) -> list[Problem]:
    """Rules durable_rules cannot take (too many `any` alternatives or `in` values for its
    fixed-size tables), counted from the compiled JSON before it sees them (a rule it would
    hang on never reaches it); then the file is compiled, so that any other refusal shows here
    instead of at the first `plan`."""
    _, problems = rule_costs(rf)
    if problems:
        return problems
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
        text = read_rule_text(path)
    except RuleFileError as exc:
        return None, exc.problems
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

    try:
        text = read_rule_text(path)          # the rule file's bounds (size, nesting, aliases)
    except RuleFileError as exc:
        return [ExampleResult("(file)", p.line, False, p.message) for p in exc.problems]
    loader = None
    try:
        loader = _Loader(text)               # refuses a character YAML does not take (ReaderError)
        doc = loader.get_single_data()
    except yaml.YAMLError as exc:
        line, message = yaml_problem(exc, text)
        return [ExampleResult("(file)", line, False, message)]
    finally:
        if loader is not None:
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
