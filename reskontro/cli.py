"""The `reskontro` command line (click + rich).

Each command parses its arguments, calls one function of `reskontro.services` and prints what
comes back through `reskontro.cli_output` (exit statuses, tables, --json, --plain, progress).
"""
from __future__ import annotations

import errno
import functools
import inspect
import logging
import sys
from pathlib import Path

import click

from reskontro import cli_views as views
from reskontro import services
from reskontro.cli_output import ATTENTION, DONE, FAILED, LATER, USAGE, Col, Output, exit_status_help, plural
from reskontro.config import ConfigError
from reskontro.domain import InputError
from reskontro.errors import OPERATOR_ERRORS, describe, store_name
from reskontro.files.lock import LockedError, LockHeldError
from reskontro.rules.rulefile import RuleFileError
from reskontro.site import Site, init_site


class UserError(click.ClickException):
    """An error the user can fix; printed as one `error:` line (plus any lines the message
    holds), without a traceback, with its exit status."""

    def __init__(self, message: str, status: int = FAILED) -> None:
        super().__init__(message)
        self.exit_code = status

    def show(self, file=None) -> None:
        # the message carries outside data (ids, file names): never read as markup
        Output().say(("error:", "bold red"), " ", self.message, err=True)


# Errors an operator acts on (a full disk, a damaged store, an unreadable file, a held lock):
# one line naming the file or resource, whichever command met them; the traceback goes to the
# site's log at debug level. Anything else is a bug and keeps its traceback.
_ONE_LINE = (*OPERATOR_ERRORS, LockedError, ConfigError, InputError)


def _exit_status(exc: BaseException) -> int:
    from reskontro.adapters.sftp import SftpConnectionError

    if isinstance(exc, (LockHeldError, SftpConnectionError)):
        return LATER
    if isinstance(exc, (ConfigError, RuleFileError)):
        return USAGE
    return FAILED


def _json_error(ctx: click.Context, exc: UserError) -> None:
    """With --json, an error is an answer too: {"ok": false, "exit_status": N, "error": ...}."""
    out = (ctx.find_root().obj or {}).get("out")
    if ctx.parent is None and out is not None:
        out.emit(exc.exit_code, error=exc.message)


class _Command(click.Command):
    """A command that takes --site after its name as well (`reskontro plan --site X`)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.params.append(click.Option(
            ["--site"], type=click.Path(file_okay=False, path_type=Path), expose_value=False,
            callback=_site_after, help="The site folder, as `reskontro --site DIR` (either place works)."))


def _site_after(ctx: click.Context, _param: click.Parameter, value: Path | None) -> None:
    if value is not None:
        obj = ctx.find_root().obj
        obj["site"], obj["site_obj"] = value, None


class _Commands(click.Group):
    command_class = _Command
    group_class = type          # `rules` is one of these too

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except UserError as exc:
            _json_error(ctx, exc)
            raise
        except Exception as exc:
            from reskontro.adapters.sftp import SftpError   # (paramiko: only when needed)

            if isinstance(exc, SftpError):   # its message may hold the command to run: kept whole
                error = UserError(str(exc), _exit_status(exc))
            elif isinstance(exc, _ONE_LINE) and not (isinstance(exc, OSError) and exc.errno == errno.EPIPE):
                site = (ctx.find_root().obj or {}).get("site_obj")
                line = describe(exc, store_name(site.config.database) if site else None)
                _log_traceback(site, f"{ctx.info_name} {ctx.invoked_subcommand}: {line}", exc)
                error = UserError(line, _exit_status(exc))
            else:
                raise                       # a bug (its traceback), click's own exits, a closed stdout
            _json_error(ctx, error)
            raise error from None


def _log_traceback(site: Site | None, message: str, exc: BaseException) -> None:
    if site is None:
        return
    from reskontro.files.logfile import setup_site_logging
    try:
        setup_site_logging(site.config)
    except OSError:
        return                              # no log to be had: the one line is all there is
    logging.getLogger("reskontro.cli").debug("%s", message, exc_info=exc)


def _site(ctx: click.Context) -> Site:
    obj = ctx.find_root().obj
    if obj.get("site_obj") is None:
        try:
            obj["site_obj"] = Site.open(obj["site"])
        except ConfigError as exc:
            raise UserError(str(exc), USAGE) from None
    return obj["site_obj"]


def _engine(site: Site):
    try:
        return site.rules
    except RuleFileError as exc:
        raise UserError(f"the rule file has problems (run `reskontro rules lint`):\n{exc}", USAGE) from None
    except Exception as exc:  # durable_rules refusing a ruleset: a message, not a traceback
        raise UserError(f"the rules engine refuses {site.config.rule_file} ({exc}); "
                        "run `reskontro rules lint` to find the rule", USAGE) from None


def reporting(fn):
    """--json and --plain (see cli_output); the command gets `out`, an Output."""
    @functools.wraps(fn)
    def wrapper(*args, as_json: bool, plain: bool, **kwargs):
        out = Output(as_json=as_json, plain=plain)
        click.get_current_context().find_root().obj["out"] = out
        return fn(*args, out=out, **kwargs)
    wrapper = click.option("--plain", is_flag=True,
                           help="No colour; tables as tab-separated lines under a header line.")(wrapper)
    return click.option("--json", "as_json", is_flag=True,
                        help="One JSON object on stdout: ok, exit_status and the command's fields.")(wrapper)


def _finish(out: Output, status: int, **fields) -> None:
    """The command's answer as JSON (with --json), then its exit status."""
    out.emit(status, **fields)
    if status != DONE:
        raise SystemExit(status)


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--site", type=click.Path(file_okay=False, path_type=Path), envvar="RESKONTRO_SITE",
              default=".", show_default=True,
              help="The site folder (holds reskontro.toml); also accepted after the command. Env: RESKONTRO_SITE.")
@click.version_option(package_name="reskontro")
@click.pass_context
def main(ctx: click.Context, site: Path) -> None:
    """reskontro: the creditor's customer ledger, sent to Lowell every evening, and incoming
    payments booked.

    Start with `reskontro init SITE`, import the ERP's ledger with `reskontro import`, see what
    tonight's run would send with `reskontro plan`. Every command that reports takes --json (one
    object: ok, exit_status and its fields) and --plain (no colour, tables tab-separated).

    \b
    Example:
      reskontro init /srv/reskontro && cd /srv/reskontro
      reskontro import ledger.jsonl && reskontro plan

    \b
    Shell completion (bash; for zsh or fish: zsh_source, fish_source):
      eval "$(_RESKONTRO_COMPLETE=bash_source reskontro)"
    """
    ctx.obj = {"site": site, "site_obj": None, "out": None}

    def close() -> None:   # return pooled database connections before the process (or test) ends
        s = ctx.obj.get("site_obj")
        if s is not None and "db" in s.__dict__:
            s.db.dispose()
    ctx.call_on_close(close)


main.help = inspect.cleandoc(main.help) + "\n\n" + exit_status_help()


# --- set-up ---------------------------------------------------------------------------------
@main.command(cls=click.Command)
@click.argument("target", type=click.Path(file_okay=False, path_type=Path))
@click.option("--sender-id", default="123456", show_default=True, help="Your client number at Lowell.")
@click.option("--org-no", default="923609016", show_default=True, help="Your organisation number.")
@click.option("--force", is_flag=True, help="Overwrite an existing site's config, rules and templates.")
@reporting
def init(out: Output, target: Path, sender_id: str, org_no: str, force: bool) -> None:
    """Create a working site in TARGET: config, default rules and templates, inbox/, outbox/ and
    an empty SQLite store. A folder that holds a site already is refused unless --force.

    \b
    Example:
      reskontro init /srv/reskontro --sender-id 123456 --org-no 923609016
    """
    try:
        made = init_site(target, sender_id=sender_id, org_no=org_no, force=force)
    except (FileExistsError, ConfigError) as exc:
        raise UserError(str(exc), USAGE) from None
    except OPERATOR_ERRORS as exc:          # a store kept by --force that is not one
        raise UserError(describe(exc, str(target / "reskontro.db"))) from None
    out.say("Created site ", (str(target), "bold"), f" ({plural(len(made), 'file')}).")
    out.say(f"Next: edit {target / 'reskontro.toml'}, then import the ERP's ledger:")
    out.say(f"  reskontro --site {target} import FILE")      # one line: never wrapped mid-command
    out.say("The nightly cycle from cron (every 15 minutes; it runs once a day, past send_time in the "
            "site's time zone, whatever the host's clock), with `crontab -e`:")
    cron = services.cron_line(target)
    out.say(f"  {cron}")
    _finish(out, DONE, site=str(target), files=[str(p) for p in made], cron=cron)


@main.command()
@click.option("--no-sftp", is_flag=True, help="Skip the network checks (SFTP login, remote folders).")
@reporting
@click.pass_context
def doctor(ctx: click.Context, out: Output, no_sftp: bool) -> None:
    """Is this site ready to run? One line per check, ok or what to do: the config, folders,
    rule file and examples, template and XSD (a test file rendered and checked), the store
    (reachable, schema current, quick_check), the SFTP key file and pinned host key, the SFTP
    login and the remote folders (a probe .part written and removed), free space, time zone.
    Changes nothing. Exit status 0 when every check passed, else 1.

    \b
    Example (the first thing to run on a new site):
      reskontro --site /srv/reskontro doctor
    """
    checks = services.doctor(ctx.find_root().obj["site"], sftp=not no_sftp)
    mark = {True: ("ok  ", "green"), False: ("FAIL", "bold red"), None: ("skip", "yellow")}
    for c in checks:
        out.say(mark[c.ok], f" {c.check}: {c.message}")
    failed = sum(c.ok is False for c in checks)
    fields = {"checks": [{"check": c.check, "ok": c.ok, "message": c.message} for c in checks]}
    if failed:
        out.warn(("error:", "bold red"), f" {plural(failed, 'check')} failed.")
        fields["error"] = f"{plural(failed, 'check')} failed"
    else:
        out.say("Ready.")
    _finish(out, FAILED if failed else DONE, **fields)


