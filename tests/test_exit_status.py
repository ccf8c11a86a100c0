"""Exit status means something (README "Exit status", `reskontro --help`): 0 done, 1 a step
failed, 2 usage or configuration, 3 done but a person is needed, 75 try again later. One test
per code and command family; `--json` carries the same status."""
from __future__ import annotations

import json
import os
import socket
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from click.testing import CliRunner

from reskontro.adapters.cremul import render_cremul
from reskontro.cli import main
from reskontro.cli_output import EXIT_STATUSES
from reskontro.domain import BankPayment
from reskontro.exchange.cycle import CycleResult, Step
from reskontro.files.lock import run_lock
from reskontro.testing.loopback_sshd import generate_key
from test_export import customer, import_records, invoice, make_site  # noqa: E402


def run(site: Path | None, *args: str):
    argv = (["--site", str(site)] if site is not None else []) + list(args)
    r = CliRunner().invoke(main, argv)
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        raise r.exception
    return r


def drop_payment(site: Path, ref: str, amount: str, kid: str) -> None:
    p = BankPayment("cremul", ref, Decimal(amount), "NOK", date(2026, 11, 19), date(2026, 11, 20), kid=kid)
    data = render_cremul([p], reference=ref.strip("*"), created=datetime(2026, 11, 20, 6, 0))
    (site / "inbox" / f"CREMUL_{ref.strip('*')}.DAT").write_bytes(data.encode("latin-1"))


@pytest.fixture
def site(tmp_path: Path) -> Path:
    site = make_site(tmp_path)
    import_records(site, [customer("C1"), invoice("I1", "C1", "100.00")])
    return site


def test_the_table_is_in_the_help_and_the_codes_are_the_documented_ones() -> None:
    assert [code for code, _ in EXIT_STATUSES] == [0, 1, 2, 3, 75]
    text = " ".join(CliRunner().invoke(main, ["--help"]).stdout.split())
    assert "Exit status:" in text
    for code, meaning in EXIT_STATUSES:
        assert f"{code} {' '.join(meaning.split())}" in text


# --- 0 -------------------------------------------------------------------------------------------
def test_0_done(site: Path) -> None:
    for args in (("plan",), ("status",), ("export",), ("post",), ("watch", "--once"), ("receipts",)):
        r = run(site, *args)
        assert r.exit_code == 0, (args, r.output)


# --- 1 -------------------------------------------------------------------------------------------
def test_1_a_step_failed(site: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"record": "entry", "id": "X"}\n', encoding="utf-8")
    r = run(site, "import", str(bad))
    assert r.exit_code == 1 and r.stderr.startswith("error: bad.jsonl: ")
    r = run(site, "explain", "NOPE", "--json")
    assert r.exit_code == 1
    assert json.loads(r.stdout) == {"ok": False, "exit_status": 1,
                                    "error": "no entry with id 'NOPE' in the ledger"}


# --- 2 -------------------------------------------------------------------------------------------
def test_2_usage_and_configuration(site: Path, tmp_path: Path) -> None:
    assert run(site, "plan", "--bogus").exit_code == 2                       # click's own
    assert run(site, "watch", "--json").exit_code == 2                       # --json needs --once
    assert run(tmp_path / "nowhere", "plan").exit_code == 2                  # no reskontro.toml
    cfg = site / "reskontro.toml"
    cfg.write_text(cfg.read_text(encoding="utf-8").replace('mode = "full_ledger"', 'mode = "sometimes"'),
                   encoding="utf-8")
    r = run(site, "plan", "--json")
    assert r.exit_code == 2 and "creditor.mode" in r.stderr
    doc = json.loads(r.stdout)
    assert (doc["ok"], doc["exit_status"]) == (False, 2) and "creditor.mode" in doc["error"]


