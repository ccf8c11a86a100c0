"""Mutation testing of the modules whose every check must have a test that fails without it.

    python tools/mutate.py [MODULE ...] [--list] [--show KEY] [-v]

For each module (table MODULES: its source files, its mapped test files; a module split by
concern into a package, such as the contract check, is all of its files) every mutant is one
small change to a copy of one source file, made with ``ast``:

- operator swaps (``+``/``-``, ``*``/``/``, ``//``, ``%``, shifts, bit operators; also in ``+=``);
- comparison flips (``==``/``!=``, ``<``/``<=``, ``>``/``>=``, ``in``/``not in``, ``is``/``is not``);
- constant changes (an int n -> n+1; True <-> False; a string compared with, or listed in a
  module-level vocabulary such as ``STATUSES = (...)``, -> ``"XX...XX"``);
- ``and`` <-> ``or``; ``not x`` -> ``x``; ``-x`` -> ``x``; a negative index ``[-n]`` -> ``[0]``;
- removing a ``raise``, a call statement (``problems.append(...)``, ``r.fail(...)``, ...) or a
  ``continue``; an ``if`` guard made always or never true.

Not mutated: docstrings, annotations, decorators (``@dataclass(frozen=True)``), f-string
(message) text, ``assert`` statements, imports, and statements marked ``# no mutate: why``
(code that only decides speed or memory, such as how often finished records are dropped).

A mutant runs in a forked child of this process (pytest and the libraries are imported once,
the project's own modules are imported afresh in each child, with the mutated copy put in
place of the module by an import hook, so every importer sees it): pytest -x -q -p
no:cacheprovider on the mapped test files, restricted to the tests that execute a line of the
mutant (found by a traced, unmutated run first: a test that never runs that line cannot see
the change; a mutant in module-level code runs every mapped test), fastest first. A failing
test, an import error or a timeout kills it; a mutant no mapped test executes survives.

Survivors that no test can kill (equivalent mutants) are listed with their reason in
docs/mutation-survivors.md, matched by module, function and description (not by line). The
exit status is 1 when a module kills less than 90 % of its mutants or a survivor is not listed.
"""
from __future__ import annotations

import argparse
import ast
import importlib.abc
import importlib.util
import json
import os
import re
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SURVIVORS_DOC = ROOT / "docs" / "mutation-survivors.md"
THRESHOLD = 90.0

_CONTRACT = "reskontro/transfer/contract"


@dataclass(frozen=True)
class Module:
    files: tuple[tuple[str, str], ...]    # (import name, source file), each mutated
    tests: tuple[str, ...]                # the mapped test files


# short name: its files and mapped tests. In a module of several files a mutant's scope is
# named after its file too (``contract | scan._Scan.run | ...``).
MODULES: dict[str, Module] = {
    "kid": Module((("reskontro.domain.kid", "reskontro/domain/kid.py"),), ("tests/test_kid.py",)),
    "amount": Module((("reskontro.domain.amount", "reskontro/domain/amount.py"),),
                     ("tests/test_amount.py",)),
    # lint's tests, and issue 14's of the rule file (tags and their word operators, ...)
    "rulefile": Module((("reskontro.rules.rulefile", "reskontro/rules/rulefile.py"),),
                       ("tests/test_rules_lint.py", "tests/test_rules_change.py")),
    # the reader's checks of each record and of the file (read_ledger_file); the fast path
    # (test_import_stream.py compares it with the exact one)
    "ledger_import": Module((("reskontro.adapters.ledger_import", "adapters/ledger_import.py"),),
                            ("tests/test_import.py", "tests/test_import_stream.py")),
    # the contract check is a package, split by concern: every file of it (__init__ only
    # re-exports)
    "contract": Module(tuple((f"reskontro.transfer.contract.{m}", f"{_CONTRACT}/{m}.py")
                             for m in ("structure", "records", "ids", "values", "matches", "sums",
                                       "scan", "checker")),
                       ("tests/test_contract.py",)),
    "receipts": Module((("reskontro.transfer.receipts", "reskontro/transfer/receipts.py"),),
                       ("tests/test_journal_receipts.py",)),
}


