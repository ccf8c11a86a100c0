"""How the command line speaks: exit statuses, messages, tables, `--json`, `--plain`, progress.

Every command prints through an `Output`, so that all of them follow the same conventions:

- **Data is never markup.** The consoles read no rich markup and no emoji codes: an id
  `[bold]x`, a reason `:smile:` or `shadow.yaml:100:` print as they are. Styles are given
  beside the text (`Output.say(("ok", "green"), " ", name)`), never inside it.
- **Lines that say where stay whole.** A message is printed without rich's line wrapping
  (`file:line: message` and a command to copy stay on one line; the terminal wraps them).
- **Tables never cut an id or an amount.** Every column folds instead of cutting; an id or
  amount column is as wide as its longest value and the text columns wrap; when even that
  does not fit the terminal, each row is printed as `column: value` lines.
- `--plain`: tables as tab-separated lines under a header line, no colour, no box.
- `--json`: one object on stdout, `{"ok": ..., "exit_status": ..., <the command's fields>}`;
  an error is `{"ok": false, "exit_status": N, "error": "..."}` (and its line on stderr).
- Progress of long work goes to stderr, and only when stderr is a terminal.
"""
from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from rich.console import Console
from rich.table import Table
from rich.text import Text

# --- exit statuses ---------------------------------------------------------------------------
DONE = 0          # done
FAILED = 1        # a step failed
USAGE = 2         # usage or configuration (click's own usage errors are 2 too)
ATTENTION = 3     # done, but a person is needed
LATER = 75        # try again later (EX_TEMPFAIL)

EXIT_STATUSES: tuple[tuple[int, str], ...] = (
    (DONE, "done"),
    (FAILED, "a step failed (a bad import file, a file that failed the pre-send check, a refused "
             "upload, a damaged store, a full disk, rule problems found by rules lint/test/diff)"),
    (USAGE, "usage or configuration: a wrong option or argument, a bad or missing reskontro.toml, a "
            "rule file that does not load, a file that exists (use --force)"),
    (ATTENTION, "done, but a person is needed: new holds tonight, unmatched payments, a failed "
                "inbox file, a rejected or refused receipt, entries held by an import"),
    (LATER, "try again later: another run holds the lock, or the server stayed unreachable after "
            "the retries"),
)


def exit_status_help() -> str:
    """The table for `reskontro --help` (click keeps a \\b paragraph as written)."""
    import textwrap
    return "\b\nExit status:\n" + "\n".join(
        textwrap.fill(text, 92, initial_indent=f"  {code:>2}  ", subsequent_indent=" " * 6)
        for code, text in EXIT_STATUSES)


def plural(n: int, word: str, words: str | None = None) -> str:
    """`1 problem`, `2 problems` (and `1 entry`, `2 entries` with words given)."""
    return f"{n:,} {word if n == 1 else (words or word + 's')}"


# --- tables ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Col:
    """A table column. kind: `id` and `amount` (and `number`) are never cut nor wrapped while
    the terminal allows; `words` (a time with its zone) wraps at its spaces only; `text` wraps."""
    name: str
    kind: str = "text"           # id | amount | number | words | text
    max_width: int | None = None  # text columns: at most this wide


Cell = str | tuple[str, str]     # a value, or (value, style)

_MIN_TEXT = 8                    # a text column narrower than this reads badly: records instead


def _value(cell: Cell) -> str:
    return cell[0] if isinstance(cell, tuple) else cell


def _styled(cell: Cell) -> Text:
    return Text(cell[0], style=cell[1]) if isinstance(cell, tuple) else Text(cell)


def _width(value: str) -> int:
    return max((Text(line).cell_len for line in value.split("\n")), default=0)