def _fleet_url(fn):
    """--fleet URL (env RESKONTRO_FLEET): the fleet database of `reskontro fleet init`."""
    return click.option("--fleet", "fleet_url", envvar="RESKONTRO_FLEET", metavar="URL",
                        help="The fleet database (postgresql+psycopg://…). Env: RESKONTRO_FLEET.")(fn)


def _need_fleet(url: str | None) -> str:
    if not url:
        raise UserError("no fleet database: give --fleet URL or set RESKONTRO_FLEET", USAGE)
    return url


@main.command("import")
@click.argument("files", metavar="FILE...", nargs=-1, required=True,
                type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--creditor", "creditor_id", metavar="ID",
              help="A fleet creditor's ledger (with --fleet), instead of the site's.")
@_fleet_url
@reporting
@click.pass_context
def import_(ctx: click.Context, out: Output, files: tuple[Path, ...], creditor_id: str | None,
            fleet_url: str | None) -> None:
    """Load customers, entries and matches from ERP exports (CSV or JSON Lines).

    Idempotent (the same file twice changes nothing) and all-or-nothing per file: every bad row
    is reported at once with file, line and field, and nothing of that file is stored. Exit
    status 3 when the import holds entries for a person (bank-ref-conflict).

    \b
    Example:
      reskontro import customers.csv entries.csv matches.csv
      reskontro import --creditor acme --fleet postgresql+psycopg://rk@db/fleet acme-ledger.jsonl
    """
    if creditor_id is not None:
        site = services.creditor_site(_need_fleet(fleet_url), creditor_id)
        ctx.find_root().obj["site_obj"] = site       # its connections are returned at the end
    else:
        site = _site(ctx)
    with out.progress("Importing", total=len(files)) as update:
        try:
            results = services.import_ledger(
                site, list(files), progress=lambda path, i: update(i, f"Importing {path.name}"))
        except InputError as exc:
            raise UserError(str(exc)) from None
    out.table([Col("file", "id"), Col("customers new/changed", "number"), Col("entries new/changed", "number"),
               Col("matches new/changed", "number")],
              [[r.path.name, "%d / %d" % r.customers, "%d / %d" % r.entries, "%d / %d" % r.matches]
               for r in results], title="Imported")
    for r in results:
        if r.same_as_booked:
            n = r.same_as_booked
            out.say(f"{r.path.name}: {n} {'entry is one' if n == 1 else 'entries are ones'} this service booked "
                    "(bank payments, corrections): kept as booked, not stored twice")
        for note in r.notes:
            out.warn((note, "yellow"))
    status = ATTENTION if any(r.notes for r in results) else DONE
    _finish(out, status, files=[
        {"file": str(r.path), "customers": dict(zip(("new", "changed"), r.customers)),
         "entries": dict(zip(("new", "changed"), r.entries)), "matches": dict(zip(("new", "changed"), r.matches)),
         "same_as_booked": r.same_as_booked, "notes": list(r.notes)} for r in results])


@main.command()
@click.option("--customers", type=click.IntRange(1), required=True, help="How many customers.")
@click.option("--seed", type=int, default=1, show_default=True, help="Same seed, same ledger.")
@click.option("--out", "out_file", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="The JSON Lines file to write.")
@click.option("--force", is_flag=True, help="Write over an existing file.")
@reporting
def sample(out: Output, customers: int, seed: int, out_file: Path, force: bool) -> None:
    """Write a realistic sample ledger in the import format (for the demo, tests, benchmarks).
    An existing file is refused unless --force.

    \b
    Example:
      reskontro sample --customers 1000 --seed 7 --out ledger.jsonl
    """
    with out.progress("Writing the sample", total=customers) as update:
        try:
            n = services.write_sample(out_file, customers, seed, force=force, progress=update)
        except FileExistsError:
            raise UserError(f"{out_file} exists; nothing written (use --force to write over it)", USAGE) from None
    out.say(f"Wrote {plural(n, 'record')} for {plural(customers, 'customer')} to {out_file}.")
    _finish(out, DONE, file=str(out_file), records=n, customers=customers, seed=seed)


# --- rules ------------------------------------------------------------------------------------
@main.group()
def rules() -> None:
    """Check the rule files: lint, test the examples, list the fields rules can read."""


def _not_examples(path: Path) -> None:
    from reskontro.rules.lint import is_examples_file

    if path.is_file() and is_examples_file(path):
        rule_file = path.with_name(path.name.replace(".examples.", "."))
        raise UserError(f"{path} is an examples file: give the rule file, not its examples "
                        f"(e.g. {rule_file}); its examples are found beside it", USAGE)


@rules.command()
@click.argument("files", metavar="[FILE...]", nargs=-1, type=click.Path(dir_okay=False, path_type=Path))
@reporting
@click.pass_context
def lint(ctx: click.Context, out: Output, files: tuple[Path, ...]) -> None:
    """Report problems in rule files, each as `file:line: message`; exit status 1 when there are
    any. Without FILES: the site's rules/transfer.yaml.

    \b
    Example:
      reskontro rules lint rules/transfer.yaml
    """
    paths = list(files) or [_site(ctx).config.rule_file]
    for path in paths:
        _not_examples(path)
    report = []
    bad = 0
    for path, problems in services.lint_rules(paths):
        for p in problems:
            out.verbatim(str(p))
        bad += len(problems)
        if not problems:
            out.say(f"{path}: ok")
        report.append({"file": str(path), "ok": not problems,
                       "problems": [{"line": p.line, "message": p.message} for p in problems]})
    _finish(out, FAILED if bad else DONE, files=report, problems=bad)


@rules.command("test")
@click.argument("file", required=False, type=click.Path(dir_okay=False, path_type=Path))
@reporting
@click.pass_context
def rules_test(ctx: click.Context, out: Output, file: Path | None) -> None:
    """Run the examples kept beside the rule FILE (for rules/transfer.yaml:
    rules/transfer.examples.yaml); exit status 1 on a failure. Without FILE: the site's rules.

    \b
    Example:
      reskontro rules test rules/transfer.yaml
    """
    from reskontro.rules.lint import examples_path

    path = file or _site(ctx).config.rule_file
    _not_examples(path)
    run = services.test_rules(path)
    if run.problems:
        for p in run.problems:
            out.verbatim(str(p))
        _finish(out, FAILED, rule_file=str(path), examples=None, passed=0, failed=0, results=[],
                problems=[{"line": p.line, "message": p.message} for p in run.problems])
    ex = run.examples
    if ex is None:
        raise UserError(f"{examples_path(path)}: no examples file beside {path.name}", USAGE)
    results = run.results
    failed = [r for r in results if not r.ok]
    for r in failed:
        out.verbatim(f"{ex}:{r.line}: FAIL {r.name}: {r.message}")
    out.say(f"{len(results) - len(failed)} passed, {len(failed)} failed")
    _finish(out, FAILED if failed else DONE, rule_file=str(path), examples=str(ex),
            passed=len(results) - len(failed), failed=len(failed), problems=[],
            results=[{"name": r.name, "line": r.line, "ok": r.ok, "message": r.message} for r in results])


@rules.command()
@reporting
def fields(out: Output) -> None:
    """The fields a rule can test, with their values and a condition for each as a rule file
    writes it.

    \b
    Example:
      reskontro rules fields --plain | cut -f1
    """
    from reskontro.rules.facts import DEFAULT_FACT, FIELDS, fact_for_people

    shown = fact_for_people(DEFAULT_FACT)       # amounts in kroner, as rule files write them
    kinds = {"bool": "true, false", "number": "number", "text": "text", "date": "YYYY-MM-DD",
             "words": "words (has, has_not, has_any, has_none)"}
    rows = []
    for f in FIELDS.values():
        default = shown[f.name]
        default = (str(default).lower() if isinstance(default, bool)
                   else (" ".join(default) or "(none)") if isinstance(default, list) else str(default))
        rows.append([f.name, f.kind, ", ".join(f.values) if f.values else kinds[f.kind], default, f.example, f.doc])
    out.table([Col("field", "id"), Col("kind", "id"), Col("values"), Col("example default"), Col("condition"),
               Col("meaning")], rows)
    _finish(out, DONE, fields=[dict(zip(("field", "kind", "values", "default", "condition", "meaning"), r))
                               for r in rows])


def _money(amounts: dict) -> str:
    return "\n".join(f"{a:,.2f} {c}" for c, a in sorted(amounts.items()))


@rules.command("diff")
@click.argument("candidate", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--base", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Compare with this rule file instead of the rules in force.")
@click.option("--limit", type=click.IntRange(0), default=20, show_default=True,
              help="Entries listed per change (0: all); every change of an entry Lowell has is listed.")
