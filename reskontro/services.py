"""The service layer: one plain function per thing a person or a job asks of the product.

Front ends (the CLI, the fleet worker; the support web page to come) parse their input, call
these, and show what comes back; they hold no SQL and no business rule. Each function takes
the creditor's context, a `Site` (its configuration, store and rules: a site folder's, or a
fleet creditor's from the registry, `creditor_site`), takes
the run lock where two at once could do harm, and returns plain results (dataclasses of the
stages below), never printed text.
"""
from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, TYPE_CHECKING

from reskontro.files.lock import run_lock
from reskontro.site import Site
from reskontro.support.explain import Explained   # noqa: F401  (explain's answer; the web page's type)

if TYPE_CHECKING:       # the answers' types (their modules load when first asked)
    from reskontro.fleet.registry import Fleet
    from reskontro.ledger.search import Found
    from reskontro.payments.by_hand import Dismissal, HandMatch
    from reskontro.payments.listing import PaymentPage
    from reskontro.rules.lists import KeptPage


def _lock(site: Site):
    """The run lock: export, send, fetch, post, correct-payment, match-payment, dismiss-payment
    and the cycle never overlap."""
    return run_lock(site.config.site / "var" / "reskontro.lock")


def _today(site: Site, now: datetime | None = None):
    """The run's date in the site's time zone (the rules' days_past_due counts from it)."""
    from reskontro.rules.decide import run_day
    return run_day(site.config.tz, now)


# --- the site ---------------------------------------------------------------------------------
def doctor(site_dir: Path, *, sftp: bool = True):
    """Is the site in `site_dir` ready to run? (doctor.Check each: check, ok, message; ok None
    when skipped). Changes nothing; `sftp=False` skips the network checks."""
    from reskontro.doctor import run_checks
    return run_checks(site_dir, sftp=sftp)


# --- the ledger -------------------------------------------------------------------------------
def import_ledger(site: Site, files: list[Path], progress: Callable[[Path, int], None] | None = None):
    """ERP exports into the store, each file all or nothing (ledger.importer.ImportResult each);
    `progress(path, i)` as file i starts."""
    from reskontro.ledger.importer import import_files
    return import_files(site.db, files, progress)


def write_sample(out: Path, customers: int, seed: int, *, force: bool = False,
                 progress: Callable[[int], None] | None = None) -> int:
    """A sample ledger into `out` (an existing file refused unless `force`): the records written."""
    from reskontro.ledger.sample import write_sample_file
    return write_sample_file(out, customers, seed, force=force, progress=progress)


# --- the rules --------------------------------------------------------------------------------
def lint_rules(paths: list[Path]):
    """[(path, problems)] for each rule file."""
    from reskontro.rules.lint import lint_file
    return [(p, lint_file(p)[1]) for p in paths]


@dataclass(frozen=True)
class ExampleRun:
    examples: Path | None         # None: no examples file beside the rule file
    problems: list                # the rule file's own problems (then nothing ran)
    results: list                 # rules.lint.ExampleResult each


def test_rules(path: Path) -> ExampleRun:
    from reskontro.rules.lint import examples_path, lint_file, run_examples
    rf, problems = lint_file(path)
    if rf is None:
        return ExampleRun(None, problems, [])
    ex = examples_path(path)
    if not ex.is_file():
        return ExampleRun(None, [], [])
    return ExampleRun(ex, [], run_examples(rf, ex))


def plan(site: Site, *, whole: bool = False, backlog: bool = False,
         progress: Callable[[int], None] | None = None):
    """What the next export writes (transfer), and what it keeps back and why."""
    from reskontro.rules.reports import make_plan
    with site.db.connect() as conn:
        return make_plan(conn, site.rules, site.config.mode, unsent=not whole, backlog=backlog,
                         progress=progress, today=_today(site))


def explain(site: Site, ident: str, *, history: bool = False) -> Explained | None:
    """Everything about the entry (or bank payment) `ident` names: the ledger's id, the ERP's id
    of an entry booked here, a bank payment's id or archive reference, a document number, a
    KID (support.explain.Explained: the rules' decision, delivery file by file, the fields
    changed after sent, the match and its history, actions by hand, the next step). None when
    it names nothing; support.resolve.AmbiguousId (an InputError with `candidates`) when it
    names several entries alike. `history`: with the decision changes the exports journaled
    for it (`decisions`)."""
    from dataclasses import replace

    from reskontro.rules.history import entry_history
    from reskontro.support.explain import explain as answer
    with site.db.connect() as conn:
        found = answer(conn, site.rules, site.config.mode, ident, today=_today(site))
        if found is not None and history and found.entry_id is not None:
            found = replace(found, decisions=entry_history(conn, found.entry_id))
        return found


