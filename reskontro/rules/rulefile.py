"""Rule files: YAML (safe loader, with line numbers) into plain rule data, or problems with lines.

A rule file::

    default: {decision: wait, reason: ...}      # when no rule decides
    rules:
      - id: invoice-not-invoiced                # unique
        when: {entry_type: invoice, status: draft}
        decision: wait                          # transfer | wait | exclude | hold
        reason: Drafts go once they are invoiced.
      - id: warn-erp-dunning
        when: {entry_type: invoice, dunning_level: {gt: 0}}
        warning: The ERP still sends reminders.  # warnings never decide

A condition is ``field: value`` (equal), ``field: [a, b]`` (one of), or ``field: {op: value}``
with op one of not, in, not_in, lt, le, gt, ge (lt..ge: numbers and dates). ``any: [{...},
{...}]`` inside ``when`` holds alternatives, one of which must hold as well. The customer's
tags take their own operators: ``tags: {has: word}``, ``has_not: word``, ``has_any: [a, b]``,
``has_none: [a, b]`` (``tags: word`` is has, ``tags: [a, b]`` is has_any).
"""
from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

import yaml
import yaml.composer
import yaml.constructor
import yaml.parser
import yaml.reader
import yaml.resolver
import yaml.scanner
from yaml.composer import ComposerError
from yaml.constructor import ConstructorError

from reskontro.domain import DECISIONS
from reskontro.rules.facts import FIELDS, literal, number_value

OPS = ("eq", "not", "in", "not_in", "lt", "le", "gt", "ge")
WORD_OPS = ("has", "has_not", "has_any", "has_none")   # the words fields (tags)
RULE_KEYS = ("id", "when", "decision", "warning", "reason")
TOP_KEYS = ("default", "rules")

# Bounds on what a rule file may hold, so that no file (however odd, or hostile) makes lint or
# the engine run for long or use much memory. A real file is far inside every one of them.
MAX_BYTES = 2 * 1024 * 1024   # about 6,000 rules as they are written in rules/transfer.yaml
MAX_RULES = 5000              # lint compares each deciding rule with the earlier ones
MAX_DEPTH = 20                # YAML nesting, values included (a rule file needs 9 levels)
MAX_VALUES = 64               # values in one in / not_in list
MAX_ALTERNATIVES = 32         # alternatives in one any
MAX_NUMBER = 2 ** 53 - 1      # |number| in fact units (øre): exact as a double in durable_rules


@dataclass(frozen=True)
class Test:
    field: str
    op: str          # one of OPS, or of WORD_OPS for a words field (tags)
    value: object    # scalar, or a tuple for in / not_in / has_any / has_none; numbers as fact
                     # units (øre for amount, an ordinal for a date)


@dataclass(frozen=True)
class Rule:
    id: str
    line: int
    when: tuple[Test, ...]
    any: tuple[tuple[Test, ...], ...] = ()
    decision: str | None = None
    warning: str | None = None
    reason: str = ""

    @property
    def text(self) -> str:
        return self.warning if self.warning is not None else self.reason


@dataclass(frozen=True)
class RuleFile:
    path: Path
    rules: tuple[Rule, ...]
    default_decision: str
    default_reason: str
    default_line: int = 0

    @property
    def deciding(self) -> tuple[Rule, ...]:
        return tuple(r for r in self.rules if r.decision is not None)

    @property
    def warnings(self) -> tuple[Rule, ...]:
        return tuple(r for r in self.rules if r.warning is not None)


@dataclass(frozen=True)
class Problem:
    path: Path
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}"


class RuleFileError(ValueError):
    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("\n".join(map(str, problems)))


class _Lines(dict):
    """A mapping that remembers the line of each key (1-based)."""
    line: int = 0
    key_lines: dict


try:                                    # libyaml's parser: 10x faster on a long file
    from yaml._yaml import CParser as _Parser
except ImportError:                     # pragma: no cover - PyYAML built without libyaml
    class _Parser(yaml.reader.Reader, yaml.scanner.Scanner, yaml.parser.Parser):
        def __init__(self, stream):
            yaml.reader.Reader.__init__(self, stream)
            yaml.scanner.Scanner.__init__(self)
            yaml.parser.Parser.__init__(self)