def test_2_a_rule_file_that_does_not_load(site: Path) -> None:
    (site / "rules" / "transfer.yaml").write_text("rules: [\n", encoding="utf-8")
    r = run(site, "plan")
    assert r.exit_code == 2 and "rules lint" in r.stderr
    assert run(site, "rules", "lint").exit_code == 1          # lint itself found problems: its step failed


# --- 3 -------------------------------------------------------------------------------------------
def test_3_unmatched_payments_need_a_person(site: Path) -> None:
    drop_payment(site, "*9001", "100.00", "0000000026")                      # a KID nobody has
    assert run(site, "watch", "--once").exit_code == 0
    r = run(site, "post", "--json")
    assert r.exit_code == 3, r.output
    doc = json.loads(r.stdout)
    assert (doc["ok"], doc["exit_status"], doc["booked"]) == (False, 3, 0) and len(doc["unmatched"]) == 1


def test_3_a_failed_inbox_file_needs_a_person(site: Path) -> None:
    bad = site / "inbox" / "garbage.DAT"
    bad.write_bytes(b"not a bank file\n")
    os.utime(bad, (1_000_000_000, 1_000_000_000))          # unchanged for long: taken, and refused
    r = run(site, "watch", "--once", "--json")
    assert r.exit_code == 3, r.output
    doc = json.loads(r.stdout)
    assert doc["exit_status"] == 3 and [f["kind"] for f in doc["files"]] == ["failed"]