@reporting
@click.pass_context
def rules_diff(ctx: click.Context, out: Output, candidate: Path, base: Path | None, limit: int) -> None:
    """What the rule file CANDIDATE would decide differently from the rules in force (or
    --base), over the whole ledger: per change (e.g. transfer -> hold) the entries and
    amounts, then each entry with its old and new rule and the new reason. Flags entries
    Lowell already has that would no longer go (tell Lowell). Writes nothing; exit status 1
    when a rule file has problems (as `rules lint` lists them).

    \b
    Example:
      reskontro rules diff rules/next.yaml
    """
    from reskontro.domain.amount import format_amount

    for path in (candidate, base):
        if path is not None:
            _not_examples(path)
    site = _site(ctx) if base is not None else _engine_site(ctx)
    try:
        with out.progress("Deciding the ledger with both rule files"):
            d = services.rules_diff(site, candidate, base=base, limit=limit or None)
    except RuleFileError as exc:
        for p in exc.problems:
            out.verbatim(str(p))
        _finish(out, FAILED, problems=[{"file": str(p.path), "line": p.line, "message": p.message}
                                       for p in exc.problems])
    lines = d.sorted_lines()
    out.say(f"{plural(d.entries, 'entry', 'entries')} decided by both ({d.base_digest} -> {d.candidate_digest}): "
            f"{d.changed:,} would change.")
    if lines:
        out.table([Col("from", "id"), Col("to", "id"), Col("entries", "number"), Col("amount", "amount")],
                  [[l.old, l.new if l.new != l.old else f"{l.new} (other rule)", f"{l.count:,}", _money(l.amounts)]
                   for l in lines], title="Changes")
    for l in lines:
        listed = f" ({len(l.entries):,} listed)" if len(l.entries) < l.count else ""
        out.table([Col("entry", "id"), Col("customer", "id"), Col("amount", "amount"),
                   Col("old rule -> new rule", "words"), Col("new reason"), Col("Lowell")],
                  [[c.entry_id, c.customer_id, f"{c.amount:,.2f} {c.currency}", f"{c.old_rule} -> {c.new_rule}",
                    c.new_reason, ("has it", "yellow") if c.tell_lowell else ""] for c in l.entries],
                  title=f"{l.old} -> {l.new}: {plural(l.count, 'entry', 'entries')}{listed}")
    told = d.tell_lowell
    if told:
        out.say((f"Lowell has {len(told):,} of these entries", "yellow"), " (a file cannot take one back):")
    for c in told:
        out.say(f"  {c.entry_id}: {c.tell_lowell}")

    def entry(c) -> dict:
        return {"id": c.entry_id, "customer": c.customer_id, "amount": format_amount(c.amount),
                "currency": c.currency, "old_rule": c.old_rule, "new_rule": c.new_rule, "new_reason": c.new_reason,
                "lowell": c.lowell, "file": c.file_id,
                "lowell_since": c.file_date.isoformat() if c.file_date else None, "note": c.tell_lowell}
    _finish(out, DONE, entries=d.entries, changed=d.changed, base_digest=d.base_digest,
            candidate_digest=d.candidate_digest,
            changes=[{"from": l.old, "to": l.new, "count": l.count,
                      "amounts": {c: format_amount(a) for c, a in sorted(l.amounts.items())},
                      "entries": [entry(c) for c in l.entries]} for l in lines],
            tell_lowell=[entry(c) for c in told])


@rules.command("coverage")
@reporting
@click.pass_context
def rules_coverage(ctx: click.Context, out: Output) -> None:
    """For each rule in force: how many entries it decides (or warns on) tonight and over the
    whole ledger, and how many examples test it. Rules that decide nothing, and rules without
    an example, come first.

    \b
    Example:
      reskontro rules coverage --json | jq '.rules[] | select(.idle)'
    """
    site = _engine_site(ctx)
    with out.progress("Deciding the ledger"):
        cov = services.rules_coverage(site)
    rows = []
    for r in cov.rules:
        note = ", ".join(x for x, on in (("decides nothing", r.idle), ("no example", r.untested)) if on)
        rows.append([r.rule_id, str(r.line), r.kind, f"{r.tonight:,}", f"{r.whole:,}", str(r.examples),
                     (note, "yellow") if note else ""])
    out.table([Col("rule", "id"), Col("line", "number"), Col("decides", "id"), Col("tonight", "number"),
               Col("whole ledger", "number"), Col("examples", "number"), Col("look at")], rows,
              title=f"Rule coverage ({site.config.rule_file.name})")
    if cov.examples is None:
        out.say(f"No examples file beside {site.config.rule_file.name}.")
    _finish(out, DONE, examples=str(cov.examples) if cov.examples else None,
            rules=[{"rule": r.rule_id, "line": r.line, "kind": r.kind, "tonight": r.tonight, "whole": r.whole,
                    "examples": r.examples, "idle": r.idle, "untested": r.untested} for r in cov.rules])


# --- what the rules make of the ledger -------------------------------------------------------
@main.command()
@click.option("--all", "whole", is_flag=True, help="Every entry, also those delivered or in flight.")
@click.option("--backlog", is_flag=True,
              help="What `export --backlog` would write (matches settled now are history and stay home).")
@reporting
@click.pass_context
def plan(ctx: click.Context, out: Output, whole: bool, backlog: bool) -> None:
    """What tonight's run would send, exclude and hold: counts, amounts and reasons, of every
    entry not yet delivered or in flight. Its transfer count is what the next `export` writes.

    \b
    Example:
      reskontro plan --json | jq .totals
    """
    site = _engine_site(ctx)
    with out.progress("Deciding entries") as update:
        p = services.plan(site, whole=whole, backlog=backlog,
                          progress=lambda n: update(description=f"Deciding entries: {n:,}"))
    order = {"transfer": 0, "hold": 1, "wait": 2, "exclude": 3}
    out.table([Col("decision", "id"), Col("rule", "id"), Col("entries", "number"), Col("amount", "amount"),
               Col("reason", max_width=70)],
              [[l.decision, l.rule_id, f"{l.count:,}",
                "\n".join(f"{a:,.2f} {c}" for c, a in sorted(l.amounts.items())), l.reason]
               for l in sorted(p.lines.values(), key=lambda l: (order[l.decision], -l.count))],
              title=f"Tonight's plan ({p.entries:,} entries{'' if whole else ' not yet delivered or in flight'})")
    if p.warnings:
        out.table([Col("warning", "id"), Col("entries", "number"), Col("text")],
                  [[rid, f"{n:,}", text] for (rid, text), n in sorted(p.warnings.items())],
                  title="Warnings (never block)")
    _finish(out, DONE, **p.as_json())


def _engine_site(ctx: click.Context) -> Site:
    site = _site(ctx)
    _engine(site)
    return site


@main.command()
@click.argument("ident", metavar="ID")
@click.option("--history", is_flag=True, help="Also the changes of its decision the exports journaled (from, to, "
              "rule, rule file, date).")
@reporting
@click.pass_context
def explain(ctx: click.Context, out: Output, ident: str, history: bool) -> None:
    """Everything about entry ID: the rules' decision (the facts, the deciding rule, every other
    rule that matched), where it went (every file that carried a version of it, its state and
    the receiver's receipt and errors; in flight, delivered or never sent), for an entry changed
    after it was sent the fields that differ (sent and now), its match with the members and
    their history, the payments booked on it and what people did by hand, and what to do next.
    ID may be the ledger's id, the ERP's id of an entry booked here, a document number, a KID,
    or a bank payment's id or archive reference (one not booked is explained as a payment).
With --history, also the changes of its decision the exports journaled.

    \b
    Example:
      reskontro explain F1001 --history
    """
    from reskontro.support.resolve import AmbiguousId

    site = _engine_site(ctx)
    try:
        found = services.explain(site, ident, history=history)
    except AmbiguousId as exc:
        raise UserError(str(exc)) from None
    if found is None:
        raise UserError(f"no entry with id {ident!r} in the ledger" + _did_you_mean(site, ident))
    tz = site.config.tz
    if found.alias:     # the ERP's id of an entry this service booked
        out.say(f"{ident} is the ERP's id of ", (found.entry_id, "bold"), ", booked here:")
    elif found.found_by != "id" and found.entry_id is not None:
        out.say(f"{ident} is {views.FOUND_BY[found.found_by]} ", (found.entry_id, "bold"), ":")
    if found.explanation is None:
        _explain_payment(out, found)
    else:
        _explain_entry(out, found, tz)
    if found.history:
        out.table([Col("when", "words"), Col("what")], [[views.when(e.at, tz), e.what] for e in found.history],
                  title="History")
    out.say(("Next: ", "bold"), found.next_step)
    if found.explanation is not None:
        from reskontro.rules.facts import fact_for_people
        facts = fact_for_people(found.explanation.fact)       # amounts in kroner, as rule files write them
        out.table([Col("fact", "id"), Col("value", "id")],
                  [[k, str(v).lower() if isinstance(v, bool) else " ".join(v) if isinstance(v, list) else str(v)]
                   for k, v in facts.items()],
                  title="Facts the rules saw")
    changes = [{"date": h.at.astimezone(tz).date().isoformat(), "from": h.from_decision, "to": h.to_decision,
                "rule": h.rule_id, "rules_digest": h.rules_digest, "file": h.file_id}
               for h in (found.decisions or [])]
    if history and changes:
        out.table([Col("date", "id"), Col("from", "id"), Col("to", "id"), Col("rule", "id"), Col("rule file", "id"),
                   Col("file", "id")],
                  [[c["date"], c["from"], c["to"], c["rule"], c["rules_digest"], c["file"] or ""] for c in changes],
                  title="Decision history (changes only)")
    elif history and found.explanation is not None:
        out.say("No decision changes journaled for this entry.")
    _finish(out, DONE, **views.explain_json(found, tz), **({"decision_history": changes} if history else {}))


def _did_you_mean(site: Site, ident: str) -> str:
    """"; did you mean: A, B?" from `find` (its hits, else its near misses), or ""."""
    f = services.find(site, ident, limit=5)
    names = [h.id for h in f.entries] + [h.id for h in f.payments] or f.suggestions
    return f"; did you mean: {', '.join(names)}?" if names else ""


