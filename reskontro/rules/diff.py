"""`rules diff`: what a candidate rule file would decide differently from the rules in force.

One pass over the whole ledger: the facts of each entry are computed once and both engines
asked (decide.decide_ledger_with), so the candidate sees exactly the ledger the rules in force
see. Each engine remembers its outcome per fact shape, so the second costs little. Nothing is
written.

A change is an entry whose decision, or the rule that decides it, differs. Changes are summed
per (from, to) decision with their amounts, and listed entry by entry (up to `limit` per
(from, to); every change of an entry Lowell already has is listed, with when Lowell got it:
a file cannot take an entry back, so someone must tell Lowell).

A big ledger in a SQLite file is shared with a second process (the machine's second core):
it decides the unmatched entries and the first match groups, this one the rest; should it
fail, this one decides its part too. Run as ``python -m reskontro.rules.diff`` it is that
process: the job pickled on stdin, its tally pickled on stdout.
"""
from __future__ import annotations

import logging
import os
import pickle
import subprocess
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timezone, tzinfo
from decimal import Decimal
from pathlib import Path

from sqlalchemy import Connection, func, select

from reskontro.domain import from_ore
from reskontro.ledger import schema as s
from reskontro.rules.decide import decide_ledger_with
from reskontro.rules.engine import RuleEngine
from reskontro.rules.history import rules_digest

log = logging.getLogger(__name__)

_ORDER = {"transfer": 0, "hold": 1, "wait": 2, "exclude": 3}
#: From this many entries (in a SQLite file) a second process decides part of the ledger.
PARALLEL_FROM = 200_000


@dataclass
class EntryChange:
    entry_id: str
    customer_id: str
    amount_ore: int
    currency: str
    old_decision: str
    old_rule: str
    new_decision: str
    new_rule: str
    new_reason: str
    lowell: str | None = None        # the entry's state at Lowell: delivered | in_flight (None: not there)
    file_id: str | None = None       # the file that carried the version Lowell has
    file_date: date | None = None

    @property
    def amount(self) -> Decimal:
        return from_ore(self.amount_ore)

    @property
    def tell_lowell(self) -> str | None:
        """What to do about Lowell, for an entry Lowell has that would no longer go."""
        if self.lowell is None or self.new_decision == "transfer":
            return None
        now = {"exclude": "excluded", "hold": "held", "wait": "waiting"}[self.new_decision]
        when = f" on {self.file_date.isoformat()}" if self.file_date else ""
        what = "delivered" if self.lowell == "delivered" else "in flight"
        return f"now {now}, but {what}{when} (file {self.file_id}): tell Lowell"


@dataclass
class ChangeLine:
    old: str
    new: str
    count: int = 0
    amounts: dict[str, Decimal] = field(default_factory=lambda: defaultdict(Decimal))
    entries: list[EntryChange] = field(default_factory=list)   # up to `limit`, and every one Lowell has


@dataclass
class RulesDiff:
    base_digest: str
    candidate_digest: str
    entries: int = 0
    lines: dict[tuple[str, str], ChangeLine] = field(default_factory=dict)
    engine_calls: tuple[int, int] = (0, 0)
    processes: int = 1

    @property
    def changed(self) -> int:
        return sum(l.count for l in self.lines.values())

    @property
    def tell_lowell(self) -> list[EntryChange]:
        return [c for l in self.sorted_lines() for c in l.entries if c.tell_lowell]

    def sorted_lines(self) -> list[ChangeLine]:
        return sorted(self.lines.values(), key=lambda l: (_ORDER[l.old], _ORDER[l.new], -l.count))


def _tally(decided, limit: int | None) -> tuple[int, dict]:
    """(entries, {(from, to): ChangeLine}) of a stream of (row, (old outcome, new outcome))."""
    lines: dict[tuple[str, str], ChangeLine] = {}
    n = 0
    for e, (a, b) in decided:
        n += 1
        if a is b or (a.decision == b.decision and a.rule_id == b.rule_id):
            continue
        key = (a.decision, b.decision)
        line = lines.get(key)
        if line is None:
            line = lines[key] = ChangeLine(*key)
        line.count += 1
        line.amounts[e["currency"]] += from_ore(e["amount_ore"])
        sent = e["sent_version"] is not None
        if sent or limit is None or len(line.entries) < limit:
            line.entries.append(EntryChange(e["id"], e["customer_id"], e["amount_ore"], e["currency"],
                                            a.decision, a.rule_id, b.decision, b.rule_id, b.reason,
                                            e["sent_state"] if sent else None))
    return n, lines


def _merge(into: dict, lines: dict, limit: int | None) -> None:
    for key, line in lines.items():
        have = into.get(key)
        if have is None:
            into[key] = line
            continue
        have.count += line.count
        for c, a in line.amounts.items():
            have.amounts[c] += a
        listed = sum(1 for x in have.entries if x.lowell is None)
        for x in line.entries:
            if x.lowell is not None or limit is None or listed < limit:
                have.entries.append(x)
                listed += x.lowell is None


