"""The run history: one row per nightly cycle (`run`, `run --scheduled`, `serve`), written when
it starts and again when it ends. `status` shows the last one; a scheduled run asks whether
today's cycle has completed (a row started since today's send time that has an end).

A row without an end is a cycle still running, or one that was killed: it never counts as
completed, so the next scheduled tick runs the cycle again (and the export's recovery
completes what the killed one left).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone

from sqlalchemy import Connection, Engine, insert, select, update

from reskontro.ledger import schema as s

RESULTS = ("running", "ok", "needs_person", "failed")


def _utc(t: datetime) -> datetime:
    return t.astimezone(timezone.utc)


def _aware(t: datetime | None) -> datetime | None:
    return t if t is None or t.tzinfo is not None else t.replace(tzinfo=timezone.utc)


@dataclass(frozen=True)
class RunRecord:
    id: int
    kind: str
    sftp: bool
    started_at: datetime
    finished_at: datetime | None
    result: str
    steps: list[dict] = field(default_factory=list)
    needs_person: list[str] = field(default_factory=list)
    files: dict = field(default_factory=dict)
    counts: dict = field(default_factory=dict)

    def as_json(self, tz=None) -> dict:
        def when(t: datetime | None) -> str | None:
            return None if t is None else (t.astimezone(tz) if tz else t).isoformat(timespec="seconds")
        return {"id": self.id, "kind": self.kind, "sftp": self.sftp, "started_at": when(self.started_at),
                "finished_at": when(self.finished_at), "result": self.result, "steps": self.steps,
                "needs_person": self.needs_person, "files": self.files, "counts": self.counts}


def _record(row) -> RunRecord:
    m = row._mapping

    def load(key: str, empty):
        try:
            return json.loads(m[key]) if m[key] else empty
        except ValueError:
            return empty
    return RunRecord(m["id"], m["kind"], bool(m["sftp"]), _aware(m["started_at"]), _aware(m["finished_at"]),
                     m["result"], load("steps", []), load("needs_person", []), load("files", {}),
                     load("counts", {}))


def start(db: Engine, kind: str, sftp: bool, started_at: datetime) -> int:
    with db.begin() as conn:
        return conn.execute(insert(s.runs).values(kind=kind, sftp=sftp, started_at=_utc(started_at),
                                                  result="running")).inserted_primary_key[0]


def finish(db: Engine, run_id: int, finished_at: datetime, result: str, steps: list[dict],
           needs_person: list[str], files: dict, counts: dict) -> None:
    assert result in RESULTS[1:], result
    with db.begin() as conn:
        conn.execute(update(s.runs).where(s.runs.c.id == run_id).values(
            finished_at=_utc(finished_at), result=result,
            steps=json.dumps(steps, ensure_ascii=False), needs_person=json.dumps(needs_person, ensure_ascii=False),
            files=json.dumps(files, ensure_ascii=False), counts=json.dumps(counts, ensure_ascii=False)))


def last(conn: Connection, n: int = 1) -> list[RunRecord]:
    """The last `n` cycles, newest first."""
    rows = conn.execute(select(s.runs).order_by(s.runs.c.started_at.desc(), s.runs.c.id.desc()).limit(n)).all()
    return [_record(r) for r in rows]


def since(conn: Connection, when: datetime, until: datetime | None = None, *,
          sftp: bool = False) -> list[RunRecord]:
    """The cycles started at or after `when` (and before `until`; with fetch and send, if
    `sftp`), newest first."""
    q = select(s.runs).where(s.runs.c.started_at >= _utc(when))
    if until is not None:
        q = q.where(s.runs.c.started_at < _utc(until))
    if sftp:
        q = q.where(s.runs.c.sftp.is_(True))
    return [_record(r) for r in conn.execute(q.order_by(s.runs.c.started_at.desc(), s.runs.c.id.desc())).all()]
