"""Shared fixtures. Plugin modules in tests/ (the sshd fixture, the receiver model, PostgreSQL) load here."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
CORPUS = ROOT.parent / "shared" / "corpus"

if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

pytest_plugins = [m for m in ("sshd_server", "receiver_model", "pg_server", "web_browser")
                  if importlib.util.find_spec(m)]


@pytest.fixture
def corpus() -> Path:
    """The real bank files of ../shared/corpus (never copied into the repo)."""
    if not CORPUS.is_dir():
        pytest.skip(f"corpus folder {CORPUS} is absent: the real bank files live outside the repo")
    return CORPUS


@pytest.fixture(scope="session")
def base_url() -> None:
    """No base URL for the browser tests: each names its own server (this overrides
    pytest-base-url's fixture, which this pytest warns about)."""
    return None
