"""The `reskontro` command line (click + rich)."""
from __future__ import annotations

import errno
import json
import logging
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from reskontro.config import ConfigError
from reskontro.domain import InputError
from reskontro.errors import OPERATOR_ERRORS, describe, store_name
from reskontro.files.lock import LockedError
from reskontro.rules.rulefile import RuleFileError
from reskontro import services
from reskontro.site import Site, init_site

console = Console()
err = Console(stderr=True, soft_wrap=True)   # `path:line: message` stays one line (no wrap at 80 columns)


class UserError(click.ClickException):
    """An error the user can fix; printed without a traceback."""

    def show(self, file=None):
        # the message carries outside data (ids, file names): never read it as markup
        err.print(f"[bold red]error:[/] {escape(self.message)}", markup=True, highlight=False)


# Errors an operator acts on (a full disk, a damaged store, an unreadable file, a held lock):
# one line naming the file or resource and exit status 1, whichever command met them; the
# traceback goes to the site's log at debug level. Anything else is a bug and keeps its traceback.
_ONE_LINE = (*OPERATOR_ERRORS, LockedError, ConfigError, InputError)


class _Commands(click.Group):
    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except _ONE_LINE as exc:
            if isinstance(exc, OSError) and exc.errno == errno.EPIPE:
                raise                       # click's own handling of a closed stdout
            site = (ctx.obj or {}).get("site_obj")
            line = describe(exc, store_name(site.config.database) if site else None)
            _log_traceback(site, f"{ctx.info_name} {ctx.invoked_subcommand}: {line}", exc)
            raise UserError(line) from None


def _log_traceback(site: Site | None, message: str, exc: BaseException) -> None:
    if site is None:
        return
    from reskontro.files.logfile import setup_logging
    try:
        setup_logging(site.config.log_file)
    except OSError:
        return                              # no log to be had: the one line is all there is
    logging.getLogger("reskontro.cli").debug("%s", message, exc_info=exc)


def _site(ctx: click.Context) -> Site:
    obj = ctx.find_root().obj
    if obj.get("site_obj") is None:
        try:
            obj["site_obj"] = Site.open(obj["site"])
        except ConfigError as exc:
            raise UserError(str(exc)) from None
    return obj["site_obj"]


def _engine(site: Site):
    try:
        return site.rules
    except RuleFileError as exc:
        raise UserError(f"the rule file has problems (run `reskontro rules lint`):\n{exc}") from None
    except Exception as exc:  # durable_rules refusing a ruleset: a message, not a traceback
        raise UserError(f"the rules engine refuses {site.config.rule_file} ({exc}); "
                        "run `reskontro rules lint` to find the rule") from None


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--site", type=click.Path(file_okay=False, path_type=Path), envvar="RESKONTRO_SITE",
              default=".", show_default=True, help="The site folder (holds reskontro.toml). Env: RESKONTRO_SITE.")
@click.version_option(package_name="reskontro")
@click.pass_context
def main(ctx: click.Context, site: Path) -> None:
    """reskontro: the creditor's customer ledger, sent to Lowell every evening, and incoming
    payments booked.

    Start with `reskontro init SITE`, import the ERP's ledger with `reskontro import`, see what
    tonight's run would send with `reskontro plan`."""
    ctx.obj = {"site": site, "site_obj": None}

    def close() -> None:   # return pooled database connections before the process (or test) ends
        s = ctx.obj.get("site_obj")
        if s is not None and "db" in s.__dict__:
            s.db.dispose()
    ctx.call_on_close(close)


# --- set-up ---------------------------------------------------------------------------------
@main.command()
@click.argument("target", type=click.Path(file_okay=False, path_type=Path))
@click.option("--sender-id", default="123456", show_default=True, help="Your client number at Lowell.")
@click.option("--org-no", default="923609016", show_default=True, help="Your organisation number.")
@click.option("--force", is_flag=True, help="Overwrite an existing site's config, rules and templates.")
def init(target: Path, sender_id: str, org_no: str, force: bool) -> None:
    """Create a working site in TARGET: config, default rules and templates, inbox/, outbox/ and
    an empty SQLite store."""
    try:
        made = init_site(target, sender_id=sender_id, org_no=org_no, force=force)
    except (FileExistsError, ConfigError) as exc:
        raise UserError(str(exc)) from None
    except OPERATOR_ERRORS as exc:          # a store kept by --force that is not one
        raise UserError(describe(exc, str(target / "reskontro.db"))) from None
    console.print(f"Created site [bold]{target}[/] ({len(made)} files). Next: edit "
                  f"{target / 'reskontro.toml'}, then `reskontro --site {target} import FILE`.")


