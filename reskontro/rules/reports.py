"""What the rules make of the ledger: the plan (tonight's decisions summed up), one entry's
explanation, and the data-quality report per customer."""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import date
from decimal import Decimal

from sqlalchemy import Connection

from reskontro.domain.amount import format_amount
from reskontro.rules.decide import Decided, decide_ledger, goes_tonight
from reskontro.domain import from_ore
from reskontro.rules.engine import Explanation, Outcome, RuleEngine
from reskontro.rules.facts import CUSTOMER_CHECK_FIELDS


@dataclass
class PlanLine:
    decision: str
    rule_id: str
    reason: str
    count: int = 0
    amounts: dict[str, Decimal] = field(default_factory=lambda: defaultdict(Decimal))


@dataclass
class Plan:
    lines: dict[tuple[str, str], PlanLine] = field(default_factory=dict)
    warnings: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))
    entries: int = 0
    # the rules' own reasons: a line sums many entries, and an entry's reason may name its records
    reasons: dict[str, str] = field(default_factory=dict)

    def add(self, d: Decided) -> None:
        o = as_planned(d)
        line = self.lines.get((o.decision, o.rule_id))
        if line is None:
            line = self.lines[(o.decision, o.rule_id)] = PlanLine(
                o.decision, o.rule_id, self.reasons.get(o.rule_id, o.reason))
        line.count += 1
        line.amounts[d.entry["currency"]] += from_ore(d.entry["amount_ore"])
        for w in o.warnings:
            self.warnings[w] += 1
        self.entries += 1

    def totals(self) -> dict[str, int]:
        out: dict[str, int] = defaultdict(int)
        for line in self.lines.values():
            out[line.decision] += line.count
        return dict(out)

    def as_json(self) -> dict:
        return {
            "entries": self.entries,
            "totals": self.totals(),
            "lines": [{"decision": l.decision, "rule": l.rule_id, "reason": l.reason, "count": l.count,
                       "amounts": {c: format_amount(a) for c, a in sorted(l.amounts.items())}}
                      for l in sorted(self.lines.values(), key=lambda l: (l.decision, -l.count))],
            "warnings": [{"rule": r, "text": t, "count": n} for (r, t), n in sorted(self.warnings.items())],
        }


_NOT_SENDABLE = {
    False: "The rules decide transfer, but Lowell already has another version of this entry and "
           "never accepts a changed one: it cannot go (keep a changed-after-sent rule in the rule file).",
    True: "The rules decide transfer, but a reversal is never transferred: it cannot go.",
}


def as_planned(d: Decided) -> Outcome:
    """The decision as the plan counts it: one decided transfer that the export cannot write
    is a hold (`<rule>:not-sendable`), never counted as going."""
    o = d.outcome
    if o.decision == "transfer" and not goes_tonight(d):
        return replace(o, decision="hold", rule_id=f"{o.rule_id}:not-sendable",
                       reason=_NOT_SENDABLE[d.entry["type"] == "reversal"])
    return o


def is_unsent(d: Decided) -> bool:
    """Not delivered or in flight as it is now: the plan's business (and held's, excluded's)."""
    return d.entry["sent_version"] != d.entry["version"]


def make_plan(conn: Connection, engine: RuleEngine, mode: str, *, only_pending: bool = False,
              unsent: bool = True, backlog: bool = False,
              progress: Callable[[int], None] | None = None, today: date | None = None) -> Plan:
    """Decisions summed up: of the entries not yet delivered or in flight (`unsent`), from the
    whole ledger or only the groups with pending changes. Its transfer count is what the next
    export writes (`backlog`: what the backlog file would)."""
    plan = Plan(reasons={r.id: r.reason for r in engine.rule_file.rules if r.reason})
    plan.reasons["default"] = engine.rule_file.default_reason
    for i, d in enumerate(decide_ledger(conn, engine, mode, only_pending=only_pending, backlog=backlog,
                                        today=today), 1):
        if unsent and not is_unsent(d):
            continue          # delivered or in flight: not tonight's business
        plan.add(d)
        if progress and i % 10000 == 0:
            progress(i)
    return plan


def explain_entry(conn: Connection, engine: RuleEngine, mode: str, entry_id: str, *,
                  today: date | None = None) -> Explanation | None:
    for d in decide_ledger(conn, engine, mode, entry_ids=[entry_id], today=today):
        if d.entry["id"] == entry_id:
            # the decision as deciding made it (its reason names the records it is about)
            return replace(engine.explain(d.fact), outcome=d.outcome, detail=d.entry["bank_ref_conflict"])
    return None


@dataclass
class CustomerReport:
    customer_id: str
    name: str
    holds: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    warnings: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    reasons: dict[str, str] = field(default_factory=dict)


def customer_rules(engine: RuleEngine) -> set[str]:
    """Ids of the rules that read customer data checks (customer type, address, org no, name;
    not the customer's id or tags, which pick customers rather than find faults in them)."""
    return {r.id for r in engine.rule_file.rules
            if any(t.field in CUSTOMER_CHECK_FIELDS for t in r.when + tuple(x for a in r.any for x in a))}


def quality_report(conn: Connection, engine: RuleEngine, mode: str, *, today: date | None = None,
                   progress: Callable[[int], None] | None = None) -> list[CustomerReport]:
    """Customers whose data holds or warns entries: what to fix in the ERP, per customer."""
    about_customers = customer_rules(engine)
    out: dict[str, CustomerReport] = {}
    for i, d in enumerate(decide_ledger(conn, engine, mode, today=today), 1):
        if progress and i % 10000 == 0:
            progress(i)
        o = d.outcome
        is_hold = o.decision == "hold" and o.rule_id in about_customers
        warns = [(r, t) for r, t in o.warnings if r in about_customers]
        if not is_hold and not warns:
            continue
        cid = d.customer["id"]
        rep = out.get(cid)
        if rep is None:
            rep = out[cid] = CustomerReport(cid, d.customer["name"])
        if is_hold:
            rep.holds[o.rule_id] += 1
            rep.reasons[o.rule_id] = o.reason
        for r, t in warns:
            rep.warnings[r] += 1
            rep.reasons[r] = t
    return sorted(out.values(), key=lambda r: r.customer_id)