def find(site: Site, text: str, limit: int = 20) -> Found:
    """Entries, customers and bank payments whose id, document number, KID, archive reference
    or (a customer's) name starts with `text`, case-insensitive, exact matches first; with
    near misses ("did you mean") when nothing is found (ledger.search.Found)."""
    from reskontro.ledger.search import find as search
    with site.db.connect() as conn:
        return search(conn, text, limit)


def held(site: Site, *, rule: str | None = None, customer: str | None = None, offset: int = 0,
         limit: int | None = 50, by_rule: dict[str, int] | None = None) -> KeptPage:
    """The entries held (hold, and transfers that cannot go) and waiting now, one by one, with
    customer, amount, rule and reason; `rule`/`customer` filter; one page by entry id
    (rules.lists.KeptPage: rows, total, by_rule; `limit` None: all). `by_rule`: the counts
    of an earlier page of the lists as they are now (the web page keeps them)."""
    from reskontro.rules.lists import HELD
    return _kept(site, HELD, rule, customer, offset, limit, by_rule)


def excluded(site: Site, *, rule: str | None = None, customer: str | None = None, offset: int = 0,
             limit: int | None = 50, by_rule: dict[str, int] | None = None) -> KeptPage:
    """The entries the rules exclude (never sent), as `held` lists the held ones."""
    from reskontro.rules.lists import EXCLUDED
    return _kept(site, EXCLUDED, rule, customer, offset, limit, by_rule)


def _kept(site: Site, decisions: tuple[str, ...], rule: str | None, customer: str | None, offset: int,
          limit: int | None, by_rule: dict[str, int] | None = None) -> KeptPage:
    from reskontro.rules.lists import kept_back, needs_refresh, refresh
    engine, today = site.rules, _today(site)
    with site.db.connect() as conn:
        stale = needs_refresh(conn, engine, site.config.mode, today)
    if stale:
        with site.db.begin() as conn:   # what changed since the last read is decided first
            refresh(conn, engine, site.config.mode, today)
    with site.db.connect() as conn:
        if stale:
            by_rule = None            # counted before the refresh: count again
        return kept_back(conn, decisions, rule=rule, customer=customer, offset=offset, limit=limit,
                         by_rule=by_rule)


def check(site: Site, progress: Callable[[int], None] | None = None):
    """The data-quality report per customer (rules.reports.CustomerReport each)."""
    from reskontro.rules.reports import quality_report
    with site.db.connect() as conn:
        return quality_report(conn, site.rules, site.config.mode, today=_today(site), progress=progress)


def _rules_or_problems(path: Path):
    """A rule file's engine; RuleFileError with every problem lint finds in it."""
    from reskontro.rules.engine import RuleEngine
    from reskontro.rules.lint import lint_file
    from reskontro.rules.rulefile import RuleFileError
    rf, problems = lint_file(path)
    if problems:
        raise RuleFileError(problems)
    return RuleEngine(rf)


def rules_diff(site: Site, candidate: Path, *, base: Path | None = None, limit: int | None = None):
    """What `candidate` would decide differently from the rules in force (or `base`) over the
    whole ledger (rules.diff.RulesDiff). Writes nothing. RuleFileError: a rule file has
    problems (lint's)."""
    from reskontro.rules.diff import diff_rules
    cand = _rules_or_problems(candidate)
    old = site.rules if base is None else _rules_or_problems(base)
    with site.db.connect() as conn:
        return diff_rules(conn, old, cand, site.config.mode, today=_today(site), limit=limit,
                          tz=site.config.tz, db_url=site.config.database)


@dataclass(frozen=True)
class Coverage:
    rules: list                   # rules.coverage.RuleCoverage each, what to look at first
    examples: Path | None         # the examples file (None: there is none)


def rules_coverage(site: Site) -> Coverage:
    """Per rule of the rules in force: entries decided tonight and over the whole ledger, and
    the examples that test it."""
    from reskontro.rules.coverage import rule_coverage
    from reskontro.rules.lint import examples_path, run_examples
    engine = site.rules
    ex = examples_path(site.config.rule_file)
    results = run_examples(engine.rule_file, ex) if ex.is_file() else None
    with site.db.connect() as conn:
        rows = rule_coverage(conn, engine, site.config.mode, results, today=_today(site))
    return Coverage(rows, ex if results is not None else None)


