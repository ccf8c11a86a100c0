"""The `reskontro` command line (click + rich)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .config import ConfigError
from .domain import InputError
from .rulefile import RuleFileError
from .site import Site, init_site

console = Console()
err = Console(stderr=True, soft_wrap=True)   # `path:line: message` stays one line (no wrap at 80 columns)


class UserError(click.ClickException):
    """An error the user can fix; printed without a traceback."""

    def show(self, file=None):
        # the message carries outside data (ids, file names): never read it as markup
        err.print(f"[bold red]error:[/] {escape(self.message)}", markup=True, highlight=False)


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


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
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
    console.print(f"Created site [bold]{target}[/] ({len(made)} files). Next: edit "
                  f"{target / 'reskontro.toml'}, then `reskontro --site {target} import FILE`.")


@main.command("import")
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.pass_context
def import_(ctx: click.Context, files: tuple[Path, ...]) -> None:
    """Load customers, entries and matches from ERP exports (CSV or JSON Lines).

    Idempotent (the same file twice changes nothing) and all-or-nothing per file: a bad row is
    reported with file, line and field, and nothing of that file is stored."""
    from .importer import import_files

    site = _site(ctx)
    try:
        results = import_files(site.db, list(files))
    except InputError as exc:
        raise UserError(str(exc)) from None
    t = Table("file", "customers new/changed", "entries new/changed", "matches new/changed", title="Imported")
    for r in results:
        t.add_row(r.path.name, "%d / %d" % r.customers, "%d / %d" % r.entries, "%d / %d" % r.matches)
    console.print(t)


@main.command()
@click.option("--customers", type=click.IntRange(1), required=True, help="How many customers.")
@click.option("--seed", type=int, default=1, show_default=True, help="Same seed, same ledger.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="The JSON Lines file to write.")
def sample(customers: int, seed: int, out: Path) -> None:
    """Write a realistic sample ledger in the import format (for the demo, tests, benchmarks)."""
    from .sample import write_sample_file

    n = write_sample_file(out, customers, seed)
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
    from .lint import lint_file

    paths = list(files) or [_site(ctx).config.rule_file]
    bad = 0
    for path in paths:
        _, problems = lint_file(path)
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
    from .lint import examples_path, lint_file, run_examples

    path = file or _site(ctx).config.rule_file
    rf, problems = lint_file(path)
    if rf is None:
        for p in problems:
            err.print(str(p), highlight=False, markup=False)
        raise SystemExit(1)
    ex = examples_path(path)
    if not ex.is_file():
        raise UserError(f"{ex}: no examples file beside {path.name}")
    results = run_examples(rf, ex)
    failed = [r for r in results if not r.ok]
    for r in failed:
        err.print(f"{ex}:{r.line}: FAIL {r.name}: {r.message}", highlight=False, markup=False)
    console.print(f"{len(results) - len(failed)} passed, {len(failed)} failed")
    if failed:
        raise SystemExit(1)


@rules.command()
def fields() -> None:
    """The fields a rule can test, with their values."""
    from .facts import DEFAULT_FACT, FIELDS

    t = Table("field", "kind", "values", "example default", "meaning")
    for f in FIELDS.values():
        default = DEFAULT_FACT[f.name]
        if f.scale != 1:
            default = default / f.scale
        t.add_row(f.name, f.kind, ", ".join(f.values) if f.values else ("true, false" if f.kind == "bool" else "number"),
                  str(default).lower() if isinstance(default, bool) else str(default), f.doc)
    console.print(t)


# --- what the rules make of the ledger -------------------------------------------------------
@main.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--all", "whole", is_flag=True, help="Every entry, also those delivered or in flight.")
@click.pass_context
def plan(ctx: click.Context, as_json: bool, whole: bool) -> None:
    """What tonight's run would send, exclude and hold: counts, amounts and reasons, of every
    entry not yet delivered or in flight."""
    from .reports import make_plan

    site = _site(ctx)
    engine = _engine(site)
    with site.db.connect() as conn:
        with console.status("Deciding entries…") as status:
            p = make_plan(conn, engine, site.config.mode, unsent=not whole,
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
@click.pass_context
def explain(ctx: click.Context, entry_id: str, as_json: bool) -> None:
    """Why ENTRY_ID gets its decision: the facts, the deciding rule, every other rule that matched."""
    from .facts import FIELDS
    from .reports import explain_entry

    site = _site(ctx)
    engine = _engine(site)
    with site.db.connect() as conn:
        ex = explain_entry(conn, engine, site.config.mode, entry_id)
    if ex is None:
        raise UserError(f"no entry with id {entry_id!r} in the ledger")
    o = ex.outcome
    if as_json:
        click.echo(json.dumps({"entry": entry_id, "decision": o.decision, "rule": o.rule_id, "reason": o.reason,
                               "warnings": [{"rule": r, "text": t} for r, t in o.warnings],
                               "matched": [r.id for r in ex.matched], "facts": ex.fact}, indent=2, ensure_ascii=False))
        return
    console.print(f"[bold]{entry_id}[/]: [bold]{o.decision}[/] by rule [bold]{o.rule_id}[/]")
    console.print(f"  {escape(o.reason)}", highlight=False)
    for rid, text in o.warnings:
        console.print(f"  [yellow]warning[/] {rid}: {escape(text)}", highlight=False)
    others = [r for r in ex.matched if r.id != o.rule_id and r.warning is None]
    if others:
        console.print("Other rules that matched (a rule above decided first):")
        for r in others:
            console.print(f"  line {r.line}: {r.id} -> {r.decision}", highlight=False)
    t = Table("fact", "value", title="Facts the rules saw")
    for k, v in ex.fact.items():
        if k in FIELDS and FIELDS[k].scale != 1:
            v = f"{v / FIELDS[k].scale:.2f}"
        t.add_row(k, str(v).lower() if isinstance(v, bool) else str(v))
    console.print(t)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def check(ctx: click.Context, as_json: bool) -> None:
    """The data-quality report per customer: what holds or warns their entries, and what to fix."""
    from .reports import quality_report

    site = _site(ctx)
    engine = _engine(site)
    with site.db.connect() as conn:
        reports = quality_report(conn, engine, site.config.mode)
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
def _lock(site: Site):
    from .lock import run_lock
    return run_lock(site.config.site / "var" / "reskontro.lock")


def _export(site: Site, backlog: bool):
    from jinja2 import TemplateError

    from .export import export
    from .lock import LockedError

    engine = _engine(site)
    try:
        with _lock(site), console.status("Exporting…") as status:
            return export(site.config, site.db, engine, backlog=backlog,
                          progress=lambda what, n: status.update(f"Exporting… {what} {n:,} entries"))
    except LockedError as exc:
        raise UserError(str(exc)) from None
    except TemplateError as exc:   # a refused template (sandbox.py), a syntax error, ...: fix the template
        raise UserError(f"the transfer file template failed; the file was not finished and nothing goes: {exc}") from None


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
    make their content delivered; a rejected file's content goes again in the next file."""
    from .inbox import process_inbox

    site = _site(ctx)
    results = process_inbox(site.db, site.config.inbox, only_receipts=True)
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
    from . import journal
    from .reports import make_plan

    site = _site(ctx)
    with site.db.connect() as conn:
        files = journal.files(conn)
        counts = journal.counts(conn)
        plan = make_plan(conn, _engine(site), site.config.mode)
    totals = plan.totals()
    summary = {"delivered": counts.get("delivered", 0), "in_flight": counts.get("in_flight", 0),
               "pending": counts.get("pending", 0), "held": totals.get("hold", 0),
               "waiting": totals.get("wait", 0), "to_send": totals.get("transfer", 0)}
    if as_json:
        click.echo(json.dumps({"files": [{"file_id": f.file_id, "sequence": f.sequence, "kind": f.kind,
                                          "state": f.state, "entries": f.entry_count,
                                          "created_at": f.created_at.isoformat(), "detail": f.detail}
                                         for f in files], "items": summary}, indent=2, ensure_ascii=False))
        return
    t = Table("seq", "file", "kind", "state", "entries", "created", "detail", title="Transfer files")
    colour = {"accepted": "green", "rejected": "red", "invalid": "red", "abandoned": "yellow"}
    for f in files[-limit:]:
        c = colour.get(f.state, "cyan")
        t.add_row(str(f.sequence), f.file_id, f.kind, f"[{c}]{f.state}[/]", f"{f.entry_count:,}",
                  f.created_at.strftime("%Y-%m-%d %H:%M"), (f.detail or "")[:60])
    console.print(t)
    console.print("Items: " + ", ".join(f"{k.replace('_', ' ')} {v:,}" for k, v in summary.items()))


