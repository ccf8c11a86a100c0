"""`make demo`: the whole loop on the embedded default, in the repository's own site.

SQLite store in var/, a real OpenSSH server on 127.0.0.1 (installed where missing) standing in
for Lowell's SFTP server, and a stand-in receiver (reskontro.testing.receiver_model) that reads what we
upload, writes its receipt and a CREMUL payment file. Two evenings:
1. import a sample ledger, plan, run the nightly cycle (export + send); the receiver accepts
   the file and an invoice gets paid at the bank;
2. the next cycle fetches the receipt and the CREMUL file, books the payment (the invoice
   closes), and sends the payment and its match; the receiver's open balance for the invoice
   is 0.00.
Re-runnable: it starts from an empty store, inbox and outbox each time.
"""
from __future__ import annotations

import dataclasses
import shutil
import shlex
import sys
from datetime import date
from decimal import Decimal
from pathlib import Path

from rich.console import Console
from rich.panel import Panel
from rich.table import Table
from sqlalchemy import select

from reskontro.adapters.cremul import render_cremul
from reskontro.adapters.sftp import SftpClient

from reskontro.transfer import journal
from reskontro.ledger import schema as s
from reskontro.config import SftpConfig, load_config
from reskontro.exchange.cycle import run_cycle
from reskontro.domain import BankPayment, from_ore
from reskontro.ledger.importer import import_files
from reskontro.testing.loopback_sshd import LoopbackSshd
from reskontro.testing.receiver_model import ReceiverModel
from reskontro.rules.reports import make_plan
from reskontro.ledger.sample import write_sample_file
from reskontro.services import installed_command
from reskontro.site import Site

console = Console()
ROOT = Path(__file__).resolve().parent.parent


def _fresh(site_dir: Path) -> None:
    var = site_dir / "var"
    for name in ("reskontro.db", "reskontro.db-wal", "reskontro.db-shm", "sftp"):
        p = var / name
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()
    for folder in (site_dir / "inbox", site_dir / "outbox"):
        folder.mkdir(exist_ok=True)
        for p in folder.iterdir():
            if p.name == ".gitkeep":
                continue
            shutil.rmtree(p) if p.is_dir() else p.unlink()


def _steps(result) -> None:
    for st in result.steps:
        mark = "[green]ok[/]" if st.ok else "[bold red]FAILED[/]"
        console.print(f"  {st.name:>7}: {mark} {st.summary}", highlight=False)


