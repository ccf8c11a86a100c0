"""The support page is safe by default (issue 13, point 6): loopback only without a login;
HTTP Basic against argon2 hashes; a proxy's header believed only from the proxy; POSTs with a
CSRF token from the page's own origin; security headers on every answer; escaped data."""
from __future__ import annotations

import base64
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from reskontro.config import ConfigError, load_config
from reskontro.web.app import create_app
from reskontro.web.security import hash_password
from test_export import customer, import_records, invoice, make_site  # noqa: E402

PASSWORD = "correct horse battery staple"


def with_web(site: Path, text: str) -> Path:
    cfg = site / "reskontro.toml"
    cfg.write_text(cfg.read_text(encoding="utf-8") + "\n" + text, encoding="utf-8")
    return site


@pytest.fixture(scope="module")
def hashed() -> str:
    return hash_password(PASSWORD)


@pytest.fixture
def site(tmp_path: Path) -> Path:
    site = make_site(tmp_path)
    import_records(site, [customer("C1", "<script>alert(1)</script> AS"), invoice("I1", "C1", "100.00")])
    return site


def client(site: Path, address: str = "127.0.0.1") -> TestClient:
    return TestClient(create_app(site, warm=False), base_url="http://127.0.0.1:8080", client=(address, 40000))


def basic(login: str, password: str) -> dict[str, str]:
    return {"authorization": "Basic " + base64.b64encode(f"{login}:{password}".encode()).decode()}


def test_without_a_login_configured_only_this_machine_is_served(site: Path) -> None:
    with client(site) as c:
        assert c.get("/").status_code == 200
    with client(site, "192.0.2.10") as c:
        r = c.get("/")
        assert r.status_code == 403 and "127.0.0.1 only" in r.text


def test_the_page_refuses_to_listen_elsewhere_without_a_login(site: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "reskontro.cli", "--site", str(site), "web", "--host", "0.0.0.0",
                        "--port", str(_free_port())], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert "refusing to listen on 0.0.0.0" in r.stderr and "reskontro web-password" in r.stderr


def test_a_password_in_the_config_is_refused_only_a_hash_is_taken(site: Path) -> None:
    with_web(site, '[web.users]\nsupport = "hunter2hunter2"\n')
    with pytest.raises(ConfigError, match=r"web\.users\.support: must be an argon2 hash, never the password"):
        load_config(site)


def test_basic_login_is_checked_against_the_hash(site: Path, hashed: str, caplog: pytest.LogCaptureFixture) -> None:
    with_web(site, f'[web.users]\nsupport = "{hashed}"\n')
    with client(site) as c:          # even from this machine: a configured login is required
        r = c.get("/")
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith('Basic realm="reskontro"')
        assert c.get("/", headers=basic("support", "wrong password")).status_code == 401
        assert c.get("/", headers=basic("nobody", PASSWORD)).status_code == 401
        assert c.get("/", headers={"authorization": "Basic !!!"}).status_code == 401
        ok = c.get("/", headers=basic("support", PASSWORD))
        assert ok.status_code == 200 and ">support<" in ok.text
    refusals = [r.getMessage() for r in caplog.records if r.name == "reskontro.web"]
    assert len(refusals) == 3 and all("wrong login or password" in m or "log in" in m for m in refusals)
    assert not any("wrong password" in m for m in refusals)           # never a password in the log


def test_a_proxys_header_is_believed_only_from_the_proxy(site: Path, hashed: str) -> None:
    with_web(site, '[web]\ntrusted_proxies = ["10.1.2.3"]\nproxy_header = "X-Remote-User"\n')
    with client(site, "10.1.2.3") as c:
        r = c.get("/", headers={"x-remote-user": "kari"})
        assert r.status_code == 200 and ">kari<" in r.text
        assert c.get("/").status_code == 403                       # the proxy named nobody
        assert c.get("/", headers={"x-remote-user": "a b"}).status_code == 403
    with client(site, "10.9.9.9") as c:                           # anyone else: the header means nothing
        r = c.get("/", headers={"x-remote-user": "kari"})
        assert r.status_code == 403 and "kari" not in r.text


def test_with_a_proxy_and_users_others_log_in_with_basic(site: Path, hashed: str) -> None:
    with_web(site, f'[web]\ntrusted_proxies = ["10.1.2.3"]\n[web.users]\nsupport = "{hashed}"\n')
    with client(site, "10.9.9.9") as c:
        assert c.get("/", headers={"x-forwarded-user": "kari"}).status_code == 401
        assert c.get("/", headers=basic("support", PASSWORD)).status_code == 200


def test_every_answer_carries_the_security_headers(site: Path) -> None:
    with client(site) as c:
        for r in (c.get("/"), c.get("/files/nope"), c.get("/static/style.css")):
            csp = r.headers["content-security-policy"]
            assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "unsafe-eval" not in csp
            assert "frame-ancestors 'none'" in csp
            assert r.headers["x-frame-options"] == "DENY"
            assert r.headers["referrer-policy"] == "no-referrer"
            assert r.headers["x-content-type-options"] == "nosniff"
        assert c.get("/").headers["cache-control"] == "no-store"
    with client(site, "192.0.2.10") as c:
        assert c.get("/").headers["x-frame-options"] == "DENY"   # refusals too


def test_pages_have_no_inline_script_and_escape_the_ledgers_text(site: Path) -> None:
    with client(site) as c:
        html = c.get("/customers").text
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    scripts = [line for line in html.splitlines() if "<script" in line]
    assert scripts and all('src="/static/' in line for line in scripts)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
