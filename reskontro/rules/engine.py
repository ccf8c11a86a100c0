"""The rules engine: a rule file compiled into durable_rules rulesets, one Host per engine.

durable_rules decides. For speed the engine remembers its answer for facts that look alike to
the rules (same values in every field some rule reads; for a field with many values, such as
an amount or a date, the same place among the values the rules compare it with): a ledger of
a million entries holds only a few hundred such shapes, so the engine is asked once per shape,
not once per entry.

durable_rules 2.0.28 (src/rules/ in its sdist) builds a tree of test nodes with fixed-size
tables, and two of them do not fail cleanly when full: a node keeps its child tests in a
512-slot hash set (NEXT_BUCKET_LENGTH) that `findAlpha` probes with no stop, so the 513th
distinct test under one node makes create_ruleset loop forever (every rule starts with
t == entry, so 513 rules whose first tests differ are enough: `rules lint` and `plan` hung);
and matching a fact visits the tree depth first with the pending nodes on a 64-slot stack
(MAX_STACK_SIZE), so a fact that passes too many tests side by side fails with error 303.
So the rules are split, in file order, into as many rulesets as it takes to keep each well
within those tables, counted from the JSON before durable_rules sees it (`_Cost`); a fact is
asserted into each. A single rule beyond them is refused, naming its line.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import weakref
from bisect import bisect_left
from dataclasses import dataclass
from operator import itemgetter

import durable_rules_engine
from durable import engine as durable

from reskontro.domain import Decision
from reskontro.rules.facts import FIELDS
from reskontro.rules.rulefile import Problem, Rule, RuleFile, RuleFileError, Test

RULESET = "transfer"     # the first ruleset's name; the others are transfer_2, transfer_3, ...
_CACHE_LIMIT = 100_000   # shapes remembered; bounded so memory stays flat on odd ledgers
# What one ruleset may use of durable_rules' fixed tables (rete.h, rules.h, events.c):
_STACK = 64              # MAX_STACK_SIZE 64: test nodes pending while one fact is matched (303)
_NODES = 511             # NEXT_BUCKET_LENGTH 512: child tests of one node (full: create_ruleset hangs)
_LINKS = 127             # NEXT_LIST_LENGTH 128: $or joins linked from one node (107)
_MARKERS = 31            # MAX_SEQUENCE_EXPRESSIONS 32, per rule: $and/$or opened and closed (113)
_RULES_PER_SET = 64      # BETA_LIST_LENGTH 256: rules ending at one node (108)


class RuleEngineError(RuntimeError):
    """An action failed inside durable_rules (which would otherwise swallow the exception)."""


@dataclass(frozen=True, slots=True)
class Outcome:
    decision: str
    rule_id: str
    reason: str
    warnings: tuple[tuple[str, str], ...]

    def for_entry(self, entry_id: str) -> Decision:
        return Decision(entry_id, self.decision, self.rule_id, self.reason, self.warnings)


@dataclass(frozen=True)
class Explanation:
    fact: dict
    outcome: Outcome
    matched: tuple[Rule, ...]          # every rule whose conditions hold, in file order
    detail: str | None = None          # what the ledger notes beside the facts (a bank-ref conflict)


class _Host(durable.Host):
    """A Host of its own: actions bound by name, and no background dispatch threads (we only
    assert synchronously; durable's Host starts two self-rescheduling timers that never stop)."""

    def __init__(self, actions: dict, rulesets: dict):
        self._actions = actions            # must exist before Host.__init__ registers rulesets
        super().__init__(rulesets)

    def get_action(self, action_name):
        return self._actions[action_name]

    def _run(self):
        pass


def _word_key(word: str) -> str:
    """The fact key durable_rules sees for one tag a rule tests (true when the customer has
    it): a digest of the word, so that no character of it ('.', '$') means anything there."""
    return "tag_" + hashlib.blake2b(word.encode(), digest_size=8).hexdigest()


def _test_json(t: Test) -> dict:
    f, v = t.field, t.value
    if t.op in ("has", "has_not"):
        return {_word_key(v): t.op == "has"}
    if t.op == "has_any":
        return {"$or": [{_word_key(w): True} for w in v]} if len(v) > 1 else {_word_key(v[0]): True}
    if t.op == "has_none":
        return {"$and": [{_word_key(w): False} for w in v]} if len(v) > 1 else {_word_key(v[0]): False}
    if t.op == "eq":
        return {f: v}
    if t.op == "not":
        return {"$neq": {f: v}}
    v = tuple(dict.fromkeys(v)) if t.op in ("in", "not_in") else v   # a value twice: once
    if t.op == "in":
        return {"$or": [{f: x} for x in v]} if len(v) > 1 else {f: v[0]}
    if t.op == "not_in":
        return {"$and": [{"$neq": {f: x}} for x in v]}
    return {"$" + {"lt": "lt", "le": "lte", "gt": "gt", "ge": "gte"}[t.op]: {f: v}}


def _rule_json(rule: Rule) -> dict:
    """One rule's pattern. Every rule starts with ``t == 'entry'``: a rule with only negative
    conditions would also match durable_rules' own state fact and fire forever (engineering
    notes, 1.6)."""
    conds: list[dict] = [{"t": "entry"}] + [_test_json(t) for t in rule.when]
    if rule.any:
        alts = [{"$and": [_test_json(t) for t in alt]} if len(alt) > 1 else
                _test_json(alt[0]) if alt else {"t": "entry"} for alt in rule.any]
        conds.append({"$or": alts})
    return {"$and": conds}


@dataclass(frozen=True)
class _Cost:
    """What one rule takes of a ruleset's tables, counted on its own (durable_rules shares an
    equal test under the same parent between rules, which only lowers the figures).

    stack: the most of this rule's test nodes pending on the match stack at once. A fact is
      matched depth first: a node is popped, then all its matching children are pushed; so
      for one rule it is the most, over its nodes x, of (matching children - 1) summed over
      x's ancestors plus x's matching children. In a ruleset a node's children are its rules'
      children together, and a rule's nodes on any path from the root are a prefix of that
      path (a node's parent is always of the same rule), so the ruleset's stack is at most
      the sum of its rules' figures. An `in` list's tests are equalities on one field with
      different values: one at most matches; `any` alternatives can all match. An $or's
      alternatives each push the join node ($forward) below which the rest of the rule
      hangs, so the rest is visited once per alternative that matched.
    nodes, links: test nodes, and links into $or joins; they bound the children, and the
      joins, of any one node.
    markers: the rule's $and/$or opened and closed."""
    stack: int
    nodes: int
    links: int
    markers: int


_JOIN = {"$join": 1}     # an $or's join node, in _span: a test node that is always pushed


def _span(seq: list) -> tuple[int, int]:
    """(children pushed at once, the most the one on top adds) for a node whose children in
    this rule are the first nodes of seq[0], with seq[1:] below."""
    if not seq:
        return 0, 0
    head, rest = seq[0], seq[1:]
    if "$and" in head:
        return _span(head["$and"] + rest)
    if "$or" in head:
        alts = head["$or"]
        # {f: v1}, {f: v2}, ... (an in list): equalities on one field, different values
        keys = {k for a in alts for k in a}
        exclusive = (len(keys) == 1 and not next(iter(keys)).startswith("$")
                     and len({json.dumps(a) for a in alts}) == len(alts))
        spans = [_span([a, _JOIN] + rest) for a in alts]
        pushed = max(p for p, _ in spans) if exclusive else sum(p for p, _ in spans)
        return pushed, max(s for _, s in spans)
    return 1, _height(*_span(rest))          # one test node, the rest below it


def _height(pushed: int, most: int) -> int:
    """The stack a node adds: its pushed children, or all but one of them plus the most the
    one processed on top adds (each child is popped before its own children are pushed)."""
    return max(pushed, pushed - 1 + most) if pushed else 0


def _count(expr) -> tuple[int, int, int]:
    """(test nodes, $or links, markers) of a JSON condition."""
    if "$and" in expr or "$or" in expr:
        parts = [_count(e) for e in next(iter(expr.values()))]
        nodes, links, markers = (sum(x) for x in zip(*parts)) if parts else (0, 0, 0)
        if "$or" in expr:
            nodes, links = nodes + 1, links + len(parts)
        return nodes, links, markers + 2
    return 1, 0, 0


def _rule_cost(pattern: dict) -> _Cost:
    conds = pattern["$and"]
    nodes, links, markers = _count({"$and": conds[1:]})       # t == entry: one node for all
    return _Cost(_height(*_span(conds[1:])), nodes, links, markers)


def rule_costs(rf: RuleFile, patterns: list[dict] | None = None) -> tuple[list[_Cost], list[Problem]]:
    """Each rule's share of a ruleset's tables, and the rules no ruleset can take."""
    costs, problems = [], []
    for rule, pattern in zip(rf.rules, patterns or [_rule_json(r) for r in rf.rules]):
        c = _rule_cost(pattern)
        why = None
        if c.stack > _STACK:
            why = (f"durable_rules may have to hold {c.stack} of its tests pending at once, at most {_STACK} "
                   "(each any alternative counts, with the tests that follow it)")
        elif c.markers > _MARKERS:
            why = (f"{c.markers // 2} groups of conditions (the rule, its any, each alternative with more than one "
                   f"test, each in and not_in list), durable_rules takes at most {_MARKERS // 2}")
        elif c.nodes > _NODES or c.links > _LINKS:
            why = (f"its any alternatives and in lists make {c.nodes} tests and {c.links} joins, durable_rules "
                   f"takes at most {_NODES} and {_LINKS}")
        if why:
            problems.append(Problem(rf.path, rule.line, f"{rule.id}: too complex for the rules engine: {why}; "
                                    "split it into several rules"))
        costs.append(c)
    return costs, problems


def compile_rules(rf: RuleFile) -> dict:
    """The durable_rules JSON rulesets, {name: {rule name: rule}}: the rules in file order, a
    new ruleset whenever the next rule would take one past durable_rules' limits. Rule
    ``r<n>`` is the file's n-th rule; priority = order in the file (lower pri runs first).
    Raises RuleFileError naming each rule too complex for any ruleset."""
    patterns = [_rule_json(r) for r in rf.rules]
    costs, problems = rule_costs(rf, patterns)
    if problems:
        raise RuleFileError(problems)
    rulesets: dict[str, dict] = {}
    current: dict = {}
    used = _Cost(0, 0, 0, 0)
    for pri, (pattern, c) in enumerate(zip(patterns, costs), 1):
        if current and (used.stack + c.stack > _STACK or used.nodes + c.nodes > _NODES
                        or used.links + c.links > _LINKS or len(current) == _RULES_PER_SET):
            rulesets[_ruleset_name(len(rulesets))] = current
            current, used = {}, _Cost(0, 0, 0, 0)
        current[f"r{pri}"] = {"pri": pri, "all": [{"m": pattern}], "run": f"r{pri}"}
        used = _Cost(used.stack + c.stack, used.nodes + c.nodes, used.links + c.links, 0)
    rulesets[_ruleset_name(len(rulesets))] = current
    return rulesets


def _ruleset_name(index: int) -> str:
    return RULESET if index == 0 else f"{RULESET}_{index + 1}"


def _free(handles: list[int]) -> None:
    """Release durable_rules' C rulesets, which its Host never does (about 300 KB each). Not
    their state (delete_state): after a fact no rule matched it frees a message twice."""
    for handle in handles:
        durable_rules_engine.delete_ruleset(handle)


def _fields_read(rf: RuleFile) -> tuple[str, ...]:
    used = {t.field for r in rf.rules for t in r.when}
    used |= {t.field for r in rf.rules for alt in r.any for t in alt}
    return tuple(f for f in FIELDS if f in used)


def _constants(rf: RuleFile) -> dict[str, set]:
    """Per field: the values the rules compare it with."""
    out: dict[str, set] = {}
    for r in rf.rules:
        for t in r.when + tuple(x for alt in r.any for x in alt):
            out.setdefault(t.field, set()).update(t.value if isinstance(t.value, tuple) else (t.value,))
    return out


def _cell(field: str, constants: set):
    """What the rules can tell of a value of `field` (one with many values): where it lies
    among their constants. Every test is a comparison (=, !=, <, <=, >, >=) with one of them,
    so two values in the same cell meet the same tests. Numbers and dates: the gap between
    two constants, or a constant itself; text: the constant it equals, or none of them."""
    if FIELDS[field].kind == "text":
        known = frozenset(constants)
        return lambda v: v if v in known else None
    cuts = sorted(constants)
    n = len(cuts)

    def cell(v, _cuts=cuts, _n=n) -> int:
        i = bisect_left(_cuts, v)
        return 2 * i + (i < _n and _cuts[i] == v)
    return cell


def _shape_key(plain: tuple[str, ...], cells: tuple, words: frozenset):
    """The cache key of a fact: its values in `plain`, the cells of the `cells` fields, the
    tested `words` it has. Made as one flat function (a million calls: no loop inside)."""
    names = {f"c{i}": cell for i, (_, cell) in enumerate(cells)}
    names["W"] = words
    parts = [f"f[{k!r}]" for k in plain] + [f"c{i}(f[{k!r}])" for i, (k, _) in enumerate(cells)]
    if words:
        parts.append('W.intersection(f["tags"])')
    return eval(f"lambda f: ({', '.join(parts)},)", names)  # noqa: S307 - field names from FIELDS only


def _words_read(rf: RuleFile) -> tuple[str, ...]:
    """The tags some rule tests: the engine asks durable_rules about these only, and the
    cache tells facts apart by them only (not by every customer's whole list)."""
    words: set[str] = set()
    for r in rf.rules:
        for t in r.when + tuple(x for alt in r.any for x in alt):
            if FIELDS[t.field].kind == "words":
                words.update(t.value if isinstance(t.value, tuple) else (t.value,))
    return tuple(sorted(words))


class RuleEngine:
    """Decides entries with one rule file. Not thread-safe: one engine per worker."""

    def __init__(self, rf: RuleFile):
        self.rule_file = rf
        self._fired: list[int] = []
        self._error: BaseException | None = None
        actions = {f"r{i}": self._action(i) for i in range(1, len(rf.rules) + 1)}
        # durable mutates the definition it is given: keep ours pristine for inspection
        # (a copy through JSON: 10x faster than deepcopy on a long file, and it is JSON)
        self.definition = compile_rules(rf)
        self._rulesets = tuple(self.definition)
        self._host = _Host(actions, json.loads(json.dumps(self.definition)))
        # the C rulesets go when the host does (never while it can still be used)
        weakref.finalize(self._host, _free, [r._handle for r in self._host._ruleset_list])
        self._ids = itertools.count()
        self.fields = _fields_read(rf)
        self._key = itemgetter(*self.fields) if len(self.fields) > 1 else (
            (lambda f, _k=self.fields[0]: (f[_k],)) if self.fields else (lambda f: ()))
        self.words = _words_read(rf)
        many = tuple(k for k in self.fields if FIELDS[k].many)
        if self.words or many:
            # Amounts, dates, ids: by their cell among the rules' constants; tags: by which of
            # the words the rules test are there. Not by the value: a million amounts would
            # be a million shapes, each asked of durable_rules.
            constants = _constants(rf)
            self._key = _shape_key(tuple(k for k in self.fields if not FIELDS[k].many and FIELDS[k].kind != "words"),
                                   tuple((k, _cell(k, constants[k])) for k in many), frozenset(self.words))
        self._cache: dict[tuple, Outcome] = {}
        self.engine_calls = 0
        self._default = Outcome(rf.default_decision, "default", rf.default_reason, ())

    def _action(self, index: int):
        def action(c):        # one parameter: durable runs it synchronously
            try:
                self._fired.append(index)
            except BaseException as exc:  # pragma: no cover - surfaced, never swallowed
                self._error = exc
        return action

    def _ask(self, fact: dict) -> list[Rule]:
        """Assert the fact, collect every rule that fired (in priority order), retract it."""
        self.engine_calls += 1
        f = {k: fact[k] for k in self.fields}
        if self.words:
            tags = f.pop("tags", ())
            f.update((_word_key(w), w in tags) for w in self.words)
        f["t"] = "entry"
        f["_n"] = next(self._ids)       # facts with equal content are one fact to durable_rules
        self._fired.clear()
        self._error = None
        for name in self._rulesets:
            try:
                self._host.assert_fact(name, f)
            except durable.MessageNotHandledException:
                continue
            self._host.retract_fact(name, f)
        if self._error is not None:
            raise RuleEngineError(f"a rule action failed: {self._error!r}") from self._error
        # a rule whose `any` alternatives hold twice fires once per alternative: count it once
        return [self.rule_file.rules[i - 1] for i in sorted(set(self._fired))]

    def _outcome(self, matched: list[Rule]) -> Outcome:
        warnings = tuple((r.id, r.warning) for r in matched if r.warning is not None)
        for r in matched:
            if r.decision is not None:
                return Outcome(r.decision, r.id, r.reason, warnings)
        d = self._default
        return Outcome(d.decision, d.rule_id, d.reason, warnings)

    def decide(self, fact: dict) -> Outcome:
        key = self._key(fact)
        out = self._cache.get(key)
        if out is None:
            out = self._outcome(self._ask(fact))
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            self._cache[key] = out
        return out

    def explain(self, fact: dict) -> Explanation:
        matched = self._ask(fact)
        return Explanation(dict(fact), self._outcome(matched), tuple(matched))

    def decide_uncached(self, fact: dict) -> Outcome:
        """The naive path: every fact goes to durable_rules, nothing remembered (benchmarks)."""
        return self._outcome(self._ask(fact))