# ---------------------------------------------------------------- the mutants

@dataclass(frozen=True)
class Mutant:
    index: int          # candidate node, in traversal order
    variant: int        # which change of that node
    line: int
    lines: tuple[int, ...]   # the lines whose execution the change needs
    scope: str          # enclosing function (qualified), "" for module-level code
    desc: str
    key: str = ""       # module | scope | desc [#n]: how docs/mutation-survivors.md names it


_BINOP = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult,
          ast.FloorDiv: ast.Mult, ast.Mod: ast.FloorDiv, ast.Pow: ast.Mult,
          ast.LShift: ast.RShift, ast.RShift: ast.LShift, ast.BitOr: ast.BitAnd,
          ast.BitAnd: ast.BitOr, ast.BitXor: ast.BitOr}
_CMPOP = {ast.Eq: ast.NotEq, ast.NotEq: ast.Eq, ast.Lt: ast.LtE, ast.LtE: ast.Lt,
          ast.Gt: ast.GtE, ast.GtE: ast.Gt, ast.In: ast.NotIn, ast.NotIn: ast.In,
          ast.Is: ast.IsNot, ast.IsNot: ast.Is}
_OPSYM = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.FloorDiv: "//",
          ast.Mod: "%", ast.Pow: "**", ast.LShift: "<<", ast.RShift: ">>", ast.BitOr: "|",
          ast.BitAnd: "&", ast.BitXor: "^", ast.Eq: "==", ast.NotEq: "!=", ast.Lt: "<",
          ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=", ast.In: "in", ast.NotIn: "not in",
          ast.Is: "is", ast.IsNot: "is not", ast.And: "and", ast.Or: "or"}
_SKIP_FIELDS = {"annotation", "returns", "type_comment"}


def _snip(node: ast.AST, n: int = 60) -> str:
    text = " ".join(ast.unparse(node).split())
    return text if len(text) <= n else text[:n - 1] + "…"