class _Loader(yaml.composer.Composer, _Parser, yaml.constructor.SafeConstructor, yaml.resolver.Resolver):
    """A safe loader that keeps line numbers and reports duplicate keys instead of dropping
    them. Events come from the parser (libyaml where present); nodes are composed here, in
    Python, so that nesting and aliases are checked before anything is built."""

    def __init__(self, stream):
        _Parser.__init__(self, stream)
        yaml.composer.Composer.__init__(self)
        yaml.constructor.SafeConstructor.__init__(self)
        yaml.resolver.Resolver.__init__(self)
        self.duplicates: list[tuple[int, str]] = []
        self._depth = 0

    def construct_object(self, node, deep=False):
        try:
            return super().construct_object(node, deep)
        except (ValueError, OverflowError) as exc:    # e.g. a date 2026-13-45: name its line
            raise ConstructorError(None, None, str(exc), node.start_mark) from None

    def compose_node(self, parent, index):
        # Aliases are refused: `*name` repeats a whole subtree, and a few nested ones make a
        # small file expand into billions of conditions. Deep nesting is refused before the
        # (recursive) composer and constructor reach Python's recursion limit.
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise ComposerError(None, None, f"aliases (*{event.anchor}) are not allowed in a rule file; "
                                "write the condition out", event.start_mark)
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise ComposerError(None, None, f"nested more than {MAX_DEPTH} levels deep (a rule file "
                                    "needs 9)", self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node, deep=False):
        out = _Lines()
        out.line = node.start_mark.line + 1
        out.key_lines = {}
        for key_node, value_node in node.value:
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, (dict, list)):
                raise ConstructorError(None, None, "a key must be a plain name, not a mapping or a list",
                                       key_node.start_mark)
            if key in out:
                self.duplicates.append((key_node.start_mark.line + 1, str(key)))
            out[key] = self.construct_object(value_node, deep=True)
            out.key_lines[key] = key_node.start_mark.line + 1
        return out


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _Loader.construct_mapping)


class _YamlInt(int):
    """A YAML integer that remembers how it was written (`1_000`, `0x10`, `1:30` are YAML
    ints too): amounts are read from that text by the one amount reader."""
    text: str


class _YamlFloat(float):
    text: str


def _with_text(kind: type, construct):
    def build(loader, node):
        value = kind(construct(loader, node))
        value.text = node.value
        return value
    return build


def _timestamp(loader, node):
    """A YAML date; one that is no date (2026-13-01) stays text, for the field to refuse."""
    try:
        return yaml.SafeLoader.construct_yaml_timestamp(loader, node)
    except ValueError:
        return node.value


_Loader.add_constructor("tag:yaml.org,2002:timestamp", _timestamp)
_Loader.add_constructor("tag:yaml.org,2002:int", _with_text(_YamlInt, yaml.SafeLoader.construct_yaml_int))
_Loader.add_constructor("tag:yaml.org,2002:float", _with_text(_YamlFloat, yaml.SafeLoader.construct_yaml_float))


def yaml_problem(exc: yaml.YAMLError, text: str | None = None) -> tuple[int, str]:
    """(line, message) for a YAML syntax error: where (line and column, and the block it was
    in), what, and what usually causes it, instead of the parser's own text."""
    mark = getattr(exc, "problem_mark", None)
    what = getattr(exc, "problem", None) or str(exc)
    if mark is None:    # a character YAML does not take (ReaderError): its position, not a mark
        line = text.count("\n", 0, getattr(exc, "position", 0)) + 1 if text else 1
        return line, f"YAML error: {what}"
    if not isinstance(exc, (yaml.scanner.ScannerError, yaml.parser.ParserError)) or "nesting depth" in what:
        # a rule file's own bounds (aliases, depth, keys, numbers): the message says it all
        return mark.line + 1, f"YAML error: {what}"
    where = f"column {mark.column + 1}"
    lines = (text or "").splitlines()
    at_tab = mark.line < len(lines) and lines[mark.line][mark.column:mark.column + 1] == "\t"
    if at_tab and "'\\t'" not in what:
        what = what.replace("found character that", "found character '\\t' that")   # say which one
    ctx, cmark = getattr(exc, "context", None), getattr(exc, "context_mark", None)
    if ctx and cmark is not None and cmark.line != mark.line:
        where += f" ({ctx.removeprefix('while ')} that starts on line {cmark.line + 1})"
    if "\\t" in what or "'\t'" in what:
        hint = "a tab: YAML indents with spaces only"
    elif what.startswith("expected <block end>") or "did not find expected" in what:
        hint = ("this line is indented differently from the lines of its block: align it with "
                "the keys (or the `- ` items) above it, with spaces")
    elif "mapping values are not allowed" in what:
        hint = ("a `key: value` where YAML expected a plain value: this line is probably indented "
                "more than the keys above it (align it with them), or a value holding ': ' needs quotes")
    elif "could not find expected ':'" in what:
        hint = "a key without its ':', or a line meant to continue the one above without indentation"
    elif "end of stream" in what:
        hint = "a quote or bracket opened and never closed"
    else:
        hint = "check the indentation (spaces, siblings aligned) and the quotes"
    return mark.line + 1, f"YAML error at {where}: {what}; hint: {hint}"


