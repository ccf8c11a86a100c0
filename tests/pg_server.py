"""pytest plugin: a real PostgreSQL for every test run (loaded by conftest.py via pytest_plugins).

`pg_cluster` (session): a throwaway cluster, initdb + pg_ctl in a temporary folder, on a unix
socket in that folder only (reskontro.testing.pg_cluster; `postgresql` installed with apt-get
where initdb is missing). `pg_url` (function): a fresh empty database in it, dropped after.
Never skipped: a machine where PostgreSQL cannot be had fails these tests, saying why.
"""
from __future__ import annotations

import itertools
import os
from collections.abc import Iterator

import pytest

from reskontro.testing.pg_cluster import PgCluster

_numbers = itertools.count(1)


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    cluster = PgCluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def pg_db(pg_cluster: PgCluster) -> Iterator[str]:
    """The name of a fresh, empty database of the session's cluster (dropped after the test)."""
    name = f"t{os.getpid()}_{next(_numbers)}"
    pg_cluster.create_database(name)
    try:
        yield name
    finally:
        pg_cluster.drop_database(name)


@pytest.fixture
def pg_url(pg_cluster: PgCluster, pg_db: str) -> str:
    """An SQLAlchemy URL (psycopg) of a fresh, empty database."""
    return pg_cluster.url(pg_db)