class _Mutator(ast.NodeTransformer):
    """Walks a module: lists its mutants, or (``target`` set) applies one of them."""

    def __init__(self, target: tuple[int, int] | None = None, skip: frozenset[int] = frozenset()) -> None:
        self.target = target
        self.skip = skip          # lines marked "# no mutate": their statements are left alone
        self.mutants: list[Mutant] = []
        self.count = 0
        self.scope: list[str] = []
        self.in_function = 0
        self.strings: set[int] = set()        # ids of str constants worth mutating
        self.literal_neg: set[int] = set()    # ids of UnaryOp(-, number): literals, not negation
        self.applied = False
        self.parents: list[ast.AST] = []
        self.default_of = ""     # set while a default argument value is visited

    # -- traversal, with context
    def generic_visit(self, node: ast.AST) -> ast.AST:
        for name, old in ast.iter_fields(node):
            if name in _SKIP_FIELDS:
                continue
            if isinstance(old, list):
                new: list = []
                for i, item in enumerate(old):
                    if isinstance(item, ast.AST):
                        if (i == 0 and name == "body" and isinstance(item, ast.Expr)
                                and isinstance(item.value, ast.Constant)
                                and isinstance(item.value.value, str)):
                            new.append(item)      # docstring
                            continue
                        item = self.visit(item)
                        if item is None:
                            continue
                    new.append(item)
                old[:] = new
            elif isinstance(old, ast.AST):
                setattr(node, name, self.visit(old))
        return node

    def visit(self, node: ast.AST) -> ast.AST:
        self.parents.append(node)
        try:
            return self._visit(node)
        finally:
            self.parents.pop()

    def _where(self) -> str:
        """Where a constant stands: `name=` of its keyword, or the expression around it."""
        parent = self.parents[-2] if len(self.parents) > 1 else None
        if isinstance(parent, ast.UnaryOp) and len(self.parents) > 2:
            parent = self.parents[-3]
        if isinstance(parent, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            return self.default_of
        if isinstance(parent, ast.keyword) and parent.arg:
            return f" in `{parent.arg}=`"
        if isinstance(parent, (ast.expr, ast.stmt)):
            return f" in `{_snip(parent)}`"
        return ""

    def _visit(self, node: ast.AST) -> ast.AST:
        if isinstance(node, ast.stmt) and node.lineno in self.skip:
            return node
        if isinstance(node, (ast.JoinedStr, ast.Assert, ast.ImportFrom, ast.Import)):
            return node
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
            return self._scoped(node)
        if isinstance(node, ast.Compare):
            for operand in (node.left, *node.comparators):
                self._mark_strings(operand)
        if isinstance(node, ast.Subscript) and self._is_neg_literal(node.slice):
            self.literal_neg.add(id(node.slice))
        if isinstance(node, ast.UnaryOp) and self._is_neg_literal(node):
            self.literal_neg.add(id(node))
        if isinstance(node, ast.Assign) and not self.scope and len(node.targets) == 1 \
                and isinstance(node.targets[0], ast.Name) and node.targets[0].id.isupper():
            self._mark_strings(node.value)
        variants = self._variants(node)
        if variants:
            index = self.count
            self.count += 1
            if self.target is None:
                lines = self._lines(node)
                for v, (desc, _make) in enumerate(variants):
                    self.mutants.append(Mutant(index, v, node.lineno, lines,
                                               ".".join(self.scope) if self.in_function else "",
                                               desc))
            elif self.target[0] == index:
                self.applied = True
                return variants[self.target[1]][1](node)
        return self.generic_visit(node)

    def _scoped(self, node):
        # defaults run where the def is, the body when called; decorators are not mutated
        if isinstance(node, ast.ClassDef):
            node.bases = [self.visit(b) for b in node.bases]
            self.scope.append(node.name)
            body_fields = ("body",)
        else:
            a = node.args
            name = getattr(node, "name", "<lambda>")
            positional = (a.posonlyargs + a.args)[len(a.posonlyargs + a.args) - len(a.defaults):]
            for arg, d in zip(positional + a.kwonlyargs, a.defaults + a.kw_defaults):
                if d is not None:
                    self.default_of = f" in the default `{arg.arg}=` of `{name}`"
                    new = self.visit(d)
                    d_list = a.defaults if d in a.defaults else a.kw_defaults
                    d_list[[id(x) for x in d_list].index(id(d))] = new
            self.default_of = ""
            self.scope.append(getattr(node, "name", "<lambda>"))
            self.in_function += 1
            body_fields = ("body",)
        for f in body_fields:
            body = getattr(node, f)
            if isinstance(body, list):
                holder = ast.Module(body=body, type_ignores=[])
                self.generic_visit(holder)
                setattr(node, f, holder.body or [ast.Pass()])
            else:
                setattr(node, f, self.visit(body))
        self.scope.pop()
        if not isinstance(node, ast.ClassDef):
            self.in_function -= 1
        return node

    def _mark_strings(self, node: ast.AST) -> None:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            self.strings.add(id(node))
        elif isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            for e in node.elts:
                self._mark_strings(e)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
                and node.func.id in ("frozenset", "set", "tuple") and node.args:
            self._mark_strings(node.args[0])

    @staticmethod
    def _is_neg_literal(node: ast.AST) -> bool:
        return (isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub)
                and isinstance(node.operand, ast.Constant)
                and type(node.operand.value) in (int, float))

    @staticmethod
    def _lines(node: ast.AST) -> tuple[int, ...]:
        if isinstance(node, ast.If):
            node = node.test
        end = getattr(node, "end_lineno", None) or node.lineno
        return tuple(range(node.lineno, end + 1))

    # -- the changes a node allows: [(description, make(node) -> replacement)]
    def _variants(self, node: ast.AST) -> list:
        out: list = []
        if isinstance(node, ast.BinOp) and type(node.op) in _BINOP:
            if isinstance(node.op, ast.Mod) and isinstance(node.left, (ast.Constant, ast.JoinedStr)):
                return out     # % formatting
            new = _BINOP[type(node.op)]
            out.append((f"{_OPSYM[type(node.op)]} -> {_OPSYM[new]} in `{_snip(node)}`",
                        lambda n, new=new: _with(n, op=new())))
        elif isinstance(node, ast.AugAssign) and type(node.op) in _BINOP:
            new = _BINOP[type(node.op)]
            out.append((f"{_OPSYM[type(node.op)]}= -> {_OPSYM[new]}= in `{_snip(node)}`",
                        lambda n, new=new: _with(n, op=new())))
        elif isinstance(node, ast.Compare):
            for i, op in enumerate(node.ops):
                if type(op) in _CMPOP:
                    new = _CMPOP[type(op)]

                    def make(n, i=i, new=new):
                        ops = list(n.ops)
                        ops[i] = new()
                        return _with(n, ops=ops)
                    out.append((f"{_OPSYM[type(op)]} -> {_OPSYM[new]} in `{_snip(node)}`", make))
        elif isinstance(node, ast.BoolOp):
            new = ast.Or if isinstance(node.op, ast.And) else ast.And
            out.append((f"{_OPSYM[type(node.op)]} -> {_OPSYM[new]} in `{_snip(node)}`",
                        lambda n, new=new: _with(n, op=new())))
        elif isinstance(node, ast.UnaryOp) and id(node) not in self.literal_neg:
            if isinstance(node.op, (ast.Not, ast.USub, ast.Invert)):
                sym = {ast.Not: "not ", ast.USub: "-", ast.Invert: "~"}[type(node.op)]
                out.append((f"drop `{sym.strip()}` in `{_snip(node)}`", lambda n: n.operand))
        elif isinstance(node, ast.Constant):
            v = node.value
            if isinstance(v, bool):
                out.append((f"{v} -> {not v}{self._where()}", lambda n: _with(n, value=not n.value)))
            elif type(v) in (int, float):
                out.append((f"{v!r} -> {v + 1!r}{self._where()}",
                            lambda n: _with(n, value=n.value + 1)))
            elif isinstance(v, str) and id(node) in self.strings:
                out.append((f"{v!r} -> {'XX' + v + 'XX'!r}{self._where()}",
                            lambda n: _with(n, value="XX" + n.value + "XX")))
        elif isinstance(node, ast.Subscript) and id(node.slice) in self.literal_neg:
            out.append((f"index -> 0 in `{_snip(node)}`",
                        lambda n: _with(n, slice=ast.Constant(0))))
        elif isinstance(node, ast.Raise):
            out.append((f"remove `{_snip(node)}`", _pass))
        elif isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
            out.append((f"remove call `{_snip(node)}`", _pass))
        elif isinstance(node, ast.Continue):
            out.append(("remove `continue`", _pass))
        elif isinstance(node, ast.If):
            t = _snip(node.test)
            out.append((f"`if {t}` -> `if True`", lambda n: _with(n, test=ast.Constant(True))))
            out.append((f"`if {t}` -> `if False`", lambda n: _with(n, test=ast.Constant(False))))
        return out