def _explain_entry(out: Output, found, tz) -> None:
    ex, e, d = found.explanation, found.entry, found.delivery
    o = ex.outcome
    out.say((found.entry_id, "bold"), ": ", (o.decision, "bold"), " by rule ", (o.rule_id, "bold"))
    out.say(f"  {o.reason}")
    if ex.detail:
        out.say(("  " + ex.detail, "yellow"))
    for rid, text in o.warnings:
        out.say(("  warning", "yellow"), f" {rid}: {text}")
    others = [r for r in ex.matched if r.id != o.rule_id and r.warning is None]
    if others:
        out.say("Other rules that matched (a rule above decided first):")
        for r in others:
            out.say(f"  line {r.line}: {r.id} -> {r.decision}")
    out.say(f"Entry: {views.words(e.type)} {e.document_no} of {e.customer_id} {e.customer_name}, "
            f"{views.money(e.amount, e.currency)}, dated {e.document_date}"
            + (f", due {e.due_date}" if e.due_date else "") + (f", KID {e.kid}" if e.kid else "")
            + (f", booked here ({e.origin})" if e.origin else ""))
    out.say(("Delivery: ", "bold"), views.delivery_line(d))
    if d.changed and d.changes is None:
        out.say("  What Lowell has was not kept (it changed before this version of reskontro kept sent "
                "values); the file above that Lowell has it from shows it.")
    if d.changes:
        out.table([Col("field", "id"), Col("sent to Lowell"), Col("now in the ledger")],
                  [[c.field, c.sent or "", c.current or ""] for c in d.changes], title="Changed after it was sent")
    if d.files:
        out.table([Col("file", "id"), Col("kind", "id"), Col("created", "words"), Col("state", "id"),
                   Col("version", "id"), Col("receipt", "words"), Col("the receiver's errors")],
                  views.file_rows(d.files, tz), title="Files that carried it")
    m = found.match
    if m is not None:
        state = "closed" if m.closed else f"open {views.money(m.open, m.currency)}"
        out.table([Col("entry", "id"), Col("type", "id"), Col("document", "id"), Col("amount", "amount"),
                   Col("booked by", "id"), Col("at Lowell", "words")], views.member_rows(m.members),
                  title=f"Match {m.id} ({state}; at Lowell: {views.delivery_line(m.delivery)})")
        if m.lost:
            out.say(("  Lowell's match also holds ", "yellow"), ", ".join(m.lost), " (removed in the ERP)")
    if found.payments:
        out.table([Col("payment", "id"), Col("archive ref", "id"), Col("date", "id"), Col("payer"),
                   Col("amount", "amount"), Col("KID", "id"), Col("status", "id"), Col("invoice", "id"),
                   Col("note")], views.booked_rows(found.payments), title="Bank payments booked on it")


def _explain_payment(out: Output, found) -> None:
    p = found.payment
    out.say((p.id, "bold"), f": bank payment {views.money(p.amount, p.currency)} ({p.archive_ref}), ",
            (p.status, "bold"), f": {p.note}" if p.note else "")
    out.say(f"  from {p.payer or 'an unknown payer'}, dated {p.date or 'unknown'}"
            + (f", KID {p.kid}" if p.kid else "") + (f", invoice no {p.invoice_no}" if p.invoice_no else "")
            + "; not booked in the ledger")


@main.command()
@click.argument("text")
@click.option("--limit", type=click.IntRange(1, 1000), default=20, show_default=True,
              help="At most this many of each kind (entries, customers, bank payments).")
@reporting
@click.pass_context
def find(ctx: click.Context, out: Output, text: str, limit: int) -> None:
    """Entries, customers and bank payments whose id, document number, KID, archive reference
    or (a customer's) name starts with TEXT, case-insensitive, exact matches first. When
    nothing does, says what comes close ("did you mean") and exits with status 1.

    \b
    Example:
      reskontro find f85
    """
    f = services.find(_site(ctx), text, limit)
    if f.empty:
        hint = f"; did you mean: {', '.join(f.suggestions)}?" if f.suggestions else ""
        raise UserError(f"nothing found for {text!r} (an id, document number, KID, customer id or name, "
                        f"or a bank payment's id or archive reference){hint}")
    if f.entries:
        out.table([Col("entry", "id"), Col("type", "id"), Col("customer", "id"), Col("name"), Col("document", "id"),
                   Col("KID", "id"), Col("amount", "amount"), Col("match", "id"), Col("found by", "words")],
                  views.entry_rows(f.entries), title=f"Entries ({len(f.entries)})")
    if f.customers:
        out.table([Col("customer", "id"), Col("name"), Col("type", "id"), Col("city"), Col("found by", "words")],
                  views.customer_rows(f.customers), title=f"Customers ({len(f.customers)})")
    if f.payments:
        out.table([Col("payment", "id"), Col("archive ref", "id"), Col("date", "id"), Col("payer"),
                   Col("amount", "amount"), Col("KID", "id"), Col("status", "id"), Col("invoice", "id"),
                   Col("found by", "words")], views.payment_rows(f.payments), title=f"Bank payments ({len(f.payments)})")
    if f.truncated:
        out.say(f"More than {limit} of a kind: type more of it, or raise --limit.")
    _finish(out, DONE, **views.jsonable(f))


def _kept(ctx: click.Context, out: Output, which: str, rule: str | None, customer: str | None) -> None:
    site = _engine_site(ctx)
    page = getattr(services, which)(site, rule=rule, customer=customer, limit=None)
    title = {"held": "Held and waiting", "excluded": "Excluded"}[which]
    filters = ", ".join(x for x in (f"rule {rule}" if rule else "", f"customer {customer}" if customer else "") if x)
    out.table([Col("entry", "id"), Col("type", "id"), Col("customer", "id"), Col("name"), Col("amount", "amount"),
               Col("decision", "id"), Col("rule", "id"), Col("reason", max_width=70), Col("held since", "words")],
              views.kept_rows(page.rows, site.config.tz),
              title=f"{title} ({plural(page.total, 'entry', 'entries')}{'; ' + filters if filters else ''})")
    if page.by_rule and not rule:
        out.say("By rule: " + ", ".join(f"{r} {n:,}" for r, n in page.by_rule.items()))
    _finish(out, DONE, total=page.total, by_rule=page.by_rule,
            entries=views.jsonable(page.rows, site.config.tz))


@main.command()
@click.option("--rule", help="Only the entries this rule decides (RULE:not-sendable too).")
@click.option("--customer", help="Only this customer's entries.")
@reporting
@click.pass_context
def held(ctx: click.Context, out: Output, rule: str | None, customer: str | None) -> None:
    """Every entry held for a person (and every decided transfer that cannot go) and every
    entry waiting, one by one: customer, amount, rule and reason (which says what to do), and
    since when the nightly run has held it. As `plan` decides now, of the entries not delivered
    or in flight as they are.

    \b
    Example:
      reskontro held --rule customer-address-incomplete --plain
    """
    _kept(ctx, out, "held", rule, customer)


@main.command()
@click.option("--rule", help="Only the entries this rule excludes.")
@click.option("--customer", help="Only this customer's entries.")
@reporting
@click.pass_context
def excluded(ctx: click.Context, out: Output, rule: str | None, customer: str | None) -> None:
    """Every entry the rules exclude (never sent to Lowell), one by one: customer, amount, rule
    and reason.

    \b
    Example:
      reskontro excluded --customer C1001
    """
    _kept(ctx, out, "excluded", rule, customer)


@main.command()
@reporting
@click.pass_context
def check(ctx: click.Context, out: Output) -> None:
    """The data-quality report per customer: what holds or warns their entries, and what to fix
    in the ERP. Exit status 3 when entries are held for their customer's data.

    \b
    Example:
      reskontro check --plain > customer-problems.tsv
    """
    site = _engine_site(ctx)
    with out.progress("Checking customers' data") as update:
        reports = services.check(site, progress=lambda n: update(description=f"Checking customers' data: {n:,} entries"))
    if not reports:
        out.say("No customer data problems.")
    else:
        rows = []
        for r in reports:
            for rid, n in list(r.holds.items()) + list(r.warnings.items()):
                kind = ("hold", "red") if rid in r.holds else ("warn", "yellow")
                rows.append([r.customer_id, r.name, (f"{kind[0]} {rid}", kind[1]), str(n), r.reasons[rid]])
        out.table([Col("customer", "id"), Col("name"), Col("problem", "id"), Col("entries", "number"),
                   Col("what to do")], rows, title=f"Customer data ({plural(len(reports), 'customer')})")
    status = ATTENTION if any(r.holds for r in reports) else DONE
    _finish(out, status, customers=[{"customer": r.customer_id, "name": r.name, "holds": dict(r.holds),
                                     "warnings": dict(r.warnings)} for r in reports])


# --- transfer ---------------------------------------------------------------------------------
@main.command("export")
@click.option("--backlog", is_flag=True,
              help="Write the backlog file (Kind backlog): every open item with its customers and matches.")
