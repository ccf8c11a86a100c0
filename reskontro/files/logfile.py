"""The site's log file (`paths.log_file`): created private (0600; its folder 0700 when new).
One handler per process; it never prints a traceback of its own (a full disk under the log
must not turn a one-line error into a screenful)."""
from __future__ import annotations

import logging
import sys
from pathlib import Path

from reskontro.errors import describe
from reskontro.files.private import create_private, private_dir

_MINE = "_reskontro_site_log"


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


def setup_logging(log_file: Path) -> logging.Handler:
    """Log 'reskontro' (INFO; the CLI's tracebacks at DEBUG) to `log_file`; idempotent."""
    root = logging.getLogger("reskontro")
    for h in root.handlers[:]:
        if getattr(h, _MINE, False):
            if Path(h.baseFilename) == Path(log_file).absolute():
                return h
            root.removeHandler(h)
            h.close()
    private_dir(log_file.parent)
    create_private(log_file)
    handler = _SiteLog(log_file, encoding="utf-8")
    setattr(handler, _MINE, True)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.setLevel(logging.INFO)
    logging.getLogger("reskontro.cli").setLevel(logging.DEBUG)
    root.addHandler(handler)
    return handler
