"""The site configuration: defaults, every bad value refused naming its key, paths against the site."""
from __future__ import annotations

from datetime import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from reskontro.cli import main
from reskontro.config import CONFIG_NAME, ConfigError, load_config, parse_config
from reskontro.site import init_site

GOOD = {"creditor": {"sender_id": "LOWELL123", "org_no": "923609016"}}


def with_(section: str, **values) -> dict:
    raw = {k: dict(v) for k, v in GOOD.items()}
    raw.setdefault(section, {}).update(values)
    return raw


def test_defaults(tmp_path: Path) -> None:
    cfg = parse_config(GOOD, tmp_path)
    assert cfg.site == tmp_path
    assert (cfg.sender_id, cfg.creditor_org_no) == ("LOWELL123", "923609016")
    assert (cfg.mode, cfg.base_currency, cfg.timezone) == ("full_ledger", "NOK", "Europe/Oslo")
    assert cfg.send_time == time(18, 0)
    assert cfg.tz.key == "Europe/Oslo"
    assert cfg.database == f"sqlite:///{tmp_path / 'reskontro.db'}"
    assert (cfg.rules_dir, cfg.templates_dir) == (tmp_path / "rules", tmp_path / "templates")
    assert (cfg.inbox, cfg.outbox, cfg.log_file) == (tmp_path / "inbox", tmp_path / "outbox", tmp_path / "var" / "reskontro.log")
    assert cfg.rule_file == tmp_path / "rules" / "transfer.yaml"
    assert cfg.xsd == tmp_path / "templates" / "ledger-transfer-1.xsd"
    sftp = cfg.sftp
    assert (sftp.host, sftp.port, sftp.user, sftp.timeout, sftp.retries) == ("127.0.0.1", 22, "reskontro", 30, 5)
    assert (sftp.key_file, sftp.known_hosts, sftp.passphrase_env, sftp.passphrase_file) == (None, None, None, None)
    assert (sftp.remote_inbound, sftp.remote_outbound) == ("inbound", "outbound")


def test_good_values_are_taken(tmp_path: Path) -> None:
    raw = {"creditor": {"sender_id": "ABC9", "org_no": "923609016", "mode": "factoring", "base_currency": "SEK"},
           "schedule": {"timezone": "UTC", "send_time": "07:05"},
           "sftp": {"host": "sftp.example.no", "port": 2222, "timeout": 2.5, "retries": 0}}
    cfg = parse_config(raw, tmp_path)
    assert (cfg.mode, cfg.base_currency, cfg.timezone, cfg.send_time) == ("factoring", "SEK", "UTC", time(7, 5))
    assert (cfg.sftp.host, cfg.sftp.port, cfg.sftp.timeout, cfg.sftp.retries) == ("sftp.example.no", 2222, 2.5, 0)


BAD = [
    ("creditor", {"sender_id": "LOW-123"}, "creditor.sender_id"),
    ("creditor", {"sender_id": ""}, "creditor.sender_id"),
    ("creditor", {"sender_id": "A" * 36}, "creditor.sender_id"),
    ("creditor", {"sender_id": 123456}, "creditor.sender_id"),
    ("creditor", {"org_no": "923609017"}, "creditor.org_no"),      # MOD11 fails
    ("creditor", {"org_no": "92360901"}, "creditor.org_no"),
    ("creditor", {"mode": "collection"}, "creditor.mode"),
    ("creditor", {"base_currency": "kr"}, "creditor.base_currency"),
    ("schedule", {"timezone": "Europe/Bergen"}, "schedule.timezone"),
    ("schedule", {"timezone": "../etc/passwd"}, "schedule.timezone"),
    ("schedule", {"send_time": "25:00"}, "schedule.send_time"),
    ("schedule", {"send_time": "18:60"}, "schedule.send_time"),
    ("schedule", {"send_time": "6pm"}, "schedule.send_time"),
    ("sftp", {"port": 0}, "sftp.port"),
    ("sftp", {"port": 65536}, "sftp.port"),
    ("sftp", {"port": "22"}, "sftp.port"),
    ("sftp", {"timeout": 0}, "sftp.timeout"),
    ("sftp", {"retries": -1}, "sftp.retries"),
    ("sftp", {"remote_inbound": "../etc"}, "sftp.remote_inbound"),
    ("paths", {"database": "reskontro.db"}, "paths.database"),
    ("paths", {"rules": ""}, "paths.rules"),
    ("bogus", {"x": 1}, "bogus"),
    ("creditor", {"sendr_id": "X"}, "creditor.sendr_id"),
    ("sftp", {"password": "hunter2"}, "sftp.password"),
]