def _line(obj, key=None, default: int = 1) -> int:
    if isinstance(obj, _Lines):
        return obj.key_lines.get(key, obj.line) if key is not None else obj.line
    return default


class _Reader:
    def __init__(self, path: Path):
        self.path = path
        self.problems: list[Problem] = []

    def problem(self, line: int, message: str) -> None:
        self.problems.append(Problem(self.path, line, message))

    def value(self, field: str, raw, line: int):
        """Check one literal against the field's vocabulary; return it in fact units."""
        spec = FIELDS[field]
        if spec.kind == "bool":
            if not isinstance(raw, bool):
                self.problem(line, f"{field}: {raw!r} must be true or false")
                return None
            return raw
        if spec.kind == "enum":
            if not isinstance(raw, str) or raw not in spec.values:
                self.problem(line, f"{field}: {raw!r} is not a known value (known: {', '.join(spec.values)})")
                return None
            return raw
        try:
            value = number_value(spec, raw) if spec.kind == "number" else literal(spec, raw)
        except ValueError as exc:
            self.problem(line, f"{field}: {exc}")
            return None
        if spec.kind == "number" and abs(value) > MAX_NUMBER:
            self.problem(line, f"{field}: {raw!r} is out of range (at most {MAX_NUMBER // spec.scale:,} "
                         "either way)")
            return None
        return value

    def tests(self, when, line: int) -> tuple[tuple[Test, ...], tuple[tuple[Test, ...], ...]]:
        if when is None:
            return (), ()
        if not isinstance(when, dict):
            self.problem(line, "when: must be a mapping of field: condition")
            return (), ()
        tests: list[Test] = []
        alternatives: list[tuple[Test, ...]] = []
        for field, cond in when.items():
            fline = _line(when, field, line)
            if field == "any":
                if not isinstance(cond, list) or not cond:
                    self.problem(fline, "any: must be a list of one or more condition mappings")
                    continue
                if len(cond) > MAX_ALTERNATIVES:
                    self.problem(fline, f"any: {len(cond)} alternatives; at most {MAX_ALTERNATIVES} in one rule "
                                 "(split the rule in several)")
                    continue
                for alt in cond:
                    if not isinstance(alt, dict) or "any" in alt:
                        self.problem(_line(alt, None, fline), "any: each alternative must be a mapping of field: condition (no nested any)")
                        continue
                    inner, _ = self.tests(alt, _line(alt, None, fline))
                    alternatives.append(inner)
                continue
            if field not in FIELDS:
                self.problem(fline, f"unknown field {field!r} (known: {', '.join(FIELDS)})")
                continue
            if FIELDS[field].kind == "words":
                tests.extend(self.word_tests(field, cond, fline))
                continue
            if isinstance(cond, list):
                cond = {"in": cond}
            elif not isinstance(cond, dict):
                cond = {"eq": cond}
            for op, raw in cond.items():
                oline = _line(cond, op, fline)
                if op not in OPS:
                    self.problem(oline, f"{field}: unknown operator {op!r} (known: {', '.join(OPS)})")
                    continue
                if op in ("in", "not_in"):
                    if not isinstance(raw, list) or not raw:
                        self.problem(oline, f"{field}: {op} needs a non-empty list")
                        continue
                    if len(raw) > MAX_VALUES:
                        self.problem(oline, f"{field}: {op} has {len(raw)} values; at most {MAX_VALUES} in one list "
                                     "(split the rule in several)")
                        continue
                    vals = tuple(self.value(field, v, oline) for v in raw)
                    if None not in vals:
                        tests.append(Test(field, op, vals))
                    continue
                if op in ("lt", "le", "gt", "ge") and FIELDS[field].kind not in ("number", "date"):
                    self.problem(oline, f"{field}: {op} compares numbers; {field} is {FIELDS[field].kind}")
                    continue
                v = self.value(field, raw, oline)
                if v is not None:
                    tests.append(Test(field, op, v))
        return tuple(tests), tuple(alternatives)

    def word_tests(self, field: str, cond, line: int) -> list[Test]:
        """The tests of a words field (tags): has, has_not (a word), has_any, has_none (a list)."""
        if isinstance(cond, list):
            cond = {"has_any": cond}
        elif not isinstance(cond, dict):
            cond = {"has": cond}
        out = []
        for op, raw in cond.items():
            oline = _line(cond, op, line)
            if op not in WORD_OPS:
                self.problem(oline, f"{field}: unknown operator {op!r} for tags (known: {', '.join(WORD_OPS)})")
                continue
            if op in ("has_any", "has_none"):
                if not isinstance(raw, list) or not raw:
                    self.problem(oline, f"{field}: {op} needs a non-empty list of words")
                    continue
                words = tuple(self.value(field, w, oline) for w in raw)
                if None not in words:
                    out.append(Test(field, op, tuple(dict.fromkeys(words))))
                continue
            if isinstance(raw, list):
                self.problem(oline, f"{field}: {op} takes one word (for several: has_any, has_none, "
                             "or one rule per word)")
                continue
            w = self.value(field, raw, oline)
            if w is not None:
                out.append(Test(field, op, w))
        return out


