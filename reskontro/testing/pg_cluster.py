"""A throwaway PostgreSQL cluster for the tests and the fleet benchmark: `initdb` + `pg_ctl` in a
temporary folder, listening on a unix socket in that folder only (no TCP at all).

Everything lives in the one folder (data, socket, log); nothing global is touched except,
where initdb is missing, installing the `postgresql` package with apt-get (reskontro.testing.apt).
As root, PostgreSQL refuses to run: the folder is then given to the `postgres` system user (or
`nobody`) and initdb/pg_ctl run as that user (runuser). The cluster's superuser is `postgres`,
trusted on the socket (nobody else can reach the folder).
"""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

from reskontro.testing.apt import Unavailable, ensure_package

PORT = 5432          # only the socket's name (.s.PGSQL.5432) in our own folder: no TCP port is opened
SUPERUSER = "postgres"


class PostgresUnavailable(RuntimeError):
    """No initdb/pg_ctl, and none could be installed; or the cluster did not come up."""


def find_bin(name: str) -> Path | None:
    candidates = [shutil.which(name), f"/usr/local/bin/{name}",
                  *sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)]
    for c in candidates:
        if c and os.path.isfile(c) and os.access(c, os.X_OK):
            return Path(c)
    return None


def ensure_postgresql() -> tuple[Path, Path]:
    """(initdb, pg_ctl), installing Debian's `postgresql` where missing."""
    try:
        initdb = ensure_package("postgresql", lambda: find_bin("initdb"), what="PostgreSQL's initdb",
                                no_service_start=True)
    except Unavailable as exc:
        raise PostgresUnavailable(str(exc)) from None
    pg_ctl = find_bin("pg_ctl") or initdb.parent / "pg_ctl"
    if not pg_ctl.is_file():
        raise PostgresUnavailable(f"initdb at {initdb} but no pg_ctl beside it")
    return initdb, pg_ctl


def _run_as() -> str | None:
    """The user the cluster runs as when we are root (PostgreSQL refuses root); None: ourselves."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    raise PostgresUnavailable("running as root and there is neither a `postgres` nor a `nobody` user "
                              "to run PostgreSQL as")


class PgCluster:
    def __init__(self, folder: Path, initdb: Path, pg_ctl: Path, user: str | None) -> None:
        self.folder = folder
        self.data = folder / "data"
        self.log = folder / "postgres.log"
        self.initdb, self.pg_ctl, self.user = initdb, pg_ctl, user

    @classmethod
    def start(cls, parent: Path | None = None, timeout: float = 120.0) -> "PgCluster":
        initdb, pg_ctl = ensure_postgresql()
        user = _run_as()
        # A folder of its own under /tmp (world-traversable), never under a 0700 pytest folder the
        # postgres user could not enter.
        folder = Path(tempfile.mkdtemp(prefix="rk-pg-", dir=parent))
        if user is not None:
            pw = pwd.getpwnam(user)
            os.chown(folder, pw.pw_uid, pw.pw_gid)
        folder.chmod(0o700)
        cluster = cls(folder, initdb, pg_ctl, user)
        try:
            cluster._as([str(initdb), "-D", str(cluster.data), "-U", SUPERUSER, "--auth=trust",
                         "--encoding=UTF8", "--locale=C", "--no-sync"], timeout)
            conf = cluster.data / "postgresql.conf"
            with open(conf, "a", encoding="utf-8") as f:
                f.write(f"\n# reskontro test cluster: the socket in its own folder, no TCP\n"
                        f"listen_addresses = ''\nunix_socket_directories = '{folder}'\nport = {PORT}\n"
                        "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
                        "max_connections = 200\nshared_buffers = 64MB\n")
            cluster._as([str(pg_ctl), "-D", str(cluster.data), "-l", str(cluster.log), "-w", "-t",
                         str(int(timeout)), "start"], timeout + 10)
        except BaseException:
            cluster.stop()
            raise
        return cluster

    def _as(self, cmd: list[str], timeout: float) -> None:
        if self.user is not None:
            cmd = ["runuser", "-u", self.user, "--", *cmd]
        r = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout,
                           cwd=self.folder)
        if r.returncode != 0:
            tail = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise PostgresUnavailable(f"{' '.join(cmd)} failed ({r.returncode}): {r.stderr[-2000:]}\n{tail}")

    @property
    def host(self) -> str:
        return str(self.folder)

    def url(self, dbname: str = "postgres", user: str = SUPERUSER) -> str:
        """An SQLAlchemy URL (psycopg 3) to a database of this cluster, over its socket."""
        return f"postgresql+psycopg://{user}@/{dbname}?host={quote(self.host, safe='/')}"

    def conninfo(self, dbname: str = "postgres", user: str = SUPERUSER) -> str:
        return f"host={self.host} port={PORT} dbname={dbname} user={user}"

    def create_database(self, name: str) -> str:
        """A new empty database; its URL."""
        import psycopg
        with psycopg.connect(self.conninfo(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, name: str) -> None:
        import psycopg
        with psycopg.connect(self.conninfo(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            try:
                self._as([str(self.pg_ctl), "-D", str(self.data), "-m", "immediate", "-w", "stop"], 60)
            except (PostgresUnavailable, subprocess.TimeoutExpired):
                pass
        for _ in range(50):
            if not (self.data / "postmaster.pid").exists():
                break
            time.sleep(0.1)
        shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> "PgCluster":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
