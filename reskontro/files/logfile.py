"""The site's log file (`paths.log_file`): created private (0600; its folder 0700 when new).
One handler per process; it never prints a traceback of its own (a full disk under the log
must not turn a one-line error into a screenful).

One line per event, with the time in ISO 8601 and its zone (the site's `schedule.timezone`):
``2026-11-30T18:00:01+01:00 INFO reskontro.run: export: ok: …``; or, with ``[log] format =
"json"``, one JSON object per line (``time``, ``level``, ``logger``, ``message``, and
``traceback`` where there is one). A traceback is never part of a warning or an error line: it
is its own DEBUG record (kept at the default level, since it is what a bug report needs), and
in the text format its line breaks are written ``\\n``, so that it stays one line too.
"""
from __future__ import annotations

import json
import logging
import sys
from datetime import datetime, tzinfo
from pathlib import Path

from reskontro.errors import describe
from reskontro.files.private import create_private, private_dir

_MINE = "_reskontro_site_log"
LEVELS = {"info": logging.INFO, "debug": logging.DEBUG}


def _time(record: logging.LogRecord, tz: tzinfo | None) -> str:
    t = datetime.fromtimestamp(record.created, tz) if tz is not None else \
        datetime.fromtimestamp(record.created).astimezone()
    return t.isoformat(timespec="seconds")


class OneLineFormatter(logging.Formatter):
    """`TIME LEVEL LOGGER: MESSAGE`, the message's own line breaks written as \\n."""

    def __init__(self, tz: tzinfo | None = None):
        super().__init__()
        self.tz = tz

    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage()
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        if record.stack_info:
            text += "\n" + self.formatStack(record.stack_info)
        text = text.replace("\\", "\\\\").replace("\r", "\\r").replace("\n", "\\n")
        return f"{_time(record, self.tz)} {record.levelname} {record.name}: {text}"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message (and traceback)."""

    def __init__(self, tz: tzinfo | None = None):
        super().__init__()
        self.tz = tz

    def format(self, record: logging.LogRecord) -> str:
        out = {"time": _time(record, self.tz), "level": record.levelname, "logger": record.name,
               "message": record.getMessage()}
        if record.exc_info:
            out["traceback"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


class _Threshold(logging.Filter):
    """The configured level, and at any level the tracebacks (DEBUG records with exc_info)."""

    def __init__(self, level: int):
        super().__init__()
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= self.level or record.exc_info is not None


class _SiteLog(logging.FileHandler):
    warned = False

    def close(self) -> None:
        try:
            super().close()
        except OSError:    # what a full disk would not take is lost; closing goes on
            self.stream = None

    def handleError(self, record: logging.LogRecord) -> None:
        # A debug record (a traceback kept for the curious) that cannot be written is dropped
        # quietly; otherwise one warning line, once.
        if record.levelno <= logging.DEBUG or self.warned:
            return
        self.warned = True
        try:
            sys.stderr.write(f"warning: cannot write the log: {describe(sys.exc_info()[1])}\n")
        except Exception:   # noqa: BLE001 - nowhere left to report to
            pass


def _configure(handler: logging.Handler, fmt: str, level: str, tz: tzinfo | None) -> None:
    handler.setFormatter(JsonFormatter(tz) if fmt == "json" else OneLineFormatter(tz))
    for f in handler.filters[:]:
        handler.removeFilter(f)
    handler.addFilter(_Threshold(LEVELS.get(level, logging.INFO)))


def setup_logging(log_file: Path, *, fmt: str = "text", level: str = "info",
                  tz: tzinfo | None = None) -> logging.Handler:
    """Log 'reskontro' to `log_file` (`level` and up, and the tracebacks); idempotent (the
    format, level and zone given last hold)."""
    root = logging.getLogger("reskontro")
    for h in root.handlers[:]:
        if getattr(h, _MINE, False):
            if Path(h.baseFilename) == Path(log_file).absolute():
                _configure(h, fmt, level, tz)
                return h
            root.removeHandler(h)
            h.close()
    private_dir(log_file.parent)
    create_private(log_file)
    handler = _SiteLog(log_file, encoding="utf-8")
    setattr(handler, _MINE, True)
    _configure(handler, fmt, level, tz)
    root.setLevel(logging.DEBUG)      # the handler's filter chooses; a traceback is a DEBUG record
    root.addHandler(handler)
    return handler


def setup_site_logging(config) -> logging.Handler:
    """setup_logging with a site's `[paths] log_file`, `[log]` and `[schedule] timezone`."""
    return setup_logging(config.log_file, fmt=config.log.format, level=config.log.level, tz=config.tz)