@click.option("--dry-run", is_flag=True, help="Say what the file would hold; write nothing, reserve nothing.")
@reporting
@click.pass_context
def export_cmd(ctx: click.Context, out: Output, backlog: bool, dry_run: bool) -> None:
    """Write tonight's transfer file into outbox/: everything decided `transfer` that is neither
    delivered nor in flight. A day with nothing to send still gets a file with zero entries.
    Exit status 1 when the file fails the pre-send check; 3 when entries are held new tonight
    (not held at the last export or cycle; `reskontro held` lists every held entry).

    \b
    Example:
      reskontro export && reskontro send
    """
    site = _engine_site(ctx)
    if dry_run:
        p = services.export_preview(site, backlog=backlog)
        for line in p.recovery:
            out.say(("first", "yellow"), " ", line)
        out.say("Dry run: would write ", (p.name, "bold"), f" ({p.kind}): {plural(p.customers, 'customer')}, "
                f"{plural(p.entries, 'entry', 'entries')}, {plural(p.matches, 'match', 'matches')}. "
                "Nothing was written or reserved.")
        _finish(out, DONE, dry_run=True, file=p.name, kind=p.kind, customers=p.customers, entries=p.entries,
                matches=p.matches)
        return
    with out.progress("Exporting") as update:
        r = services.export(site, backlog=backlog,
                            progress=lambda what, n: update(description=f"Exporting: {what} {n:,} entries"))
    for line in r.recovered:
        out.say(("recovered", "yellow"), " ", line)
    fields = dict(file_id=r.file_id, file=str(r.path) if r.path else None, kind=r.kind, customers=r.customers,
                  entries=r.entries, matches=r.matches, held=r.held, problems=list(r.problems),
                  recovered=list(r.recovered))
    if r.path is None:
        out.warn((f"{r.file_id} failed the pre-send check", "bold red"),
                 " and was moved to outbox/rejected/ (nothing in it counts as sent):")
        for p in r.problems[:20]:
            out.verbatim(f"  {p}")
        _finish(out, FAILED, **fields)
    out.say("Wrote ", (str(r.path), "bold"), f" ({r.kind}): {plural(r.customers, 'customer')}, "
            f"{plural(r.entries, 'entry', 'entries')}, {plural(r.matches, 'match', 'matches')}.")
    # A person is needed for what is held new tonight (as `run` tells it); what was held before
    # stays listed by `reskontro held`. Unknown (the holds could not be compared): all of it.
    new = r.held if r.held_new is None else r.held_new
    fields["held_new"] = new
    if r.held:
        out.say((f"{plural(r.held, 'entry', 'entries')} held tonight", "yellow"),
                f" ({new} new)" if new != r.held else "",
                ": why, and what to fix: reskontro plan, reskontro check")
    for line in r.held_lines:
        out.say("  ", line)
    _finish(out, ATTENTION if new else DONE, **fields)


@main.command()
@reporting
@click.pass_context
def receipts(ctx: click.Context, out: Output) -> None:
    """Read the receiver's receipts (*.receipt.xml in inbox/) into the journal: accepted files
    make their content delivered; a rejected file's content goes again in the next file. A
    receipt that is not believed (for a file that never left, dated before its file, or
    contradicting an earlier receipt) is set aside in inbox/failed/ with the reason. Exit status
    3 on a rejection or a receipt set aside.

    \b
    Example:
      reskontro fetch && reskontro receipts
    """
    results = services.receipts(_site(ctx))
    if not results:
        out.say("No receipts in the inbox.")
    bad = False
    for r in results:
        style = "red" if r.kind == "failed" or "REJECTED" in r.detail else "green"
        bad |= style == "red"
        out.say((r.name, style), f": {r.detail}")
    _finish(out, ATTENTION if bad else DONE,
            files=[{"name": r.name, "kind": r.kind, "detail": r.detail} for r in results])


@main.command()
@click.option("--files", "limit", type=click.IntRange(1),
              help="How many of the most recent files to list (default: 15; with --json, all).")
@reporting
@click.pass_context
def status(ctx: click.Context, out: Output, limit: int) -> None:
    """The transfer files and their states (times in the site's time zone); what is pending,
    in flight and held; the rule file in force (its digest, since when, how many entries it
    decided differently from the one before); the last cycle and the next scheduled one.

    \b
    Example:
      reskontro status --files 5
    """
    site = _engine_site(ctx)
    st = services.status(site)
    tz, plan = site.config.tz, st.schedule
    files = st.files[-(limit or (len(st.files) if out.json else 15)):]
    colour = {"accepted": "green", "rejected": "red", "invalid": "red", "abandoned": "yellow"}
    out.table([Col("seq", "number"), Col("file", "id"), Col("kind", "id"), Col("state", "id"),
               Col("entries", "number"), Col("created", "words"), Col("detail", max_width=60)],
              [[str(f.sequence), f.file_id, f.kind, (f.state, colour.get(f.state, "cyan")), f"{f.entry_count:,}",
                f.created_at.astimezone(tz).strftime("%Y-%m-%d %H:%M %Z"), f.detail or ""] for f in files],
              title="Transfer files")
    out.say("Items: " + ", ".join(f"{k.replace('_', ' ')} {v:,}" for k, v in st.items.items()))
    r, was = st.rules, st.rules.exported
    line = f"Rules: {r.path.name} {r.digest}"
    if was is not None:
        since = was.since.astimezone(tz).strftime("%Y-%m-%d %H:%M %Z")
        line += (f"; the last export used {was.digest}" if r.changed_since_export else "") + f", in force since {since}"
        if was.previous:
            line += f" (before: {was.previous}; " + (f"{plural(was.changed, 'entry', 'entries')} decided differently)"
                                                     if was.changed is not None else "changes not journaled)")
    out.say(line)
    if r.changed_since_export:
        out.say(("  the file changed since the last export", "yellow"),
                ": the next export uses it (`reskontro rules diff` shows what changes)")
    last = st.last_run
    if last is None:
        out.say("Last run: none yet.")
    else:
        colour = {"ok": "green", "needs_person": "yellow", "failed": "red"}.get(last.result, "cyan")
        shown = {"needs_person": "done, but a person is needed", "running": "running, or did not finish"}
        ended = f", ended {last.finished_at.astimezone(tz):%H:%M}" if last.finished_at else ""
        out.say(f"Last run: {last.id} ({last.kind}) started {last.started_at.astimezone(tz):%Y-%m-%d %H:%M %Z}"
                f"{ended}: ", (shown.get(last.result, last.result), colour))
        for text in last.needs_person[:10]:
            out.say(("  needs a person ", "yellow"), text)
        if len(last.needs_person) > 10:
            out.say(f"  … and {len(last.needs_person) - 10} more (`status --json`)")
    when = "now (today's cycle is overdue: the next scheduled tick runs it)" if plan.due else \
        f"{plan.next_run:%Y-%m-%d %H:%M %Z}"
    out.say(f"Next scheduled run: {when}")
    rules = {"file": str(r.path), "digest": r.digest, "changed_since_export": r.changed_since_export,
             "exported": None if was is None else {"digest": was.digest, "since": was.since.astimezone(tz).isoformat(),
                                                   "previous": was.previous, "decided_differently": was.changed}}
    _finish(out, DONE, files=[{"file_id": f.file_id, "sequence": f.sequence, "kind": f.kind, "state": f.state,
                               "entries": f.entry_count, "created_at": f.created_at.astimezone(tz).isoformat(),
                               "detail": f.detail} for f in files], items=st.items,
            runs={"last": st.last_run.as_json(tz) if st.last_run else None,
                  "next_scheduled": plan.next_run.isoformat(timespec="seconds"), "overdue": plan.due},
            rules=rules)


# --- incoming payments ------------------------------------------------------------------------
def _needs_person(r) -> bool:
    return r.kind == "failed" or "REJECTED" in r.detail


def _report_processed(out: Output, r) -> None:
    style = {"failed": "red", "duplicate": "yellow"}.get(r.kind, "green")
    if r.kind == "payments" and "not payments (not listed)" in r.detail:
        style = "yellow"       # debits, reversals, returns: reported, for a person to see
    if "REJECTED" in r.detail:
        style = "red"
    out.say((r.name, style), f" ({r.kind}): {r.detail}")


@main.command()
@click.option("--once", is_flag=True, help="Process what is in the inbox now, then exit (for cron and scripts).")
@click.option("--rescan", type=click.FloatRange(1), default=60, show_default=True,
              help="Seconds between full rescans of the inbox (file events can be lost).")
@reporting
@click.pass_context
def watch(ctx: click.Context, out: Output, once: bool, rescan: float) -> None:
    """Process files dropped into inbox/: payment files (CREMUL, camt.054, OCR giro) are listed as
    bank payments, receipts go to the journal. Each file goes to inbox/done/ or to inbox/failed/
    with the reason beside it; the watcher keeps running after any bad file. Stop with Ctrl-C.
    With --once, exit status 3 when a file failed or a receipt says rejected; --json needs --once.

    \b
    Example:
      reskontro watch --once --json
    """
    import signal
    import threading

    if out.json and not once:
        raise click.UsageError("--json needs --once (a watcher that keeps running has no one answer)")
    site = _site(ctx)
    stop = threading.Event()
    if not once:
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        out.say(f"Watching {site.config.inbox} (Ctrl-C to stop)…")
    handled = []

    def report(r) -> None:
        handled.append(r)
        _report_processed(out, r)
    try:
        n = services.watch(site, once=once, rescan=rescan, stop=stop, report=report)
    except KeyboardInterrupt:
        stop.set()
        return
    if once and n == 0:
        out.say("Nothing to process in the inbox.")
    if once:
        _finish(out, ATTENTION if any(_needs_person(r) for r in handled) else DONE,
                files=[{"name": r.name, "kind": r.kind, "detail": r.detail} for r in handled])


@main.command()
@click.option("--unposted", is_flag=True, help="Only payments not booked yet (unposted or unmatched).")
@reporting
@click.pass_context
def payments(ctx: click.Context, out: Output, unposted: bool) -> None:
    """List the bank payments: source, date, payer, amount, KID, the invoice it matches, status.

    \b
    Example:
      reskontro payments --unposted
    """
    from decimal import Decimal

    rows = services.payments(_site(ctx), unposted=unposted)
    colour = {"matched": "green", "booked_in_erp": "green", "unmatched": "red", "dismissed": "yellow"}
    out.table([Col("id", "id"), Col("source", "id"), Col("date", "id"), Col("payer"), Col("amount", "amount"),
               Col("KID / invoice no", "id"), Col("invoice", "id"), Col("status", "id"), Col("note")],
              [[r["id"], r["source"], r["date"] or "", r["payer"] or "", f"{Decimal(r['amount']):,.2f} {r['currency']}",
                r["kid"] or r["invoice_no"] or "", r["invoice"] or "", (r["status"], colour.get(r["status"], "cyan")),
                r["note"] or ""] for r in rows],
              title=f"Bank payments ({len(rows)})")
    _finish(out, DONE, payments=rows)


