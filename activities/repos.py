"""Activities on the per-agent config repos (git), wrapping hyperhive.config_repo.

A RepoError becomes `ApplicationError(type="RepoError:<code>")`: non-retryable when it is a verdict
on the input (a bad or unknown sha, a commit that is not config-only, …), retryable for
`git_failed` (the workflow's RetryPolicy bounds those).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

from temporalio import activity
from temporalio.exceptions import ApplicationError

from hyperhive import agent_flake, config_repo
from hyperhive.repo_git import RepoError
from hyperhive.repo_models import (
    ApplyInput,
    CommitCheck,
    CommitRef,
    InitReposInput,
    RevertInput,
    RevInput,
)
from hyperhive.settings import HiveSettings

P = ParamSpec("P")
T = TypeVar("T")


def repo_application_error(exc: RepoError) -> ApplicationError:
    return ApplicationError(
        str(exc),
        {"code": exc.code, "what": exc.what, "hint": exc.hint},
        type=f"RepoError:{exc.code}",
        non_retryable=not exc.retryable,
    )


async def _call(fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    try:
        return await asyncio.to_thread(fn, *args, **kwargs)
    except RepoError as exc:
        raise repo_application_error(exc) from exc


class RepoActivities:
    """`hyperhive_flake_url`/`hyperhive_rev` pin new agent flakes; by default this hyperhive's
    git checkout (`git+file://<checkout>?rev=<HEAD>`), found on first use."""

    def __init__(
        self,
        settings: HiveSettings,
        *,
        hyperhive_flake_url: str | None = None,
        hyperhive_rev: str | None = None,
    ) -> None:
        self._settings = settings
        self._flake_url = hyperhive_flake_url
        self._rev = hyperhive_rev

    def _source(self) -> tuple[str, str]:
        if self._flake_url is None:
            checkout = agent_flake.hyperhive_checkout()
            self._flake_url = str(checkout) if checkout is not None else ""
        if self._rev is None:
            self._rev = agent_flake.hyperhive_revision()
        return self._flake_url, self._rev

    def _init(self, agent: str, purpose: str) -> None:
        url, rev = self._source()
        config_repo.init_agent_repos(
            self._settings.state_path,
            agent,
            purpose=purpose,
            hyperhive_rev=rev,
            hyperhive_flake_url=url,
        )

    def _check(self, agent: str, sha: str) -> CommitCheck:
        state = self._settings.state_path
        full = config_repo.resolve_sha(state, agent, sha)
        files = config_repo.validate_commit(state, agent, full)
        diff = config_repo.diff_against_applied(state, agent, full)
        return CommitCheck(full_sha=full, files=files, diff=diff)

    def _apply(self, agent: str, sha: str, approver: str) -> str:
        state = self._settings.state_path
        new = config_repo.apply_commit(state, agent, sha, approver=approver)
        return new if new is not None else config_repo.applied_head(state, agent)

    def _set_rev(self, agent: str, rev: str, flake_url: str) -> str:
        state = self._settings.state_path
        new = config_repo.set_recorded_rev(
            state, agent, rev or self._source()[1], hyperhive_flake_url=flake_url or None
        )
        return new if new is not None else config_repo.applied_head(state, agent)

    def all(self) -> list[Callable[..., Any]]:
        """Every activity here, for a Worker's `activities=`."""
        return [
            self.init_agent_repos,
            self.validate_commit,
            self.diff_against_applied,
            self.apply_commit,
            self.revert_applied,
            self.applied_head,
            self.recorded_rev,
            self.set_recorded_rev,
        ]

    @activity.defn(name="init_agent_repos")
    async def init_agent_repos(self, req: InitReposInput) -> None:
        await _call(self._init, req.agent, req.purpose)

    @activity.defn(name="validate_commit")
    async def validate_commit(self, ref: CommitRef) -> CommitCheck:
        """Resolve and validate a proposed commit; with the files it changes and its diff."""
        return await _call(self._check, ref.agent, ref.sha)

    @activity.defn(name="diff_against_applied")
    async def diff_against_applied(self, ref: CommitRef) -> str:
        return await _call(
            config_repo.diff_against_applied, self._settings.state_path, ref.agent, ref.sha
        )

    @activity.defn(name="apply_commit")
    async def apply_commit(self, req: ApplyInput) -> str:
        """Copy the commit's config into the applied repo; return the applied HEAD afterwards
        (unchanged when it already had that content: a retried apply is a no-op)."""
        return await _call(self._apply, req.agent, req.sha, req.approver)

    @activity.defn(name="revert_applied")
    async def revert_applied(self, req: RevertInput) -> None:
        await _call(config_repo.revert_applied, self._settings.state_path, req.agent, req.to_sha)

    @activity.defn(name="applied_head")
    async def applied_head(self, agent: str) -> str:
        return await _call(config_repo.applied_head, self._settings.state_path, agent)

    @activity.defn(name="recorded_rev")
    async def recorded_rev(self, agent: str) -> str:
        return await _call(config_repo.recorded_rev, self._settings.state_path, agent)

    @activity.defn(name="set_recorded_rev")
    async def set_recorded_rev(self, req: RevInput) -> str:
        """Re-pin the agent's flake; return the applied HEAD afterwards."""
        return await _call(self._set_rev, req.agent, req.rev, req.flake_url)
