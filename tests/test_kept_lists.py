"""The lists of kept-back entries (`held`, `excluded`) are read from table kept, brought up to
date before each read from what was marked since; after every kind of change (imports, exports,
receipts, a rejected file, a file dropped by hand, bookings, a payment matched by hand, the
backlog's settled history, another rule file) they must be exactly what deciding the whole
ledger now gives, and what `plan` counts."""
from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import func, select

from reskontro import services
from reskontro.exchange.remote import send
from reskontro.ledger import schema as s
from reskontro.rules.decide import decide_ledger
from reskontro.rules.lists import kept_now, refresh
from reskontro.site import Site
from test_explain_delivery import KID1, _hand_dropped
from test_export import (Lowell, backlog_ledger, cli, customer, day_one, entry, export, import_records, invoice,
                         make_site, match, payment)
from test_journal_receipts import FakeSftp, tamper_kid


def assert_lists_agree(site: Path) -> tuple[int, int]:
    s_ = Site.open(site)
    held = services.held(s_, limit=None)
    excluded = services.excluded(s_, limit=None)
    with s_.db.connect() as conn:
        now = sorted(kept_now(decide_ledger(conn, s_.rules, s_.config.mode)))
        assert conn.execute(select(func.count()).select_from(s.kept_dirty)).scalar_one() == 0
    got = sorted((r.entry_id, r.decision, r.rule_id, r.reason, r.customer_id) for r in held.rows + excluded.rows)
    assert got == now
    totals = json.loads(cli(site, "plan", "--json").stdout)["totals"]
    assert (held.total, excluded.total) == (totals.get("hold", 0) + totals.get("wait", 0), totals.get("exclude", 0))
    return held.total, excluded.total


def refreshed(site: Path) -> str:
    s_ = Site.open(site)
    with s_.db.begin() as conn:
        return refresh(conn, s_.rules, s_.config.mode)


def test_the_lists_follow_every_change_without_deciding_the_ledger_again(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    import_records(site, day_one())
    assert refreshed(site) == "rebuilt" and refreshed(site) == "current"
    assert_lists_agree(site)
    lowell = Lowell()
    lowell.accept(site, export(site))
    assert refreshed(site) == "current"                  # an export decides nothing anew
    assert_lists_agree(site)

    # the ERP: C3's address completed (I3 goes), I2 changed after it was delivered (held), a
    # reversal of the delivered P1 (held), M6 loses P6 (held), the draft I4 invoiced
    import_records(site, [customer("C3", "Ola Uten Postnummer"), invoice("I2", "C2", "260.50"),
                          entry("R1", "C1", "reversal", "400.00", reverses="P1"), match("M6", "I6", "V6"),
                          invoice("I4", "C4", "90.00")])
    assert refreshed(site) == "updated"
    held, _ = assert_lists_agree(site)
    rules = {r.entry_id: r.rule_id for r in services.held(Site.open(site), limit=None).rows}
    assert rules["I2"] == "changed-after-sent" and rules["R1"] == "reversed-payment"
    # (I6 and P6 are delivered as they are: not the plan's business; V6, never sent, is held with them)
    assert rules["V6"] == "match-lost-member" and "I3" not in rules and "I4" not in rules

    f = export(site)                                     # I3 and I4 go
    assert {"I3", "I4"} <= set(f.entries)
    lowell.accept(site, f)
    assert_lists_agree(site)


def test_a_rejected_file_a_hand_dropped_file_and_payments_keep_the_lists_right(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    import_records(site, [customer("C1", "Kari Nordmann"), customer("C3", "Uten Postnummer", post_code=""),
                          invoice("I1", "C1", "1000.00", document_no="F1", kid=KID1),
                          payment("P1", "C1", "-400.00", kid=KID1), match("M1", "I1", "P1"),
                          invoice("I3", "C3", "700.00"), payment("P3", "C1", "-5.00")])
    assert_lists_agree(site)
    f1 = export(site)
    Lowell().take(site, f1, tamper_kid(f1.path.read_bytes(), KID1))   # rejected
    cli(site, "receipts", code=3)
    assert_lists_agree(site)
    export(site)                                          # it goes again
    assert_lists_agree(site)

    # support drops a file carrying I1 with another amount than the ledger's: I1 is changed after sent
    _hand_dropped(site, 40, "999.00")
    sent = send(Site.open(site).config, Site.open(site).db, client_factory=lambda: FakeSftp(tmp_path / "in"))
    assert sent.refused == []
    assert "I1" in {r.entry_id for r in services.held(Site.open(site), rule="changed-after-sent").rows}
    assert_lists_agree(site)

    # the ERP links the waiting P3 to the held I3: P3 is decided with its invoice now
    import_records(site, [match("M3", "I3", "P3")])
    assert_lists_agree(site)
    assert {r.entry_id: r.rule_id for r in services.held(Site.open(site), customer="C1").rows}["P3"] != "unlinked-payment"



def test_the_backlog_and_another_rule_file_rebuild_the_lists(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    import_records(site, backlog_ledger())
    assert_lists_agree(site)
    export(site, "--backlog")                            # settled groups become history: excluded
    assert refreshed(site) == "rebuilt"
    _, excluded = assert_lists_agree(site)
    assert excluded > 0 and services.excluded(Site.open(site), rule="settled-before-service").total > 0
    rules = site / "rules" / "transfer.yaml"
    rules.write_text(rules.read_text(encoding="utf-8").replace(
        "  - id: invoice\n    when: {entry_type: invoice}\n    decision: transfer",
        "  - id: invoice\n    when: {entry_type: invoice}\n    decision: wait"), encoding="utf-8")
    assert refreshed(site) == "rebuilt"
    assert_lists_agree(site)
