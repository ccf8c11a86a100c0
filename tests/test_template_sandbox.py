"""Templates can read only their own folder, and build and write only so much.

Whoever can write templates/ can make a bad transfer file (the pre-send check refuses it), but
must not be able to read other files into it (a symbolic link plus {% include %} put
/etc/passwd into a file that passed the check) nor make the export use unbounded memory
(`{{ 'a' * 10**10 }}` took 20 GB). Each refusal names the template, its line and what is wrong.
"""
from __future__ import annotations

import io
import os
import shutil
import tracemalloc
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from jinja2 import TemplateSyntaxError

from reskontro.domain import Address, Customer, Entry, Match
from reskontro.transfer.sandbox import MAX_VALUE, TemplateRefused
from reskontro.transfer.render import TEMPLATE_NAME, FileHeader, make_environment, render_transfer

ROOT = Path(__file__).resolve().parents[1]
OSLO = ZoneInfo("Europe/Oslo")
CUT_OFF = datetime(2026, 11, 28, 18, 0, tzinfo=OSLO)
HEADER = FileHeader("123456", "923609016", 1, "daily", CUT_OFF + timedelta(minutes=5), CUT_OFF)
SECRET = "root:x:0:0:the secret line"


def parts() -> dict:
    c = Customer("C1", "Ola Nordmann", "private", Address(("Storgata 1",), "0155", "Oslo", "NO"))
    i = Entry("I1", "C1", "invoice", "F-1", date(2026, 11, 20), Decimal("100.00"), "NOK",
              due_date=date(2026, 12, 15), status="invoiced")
    p = Entry("P1", "C1", "payment", "B-1", date(2026, 11, 25), Decimal("-100.00"), "NOK")
    return {"customers": [c], "entries": [i, p], "matches": [Match("M1", ("I1", "P1"))]}


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """A templates folder (a copy of the shipped one) and a secret file outside it."""
    templates = tmp_path / "templates"
    shutil.copytree(ROOT / "templates", templates)
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "passwd").write_text(SECRET + "\n")
    return templates


def render(templates: Path) -> bytes:
    out = io.BytesIO()
    render_transfer(out, HEADER, env=make_environment(templates), **parts())
    return out.getvalue()


def main_with(templates: Path, line: str) -> int:
    """Put `line` into the shipped template right after the header; return its line number."""
    path = templates / TEMPLATE_NAME
    lines = path.read_text("utf-8").splitlines(keepends=True)
    at = next(i for i, x in enumerate(lines) if "</Header>" in x) + 1
    lines.insert(at, line + "\n")
    path.write_text("".join(lines), "utf-8")
    return at + 1


def refused(templates: Path, *needles: str, line: int | None = None) -> str:
    with pytest.raises(TemplateRefused) as info:
        render(templates)
    message = str(info.value)
    if line is not None:
        assert message.startswith(f"{templates / TEMPLATE_NAME}:{line}: "), message
    for needle in needles:
        assert needle in message, message
    assert SECRET not in message
    return message


def test_the_shipped_template_renders_as_before(site: Path) -> None:
    text = render(site).decode()
    assert text.count("<Entry ") == 2 and "<EntryRef>P1</EntryRef>" in text


# --- reading files ------------------------------------------------------------------------------
def test_a_symbolic_link_to_a_file_outside_is_refused(site: Path) -> None:
    (site / "secret.j2").symlink_to(site.parent / "outside" / "passwd")
    line = main_with(site, "<!-- {% include 'secret.j2' %} -->")
    refused(site, f"template 'secret.j2': {site / 'secret.j2'} is a symbolic link (to "
            f"'{site.parent / 'outside' / 'passwd'}'); a template file must be a real one", line=line)


def test_a_symbolic_link_inside_the_folder_is_refused_too(site: Path) -> None:
    (site / "part.j2").write_text("harmless")
    (site / "alias.j2").symlink_to("part.j2")
    main_with(site, "{% include 'alias.j2' %}")
    refused(site, "alias.j2 is a symbolic link (to 'part.j2')")


def test_the_main_template_as_a_symbolic_link_is_refused(site: Path) -> None:
    real = site.parent / "outside" / "main.j2"
    (site / TEMPLATE_NAME).rename(real)
    (site / TEMPLATE_NAME).symlink_to(real)
    message = refused(site, f"template '{TEMPLATE_NAME}': {site / TEMPLATE_NAME} is a symbolic link")
    assert message.startswith("template ")                 # not inside a template: no line


def test_a_symbolic_link_to_a_folder_is_refused(site: Path) -> None:
    (site / "parts").symlink_to(site.parent / "outside", target_is_directory=True)
    line = main_with(site, "{% include 'parts/passwd' %}")
    refused(site, f"template 'parts/passwd': {site / 'parts'} is a symbolic link", "template folder must be a real one",
            line=line)