def parse_rule_text(text: str, path: Path) -> tuple[RuleFile | None, list[Problem]]:
    """Parse rule-file text; returns the rules (None if unusable) and every problem found."""
    r = _Reader(path)
    if len(text) > MAX_BYTES:
        r.problem(1, f"the text is {len(text):,} characters; a rule file may be at most "
                  f"{MAX_BYTES // 1024 // 1024} MiB")
        return None, r.problems
    loader = None
    try:
        loader = _Loader(text)       # refuses a character YAML does not take (ReaderError)
        doc = loader.get_single_data()
    except yaml.YAMLError as exc:
        r.problem(*yaml_problem(exc, text))
        return None, r.problems
    except (RecursionError, MemoryError) as exc:     # (bounded above; never a traceback)
        r.problem(1, f"YAML error: {exc!r}")
        return None, r.problems
    finally:
        if loader is not None:
            loader.dispose()
    for line, key in loader.duplicates:
        r.problem(line, f"key {key!r} appears twice in the same mapping (the first would be ignored)")
    if not isinstance(doc, dict):
        r.problem(1, "a rule file is a mapping with 'default' and 'rules'")
        return None, r.problems
    for key in doc:
        if key not in TOP_KEYS:
            r.problem(_line(doc, key), f"unknown key {key!r} (known: {', '.join(TOP_KEYS)})")

    default = doc.get("default")
    dline = _line(doc, "default")
    d_decision, d_reason = "wait", ""
    if not isinstance(default, dict):
        r.problem(dline, "default: required, a mapping with decision and reason")
    else:
        for key in default:
            if key not in ("decision", "reason"):
                r.problem(_line(default, key), f"default: unknown key {key!r} (known: decision, reason)")
        d_decision = default.get("decision")
        d_reason = default.get("reason") or ""
        if d_decision not in DECISIONS:
            r.problem(_line(default, "decision", dline), f"default: decision {d_decision!r} is not one of {', '.join(DECISIONS)}")
        if not isinstance(d_reason, str) or not d_reason.strip():
            r.problem(dline, "default: reason is required, in plain words")

    rules: list[Rule] = []
    seen: dict[str, int] = {}
    raw_rules = doc.get("rules")
    if not isinstance(raw_rules, list):
        r.problem(_line(doc, "rules"), "rules: required, a list of rules")
        raw_rules = []
    if len(raw_rules) > MAX_RULES:
        r.problem(_line(doc, "rules"), f"rules: {len(raw_rules):,} rules; a rule file may hold at most "
                  f"{MAX_RULES:,} (lint compares every rule with the rules before it)")
        return None, r.problems
    for raw in raw_rules:
        if not isinstance(raw, dict):
            r.problem(_line(doc, "rules"), f"each rule must be a mapping, not {raw!r}")
            continue
        line = raw.line
        for key in raw:
            if key not in RULE_KEYS:
                r.problem(_line(raw, key), f"unknown key {key!r} (known: {', '.join(RULE_KEYS)})")
        rid = raw.get("id")
        if not isinstance(rid, str) or not rid.strip():
            r.problem(line, "id: every rule needs an id")
            rid = f"<rule at line {line}>"
        elif rid in seen:
            r.problem(_line(raw, "id"), f"duplicate id {rid!r} (first at line {seen[rid]})")
        else:
            seen[rid] = line
        decision, warning = raw.get("decision"), raw.get("warning")
        reason = raw.get("reason")
        if decision is None and warning is None:
            r.problem(line, f"{rid}: needs a decision ({', '.join(DECISIONS)}) or a warning")
        if decision is not None and warning is not None:
            r.problem(line, f"{rid}: has both decision and warning; a warning never decides, split it in two rules")
        if decision is not None and decision not in DECISIONS:
            r.problem(_line(raw, "decision"), f"{rid}: unknown decision {decision!r} (known: {', '.join(DECISIONS)})")
        if decision is not None and (not isinstance(reason, str) or not reason.strip()):
            r.problem(line, f"{rid}: reason is required with a decision, in plain words")
        if warning is not None and (not isinstance(warning, str) or not warning.strip()):
            r.problem(_line(raw, "warning"), f"{rid}: warning must be a text")
        if "when" not in raw:
            r.problem(line, f"{rid}: when is required (use when: {{}} on purpose to match every entry)")
        elif raw["when"] is None:     # `when:` left empty would match every entry
            r.problem(_line(raw, "when"), f"{rid}: when is empty (use when: {{}} on purpose to "
                      "match every entry)")
        tests, alternatives = r.tests(raw.get("when"), _line(raw, "when", line))
        rules.append(Rule(id=rid, line=line, when=tests, any=alternatives,
                          decision=decision if decision in DECISIONS else None,
                          warning=warning if isinstance(warning, str) else None,
                          reason=reason if isinstance(reason, str) else (warning or "")))
    if r.problems:
        return None, r.problems
    return RuleFile(path, tuple(rules), d_decision, d_reason.strip(), dline), []