class Output:
    """One command's way of printing (see the module's docstring)."""

    def __init__(self, *, as_json: bool = False, plain: bool = False) -> None:
        self.json = as_json
        self.plain = plain
        common = dict(markup=False, emoji=False, highlight=False)
        if plain:
            common["color_system"] = None
        self.out = Console(**common)
        self.err = Console(stderr=True, **common)

    # --- messages --------------------------------------------------------------------------
    def say(self, *parts: Cell, err: bool = False) -> None:
        """One message line, never wrapped by rich; parts are values or (value, style)."""
        if self.json and not err:
            return
        (self.err if err else self.out).print(Text.assemble(*parts), soft_wrap=True)

    def warn(self, *parts: Cell) -> None:
        self.say(*parts, err=True)

    def verbatim(self, line: str, err: bool = True) -> None:
        """A line as it is (`file:line: message`), on stderr by default."""
        self.say(line, err=err)

    # --- tables ----------------------------------------------------------------------------
    def table(self, columns: Sequence[Col], rows: Sequence[Sequence[Cell]], title: str | None = None) -> None:
        if self.json:
            return
        if self.plain:       # written as it is: rich would turn the tabs into spaces
            lines = ["\t".join(c.name for c in columns)]
            lines += ["\t".join(" ".join(_value(v).replace("\t", " ").split("\n")) for v in row) for row in rows]
            sys.stdout.write("".join(line + "\n" for line in lines))
            sys.stdout.flush()
            return
        # A text column with nothing in it (no detail on any file) is left out of the picture.
        keep = [i for i, c in enumerate(columns) if c.kind not in ("text", "words") or any(_value(r[i]) for r in rows)]
        if len(keep) < len(columns):
            columns = [columns[i] for i in keep]
            rows = [[r[i] for i in keep] for r in rows]
        # a header may wrap at its spaces; a value of an id or amount column may not; a `words`
        # column wraps at its spaces only; a text column wraps anywhere it must
        widths = [max([_width(w) for w in c.name.split()] + [_width(_value(r[i])) for r in rows])
                  for i, c in enumerate(columns)]
        words = [max([_width(w) for w in c.name.split()] + [_width(w) for r in rows for w in _value(r[i]).split()])
                 for i, c in enumerate(columns)]
        need = sum(min(w, _MIN_TEXT) if c.kind == "text" else (ww if c.kind == "words" else w)
                   for c, w, ww in zip(columns, widths, words))
        # the box: "│ " and " " around each cell; a table a little too wide loses its outer edge
        edge = need + 3 * len(columns) + 1 <= self.out.width
        if not edge and need + 3 * len(columns) - 3 > self.out.width:
            self._records(columns, rows, title)
            return
        t = Table(title=title, show_edge=edge, pad_edge=edge)
        for c, w, ww in zip(columns, widths, words):
            if c.kind == "text":
                t.add_column(c.name, overflow="fold", max_width=c.max_width)
            elif c.kind == "words":
                t.add_column(c.name, overflow="fold", min_width=ww)
            else:
                t.add_column(c.name, justify="left" if c.kind == "id" else "right",
                             no_wrap=True, min_width=w, overflow="fold")
        for row in rows:
            t.add_row(*(_styled(v) for v in row))
        self.out.print(t)

    def _records(self, columns: Sequence[Col], rows: Sequence[Sequence[Cell]], title: str | None) -> None:
        """Too narrow for a table: each row as `column: value` lines, a blank line between."""
        if title:
            self.out.print(Text(title, style="bold"), soft_wrap=True)
        for n, row in enumerate(rows):
            if n:
                self.out.print()
            for c, v in zip(columns, row):
                value, style = v if isinstance(v, tuple) else (v, "")
                first, *more = value.split("\n")
                self.out.print(Text.assemble((f"{c.name}: ", "bold"), (first, style)), soft_wrap=True)
                for line in more:
                    self.out.print(Text("  " + line), soft_wrap=True)

    # --- json ------------------------------------------------------------------------------
    def emit(self, status: int, **fields) -> None:
        """With --json: the command's answer as one object on stdout."""
        if self.json:
            doc = {"ok": status == DONE, "exit_status": status, **fields}
            sys.stdout.write(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")

    # --- progress --------------------------------------------------------------------------
    @contextmanager
    def progress(self, description: str, total: int | None = None) -> Iterator[Callable[..., None]]:
        """A progress display on stderr while the block runs (only on a terminal). Yields
        `update(completed=None, description=None)`."""
        if not self.err.is_terminal:
            yield lambda *a, **k: None
            return
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn,
                                   TimeElapsedColumn)
        cols = [SpinnerColumn(), TextColumn("{task.description}")]
        if total:
            cols += [BarColumn(), MofNCompleteColumn()]
        cols.append(TimeElapsedColumn())
        with Progress(*cols, console=self.err, transient=True, redirect_stdout=False,
                      redirect_stderr=False) as bar:
            task = bar.add_task(description, total=total)

            def update(completed: int | None = None, description: str | None = None) -> None:
                kw = {}
                if completed is not None:
                    kw["completed"] = completed
                if description is not None:
                    kw["description"] = description
                bar.update(task, **kw)
            yield update
