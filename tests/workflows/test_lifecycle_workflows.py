"""Spawn, apply-commit, kill/start and auto-update on the time-skipping server.

The host activities are replaced by name with a `LifecycleHost` that records what was asked and
can be told to fail; the decisions arrive as `decide` signals, as from old `temporal workflow
signal` scripts (the `decide` update is in test_approval_decide.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from temporalio import activity
from temporalio.client import WorkflowExecutionStatus
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from hyperhive.models import (
    AgentMessage,
    AgentStateChange,
    ApplyRequest,
    ApprovalCancel,
    ApprovalTiming,
    ApprovalUpdate,
    AutoUpdateRequest,
    AutoUpdateResult,
    Decision,
    DeployedRecord,
    KillRequest,
    LifecycleOutcome,
    NewApproval,
    SpawnRequest,
)
from hyperhive.repo_models import ApplyInput, CommitCheck, CommitRef, InitReposInput, RevInput
from workflows.registry import ALL_WORKFLOWS

SHA = "a" * 40


@dataclass
class LifecycleHost:
    calls: list[tuple[str, Any]] = field(default_factory=list)
    approvals: dict[int, str] = field(default_factory=dict)
    notices: list[AgentMessage] = field(default_factory=list)
    fail: dict[str, Exception] = field(default_factory=dict)
    stale: list[str] = field(default_factory=list)
    # An activity named here waits for its event before it returns ...
    hold: dict[str, asyncio.Event] = field(default_factory=dict)
    # ... and every activity sets its event here once it is called.
    reached: defaultdict[str, asyncio.Event] = field(
        default_factory=lambda: defaultdict(asyncio.Event)
    )

    async def arrive(self, name: str) -> None:
        self.reached[name].set()
        if name in self.hold:
            await self.hold[name].wait()

    @contextlib.asynccontextmanager
    async def workers(self, env: WorkflowEnvironment, task_queue: str) -> AsyncIterator[str]:
        """Every workflow on `task_queue`, these activities on the host queue (yielded)."""
        host_queue = f"{task_queue}-host"
        async with (
            Worker(env.client, task_queue=task_queue, workflows=ALL_WORKFLOWS),
            Worker(env.client, task_queue=host_queue, activities=self.activities()),
        ):
            yield host_queue

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]

    def activities(self) -> list[Callable[..., Any]]:
        def op(name: str) -> Callable[..., Any]:
            @activity.defn(name=name)
            async def run(*args: Any) -> Any:
                self.calls.append((name, args[0] if args else None))
                await self.arrive(name)
                if name in self.fail:
                    raise self.fail[name]
                return None

            return run

        @activity.defn(name="create_approval")
        async def create_approval(new: NewApproval) -> int:
            self.calls.append(("create_approval", new))
            approval_id = len(self.approvals) + 1
            self.approvals[approval_id] = "pending"
            return approval_id

        @activity.defn(name="update_approval")
        async def update_approval(update: ApprovalUpdate) -> None:
            self.approvals[update.approval_id] = update.status
            await self.arrive("update_approval")

        @activity.defn(name="send_notice")
        async def send_notice(notice: AgentMessage) -> None:
            self.notices.append(notice)
            await self.arrive("send_notice")

        @activity.defn(name="cancel_approval")
        async def cancel_approval(cancel: ApprovalCancel) -> list[int]:
            self.calls.append(("cancel_approval", cancel))
            closed = [i for i, status in self.approvals.items() if status == "pending"]
            self.approvals.update(dict.fromkeys(closed, "cancelled"))
            return closed

        @activity.defn(name="validate_commit")
        async def validate_commit(ref: CommitRef) -> CommitCheck:
            self.calls.append(("validate_commit", ref))
            if "validate_commit" in self.fail:
                raise self.fail["validate_commit"]
            return CommitCheck(full_sha=ref.sha, files=["agent.nix"], diff="-old\n+new\n")

        @activity.defn(name="applied_head")
        async def applied_head(name: str) -> str:
            return "b" * 40

        @activity.defn(name="apply_commit")
        async def apply_commit(request: ApplyInput) -> str:
            self.calls.append(("apply_commit", request))
            return "c" * 40

        @activity.defn(name="hyperhive_revision")
        async def hyperhive_revision() -> str:
            return "rev-2"

        @activity.defn(name="stale_agents")
        async def stale_agents(rev: str) -> list[str]:
            return list(self.stale)

        plain = [
            "init_agent_repos",
            "prepare_agent",
            "container_create",
            "container_start",
            "container_stop",
            "container_update",
            "container_destroy",
            "record_deployed",
            "wake_agent",
            "discard_agent_history",
            "revert_applied",
            "set_recorded_rev",
            "set_agent_state",
            "stop_agent_loop",
        ]
        return [
            create_approval,
            update_approval,
            send_notice,
            cancel_approval,
            validate_commit,
            applied_head,
            apply_commit,
            hyperhive_revision,
            stale_agents,
            *(op(name) for name in plain),
        ]


async def run_workflow(
    env: WorkflowEnvironment,
    task_queue: str,
    host: LifecycleHost,
    workflow: str,
    request: Any,
    *,
    decide: Decision | None = None,
    skip: timedelta | None = None,
    result_type: type = LifecycleOutcome,
) -> Any:
    async with host.workers(env, task_queue) as host_queue:
        request.host_task_queue = host_queue
        handle = await env.client.start_workflow(
            workflow,
            request,
            id=f"test-{uuid.uuid4().hex[:8]}",
            task_queue=task_queue,
            result_type=result_type,
        )
        try:
            if decide is not None:
                await handle.signal("decide", decide)
                # A second decision changes nothing.
                await handle.signal("decide", Decision(approved=not decide.approved, by="late"))
            if skip is None:
                return await handle.result()
            # Move the clock explicitly, step by step, rather than rely on the server's
            # auto-skipping: the workflow's timers may not exist yet when the test gets here.
            # Nothing else waits on the server meanwhile: a result() long poll running beside
            # the sleep made the server's sleep call time out now and then.
            while (await handle.describe()).status == WorkflowExecutionStatus.RUNNING:
                await env.sleep(skip)
            return await handle.result()
        finally:
            # Nothing may stay running on the shared time-skipping server (it stops skipping).
            with contextlib.suppress(RPCError):
                await handle.terminate("test over")


async def test_spawn_approved_builds_everything_in_order(time_skipping_server, task_queue):
    host = LifecycleHost()
    outcome = await run_workflow(
        time_skipping_server,
        task_queue,
        host,
        "SpawnWorkflow",
        SpawnRequest(name="bob", purpose="tests things", requester="hm1nd"),
        decide=Decision(approved=True, by="ops"),
    )
    assert outcome.status == "done"
    assert host.approvals == {1: "approved"}
    assert host.names() == [
        "create_approval",
        "init_agent_repos",
        "prepare_agent",
        "container_create",
        "container_start",
        "record_deployed",
        "wake_agent",
    ]
    assert InitReposInput.model_validate(host.calls[1][1]) == InitReposInput(
        agent="bob", purpose="tests things"
    )
    assert DeployedRecord.model_validate(dict(host.calls)["record_deployed"]) == DeployedRecord(
        name="bob"
    )
    told = [n for n in host.notices if n.to == "hm1nd"]
    assert told and "bob is up" in told[-1].body
    assert any(n.to == "operator" and "hive approve 1" in n.body for n in host.notices)


async def test_spawn_denied_makes_nothing_and_tells_the_requester(time_skipping_server, task_queue):
    host = LifecycleHost()
    outcome = await run_workflow(
        time_skipping_server,
        task_queue,
        host,
        "SpawnWorkflow",
        SpawnRequest(name="bob", purpose="x", requester="hm1nd"),
        decide=Decision(approved=False, by="ops", note="not now"),
    )
    assert outcome.status == "denied"
    assert host.approvals == {1: "denied"}
    assert host.names() == ["create_approval"]
    assert any(n.to == "hm1nd" and "denied by ops: not now" in n.body for n in host.notices)


async def test_spawn_failing_after_create_destroys_what_was_made(time_skipping_server, task_queue):
    host = LifecycleHost(
        fail={
            "container_start": ApplicationError(
                "boom", type="BackendError:permanent", non_retryable=True
            )
        }
    )
    outcome = await run_workflow(
        time_skipping_server,
        task_queue,
        host,
        "SpawnWorkflow",
        SpawnRequest(name="bob", purpose="x", requester="hm1nd"),
        decide=Decision(approved=True, by="ops"),
    )
    assert outcome.status == "failed" and "boom" in outcome.detail
    assert host.names()[-1] == "container_destroy"
    assert host.approvals == {1: "failed"}
    assert any(n.to == "hm1nd" and "failed" in n.body for n in host.notices)


async def test_pending_spawn_reminds_then_expires(time_skipping_server, task_queue):
    host = LifecycleHost()
    outcome = await run_workflow(
        time_skipping_server,
        task_queue,
        host,
        "SpawnWorkflow",
        SpawnRequest(
            name="bob",
            purpose="x",
            requester="hm1nd",
            timing=ApprovalTiming(expire_after_s=3 * 3600, remind_every_s=3600),
        ),
        skip=timedelta(minutes=30),
    )
    assert outcome.status == "expired"
    assert host.approvals == {1: "expired"}
    reminders = [n for n in host.notices if n.body.startswith("reminder:")]
    assert len(reminders) == 2


async def test_preapproved_spawn_of_the_manager_needs_no_approval(time_skipping_server, task_queue):
    host = LifecycleHost()
    outcome = await run_workflow(
        time_skipping_server,
        task_queue,
        host,
        "SpawnWorkflow",
        SpawnRequest(name="hm1nd", purpose="manager", requester="hive-c0re", preapproved=True),
    )
    assert outcome.status == "done" and outcome.approval_id is None
    assert "create_approval" not in host.names()


async def test_respawn_approved_recreates_the_container_and_keeps_everything(
    time_skipping_server, task_queue
):
    host = LifecycleHost()
    outcome = await run_workflow(
        time_skipping_server,
        task_queue,
        host,
        "SpawnWorkflow",
        SpawnRequest(name="bob", purpose="tests things", requester="hm1nd", respawn=True),
        decide=Decision(approved=True, by="ops"),
    )
    assert outcome.status == "done"
    assert host.names() == [
        "create_approval",
        "init_agent_repos",  # a no-op on the kept repos
        "prepare_agent",
        "container_create",
        "container_start",
        "record_deployed",
        "set_agent_state",
        "wake_agent",
    ]
    calls = dict(host.calls)
    new = NewApproval.model_validate(calls["create_approval"])
    assert new.description.startswith("re-spawn bob, keeping its config, inbox and history")
    assert "kept: its config repos" in new.description and "tests things" in new.description
    # The recorded deployed sha stays: the kept proposed HEAD may never have been approved.
    assert DeployedRecord.model_validate(calls["record_deployed"]) == DeployedRecord(
        name="bob", keep_sha=True
    )
    assert AgentStateChange.model_validate(calls["set_agent_state"]) == AgentStateChange(
        agent="bob", state="idle"
    )
    assert any(n.to == "operator" and "asks to re-spawn bob" in n.body for n in host.notices)


async def test_fresh_respawn_discards_history_after_the_approval(time_skipping_server, task_queue):
    host = LifecycleHost()
    outcome = await run_workflow(
        time_skipping_server,
        task_queue,
        host,
        "SpawnWorkflow",
        SpawnRequest(name="bob", purpose="new job", respawn=True, fresh=True),
        decide=Decision(approved=True, by="ops"),
    )
    assert outcome.status == "done"
    assert host.names()[:3] == ["create_approval", "discard_agent_history", "init_agent_repos"]
    calls = dict(host.calls)
    assert calls["discard_agent_history"] == "bob"
    assert (
        "discarded: its config repos"
        in NewApproval.model_validate(calls["create_approval"]).description
    )
    # New repos: their proposed HEAD is what is deployed.
    assert DeployedRecord.model_validate(calls["record_deployed"]) == DeployedRecord(name="bob")


async def test_denied_fresh_respawn_discards_nothing(time_skipping_server, task_queue):
    host = LifecycleHost()
    outcome = await run_workflow(
        time_skipping_server,
        task_queue,
        host,
        "SpawnWorkflow",
        SpawnRequest(name="bob", purpose="x", respawn=True, fresh=True),
        decide=Decision(approved=False, by="ops"),
    )
    assert outcome.status == "denied"
    assert host.names() == ["create_approval"]


async def test_preapproved_respawn_of_the_manager_keeps_its_repos(time_skipping_server, task_queue):
    host = LifecycleHost()
    outcome = await run_workflow(
        time_skipping_server,
        task_queue,
        host,
        "SpawnWorkflow",
        SpawnRequest(
            name="hm1nd", purpose="manager", requester="hive-c0re", preapproved=True, respawn=True
        ),
    )
    assert outcome.status == "done" and outcome.approval_id is None
    assert "create_approval" not in host.names()
    assert "discard_agent_history" not in host.names()
    assert "init_agent_repos" in host.names() and "container_create" in host.names()
    assert DeployedRecord.model_validate(dict(host.calls)["record_deployed"]).keep_sha


async def test_apply_commit_approved_updates_and_records_the_sha(time_skipping_server, task_queue):
    host = LifecycleHost()
    outcome = await run_workflow(
        time_skipping_server,
        task_queue,
        host,
        "ApplyCommitWorkflow",
        ApplyRequest(name="bob", sha=SHA, description="more memory", requester="hm1nd"),
        decide=Decision(approved=True, by="ops"),
    )
    assert outcome.status == "done" and outcome.deployed_sha == SHA
    [(_, new)] = [c for c in host.calls if c[0] == "create_approval"]
    assert new.diff == "-old\n+new\n" and new.kind == "apply_commit"
    assert host.names()[-3:] == ["apply_commit", "container_update", "record_deployed"]
    assert DeployedRecord.model_validate(host.calls[-1][1]) == DeployedRecord(name="bob", sha=SHA)
    assert dict(host.calls)["apply_commit"].approver == "ops"


async def test_apply_commit_update_failure_reverts(time_skipping_server, task_queue):
    host = LifecycleHost(
        fail={
            "container_update": ApplicationError(
                "no build", type="BackendError:permanent", non_retryable=True
            )
        }
    )
    outcome = await run_workflow(
        time_skipping_server,
        task_queue,
        host,
        "ApplyCommitWorkflow",
        ApplyRequest(name="bob", sha=SHA, description="x", requester="hm1nd"),
        decide=Decision(approved=True, by="ops"),
    )
    assert outcome.status == "failed"
    assert host.names()[-1] == "revert_applied"
    assert host.approvals == {1: "failed"}
    assert "record_deployed" not in host.names()


async def test_apply_commit_refused_by_validation_asks_nobody(time_skipping_server, task_queue):
    host = LifecycleHost(
        fail={
            "validate_commit": ApplicationError(
                "symlink", type="RepoError:symlink", non_retryable=True
            )
        }
    )
    outcome = await run_workflow(
        time_skipping_server,
        task_queue,
        host,
        "ApplyCommitWorkflow",
        ApplyRequest(name="bob", sha=SHA, description="x", requester="hm1nd"),
    )
    assert outcome.status == "failed" and "symlink" in outcome.detail
    assert host.approvals == {}
    assert any(n.to == "hm1nd" and "refused" in n.body for n in host.notices)


async def test_kill_stops_container_and_destroy_removes_it(time_skipping_server, task_queue):
    host = LifecycleHost()
    outcome = await run_workflow(
        time_skipping_server,
        task_queue,
        host,
        "KillWorkflow",
        KillRequest(name="bob", destroy=True),
    )
    assert outcome.status == "done"
    assert host.names() == [
        "stop_agent_loop",
        "container_stop",
        "container_destroy",
        "set_agent_state",
    ]
    assert AgentStateChange.model_validate(host.calls[-1][1]) == AgentStateChange(
        agent="bob", state="stopped"
    )


async def test_auto_update_updates_only_stale_agents(time_skipping_server, task_queue):
    host = LifecycleHost(stale=["bob", "eve"])
    result = await run_workflow(
        time_skipping_server,
        task_queue,
        host,
        "AutoUpdateWorkflow",
        AutoUpdateRequest(concurrency=1),
        result_type=AutoUpdateResult,
    )
    assert result.updated == ["bob", "eve"] and result.current_rev == "rev-2"
    updated = [arg for name, arg in host.calls if name == "container_update"]
    assert updated == ["bob", "eve"]
    assert [RevInput.model_validate(a) for n, a in host.calls if n == "set_recorded_rev"] == [
        RevInput(agent="bob", rev="rev-2"),
        RevInput(agent="eve", rev="rev-2"),
    ]


async def test_racing_decisions_all_learn_the_one_in_force(time_skipping_server, task_queue):
    """Approve and deny sent at the same instant as `settle` updates (what hive-c0re's surfaces
    send): the first stands, and every caller is answered with it, not with what it asked."""
    host = LifecycleHost()
    env = time_skipping_server
    async with host.workers(env, task_queue) as host_queue:
        handle = await env.client.start_workflow(
            "SpawnWorkflow",
            SpawnRequest(name="bob", purpose="x", requester="hm1nd", host_task_queue=host_queue),
            id=f"test-{uuid.uuid4().hex[:8]}",
            task_queue=task_queue,
            result_type=LifecycleOutcome,
        )
        try:
            asked = [Decision(approved=i % 2 == 0, by=f"op{i}") for i in range(6)]
            answers = await asyncio.gather(
                *(handle.execute_update("settle", d, result_type=Decision) for d in asked)
            )
            assert len(set(map(repr, answers))) == 1, answers
            in_force = answers[0]
            assert in_force in asked
            outcome = await handle.result()
        finally:
            with contextlib.suppress(RPCError):
                await handle.terminate("test over")
    assert outcome.status == ("done" if in_force.approved else "denied")
    assert host.approvals == {1: "approved" if in_force.approved else "denied"}