# --- incoming payments ------------------------------------------------------------------------
def _report_processed(r) -> None:
    style = {"failed": "red", "duplicate": "yellow"}.get(r.kind, "green")
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

    from .watcher import watch as run_watch

    site = _site(ctx)
    stop = threading.Event()
    if not once:
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        console.print(f"Watching {site.config.inbox} (Ctrl-C to stop)…")
    try:
        n = run_watch(site.db, site.config.inbox, once=once, rescan=rescan, stop=stop, report=_report_processed)
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
    from sqlalchemy import select

    from . import schema as s
    from .domain import from_ore

    site = _site(ctx)
    q = select(s.bank_payments).order_by(s.bank_payments.c.booking_date, s.bank_payments.c.id)
    if unposted:
        q = q.where(s.bank_payments.c.status.in_(("unposted", "unmatched")))
    with site.db.connect() as conn:
        rows = [r._mapping for r in conn.execute(q)]
    if as_json:
        click.echo(json.dumps([{"id": r["id"], "source": r["source"], "format": r["format"],
                                "date": (r["booking_date"] or r["payment_date"]).isoformat() if (r["booking_date"] or r["payment_date"]) else None,
                                "payer": r["payer_name"], "amount": f"{from_ore(r['amount_ore'])}", "currency": r["currency"],
                                "kid": r["kid"], "invoice_no": r["invoice_no"], "invoice": r["invoice_id"],
                                "status": r["status"], "note": r["note"], "archive_ref": r["archive_ref"]}
                               for r in rows], indent=2, ensure_ascii=False))
        return
    t = Table("id", "source", "date", "payer", "amount", "KID / invoice no", "invoice", "status", "note",
              title=f"Bank payments ({len(rows)})")
    for r in rows:
        day = r["booking_date"] or r["payment_date"]
        colour = {"matched": "green", "unmatched": "red"}.get(r["status"], "cyan")
        t.add_row(r["id"], r["source"], day.isoformat() if day else "", r["payer_name"] or "",
                  f"{from_ore(r['amount_ore']):,.2f} {r['currency']}", r["kid"] or r["invoice_no"] or "",
                  r["invoice_id"] or "", f"[{colour}]{r['status']}[/]", r["note"] or "")
    console.print(t)


