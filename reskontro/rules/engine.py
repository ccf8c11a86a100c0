"""The rules engine: a rule file compiled into a durable_rules ruleset, one Host per engine.

durable_rules decides. For speed the engine remembers its answer for facts that look alike to
the rules (same values in every field some rule reads): a ledger of a million entries holds only
a few hundred such shapes, so the engine is asked once per shape, not once per entry.
"""
from __future__ import annotations

import copy
import itertools
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


def _test_json(t: Test) -> dict:
    f, v = t.field, t.value
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