# --- the transfer file ------------------------------------------------------------------------
def export(site: Site, *, backlog: bool = False, progress: Callable[[str, int], None] | None = None):
    """Tonight's file (or the backlog file) into the outbox, exactly once. A damaged store
    sends nothing, not even an empty file."""
    from reskontro.errors import about
    from reskontro.exchange.cycle import new_holds
    from reskontro.ledger.store import check_integrity
    from reskontro.transfer.export import export as write_file
    engine = site.rules
    from jinja2 import TemplateError
    from reskontro.errors import ExportError
    with _lock(site):
        check_integrity(site.db)
        now = datetime.now(timezone.utc)
        # The holds new tonight, recorded as the cycle's export step records them: a rule reading
        # days_past_due makes every export decide the whole ledger, and what stays held is not news.
        held = None if backlog else new_holds(site.config, site.db, engine, now, _today(site, now))
        try:
            with about(site.config.outbox):
                r = write_file(site.config, site.db, engine, backlog=backlog, progress=progress, now=now)
        except TemplateError as exc:   # a refused template (sandbox), a syntax error: fix the template
            raise ExportError("the transfer file template failed; the file was not finished and nothing "
                              f"goes: {exc}") from None
        if held is None:
            return r
        return replace(r, held_new=held.count, held_lines=tuple(held.lines()))


def export_preview(site: Site, *, backlog: bool = False):
    """What `export` would write now (transfer.export.ExportPreview), changing nothing: no
    file, no journal row, no sequence number. A damaged store says so, as `export` would."""
    from reskontro.ledger.store import check_integrity
    from reskontro.transfer.export import preview
    check_integrity(site.db)
    return preview(site.config, site.db, site.rules, backlog=backlog)


def change_watch(site: Site):
    """A cheap test of whether the store changed since the last look (ledger.store.ChangeWatch:
    `.marker()` differs after any commit; None: cannot tell)."""
    from reskontro.ledger.store import ChangeWatch
    return ChangeWatch(site.db)


def file_contents(site: Site, file_id: str, *, after: str | None = None, before: str | None = None,
                  limit: int = 50, counts: dict[str, int] | None = None):
    """One transfer file: its journal record, what it carried by kind, and a page of its items
    after or before an item ("kind:id") (transfer.contents.FileContents), or None for an
    unknown file. `counts`: the file's counts by kind, when known (they never change once the
    file is written)."""
    from reskontro.transfer.contents import file_contents as contents
    with site.db.connect() as conn:
        return contents(conn, file_id, after=after, before=before, limit=limit, counts=counts)


def receipts(site: Site):
    """The receiver's receipts in the inbox, into the journal (payments.inbox.Processed each)."""
    from reskontro.payments.inbox import process_inbox
    return process_inbox(site.db, site.config.inbox, only_receipts=True)


@dataclass(frozen=True)
class RulesInForce:
    path: Path                    # the site's rule file
    digest: str                   # of the rule file as it is now (what the next export uses)
    exported: object              # rules.history.InForce: what the last export used (None: no export yet)

    @property
    def changed_since_export(self) -> bool:
        return self.exported is not None and self.exported.digest != self.digest


@dataclass(frozen=True)
class Status:
    files: list                   # transfer.journal.FileRecord each, oldest first
    items: dict[str, int]         # delivered, in_flight, pending, held, waiting, to_send
    last_run: object | None = None   # ledger.runs.RunRecord: the last cycle (None: never ran)
    schedule: object | None = None   # exchange.cycle.Schedule: the next scheduled cycle
    rules: RulesInForce | None = None


def status(site: Site, now: datetime | None = None) -> Status:
    """The files and their states; what is delivered, in flight, pending, held, waiting, and
    what the next export sends (the plan's transfer count: they always agree); the last cycle
    and the next scheduled one; the rule file in force (its digest, since when, how many
    entries it decided differently)."""
    from reskontro.exchange.cycle import schedule
    from reskontro.ledger import runs
    from reskontro.rules.history import in_force, rules_digest
    from reskontro.rules.reports import make_plan
    from reskontro.transfer import journal
    with site.db.connect() as conn:
        files = journal.files(conn)
        counts = journal.counts(conn)
        totals = make_plan(conn, site.rules, site.config.mode, today=_today(site, now)).totals()
        rules = RulesInForce(site.config.rule_file, rules_digest(site.rules.rule_file), in_force(conn))
        last = runs.last(conn, 1)
    plan = schedule(site.config, site.db, now or datetime.now(site.config.tz))
    return Status(files, {"delivered": counts.get("delivered", 0), "in_flight": counts.get("in_flight", 0),
                          "pending": counts.get("pending", 0), "held": totals.get("hold", 0),
                          "waiting": totals.get("wait", 0), "to_send": totals.get("transfer", 0)},
                  last[0] if last else None, plan, rules)