@pytest.mark.parametrize("section, values, key", BAD, ids=[f"{k}={list(v.values())[0]!r}" for _, v, k in BAD])
def test_a_bad_value_is_refused_naming_the_key(tmp_path: Path, section: str, values: dict, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(with_(section, **values), tmp_path, "site/reskontro.toml")
    assert str(info.value).startswith(f"site/reskontro.toml: {key}: ")


def test_unknown_section_and_unknown_key_list_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"bogus: unknown section \(known: creditor, log, notify, paths, schedule, sftp, web\)"):
        parse_config(with_("bogus", x=1), tmp_path)
    with pytest.raises(ConfigError, match=r"creditor\.sendr_id: unknown key \(known: .*sender_id"):
        parse_config(with_("creditor", sendr_id="X"), tmp_path)


def test_a_section_must_be_a_table(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^reskontro\.toml: schedule: must be a table"):
        parse_config({**GOOD, "schedule": "18:00"}, tmp_path)


@pytest.mark.parametrize("key", ["sender_id", "org_no"])
def test_the_creditor_is_required(tmp_path: Path, key: str) -> None:
    raw = {"creditor": {k: v for k, v in GOOD["creditor"].items() if k != key}}
    with pytest.raises(ConfigError, match=rf"creditor\.{key}: is required"):
        parse_config(raw, tmp_path)


def test_relative_paths_are_resolved_against_the_site(tmp_path: Path) -> None:
    absolute = tmp_path / "elsewhere" / "inbox"
    raw = {**GOOD,
           "paths": {"database": "sqlite:///data/ledger.db", "rules": "my-rules", "templates": "../shared/templates",
                     "inbox": str(absolute), "outbox": "exchange/out", "log_file": "logs/r.log"},
           "sftp": {"key_file": "keys/id_ed25519", "known_hosts": "keys/known_hosts", "passphrase_file": "/run/secret"}}
    site = tmp_path / "site"
    cfg = parse_config(raw, site)
    assert cfg.database == f"sqlite:///{site / 'data' / 'ledger.db'}"
    assert cfg.rules_dir == site / "my-rules"
    assert cfg.templates_dir == site / "../shared/templates"
    assert cfg.inbox == absolute
    assert cfg.outbox == site / "exchange" / "out"
    assert cfg.log_file == site / "logs" / "r.log"
    assert cfg.sftp.key_file == site / "keys" / "id_ed25519"
    assert cfg.sftp.known_hosts == site / "keys" / "known_hosts"
    assert cfg.sftp.passphrase_file == Path("/run/secret")
    assert cfg.rule_file == site / "my-rules" / "transfer.yaml"


@pytest.mark.parametrize("url", ["sqlite:////var/lib/reskontro/ledger.db", "sqlite:///:memory:", "sqlite://",
                                 "postgresql+psycopg://reskontro@db.example.no/ledger"])
def test_absolute_and_non_file_database_urls_are_kept(tmp_path: Path, url: str) -> None:
    assert parse_config(with_("paths", database=url), tmp_path).database == url


def test_load_config_reads_the_site_file(tmp_path: Path) -> None:
    (tmp_path / CONFIG_NAME).write_text('[creditor]\nsender_id = "X1"\norg_no = "923609016"\nmode = "factoring"\n',
                                        encoding="utf-8")
    cfg = load_config(tmp_path)
    assert (cfg.sender_id, cfg.mode, cfg.site) == ("X1", "factoring", tmp_path.resolve())


def test_load_config_names_the_file_on_bad_toml(tmp_path: Path) -> None:
    (tmp_path / CONFIG_NAME).write_text("[creditor\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=rf"^{tmp_path.resolve() / CONFIG_NAME}: not valid TOML"):
        load_config(tmp_path)


def test_load_config_names_the_file_and_key(tmp_path: Path) -> None:
    (tmp_path / CONFIG_NAME).write_text('[creditor]\nsender_id = "X1"\norg_no = "923609016"\n[sftp]\nport = 0\n',
                                        encoding="utf-8")
    with pytest.raises(ConfigError, match=rf"^{tmp_path.resolve() / CONFIG_NAME}: sftp\.port: "):
        load_config(tmp_path)


def test_init_writes_a_config_that_loads(tmp_path: Path) -> None:
    init_site(tmp_path / "s", sender_id="777", org_no="923609016")
    cfg = load_config(tmp_path / "s")
    assert (cfg.sender_id, cfg.mode) == ("777", "full_ledger")
    assert cfg.sftp.key_file == (tmp_path / "s").resolve() / "keys" / "id_ed25519"
    with pytest.raises(FileExistsError):
        init_site(tmp_path / "s")


# --- the CLI -----------------------------------------------------------------------------------
@pytest.mark.parametrize("args", [["plan"], ["rules", "lint"], ["rules", "test"], ["check"]])
def test_cli_without_a_config_names_the_missing_file(tmp_path: Path, args: list[str]) -> None:
    empty = tmp_path / "not-a-site"
    empty.mkdir()
    result = CliRunner().invoke(main, ["--site", str(empty), *args])
    assert result.exit_code == 2                      # usage or configuration
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert f"error: {empty.resolve() / CONFIG_NAME}: no configuration here" in result.stderr


def test_cli_with_a_bad_config_names_the_key(tmp_path: Path) -> None:
    site = tmp_path / "site"
    init_site(site)
    cfg = site / CONFIG_NAME
    cfg.write_text(cfg.read_text(encoding="utf-8").replace('send_time = "18:00"', 'send_time = "25:00"'), encoding="utf-8")
    result = CliRunner().invoke(main, ["--site", str(site), "plan"])
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    assert f"{site.resolve() / CONFIG_NAME}: schedule.send_time: '25:00' must be HH:MM" in result.stderr


def test_cli_init_refuses_a_bad_org_no(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["init", str(tmp_path / "s"), "--org-no", "923609017"])
    assert result.exit_code == 2
    assert "creditor.org_no" in result.stderr and "Traceback" not in result.output


@pytest.mark.parametrize("key", ["port", "retries", "timeout"])
def test_a_boolean_is_no_number(tmp_path: Path, key: str) -> None:
    """TOML `true` is a Python int: it must not pass as port 1."""
    with pytest.raises(ConfigError, match=rf"sftp\.{key}: "):
        parse_config(with_("sftp", **{key: True}), tmp_path)


def test_the_web_section_is_checked_like_the_others(tmp_path: Path) -> None:
    for web, message in [({"port": 0}, r"web\.port: 0 must be a port number"),
                         ({"users": {"kari": "secret-password"}}, r"web\.users\.kari: must be an argon2 hash"),
                         ({"users": {"bad login": "$argon2id$x"}}, r"web\.users\.bad login: a login is"),
                         ({"trusted_proxies": ["proxy.example"]}, r"web\.trusted_proxies: 'proxy\.example' is not an IP"),
                         ({"proxy_header": "X User"}, r"web\.proxy_header: 'X User' must be an HTTP header name")]:
        with pytest.raises(ConfigError, match=message):
            parse_config({**GOOD, "web": web}, tmp_path)
    ok = parse_config({**GOOD, "web": {"users": {"kari": "$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA"},
                                       "trusted_proxies": ["10.0.0.5"]}}, tmp_path).web
    assert ok.authenticated and ok.users == (("kari", "$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA"),)
    assert not parse_config(GOOD, tmp_path).web.authenticated and parse_config(GOOD, tmp_path).web.host == "127.0.0.1"