def main(site_dir: Path = ROOT) -> int:
    console.rule("[bold]reskontro demo[/]: the nightly transfer to Lowell, end to end")
    _fresh(site_dir)
    config = load_config(site_dir)
    (site_dir / "var").mkdir(exist_ok=True)

    console.print("Starting an OpenSSH server on 127.0.0.1 as Lowell's SFTP server "
                  "(host key pinned in var/sftp/known_hosts)…")
    sshd = LoopbackSshd.start(site_dir / "var" / "sftp")
    try:
        st = sshd.settings()
        config = dataclasses.replace(config, sftp=SftpConfig(
            host=st.host, port=st.port, user=st.user, key_file=st.key_file, known_hosts=st.known_hosts,
            remote_inbound=st.remote_inbound, remote_outbound=st.remote_outbound))
        site = Site(config)
        engine = site.rules
        clients = lambda: SftpClient(sshd.settings())  # noqa: E731

        # --- evening 1 -------------------------------------------------------------------------
        console.rule("Evening 1")
        ledger = site_dir / "var" / "sample-ledger.jsonl"
        n = write_sample_file(ledger, 200, seed=2026)
        import_files(site.db, [ledger])
        console.print(f"Imported a sample ledger: {n} records (reskontro sample --customers 200 --seed 2026).")
        with site.db.connect() as conn:
            plan = make_plan(conn, engine, config.mode)
        t = Table("decision", "entries", title="Tonight's plan (reskontro plan)")
        for k, v in sorted(plan.totals().items()):
            t.add_row(k, str(v))
        console.print(t)
        result = run_cycle(config, site.db, engine, client_factory=clients)
        _steps(result)

        receiver = ReceiverModel(config.xsd)
        receipts = receiver.serve_folder(sshd.inbound, sshd.outbound)
        for r in receipts:
            console.print(f"Stand-in receiver: {r.file_id} [bold]{r.status}[/]", highlight=False)
        balances = receiver.open_balances()
        # The bank pays one open invoice in full, through Lowell's payment agreement (CREMUL).
        with site.db.connect() as conn:
            inv = conn.execute(select(s.entries).where(s.entries.c.type == "invoice", s.entries.c.match_id.is_(None),
                                                       s.entries.c.kid.is_not(None))
                               .order_by(s.entries.c.id)).all()
        inv = next(r._mapping for r in inv if balances.get(r._mapping["id"], Decimal(0)) > 0)
        amount = from_ore(inv["amount_ore"])
        pay_day = date.today()
        cremul = render_cremul([BankPayment(format="cremul", archive_ref="*90000001", amount=amount, currency="NOK",
                                            payment_date=pay_day, booking_date=pay_day, kid=inv["kid"],
                                            payer_name="Kari Nordmann", payer_account="12345678903")],
                               reference="DEMO0001", wrap=80)
        (sshd.outbound / "CREMUL_DEMO0001.DAT").write_text(cremul, encoding="latin-1")
        console.print(f"The bank reports a payment of {amount} NOK with KID {inv['kid']} for invoice "
                      f"{inv['id']} (CREMUL in the server's outbound/); Lowell has it open for "
                      f"{balances[inv['id']]} NOK.", highlight=False)

        # --- evening 2 -------------------------------------------------------------------------
        console.rule("Evening 2")
        result2 = run_cycle(config, site.db, engine, client_factory=clients)
        _steps(result2)
        receipts = receiver.serve_folder(sshd.inbound, sshd.outbound)
        for r in receipts:
            console.print(f"Stand-in receiver: {r.file_id} [bold]{r.status}[/]", highlight=False)
        result3 = run_cycle(config, site.db, engine, client_factory=clients)   # reads that receipt
        after = receiver.open_balances().get(inv["id"])
        with site.db.connect() as conn:
            bp = conn.execute(select(s.bank_payments)).first()._mapping
            files = journal.files(conn)
        console.print(f"Payment {bp['id']} ({bp['source']}): {bp['status']}, invoice {bp['invoice_id']}: "
                      f"{bp['note']}. Lowell's open balance for {inv['id']} is now {after} NOK.", highlight=False)

        t = Table("seq", "file", "kind", "state", "entries", title="Transfer files (reskontro status)")
        for f in files:
            t.add_row(str(f.sequence), f.file_id, f.kind, f.state, str(f.entry_count))
        console.print(t)
        last = sorted((config.outbox / "sent").glob("*.xml"))
        first = last[0] if last else None
        ok = (result.ok and result2.ok and result3.ok and after == Decimal("0.00")
              and all(f.state == "accepted" for f in files[:-1]))
        summary = (f"Tonight's file: {first} ({files[0].entry_count} entries) in outbox/sent/, "
                   f"uploaded and accepted; {len(files)} files in all.\n" if first else "")
        summary += ("Everything went as it should: the ledger reached Lowell, the payment came back "
                    "through the bank, was booked, and closed the invoice at both ends."
                    if ok else "Something did not go as it should: see above.")
        console.print(Panel(summary, title="demo result", style="green" if ok else "red"))
        web = f"{installed_command()} --site {shlex.quote(str(site_dir))} web"
        console.print(f"See it as support does, in a browser: [bold]{web}[/] and open "
                      f"http://127.0.0.1:{config.web.port}/ (Ctrl-C stops it)", highlight=False)
        return 0 if ok else 1
    finally:
        sshd.stop()


if __name__ == "__main__":
    sys.exit(main())