def files(site: Site) -> list:
    """The transfer files, oldest first (transfer.journal.FileRecord each)."""
    from reskontro.transfer import journal
    with site.db.connect() as conn:
        return journal.files(conn)


def run_history(site: Site, n: int = 10) -> list:
    """The last `n` cycles, newest first (ledger.runs.RunRecord each)."""
    from reskontro.ledger import runs
    with site.db.connect() as conn:
        return runs.last(conn, n)


# --- incoming payments ------------------------------------------------------------------------
def watch(site: Site, *, once: bool, rescan: float, stop: threading.Event, report=None) -> int:
    """Process the inbox (once, or until `stop`); the number of files handled."""
    from reskontro.payments.watcher import watch as run_watch
    return run_watch(site.db, site.config.inbox, once=once, rescan=rescan, stop=stop, report=report)


def payments(site: Site, *, unposted: bool = False) -> list[dict]:
    """The bank payments, with the ledger entry that is each (amounts as kroner text)."""
    from reskontro.payments.booking import list_payments
    return list_payments(site.db, unposted=unposted)


def post(site: Site):
    """Book the listed bank payments against their invoices (payments.booking.PostResult)."""
    from reskontro.payments.booking import post_payments
    with _lock(site):                       # two posts at once never book a payment twice
        return post_payments(site.db)


def bookings(site: Site, out: IO[str]) -> tuple[int, int]:
    """What this service booked, for the ERP to import: (entries, matches) written to `out`."""
    from reskontro.ledger.bankref import write_bookings
    with site.db.connect() as conn:
        return write_bookings(conn, out)


def correct_payment(site: Site, payment: str, to_invoice: str, who: str | None = None) -> tuple[str, str]:
    """A payment Lowell has, booked on the wrong invoice: (payout id, new payment id). Recorded
    as an action by `who` (default: the OS user)."""
    from reskontro.payments.booking import correct_payment as correct
    with _lock(site):
        return correct(site.db, payment, to_invoice, who=who or current_user())


def payment_rows(site: Site, ids: list[str]) -> list:
    """The bank payments with these ids, in this order (payments.listing.PaymentRow each)."""
    from reskontro.payments.listing import payment_rows as rows
    with site.db.connect() as conn:
        return rows(conn, ids)


def payment_page(site: Site, *, status: str | None = None, offset: int = 0, limit: int = 50) -> PaymentPage:
    """The bank payments, those a person must handle first (unmatched, unposted), then the
    rest; one page, with the count per status (payments.listing.PaymentPage)."""
    from reskontro.payments.listing import payment_page as page
    with site.db.connect() as conn:
        return page(conn, status=status, offset=offset, limit=limit)


def match_payment(site: Site, payment: str, invoice: str, who: str | None = None,
                  reason: str | None = None) -> HandMatch:
    """Book an unmatched (or unposted) bank payment on `invoice` by hand, with post's checks;
    the invoice closes as by post, and the next file carries it. Recorded as an action by `who`
    (the web page's login; default: the OS user). payments.by_hand.HandMatch; InputError
    naming the id and what is wrong, nothing changed."""
    from reskontro.payments.by_hand import match_payment as match
    with _lock(site):
        return match(site.db, payment, invoice, who=who or current_user(), reason=reason)


def dismiss_payment(site: Site, payment: str, reason: str, who: str | None = None) -> Dismissal:
    """Take an unmatched (or unposted) bank payment off the list (refunded to the payer, say):
    never booked, never tried or reported again. Recorded as an action by `who`.
    payments.by_hand.Dismissal."""
    from reskontro.payments.by_hand import dismiss_payment as dismiss
    with _lock(site):
        return dismiss(site.db, payment, reason, who=who or current_user())


def current_user() -> str:
    """Who is at the keyboard: the OS user (the web page passes its login instead)."""
    import getpass
    import os
    try:
        return getpass.getuser()
    except (KeyError, OSError):      # no name for the uid (a container)
        return f"uid {os.getuid()}"


# --- the exchange and the nightly cycle -------------------------------------------------------
def send(site: Site):
    """Upload the outbox (exchange.remote.SendResult)."""
    from reskontro.exchange.remote import send as do_send
    with _lock(site):
        return do_send(site.config, site.db)