def test_3_holds_need_a_person(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    import_records(site, [customer("C1", type=""), invoice("I1", "C1", "100.00")])    # no type: held
    assert run(site, "check").exit_code == 3
    r = run(site, "export")
    assert r.exit_code == 3 and "1 entry held tonight" in r.stdout
    assert run(site, "export").exit_code == 0               # held last night: not news tonight


def test_3_only_for_holds_new_tonight_when_a_rule_reads_days_past_due(tmp_path: Path, monkeypatch) -> None:
    """A rule reading days_past_due makes every night's export decide the whole ledger (the
    facts change with the date); an entry held since yesterday is still not news tonight."""
    from datetime import timedelta, timezone

    from reskontro import services
    site = make_site(tmp_path)
    rules = site / "rules" / "transfer.yaml"
    text = rules.read_text(encoding="utf-8")
    rules.write_text(text.replace("rules:\n", "rules:\n  - id: very-late\n    when: {entry_type: invoice, "
                                  "days_past_due: {ge: 100000}}\n    decision: wait\n    reason: Very late.\n\n", 1),
                     encoding="utf-8")
    import_records(site, [customer("C1", type=""), invoice("I1", "C1", "100.00"),
                          customer("C2"), invoice("I2", "C2", "200.00")])

    def night(days: int, *options: str):
        class Later(datetime):
            @classmethod
            def now(cls, tz=None):
                return datetime.now(tz) + timedelta(days=days)
        monkeypatch.setattr(services, "datetime", Later)
        return run(site, "export", *options)

    first = json.loads(night(0, "--json").stdout)
    assert first["exit_status"] == 3 and first["held"] == 1 and first["held_new"] == 1
    second = night(1, "--json")                                # tomorrow: decided again, held again
    doc = json.loads(second.stdout)
    assert doc["held"] == 1 and doc["held_new"] == 0 and second.exit_code == 0, second.output
    import_records(site, [customer("C3", type=""), invoice("I3", "C3", "300.00")])
    third = night(2, "--json")
    doc = json.loads(third.stdout)
    assert third.exit_code == 3 and doc["held"] == 2 and doc["held_new"] == 1
    words = night(3)                                           # and in words, the day after
    assert words.exit_code == 0 and "2 entries held tonight (0 new)" in " ".join(words.stdout.split())


def test_3_run_says_which_steps_need_a_person(site: Path) -> None:
    drop_payment(site, "*9002", "50.00", "0000000026")
    r = run(site, "run", "--no-sftp", "--json")
    assert r.exit_code == 3, r.output
    steps = {s["name"]: s for s in json.loads(r.stdout)["steps"]}
    assert steps["post"]["attention"] and steps["post"]["ok"] and not steps["export"]["attention"]
    assert "received tonight is not booked" in " ".join(json.loads(r.stdout)["needs_person"][0].split())
    drop_payment(site, "*9003", "60.00", "0000000034")
    r = run(site, "run", "--no-sftp")
    assert r.exit_code == 3       # a new payment that matches nothing: a person's
    assert "   post: CHECK " in r.stdout and "Done, but a person is needed (1)" in " ".join(r.stdout.split())
    r = run(site, "run", "--no-sftp")
    assert r.exit_code == 0       # told once: the unmatched payments stay listed by `payments --unposted`


def test_cycle_result_exit_status() -> None:
    ok, later, failed, check = (Step("a", True, ""), Step("fetch", False, "", later=True),
                                Step("b", False, ""), Step("post", True, "", attention=["1 payment not booked"]))
    assert CycleResult([ok]).exit_status == 0
    assert CycleResult([ok, check]).exit_status == 3
    assert CycleResult([ok, check, later]).exit_status == 75
    assert CycleResult([later, failed, check]).exit_status == 1


# --- 75 ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("args", [("post",), ("export",), ("run", "--no-sftp"), ("correct-payment", "P", "--to", "I")])
def test_75_another_run_holds_the_lock(site: Path, args: tuple[str, ...]) -> None:
    with run_lock(site / "var" / "reskontro.lock"):
        r = run(site, *args)
    assert r.exit_code == 75, r.output
    assert "another reskontro run holds" in r.stderr


def _unreachable(site: Path, tmp_path: Path) -> None:
    """[sftp] at a port nobody listens on, with a real key and a known_hosts file, no retries."""
    key = tmp_path / "id_ed25519"
    generate_key(key)
    (tmp_path / "known_hosts").write_text("", encoding="utf-8")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = site / "reskontro.toml"
    text = cfg.read_text(encoding="utf-8").split("[sftp]")[0]
    cfg.write_text(text + f'[sftp]\nhost = "127.0.0.1"\nport = {port}\nuser = "x"\nkey_file = "{key}"\n'
                   f'known_hosts = "{tmp_path / "known_hosts"}"\ntimeout = 2\nretries = 0\n', encoding="utf-8")


def test_75_the_server_is_unreachable(site: Path, tmp_path: Path) -> None:
    _unreachable(site, tmp_path)
    r = run(site, "fetch", "--json")
    assert r.exit_code == 75, r.output
    doc = json.loads(r.stdout)
    assert (doc["ok"], doc["exit_status"]) == (False, 75) and "cannot connect" in doc["error"]
    assert run(site, "send").exit_code == 0                 # nothing in the outbox: no connection needed
    assert run(site, "export").exit_code == 0
    r = run(site, "send", "--json")
    assert r.exit_code == 75 and json.loads(r.stdout)["exit_status"] == 75
    r = run(site, "run", "--json")                          # every other step went well
    assert r.exit_code == 75, r.output
    failed = [s["name"] for s in json.loads(r.stdout)["steps"] if not s["ok"]]
    assert failed == ["fetch", "send"]


def test_a_missing_known_hosts_file_says_how_to_pin_the_key(site: Path, tmp_path: Path) -> None:
    _unreachable(site, tmp_path)
    (tmp_path / "known_hosts").unlink()
    r = run(site, "fetch")
    assert r.exit_code == 1
    err = " ".join(r.stderr.split())
    assert f"known_hosts file {tmp_path / 'known_hosts'} does not exist" in err
    port = (site / "reskontro.toml").read_text(encoding="utf-8").split("port = ")[1].split()[0]
    assert f"ssh-keyscan -p {port} 127.0.0.1 >> {tmp_path / 'known_hosts'}" in r.stderr   # one line, to copy
