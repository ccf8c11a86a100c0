"""A reskontro module run as a helper process of the export (the check and decide processes).

Started with ``python -m`` (not forked: a fork would inherit the run lock and the open
database), finding this package even when it is not installed; its stderr kept aside so a
failure can say why in one line.
"""
from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)


class HelperProcess:
    def __init__(self, module: str, *args: str, stdout: int = subprocess.DEVNULL,
                 pass_fds: tuple[int, ...] = ()) -> None:
        self._stderr = tempfile.TemporaryFile()
        package_root = str(Path(__file__).resolve().parents[2])   # the folder holding reskontro/
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            p for p in (package_root, os.environ.get("PYTHONPATH")) if p))
        self._proc: subprocess.Popen | None = None
        self.failed_to_start: str | None = None
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", module, *args], stdin=subprocess.PIPE, stdout=stdout,
                stderr=self._stderr, env=env, pass_fds=pass_fds)
        except OSError as e:     # no interpreter to start: the caller does the work itself
            self.failed_to_start = str(e)
            log.warning("could not start %s (%s); working without it", module, e)

    def _why(self, code: int) -> str:
        """The last line the child wrote to stderr (its exception), else its exit status."""
        self._stderr.seek(0)
        lines = self._stderr.read().decode(errors="replace").strip().splitlines()
        return lines[-1] if lines else f"exit status {code}"

    def close(self) -> None:
        """Stop the child if it still runs (its answer is no longer wanted)."""
        proc, self._proc = self._proc, None
        if proc is not None:
            proc.kill()
            proc.wait()
            for stream in (proc.stdin, proc.stdout):
                if stream is not None:
                    try:
                        stream.close()
                    except OSError:
                        pass      # a pipe to a killed child
        self._stderr.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