def test_a_deeper_symbolic_link_to_a_folder_is_refused(site: Path) -> None:
    (site / "a").mkdir()
    (site / "a" / "b").symlink_to(site.parent / "outside", target_is_directory=True)
    main_with(site, "{% include 'a/b/passwd' %}")
    refused(site, f"{site / 'a' / 'b'} is a symbolic link")


@pytest.mark.parametrize("name, says", [
    ("../outside/passwd", "'..' leads outside the templates folder"),
    ("a/../../outside/passwd", "'..' leads outside the templates folder"),
    ("/etc/passwd", "an absolute path"),
])
def test_a_path_outside_the_folder_is_refused(site: Path, name: str, says: str) -> None:
    (site / "a").mkdir()
    line = main_with(site, f"{{% include '{name}' %}}")
    refused(site, f"template {name!r}: {says}", line=line)


def test_a_hard_link_is_refused(site: Path) -> None:
    os.link(site.parent / "outside" / "passwd", site / "linked.j2")
    main_with(site, "{% include 'linked.j2' %}")
    refused(site, "template 'linked.j2'", "a hard link (the file has 2 names)")


def test_a_fifo_is_not_a_template_and_does_not_block(site: Path) -> None:
    os.mkfifo(site / "pipe.j2")
    main_with(site, "{% include 'pipe.j2' %}")
    refused(site, "template 'pipe.j2'", "not a regular file")


def test_a_template_in_a_real_subfolder_is_fine(site: Path) -> None:
    (site / "parts").mkdir()
    (site / "parts" / "note.j2").write_text("<!-- note -->")
    main_with(site, "{% include 'parts/note.j2' %}")
    assert "<!-- note -->" in render(site).decode()


# --- building values ----------------------------------------------------------------------------
@pytest.mark.parametrize("expression, says", [
    ("'a' * 10**10", "'a' * 10000000000 would make a value of 10,000,000,000 characters or items"),
    ("10**10 * 'a'", "would make a value of 10,000,000,000 characters"),
    ("[0] * 10**9", "would make a value of 1,000,000,000 characters or items"),
    ("10 ** (10 ** 10)", "would make a number of about 30,000,000,000 bits"),
    ("2 ** 1000000", "would make a number of about 1,000,000 bits; at most 65,536"),
    ("'%999999999s' % 'a'", "would make a value of 1,0"),
    ("'%*s' % (999999999, 'a')", "would make a value of"),
    ("'{:>999999999}'.format(1)", "format() would make a string of"),
    ("'a'.center(10**10)", "center() would make a string of 10,000,000,000 characters"),
    ("'a\\tb'.expandtabs(10**9)", "expandtabs() would make a string"),
    ("('x' * 5000000).replace('x', 'yyy')", "replace() would make a string of 15,000,000 characters"),
    ("'a'|center(10**9)", "filter center: argument 1,000,000,000 is over 10,000,000"),
    ("'ab'|replace('', 'x' * 5000000)", "filter replace would make a value of 15,000,002 characters"),
    ("(['x' * 1000000] * 20)|join", "filter join would make a value of 20,000,000 characters"),
    ("('x\\n' * 100)|indent(10**6)", "filter indent would make a value of 101,000,200 characters"),
    ("'a'.translate({})", "str.translate() is not allowed in templates"),
    ("range(10**9)", "range(1000000000,) has 1,000,000,000 items; at most 100,000"),
])
def test_a_value_too_big_is_refused_before_it_is_built(site: Path, expression: str, says: str) -> None:
    line = main_with(site, f"<!-- {{{{ {expression} }}}} -->")
    tracemalloc.start()
    try:
        refused(site, says, line=line)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 50 * 1024 * 1024, f"{peak:,} bytes were allocated before the refusal"


def test_small_values_are_fine(site: Path) -> None:
    main_with(site, "<!-- {{ 'ab' * 3 }} {{ 2 ** 64 }} {{ '%5s' % 'x' }} {{ 'a'.center(7) }} "
                    "{{ 'x'|replace('x', 'yz') }} {{ ['a', 'b']|join('-') }} {{ 'a' ~ 'b' }} -->")
    text = render(site).decode()
    assert "<!-- ababab 18446744073709551616     x    a    yz a-b ab -->" in text


def test_doubling_a_string_with_tilde_is_stopped(site: Path) -> None:
    line = main_with(site, "{% set ns = namespace(s='x') %}{% for i in range(40) %}"
                           "{% set ns.s = ns.s ~ ns.s %}{% endfor %}")
    refused(site, "'~' made a value of 16,777,216 characters or items; at most 10,000,000", line=line)