def _with(node: ast.AST, **changes) -> ast.AST:
    new = type(node)(**{f: getattr(node, f) for f in node._fields})
    for k, v in changes.items():
        setattr(new, k, v)
    return ast.copy_location(new, node)


def _pass(node: ast.AST) -> ast.AST:
    return ast.copy_location(ast.Pass(), node)


def skipped_lines(source: str) -> frozenset[int]:
    """Lines whose statement (with all it holds) is not mutated: marked ``# no mutate: why``,
    for code that only decides speed or memory (no test can see a change there)."""
    return frozenset(n for n, line in enumerate(source.splitlines(), 1)
                     if re.search(r"#.*\bno mutate\b", line))


def list_mutants(module: str, source: str, file: str = "") -> list[Mutant]:
    """The mutants of one source file; ``file`` (its stem) prefixes the scope in the keys of a
    module of several files."""
    m = _Mutator(skip=skipped_lines(source))
    m.visit(ast.parse(source))
    seen: dict[tuple[str, str], int] = {}
    out = []
    prefix = f"{file}." if file else ""
    for mu in m.mutants:
        n = seen[mu.scope, mu.desc] = seen.get((mu.scope, mu.desc), 0) + 1
        key = (f"{module} | {prefix}{mu.scope or '<module>'} | {mu.desc}"
               + (f" #{n}" if n > 1 else ""))
        out.append(Mutant(mu.index, mu.variant, mu.line, mu.lines, mu.scope, mu.desc, key))
    return out


