"""A non-editable `pip install .` into a fresh venv works: `reskontro init` makes a working site
from the package's own data, and `adapters` ships inside the package, not as a top-level name."""
from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow

# what a checkout may hold that is no part of the source distribution
IGNORE = shutil.ignore_patterns(".git", ".venv", "venv", "*.egg-info", "build", "dist", "__pycache__", ".hypothesis",
                                ".pytest_cache", ".mypy_cache", ".ruff_cache", "var", "*.db", "*.db-*", "demo")


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME", "RESKONTRO_SITE")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def _run(args: list, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> dict:
    base = tmp_path_factory.mktemp("install")
    src = base / "src"                       # a copy: pip builds in place, never inside the repo
    shutil.copytree(ROOT, src, ignore=IGNORE, symlinks=True)
    venv = base / "venv"
    r = _run([sys.executable, "-m", "venv", venv], cwd=base)
    assert r.returncode == 0, r.stderr
    py = venv / "bin" / "python"
    r = _run([py, "-m", "pip", "install", "--quiet", str(src.resolve())], cwd=base, timeout=110)
    assert r.returncode == 0, r.stdout + r.stderr
    return {"base": base, "py": py, "bin": venv / "bin", "src": src}


def test_init_makes_a_working_site_from_the_installed_package(installed: dict) -> None:
    base, bin_ = installed["base"], installed["bin"]
    site = base / "site"
    r = _run([bin_ / "reskontro", "init", site], cwd=base)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (site / "reskontro.toml").is_file()
    for name in ("transfer.yaml", "transfer.examples.yaml"):
        assert (site / "rules" / name).read_bytes() == (ROOT / "rules" / name).read_bytes(), name
    shipped = sorted(p.name for p in (ROOT / "templates").iterdir() if p.suffix in (".j2", ".xsd"))
    assert shipped, "the repo ships templates"
    assert sorted(p.name for p in (site / "templates").iterdir()) == shipped
    for name in shipped:
        assert (site / "templates" / name).read_bytes() == (ROOT / "templates" / name).read_bytes(), name
    assert (site / "inbox").is_dir() and (site / "outbox").is_dir()
    con = sqlite3.connect(site / "reskontro.db")
    try:
        tables = {r[0] for r in con.execute("select name from sqlite_master where type = 'table'")}
    finally:
        con.close()
    assert {"customers", "entries", "matches", "pending"} <= tables

    r = _run([bin_ / "reskontro", "--site", site, "rules", "lint"], cwd=base)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.replace("\n", "").endswith("transfer.yaml: ok")
    r = _run([bin_ / "reskontro", "--site", site, "rules", "test"], cwd=base)
    assert r.returncode == 0, r.stdout + r.stderr
    assert " passed, 0 failed" in r.stdout


def test_the_installed_code_is_the_installed_copy(installed: dict) -> None:
    """The package imports from the venv's site-packages, not from the repo or the build copy."""
    code = ("import json, reskontro, reskontro.site as s; "
            "print(json.dumps([reskontro.__file__, str(s.package_data('rules')), str(s.package_data('templates'))]))")
    r = _run([installed["py"], "-c", code], cwd=installed["base"])
    assert r.returncode == 0, r.stderr
    paths = json.loads(r.stdout)
    for p in paths:
        assert "site-packages" in p, p
        assert not p.startswith(str(ROOT)) and not p.startswith(str(installed["src"])), p


def test_adapters_is_not_a_top_level_package(installed: dict) -> None:
    py, base = installed["py"], installed["base"]
    r = _run([py, "-c", "import adapters"], cwd=base)
    assert r.returncode != 0 and "ModuleNotFoundError" in r.stderr
    r = _run([py, "-c", "import reskontro.adapters.ledger_import as m; print(m.__file__)"], cwd=base)
    assert r.returncode == 0, r.stderr
    assert "site-packages/reskontro/adapters/ledger_import.py" in r.stdout
    code = ("import importlib.metadata as m, json; "
            "d = m.distribution('reskontro'); "
            "print(json.dumps([str(f) for f in d.files]))")
    r = _run([py, "-c", code], cwd=base)
    assert r.returncode == 0, r.stderr
    files = json.loads(r.stdout)
    tops = {f.split("/", 1)[0] for f in files if not f.startswith("..")}
    assert not any(f.startswith("adapters/") for f in files)
    assert {t for t in tops if not t.endswith(".dist-info")} == {"reskontro"}
    assert "reskontro/adapters/ledger_import.py" in files
