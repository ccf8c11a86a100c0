"""Output that survives (reskontro/cli_output.py): data is never read as markup, `file:line:`
stays verbatim, narrow terminals never cut an id or an amount, `--plain` on every table, and
progress on stderr only when it is a terminal."""
from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from click.testing import CliRunner

from reskontro.adapters.cremul import render_cremul
from reskontro.cli import main
from reskontro.domain import BankPayment
from test_export import customer, import_records, invoice, make_site, match, payment  # noqa: E402

# Long ids and big amounts: what a narrow terminal would cut first.
CUST = [f"CUSTOMER-[bold]{n:06d}" for n in range(1, 4)]          # looks like markup, too
INV = [f"INVOICE-2026-:smile:-{n:04d}" for n in range(1, 4)]      # looks like an emoji code
AMOUNTS = ["123456789.50", "98765432.10", "5.00"]
NAME = "Aksjeselskapet Med Et Svært Langt Navn Som Må Brytes Over Flere Linjer [red]AS"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("output")
    site = make_site(tmp)
    records = [customer(CUST[0], NAME), customer(CUST[1], "Uten Type", type=""),      # held: no type
               customer(CUST[2], "Ola :thumbs_up: Nordmann")]
    for n, (cid, eid, amount) in enumerate(zip(CUST, INV, AMOUNTS)):
        records.append(invoice(eid, cid, amount))
    records += [payment("PAYMENT-[/]-0001", CUST[0], "-1000.00"), match("MATCH-0001", INV[0], "PAYMENT-[/]-0001")]
    import_records(site, records)
    bank = BankPayment("cremul", "ARCHIVE-REF-[b]-000000001", Decimal("7654321.99"), "NOK", date(2026, 11, 19),
                       date(2026, 11, 20), kid="0000000026", payer_name="Kari [italic]Nordmann")
    data = render_cremul([bank], reference="R1", created=datetime(2026, 11, 20, 6, 0))
    (site / "inbox" / "cremul1.txt").write_bytes(data.encode("latin-1"))
    return site


def run(site: Path, *args: str, columns: int = 80):
    r = CliRunner().invoke(main, ["--site", str(site), *args], env={"COLUMNS": str(columns)})
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        raise r.exception
    return r


# --- data is never markup ----------------------------------------------------------------------
def test_a_rule_file_error_on_line_100_is_printed_as_it_is(site: Path, tmp_path: Path) -> None:
    """`:100:` is an emoji code to rich; `shadow.yaml:100:` must not become `shadow.yaml💯`."""
    path = tmp_path / "shadow.yaml"
    lines = ["default: {decision: wait, reason: Nothing decided.}", "rules:"]
    lines += [f"# comment {n}" for n in range(3, 99)]
    lines += ["  - id: bad", "    when: {colour: red}", "    decision: hold", "    reason: r"]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    for columns in (80, 40):
        r = run(site, "rules", "lint", str(path), columns=columns)
        assert r.exit_code == 1
        assert r.stderr.startswith(f"{path}:100: unknown field 'colour'"), r.stderr
        assert "💯" not in r.stderr and len(r.stderr.splitlines()) == 1     # one line, never wrapped


def test_ids_names_and_reasons_that_look_like_markup_are_printed_literally(site: Path) -> None:
    out = run(site, "explain", INV[0]).stdout
    assert f"{INV[0]}: transfer by rule" in out and "😄" not in out
    check = run(site, "check", "--plain").stdout
    assert f"{CUST[1]}\tUten Type\thold customer-type-missing" in check
    watch = run(site, "watch", "--once")
    assert watch.exit_code == 0, watch.output
    pays = run(site, "payments", "--plain").stdout
    assert "Kari [italic]Nordmann" in pays and "7,654,321.99 NOK" in pays
    r = run(site, "explain", "NOPE[/]:smile:")
    assert r.exit_code == 1 and "no entry with id 'NOPE[/]:smile:' in the ledger" in r.stderr


# --- narrow terminals --------------------------------------------------------------------------
def _whole_ids(text: str, ids: list[str]) -> None:
    lines = text.splitlines()
    for i in ids:
        assert any(i in line for line in lines), f"{i!r} cut or split:\n{text}"
    assert "…" not in text, text


