"""The template sandbox: which files a template may read, and how much it may build and write.

Jinja2's SandboxedEnvironment keeps templates away from Python internals, but not from the
file system (FileSystemLoader follows symbolic links) nor from memory: ``{{ 'a' * 10**10 }}``
builds 10 GB. Whoever can write templates/ must not be able to do more than write a bad
transfer file (which the check then refuses). So:

* `TemplateLoader` reads only regular files inside the templates folder: no symbolic link
  (to a file or to a folder, at any depth), no hard link, no ``..``, no absolute name. It
  walks the path with ``O_NOFOLLOW`` from the folder's own descriptor, so that nothing can be
  swapped in between the check and the read.
* `BoundedSandbox` refuses, with the template, its line and what was too big:
  - any one value (string, list, ...) of more than MAX_VALUE characters or items, made by an
    operator (``*``, ``**``, ``+``, ``%``, ``~``), a filter, a method, a macro or a
    ``{% set %}`` block; where the size can be known before it is built (repeating, padding,
    powers, replace, join, format widths), before;
  - more than VALUE_BUDGET characters built in all, LOOP_BUDGET loop rounds (loops over the
    file's own customers, entries and matches excepted), or OUTPUT_BUDGET bytes written; each
    budget grows with the records the file carries (a backlog file of a million entries is
    legitimately large), so they bound what the template adds, not what the ledger holds;
  - recursive loops, and methods of strings, numbers and containers outside a short list.
"""
from __future__ import annotations

import errno
import os
import re
import stat
import string
import types
from collections.abc import Callable, Iterable
from functools import wraps
from itertools import islice
from pathlib import Path

from jinja2 import FileSystemLoader, TemplateNotFound, nodes, pass_context
from jinja2.exceptions import TemplateSyntaxError
from jinja2.sandbox import MAX_RANGE, ImmutableSandboxedEnvironment, SecurityError
from jinja2.visitor import NodeTransformer

MAX_VALUE = 10_000_000            # characters (or items) of any one value
MAX_INT_BITS = 65_536             # an integer's size (about 20,000 digits)
MAX_TEMPLATE_BYTES = 1024 * 1024  # one template file
# per render: a fixed part plus a part per record (customer, entry, match or match member)
VALUE_BUDGET = (256 * 1024 * 1024, 2048)   # characters built in all (the shipped template: ~400 a record)
LOOP_BUDGET = (1_000_000, 16)              # rounds of loops over anything but the file's records
OUTPUT_BUDGET = (16 * 1024 * 1024, 16384)  # bytes written (the shipped template: ~300 a record)

_LOOP = "_reskontro_loop"          # filters the parse step wraps around loops and `~`
_VALUE = "_reskontro_value"


class TemplateRefused(SecurityError):
    """A template reads what it may not, or builds or writes too much."""


class Records:
    """Marks the file's own rows (customers, entries, matches): loops over them are not
    counted against the loop budget, since the ledger bounds them (they raise the budgets)."""