def read_rule_text(path: Path) -> str:
    """The file's text: a regular file of at most MAX_BYTES in UTF-8, else RuleFileError."""
    too_big = f"a rule file may be at most {MAX_BYTES // 1024 // 1024} MiB"
    try:
        # (non-blocking: a FIFO put where the rule file should be must not hang the command)
        with os.fdopen(os.open(path, os.O_RDONLY | os.O_NONBLOCK), "rb") as f:
            info = os.fstat(f.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise RuleFileError([Problem(path, 1, "not a regular file")])
            if info.st_size > MAX_BYTES:
                raise RuleFileError([Problem(path, 1, f"the file is {info.st_size:,} bytes; {too_big}")])
            data = f.read(MAX_BYTES + 1)          # (it may have grown since)
    except OSError as exc:
        raise RuleFileError([Problem(path, 0, f"cannot read: {exc.strerror}")]) from None
    if len(data) > MAX_BYTES:
        raise RuleFileError([Problem(path, 1, f"the file is over {MAX_BYTES:,} bytes; {too_big}")])
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise RuleFileError([Problem(path, line, f"not UTF-8 text (byte {exc.start + 1} of the file)")]) from None


def load_rule_file(path: Path) -> RuleFile:
    """Load and check a rule file; raise RuleFileError listing every problem with its line."""
    rf, problems = parse_rule_text(read_rule_text(path), path)
    if problems:
        raise RuleFileError(problems)
    return rf