@main.command()
@reporting
@click.pass_context
def post(ctx: click.Context, out: Output) -> None:
    """Book the listed bank payments: matched by KID (else invoice number) to an open invoice,
    closing it when paid in full; what cannot be matched safely is listed for a person (exit
    status 3).

    \b
    Example:
      reskontro watch --once && reskontro post
    """
    r = services.post(_site(ctx))
    out.say(f"Booked {plural(r.matched, 'payment')}; {plural(r.closed, 'invoice')} closed; {len(r.unmatched)} unmatched"
            + (f"; {len(r.in_erp)} booked in the ERP already (not booked again)." if r.in_erp else "."))
    for pid, why in r.unmatched:
        out.say("  ", (pid, "red"), f": {why}")
    for pid, erp in r.in_erp:
        out.say(f"  {pid}: booked in the ERP as entry {erp}")
    _finish(out, ATTENTION if r.unmatched else DONE, booked=r.matched, closed=r.closed,
            unmatched=[{"payment": p, "why": w} for p, w in r.unmatched],
            in_erp=[{"payment": p, "entry": e} for p, e in r.in_erp])


@main.command()
@click.option("--out", "out_file", type=click.Path(dir_okay=False, path_type=Path),
              help="The file to write (default: standard output).")
@click.pass_context
def bookings(ctx: click.Context, out_file: Path | None) -> None:
    """What this service booked itself, for the ERP to import: JSON Lines in the import format.

    Every entry the service booked (payments from bank files, with `bank_ref` = the bank's
    archive reference; the payout and payment of `correct-payment`) and every match holding one,
    with all its members. The ERP that books these under the same ids (or gives its own copy of
    a bank payment that `bank_ref`) exports the same payments back: they map onto these, never
    a second payment.

    \b
    Example:
      reskontro bookings --out to-erp.jsonl
    """
    site = _site(ctx)
    if out_file is None:
        services.bookings(site, sys.stdout)
        return
    tmp = out_file.with_name(out_file.name + ".part")
    with tmp.open("w", encoding="utf-8") as f:
        n, m = services.bookings(site, f)
    tmp.replace(out_file)
    Output().say(f"Wrote {plural(n, 'entry', 'entries')} and {plural(m, 'match', 'matches')} this service "
                 f"booked to {out_file}.")


@main.command("correct-payment")
@click.argument("payment")
@click.option("--to", "to_invoice", required=True, help="The invoice the payment really belongs to.")
@reporting
@click.pass_context
def correct_payment_cmd(ctx: click.Context, out: Output, payment: str, to_invoice: str) -> None:
    """Correct a payment Lowell has that was booked on the wrong invoice, the service's way.

    \b
    Creates (both go in the next file; both are the service's own, listed by `bookings`):
      U<PAYMENT>  a payout of the payment's amount, on the payment's customer, linked into the
                  payment's match with the wrong invoice (which is open again);
      N<PAYMENT>  a new payment of the same amount, on the right invoice's customer with its KID,
                  linked into the right invoice's match (made as M<INVOICE> if it has none).

    Refuses, with the reason and exit status 1, creating nothing: a PAYMENT that is not a
    booked payment, not matched, already on INVOICE, or corrected before; an INVOICE that is
    not an invoice; and a payment that never reached Lowell (no version delivered or in
    flight) — then re-linking it in the ERP is the whole fix. (Unmatching or reversing a
    payment Lowell has is never sent: the rules hold it.)

    \b
    Example:
      reskontro correct-payment BP1234 --to I1001
    """
    try:
        payout, again = services.correct_payment(_site(ctx), payment, to_invoice)
    except InputError as exc:
        raise UserError(str(exc)) from None
    out.say(f"Registered payout {payout} (linked to the wrong invoice and {payment}) and payment "
            f"{again} on {to_invoice}; both go in the next file.")
    _finish(out, DONE, payment=payment, invoice=to_invoice, payout=payout, new_payment=again)


@main.command("match-payment")
@click.argument("payment")
@click.option("--to", "to_invoice", required=True, help="The invoice it pays (its id or document number).")
@click.option("--reason", help="Why, for the record (e.g. the customer's call).")
@reporting
@click.pass_context
def match_payment_cmd(ctx: click.Context, out: Output, payment: str, to_invoice: str, reason: str | None) -> None:
    """Book a bank payment that `post` left unmatched (or has not tried yet) on INVOICE by hand:
    the same checks as `post` (the invoice is invoiced and open, the amount is incoming and no
    more than what is open, the same currency, no many-to-many match) and the same booking, so
    the invoice closes when paid and the payment with its match goes in the next file. Recorded
    with who (the OS user) and when; `explain` shows it. Refused, changing nothing, with the
    reason and exit status 1. PAYMENT is its id (BP…) or archive reference.

    \b
    Example:
      reskontro match-payment BP1f2e3d4c5b6a79880011 --to I1001
    """
    try:
        m = services.match_payment(_site(ctx), payment, to_invoice, reason=reason)
    except InputError as exc:
        raise UserError(str(exc)) from None
    rest = "closed" if m.closed else f"{m.still_open:,.2f} {m.currency} still open"
    out.say(f"Booked {m.payment} ({views.money(m.amount, m.currency)}) on {m.invoice} in match {m.match_id}; "
            f"invoice {m.invoice} {rest}. It goes to Lowell in the next file.")
    _finish(out, DONE, payment=m.payment, invoice=m.invoice, match=m.match_id, amount=views.jsonable(m.amount),
            currency=m.currency, still_open=views.jsonable(m.still_open), closed=m.closed,
            action=views.jsonable(m.action, _site(ctx).config.tz))


@main.command("dismiss-payment")
@click.argument("payment")
@click.option("--reason", required=True, help="What became of the money (e.g. refunded to the payer).")
@reporting
@click.pass_context
def dismiss_payment_cmd(ctx: click.Context, out: Output, payment: str, reason: str) -> None:
    """Take a bank payment off the unmatched list (refunded to the payer, say): it is booked
    nowhere, `post` never tries it again and the nightly run no longer reports it. Recorded
    with who (the OS user), when and the reason; `explain` shows it. Refused, changing nothing,
    with exit status 1 for a payment that is matched, booked in the ERP or dismissed already.

    \b
    Example:
      reskontro dismiss-payment BP1f2e3d4c5b6a79880011 --reason "refunded to the payer 2026-12-01"
    """
    try:
        d = services.dismiss_payment(_site(ctx), payment, reason)
    except InputError as exc:
        raise UserError(str(exc)) from None
    out.say(f"Dismissed {d.payment} (was {d.was}): {d.reason}. It is off the list.")
    _finish(out, DONE, payment=d.payment, was=d.was, reason=d.reason,
            action=views.jsonable(d.action, _site(ctx).config.tz))


# --- exchange and the nightly cycle -----------------------------------------------------------
@main.command()
@click.option("--dry-run", is_flag=True, help="List what would be uploaded, refused or left; change nothing, connect nowhere.")
@reporting
@click.pass_context
def send(ctx: click.Context, out: Output, dry_run: bool) -> None:
    """Upload every complete file in outbox/ to the receiver's inbound/ (as .part, size checked,
    renamed; a remote name is never overwritten). Sent files move to outbox/sent/. Files dropped
    into the outbox by hand go too, after the same check; .part and hidden files are left alone.
    Exit status 1 when a file is refused or lost; 75 when the server stays unreachable.

    \b
    Example:
      reskontro send --json
    """
    if dry_run:
        p = services.send_preview(_site(ctx))
        for text in p.upload:
            out.say(("would send ", "green"), text)
        for text in p.answered:
            out.say(("would move to outbox/sent/ ", "green"), text, ": answered already")
        for text in p.skipped:
            out.say(("would leave ", "yellow"), text)
        for text in p.refused:
            out.warn(("would refuse ", "red"), text, " (to outbox/rejected/)")
        for text in p.lost:
            out.warn(("lost ", "red"), text)
        out.say("Dry run: nothing to send." if not (p.upload or p.answered or p.refused or p.lost) else
                "Dry run: nothing was sent, moved or journalled.")
        _finish(out, FAILED if (p.refused or p.lost) else DONE, dry_run=True, upload=list(p.upload),
                answered=list(p.answered), skipped=list(p.skipped), refused=list(p.refused), lost=list(p.lost))
        return
    r = services.send(_site(ctx))
    for name in r.sent:
        out.say(("sent", "green"), f" {name}")
    for name in r.already:
        out.say(("already on the server", "green"), f" {name} (same content)")
    for text in r.answered:
        out.say(("answered already", "green"), f" {text}: the receiver has it; moved to outbox/sent/")
    for text in r.skipped:
        out.say(("left", "yellow"), f" {text}")
    for text in r.refused:
        out.warn(("refused", "red"), f" {text} (moved to outbox/rejected/)")
    for text in r.lost:
        out.warn(("lost", "red"), f" {text}")
    if not (r.sent or r.already or r.refused or r.lost or r.answered):
        out.say("Nothing to send.")
    _finish(out, FAILED if r.refused or r.lost else DONE, sent=r.sent, already=r.already, answered=r.answered,
            skipped=r.skipped, refused=r.refused, lost=r.lost)


