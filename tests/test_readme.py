"""README matches behaviour: every command and option click knows (walked from the group) is in
README's command tables and nothing there is stale; every help text carries an example; the
example configuration is what `init` writes; the exit-status table is the CLI's."""
from __future__ import annotations

import re
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from reskontro.cli import main
from reskontro.cli_output import EXIT_STATUSES
from reskontro.site import init_site

README = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
# options every command takes, documented once in README's "Options every command takes"
COMMON = {"--site", "--json", "--plain", "--help", "-h"}


def leaves(group: click.Group, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], click.Command]:
    out = {}
    for name, cmd in group.commands.items():
        if isinstance(cmd, click.Group):
            out |= leaves(cmd, prefix + (name,))
        else:
            out[prefix + (name,)] = cmd
    return out


COMMANDS = leaves(main)


def options(cmd: click.Command) -> set[str]:
    return {o for p in cmd.params if isinstance(p, click.Option) for o in p.opts + p.secondary_opts}


def readme_rows() -> list[tuple[tuple[str, ...], str]]:
    """(command, synopsis) of every table row whose first cell is `reskontro ...`."""
    rows = []
    for m in re.finditer(r"^\| `(reskontro [^`]*)` \|", README, re.M):
        words = m.group(1).split()[1:]
        node: click.Command = main
        path: tuple[str, ...] = ()
        while isinstance(node, click.Group) and words and words[0] in node.commands:
            node = node.commands[words[0]]
            path += (words.pop(0),)
        rows.append((path, m.group(1)))
    return rows


def test_every_command_has_a_row() -> None:
    documented = {path for path, _ in readme_rows()}
    assert set(COMMANDS) - documented == set(), "commands missing from README's tables"
    assert documented - set(COMMANDS) == set(), "README's tables name commands the CLI does not have"


@pytest.mark.parametrize("path", sorted(COMMANDS), ids=" ".join)
def test_every_option_is_in_the_commands_rows_and_none_is_stale(path: tuple[str, ...]) -> None:
    cmd = COMMANDS[path]
    synopses = [s for p, s in readme_rows() if p == path]
    written = {o for s in synopses for o in re.findall(r"--[a-z][a-z-]*", s)}
    assert options(cmd) - COMMON - written == set(), f"{' '.join(path)}: options missing from README: {synopses}"
    assert written - options(cmd) == set(), f"{' '.join(path)}: README names options the command lacks"
    ctx = click.Context(cmd)
    for arg in (p for p in cmd.params if isinstance(p, click.Argument)):
        name = arg.make_metavar(ctx).strip("[].")          # as the help's usage line shows it
        assert any(name in re.sub(r"[\[\].]", " ", s).split() for s in synopses), (path, name, synopses)


def test_the_common_options_are_documented_once() -> None:
    table = README.split("Options every command takes:")[1].split("###")[0]
    for opt in ("--site DIR", "--json", "--plain", "-h", "--help", "--version"):
        assert f"`{opt}`" in table, opt
    for path, cmd in COMMANDS.items():
        if path != ("init",):
            assert "--site" in options(cmd), f"{' '.join(path)} does not take --site after its name"
    assert options(main) == {"--site", "--version"}             # and -h/--help


@pytest.mark.parametrize("path", sorted(COMMANDS), ids=" ".join)
def test_every_help_text_carries_an_example(path: tuple[str, ...]) -> None:
    r = CliRunner().invoke(main, [*path, "--help"])
    assert r.exit_code == 0
    text = r.stdout.split("Example", 1)
    assert len(text) == 2, f"{' '.join(path)}: no example in its help"
    example = text[1].split("Options:")[0]
    assert "reskontro " in example, example


def test_the_example_configuration_is_what_init_writes(tmp_path: Path) -> None:
    init_site(tmp_path / "s", sender_id="123456", org_no="923609016")
    written = (tmp_path / "s" / "reskontro.toml").read_text(encoding="utf-8")
    section = README.split("### Configuration (`reskontro.toml`)")[1]
    block = section.split("```toml\n", 1)[1].split("```\n", 1)[0]
    assert block == written


def test_the_exit_status_table_is_the_clis() -> None:
    table = README.split("### Exit status")[1].split("###")[0]
    codes = [int(c) for c in re.findall(r"^\| (\d+) \|", table, re.M)]
    assert codes == [code for code, _ in EXIT_STATUSES]


def test_readme_documents_the_eq_operator_and_shell_completion() -> None:
    from reskontro.rules.rulefile import OPS

    ops = README.split("A condition is `field: value`")[1].split("holds alternatives")[0]
    for op in OPS:
        assert f"`{op}`" in ops, op
    assert "_RESKONTRO_COMPLETE=bash_source reskontro" in README
