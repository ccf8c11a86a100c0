"""`reskontro run --dry-run`: the steps the nightly cycle would take now, and what each would do.

Nothing changes: no file is fetched, moved, written or sent, no journal row or sequence number
is taken, nothing is booked, no log line is written. Each step is judged on the site as it
stands: in a real run an earlier step changes what a later one finds (the receipts read and
payments booked tonight go into tonight's file), and the preview says so.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, select

from reskontro.config import Config, ConfigError
from reskontro.errors import StoreError
from reskontro.ledger import schema as s
from reskontro.ledger.store import check_integrity
from reskontro.payments.booking import preview_post
from reskontro.payments.inbox import _sha256, candidates, complete
from reskontro.rules.engine import RuleEngine
from reskontro.transfer.export import preview as preview_export
from reskontro.exchange.remote import preview_send, sftp_settings


@dataclass(frozen=True)
class Planned:
    name: str
    ok: bool            # False: the run's step would fail
    summary: str


def _names(items: list[str], limit: int = 5) -> str:
    return ", ".join(items[:limit]) + (f" and {len(items) - limit} more" if len(items) > limit else "")


def preview_cycle(config: Config, db: Engine, engine: RuleEngine, *, sftp: bool = True,
                  client_factory: Callable | None = None, now: datetime | None = None) -> list[Planned]:
    """The cycle's steps (store, fetch, inbox, post, outbox, export, send), each with what it
    would do. Reads only; the fetch preview lists the remote outbound/ (no download)."""
    steps: list[Planned] = []
    try:
        check_integrity(db)
    except StoreError as exc:
        return [Planned("store", False, f"{exc}; the run would stop here")]
    steps.append(Planned("store", True, "PRAGMA quick_check: ok"))

    if sftp:
        steps.append(_fetch(config, client_factory))

    files = candidates(config.inbox)
    with db.connect() as conn:
        seen = set(conn.execute(select(s.inbox_files.c.sha256)).scalars())
    ready, waiting, again = [], [], []
    for p in files:
        if not complete(p):
            waiting.append(p.name)
        elif _sha256(p) in seen:
            again.append(p.name)
        else:
            ready.append(f"{p.name} ({'receipt' if p.name.endswith('.receipt.xml') else 'payment file'})")
    text = f"would read {len(ready)} inbox files" + (f": {_names(ready)}" if ready else "")
    if again:
        text += f"; {len(again)} seen before (set aside as duplicates): {_names(again)}"
    if waiting:
        text += f"; {len(waiting)} not complete yet, left for the next pass: {_names(waiting)}"
    steps.append(Planned("inbox", True, text))

    posts = preview_post(db)
    booked = [f"{pid} {what.removeprefix('would be booked ')}" for pid, what in posts if what.startswith("would")]
    other = [f"{pid}: {what}" for pid, what in posts if not what.startswith("would")]
    text = f"would book {len(booked)} of {len(posts)} listed payments (as the ledger stands now)"
    if booked:
        text += f": {_names(booked)}"
    if other:
        text += f"; {'; '.join(other[:5])}" + (" …" if len(other) > 5 else "")
    steps.append(Planned("post", True, text))

    sent = preview_send(config, db)
    if sent.lost:
        steps.append(Planned("outbox", False, "; ".join(sent.lost)))
    else:
        steps.append(Planned("outbox", True, "every written file is in the outbox"))

    ex = preview_export(config, db, engine, now=now)
    text = (f"would write {ex.name} ({ex.kind}): {ex.customers} customers, {ex.entries} entries, "
            f"{ex.matches} matches (as the ledger stands now; tonight's receipts and bookings go in too)")
    if ex.recovery:
        text = "; ".join(ex.recovery) + "; then " + text
    steps.append(Planned("export", True, text))

    if sftp:
        upload = sent.upload + [f"{ex.name} (tonight's file)"]
        text = f"would send {len(upload)}: {_names(upload)}"
        if sent.answered:
            text += f"; {len(sent.answered)} answered by the receiver already (would move to sent/)"
        if sent.skipped:
            text += f"; would leave {'; '.join(sent.skipped[:5])}"
        if sent.refused:
            text += f"; would refuse {'; '.join(sent.refused[:5])}"
        steps.append(Planned("send", not sent.refused and not sent.lost, text))
    return steps


def _fetch(config: Config, client_factory: Callable | None) -> Planned:
    from reskontro.adapters.sftp import SftpClient, SftpError

    try:
        factory = client_factory or (lambda: SftpClient(sftp_settings(config)))
        with factory() as client:
            listing = client.outbound_listing()
    except (SftpError, ConfigError, OSError) as exc:
        return Planned("fetch", False, f"would fail: {exc}")
    take = [f"{name} ({size} bytes)" for name, size, why in listing if why is None]
    stay = [f"{name!r}: {why}" for name, _size, why in listing if why is not None]
    text = f"would fetch {len(take)} files from {config.sftp.remote_outbound}/" + (f": {_names(take)}" if take else "")
    if stay:
        text += f"; would leave on the server {'; '.join(stay[:5])}"
    return Planned("fetch", not stay, text)
