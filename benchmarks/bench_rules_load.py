"""Linting and loading long rule files: seconds for 100, 600 and 2,000 rules, and the ratio
per rule against the 100-rule file and the shipped rules/transfer.yaml, in the same run.

Target (issue 10, point 8): a file of 2,000 rules lints (`rules lint`: parse, the pairwise
shadow analysis, compiling it) and loads (what `plan` and every engine command do) in under
10 s each. Before the fix 513 rules whose first tests differ made durable_rules' create_ruleset
loop forever (a full 512-slot hash set probed without a stop), so 600 never finished.

Two kinds of file, both the worst case for lint (nothing is shadowed, so each rule is compared
with every earlier one, and all share their enum fields, so the comparison reaches the numbers):
  distinct  rule i: {entry_type: invoice, dunning_level: i}                 (the shape that hung)
  mixed     rule i: thresholds, an in list, a not_in list and two any alternatives; every
            third rule a warning

    .venv/bin/python benchmarks/bench_rules_load.py [--sizes 100,600,2000]
"""
from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from reskontro.rules.engine import RuleEngine  # noqa: E402
from reskontro.rules.facts import DEFAULT_FACT  # noqa: E402
from reskontro.rules.lint import lint_file  # noqa: E402
from reskontro.rules.rulefile import load_rule_file  # noqa: E402

TARGET_S = 10.0
HEAD = "default: {decision: wait, reason: Nothing decided.}\nrules:\n"


def distinct(n: int) -> str:
    return HEAD + "".join(
        f"  - id: level-{i}\n    when: {{entry_type: invoice, dunning_level: {i}}}\n"
        f"    decision: hold\n    reason: The ERP has sent reminder {i}.\n" for i in range(n))


def mixed(n: int) -> str:
    out = [HEAD]
    for i in range(n):
        lo = n - i                     # later rules reach lower: never inside an earlier one
        out.append(
            f"  - id: mixed-{i}\n"
            f"    when:\n"
            f"      entry_type: [invoice, payment, credit_note]\n"
            f"      amount: {{gt: {lo}, le: {lo + 5000}}}\n"
            f"      dunning_level: {{not_in: [{i}, {i + 1}, {i + 2}]}}\n"
            f"      any: [{{kid: valid, customer_type: business}}, {{match_shape: [one_to_one, none]}}]\n"
            + ("    warning: Look at it.\n" if i % 3 == 0 else
               f"    decision: {('hold', 'wait', 'exclude')[i % 3]}\n    reason: Rule {i} says so.\n"))
    return "".join(out)


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(path: Path) -> dict:
    t0 = time.perf_counter()
    rf, problems = lint_file(path)
    t_lint = time.perf_counter() - t0
    assert rf is not None and problems == [], problems[:3]
    t0 = time.perf_counter()
    engine = RuleEngine(load_rule_file(path))
    t_load = time.perf_counter() - t0
    facts = [dict(DEFAULT_FACT, amount=a, dunning_level=d, kid=k)
             for a in (0, 150, 1000, 500000) for d in (0, 3, 1999) for k in ("valid", "absent")]
    t0 = time.perf_counter()
    for f in facts:
        engine.decide_uncached(f)
    t_ask = (time.perf_counter() - t0) / len(facts)
    return {"rules": len(rf.rules), "lint": t_lint, "load": t_load, "ask": t_ask,
            "rulesets": len(engine.definition)}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="100,600,2000")
    args = ap.parse_args()
    sizes = [int(x) for x in args.sizes.split(",")]

    shipped = measure(ROOT / "rules" / "transfer.yaml")
    print(f"shipped rules/transfer.yaml ({shipped['rules']} rules): lint {shipped['lint']:.3f} s, "
          f"load {shipped['load']:.3f} s, {shipped['rulesets']} ruleset(s)")
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        for kind, make in (("distinct", distinct), ("mixed", mixed)):
            base = None
            for n in sizes:
                path = Path(tmp) / f"{kind}-{n}.yaml"
                path.write_text(make(n), encoding="utf-8")
                m = measure(path)
                base = base or m
                per_rule = (m["lint"] + m["load"]) / n
                base_per_rule = (base["lint"] + base["load"]) / base["rules"]
                met = m["lint"] < TARGET_S and m["load"] < TARGET_S
                ok &= met
                print(f"{kind:8} {n:>5} rules ({path.stat().st_size / 1024:,.0f} KiB): lint {m['lint']:6.2f} s, "
                      f"load {m['load']:5.2f} s ({m['rulesets']} rulesets), one durable_rules call "
                      f"{m['ask'] * 1000:.2f} ms; per rule {per_rule / base_per_rule:.1f}x the {base['rules']}-rule "
                      f"file, {per_rule / ((shipped['lint'] + shipped['load']) / shipped['rules']):.1f}x the "
                      f"shipped file{'' if met else '  <- over ' + str(TARGET_S) + ' s'}")
    print(f"peak RSS {rss_mib():.0f} MiB")
    print(f"target (2,000 rules lint and load in < {TARGET_S:.0f} s each):", "met" if ok else "NOT met")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