def mutated_code(source: str, path: str, mutant: Mutant):
    tree = ast.parse(source)
    m = _Mutator((mutant.index, mutant.variant), skipped_lines(source))
    tree = m.visit(tree)
    assert m.applied, mutant
    ast.fix_missing_locations(tree)
    return compile(tree, path, "exec", dont_inherit=True)


# ---------------------------------------------------------------- running tests in a child

class _MutantFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Puts the mutated code in place of one module, for every importer."""

    def __init__(self, name: str, path: str, code) -> None:
        self.name, self.path, self.code = name, path, code

    def find_spec(self, fullname, path=None, target=None):
        if fullname != self.name:
            return None
        return importlib.util.spec_from_file_location(fullname, self.path, loader=self)

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        exec(self.code, module.__dict__)


class _Select:
    """pytest plugin: run only ``order`` (node ids), in that order."""

    def __init__(self, order: list[str] | None) -> None:
        self.order = order

    def pytest_configure(self, config):
        _hypothesis_profile()

    def pytest_collection_modifyitems(self, session, config, items):
        if self.order is None:
            return
        rank = {nid: i for i, nid in enumerate(self.order)}
        keep = sorted((it for it in items if it.nodeid in rank), key=lambda it: rank[it.nodeid])
        dropped = [it for it in items if it.nodeid not in rank]
        if dropped:
            config.hook.pytest_deselected(items=dropped)
        items[:] = keep


class _Trace:
    """pytest plugin: the lines of some files each test executes (as ``file:line``), and each
    test's duration."""

    def __init__(self, filenames: list[str]) -> None:
        self.filenames = {os.path.realpath(f): f for f in filenames}
        self.seen: dict[str, str | None] = {}    # co_filename -> the file it is, if watched
        self.per_test: dict[str, set[str]] = {}
        self.durations: dict[str, float] = {}
        self.outcomes: dict[str, bool] = {}
        self.module_level: set[str] = set()
        self.current = self.module_level

    def _global(self, frame, event, arg):
        code_file = frame.f_code.co_filename
        if code_file not in self.seen:
            # the path it was imported by may be another (reskontro/adapters links to adapters/)
            self.seen[code_file] = self.filenames.get(os.path.realpath(code_file))
        filename = self.seen[code_file]
        if filename is not None:
            self.current.add(f"{filename}:{frame.f_lineno}")

            def local(frame, event, arg):
                if event == "line":
                    self.current.add(f"{filename}:{frame.f_lineno}")
                return local
            return local
        return None

    def start(self) -> None:
        import threading
        sys.settrace(self._global)
        threading.settrace(self._global)

    def stop(self) -> None:
        import threading
        sys.settrace(None)
        threading.settrace(None)

    def pytest_runtest_logreport(self, report):
        if report.failed or (report.when == "call" and report.outcome != "passed"
                             and report.outcome != "skipped"):
            self.outcomes[report.nodeid] = False
        else:
            self.outcomes.setdefault(report.nodeid, True)