def send_preview(site: Site):
    """What `send` would do now (exchange.remote.SendPreview), changing nothing and
    connecting nowhere."""
    from reskontro.exchange.remote import preview_send
    return preview_send(site.config, site.db)


def fetch(site: Site):
    """Download the remote outbound folder into the inbox (exchange.remote.FetchResult)."""
    from reskontro.exchange.remote import fetch as do_fetch
    with _lock(site):
        return do_fetch(site.config)


def run(site: Site, *, sftp: bool = True, on_step=None, scheduled: bool = False,
        clock: Callable[[], datetime] | None = None):
    """The nightly cycle once (exchange.cycle.CycleResult); its own lock, log, run history and
    notifications. `scheduled`: only when past send_time and today's cycle has not completed
    (else at once, with `skipped` set: nothing is done, nothing logged)."""
    from reskontro.exchange.cycle import run_cycle, setup_logging
    engine = site.rules
    setup_logging(site.config)
    return run_cycle(site.config, site.db, engine, sftp=sftp, on_step=on_step, scheduled=scheduled, clock=clock)


def schedule(site: Site, now: datetime | None = None, *, sftp: bool = True):
    """Whether the scheduled cycle is due now, and when it runs next (exchange.cycle.Schedule)."""
    from reskontro.exchange.cycle import schedule as plan
    return plan(site.config, site.db, now or datetime.now(site.config.tz), sftp=sftp)


def run_preview(site: Site, *, sftp: bool = True):
    """The steps `run` would take now and what each would do (exchange.dryrun.Planned each:
    name, ok, summary); nothing changes, not even the log. With `sftp`, the remote outbound/
    is listed (not fetched)."""
    from reskontro.exchange.dryrun import preview_cycle
    return preview_cycle(site.config, site.db, site.rules, sftp=sftp)


def next_run(site: Site, now: datetime | None = None) -> datetime:
    """When the scheduled cycle runs next: now, if today's is overdue."""
    return schedule(site, now).next_run


def serve(site: Site, stop: threading.Event, *, sftp: bool = True, on_step=None) -> None:
    """The cycle at send_time every day (at once when today's is overdue) and the inbox
    watcher, until `stop`."""
    from reskontro.exchange.cycle import serve as do_serve, setup_logging
    engine = site.rules
    setup_logging(site.config)
    do_serve(site.config, site.db, engine, stop, sftp=sftp, on_step=on_step)


def start_logging(site: Site) -> None:
    """The site's log (`log_file`, `[log]`), as `run` and `serve` write it: for long-running
    front ends such as the support page."""
    from reskontro.exchange.cycle import setup_logging
    setup_logging(site.config)


def installed_command() -> str:
    """The `reskontro` command of this installation, as cron must call it (absolute): the one
    beside this Python (a virtualenv's bin/, or pip's --user bin), else the one on PATH, else
    this Python running the module."""
    import os
    import shlex
    import shutil
    import sys
    beside = Path(sys.executable).parent / "reskontro"
    if beside.is_file() and os.access(beside, os.X_OK):
        return shlex.quote(str(beside))
    found = shutil.which("reskontro")
    if found:
        return shlex.quote(str(Path(found).absolute()))
    return f"{shlex.quote(sys.executable)} -m reskontro.cli"


def cron_line(site_dir: Path) -> str:
    """The crontab line for a site: every 15 minutes `run --scheduled`, which runs the cycle
    once a day, past send_time in the site's zone, whatever the host's clock zone (and at the
    next tick after a machine was down at send_time)."""
    import shlex
    line = f"*/15 * * * * {installed_command()} --site {shlex.quote(str(Path(site_dir).absolute()))} run --scheduled"
    return line.replace("%", "\\%")      # cron reads a bare % as a line break


# --- the fleet: many creditors on PostgreSQL ------------------------------------------------------
# The same functions as above serve a fleet's creditor: `creditor_site` gives its context (a
# Config from the registry, the fleet database bound to its role and schema, its folders under
# the fleet's data folder) where a site folder gives one in single-site mode.
def fleet_init(url: str, data_dir: Path) -> Path:
    """The registry, the task queue's tables and the data folder (default rules and templates):
    the data folder. Again on an existing fleet: adds what is missing."""
    from reskontro.fleet.registry import init_fleet
    fleet = init_fleet(url, data_dir)
    fleet.dispose()
    return fleet.data_dir