@main.command()
@reporting
@click.pass_context
def fetch(ctx: click.Context, out: Output) -> None:
    """Download every file in the receiver's outbound/ (receipts, payment files) into inbox/,
    removing each remotely only once it is safely stored. Unsafe remote names, files over
    sftp.max_fetch_size and files that change while fetched are left on the server. Exit status
    1 when a file is refused or not fetched; 75 when the server stays unreachable.

    \b
    Example:
      reskontro fetch && reskontro watch --once
    """
    r = services.fetch(_site(ctx))
    for f in r.files:
        out.say(("fetched", "green"), f" {f.name}")
    for text in r.changed:
        out.say(("left for next time", "yellow"), f" {text}")
    for text in r.refused:
        out.warn(("refused remote name", "red"), f" {text}")
    for text in r.failed:
        out.warn(("not fetched", "red"), f" {text}")
    if not (r.files or r.refused or r.failed or r.changed):
        out.say("Nothing to fetch.")
    _finish(out, DONE if r.ok else FAILED, fetched=[f.name for f in r.files], changed=r.changed,
            refused=r.refused, failed=r.failed)


def _step_printer(out: Output):
    def show(step) -> None:
        if not step.ok:
            mark = ("FAILED", "bold red")
        elif getattr(step, "attention", None):   # (a dry run's planned step has none)
            mark = ("CHECK", "bold yellow")       # done, and a person looks at it
        else:
            mark = ("ok", "green")
        out.say(f"{step.name:>7}: ", mark, f" {step.summary}")
    return show


@main.command("run")
@click.option("--no-sftp", is_flag=True, help="Skip fetch and send (inbox, post, outbox and export only).")
@click.option("--scheduled", is_flag=True,
              help="For cron every 15 minutes: run only when past send_time (in the site's time zone) and "
                   "today's cycle has not completed; else exit 0 at once, saying nothing.")
@click.option("--dry-run", is_flag=True, help="Show each step and what it would do; change nothing (the remote "
                                              "outbound/ is listed, not fetched).")
@reporting
@click.pass_context
def run_cmd(ctx: click.Context, out: Output, no_sftp: bool, scheduled: bool, dry_run: bool) -> None:
    """The nightly cycle, for cron: fetch, read receipts and payment files, book payments,
    export tonight's file, send. One line per step (ok, CHECK: done but a person is needed,
    FAILED); exit status 0 when all went well, 3 when a person is needed (a file set aside, a
    receipt rejecting our file, a payment not booked, an entry held new tonight: listed), 75
    when only the server was unreachable, 1 when a step failed. Each cycle is in the run
    history (`status`) and the log; `[notify]` tells a person.

    \b
    Example (crontab, every 15 minutes; `reskontro init` prints the line with the full path):
      */15 * * * * reskontro --site /srv/reskontro run --scheduled
    """
    site = _engine_site(ctx)
    if dry_run:
        steps = services.run_preview(site, sftp=not no_sftp)
        printer = _step_printer(out)
        for step in steps:
            printer(step)
        ok = all(step.ok for step in steps)
        out.say("Dry run: nothing was fetched, booked, written or sent.", *(() if ok else ((" Some steps would fail.", "bold red"),)))
        _finish(out, DONE if ok else FAILED, dry_run=True,
                steps=[{"name": s.name, "ok": s.ok, "detail": s.summary} for s in steps])
        return
    result = services.run(site, sftp=not no_sftp, on_step=_step_printer(out), scheduled=scheduled)
    if result.skipped is not None:
        _finish(out, DONE, skipped=result.skipped)      # not due: cron's tick says nothing
        return
    for text in result.needs_person:       # on stderr, as every refusal: stdout keeps one line per step
        out.warn(("needs a person ", "yellow"), text)
    status = result.exit_status
    log = site.config.log_file
    if status == DONE:
        out.say(("All went well.", "green"))
    elif status == ATTENTION:
        out.say(("Done, but a person is needed", "bold yellow"), f" ({len(result.needs_person)}); details in {log}")
    elif status == LATER:
        out.say(("The server could not be reached", "bold red"), f"; the rest went well; try again later "
                f"(details in {log})")
    else:
        out.say(("Some steps failed", "bold red"), f"; details in {log}")
    _finish(out, status, steps=[{"name": s.name, "ok": s.ok, "attention": s.attention, "detail": s.summary}
                                for s in result.steps], needs_person=result.needs_person)


@main.command()
@click.option("--no-sftp", is_flag=True, help="Skip fetch and send in each cycle.")
@click.pass_context
def serve(ctx: click.Context, no_sftp: bool) -> None:
    """One long-running process: the nightly cycle at the configured time (default 18:00
    Europe/Oslo, right across summer time) and the inbox watcher. Stops cleanly on SIGTERM.

    \b
    Example (a systemd service's ExecStart):
      reskontro --site /srv/reskontro serve
    """
    import signal
    import threading

    out = Output()
    site = _engine_site(ctx)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    plan = services.schedule(site, sftp=not no_sftp)
    due = "now (today's cycle is overdue)" if plan.due else f"{plan.next_run:%Y-%m-%d %H:%M %Z}"
    out.say(f"Serving {site.config.site}: next run {due}; watching {site.config.inbox}.")
    services.serve(site, stop, sftp=not no_sftp, on_step=_step_printer(out))
    out.say("Stopped.")


# --- the fleet: many creditors on PostgreSQL -----------------------------------------------------
@main.group()
def fleet() -> None:
    """Many creditors in one PostgreSQL database: create the fleet, see how every creditor's night went."""


@fleet.command("init")
@click.argument("url")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="The fleet's folder: default rules and templates, and each creditor's inbox/ and outbox/.")
@reporting
def fleet_init(out: Output, url: str, data_dir: Path) -> None:
    """Create the fleet in the PostgreSQL database URL: the registry of creditors, the task
    queue's tables, and the data folder (shared by every worker machine). Again on a fleet:
    adds what is missing.

    \b
    Example:
      reskontro fleet init postgresql+psycopg://rk@db.example.no/fleet --data-dir /srv/fleet
    """
    made = services.fleet_init(url, data_dir)
    out.say("Fleet ready; data folder ", (str(made), "bold"), ".")
    out.say("Next: reskontro creditors add ID --sender-id … --org-no … --fleet URL (or RESKONTRO_FLEET)")
    _finish(out, DONE, data_dir=str(made))


@fleet.command("status")
@_fleet_url
@reporting
def fleet_status(out: Output, fleet_url: str | None) -> None:
    """Per creditor: its last cycle and result, its newest nightly job, files awaiting a receipt,
    entries held; the creditors that need a person first, and the drop folder's files no creditor
    could be found for. Exit status 3 when any of them needs a person.

    \b
    Example:
      RESKONTRO_FLEET=postgresql+psycopg://rk@db/fleet reskontro fleet status
    """
    url = _need_fleet(fleet_url)
    rows = services.fleet_status(url)
    out.table([Col("creditor", "id"), Col("last run", "words"), Col("result", "id"), Col("job", "id"),
               Col("awaiting receipt", "number"), Col("held", "number"), Col("needs a person")],
              [[r.id, "" if r.last_run is None else r.last_run.isoformat(timespec="minutes"), r.result,
                "" if r.job is None else f"{r.job} {r.job_date}", r.awaiting_receipt, r.held,
                "; ".join(r.needs_person[:2])] for r in rows], title="Fleet")
    attention = [r.id for r in rows if r.attention]
    unrouted = services.fleet_unrouted(url)
    if unrouted:
        out.say(f"{len(unrouted)} file{'s' if len(unrouted) != 1 else ''} in the drop folder's unrouted/ wait for "
                f"a person (the reason beside each): {', '.join(unrouted[:5])}{' …' if len(unrouted) > 5 else ''}")
        attention.append(f"{len(unrouted)} unrouted files in the drop folder")
    _finish(out, ATTENTION if attention else DONE, creditors=[r.as_dict() for r in rows], unrouted=unrouted,
            attention=attention)


@main.group()
def creditors() -> None:
    """The fleet's creditors: add, list, show, disable."""


@creditors.command("add")
@click.argument("creditor_id", metavar="ID")
@click.option("--sender-id", required=True, help="Its client number at Lowell.")
@click.option("--org-no", required=True, help="Its organisation number.")
@click.option("--mode", default="full_ledger", show_default=True, help="full_ledger or factoring.")
@click.option("--timezone", default="Europe/Oslo", show_default=True, help="Its time zone.")
@click.option("--send-time", default="18:00", show_default=True, help="When its file goes (HH:MM, its zone).")
@click.option("--sftp-host", default="127.0.0.1", show_default=True, help="Its SFTP account's host.")
@click.option("--sftp-port", type=int, default=22, show_default=True, help="Its SFTP account's port.")
@click.option("--sftp-user", default="reskontro", show_default=True, help="Its SFTP account's user.")
@click.option("--sftp-key-file", type=click.Path(dir_okay=False, path_type=Path), help="Its private key.")
@click.option("--sftp-known-hosts", type=click.Path(dir_okay=False, path_type=Path),
              help="The server's pinned host key (known_hosts format).")
@click.option("--rules", "rule_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Its own rule file (linted first); else the fleet's default.")
@click.option("--account", "accounts", multiple=True, metavar="ACCOUNT",
              help="Its bank account (11 digits or IBAN; again for more): bank files in the drop folder "
                   "crediting it are routed to it.")