# --- the loader ----------------------------------------------------------------------------------
class TemplateLoader(FileSystemLoader):
    """Regular files inside one folder, and nothing else (see the module doc)."""

    def __init__(self, folder: Path | str):
        super().__init__(str(folder), followlinks=False)
        self.folder = Path(folder)

    def get_source(self, environment, template: str):
        pieces = self._pieces(template)
        try:
            fd = os.open(self.folder, os.O_RDONLY | os.O_DIRECTORY)
        except OSError:
            raise TemplateNotFound(template) from None
        try:
            for i, piece in enumerate(pieces):
                last = i == len(pieces) - 1
                flags = (os.O_RDONLY | os.O_NONBLOCK) if last else (os.O_RDONLY | os.O_DIRECTORY)
                try:
                    nxt = os.open(piece, flags | os.O_NOFOLLOW, dir_fd=fd)
                except OSError as exc:
                    self._refuse_link(template, pieces[:i + 1], fd, piece, exc)
                    raise TemplateNotFound(template) from None
                os.close(fd)
                fd = nxt
            info = os.fstat(fd)
            path = self.folder.joinpath(*pieces)
            if not stat.S_ISREG(info.st_mode):
                raise TemplateRefused(f"template {template!r} ({path}): not a regular file")
            if info.st_nlink > 1:
                raise TemplateRefused(f"template {template!r} ({path}): a hard link (the file has {info.st_nlink} "
                                      "names); a template must be a file of its own inside the templates folder")
            if info.st_size > MAX_TEMPLATE_BYTES:
                raise TemplateRefused(f"template {template!r} ({path}): {info.st_size:,} bytes, at most "
                                      f"{MAX_TEMPLATE_BYTES:,}")
            with os.fdopen(fd, "rb") as f:
                fd = -1
                data = f.read(MAX_TEMPLATE_BYTES + 1)
        finally:
            if fd >= 0:
                os.close(fd)
        try:
            source = data.decode(self.encoding)
        except UnicodeDecodeError as exc:
            raise TemplateRefused(f"template {template!r} ({path}): not {self.encoding} (byte {exc.start + 1})") from None
        mtime = info.st_mtime_ns

        def uptodate() -> bool:
            try:
                return os.stat(path, follow_symlinks=False).st_mtime_ns == mtime
            except OSError:
                return False

        return source, str(path), uptodate

    @staticmethod
    def _pieces(template: str) -> list[str]:
        if template.startswith("/"):
            raise TemplateRefused(f"template {template!r}: an absolute path; templates are read only from the "
                                  "templates folder")
        pieces = [p for p in template.split("/") if p not in ("", ".")]
        if ".." in pieces:
            raise TemplateRefused(f"template {template!r}: '..' leads outside the templates folder; templates are "
                                  "read only from inside it")
        if not pieces:
            raise TemplateNotFound(template)
        return pieces

    def _refuse_link(self, template: str, pieces: list[str], dir_fd: int, piece: str, exc: OSError) -> None:
        """Explain an open that failed: a symbolic link (O_NOFOLLOW) is refused by name."""
        if exc.errno not in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK):
            return
        try:
            info = os.lstat(piece, dir_fd=dir_fd)
        except OSError:
            return
        path = self.folder.joinpath(*pieces)
        if stat.S_ISLNK(info.st_mode):
            kind = "folder" if len(pieces) < len(self._pieces(template)) else "file"
            raise TemplateRefused(f"template {template!r}: {path} is a symbolic link (to "
                                  f"{os.readlink(piece, dir_fd=dir_fd)!r}); a template {kind} must be a real "
                                  "one inside the templates folder") from None


# --- the environment -----------------------------------------------------------------------------
class _Budget:
    """What one render has used; the limits grow with the records read so far."""

    def __init__(self, records: Callable[[], int] = lambda: 0):
        self.records = records
        self.values = 0
        self.loops = 0

    def limit(self, budget: tuple[int, int]) -> int:
        base, per_record = budget
        return base + per_record * self.records()


def _size(value) -> int | None:
    if isinstance(value, (str, bytes, list, tuple, dict, set, frozenset)):
        return len(value)
    return None


# Methods a template may call on plain values, with a check of the size they would build for
# those that can build more than they are given. Anything else (translate, to_bytes, ...) is refused.
_STR_METHODS = frozenset((
    "capitalize", "casefold", "count", "endswith", "find", "index", "isalnum", "isalpha", "isascii",
    "isdecimal", "isdigit", "islower", "isnumeric", "isspace", "istitle", "isupper", "lower", "lstrip",
    "partition", "removeprefix", "removesuffix", "rfind", "rindex", "rpartition", "rsplit", "rstrip",
    "split", "splitlines", "startswith", "strip", "swapcase", "title", "upper", "encode", "decode",
    "center", "ljust", "rjust", "zfill", "expandtabs", "replace", "join", "format",
    "striptags", "unescape",                                          # markupsafe.Markup
))
_CONTAINER_METHODS = frozenset(("count", "index", "copy", "get", "items", "keys", "values", "isdisjoint",
                                "issubset", "issuperset", "union", "intersection", "difference",
                                "symmetric_difference"))
_NUMBER_METHODS = frozenset(("bit_length", "conjugate", "is_integer", "quantize", "is_finite", "is_signed",
                             "is_zero", "adjusted", "normalize"))
