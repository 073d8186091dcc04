"""Approvals whose workflow will never decide them: close them as `cancelled` and say so.

A workflow cancelled in the Temporal UI or CLI closes its own approval (ApprovalGate); one that
is terminated (or otherwise ends while its approval waits) runs no more code, so hive-c0re
sweeps: at start-up and then every SWEEP_EVERY_S, each pending approval whose workflow is no
longer running is closed, and the operator (and the agent that asked) told."""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy import Engine
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from hyperhive.broker import Broker
from hyperhive.domain import OPERATOR_NAME
from hyperhive.store import approvals as approval_store
from hyperhive.store.approvals import Approval

log = logging.getLogger(__name__)

SWEEP_EVERY_S = 10.0

_ENDED = {
    WorkflowExecutionStatus.CANCELED: "was cancelled",
    WorkflowExecutionStatus.TERMINATED: "was terminated",
    WorkflowExecutionStatus.TIMED_OUT: "timed out",
    WorkflowExecutionStatus.FAILED: "failed",
    WorkflowExecutionStatus.COMPLETED: "ended",
    WorkflowExecutionStatus.CONTINUED_AS_NEW: "ended",
}


async def close_orphaned(engine: Engine, broker: Broker, workflow_id: str, why: str) -> list[int]:
    """Cancel `workflow_id`'s pending approval(s) and tell whom it concerns; the ids closed."""
    closed = await asyncio.to_thread(
        approval_store.cancel_pending, engine, workflow_id, note=f"cancelled: {why}"
    )
    for approval in closed:
        await _tell(broker, approval, why)
    return [approval.id for approval in closed]


async def _tell(broker: Broker, approval: Approval, why: str) -> None:
    what = f"approval #{approval.id} ({approval.kind} {approval.agent})"
    body = f"{what} was cancelled: {why}. Nothing was done."
    await broker.system_notice(OPERATOR_NAME, body + " Request it again if it is still wanted.")
    if approval.requester not in (OPERATOR_NAME, "hive-c0re"):
        try:
            await broker.system_notice(approval.requester, body + " Ask again if still needed.")
        except Exception as e:  # a requester that is gone by now: the operator was told
            log.info("could not tell %s that %s was cancelled: %s", approval.requester, what, e)


async def sweep(client: Client, engine: Engine, broker: Broker) -> list[int]:
    """Close every pending approval whose workflow is not running; the ids closed."""
    closed: list[int] = []
    for approval in await asyncio.to_thread(approval_store.pending_approvals, engine):
        why = await _ended(client, approval.workflow_id)
        if why:
            closed += await close_orphaned(engine, broker, approval.workflow_id, why)
    return closed


async def _ended(client: Client, workflow_id: str) -> str:
    """Why `workflow_id` can no longer decide its approval, or "" while it can (or when
    Temporal cannot say: then the next sweep asks again)."""
    try:
        described = await client.get_workflow_handle(workflow_id).describe()
    except RPCError as e:
        if e.status == RPCStatusCode.NOT_FOUND:
            return f"its workflow {workflow_id} no longer exists in Temporal"
        log.debug("cannot describe %s: %s", workflow_id, e)
        return ""
    if described.status is None or described.status == WorkflowExecutionStatus.RUNNING:
        return ""
    return f"its workflow {workflow_id} {_ENDED.get(described.status, 'ended')} in Temporal"


async def sweep_forever(client: Client, engine: Engine, broker: Broker) -> None:
    while True:
        try:
            closed = await sweep(client, engine, broker)
            if closed:
                log.warning("closed orphaned approvals %s (their workflows ended)", closed)
        except Exception:
            log.exception("the sweep of orphaned approvals failed; trying again")
        await asyncio.sleep(SWEEP_EVERY_S)
