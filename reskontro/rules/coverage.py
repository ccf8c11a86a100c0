"""`rules coverage`: for each rule, how many entries it decides (or warns on) tonight and over
the whole ledger, and how many examples test it; the rules that decide nothing and the rules
without an example first, since those are the ones to look at.

Tonight: the entries not yet delivered or in flight, as `plan` counts them. An example tests a
rule when the rule decides it (or, for a warning, warns on it).
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from sqlalchemy import Connection

from reskontro.rules.decide import decide_ledger
from reskontro.rules.engine import RuleEngine


@dataclass
class RuleCoverage:
    rule_id: str
    line: int
    kind: str                 # decision (transfer, wait, exclude, hold) or "warning"
    tonight: int = 0
    whole: int = 0
    examples: int = 0

    @property
    def idle(self) -> bool:
        """Decides (or warns on) no entry of the whole ledger."""
        return self.whole == 0

    @property
    def untested(self) -> bool:
        return self.examples == 0


def rule_coverage(conn: Connection, engine: RuleEngine, mode: str, examples: list | None, *,
                  today: date | None = None) -> list[RuleCoverage]:
    """One line per rule, then the default; `examples`: rules.lint.ExampleResult of the
    examples file (None: there is none). Ordered: idle rules first, then those without an
    example, then the rest, each group in file order."""
    rf = engine.rule_file
    rows = {r.id: RuleCoverage(r.id, r.line, r.decision or "warning") for r in rf.rules}
    rows["default"] = RuleCoverage("default", rf.default_line, rf.default_decision)
    for d in decide_ledger(conn, engine, mode, today=today):
        o = d.outcome
        tonight = d.entry["sent_version"] != d.entry["version"]     # as `plan` counts
        hit = [rows[o.rule_id]] + [rows[w] for w, _ in o.warnings]
        for row in hit:
            row.whole += 1
            row.tonight += tonight
    for ex in examples or ():
        for rid in ((ex.rule_id,) if ex.rule_id else ()) + tuple(ex.warnings):
            if rid in rows:
                rows[rid].examples += 1
    at = {rid: i for i, rid in enumerate(rows)}          # file order, the default last
    return sorted(rows.values(), key=lambda r: (not r.idle, not r.untested, at[r.rule_id]))