_WIDTH = re.compile(r"%(?:\([^)]*\))?[#0\- +]*(\*|\d+)?(?:\.(\*|\d+))?[hlL]?[diouxXeEfFgGcrsa%]")


class BoundedSandbox(ImmutableSandboxedEnvironment):
    """Jinja2's sandbox (lists, dicts and sets read-only) with bounds (see the module doc)."""

    intercepted_binops = frozenset(("*", "**", "+", "%"))

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.budget = _Budget()
        self.globals.pop("lipsum", None)                 # lipsum(n=10**9) writes n paragraphs
        self.globals["range"] = _range
        self.filters = {name: self._bounded_filter(name, f) for name, f in self.filters.items()}
        self.filters[_LOOP] = _count_loop
        self.filters[_VALUE] = _checked_value

    def start(self, records: Callable[[], int]) -> None:
        """A new render: budgets from zero, growing with `records()` (records read so far)."""
        self.budget = _Budget(records)

    # every value made in a template passes one of these
    def checked(self, value, what: str, template: str | None = None):
        n = _size(value)
        if n is not None:
            if n > MAX_VALUE:
                self.refuse(template, f"{what} made a value of {n:,} characters or items; at most {MAX_VALUE:,}")
            self.budget.values += n
            if self.budget.values > VALUE_BUDGET[0]:
                self._over_values(what, template)
        elif isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
            self.refuse(template, f"{what} made a number of {value.bit_length():,} bits; at most {MAX_INT_BITS:,}")
        return value

    def _over_values(self, what: str, template: str | None) -> None:
        """Past the budget's fixed part: refuse unless the records read so far allow more."""
        if self.budget.values > (limit := self.budget.limit(VALUE_BUDGET)):
            self.refuse(template, f"{what}: the template has built {self.budget.values:,} characters in all; at "
                        f"most {limit:,} for this file ({VALUE_BUDGET[0]:,} plus {VALUE_BUDGET[1]:,} a record)")

    @staticmethod
    def refuse(template: str | None, message: str):
        raise TemplateRefused(f"template {template!r}: {message}" if template else message)

    def call_binop(self, context, operator: str, left, right):
        problem = _binop_problem(operator, left, right)
        if problem:
            self.refuse(context.name, f"{_repr(left)} {operator} {_repr(right)} {problem}")
        return self.checked(self.binop_table[operator](left, right), f"{operator!r}", context.name)

    def call(__self, __context, __obj, *args, **kwargs):  # noqa: N805 - Jinja2's signature
        method = getattr(__obj, "__wrapped__", __obj)       # str.format comes wrapped by the sandbox
        owner = getattr(method, "__self__", None)
        if (isinstance(method, (types.BuiltinMethodType, types.MethodType)) and owner is not None
                and not isinstance(owner, types.ModuleType)):
            name = method.__name__
            allowed = (_STR_METHODS if isinstance(owner, (str, bytes)) else
                       _NUMBER_METHODS if isinstance(owner, (int, float)) or type(owner).__name__ == "Decimal" else
                       _CONTAINER_METHODS if isinstance(owner, (list, tuple, dict, set, frozenset)) else None)
            if allowed is not None:
                if name not in allowed:
                    __self.refuse(__context.name, f"{type(owner).__name__}.{name}() is not allowed in templates")
                if isinstance(owner, (str, bytes)):
                    n = _predict_str_method(name, owner, args, kwargs)
                    if n is not None and n > MAX_VALUE:
                        __self.refuse(__context.name, f"{name}() would make a string of {n:,} characters; at most "
                                      f"{MAX_VALUE:,}")
        return __self.checked(super().call(__context, __obj, *args, **kwargs), "a call", __context.name)

    def concat(self, pieces: Iterable[str]) -> str:
        """{% set %} blocks, macros, {% call %}: the size measured before anything is joined.
        (Not counted in the value budget: a block builds nothing up by itself, it is replaced
        each time; what could build up, `+`, `~`, filters and calls, is counted. This is the
        hot path: one {% set %} block per record in the shipped template.)"""
        if type(pieces) is not list:
            pieces = list(pieces)
        if sum(map(len, pieces)) > MAX_VALUE:
            self.refuse(None, f"a {{% set %}} block or macro made {sum(map(len, pieces)):,} characters; at most "
                        f"{MAX_VALUE:,}")
        return "".join(pieces)

    def _bounded_filter(self, name: str, f):
        pre = _FILTER_CHECKS.get(name)

        @wraps(f)
        def bounded(*args, **kwargs):
            values = args[1:] if getattr(f, "jinja_pass_arg", None) else args   # after context/env
            for a in (*values[1:], *kwargs.values()):
                if isinstance(a, int) and not isinstance(a, bool) and abs(a) > MAX_VALUE:
                    self.refuse(None, f"filter {name}: argument {a:,} is over {MAX_VALUE:,}")
            if pre is not None and values:
                n = pre(*values, **kwargs)
                if n is not None and n > MAX_VALUE:
                    self.refuse(None, f"filter {name} would make a value of {n:,} characters; at most {MAX_VALUE:,}")
            return self.checked(f(*args, **kwargs), f"filter {name}")
        return bounded

    def _parse(self, source, name, filename):
        return _Guards(name, filename).visit(super()._parse(source, name, filename))


