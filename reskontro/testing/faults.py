"""Fault injection for crash tests: RESKONTRO_FAULT=<point> kills the process (SIGKILL) when it
reaches that point, as a power cut or an OOM kill would. Unset in normal use: a no-op."""
from __future__ import annotations

import os
import signal


def point(name: str) -> None:
    if os.environ.get("RESKONTRO_FAULT") == name:
        os.kill(os.getpid(), signal.SIGKILL)