@pytest.mark.parametrize("columns", [80, 40])
def test_narrow_terminals_never_cut_an_id_or_an_amount(site: Path, columns: int) -> None:
    plan = run(site, "plan", "--all", columns=columns).stdout
    _whole_ids(plan, ["customer-type-missing", "123,456,794.50 NOK", "98,765,432.10 NOK", "-1,000.00 NOK"])
    check = run(site, "check", columns=columns)
    assert check.exit_code == 3
    _whole_ids(check.stdout, [CUST[1], "hold customer-type-missing"])
    explain = run(site, "explain", INV[0], columns=columns).stdout
    _whole_ids(explain, [INV[0], "123456789.50"])
    run(site, "watch", "--once")
    pays = run(site, "payments", columns=columns).stdout
    _whole_ids(pays, ["7,654,321.99 NOK", "0000000026"])
    assert all(len(line) <= columns for line in pays.splitlines() if "│" in line)   # a table fits


def test_a_wide_terminal_shows_tables_and_a_narrow_one_rows_as_lines(site: Path) -> None:
    wide = run(site, "check", columns=120).stdout
    assert "┃ customer" in wide
    narrow = run(site, "check", columns=40).stdout
    assert "┃" not in narrow and f"customer: {CUST[1]}" in narrow and "name: Uten Type" in narrow


# --- --plain on every table ----------------------------------------------------------------------
@pytest.mark.parametrize("args, header", [
    (("plan",), "decision\trule\tentries\tamount\treason"),
    (("check",), "customer\tname\tproblem\tentries\twhat to do"),
    (("status",), "seq\tfile\tkind\tstate\tentries\tcreated\tdetail"),
    (("payments",), "id\tsource\tdate\tpayer\tamount\tKID / invoice no\tinvoice\tstatus\tnote"),
    (("rules", "fields"), "field\tkind\tvalues\texample default\tcondition\tmeaning"),
    (("rules", "coverage"), "rule\tline\tdecides\ttonight\twhole ledger\texamples\tlook at"),
    (("explain", INV[0]), "fact\tvalue"),
])
def test_plain_tables_are_a_header_line_and_tab_separated_rows(site: Path, args: tuple[str, ...],
                                                                header: str) -> None:
    r = run(site, *args, "--plain", columns=40)
    assert r.exit_code in (0, 3), r.output
    lines = r.stdout.splitlines()
    assert header in lines, r.stdout
    start = lines.index(header)
    rows = []
    for line in lines[start + 1:]:
        if line.count("\t") != header.count("\t"):
            break
        rows.append(line)
    assert rows or args == ("status",), r.stdout
    assert not re.search("[┃│━─\x1b]", r.stdout), r.stdout          # no boxes, no colour codes


def test_import_plain(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    path = tmp_path / "l.jsonl"
    path.write_text('{"record": "customer", "id": "C1", "name": "A", "type": "private", "address1": "V 1", '
                    '"post_code": "0150", "city": "OSLO"}\n', encoding="utf-8")
    r = run(site, "import", str(path), "--plain")
    assert r.stdout.splitlines() == ["file\tcustomers new/changed\tentries new/changed\tmatches new/changed",
                                     "l.jsonl\t1 / 0\t0 / 0\t0 / 0"]


# --- progress ------------------------------------------------------------------------------------
def test_no_progress_when_stderr_is_not_a_terminal(site: Path) -> None:
    for args in (("plan",), ("check",)):
        r = run(site, *args)
        assert r.stderr == "", r.stderr


def _with_stderr_on_a_terminal(args: list[str], cwd: Path) -> tuple[int, str, str]:
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "reskontro.cli", *args], cwd=cwd, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=slave, env={**os.environ, "COLUMNS": "100"})
    os.close(slave)
    seen = b""
    with proc.stdout:
        out = proc.stdout.read()
    while True:
        ready, _, _ = select.select([master], [], [], 5)
        if not ready:
            break
        try:
            chunk = os.read(master, 65536)
        except OSError:
            break
        if not chunk:
            break
        seen += chunk
    os.close(master)
    return proc.wait(timeout=60), out.decode(), seen.decode(errors="replace")


@pytest.mark.parametrize("args, what", [(["plan"], "Deciding entries"), (["check"], "Checking customers"),
                                        (["export"], "Exporting")])
def test_progress_shows_on_stderr_when_it_is_a_terminal(site: Path, args: list[str], what: str) -> None:
    code, out, err = _with_stderr_on_a_terminal(["--site", str(site), *args], site)
    assert code in (0, 3), (out, err)
    assert what in err, err
    assert what not in out and "\x1b" not in out           # stdout keeps the result only


def test_sample_shows_progress_on_a_terminal(tmp_path: Path) -> None:
    code, out, err = _with_stderr_on_a_terminal(["sample", "--customers", "50", "--out", "s.jsonl"], tmp_path)
    assert code == 0 and "Writing the sample" in err and "Wrote" in out