@main.command("import")
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.pass_context
def import_(ctx: click.Context, files: tuple[Path, ...]) -> None:
    """Load customers, entries and matches from ERP exports (CSV or JSON Lines).

    Idempotent (the same file twice changes nothing) and all-or-nothing per file: a bad row is
    reported with file, line and field, and nothing of that file is stored."""
    site = _site(ctx)
    try:
        results = services.import_ledger(site, list(files))
    except InputError as exc:
        raise UserError(str(exc)) from None
    t = Table("file", "customers new/changed", "entries new/changed", "matches new/changed", title="Imported")
    for r in results:
        t.add_row(r.path.name, "%d / %d" % r.customers, "%d / %d" % r.entries, "%d / %d" % r.matches)
    console.print(t)
    for r in results:
        if r.same_as_booked:
            n = r.same_as_booked
            console.print(f"{escape(r.path.name)}: {n} {'entry is one' if n == 1 else 'entries are ones'} this "
                          "service booked (bank payments, corrections): kept as booked, not stored twice",
                          highlight=False)
        for note in r.notes:
            err.print(f"[yellow]{escape(note)}[/]", highlight=False)


@main.command()
@click.option("--customers", type=click.IntRange(1), required=True, help="How many customers.")
@click.option("--seed", type=int, default=1, show_default=True, help="Same seed, same ledger.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="The JSON Lines file to write.")
def sample(customers: int, seed: int, out: Path) -> None:
    """Write a realistic sample ledger in the import format (for the demo, tests, benchmarks)."""
    n = services.write_sample(out, customers, seed)
    console.print(f"Wrote {n} records for {customers} customers to {out}.")


# --- rules ------------------------------------------------------------------------------------
@main.group()
def rules() -> None:
    """Check the rule files: lint, test the examples, list the fields rules can read."""


@rules.command()
@click.argument("files", nargs=-1, type=click.Path(dir_okay=False, path_type=Path))
@click.pass_context
def lint(ctx: click.Context, files: tuple[Path, ...]) -> None:
    """Report problems in rule files with file and line; exit status 1 when there are any.

    Without FILES: the site's rules/transfer.yaml."""
    paths = list(files) or [_site(ctx).config.rule_file]
    bad = 0
    for path, problems in services.lint_rules(paths):
        for p in problems:
            err.print(str(p), highlight=False, markup=False)
        bad += len(problems)
        if not problems:
            console.print(f"{path}: ok")
    if bad:
        raise SystemExit(1)


@rules.command("test")
@click.argument("file", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.pass_context
def rules_test(ctx: click.Context, file: Path | None) -> None:
    """Run the examples kept beside the rules (transfer.examples.yaml); exit 1 on a failure."""
    from reskontro.rules.lint import examples_path

    path = file or _site(ctx).config.rule_file
    run = services.test_rules(path)
    if run.problems:
        for p in run.problems:
            err.print(str(p), highlight=False, markup=False)
        raise SystemExit(1)
    ex = run.examples
    if ex is None:
        raise UserError(f"{examples_path(path)}: no examples file beside {path.name}")
    results = run.results
    failed = [r for r in results if not r.ok]
    for r in failed:
        err.print(f"{ex}:{r.line}: FAIL {r.name}: {r.message}", highlight=False, markup=False)
    console.print(f"{len(results) - len(failed)} passed, {len(failed)} failed")
    if failed:
        raise SystemExit(1)


@rules.command()
def fields() -> None:
    """The fields a rule can test, with their values and a condition as a rule file writes it."""
    from reskontro.rules.facts import DEFAULT_FACT, FIELDS, fact_for_people

    t = Table("field", "kind", "values", "example default", "condition", "meaning")
    shown = fact_for_people(DEFAULT_FACT)       # amounts in kroner, as rule files write them
    values = {"bool": "true, false", "number": "number", "text": "text", "date": "YYYY-MM-DD",
              "words": "words (has, has_not, has_any, has_none)"}
    for f in FIELDS.values():
        default = shown[f.name]
        default = str(default).lower() if isinstance(default, bool) else (" ".join(default) or "(none)") \
            if isinstance(default, list) else str(default)
        t.add_row(f.name, f.kind, ", ".join(f.values) if f.values else values[f.kind], default,
                  escape(f.example), f.doc)
    console.print(t)


def _money(amounts: dict) -> str:
    return "\n".join(f"{a:,.2f} {c}" for c, a in sorted(amounts.items()))


@rules.command("diff")
@click.argument("candidate", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--base", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Compare with this rule file instead of the rules in force.")
@click.option("--limit", type=click.IntRange(0), default=20, show_default=True,
              help="Entries listed per change (0: all); every change of an entry Lowell has is listed.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def rules_diff(ctx: click.Context, candidate: Path, base: Path | None, limit: int, as_json: bool) -> None:
    """What CANDIDATE would decide differently from the rules in force, over the whole ledger:
    per change (e.g. transfer -> hold) the entries and amounts, then each entry with its old
    and new rule and the new reason. Flags entries Lowell already has that would no longer go
    (tell Lowell). Writes nothing; exit 1 when a rule file has problems."""
    from reskontro.domain.amount import format_amount

    site = _site(ctx)
    if base is None:
        _engine(site)
    try:
        with console.status("Deciding the ledger with both rule files…"):
            d = services.rules_diff(site, candidate, base=base, limit=limit or None)
    except RuleFileError as exc:
        for p in exc.problems:
            err.print(str(p), highlight=False, markup=False)
        raise SystemExit(1) from None
    entry = lambda c: {"id": c.entry_id, "customer": c.customer_id, "amount": format_amount(c.amount),  # noqa: E731
                       "currency": c.currency, "old_rule": c.old_rule, "new_rule": c.new_rule,
                       "new_reason": c.new_reason, "lowell": c.lowell, "file": c.file_id,
                       "lowell_since": c.file_date.isoformat() if c.file_date else None, "note": c.tell_lowell}
    if as_json:
        click.echo(json.dumps({"ok": True, "exit_status": 0, "entries": d.entries, "changed": d.changed,
                               "base_digest": d.base_digest, "candidate_digest": d.candidate_digest,
                               "changes": [{"from": l.old, "to": l.new, "count": l.count,
                                            "amounts": {c: format_amount(a) for c, a in sorted(l.amounts.items())},
                                            "entries": [entry(c) for c in l.entries]} for l in d.sorted_lines()],
                               "tell_lowell": [entry(c) for c in d.tell_lowell]}, indent=2, ensure_ascii=False))
        return
    console.print(f"{d.entries:,} entries decided by both ({d.base_digest} -> {d.candidate_digest}): "
                  f"{d.changed:,} would change.", highlight=False)
    if not d.lines:
        return
    t = Table("from", "to", "entries", "amount", title="Changes")
    for l in d.sorted_lines():
        t.add_row(l.old, l.new if l.new != l.old else f"{l.new} (other rule)", f"{l.count:,}", _money(l.amounts))
    console.print(t)
    for l in d.sorted_lines():
        t = Table(title=f"{l.old} -> {l.new}: {l.count:,} entries" + (
            f" ({len(l.entries):,} listed)" if len(l.entries) < l.count else ""))
        for col in ("entry", "customer", "amount", "old rule -> new rule", "new reason"):
            t.add_column(col, overflow="fold", justify="right" if col == "amount" else "left")
        for c in l.entries:
            t.add_row(escape(c.entry_id) + ("\n[yellow]Lowell has it[/]" if c.tell_lowell else ""),
                      escape(c.customer_id), f"{c.amount:,.2f} {c.currency}",
                      escape(f"{c.old_rule} -> {c.new_rule}"), escape(c.new_reason))
        console.print(t)
    told = d.tell_lowell
    if told:
        console.print(f"[yellow]Lowell has {len(told):,} of these entries[/] (a file cannot take one back):")
    for c in told:
        console.print(f"  {escape(c.entry_id)}: {escape(c.tell_lowell)}", highlight=False)


@rules.command("coverage")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def rules_coverage(ctx: click.Context, as_json: bool) -> None:
    """For each rule in force: how many entries it decides (or warns on) tonight and over the
    whole ledger, and how many examples test it. Rules that decide nothing, and rules without
    an example, come first."""
    site = _site(ctx)
    _engine(site)
    cov = services.rules_coverage(site)
    if as_json:
        click.echo(json.dumps({"ok": True, "exit_status": 0, "examples": str(cov.examples) if cov.examples else None,
                               "rules": [{"rule": r.rule_id, "line": r.line, "kind": r.kind, "tonight": r.tonight,
                                          "whole": r.whole, "examples": r.examples, "idle": r.idle,
                                          "untested": r.untested} for r in cov.rules]}, indent=2, ensure_ascii=False))
        return
    t = Table(title=f"Rule coverage ({site.config.rule_file.name})")
    for col in ("rule", "line", "decides", "tonight", "whole ledger", "examples", ""):
        t.add_column(col, overflow="fold", justify="right" if col in ("line", "tonight", "whole ledger", "examples")
                     else "left")
    for r in cov.rules:
        note = ", ".join(x for x, on in (("decides nothing", r.idle), ("no example", r.untested)) if on)
        t.add_row(r.rule_id, str(r.line), r.kind, f"{r.tonight:,}", f"{r.whole:,}", str(r.examples),
                  f"[yellow]{note}[/]" if note else "")
    console.print(t)
    if cov.examples is None:
        console.print(f"No examples file beside {site.config.rule_file.name}.")


# --- what the rules make of the ledger -------------------------------------------------------
@main.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--all", "whole", is_flag=True, help="Every entry, also those delivered or in flight.")
@click.option("--backlog", is_flag=True,
              help="What `export --backlog` would write (matches settled now are history and stay home).")
@click.pass_context
def plan(ctx: click.Context, as_json: bool, whole: bool, backlog: bool) -> None:
    """What tonight's run would send, exclude and hold: counts, amounts and reasons, of every
    entry not yet delivered or in flight. Its transfer count is what the next `export` writes."""
    site = _site(ctx)
    _engine(site)
    with console.status("Deciding entries…") as status:
        p = services.plan(site, whole=whole, backlog=backlog,
                          progress=lambda n: status.update(f"Deciding entries… {n:,}"))
    if as_json:
        click.echo(json.dumps(p.as_json(), indent=2, ensure_ascii=False))
        return
    t = Table(title=f"Tonight's plan ({p.entries:,} entries{'' if whole else ' not yet delivered or in flight'})")
    for col in ("decision", "rule", "entries", "amount", "reason"):
        t.add_column(col, justify="right" if col in ("entries", "amount") else "left",
                     overflow="fold", max_width=None if col != "reason" else 70)
    order = {"transfer": 0, "hold": 1, "wait": 2, "exclude": 3}
    for l in sorted(p.lines.values(), key=lambda l: (order[l.decision], -l.count)):
        t.add_row(l.decision, l.rule_id, f"{l.count:,}",
                  "\n".join(f"{a:,.2f} {c}" for c, a in sorted(l.amounts.items())), l.reason)
    console.print(t)
    if p.warnings:
        w = Table("warning", "entries", "text", title="Warnings (never block)")
        for (rid, text), n in sorted(p.warnings.items()):
            w.add_row(rid, f"{n:,}", text)
        console.print(w)


@main.command()
@click.argument("entry_id")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--history", is_flag=True, help="Also the decision changes the exports journaled for it.")
@click.pass_context
def explain(ctx: click.Context, entry_id: str, as_json: bool, history: bool) -> None:
    """Why ENTRY_ID gets its decision: the facts, the deciding rule, every other rule that matched."""
    from reskontro.rules.facts import fact_for_people

    site = _site(ctx)
    _engine(site)
    found = services.explain(site, entry_id, history=history)
    changes = [{"date": h.at.astimezone(site.config.tz).date().isoformat(), "from": h.from_decision,
                "to": h.to_decision, "rule": h.rule_id, "rules_digest": h.rules_digest, "file": h.file_id}
               for h in (found.history or [])] if found else []
    if found is None:
        raise UserError(f"no entry with id {entry_id!r} in the ledger")
    if found.alias and not as_json:     # the ERP's id of an entry this service booked
        console.print(f"{escape(entry_id)} is the ERP's id of [bold]{escape(found.entry_id)}[/], booked here:",
                      highlight=False)
    entry_id, ex = found.entry_id, found.explanation
    o = ex.outcome
    if as_json:
        click.echo(json.dumps({"entry": entry_id, "decision": o.decision, "rule": o.rule_id, "reason": o.reason,
                               "detail": ex.detail,
                               "warnings": [{"rule": r, "text": t} for r, t in o.warnings],
                               "matched": [r.id for r in ex.matched], "facts": fact_for_people(ex.fact),
                               **({"history": changes} if history else {})},
                              indent=2, ensure_ascii=False))
        return
    console.print(f"[bold]{entry_id}[/]: [bold]{o.decision}[/] by rule [bold]{o.rule_id}[/]")
    console.print(f"  {escape(o.reason)}", highlight=False)
    if ex.detail:
        console.print(f"  [yellow]{escape(ex.detail)}[/]", highlight=False)
    for rid, text in o.warnings:
        console.print(f"  [yellow]warning[/] {rid}: {escape(text)}", highlight=False)
    others = [r for r in ex.matched if r.id != o.rule_id and r.warning is None]
    if others:
        console.print("Other rules that matched (a rule above decided first):")
        for r in others:
            console.print(f"  line {r.line}: {r.id} -> {r.decision}", highlight=False)
    t = Table("fact", "value", title="Facts the rules saw")
    for k, v in fact_for_people(ex.fact).items():   # amounts in kroner, as rule files write them
        t.add_row(k, str(v).lower() if isinstance(v, bool) else " ".join(v) if isinstance(v, list) else str(v))
    console.print(t)
    if history:
        h = Table("date", "from", "to", "rule", "rule file", "file", title="Decision history (changes only)")
        for c in changes:
            h.add_row(c["date"], c["from"], c["to"], c["rule"], c["rules_digest"], c["file"] or "")
        console.print(h if changes else "No decision changes journaled for this entry.")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def check(ctx: click.Context, as_json: bool) -> None:
    """The data-quality report per customer: what holds or warns their entries, and what to fix."""
    site = _site(ctx)
    _engine(site)
    reports = services.check(site)
    if as_json:
        click.echo(json.dumps([{"customer": r.customer_id, "name": r.name, "holds": dict(r.holds),
                                "warnings": dict(r.warnings)} for r in reports], indent=2, ensure_ascii=False))
        return
    if not reports:
        console.print("No customer data problems.")
        return
    t = Table("customer", "name", "problem", "entries", "what to do", title=f"Customer data ({len(reports)} customers)")
    for r in reports:
        for rid, n in list(r.holds.items()) + list(r.warnings.items()):
            kind = "[red]hold[/]" if rid in r.holds else "[yellow]warn[/]"
            t.add_row(r.customer_id, r.name, f"{kind} {rid}", str(n), r.reasons[rid])
    console.print(t)


# --- transfer ---------------------------------------------------------------------------------
def _export(site: Site, backlog: bool):
    _engine(site)
    with console.status("Exporting…") as status:
        return services.export(site, backlog=backlog,
                               progress=lambda what, n: status.update(f"Exporting… {what} {n:,} entries"))


def _print_export(r) -> None:
    for line in r.recovered:
        console.print(f"[yellow]recovered[/] {escape(line)}", highlight=False)
    if r.path is None:
        err.print(f"[bold red]{r.file_id} failed the pre-send check[/] and was moved to outbox/rejected/ "
                  "(nothing in it counts as sent):", highlight=False)
        for p in r.problems[:20]:
            err.print(f"  {p}", highlight=False, markup=False)
        raise SystemExit(1)
    console.print(f"Wrote [bold]{r.path}[/] ({r.kind}): {r.customers:,} customers, {r.entries:,} entries, "
                  f"{r.matches:,} matches.", highlight=False)


@main.command("export")
@click.option("--backlog", is_flag=True, help="Write the backlog file (Kind backlog): every open item with its customers and matches.")
@click.pass_context
def export_cmd(ctx: click.Context, backlog: bool) -> None:
    """Write tonight's transfer file into outbox/: everything decided `transfer` that is neither
    delivered nor in flight. A day with nothing to send still gets a file with zero entries."""
    _print_export(_export(_site(ctx), backlog))


@main.command()
@click.pass_context
def receipts(ctx: click.Context) -> None:
    """Read the receiver's receipts (*.receipt.xml in inbox/) into the journal: accepted files
    make their content delivered; a rejected file's content goes again in the next file. A
    receipt that is not believed (for a file that never left, dated before its file, or
    contradicting an earlier receipt) is set aside in inbox/failed/ with the reason; exit 1."""
    results = services.receipts(_site(ctx))
    if not results:
        console.print("No receipts in the inbox.")
    bad = False
    for r in results:
        style = "red" if r.kind == "failed" or "REJECTED" in r.detail else "green"
        bad |= style == "red"
        console.print(f"[{style}]{escape(r.name)}[/]: {escape(r.detail)}", highlight=False)
    if bad:
        raise SystemExit(1)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--files", "limit", type=int, default=15, show_default=True, help="How many recent files to list.")
@click.pass_context
def status(ctx: click.Context, as_json: bool, limit: int) -> None:
    """The transfer files and their states, and what is pending, in flight and held."""
    site = _site(ctx)
    _engine(site)
    st = services.status(site)
    files, summary = st.files, st.items
    r, was = st.rules, st.rules.exported
    rules = {"file": str(r.path), "digest": r.digest, "changed_since_export": r.changed_since_export,
             "exported": None if was is None else {"digest": was.digest, "since": was.since.isoformat(),
                                                   "previous": was.previous, "decided_differently": was.changed}}
    if as_json:
        click.echo(json.dumps({"files": [{"file_id": f.file_id, "sequence": f.sequence, "kind": f.kind,
                                          "state": f.state, "entries": f.entry_count,
                                          "created_at": f.created_at.isoformat(), "detail": f.detail}
                                         for f in files], "items": summary, "rules": rules},
                              indent=2, ensure_ascii=False))
        return
    t = Table("seq", "file", "kind", "state", "entries", "created", "detail", title="Transfer files")
    colour = {"accepted": "green", "rejected": "red", "invalid": "red", "abandoned": "yellow"}
    for f in files[-limit:]:
        c = colour.get(f.state, "cyan")
        t.add_row(str(f.sequence), f.file_id, f.kind, f"[{c}]{f.state}[/]", f"{f.entry_count:,}",
                  f.created_at.strftime("%Y-%m-%d %H:%M"), (f.detail or "")[:60])
    console.print(t)
    console.print("Items: " + ", ".join(f"{k.replace('_', ' ')} {v:,}" for k, v in summary.items()))
    line = f"Rules: {r.path.name} {r.digest}"
    if was is not None:
        since = was.since.astimezone(site.config.tz).strftime("%Y-%m-%d %H:%M")
        line += (f"; the last export used {was.digest}" if r.changed_since_export else "") + f", in force since {since}"
        if was.previous:
            line += f" (before: {was.previous}; " + (f"{was.changed:,} entries decided differently)"
                                                     if was.changed is not None else "changes not journaled)")
    if r.changed_since_export:
        line += "; the file changed since: the next export uses it (`reskontro rules diff` shows what changes)"
    console.print(line, highlight=False)


# --- incoming payments ------------------------------------------------------------------------
def _report_processed(r) -> None:
    style = {"failed": "red", "duplicate": "yellow"}.get(r.kind, "green")
    if r.kind == "payments" and "not payments (not listed)" in r.detail:
        style = "yellow"       # debits, reversals, returns: reported, for a person to see
    if "REJECTED" in r.detail:
        style = "red"
    console.print(f"[{style}]{escape(r.name)}[/] ({r.kind}): {escape(r.detail)}", highlight=False)


@main.command()
@click.option("--once", is_flag=True, help="Process what is in the inbox now, then exit (for cron and scripts).")
@click.option("--rescan", type=click.FloatRange(1), default=60, show_default=True, help="Seconds between full rescans.")
@click.pass_context
def watch(ctx: click.Context, once: bool, rescan: float) -> None:
    """Process files dropped into inbox/: payment files (CREMUL, camt.054, OCR giro) are listed as
    bank payments, receipts go to the journal. Each file goes to inbox/done/ or to inbox/failed/
    with the reason beside it; the watcher keeps running after any bad file. Stop with Ctrl-C."""
    import signal
    import threading

    site = _site(ctx)
    stop = threading.Event()
    if not once:
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        console.print(f"Watching {site.config.inbox} (Ctrl-C to stop)…")
    try:
        n = services.watch(site, once=once, rescan=rescan, stop=stop, report=_report_processed)
    except KeyboardInterrupt:
        stop.set()
        return
    if once and n == 0:
        console.print("Nothing to process in the inbox.")


@main.command()
@click.option("--unposted", is_flag=True, help="Only payments not booked yet (unposted or unmatched).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def payments(ctx: click.Context, unposted: bool, as_json: bool) -> None:
    """List the bank payments: source, date, payer, amount, KID, the invoice it matches, status."""
    from decimal import Decimal

    rows = services.payments(_site(ctx), unposted=unposted)
    if as_json:
        click.echo(json.dumps(rows, indent=2, ensure_ascii=False))
        return
    t = Table("id", "source", "date", "payer", "amount", "KID / invoice no", "invoice", "status", "note",
              title=f"Bank payments ({len(rows)})")
    for r in rows:
        colour = {"matched": "green", "booked_in_erp": "green", "unmatched": "red"}.get(r["status"], "cyan")
        t.add_row(r["id"], r["source"], r["date"] or "", r["payer"] or "",
                  f"{Decimal(r['amount']):,.2f} {r['currency']}", r["kid"] or r["invoice_no"] or "",
                  r["invoice"] or "", f"[{colour}]{r['status']}[/]", r["note"] or "")
    console.print(t)


@main.command()
@click.pass_context
def post(ctx: click.Context) -> None:
    """Book the listed bank payments: matched by KID (else invoice number) to an open invoice,
    closing it when paid in full; what cannot be matched safely is listed for a person."""
    r = services.post(_site(ctx))
    console.print(f"Booked {r.matched} payments; {r.closed} invoices closed; {len(r.unmatched)} unmatched"
                  + (f"; {len(r.in_erp)} booked in the ERP already (not booked again)." if r.in_erp else "."))
    for pid, why in r.unmatched:
        console.print(f"  [red]{pid}[/]: {escape(why)}", highlight=False)
    for pid, erp in r.in_erp:
        console.print(f"  {pid}: booked in the ERP as entry {escape(erp)}", highlight=False)


@main.command()
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="The file to write (default: standard output).")
@click.pass_context
def bookings(ctx: click.Context, out: Path | None) -> None:
    """What this service booked itself, for the ERP to import: JSON Lines in the import format.

    Every entry the service booked (payments from bank files, with `bank_ref` = the bank's
    archive reference; the payout and payment of `correct-payment`) and every match holding one,
    with all its members. The ERP that books these under the same ids (or gives its own copy of
    a bank payment that `bank_ref`) exports the same payments back: they map onto these, never
    a second payment."""
    site = _site(ctx)
    if out is None:
        services.bookings(site, sys.stdout)
        return
    tmp = out.with_name(out.name + ".part")
    with tmp.open("w", encoding="utf-8") as f:
        n, m = services.bookings(site, f)
    tmp.replace(out)
    console.print(f"Wrote {n} entries and {m} matches this service booked to {out}.", highlight=False)


@main.command("correct-payment")
@click.argument("payment")
@click.option("--to", "to_invoice", required=True, help="The invoice the payment really belongs to.")
@click.pass_context
def correct_payment_cmd(ctx: click.Context, payment: str, to_invoice: str) -> None:
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
    payment Lowell has is never sent: the rules hold it.)"""
    try:
        payout, again = services.correct_payment(_site(ctx), payment, to_invoice)
    except InputError as exc:
        raise UserError(str(exc)) from None
    console.print(f"Registered payout {payout} (linked to the wrong invoice and {payment}) and payment "
                  f"{again} on {to_invoice}; both go in the next file.")


# --- exchange and the nightly cycle -----------------------------------------------------------
def _sftp_errors():
    from reskontro.adapters.sftp import SftpError

    return (SftpError, LockedError, ConfigError)   # an OSError: the one line of _Commands


@main.command()
@click.pass_context
def send(ctx: click.Context) -> None:
    """Upload every complete file in outbox/ to the receiver's inbound/ (as .part, size checked,
    renamed; a remote name is never overwritten). Sent files move to outbox/sent/. Files dropped
    into the outbox by hand go too, after the same check; .part and hidden files are left alone."""
    try:
        r = services.send(_site(ctx))
    except _sftp_errors() as exc:
        raise UserError(str(exc)) from None
    for name in r.sent:
        console.print(f"[green]sent[/] {name}", highlight=False)
    for name in r.already:
        console.print(f"[green]already on the server[/] {name} (same content)", highlight=False)
    for text in r.answered:
        console.print(f"[green]answered already[/] {escape(text)}: the receiver has it; moved to outbox/sent/",
                      highlight=False)
    for text in r.skipped:
        console.print(f"[yellow]left[/] {escape(text)}", highlight=False)
    for text in r.refused:
        err.print(f"[red]refused[/] {escape(text)} (moved to outbox/rejected/)", highlight=False)
    for text in r.lost:
        err.print(f"[red]lost[/] {escape(text)}", highlight=False)
    if not (r.sent or r.already or r.refused or r.lost or r.answered):
        console.print("Nothing to send.")
    if r.refused or r.lost:
        raise SystemExit(1)


@main.command()
@click.pass_context
def fetch(ctx: click.Context) -> None:
    """Download every file in the receiver's outbound/ (receipts, payment files) into inbox/,
    removing each remotely only once it is safely stored. Unsafe remote names, files over
    sftp.max_fetch_size and files that change while fetched are left on the server."""
    try:
        r = services.fetch(_site(ctx))
    except _sftp_errors() as exc:
        raise UserError(str(exc)) from None
    for f in r.files:
        console.print(f"[green]fetched[/] {escape(f.name)}", highlight=False)
    for text in r.changed:
        console.print(f"[yellow]left for next time[/] {escape(text)}", highlight=False)
    for text in r.refused:
        err.print(f"[red]refused remote name[/] {escape(text)}", highlight=False)
    for text in r.failed:
        err.print(f"[red]not fetched[/] {escape(text)}", highlight=False)
    if not (r.files or r.refused or r.failed or r.changed):
        console.print("Nothing to fetch.")
    if not r.ok:
        raise SystemExit(1)


def _print_step(step) -> None:
    mark = "[green]ok[/]" if step.ok else "[bold red]FAILED[/]"
    console.print(f"{step.name:>7}: {mark} {escape(step.summary)}", highlight=False)


@main.command("run")
@click.option("--no-sftp", is_flag=True, help="Skip fetch and send (export and inbox only).")
@click.pass_context
def run_cmd(ctx: click.Context, no_sftp: bool) -> None:
    """The nightly cycle, for cron: fetch, read receipts and payment files, book payments,
    export tonight's file, send. Exit status 0 only when every step went well; the log goes to
    the configured log file."""
    site = _site(ctx)
    _engine(site)
    result = services.run(site, sftp=not no_sftp, on_step=_print_step)
    console.print(("[green]All went well.[/]" if result.ok else
                   f"[bold red]Some steps failed[/]; details in {site.config.log_file}"), highlight=False)
    if not result.ok:
        raise SystemExit(1)


@main.command()
@click.option("--no-sftp", is_flag=True, help="Skip fetch and send.")
@click.pass_context
def serve(ctx: click.Context, no_sftp: bool) -> None:
    """One long-running process: the nightly cycle at the configured time (default 18:00
    Europe/Oslo, right across summer time) and the inbox watcher. Stops cleanly on SIGTERM."""
    import signal
    import threading

    site = _site(ctx)
    _engine(site)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    due = services.next_run(site)
    console.print(f"Serving {site.config.site}: next run {due:%Y-%m-%d %H:%M %Z}; watching {site.config.inbox}.",
                  highlight=False)
    services.serve(site, stop, sftp=not no_sftp, on_step=_print_step)
    console.print("Stopped.")


if __name__ == "__main__":  # pragma: no cover - `python -m reskontro.cli`
    sys.exit(main(prog_name="reskontro"))