def diff_rules(conn: Connection, base: RuleEngine, candidate: RuleEngine, mode: str, *,
               today: date | None = None, limit: int | None = None, tz: tzinfo = timezone.utc,
               db_url: str | None = None) -> RulesDiff:
    """The whole ledger decided by `base` and by `candidate`, and what differs. `limit`:
    entries listed per (from, to) besides those Lowell has (None: all); `tz`: the zone of
    the dates shown; `db_url`: the store's URL, so that a second process may take part of a
    big ledger."""
    out = RulesDiff(rules_digest(base.rule_file), rules_digest(candidate.rule_file))
    calls = (base.engine_calls, candidate.engine_calls)
    engines = (base, candidate)
    split = _split(conn, db_url)
    helper = None
    if split is not None:
        helper = _Helper((base.rule_file, candidate.rule_file, mode, db_url, today, limit, split))
    mine = dict(unmatched=False, match_range=(split, None)) if helper and helper.proc else {}
    out.entries, out.lines = _tally(decide_ledger_with(conn, engines, mode, today=today, **mine), limit)
    if mine:
        theirs = helper.result()
        if theirs is None:          # the helper failed: its part here
            theirs = _tally(decide_ledger_with(conn, engines, mode, today=today, matched=True,
                                               match_range=(None, split)), limit) + ((0, 0),)
        else:
            out.processes = 2
        n, lines, (c0, c1) = theirs
        out.entries += n
        calls = (calls[0] - c0, calls[1] - c1)
        _merge(lines, out.lines, limit)         # theirs come first: unmatched, then the first groups
        out.lines = lines
    out.engine_calls = (base.engine_calls - calls[0], candidate.engine_calls - calls[1])
    _when_lowell_got_it(conn, [c for l in out.lines.values() for c in l.entries if c.lowell], tz)
    return out


def _split(conn: Connection, db_url: str | None) -> str | None:
    """The match id from which this process decides (the helper: the unmatched entries and
    the groups before it), so that each gets about half; None: no helper (small ledger, not a
    SQLite file)."""
    if not db_url or conn.dialect.name != "sqlite" or ":memory:" in db_url or "mode=memory" in db_url \
            or db_url.rstrip("/") in ("sqlite:", "sqlite+pysqlite:"):
        return None
    e = s.entries
    total = conn.execute(select(func.count()).select_from(e)).scalar_one()
    if total < PARALLEL_FROM:
        return None
    unmatched = conn.execute(select(func.count()).select_from(e).where(e.c.match_id.is_(None))).scalar_one()
    skip = max(0, total // 2 - unmatched)
    return conn.execute(select(e.c.match_id).where(e.c.match_id.is_not(None)).order_by(e.c.match_id)
                        .offset(skip).limit(1)).scalar()


class _Helper:
    """The second process (``python -m reskontro.rules.diff``), started with its job."""

    def __init__(self, job: tuple) -> None:
        package_root = str(Path(__file__).resolve().parents[2])
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p))
        try:
            self.proc = subprocess.Popen([sys.executable, "-m", "reskontro.rules.diff"], stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
            stdin, self.proc.stdin = self.proc.stdin, None       # (communicate() must not touch it)
            with stdin:
                stdin.write(pickle.dumps(job, pickle.HIGHEST_PROTOCOL))
        except OSError as exc:
            log.warning("rules diff: no second process (%s); deciding the whole ledger here", exc)
            if getattr(self, "proc", None) is not None:
                self.proc.kill()
                self.proc.wait()
            self.proc = None

    def result(self):
        """(entries, lines, engine calls) of its part; None when it failed."""
        try:
            data, err = self.proc.communicate()
            if self.proc.returncode == 0:
                return pickle.loads(data)
            why = err.decode(errors="replace").strip().splitlines()[-1:] or [f"exit status {self.proc.returncode}"]
            log.warning("rules diff: the second process failed (%s); deciding its part here", why[0])
        except Exception as exc:  # noqa: BLE001 - any failure: its part is decided here
            log.warning("rules diff: the second process failed (%s); deciding its part here", exc)
        return None


def _main() -> int:
    from sqlalchemy import create_engine
    base_rf, cand_rf, mode, url, today, limit, split = pickle.load(sys.stdin.buffer)
    engines = (RuleEngine(base_rf), RuleEngine(cand_rf))
    db = create_engine(url, connect_args={"timeout": 30})
    try:
        with db.connect() as conn:
            n, lines = _tally(decide_ledger_with(conn, engines, mode, today=today, match_range=(None, split)), limit)
    finally:
        db.dispose()
    sys.stdout.buffer.write(pickle.dumps((n, lines, (engines[0].engine_calls, engines[1].engine_calls)),
                                         pickle.HIGHEST_PROTOCOL))
    return 0


def _when_lowell_got_it(conn: Connection, changes: list[EntryChange], tz: tzinfo) -> None:
    """The file (and its date) that carried the version Lowell has, from the journal."""
    st, f = s.sent, s.files
    by_id = {c.entry_id: c for c in changes}
    ids = list(by_id)
    for i in range(0, len(ids), 500):
        rows = conn.execute(select(st.c.id, st.c.file_id, f.c.created_at)
                            .join(f, f.c.file_id == st.c.file_id)
                            .where(st.c.kind == "entry", st.c.id.in_(ids[i:i + 500]))).all()
        for eid, fid, created in rows:
            c = by_id[eid]
            c.file_id = fid
            if isinstance(created, datetime):
                c.file_date = (created if created.tzinfo else created.replace(tzinfo=timezone.utc)).astimezone(tz).date()


if __name__ == "__main__":
    # as the module's own name: what it pickles must unpickle as reskontro.rules.diff's types
    from reskontro.rules.diff import _main as main
    raise SystemExit(main())
