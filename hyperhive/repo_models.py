"""Inputs and outputs of the config-repo activities (activities/repos.py).

Small pydantic models with defaults so they can grow; no I/O, safe to import from workflow code.
Names are plain strings here: the activities validate them and fail non-retryably when bad.
"""

from __future__ import annotations

from pydantic import BaseModel, Field


class InitReposInput(BaseModel):
    agent: str = ""
    purpose: str = ""


class CommitRef(BaseModel):
    """A commit of one agent's proposed repo: 7-40 hex digits."""

    agent: str = ""
    sha: str = ""


class ApplyInput(BaseModel):
    agent: str = ""
    sha: str = ""
    approver: str = ""


class CommitCheck(BaseModel):
    """A proposed commit that passed validation: its full sha, the config files that differ
    from the applied repo (empty = nothing to apply) and the diff applied → proposed."""

    full_sha: str = ""
    files: list[str] = Field(default_factory=list)
    diff: str = ""


class RevertInput(BaseModel):
    """Reset the applied repo of `agent` to its commit `to_sha` (its HEAD before an apply)."""

    agent: str = ""
    to_sha: str = ""


class RevInput(BaseModel):
    """Re-pin an agent's flake to hyperhive `rev`. Empty `rev` = this hyperhive's revision;
    empty `flake_url` = the URL recorded for the agent."""

    agent: str = ""
    rev: str = ""
    flake_url: str = ""