def test_a_set_block_that_grows_too_big_is_stopped(site: Path) -> None:
    main_with(site, "{% set s %}{% for i in range(100000) %}{{ 'x' * 1000 }}{% endfor %}{% endset %}")
    refused(site, f"a {{% set %}} block or macro made 100,000,000 characters; at most {MAX_VALUE:,}")


def test_building_too_much_in_all_is_stopped(site: Path) -> None:
    """Each value is allowed, but together: 300 values of 1,000,000 characters each."""
    main_with(site, "{% set ns = namespace(keep=[]) %}{% for i in range(300) %}"
                    "{% set ns.keep = ns.keep + ['x' * 1000000 ~ i] %}{% endfor %}")
    refused(site, "the template has built", "characters in all; at most 268,4")


# --- loops and output ---------------------------------------------------------------------------
def test_a_huge_range_loop_is_refused(site: Path) -> None:
    line = main_with(site, "{% for i in range(10**9) %}x{% endfor %}")
    refused(site, "range(1000000000,) has 1,000,000,000 items; at most 100,000", line=line)


def test_nested_loops_are_stopped_by_the_loop_budget(site: Path) -> None:
    line = main_with(site, "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}")
    refused(site, "loops have gone round 1,000,0", "for this file (1,000,000 plus 16 a record)", line=line)


def test_writing_too_much_is_stopped_while_streaming(site: Path) -> None:
    main_with(site, "<!-- {% for i in range(100000) %}{{ 'x' * 1000 }}{% endfor %} -->")
    out = io.BytesIO()
    with pytest.raises(TemplateRefused) as info:
        render_transfer(out, HEADER, env=make_environment(site), **parts())
    assert str(info.value) == (f"template '{TEMPLATE_NAME}': the file would grow past 16,777,216 bytes (for 0 "
                               "records: 16,777,216 plus 16,384 a record)")
    assert 16_000_000 < len(out.getvalue()) <= 16_777_216


def test_recursive_loops_are_refused(site: Path) -> None:
    main_with(site, "{% for x in [[1]] recursive %}{{ loop(x) }}{% endfor %}")
    with pytest.raises(TemplateSyntaxError, match="recursive loops are not allowed in templates"):
        render(site)


def test_lipsum_is_gone(site: Path) -> None:
    main_with(site, "{{ lipsum(n=10**9) }}")
    with pytest.raises(Exception, match="lipsum"):
        render(site)


def test_the_budgets_grow_with_the_records_a_file_carries(site: Path) -> None:
    """A big backlog file is legitimately big: per record it may loop 16 times and write 16 KiB."""
    main_with(site, "{% for c in range(20) %}{% endfor %}")      # 20 rounds: fine
    big = parts()
    entries = [Entry(f"I{n}", "C1", "invoice", f"F-{n}", date(2026, 11, 20), Decimal("1.00"), "NOK",
                     due_date=date(2026, 12, 15), status="invoiced", text="x" * 200) for n in range(20_000)]
    out = io.BytesIO()
    render_transfer(out, HEADER, big["customers"], entries, [], make_environment(site))
    assert out.getvalue().count(b"<Entry ") == 20_000


# --- the command ------------------------------------------------------------------------------------
def test_export_with_a_linked_include_fails_cleanly_and_leaks_nothing(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from reskontro.cli import main
    from reskontro.site import init_site

    site = tmp_path / "site"
    init_site(site)
    (tmp_path / "passwd").write_text(SECRET + "\n")
    (site / "templates" / "secret.j2").symlink_to(tmp_path / "passwd")
    line = main_with(site / "templates", "<!-- {% include 'secret.j2' %} -->")
    result = CliRunner().invoke(main, ["--site", str(site), "export"])
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    message = " ".join(result.stderr.split())
    assert message.startswith("error: the transfer file template failed; the file was not finished and nothing goes: ")
    assert f"ledger-transfer-1.xml.j2:{line}: template 'secret.j2'" in message and "is a symbolic link" in message
    assert SECRET not in result.output
    assert not [p for p in (site / "outbox").rglob("*") if p.is_file() and SECRET in p.read_text(errors="replace")]
    assert not list((site / "outbox").glob("*.xml"))


@pytest.mark.parametrize("line", [
    "{% macro m() %}{{ m() }}{% endmacro %}{{ m() }}",
    "{% include 'ledger-transfer-1.xml.j2' %}",
])
def test_endless_recursion_is_refused(site: Path, line: str) -> None:
    main_with(site, line)
    refused(site, "macros or includes call themselves too deep")


def test_an_edited_template_is_compiled_again_in_the_same_process(site: Path) -> None:
    """Compiled templates are kept for the life of the process (a fleet worker renders one
    template for thousands of creditors a night); an edit shows at the next render."""
    first = render(site).decode()
    main_with(site, "<!-- edited -->")
    second = render(site).decode()
    assert "<!-- edited -->" not in first and "<!-- edited -->" in second