@main.command()
@click.pass_context
def post(ctx: click.Context) -> None:
    """Book the listed bank payments: matched by KID (else invoice number) to an open invoice,
    closing it when paid in full; what cannot be matched safely is listed for a person."""
    from .payments import post_payments

    site = _site(ctx)
    r = post_payments(site.db)
    console.print(f"Booked {r.matched} payments; {r.closed} invoices closed; {len(r.unmatched)} unmatched.")
    for pid, why in r.unmatched:
        console.print(f"  [red]{pid}[/]: {escape(why)}", highlight=False)


@main.command("correct-payment")
@click.argument("payment")
@click.option("--to", "to_invoice", required=True, help="The invoice the payment really belongs to.")
@click.pass_context
def correct_payment_cmd(ctx: click.Context, payment: str, to_invoice: str) -> None:
    """Correct a payment booked on the wrong invoice, the service's way: a payout linked to the
    wrong invoice and the payment, and a new payment linked to the right invoice. (Unmatching
    or reversing a payment Lowell has is never sent: the rules hold it.)"""
    from .payments import correct_payment

    site = _site(ctx)
    try:
        payout, again = correct_payment(site.db, payment, to_invoice)
    except InputError as exc:
        raise UserError(str(exc)) from None
    console.print(f"Registered payout {payout} (linked to the wrong invoice and {payment}) and payment "
                  f"{again} on {to_invoice}; both go in the next file.")