class _Guards(NodeTransformer):
    """The parse step: every loop counted, every `~` checked, recursive loops refused."""

    def __init__(self, name, filename):
        self.name, self.filename = name, filename

    def visit_For(self, node: nodes.For) -> nodes.For:
        node = self.generic_visit(node)
        if node.recursive:
            raise TemplateSyntaxError("recursive loops are not allowed in templates", node.lineno,
                                      self.name, self.filename)
        node.iter = nodes.Filter(node.iter, _LOOP, [], [], None, None, lineno=node.lineno)
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Filter:
        return nodes.Filter(self.generic_visit(node), _VALUE, [], [], None, None, lineno=node.lineno)


def _range(*args: int) -> range:
    """Jinja2's sandbox range (at most MAX_RANGE items), refused with a TemplateRefused."""
    r = range(*args)
    if len(r) > MAX_RANGE:
        raise TemplateRefused(f"range{args} has {len(r):,} items; at most {MAX_RANGE:,}")
    return r


@pass_context
def _count_loop(context, iterable):
    if isinstance(iterable, Records):
        return iterable
    return _counted(context.environment, iterable, context.name)


def _counted(env: BoundedSandbox, iterable, template):
    budget = env.budget
    limit = budget.limit(LOOP_BUDGET)
    for item in iterable:
        budget.loops += 1
        if budget.loops > limit:
            limit = budget.limit(LOOP_BUDGET)           # (more records may have been read since)
            if budget.loops > limit:
                env.refuse(template, f"loops have gone round {budget.loops - 1:,} times; at most {limit:,} "
                           f"for this file ({LOOP_BUDGET[0]:,} plus {LOOP_BUDGET[1]} a record)")
        yield item


@pass_context
def _checked_value(context, value):
    return context.environment.checked(value, "'~'", context.name)


def _repr(value) -> str:
    text = repr(value)
    return text if len(text) <= 20 else f"<{type(value).__name__} of {_size(value) or len(text):,}>"


def _binop_problem(op: str, left, right) -> str | None:
    """What is wrong with the value the operator would build, before it is built."""
    seq = (str, bytes, list, tuple)
    n = None
    if op == "*":
        if isinstance(left, seq) and isinstance(right, int):
            n = len(left) * max(right, 0)
        elif isinstance(right, seq) and isinstance(left, int):
            n = len(right) * max(left, 0)
        elif isinstance(left, int) and isinstance(right, int):
            bits = left.bit_length() + right.bit_length()
            if bits > MAX_INT_BITS:
                return f"would make a number of about {bits:,} bits; at most {MAX_INT_BITS:,}"
    elif op == "**" and isinstance(left, int) and isinstance(right, int) and right > 0 and abs(left) > 1:
        bits = (left.bit_length() - 1) * right
        if bits > MAX_INT_BITS:
            return f"would make a number of about {bits:,} bits; at most {MAX_INT_BITS:,}"
    elif op == "+" and isinstance(left, seq) and isinstance(right, seq):
        n = len(left) + len(right)
    elif op == "%" and isinstance(left, str):
        args = right if isinstance(right, tuple) else (right,)
        n = _format_width(left, args)
    if n is not None and n > MAX_VALUE:
        return f"would make a value of {n:,} characters or items; at most {MAX_VALUE:,}"
    return None