def _make_trace(filenames: list[str]):
    import pytest

    class Trace(_Trace):
        @pytest.hookimpl(hookwrapper=True)
        def pytest_runtest_protocol(self, item, nextitem):
            self.current = self.per_test.setdefault(item.nodeid, set())
            t = time.perf_counter()
            yield
            self.durations[item.nodeid] = time.perf_counter() - t
            self.current = self.module_level
    return Trace(filenames)


def _hypothesis_profile() -> None:
    """Same examples every run (a mutant is judged on what the baseline ran), no deadline
    (the machine is shared: a slow example is no failure), no example database."""
    try:
        from hypothesis import settings
    except ImportError:
        return
    settings.register_profile("mutation", deadline=None, derandomize=True, database=None,
                              print_blob=False)
    settings.load_profile("mutation")


def _pytest_args(tests: tuple[str, ...]) -> list[str]:
    # the libraries were imported before pytest started (in this process, before the fork)
    return [*tests, "-x", "-q", "-p", "no:cacheprovider", "--rootdir", str(ROOT),
            "-W", "ignore::pytest.PytestAssertRewriteWarning"]


def _child(tests, finder, plugins, quiet: bool = True) -> int:
    import pytest
    os.setpgid(0, 0)
    if quiet and not os.environ.get("MUTATE_DEBUG"):
        fd = os.open(os.devnull, os.O_WRONLY)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
    if finder is not None:
        sys.meta_path.insert(0, finder)
    return int(pytest.main(_pytest_args(tests), plugins=plugins))


def _fork(fn, timeout: float | None) -> tuple[str, float]:
    """Run ``fn`` in a forked child: ('exit', code) | ('timeout', seconds) | ('signal', n)."""
    sys.stdout.flush()
    sys.stderr.flush()
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:   # the child
        code = 3
        try:
            code = fn()
        except BaseException:    # noqa: BLE001 - report it as an internal error
            if os.environ.get("MUTATE_DEBUG"):
                import traceback
                traceback.print_exc()
        finally:
            os._exit(code)
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if timeout is not None and time.monotonic() - start > timeout:
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            os.waitpid(pid, 0)
            return "timeout", time.monotonic() - start
        time.sleep(0.01)
    try:   # whatever the child started (its process group) goes with it
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    if os.WIFSIGNALED(status):
        return "signal", os.WTERMSIG(status)
    return "exit", os.WEXITSTATUS(status)


# ---------------------------------------------------------------- one module

def _baseline(name: str, paths: list[str], tests: tuple[str, ...], out: Path) -> dict:
    """The unmutated run, traced: lines (``file:line``) per test, durations, and the libraries
    it loaded."""

    def run() -> int:
        trace = _make_trace(paths)
        trace.start()
        try:
            code = _child(tests, None, [trace, _Select(None)])
        finally:
            trace.stop()
        libs = sorted(m for m in sys.modules
                      if not m.startswith(("reskontro", "test_", "conftest", "tests", "__main__",
                                           "clirun", "sshd_server", "receiver_model")))
        out.write_text(json.dumps({
            "code": code,
            "per_test": {k: sorted(v) for k, v in trace.per_test.items()},
            "durations": trace.durations,
            "failed": [k for k, ok in trace.outcomes.items() if not ok],
            "module_level": sorted(trace.module_level),
            "libs": libs,
        }))
        return code

    how, code = _fork(run, None)
    if how != "exit" or not out.exists():
        raise SystemExit(f"{name}: the unmutated test run did not finish ({how} {code})")
    data = json.loads(out.read_text())
    if data["code"] != 0:
        raise SystemExit(f"{name}: the unmutated tests fail ({', '.join(data['failed'][:5])}); "
                         f"run: pytest {' '.join(tests)}")
    return data


def _preload(libs: list[str]) -> None:
    """Import the libraries the tests use once, here, so each forked child starts warm."""
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for m in libs:
            if m in sys.modules or "._" in m and not m.startswith("_pytest"):
                continue
            try:
                __import__(m)
            except Exception:    # noqa: BLE001 - a library that cannot be loaded alone: skip
                pass


