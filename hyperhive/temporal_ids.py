"""Every Temporal name hive-c0re makes up, in one place: workflow ids, the schedule id and the
`HiveAgent` search attribute. Operators type these into `temporal` commands and the Web UI, so
each is stable and spelled here once."""

from __future__ import annotations

import uuid

from temporalio.common import SearchAttributeKey, SearchAttributePair, TypedSearchAttributes

HIVE_AGENT = SearchAttributeKey.for_keyword("HiveAgent")

# Before hosts had their own schedules there was one; hive-c0re deletes it at start-up.
LEGACY_AUTO_UPDATE_SCHEDULE_ID = "hive-auto-update"


def auto_update_schedule_id(host_id: str) -> str:
    """Each host updates its own agents' containers, on its own schedule."""
    return f"hive-auto-update-{host_id}"


def host_task_queue(host_id: str) -> str:
    """Where the activities of `host_id` run: its turns, containers and config repos."""
    return f"hive-host-{host_id}"


def agent_search_attributes(agent: str) -> TypedSearchAttributes:
    """What every workflow of `agent` carries, so that `HiveAgent='<agent>'` finds them all."""
    return TypedSearchAttributes([SearchAttributePair(HIVE_AGENT, agent)])


def agent_workflow_id(agent: str) -> str:
    return f"hive-agent-{agent}"


def spawn_workflow_id(agent: str) -> str:
    return f"hive-spawn-{agent}"


def apply_workflow_id(agent: str, sha: str) -> str:
    """One apply per agent and commit: the same commit proposed twice joins the first."""
    return f"hive-apply-{agent}-{sha[:12]}"


def kill_workflow_id(agent: str) -> str:
    return f"hive-kill-{agent}"


def start_workflow_id(agent: str) -> str:
    return f"hive-start-{agent}"


def update_workflow_id(agent: str) -> str:
    return f"hive-update-{agent}"


def health_workflow_id() -> str:
    return f"hive-health-{uuid.uuid4().hex[:12]}"