def _arg_size(a) -> int:
    n = _size(a)
    if n is not None:
        return n
    if isinstance(a, int):
        return a.bit_length() // 3 + 2
    return 64


def _format_width(fmt: str, args) -> int:
    """An upper bound of what %-formatting builds: the format, its widths, and for each
    conversion the largest argument; a * width counts as too wide."""
    total = len(fmt)
    largest = max((_arg_size(a) for a in (*args, *(args[0].values() if args and isinstance(args[0], dict) else ()))),
                  default=0)
    for m in _WIDTH.finditer(fmt):
        total += largest
        for w in m.groups():
            if w == "*":
                return MAX_VALUE + 1
            if w:
                total += int(w) if len(w) < 12 else MAX_VALUE + 1
    return total


def _brace_width(fmt: str, args) -> int:
    """Likewise for str.format: widths in the format specs; a nested {} width counts as too wide."""
    total = len(fmt)
    largest = max((_arg_size(a) for a in args), default=0)
    try:
        for _, field, spec, _ in string.Formatter().parse(fmt):
            if field is not None:
                total += largest
            if spec:
                if "{" in spec:
                    return MAX_VALUE + 1
                total += sum(int(w) if len(w) < 12 else MAX_VALUE + 1 for w in re.findall(r"\d+", spec))
    except ValueError:
        return total                                  # a malformed format fails on its own
    return total


def _predict_str_method(name: str, s, args, kwargs) -> int | None:
    if name in ("center", "ljust", "rjust", "zfill"):
        width = args[0] if args else kwargs.get("width", 0)
        return width if isinstance(width, int) else None
    if name == "expandtabs":
        size = args[0] if args else kwargs.get("tabsize", 8)
        return len(s) + s.count("\t" if isinstance(s, str) else b"\t") * size if isinstance(size, int) else None
    if name == "replace" and len(args) >= 2:
        return _replace_size(s, args[0], args[1], args[2] if len(args) > 2 else -1)
    if name == "join" and args:
        return _join_size(s, args[0])
    if name == "format" and isinstance(s, str):
        return _brace_width(s, (*args, *kwargs.values()))
    return None


def _replace_size(s, old, new, count=-1) -> int | None:
    if not (isinstance(old, (str, bytes)) and isinstance(new, (str, bytes))):
        return None
    n = s.count(old) if old else len(s) + 1
    if isinstance(count, int) and count >= 0:
        n = min(n, count)
    return len(s) + n * max(len(new) - len(old), 0)


def _join_size(sep, items) -> int | None:
    if not isinstance(items, (list, tuple, str)):
        items = list(islice(items, MAX_VALUE + 1)) if isinstance(items, Iterable) else ()
    if len(items) > MAX_VALUE:
        return len(items)
    return len(sep) * max(len(items) - 1, 0) + sum(len(str(x)) for x in items)


def _indent_size(s, width=4, *args, **kwargs) -> int | None:
    if isinstance(width, str):
        width = len(width)
    return len(str(s)) + (str(s).count("\n") + 1) * width if isinstance(width, int) else None


# filters that can build more than they are given: the size they would build
_FILTER_CHECKS: dict[str, Callable] = {
    "center": lambda s, width=80: width if isinstance(width, int) else None,
    "indent": _indent_size,
    "replace": lambda s, old, new, count=None: _replace_size(str(s), str(old), str(new),
                                                             -1 if count is None else count),
    "join": lambda items, d="", attribute=None: _join_size(str(d), items if attribute is None else ()),
    "format": lambda s, *args, **kwargs: _format_width(s, args or (kwargs,)) if isinstance(s, str) else None,
    "wordwrap": lambda s, width=79, break_long_words=True, wrapstring=None, break_on_hyphens=True:
        len(str(s)) * (1 + len(wrapstring or "\n")),
}