def load_equivalents() -> dict[str, str]:
    """docs/mutation-survivors.md: items ``- `` KEY `` `` followed by the reason, indented;
    several items in a row before one reason share it."""
    out: dict[str, str] = {}
    if not SURVIVORS_DOC.exists():
        return out
    group: list[str] = []
    reading = False          # reading a reason (for every key of the group)
    for line in SURVIVORS_DOC.read_text(encoding="utf-8").splitlines():
        m = re.match(r"- `` (.+) ``\s*$", line)
        if m:
            if reading:
                group, reading = [], False
            group.append(m.group(1))
            out[m.group(1)] = ""
        elif group and line.startswith("  ") and line.strip():
            reading = True
            for key in group:
                out[key] = (out[key] + " " + line.strip()).strip()
        else:
            group, reading = [], False
    return out


def run_module(short: str, verbose: bool, equivalents: dict[str, str],
               match: str | None = None) -> dict:
    module = MODULES[short]
    tests = module.tests
    several = len(module.files) > 1
    # (import name, path, relative path, source, mutant) for every mutant of every file
    todo: list[tuple[str, str, str, str, Mutant]] = []
    marked = 0
    for name, rel in module.files:
        path = str(ROOT / rel)
        source = Path(path).read_text(encoding="utf-8")
        marked += len(skipped_lines(source))
        for mu in list_mutants(short, source, Path(rel).stem if several else ""):
            if not match or re.search(match, mu.key):
                todo.append((name, path, rel, source, mu))
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="mutate-") as tmp:
        base = _baseline(short, [str(ROOT / rel) for _, rel in module.files], tests,
                         Path(tmp) / "baseline.json")
    _preload(base["libs"])
    covers: dict[str, set[str]] = {}
    for test, lines in base["per_test"].items():
        for ln in lines:
            covers.setdefault(ln, set()).add(test)
    durations = base["durations"]
    all_tests = sorted(durations, key=durations.get)
    where = " ".join(rel for _, rel in module.files)
    print(f"== {short} ({where}): {len(todo)} mutants, {len(all_tests)} tests "
          f"({sum(durations.values()):.1f} s unmutated) in {' '.join(tests)}"
          + (f"; {marked} statement(s) marked `# no mutate` (speed/memory only)" if marked else ""),
          flush=True)
    killed = uncovered = timeouts = 0
    survived: list[Mutant] = []
    unexplained: list[Mutant] = []

    def survive(mu: Mutant, rel: str, why: str) -> None:
        survived.append(mu)
        reason = equivalents.get(mu.key)
        if not reason:
            unexplained.append(mu)
        if verbose or not reason:
            print(f"   {'equivalent' if reason else 'SURVIVED':10} {rel}:{mu.line}  `{mu.key}`  "
                  f"({why})", flush=True)

    mutants = [mu for *_, mu in todo]
    for name, path, rel, source, mu in todo:
        if not mu.scope:
            chosen = all_tests
        else:
            hit = set().union(*(covers.get(f"{path}:{ln}", set()) for ln in mu.lines))
            chosen = [t for t in all_tests if t in hit]
        if not chosen:
            uncovered += 1
            survive(mu, rel, "no mapped test executes it")
            continue
        code = mutated_code(source, path, mu)
        finder = _MutantFinder(name, path, code)
        budget = 10 + 3 * sum(durations[t] for t in chosen)
        t_mutant = time.monotonic()
        how, value = _fork(lambda: _child(tests, finder, [_Select(chosen)]), budget)
        if how == "exit" and value == 0:
            survive(mu, rel, f"{len(chosen)} test(s) pass")
        elif how == "exit" and value in (4, 5):
            raise SystemExit(f"{short}: pytest usage error {value} on {mu.key}: a harness bug")
        else:
            killed += 1
            timeouts += how == "timeout"
            if verbose:
                print(f"   killed     {rel}:{mu.line}  `{mu.key}`  ({how} {value}, "
                      f"{time.monotonic() - t_mutant:.2f} s)", flush=True)
    if not match:
        keys = {mu.key for mu in mutants}
        for key in equivalents:
            if key.startswith(short + " | ") and key not in keys:
                print(f"   stale      docs/mutation-survivors.md lists `{key}`, which is no "
                      "mutant any more: remove it", flush=True)
    pct = 100.0 * killed / len(mutants) if mutants else 100.0
    secs = time.monotonic() - t0
    print(f"   {short}: {killed}/{len(mutants)} killed = {pct:.1f} % "
          f"({timeouts} by timeout); {len(survived)} survived ({uncovered} never executed by a "
          f"mapped test; {len(survived) - len(unexplained)} listed as equivalent, "
          f"{len(unexplained)} not); {secs:.0f} s", flush=True)
    return {"module": short, "mutants": len(mutants), "killed": killed, "percent": pct,
            "survived": len(survived), "unexplained": len(unexplained), "seconds": secs}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("modules", nargs="*", metavar="MODULE",
                    help=f"default: all ({', '.join(MODULES)})")
    ap.add_argument("--list", action="store_true", help="list the mutants, run nothing")
    ap.add_argument("--show", metavar="KEY", help="print the mutated source of one mutant (its key)")
    ap.add_argument("--tests", nargs="+", metavar="FILE",
                    help="run these test files instead of the mapped ones (one module)")
    ap.add_argument("--match", metavar="REGEX", help="only the mutants whose key matches")
    ap.add_argument("-v", "--verbose", action="store_true",
                    help="also list killed and equivalent mutants")
    args = ap.parse_args(argv)
    if os.environ.get("PYTHONHASHSEED") != "0" and argv is None:
        # the same str hashes every run (reskontro.contract keeps ids as hashes): a mutant is
        # killed or survives alike on every run
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, "PYTHONHASHSEED": "0"})
    os.chdir(ROOT)
    if str(ROOT / "tests") not in sys.path:
        sys.path.insert(0, str(ROOT / "tests"))
    modules = args.modules or list(MODULES)
    for m in modules:
        if m not in MODULES:
            ap.error(f"unknown module {m!r} (known: {', '.join(MODULES)})")
    if args.list or args.show:
        for short in modules:
            files = MODULES[short].files
            for _, rel in files:
                source = (ROOT / rel).read_text(encoding="utf-8")
                for mu in list_mutants(short, source, Path(rel).stem if len(files) > 1 else ""):
                    if args.show is None:
                        print(f"{rel}:{mu.line}  `{mu.key}`")
                    elif mu.key == args.show:
                        tree = _Mutator((mu.index, mu.variant),
                                        skipped_lines(source)).visit(ast.parse(source))
                        print(ast.unparse(tree))
        return 0
    if args.tests:
        if len(modules) != 1:
            ap.error("--tests goes with exactly one module")
        MODULES[modules[0]] = Module(MODULES[modules[0]].files, tuple(args.tests))
    import pytest  # noqa: F401 - loaded once, before the children fork
    equivalents = load_equivalents()
    results = [run_module(m, args.verbose, equivalents, args.match) for m in modules]
    print("\nmodule          mutants  killed      %  survived  not listed  seconds")
    bad = False
    for r in results:
        ok = r["percent"] >= THRESHOLD and r["unexplained"] == 0
        bad |= not ok
        print(f"{r['module']:15} {r['mutants']:7} {r['killed']:7} {r['percent']:6.1f} "
              f"{r['survived']:9} {r['unexplained']:11} {r['seconds']:8.0f}"
              + ("" if ok else "   <- below 90 % or survivors not listed"))
    total_m = sum(r["mutants"] for r in results)
    total_k = sum(r["killed"] for r in results)
    print(f"{'all':15} {total_m:7} {total_k:7} {100.0 * total_k / max(total_m, 1):6.1f}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