@_fleet_url
@reporting
def creditors_add(out: Output, creditor_id: str, fleet_url: str | None, rule_file: Path | None,
                  sftp_key_file: Path | None, sftp_known_hosts: Path | None, accounts: tuple[str, ...],
                  **fields) -> None:
    """Register a creditor: validated as reskontro.toml is (the setting and the reason when
    refused), its own schema and role in the fleet database, its folders.

    \b
    Example:
      reskontro creditors add acme --sender-id 123456 --org-no 923609016 --send-time 18:00 \\
        --sftp-host sftp.lowell.no --sftp-user acme --sftp-key-file /srv/keys/acme \\
        --sftp-known-hosts /srv/keys/known_hosts --account 8601.11.17947 \
        --fleet postgresql+psycopg://rk@db/fleet
    """
    try:
        c = services.creditor_add(_need_fleet(fleet_url), creditor_id=creditor_id, rule_file=rule_file,
                                  accounts=accounts,
                                  sftp_key_file=None if sftp_key_file is None else str(sftp_key_file),
                                  sftp_known_hosts=None if sftp_known_hosts is None else str(sftp_known_hosts),
                                  **fields)
    except ConfigError as exc:
        raise UserError(str(exc), USAGE) from None
    except RuleFileError as exc:
        raise UserError(f"the rule file has problems (run `reskontro rules lint`):\n{exc}", USAGE) from None
    out.say("Added creditor ", (c.id, "bold"), f" (schema {c.schema_name}, role {c.role_name}).")
    _finish(out, DONE, creditor=c.as_dict())


@fleet.command("route")
@click.option("--drop", "drop", type=click.Path(file_okay=False, path_type=Path),
              help="The drop folder (default: drop/ in the fleet's data folder).")
@_fleet_url
@reporting
def fleet_route(out: Output, drop: Path | None, fleet_url: str | None) -> None:
    """Route the shared drop folder once (the worker does it every minute): each complete bank
    file to the creditor whose account it credits, each receipt to the creditor of its FileId,
    into that creditor's inbox/. A file that is no one's, several creditors' or unreadable goes
    to drop/unrouted/ with the reason beside it. Exit status 3 when one did.

    \b
    Example:
      reskontro fleet route --fleet postgresql+psycopg://rk@db/fleet
    """
    waiting: list[str] = []
    rows = services.fleet_route(_need_fleet(fleet_url), drop, waiting=waiting)
    out.table([Col("file"), Col("kind", "id"), Col("creditor", "id"), Col("detail", "words")],
              [[r.name, r.kind, r.creditor or "-", r.detail] for r in rows], title="Drop folder")
    unrouted = [r for r in rows if r.creditor is None]
    out.say(f"{len(rows) - len(unrouted)} routed, {len(unrouted)} set aside in unrouted/"
            + (f", {len(waiting)} not complete yet (left for the next pass)" if waiting else "") + ".")
    _finish(out, ATTENTION if unrouted else DONE, files=[r.as_dict() for r in rows], waiting=waiting,
            attention=[r.detail for r in unrouted])


@creditors.command("list")
@_fleet_url
@reporting
def creditors_list(out: Output, fleet_url: str | None) -> None:
    """Every creditor of the fleet.

    \b
    Example:
      reskontro creditors list --fleet postgresql+psycopg://rk@db/fleet
    """
    rows = services.creditors(_need_fleet(fleet_url))
    out.table([Col("creditor", "id"), Col("sender id", "id"), Col("org no", "id"), Col("mode", "id"),
               Col("zone", "id"), Col("send time", "id"), Col("sftp"), Col("rules", "words"), Col("disabled", "id")],
              [[c.id, c.sender_id, c.org_no, c.mode, c.timezone, c.send_time,
                f"{c.sftp_user}@{c.sftp_host}:{c.sftp_port}", "own" if c.own_rules else "fleet default",
                "yes" if c.disabled else ""] for c in rows], title="Creditors")
    _finish(out, DONE, creditors=[c.as_dict() for c in rows])


@creditors.command("show")
@click.argument("creditor_id", metavar="ID")
@_fleet_url
@reporting
def creditors_show(out: Output, creditor_id: str, fleet_url: str | None) -> None:
    """One creditor's settings.

    \b
    Example:
      reskontro creditors show acme --fleet postgresql+psycopg://rk@db/fleet
    """
    c = services.creditor(_need_fleet(fleet_url), creditor_id)
    d = c.as_dict()
    sftp = d.pop("sftp")
    for k, v in [*d.items(), *((f"sftp {k}", v) for k, v in sftp.items())]:
        out.say(f"{k}: ", ("" if v is None else str(v), "bold"))
    _finish(out, DONE, creditor=c.as_dict())


@creditors.command("add-account")
@click.argument("creditor_id", metavar="ID")
@click.argument("accounts", metavar="ACCOUNT...", nargs=-1, required=True)
@_fleet_url
@reporting
def creditors_add_account(out: Output, creditor_id: str, accounts: tuple[str, ...], fleet_url: str | None) -> None:
    """Register more bank accounts of a creditor (11 digits with a valid check digit, or an IBAN):
    bank files in the fleet's drop folder that credit them are routed to its inbox.

    \b
    Example:
      reskontro creditors add-account acme 8601.11.17947 NO9386011117947 --fleet postgresql+psycopg://rk@db/fleet
    """
    c = services.creditor_add_accounts(_need_fleet(fleet_url), creditor_id, list(accounts))
    out.say("Creditor ", (c.id, "bold"), f" has the accounts {', '.join(c.accounts)}.")
    _finish(out, DONE, creditor=c.as_dict())


@creditors.command("disable")
@click.argument("creditor_id", metavar="ID")
@_fleet_url
@reporting
def creditors_disable(out: Output, creditor_id: str, fleet_url: str | None) -> None:
    """No more nightly jobs for the creditor (its store and files are kept).

    \b
    Example:
      reskontro creditors disable acme --fleet postgresql+psycopg://rk@db/fleet
    """
    c = services.creditor_disable(_need_fleet(fleet_url), creditor_id)
    out.say("Creditor ", (c.id, "bold"), " disabled: no more nightly jobs.")
    _finish(out, DONE, creditor=c.as_dict())


@main.command()
@_fleet_url
@click.option("--no-sftp", is_flag=True, help="Write and check the files, send nothing (tests, benchmarks).")
@click.option("--stalled-after", type=click.FloatRange(1), default=60, show_default=True, metavar="SECONDS",
              help="A worker silent this long is dead: its job goes to another worker.")
@click.option("--once", is_flag=True, help="Work until the queue is empty, then exit.")
@click.option("--route-every", type=click.FloatRange(1), default=60, show_default=True, metavar="SECONDS",
              help="How often the drop folder is routed to the creditors' inboxes.")
def worker(fleet_url: str | None, no_sftp: bool, stalled_after: float, once: bool, route_every: float) -> None:
    """Work the fleet's queue: every creditor's nightly cycle at its send time, one creditor at a
    time per worker, and the shared drop folder routed to the creditors' inboxes (each then read
    as `watch --once` reads a site's); run any number of workers on any number of machines (they share the
    fleet database and its data folder). Stops on SIGINT/SIGTERM.

    \b
    Example:
      RESKONTRO_FLEET=postgresql+psycopg://rk@db/fleet reskontro worker
    """
    from reskontro.worker import run_worker
    run_worker(_need_fleet(fleet_url), sftp=not no_sftp, stalled_after=stalled_after, once=once,
               route_every=route_every)
# --- the support page -------------------------------------------------------------------------
@main.command()
@click.option("--host", default=None, help="Address to listen on (default: [web] host, else 127.0.0.1). "
              "Any other than the loopback address needs users or trusted_proxies in [web].")
@click.option("--port", type=click.IntRange(1, 65535), default=None,
              help="Port to listen on (default: [web] port, else 8080).")
@click.pass_context
def web(ctx: click.Context, host: str | None, port: int | None) -> None:
    """The support page in a browser: overview, files, entries and why, held and excluded,
    payments (match or dismiss), customers' data, one search box. Stops on Ctrl-C/SIGTERM.

    \b
    Example:
      reskontro --site /srv/reskontro web --port 8080
    """
    from reskontro.web.security import Refused
    from reskontro.web.server import serve as serve_web

    out = Output()
    site = _engine_site(ctx)           # a bad config or rule file is refused here, not per page
    services.start_logging(site)       # refusals and store errors the pages meet go to the site's log
    try:
        serve_web(site.config.site, host, port,
                  on_ready=lambda url: out.say(f"Support page for {site.config.site} on ", (url, "bold"),
                                               " (Ctrl-C stops it)"))
    except Refused as exc:
        raise UserError(exc.message, USAGE) from None
    except OSError as exc:             # the port is taken, the address is not this machine's
        raise UserError(f"cannot listen on {host or site.config.web.host}:{port or site.config.web.port}: "
                        f"{exc.strerror or exc}", USAGE) from None


@main.command("web-password")
@click.argument("login")
def web_password(login: str) -> None:
    """Make the line for [web] users in reskontro.toml: LOGIN and an argon2 hash of a password
    asked twice (not echoed). Only the hash goes in the config, never the password.

    \b
    Example:
      reskontro web-password support
    """
    import re

    from reskontro.web.security import hash_password
    if not re.fullmatch(r"[A-Za-z0-9._@-]{1,64}", login):
        raise UserError(f"{login!r}: a login is 1-64 letters, digits or . _ @ -", USAGE)
    password = click.prompt("Password", hide_input=True, confirmation_prompt=True, err=True)
    if len(password) < 12:
        raise UserError("a password of at least 12 characters, please", USAGE)
    click.echo("# under [web] users (or as [web.users]):")
    click.echo(f'{login} = "{hash_password(password)}"')


if __name__ == "__main__":  # pragma: no cover - `python -m reskontro.cli`
    sys.exit(main(prog_name="reskontro"))
