"""The inbox fails a complete file of no known format at once (not once it has gone stale), and
takes the names a bank or a person would give a file, saying which characters it allows when
it refuses one (issue 12, point 3)."""
from __future__ import annotations

import time
from pathlib import Path

import pytest

from reskontro.adapters.payment_files import is_unknown
from reskontro.payments.booking import list_payment_file
from reskontro.payments.inbox import complete, name_problem, process_inbox
from reskontro.site import Site, init_site
from test_inbox_watch import cremul

CAMT_HEAD = (b'<?xml version="1.0" encoding="UTF-8"?>\n'
             b'<Document xmlns="urn:iso:std:iso:20022:tech:xsd:camt.054.001.02">\n'
             b"  <BkToCstmrDbtCdtNtfctn>")


@pytest.mark.parametrize("data", [
    b"junk text\n",
    b"Hei! Her er innbetalingene for november.",
    b"<Document/>",
    b'<?xml version="1.0"?>\n<!-- a comment --><Document></Document>',
    b"<html><body>login page</body></html>",
    b'<Document xmlns="urn:iso:std:iso:20022:tech:xsd:pain.001.001.03"><CstmrCdtTrfInitn>',
    b"%PDF-1.7\n",
    b"\x00\x01\x02\x03",
    b"UN" + b"x" * 5000,                 # no CREMUL in the whole sniffed head
    b"<Documentation>" + b" " * 10,
])
def test_no_known_format_is_unknown_at_once(data: bytes) -> None:
    assert is_unknown(data)


@pytest.mark.parametrize("data", [
    b"",
    b"   \n",
    b"U", b"UN", b"UNA", b"UNB+UNOC:3", b"UNA:+.? 'UNB+UNOC:3+",   # CREMUL on its way
    b"NY00", b"NY000010",                                        # OCR giro on its way
    b"<", b'<?xml version="1.0" encoding="UTF-8"?>',             # no root yet
    b'<?xml version="1.0"?>\n<Document xmlns="urn:iso:std:iso:20022:tech:xsd:camt.05',
    b'<Document xmlns="urn:iso:std:iso:20022:tech:xsd:camt.054.001.08">',   # camt: known
    CAMT_HEAD,
    b"UNE:+x'",                          # a broken service segment: CREMUL may still show
])
def test_a_head_that_may_still_become_a_format_is_not_unknown(data: bytes) -> None:
    assert not is_unknown(data)


def test_complete_takes_a_fresh_unknown_file_but_leaves_a_growing_one(tmp_path: Path) -> None:
    now = time.time()
    junk, half, ok = tmp_path / "junk.txt", tmp_path / "half.xml", tmp_path / "pay.DAT"
    junk.write_bytes(b"not a bank file\n")
    half.write_bytes(CAMT_HEAD)
    data = cremul(["*1"], "C1")
    ok.write_bytes(data[: len(data) // 2])
    assert complete(junk, now) and not complete(half, now) and not complete(ok, now)


def test_an_unknown_file_fails_on_the_first_pass_with_its_reason(tmp_path: Path) -> None:
    site = tmp_path / "site"
    init_site(site)
    inbox = site / "inbox"
    (inbox / "Document.xml").write_bytes(b"<Document/>")
    (inbox / "readme.txt").write_text("Please book these by hand\n", encoding="utf-8")
    (inbox / "half.xml").write_bytes(CAMT_HEAD)                 # still being written: stays
    rs = process_inbox(Site.open(site).db, inbox, payments=list_payment_file, now=time.time())
    assert {r.name: r.kind for r in rs} == {"Document.xml": "failed", "readme.txt": "failed"}
    for r in rs:
        assert "not a known payment file format (CREMUL, camt.054, OCR giro)" in r.detail
        reason = (inbox / "failed" / f"{r.name}.reason.txt").read_text(encoding="utf-8")
        assert "not a known payment file format" in reason
    assert (inbox / "half.xml").exists()


@pytest.mark.parametrize("name", ["CREMUL 2026-11-30.DAT", "innbetalinger@nets.no (2).xml", "Bergen_æøå.dat",
                                  "OCR+giro=2026,11.txt", "camt054[1]#2.xml", "a"])
def test_names_a_bank_or_a_person_would_use_are_taken(tmp_path: Path, name: str) -> None:
    assert name_problem(name) is None
    site = tmp_path / "site"
    init_site(site)
    (site / "inbox" / name).write_bytes(cremul(["*77"], "N1"))
    (r,) = process_inbox(Site.open(site).db, site / "inbox", payments=list_payment_file)
    assert (r.name, r.kind) == (name, "payments") and (site / "inbox" / "done" / name).exists()


@pytest.mark.parametrize("name, shown", [
    ("pay ment;rm -rf.DAT", "';'"),
    ("x$(id).DAT", "'$'"),
    ("a|b", "'|'"),
    ("-rf.DAT", None),
    ("_hidden.DAT", None),
    ("trailing.DAT ", None),
    ("x" * 201, None),
    ("ok\u202etxt.exe", "'\\u202e'"),
])
def test_a_refused_name_says_which_characters_are_allowed(name: str, shown: str | None) -> None:
    problem = name_problem(name)
    assert problem is not None
    assert "letters, digits, spaces and . _ - + @ = , ( ) [ ] #" in problem
    if shown:
        assert f"it holds {shown}" in problem


def test_a_refused_name_is_set_aside_with_the_rule(tmp_path: Path) -> None:
    site = tmp_path / "site"
    init_site(site)
    (site / "inbox" / "a;b.DAT").write_bytes(cremul(["*78"], "N2"))
    (r,) = process_inbox(Site.open(site).db, site / "inbox", payments=list_payment_file)
    assert r.kind == "failed" and "rename it and put it back into inbox/" in r.detail
    reason = (site / "inbox" / "failed" / "unsafe-name.reason.txt").read_text(encoding="utf-8")
    assert "'a;b.DAT' is not a safe name: it holds ';'" in reason and "letters, digits, spaces" in reason
