"""Approval rows: the listing side of an approval; the decision itself is a workflow signal."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from pydantic import BaseModel
from sqlalchemy.engine import Engine

from hyperhive.domain import ApprovalKind, ApprovalStatus
from hyperhive.models import NewApproval
from hyperhive.store.db import begin
from hyperhive.store.tables import metadata, utcnow

APPROVALS = metadata.tables["approvals"]


class Approval(BaseModel):
    id: int
    kind: str
    status: str
    agent: str
    requester: str
    description: str
    diff: str
    workflow_id: str
    created_at: datetime
    decided_at: datetime | None = None
    decided_by: str | None = None
    note: str = ""
    expires_at: datetime | None = None


def _approval(row: sa.Row[object]) -> Approval:
    values = dict(row._mapping)
    values["kind"] = str(values["kind"])
    values["status"] = str(values["status"])
    return Approval.model_validate(values)


def create_approval(engine: Engine, new: NewApproval) -> int:
    """Store a pending approval; idempotent per workflow id (a retried activity gets the same row
    back while it is pending)."""
    with begin(engine, write=True) as conn:
        existing = conn.execute(
            sa.select(APPROVALS.c.id).where(
                APPROVALS.c.workflow_id == new.workflow_id,
                APPROVALS.c.status == ApprovalStatus.PENDING,
            )
        ).first()
        if existing is not None:
            return int(existing.id)
        result = conn.execute(
            sa.insert(APPROVALS).values(
                kind=ApprovalKind(new.kind),
                status=ApprovalStatus.PENDING,
                agent=new.agent,
                requester=new.requester,
                description=new.description,
                diff=new.diff,
                workflow_id=new.workflow_id,
                created_at=utcnow(),
                expires_at=new.expires_at,
                note="",
            )
        )
        key = result.inserted_primary_key
        assert key is not None
        return int(key[0])


def set_approval_status(
    engine: Engine, approval_id: int, status: ApprovalStatus, *, by: str | None, note: str
) -> None:
    values: dict[str, object] = {"status": status}
    if status in (ApprovalStatus.APPROVED, ApprovalStatus.DENIED, ApprovalStatus.EXPIRED):
        values.update(decided_at=utcnow(), decided_by=by, note=note)
    elif note:
        values["note"] = note
    with begin(engine, write=True) as conn:
        conn.execute(sa.update(APPROVALS).where(APPROVALS.c.id == approval_id).values(**values))


def cancel_pending(engine: Engine, workflow_id: str, *, note: str) -> list[Approval]:
    """Mark the pending approvals of `workflow_id` cancelled; returns those this call changed
    (none when something else, a decision or another cancel, got there first)."""
    pending = (APPROVALS.c.workflow_id == workflow_id) & (
        APPROVALS.c.status == ApprovalStatus.PENDING
    )
    with begin(engine, write=True) as conn:
        # One statement: of two racing callers, only one gets each row back.
        rows = conn.execute(
            sa.update(APPROVALS)
            .where(pending)
            .values(status=ApprovalStatus.CANCELLED, decided_at=utcnow(), note=note)
            .returning(*APPROVALS.c)
        ).all()
    return [_approval(row) for row in rows]


def pending_id(engine: Engine, workflow_id: str) -> int | None:
    """The id of the approval `workflow_id` waits on, if it has stored one."""
    with begin(engine) as conn:
        found = conn.execute(
            sa.select(APPROVALS.c.id).where(
                APPROVALS.c.workflow_id == workflow_id,
                APPROVALS.c.status == ApprovalStatus.PENDING,
            )
        ).first()
    return None if found is None else int(found.id)


def pending_approvals(engine: Engine) -> list[Approval]:
    """Every approval still waiting, oldest first."""
    with begin(engine) as conn:
        rows = conn.execute(
            sa.select(APPROVALS)
            .where(APPROVALS.c.status == ApprovalStatus.PENDING)
            .order_by(APPROVALS.c.id)
        ).all()
    return [_approval(row) for row in rows]


def get_approval(engine: Engine, approval_id: int) -> Approval | None:
    with begin(engine) as conn:
        row = conn.execute(sa.select(APPROVALS).where(APPROVALS.c.id == approval_id)).first()
    return _approval(row) if row is not None else None


def list_approvals(engine: Engine, *, limit: int = 200) -> list[Approval]:
    """Pending first (oldest first), then decided ones (newest first)."""
    pending = APPROVALS.c.status == ApprovalStatus.PENDING
    with begin(engine) as conn:
        rows = conn.execute(
            sa.select(APPROVALS)
            .order_by(
                sa.case((pending, 0), else_=1),
                sa.case((pending, APPROVALS.c.id), else_=-APPROVALS.c.id),
            )
            .limit(limit)
        ).all()
    return [_approval(row) for row in rows]


def pending_workflow_ids(engine: Engine, *, requester: str) -> set[str]:
    """The workflows of the approvals `requester` has waiting."""
    with begin(engine) as conn:
        rows = conn.execute(
            sa.select(APPROVALS.c.workflow_id).where(
                APPROVALS.c.status == ApprovalStatus.PENDING,
                APPROVALS.c.requester == requester,
            )
        ).all()
    return {str(row.workflow_id) for row in rows}
