"""The fleet end to end: three creditors, each with its own SFTP account (a loopback sshd each),
two `reskontro worker` processes on a real PostgreSQL; the first is SIGKILLed mid-export
(RESKONTRO_FAULT, reskontro.testing.faults). Its job goes back to the queue (stalled-job
recovery) and every creditor's file reaches its own SFTP folder exactly once."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from reskontro import services
from reskontro.testing.loopback_sshd import LoopbackSshd
from reskontro.worker import enqueue_due
from clirun import wait_for  # noqa: E402

pytestmark = [pytest.mark.sshd, pytest.mark.slow]

LEDGER = [
    {"record": "customer", "id": "C1", "name": "Kari Nordmann", "type": "private",
     "address1": "Storgata 1", "post_code": "0150", "city": "OSLO", "country": "NO"},
    {"record": "entry", "id": "I1", "customer_id": "C1", "type": "invoice", "document_no": "F1",
     "document_date": "2026-11-01", "due_date": "2026-11-15", "amount": "1234.50", "status": "invoiced"},
]


def worker(url: str, log: Path, fault: str | None = None) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "RESKONTRO_FAULT"}
    if fault:
        env["RESKONTRO_FAULT"] = fault
    with log.open("wb") as out:      # the child keeps its own copy of the descriptor
        return subprocess.Popen([sys.executable, "-m", "reskontro.cli", "worker", "--fleet", url,
                                 "--stalled-after", "3"], env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)


def test_three_creditors_two_workers_one_killed_mid_export_each_file_once(
        pg_url: str, tmp_path: Path, sshd_binary: Path) -> None:
    services.fleet_init(pg_url, tmp_path / "fleet")
    servers = {cid: LoopbackSshd.start(tmp_path / f"sshd-{cid}", sshd=sshd_binary) for cid in ("a", "b", "c")}
    procs: list[subprocess.Popen] = []
    admin = create_engine(pg_url)
    try:
        ledger = tmp_path / "ledger.jsonl"
        ledger.write_text("\n".join(json.dumps(r) for r in LEDGER) + "\n", encoding="utf-8")
        for n, (cid, srv) in enumerate(servers.items()):
            # send time 00:00 in its zone: due whenever the test runs
            services.creditor_add(pg_url, creditor_id=cid, sender_id=f"90{n}", org_no="923609016",
                                  send_time="00:00", sftp_host=srv.host, sftp_port=srv.port, sftp_user=srv.user,
                                  sftp_key_file=str(srv.client_key), sftp_known_hosts=str(srv.known_hosts))
            site = services.creditor_site(pg_url, cid)
            services.import_ledger(site, [ledger])
            site.db.dispose()
        assert enqueue_due(pg_url) == 3

        def jobs() -> dict[str, tuple[str, int]]:
            with admin.connect() as conn:
                return {r[0]: (r[1], r[2]) for r in conn.execute(text(
                    "SELECT args->>'creditor', status::text, attempts FROM procrastinate_jobs "
                    "WHERE task_name = 'nightly'"))}

        killed = worker(pg_url, tmp_path / "worker-killed.log", fault="after-rename")
        procs.append(killed)
        wait_for(lambda: any(s == "doing" for s, _ in jobs().values()), 60, "the first worker to take a job")
        procs.append(worker(pg_url, tmp_path / "worker-2.log"))
        # the first dies in its first export, after the file is renamed into the outbox
        assert wait_for(lambda: killed.poll() is not None, 120, "the first worker to die") and \
            killed.returncode == -signal.SIGKILL, (tmp_path / "worker-killed.log").read_text()[-3000:]
        done = wait_for(lambda: (j := jobs()) and all(s == "succeeded" for s, _ in j.values()) and j, 180,
                        "every creditor's nightly job to succeed: "
                        + (tmp_path / "worker-2.log").read_text(errors="replace")[-3000:]
                        if (tmp_path / "worker-2.log").exists() else "")
        assert set(done) == {"a", "b", "c"}
        crashed, counted = [], {}
        for n, (cid, srv) in enumerate(servers.items()):
            files = sorted(p.name for p in srv.inbound.iterdir())
            assert files and all(f.startswith(f"LT_90{n}_") and f.endswith(".xml") for f in files), (cid, files)
            texts = [(srv.inbound / f).read_text(encoding="utf-8") for f in files]
            # its own sender id only (its own file), the invoice in exactly one file: sent once
            assert all(f"<SenderId>90{n}</SenderId>" in t for t in texts)
            assert sum(t.count('<Entry id="I1"') for t in texts) == 1, (cid, files)
            assert sum(t.count('<Customer id="C1"') for t in texts) == 1, (cid, files)
            if len(files) > 1:
                # the killed export's file, completed by the retried job (its whole file was in the
                # outbox), then that cycle's own daily file, empty: as `run` does after a crash
                assert len(files) == 2 and "<EntryCount>0</EntryCount>" in texts[1], (cid, files)
                crashed.append(cid)
            counted[cid] = len(files)
        # the killed worker's job was taken again (stalled-job recovery): a second attempt, that
        # creditor's only; the others ran once
        assert len(crashed) == 1 and [c for c, (_, n) in done.items() if n > 1] == crashed, (done, crashed)
        for s in services.fleet_status(pg_url):
            assert s.result in ("ok", "needs_person") and s.awaiting_receipt == counted[s.id], s
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        admin.dispose()
        for srv in servers.values():
            srv.stop()
