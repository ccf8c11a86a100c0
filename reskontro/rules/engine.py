"""The rules engine: a rule file compiled into a durable_rules ruleset, one Host per engine.

durable_rules decides. For speed the engine remembers its answer for facts that look alike to
the rules (same values in every field some rule reads; for a field with many values, such as
an amount or a date, the same place among the values the rules compare it with): a ledger of
a million entries holds only a few hundred such shapes, so the engine is asked once per shape,
not once per entry.
"""
from __future__ import annotations

import copy
import hashlib
import itertools
from bisect import bisect_left
from dataclasses import dataclass
from operator import itemgetter

from durable import engine as durable

from reskontro.domain import Decision
from reskontro.rules.facts import FIELDS
from reskontro.rules.rulefile import Rule, RuleFile, Test

RULESET = "transfer"
_CACHE_LIMIT = 100_000   # shapes remembered; bounded so memory stays flat on odd ledgers


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
    if t.op == "in":
        return {"$or": [{f: x} for x in v]} if len(v) > 1 else {f: v[0]}
    if t.op == "not_in":
        return {"$and": [{"$neq": {f: x}} for x in v]}
    return {"$" + {"lt": "lt", "le": "lte", "gt": "gt", "ge": "gte"}[t.op]: {f: v}}


def compile_rules(rf: RuleFile) -> dict:
    """The durable_rules JSON ruleset. Priority = order in the file (lower pri runs first).

    Every rule starts with ``t == 'entry'``: a rule with only negative conditions would also
    match durable_rules' own state fact and fire forever (engineering notes, 1.6)."""
    rules = {}
    for pri, rule in enumerate(rf.rules, 1):
        conds: list[dict] = [{"t": "entry"}] + [_test_json(t) for t in rule.when]
        if rule.any:
            alts = [{"$and": [_test_json(t) for t in alt]} if alt else {"t": "entry"} for alt in rule.any]
            conds.append({"$or": alts})
        rules[f"r{pri}"] = {"pri": pri, "all": [{"m": {"$and": conds}}], "run": f"r{pri}"}
    return {RULESET: rules}


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
        # durable mutates the definition it is given: keep ours pristine for inspection.
        self.definition = compile_rules(rf)
        self._host = _Host(actions, copy.deepcopy(self.definition))
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
        try:
            self._host.assert_fact(RULESET, f)
        except durable.MessageNotHandledException:
            return []
        else:
            self._host.retract_fact(RULESET, f)
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
