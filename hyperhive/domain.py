"""Domain vocabulary shared by workflows, activities, the API and the store.

Plain enums and pydantic models only: workflow code imports this module, so it must stay free of
I/O and of anything non-deterministic.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated

from pydantic import AfterValidator

MANAGER_NAME = "hm1nd"
OPERATOR_NAME = "operator"
# hive-c0re itself, as the sender of its notices (approvals, spawns, deploys).
SYSTEM_SENDER = "hive-c0re"

# nixos-container refuses names over 11 characters; `h-` leaves 9 for the agent.
AGENT_NAME_PATTERN = re.compile(r"\A[a-z][a-z0-9-]{0,8}\Z")


class InvalidName(ValueError):
    """A name that cannot be an agent (or message recipient) name."""


def check_agent_name(name: str) -> str:
    """Return `name` if it is a valid agent name, else raise InvalidName saying what is wrong."""
    if name == MANAGER_NAME:
        return name
    if not name:
        raise InvalidName("agent name is empty: use 1-9 characters, a-z, 0-9 and '-'")
    if len(name) > 9:
        raise InvalidName(
            f"agent name {name!r} is {len(name)} characters long: at most 9 are allowed "
            "(its container is h-<name>, and nixos-container allows 11)"
        )
    if not AGENT_NAME_PATTERN.match(name):
        raise InvalidName(
            f"agent name {name!r} is invalid: it must start with a lowercase letter and contain "
            "only lowercase letters, digits and '-'"
        )
    if name == OPERATOR_NAME:
        raise InvalidName(f"{OPERATOR_NAME!r} is reserved for the human operator")
    if name == SYSTEM_SENDER:
        raise InvalidName(f"{SYSTEM_SENDER!r} is reserved for hyperhive's own notices")
    return name


def check_recipient(name: str) -> str:
    """A message recipient: any agent, or the operator."""
    return name if name == OPERATOR_NAME else check_agent_name(name)


AgentName = Annotated[str, AfterValidator(check_agent_name)]
Recipient = Annotated[str, AfterValidator(check_recipient)]


def container_name(agent: str) -> str:
    return f"h-{check_agent_name(agent)}"


class AgentState(StrEnum):
    IDLE = "idle"
    RUNNING = "running"
    PAUSED = "paused"
    NEEDS_LOGIN = "needs_login"
    RATE_LIMITED = "rate_limited"
    OVER_BUDGET = "over_budget"
    STOPPED = "stopped"


class ApprovalKind(StrEnum):
    SPAWN = "spawn"
    APPLY_COMMIT = "apply_commit"


class ApprovalStatus(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    DENIED = "denied"
    FAILED = "failed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"


class TurnErrorClass(StrEnum):
    """Why a turn did not end cleanly; `none` when it did."""

    NONE = "none"
    NEEDS_LOGIN = "needs_login"
    RATE_LIMITED = "rate_limited"
    OVERLOADED = "overloaded"
    API_ERROR = "api_error"
    HUNG = "hung"
    CANCELLED = "cancelled"
    MAX_TURNS = "max_turns"
    CRASHED = "crashed"


# The largest row id SQLite stores (a signed 64-bit integer): a larger id names nothing, and
# must be refused (or ignored, for a resume point) before it reaches the store.
MAX_STORE_ID = 2**63 - 1


def parse_resume_id(value: str | None) -> int | None:
    """A stream's resume point (Last-Event-ID): a stored id, or None when unusable."""
    if value is None or not value.strip().isdigit():
        return None
    found = int(value.strip())
    return found if found <= MAX_STORE_ID else None
