"""`rules lint` and `rules test`: problems in a rule file, and its examples checked.

Lint finds, with file and line: YAML and structure errors (via rulefile), conditions no entry
can meet (within one field, and across fields: a payment with an invoice status), deciding
rules that can never decide because an earlier rule catches all they catch, or the earlier
rules together do (the union), and rules durable_rules would refuse or fail on (an `any:` with
too many alternatives, huge `in:` lists: counted by engine.rule_costs before durable_rules sees
them).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import yaml

from reskontro.domain import ENTRY_TYPES
from reskontro.rules.engine import RuleEngine, rule_costs
from reskontro.rules.facts import DEFAULT_FACT, FIELDS, example_value
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


@dataclass(frozen=True)
class _Text:
    """Strings (an id, a source): exactly `only` when that is set, else any but `out`."""
    only: frozenset | None = None
    out: frozenset = frozenset()

    def restrict(self, t: Test) -> "_Text":
        if t.op in ("eq", "in"):
            v = {t.value} if t.op == "eq" else set(t.value)
            return _Text(frozenset((v if self.only is None else v & self.only) - self.out), self.out)
        v = {t.value} if t.op == "not" else set(t.value)
        return _Text(self.only - v, self.out) if self.only is not None else _Text(None, self.out | v)

    def empty(self) -> bool:
        return self.only is not None and not self.only

    def contains(self, x) -> bool:
        return x in self.only if self.only is not None else x not in self.out

    def within(self, other: "_Text") -> bool:
        if self.only is not None:
            return all(other.contains(x) for x in self.only)
        return other.only is None and other.out <= self.out

    def meet(self, other: "_Text") -> "_Text":
        if self.only is not None:
            return _Text(frozenset(x for x in self.only if other.contains(x)), frozenset())
        if other.only is not None:
            return other.meet(self)
        return _Text(None, self.out | other.out)

    def minus(self, other: "_Text") -> list:
        if other.only is not None:
            rest = self.restrict(Test("", "not_in", tuple(other.only)))
        else:
            rest = self.meet(_Text(other.out))
        return [] if rest.empty() else [rest]


@dataclass(frozen=True)
class _Tags:
    """The customer's tags: words it must have (has), must not (lacks), and lists of which it
    must have at least one (anys)."""
    has: frozenset = frozenset()
    lacks: frozenset = frozenset()
    anys: tuple = ()

    def restrict(self, t: Test) -> "_Tags":
        if t.op == "has":
            return _Tags(self.has | {t.value}, self.lacks, self.anys)
        if t.op == "has_not":
            return _Tags(self.has, self.lacks | {t.value}, self.anys)
        if t.op == "has_any":
            return _Tags(self.has, self.lacks, self.anys + (frozenset(t.value),))
        return _Tags(self.has, self.lacks | set(t.value), self.anys)          # has_none

    def empty(self) -> bool:
        return bool(self.has & self.lacks) or any(s <= self.lacks for s in self.anys)

    def within(self, other: "_Tags") -> bool:
        """Every list of tags meeting self meets other (when it answers yes; it may miss one)."""
        if not (other.has <= self.has and other.lacks <= self.lacks):
            return False
        return all(s & self.has or any(x - self.lacks <= s for x in self.anys) for s in other.anys)

    def meet(self, other: "_Tags") -> "_Tags":
        return _Tags(self.has | other.has, self.lacks | other.lacks, self.anys + other.anys)

    def minus(self, other: "_Tags") -> list:
        pieces = [_Tags(self.has, self.lacks | {w}, self.anys) for w in other.has]
        pieces += [_Tags(self.has | {w}, self.lacks, self.anys) for w in other.lacks]
        pieces += [_Tags(self.has, self.lacks | s, self.anys) for s in other.anys]
        return [x for x in pieces if not x.empty()]


def _domain(field: str):
    spec = FIELDS[field]
    if spec.kind in ("number", "date"):
        return _Num()
    if spec.kind == "text":
        return _Text()
    if spec.kind == "words":
        return _Tags()
    return frozenset((True, False) if spec.kind == "bool" else spec.values)


def _restrict(dom, t: Test):
    if not isinstance(dom, frozenset):
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
    return any(not d if isinstance(d, frozenset) else d.empty() for d in conj.values())


class _Shape:
    """A conjunction made fast to compare: the enum and bool fields as one bit mask (a bit per
    value; a field no test restricts has all its bits), the restricted number and date fields
    apart, and the restricted text and tags fields apart."""
    __slots__ = ("mask", "nums", "box", "bounds", "others")

    def __init__(self, conj: dict):
        self.mask = _ALL_BITS
        self.nums: dict[str, _Num] = {}
        self.box: dict[str, tuple] = {}     # number field -> (lowest, highest) value it allows
        self.others: dict = {}              # text and tags fields -> their _Text / _Tags
        for field, dom in conj.items():
            if isinstance(dom, _Num):
                self.nums[field] = dom
                self.box[field] = _bounds(dom)
            elif isinstance(dom, frozenset):
                bits = _BITS[field]
                self.mask = (self.mask & ~_FIELD_BITS[field]) | sum(bits[v] for v in dom)
            else:
                self.others[field] = dom
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
        if a.others:
            others = self.others
            for field, dom_a in a.others.items():
                dom_b = others.get(field)
                if not (dom_b if dom_b is not None else _domain(field)).within(dom_a):
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
        if spec.kind not in ("enum", "bool"):
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


# --- across fields, the union of earlier rules -------------------------------------------------
# A "box" is one conjunction: field -> the values it allows (the domains above; a field not in
# the box allows all). A rule is the union of its boxes (one per `any` alternative).

@dataclass(frozen=True)
class _Always:
    """What every entry is: an entry with `when` (field -> values) has `then` (field -> values)."""
    when: dict
    then: dict
    why: str


_NOT_INVOICE = frozenset(t for t in ENTRY_TYPES if t != "invoice")
_UNLINKED = frozenset({"none", "no_invoice"})
#: From the import's checks and how decide computes the facts (entry_fact, _Decider.group).
ALWAYS = (
    _Always({"entry_type": _NOT_INVOICE}, {"status": frozenset({"none"})}, "only invoices have a status"),
    _Always({"entry_type": frozenset({"invoice"})}, {"status": frozenset({"draft", "invoiced"})},
            "an invoice's status is draft or invoiced"),
    _Always({"entry_type": frozenset({"invoice"})}, {"invoice_decision": frozenset({"none"})},
            "invoice_decision is what an entry other than an invoice reads of its invoices (none for an invoice)"),
    _Always({"entry_type": frozenset({"invoice"})}, {"split_with_excluded": frozenset({False})},
            "split_with_excluded is about entries other than invoices"),
    _Always({"entry_type": frozenset({"invoice"})}, {"match_shape": frozenset(FIELDS["match_shape"].values) - {"no_invoice"}},
            "an invoice's match holds an invoice"),
    _Always({"entry_type": frozenset(ENTRY_TYPES) - {"manual_voucher"}}, {"opt_out": frozenset({False})},
            "only manual vouchers are opted out"),
    _Always({"entry_type": frozenset(ENTRY_TYPES) - {"reversal"}}, {"reverses_type": frozenset({"none"})},
            "only a reversal reverses an entry"),
    _Always({"entry_type": frozenset(ENTRY_TYPES) - {"reversal"}}, {"reverses_sent": frozenset({False})},
            "only a reversal reverses an entry"),
    _Always({"entry_type": frozenset(ENTRY_TYPES) - {"reversal"}}, {"reverses_corrected": frozenset({False})},
            "only a reversal reverses an entry"),
    _Always({"entry_type": frozenset({"reversal"})}, {"reverses_type": frozenset(ENTRY_TYPES)},
            "a reversal names the entry it reverses"),
    _Always({"match_shape": _UNLINKED}, {"invoice_decision": frozenset({"none"})},
            "an entry in no match, or in a match without an invoice, has invoice_decision none"),
    _Always({"match_shape": _UNLINKED}, {"split_with_excluded": frozenset({False})},
            "an entry in no match, or in a match without an invoice, settles no invoice"),
    _Always({"split_with_excluded": frozenset({True})}, {"invoice_decision": frozenset({"transfer", "hold", "wait"})},
            "an entry split with an excluded invoice has another invoice that is not excluded"),
    _Always({"changed_after_sent": frozenset({True})}, {"sent": frozenset({True})},
            "only an entry Lowell has can change after it was sent"),
    _Always({"settled_before_service": frozenset({True})}, {"match_shape": frozenset(FIELDS["match_shape"].values) - {"none"}},
            "only a match is settled"),
)


_WHOLE = {f: _domain(f) for f in FIELDS}     # each field's every value (the domains are immutable)


def _dom(box: dict, field: str):
    d = box.get(field)
    return _WHOLE[field] if d is None else d


def _meet(x, y):
    if isinstance(x, frozenset):
        return x & y
    if isinstance(x, _Num):
        if x.only is not None or y.only is not None:
            a, b = (x, y) if x.only is not None else (y, x)
            return _Num(only=frozenset(v for v in a.only if b.contains(v)))
        return _Num(max(x.lo, y.lo), min(x.hi, y.hi), x.out | y.out)
    return x.meet(y)


def _minus(x, y) -> list:
    """Pieces whose union is the values of x that y does not allow (each non-empty)."""
    if isinstance(x, frozenset):
        return [x - y] if x - y else []
    if isinstance(x, _Num):
        if y.only is not None:
            pieces = [x._without(set(y.only))]
        else:
            pieces = [x.restrict(Test("", "lt", y.lo))] if y.lo != -_INF else []
            pieces += [x.restrict(Test("", "gt", y.hi))] if y.hi != _INF else []
            pieces += [x._only(set(y.out))] if y.out else []
        return [p for p in pieces if not p.empty()]
    return x.minus(y)


def _is_empty(d) -> bool:
    return not d if isinstance(d, frozenset) else d.empty()


def _box_minus(b: dict, a: dict) -> tuple[list[dict], bool]:
    """b without a, as boxes; and whether a and b meet at all."""
    met = []
    for f, da in a.items():
        m = _meet(_dom(b, f), da)
        if _is_empty(m):
            return [b], False
        met.append(m)
    pieces, cur = [], dict(b)
    for (f, da), m in zip(a.items(), met):
        pieces += [{**cur, f: piece} for piece in _minus(_dom(cur, f), da)]
        cur[f] = m
    return pieces, True


def _broken(box: dict) -> list[_Always]:
    """What every entry is that no entry in `box` is (box: one entry type)."""
    return [a for a in ALWAYS if all(_dom(box, f) <= vals for f, vals in a.when.items())
            and any(not (_dom(box, f) & vals) for f, vals in a.then.items())]


def _impossible(box: dict) -> bool:
    """_broken(box) is not empty (the union check asks it of every piece: the cheap test first,
    a field the box restricts that misses what every entry is)."""
    for a in ALWAYS:
        for f, vals in a.then.items():
            d = box.get(f)
            if d is not None and not (d & vals):
                break
        else:
            continue
        if all(_dom(box, f) <= vals for f, vals in a.when.items()):
            return True
    return False


def _by_type(box: dict) -> list[dict]:
    """The box split per entry type (what every entry is depends mostly on its type)."""
    return [{**box, "entry_type": frozenset({t})} for t in ENTRY_TYPES if t in _dom(box, "entry_type")]


def _show(dom) -> str:
    return " or ".join(str(v).lower() if isinstance(v, bool) else str(v) for v in sorted(dom, key=str))


def cross_field_problems(rf: RuleFile, skip: set[int] = frozenset()) -> list[Problem]:
    """Rules no entry can meet because their conditions contradict what every entry is
    (ALWAYS), e.g. a payment with an invoice status. `skip`: lines reported already."""
    problems = []
    for rule in rf.rules:
        if rule.line in skip:
            continue
        boxes = [s for c in _conjunctions(rule) if not _empty(c) for s in _by_type(c)]
        whys = [_broken(s) for s in boxes]
        if not boxes or not all(whys):
            continue
        # the reason all its entry types share, if there is one
        why = next((w for w in whys[0] if all(w in ws for ws in whys)), whys[0][0])
        box = next(s for s, ws in zip(boxes, whys) if why in ws)
        field = next(f for f, vals in why.then.items() if not (_dom(box, f) & vals))
        cause = ", ".join(f"{f} {_show(_dom(box, f))}" for f in why.when)
        problems.append(Problem(rf.path, rule.line, f"{rule.id}: can never fire: no entry meets its conditions "
                                f"together ({cause} with {field} {_show(_dom(box, field))}: {why.why})"))
    return problems


_UNION_WORK = 300_000      # box operations for the whole file (the shipped file: ~900; 300 rules
                            # that all overlap: ~240,000); beyond it the union check stops


def _outline(box: dict) -> dict:
    """What a quick test of two boxes reads: per enum or bool field its values, per number or
    date field its lowest and highest value (text and tags fields: left to _box_minus)."""
    out = {}
    for f, d in box.items():
        if isinstance(d, frozenset):
            out[f] = d
        elif isinstance(d, _Num):
            out[f] = _bounds(d)
    return out


def _apart(b: dict, a: dict) -> bool:
    """Outlines that show the two boxes share no entry (False: they may)."""
    for f, d in a.items():
        x = b.get(f)
        if x is None:
            continue
        if isinstance(d, frozenset):
            if not (x & d):
                return True
        elif x[1] < d[0] or x[0] > d[1]:
            return True
    return False


def union_shadow_problems(rf: RuleFile, skip: set[int] = frozenset()) -> list[Problem]:
    """Deciding rules that can never decide because the deciding rules before them catch,
    together, every entry they catch (what no entry can be, ALWAYS, left aside). `skip`:
    lines reported already (e.g. shadowed by one earlier rule). Each box is cut by the earlier
    boxes it may meet (a quick test of their outlines first: a long file compares millions of
    pairs); beyond _UNION_WORK box operations for the file the check stops (it then reports
    only what it found)."""
    problems: list[Problem] = []
    earlier: dict[str, list[tuple[Rule, dict, dict]]] = {t: [] for t in ENTRY_TYPES}   # per entry type
    work = 0
    for rule in rf.rules:
        if rule.decision is None:
            continue
        boxes = [s for c in _conjunctions(rule) if not _empty(c) for s in _by_type(c)]
        boxes = [s for s in boxes if not _impossible(s)]
        if boxes and rule.line not in skip and work < _UNION_WORK:
            used: dict[str, Rule] = {}
            left = list(boxes)
            for b in boxes:
                parts = [b]
                seen = earlier[next(iter(b["entry_type"]))]
                outline = _outline(b)
                work += len(seen) // 16 + 1                 # the quick tests
                for prev, a, a_outline in seen:
                    if _apart(outline, a_outline):          # (then it meets no part of b either)
                        continue
                    nxt = []
                    for part in parts:
                        pieces, met = _box_minus(part, a)
                        work += len(pieces) + 1
                        if met:
                            used.setdefault(prev.id, prev)
                            nxt += [x for x in pieces if not _impossible(x)]
                        else:
                            nxt.append(part)
                    parts = nxt
                    if not parts or work >= _UNION_WORK:
                        break
                if parts:
                    break
                left.remove(b)
            if not left and len(used) > 1:
                names = ", ".join(f"{r.id!r} (line {r.line})" for r in list(used.values())[:6])
                more = f" and {len(used) - 6} more" if len(used) > 6 else ""
                problems.append(Problem(rf.path, rule.line, f"{rule.id}: can never decide: the rules before it "
                                        f"together catch every entry this rule catches: {names}{more}"))
            elif not left:
                prev = next(iter(used.values()))
                problems.append(Problem(rf.path, rule.line, f"{rule.id}: can never decide: rule {prev.id!r} "
                                        f"(line {prev.line}) comes first and catches every entry this rule can "
                                        "catch (what no entry can be left aside)"))
        for s in boxes:          # what it can catch (a box no entry meets catches nothing)
            earlier[next(iter(s["entry_type"]))].append((rule, s, _outline(s)))
    return problems


def more_problems(rf: RuleFile, reported: set[int]) -> list[Problem]:
    """The checks beyond coverage_problems (across fields, the union of earlier rules);
    `reported`: lines with a problem already."""
    found = cross_field_problems(rf, reported)
    return found + union_shadow_problems(rf, reported | {p.line for p in found})


def lint_text(text: str, path: Path) -> tuple[RuleFile | None, list[Problem]]:
    rf, problems = parse_rule_text(text, path)
    if rf is None:
        return None, problems
    found = coverage_problems(rf)
    found += more_problems(rf, {p.line for p in found})
    return rf, found + engine_problems(rf)


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
    rule_id: str | None = None          # the rule that decided it (None: the example is malformed)
    warnings: tuple[str, ...] = ()      # the warning rules that matched


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
            try:      # amounts: the one amount reader, into øre; dates: YYYY-MM-DD; tags: words
                fact[k] = example_value(FIELDS[k], v)
            except ValueError as exc:
                bad.append(f"{k}: {exc}")
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
                                     f"{out.decision} by {out.rule_id}", out.rule_id, tuple(got_w)))
    return results
