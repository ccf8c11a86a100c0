"""The `reskontro` command line (click + rich)."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from .config import ConfigError
from .domain import InputError
from .rulefile import RuleFileError
from .site import Site, init_site

console = Console()
err = Console(stderr=True)


class UserError(click.ClickException):
    """An error the user can fix; printed without a traceback."""

    def show(self, file=None):
        err.print(f"[bold red]error:[/] {self.message}", markup=True, highlight=False)


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
@click.option("--all", "whole", is_flag=True, help="Decide the whole ledger, not only what is not yet delivered.")
@click.pass_context
def plan(ctx: click.Context, as_json: bool, whole: bool) -> None:
    """What tonight's run would send, exclude and hold: counts, amounts and reasons."""
    from .reports import make_plan

    site = _site(ctx)
    engine = _engine(site)
    with site.db.connect() as conn:
        with console.status("Deciding entries…") as status:
            p = make_plan(conn, engine, site.config.mode, only_pending=not whole,
                          progress=lambda n: status.update(f"Deciding entries… {n:,}"))
    if as_json:
        click.echo(json.dumps(p.as_json(), indent=2, ensure_ascii=False))
        return
    t = Table(title=f"Tonight's plan ({p.entries:,} entries{'' if whole else ' not yet delivered'})")
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
    console.print(f"  {o.reason}", highlight=False)
    for rid, text in o.warnings:
        console.print(f"  [yellow]warning[/] {rid}: {text}", highlight=False)
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


def run() -> None:  # pragma: no cover
    main(prog_name="reskontro")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
