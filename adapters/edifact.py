"""Fast EDIFACT tokenizer: bytes -> numbered segments, nothing CREMUL-specific.

Why our own and not pydifact's: pydifact tokenizes character by character (about 1.5 MB/s)
and takes wrapped text at face value. Bank files are cut into 80-column records anywhere,
even inside a tag, so line breaks are removed *before* tokenising (they are never syntax),
and the whole split is done with ``str.split``, which runs in C.

Released delimiters (``?'``, ``?+``, ``?:``, ``??``) are swapped for private-use
placeholders before the split and swapped back per component afterwards, so the fast
split never cuts at an escaped delimiter.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from reskontro.domain import InputError

#: The four characters that stand in for released delimiters during the split
#: (component, element, terminator, release), all in the Unicode private-use area.
_PLACEHOLDERS = "\ue000\ue001\ue002\ue003"
_HAS_PLACEHOLDER = re.compile("[\ue000-\ue003]")
#: Trailing padding after the last terminator: BBS records are space-padded to 80
#: columns; NUL and SUB (Ctrl-Z) show up from old transfer tools.
_PADDING = " \t\x00\x1a"


@dataclass(frozen=True, slots=True)
class Delimiters:
    """The service characters of an interchange (ISO 9735 defaults; UNA overrides)."""

    component: str = ":"
    element: str = "+"
    decimal: str = ","
    release: str | None = "?"
    terminator: str = "'"


DEFAULT_DELIMITERS = Delimiters()


class Segment:
    """One segment: its tag, its data elements (each a list of components) and its
    1-based ordinal in the interchange (UNB is segment 1; UNA is not a segment)."""

    __slots__ = ("index", "tag", "elements")

    def __init__(self, index: int, tag: str, elements: list[list[str]]) -> None:
        self.index = index
        self.tag = tag
        self.elements = elements

    def get(self, element: int, component: int = 0) -> str:
        """Element ``element`` (1-based, after the tag), component ``component``
        (0-based); ``""`` when absent, so optional data needs no length checks."""
        els = self.elements
        if element > len(els):
            return ""
        comps = els[element - 1]
        return comps[component] if component < len(comps) else ""

    def where(self) -> str:
        return f"segment {self.index} ({self.tag})"

    def __repr__(self) -> str:
        return f"Segment({self.index}, {self.tag!r}, {self.elements!r})"


@dataclass(slots=True)
class Tokens:
    """What the tokenizer returns: the raw segment texts, split further only on demand.

    Splitting every segment into elements and components up front costs more than the
    whole CREMUL mapping (and the lists it makes keep the garbage collector busy), so a
    reader takes ``raw[i]`` (released delimiters are placeholders there, never delimiters)
    and splits what it needs; ``segment(n)`` builds the full Segment for segment n.
    """

    raw: list[str]         # segment texts without terminator; raw[0] is segment 1 (UNB)
    delimiters: Delimiters
    encoding: str          # "utf-8" or "iso-8859-1": what the bytes turned out to be
    has_una: bool
    escaped: bool          # the text had released characters: values need unescape()

    def __len__(self) -> int:
        return len(self.raw)

    def segment(self, index: int) -> Segment:
        """Segment ``index`` (1-based), fully split and unescaped."""
        d = self.delimiters
        parts = self.raw[index - 1].split(d.element)
        elements = [p.split(d.component) for p in parts[1:]]
        if self.escaped:
            table = _unescape_table(d)
            elements = [[c.translate(table) for c in e] for e in elements]
        return Segment(index, parts[0], elements)

    def segments(self) -> list[Segment]:
        return [self.segment(i) for i in range(1, len(self.raw) + 1)]

    def unescape(self, value: str) -> str:
        """Put released delimiters back into a value taken from ``raw``."""
        return value.translate(_unescape_table(self.delimiters)) if self.escaped else value


def decode(data: bytes) -> tuple[str, str]:
    """UTF-8 if the bytes are valid UTF-8, else ISO-8859-1 (which never fails).

    The UNB syntax identifier is not trusted: real files say UNOC (latin-1) and hold UTF-8.
    """
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return data.decode("iso-8859-1"), "iso-8859-1"


def normalise(text: str) -> str:
    """Remove every CR and LF: line breaks are transport, not syntax. Spaces stay (data)."""
    return text.replace("\r", "").replace("\n", "")


def _read_una(text: str, name: str) -> tuple[Delimiters, str]:
    if len(text) < 9:
        raise InputError(f"{name}: UNA service string advice is cut short: {text[:9]!r}")
    comp, elem, dec, rel, _reserved, term = text[3:9]
    release = None if rel == " " else rel
    specials = [comp, elem, term] + ([release] if release else [])
    if len(set(specials)) != len(specials) or any(c.isalnum() for c in specials):
        raise InputError(f"{name}: UNA declares unusable delimiters {text[:9]!r}")
    return Delimiters(comp, elem, dec, release, term), text[9:]


def _unescape_table(d: Delimiters) -> dict[int, str]:
    return {ord(p): c for p, c in zip(_PLACEHOLDERS, (d.component, d.element, d.terminator,
                                                       d.release or ""))}


def _hide_released(text: str, d: Delimiters, name: str) -> str:
    """Replace each released character by a placeholder (or by itself when it is not a
    delimiter: ``?A`` is not valid syntax, we keep ``A`` like pydifact does)."""
    rel = d.release
    to_placeholder = {d.component: _PLACEHOLDERS[0], d.element: _PLACEHOLDERS[1],
                      d.terminator: _PLACEHOLDERS[2], rel: _PLACEHOLDERS[3]}
    if text.endswith(rel) and (len(text) - len(text.rstrip(rel))) % 2 == 1:
        raise InputError(f"{name}: the file ends with a lone release character {rel!r}")
    pattern = re.compile(re.escape(rel) + "(.)", re.S)
    return pattern.sub(lambda m: to_placeholder.get(m[1], m[1]), text)


def _bad_tag_pattern(d: Delimiters) -> re.Pattern[str]:
    """Matches the terminator before the first segment whose tag is not 3 capitals/digits
    followed by an element separator or the terminator. Anchored on the terminator so
    the C regex engine jumps from one terminator to the next."""
    e, t = re.escape(d.element), re.escape(d.terminator)
    return re.compile(f"{t}(?!\\Z|[A-Z][A-Z0-9]{{2}}(?:{e}|{t}))")


def tokenize(data: bytes | str, name: str = "<bytes>") -> Tokens:
    """Split an interchange into segments. Raises InputError naming the segment.

    Checks only syntax: the text starts with UNA or UNB, every segment has a valid tag and
    the last one is terminated. Envelope counts are the message reader's job.
    """
    if isinstance(data, bytes):
        text, encoding = decode(data)
    else:
        text, encoding = data, "str"
    text = normalise(text).lstrip(" \t\ufeff")
    if not text:
        raise InputError(f"{name}: empty file")
    has_una = text.startswith("UNA")
    if has_una:
        d, text = _read_una(text, name)
    else:
        d = DEFAULT_DELIMITERS
    if not text.startswith("UNB"):
        raise InputError(f"{name}: not an EDIFACT interchange: it must start with UNA or UNB, "
                         f"found {text[:12]!r}")
    if _HAS_PLACEHOLDER.search(text):
        raise InputError(f"{name}: contains private-use characters U+E000..U+E003, "
                         "which no bank file carries")
    escaped = bool(d.release) and d.release in text
    if escaped:
        text = _hide_released(text, d, name)
    text = text.rstrip(_PADDING)
    raws = text.split(d.terminator)
    if raws[-1]:
        # whatever follows the last terminator is a segment cut off mid-way
        raise InputError(f"{name}: segment {len(raws)} ({raws[-1][:3]}) is not terminated "
                         f"with {d.terminator!r}: file truncated? (ends {raws[-1][-30:]!r})")
    if text[3:4] not in (d.element, d.terminator):
        raise InputError(f"{name}: segment 1: invalid segment tag in {text[:20]!r}")
    bad = _bad_tag_pattern(d).search(text)
    if bad is not None:
        index = text.count(d.terminator, 0, bad.start()) + 2
        snippet = text[bad.end():bad.end() + 20].split(d.terminator)[0]
        if not snippet:
            raise InputError(f"{name}: segment {index} is empty")
        raise InputError(f"{name}: segment {index}: invalid segment tag in {snippet!r}")
    raws.pop()
    return Tokens(raws, d, encoding, has_una, escaped)


def is_complete(data: bytes) -> bool:
    """True when the interchange ends with a terminated UNZ segment (looks at the tail only).

    A file still being written or cut off in transfer ends elsewhere.
    """
    head, _ = decode(data[:9])
    d = DEFAULT_DELIMITERS
    if head.startswith("UNA") and len(head) >= 9:
        try:
            d, _ = _read_una(head, "")
        except InputError:
            return False
    tail, _ = decode(data[-4096:])
    tail = normalise(tail).rstrip(_PADDING)
    term = d.terminator
    if not tail.endswith(term):
        return False
    body = tail[:-1]
    if d.release and body.endswith(d.release):
        run = len(body) - len(body.rstrip(d.release))
        if run % 2 == 1:        # the final terminator is released, i.e. data
            return False
    last = body.rsplit(term, 1)[-1]
    return last.startswith("UNZ" + d.element) or last == "UNZ"