# --- exchange and the nightly cycle -----------------------------------------------------------
def _sftp_errors():
    from reskontro.adapters.sftp import SftpError

    from .lock import LockedError
    return (SftpError, LockedError, ConfigError, OSError)


@main.command()
@click.pass_context
def send(ctx: click.Context) -> None:
    """Upload every complete file in outbox/ to the receiver's inbound/ (as .part, size checked,
    renamed; a remote name is never overwritten). Sent files move to outbox/sent/. Files dropped
    into the outbox by hand go too, after the same check; .part and hidden files are left alone."""
    from .exchange import send as do_send

    site = _site(ctx)
    try:
        with _lock(site):
            r = do_send(site.config, site.db)
    except _sftp_errors() as exc:
        raise UserError(str(exc)) from None
    for name in r.sent:
        console.print(f"[green]sent[/] {name}", highlight=False)
    for name in r.already:
        console.print(f"[green]already on the server[/] {name} (same content)", highlight=False)
    for text in r.skipped:
        console.print(f"[yellow]left[/] {escape(text)}", highlight=False)
    for text in r.refused:
        err.print(f"[red]refused[/] {escape(text)} (moved to outbox/rejected/)", highlight=False)
    if not (r.sent or r.already or r.refused):
        console.print("Nothing to send.")
    if r.refused:
        raise SystemExit(1)


@main.command()
@click.pass_context
def fetch(ctx: click.Context) -> None:
    """Download every file in the receiver's outbound/ (receipts, payment files) into inbox/,
    removing each remotely only once it is safely stored. Unsafe remote names are refused."""
    from .exchange import fetch as do_fetch

    site = _site(ctx)
    try:
        with _lock(site):
            files, refused = do_fetch(site.config)
    except _sftp_errors() as exc:
        raise UserError(str(exc)) from None
    for f in files:
        console.print(f"[green]fetched[/] {f.name}", highlight=False)
    for text in refused:
        err.print(f"[red]refused remote name[/] {escape(text)}", highlight=False)
    if not files and not refused:
        console.print("Nothing to fetch.")
    if refused:
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
    from .cycle import run_cycle, setup_logging
    from .lock import LockedError

    site = _site(ctx)
    engine = _engine(site)
    setup_logging(site.config)
    try:
        result = run_cycle(site.config, site.db, engine, sftp=not no_sftp, on_step=_print_step)
    except LockedError as exc:
        raise UserError(str(exc)) from None
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

    from .cycle import serve as do_serve, setup_logging
    from .exchange import next_run
    from datetime import datetime

    site = _site(ctx)
    engine = _engine(site)
    setup_logging(site.config)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    due = next_run(datetime.now(site.config.tz), site.config.send_time, site.config.tz)
    console.print(f"Serving {site.config.site}: next run {due:%Y-%m-%d %H:%M %Z}; watching {site.config.inbox}.",
                  highlight=False)
    do_serve(site.config, site.db, engine, stop, sftp=not no_sftp, on_step=_print_step)
    console.print("Stopped.")


if __name__ == "__main__":  # pragma: no cover - `python -m reskontro.cli`
    sys.exit(main(prog_name="reskontro"))