@contextmanager
def _fleet(url: str | Fleet):
    """The fleet database for one call, closed after it; an open Fleet (a worker keeps one for
    its lifetime) is used as it is and stays open."""
    from reskontro.fleet.registry import Fleet, open_fleet  # noqa: F811 (the runtime class)
    if isinstance(url, Fleet):
        yield url
        return
    fleet = open_fleet(url)
    try:
        yield fleet
    finally:
        fleet.dispose()


def creditor_add(url: str, **fields):
    """A new creditor (fleet.registry.Creditor), validated as reskontro.toml is (ConfigError), its
    own rule file (`rule_file`) linted (RuleFileError); its role, schema and empty store."""
    from reskontro.fleet.registry import add_creditor
    with _fleet(url) as fleet:
        return add_creditor(fleet, **fields)


def creditor_add_accounts(url: str, creditor_id: str, accounts: list[str]):
    """More bank accounts for a creditor: the drop folder routes the bank files crediting them
    to it (fleet.routing). FleetError naming a bad account or one another creditor has."""
    from reskontro.fleet.registry import add_accounts
    with _fleet(url) as fleet:
        return add_accounts(fleet, creditor_id, accounts)


def fleet_route(url: str | Fleet, drop: Path | None = None, waiting: list[str] | None = None) -> list:
    """One pass over the fleet's shared drop folder (fleet.routing.route_drop): each complete
    bank file or receipt moved into its creditor's inbox, or set aside in drop/unrouted/."""
    from reskontro.fleet.routing import route_drop
    with _fleet(url) as fleet:
        return route_drop(fleet, drop, waiting=waiting)


def fleet_unrouted(url: str) -> list[str]:
    """The drop folder's files no creditor could be found for (in drop/unrouted/, reasons beside)."""
    from reskontro.fleet.routing import unrouted
    with _fleet(url) as fleet:
        return unrouted(fleet)


def creditors(url: str) -> list:
    from reskontro.fleet.registry import list_creditors
    with _fleet(url) as fleet:
        return list_creditors(fleet)


def creditor(url: str, creditor_id: str):
    from reskontro.fleet.registry import get_creditor
    with _fleet(url) as fleet:
        return get_creditor(fleet, creditor_id)


def creditor_disable(url: str, creditor_id: str):
    from reskontro.fleet.registry import disable_creditor
    with _fleet(url) as fleet:
        return disable_creditor(fleet, creditor_id)


def creditor_site(url: str | Fleet, creditor_id: str, *, allow_disabled: bool = False) -> Site:
    """A fleet creditor's context: every function above takes it as it takes a site folder's."""
    from reskontro.fleet.registry import creditor_site as site_of
    with _fleet(url) as fleet:
        return site_of(fleet, creditor_id, allow_disabled=allow_disabled)


def fleet_status(url: str) -> list:
    """Per creditor (fleet.status.CreditorStatus): its last cycle and result, its newest nightly
    job, files awaiting a receipt, entries held; those that need a person first."""
    from reskontro.fleet.status import fleet_status as status_of
    with _fleet(url) as fleet:
        return status_of(fleet)


def nightly(site: Site, day, *, sftp: bool = True, client_factory=None):
    """A fleet creditor's nightly cycle for the local date `day`: `run`'s cycle (the same
    run_cycle, lock, history, log and notifications), unless that day's cycle completed already
    without failing (a job retried after a worker died: skipped, `skipped` saying why; one that
    failed, as when the server was unreachable, runs again). The store's statistics first
    (PostgreSQL: ledger.store.analyze)."""
    from datetime import timedelta

    from reskontro.exchange.cycle import CycleResult, run_cycle, send_time_on, setup_logging
    from reskontro.ledger import runs
    # The day's cycle is the one run between its send time and the next day's: a job retried
    # after midnight (a worker died at 23:59) still finds the run that completed at 00:05.
    start = send_time_on(site.config, day)
    end = send_time_on(site.config, day + timedelta(days=1))
    with site.db.connect() as conn:
        done = [r for r in runs.since(conn, start, end, sftp=sftp)
                if r.finished_at is not None and r.result != "failed"]
    if done:
        return CycleResult(kind="fleet", skipped=f"the cycle of {day.isoformat()} completed (run {done[0].id})")
    from reskontro.ledger.store import analyze
    analyze(site.db)          # what was imported since the last night, planned as it is
    setup_logging(site.config)
    return run_cycle(site.config, site.db, site.rules, sftp=sftp, kind="fleet", client_factory=client_factory)
