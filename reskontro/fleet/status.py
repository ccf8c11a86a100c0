"""`reskontro fleet status`: per creditor its last cycle and result, tonight's job in the queue,
the files awaiting a receipt and the entries held; those that need a person first.

Read by the operator's connection, schema by schema (the same tables a creditor's own
`status` reads, through SQLAlchemy's schema_translate_map), and the queue's job table.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import func, select, text

from reskontro.fleet.registry import Fleet, list_creditors
from reskontro.ledger import schema as s

AWAITING = ("written", "uploading", "uploaded")
# what needs a person first: a failed job or cycle, then a cycle that asked for one
_ORDER = {"failed": 0, "needs_person": 1, "running": 2, "never": 3, "ok": 4, "disabled": 5}


@dataclass(frozen=True)
class CreditorStatus:
    id: str
    sender_id: str
    disabled: bool
    last_run: datetime | None            # the last cycle's start
    result: str                          # ok | needs_person | failed | running | never | disabled
    job: str | None                      # the newest nightly job's state in the queue (todo, doing, failed, …)
    job_date: str | None                 # its local date
    awaiting_receipt: int                # files sent or written, no receipt yet
    held: int                            # entries the rules hold, as the last cycle saw them
    needs_person: list[str] = field(default_factory=list)

    @property
    def attention(self) -> bool:
        return self.result in ("failed", "needs_person") or self.job == "failed"

    def as_dict(self) -> dict:
        return {"id": self.id, "sender_id": self.sender_id, "disabled": self.disabled,
                "last_run": None if self.last_run is None else self.last_run.isoformat(timespec="seconds"),
                "result": self.result, "job": self.job, "job_date": self.job_date,
                "awaiting_receipt": self.awaiting_receipt, "held": self.held,
                "needs_person": self.needs_person, "attention": self.attention}


def fleet_status(fleet: Fleet) -> list[CreditorStatus]:
    out = []
    with fleet.engine.connect() as conn:
        jobs = {r[0]: (r[1], r[2]) for r in conn.execute(text(
            "SELECT DISTINCT ON (args->>'creditor') args->>'creditor', status::text, args->>'local_date' "
            "FROM procrastinate_jobs WHERE task_name = 'nightly' ORDER BY args->>'creditor', id DESC"))}
        for c in list_creditors(fleet):
            sc = conn.execution_options(schema_translate_map={None: c.schema_name})
            run = sc.execute(select(s.runs).order_by(s.runs.c.id.desc()).limit(1)).first()
            awaiting = sc.execute(select(func.count()).select_from(s.files).where(
                s.files.c.state.in_(AWAITING))).scalar_one()
            held = sc.execute(select(func.count()).select_from(s.held_items)).scalar_one()
            job, job_date = jobs.get(c.id, (None, None))
            result = "disabled" if c.disabled else run.result if run is not None else "never"
            needs = json.loads(run.needs_person or "[]") if run is not None else []
            if job == "failed":
                needs = [f"the nightly job of {job_date} failed after its retries (`reskontro worker` log)", *needs]
            out.append(CreditorStatus(c.id, c.sender_id, c.disabled, None if run is None else run.started_at,
                                      result, job, job_date, awaiting, held, needs))
    out.sort(key=lambda r: (0 if r.attention else 1, _ORDER.get(r.result, 9), r.id))
    return out
