"""container_create / container_update as the workflows see them: they heartbeat while the
backend builds (so a build may take far longer than the heartbeat timeout), a cancellation still
kills the build, and a failure reaches the workflow retryable or not, with the build's last lines.

The nixos backend runs against the fake `nixos-container` (tests/fakes/nixos_container.py), whose
builds take FAKE_NIXOS_BUILD_SECONDS and fail with FAKE_NIXOS_BUILD_FAILURE as nix does.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.backends import (
    BackendError,
    BackendErrorKind,
    ContainerSpec,
    ContainerStatus,
    NixosBackend,
)
from activities.backends.base import PERMANENT
from activities.lifecycle import LifecycleActivities
from hyperhive import agent_flake, config_repo
from hyperhive.settings import HiveSettings
from hyperhive.store import agents as agent_store
from hyperhive.store.db import make_engine, migrate
from tests.fakes.nixos_container import FakeInstall
from tests.rig.hive_process import pids_with_cwd, wait_gone

Kind = BackendErrorKind
AGENT = "alpha"


class Beats:
    """An ActivityEnvironment's heartbeats, as they come."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self._loop = asyncio.get_running_loop()
        self._changed = asyncio.Event()

    def __call__(self, *details: Any) -> None:
        self.times.append(time.monotonic())
        self._loop.call_soon_threadsafe(self._changed.set)

    async def wait_for(self, count: int, timeout: float = 30) -> None:
        async with asyncio.timeout(timeout):
            while len(self.times) < count:
                self._changed.clear()
                await self._changed.wait()


def environment(beats: Beats, heartbeat_timeout: float, activity_type: str) -> ActivityEnvironment:
    env = ActivityEnvironment()
    env.info = dataclasses.replace(
        env.info,
        activity_type=activity_type,
        heartbeat_timeout=timedelta(seconds=heartbeat_timeout),
    )
    env.on_heartbeat = beats
    return env


@pytest.fixture
def settings(tmp_path: Path) -> HiveSettings:
    return HiveSettings(state_dir=tmp_path / "state", run_dir=tmp_path / "run")


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeInstall:
    install = FakeInstall(tmp_path / "fake")
    install.apply(monkeypatch)
    return install


@pytest.fixture
async def engine(settings: HiveSettings) -> AsyncIterator[Any]:
    engine = make_engine(settings.database_url)
    migrate(engine)
    agent_store.register_agent(engine, AGENT, "test-host")
    # The agent's applied config repo: the flake the nixos backend builds.
    config_repo.init_agent_repos(
        settings.state_path,
        AGENT,
        purpose="test agent",
        hyperhive_rev=agent_flake.hyperhive_revision(),
        hyperhive_flake_url="/nonexistent",
    )
    yield engine
    engine.dispose()


def lifecycle(settings: HiveSettings, engine: Any, backend: Any) -> LifecycleActivities:
    # Only the container activities run here: no broker, agent runtime or turn loops.
    return LifecycleActivities(settings, engine, None, backend, None, None)  # type: ignore[arg-type]


def nixos(settings: HiveSettings, fake: FakeInstall) -> NixosBackend:
    return NixosBackend(
        settings,
        conf_dir=fake.paths.conf_dir,
        profiles_dir=fake.paths.profiles,
        container_path=os.environ["PATH"],
    )


def container_status(engine: Any) -> str | None:
    agent = agent_store.get_agent(engine, AGENT)
    return None if agent is None else agent.container_status


class GatedBackend:
    """Any backend whose build ends when the test says so, or fails with `error`."""

    name = "gated"
    sandboxed = False

    def __init__(self, error: BackendError | None = None) -> None:
        self.release = asyncio.Event()
        self.error = error
        self.built: list[str] = []

    async def _build(self, spec: ContainerSpec) -> None:
        await self.release.wait()
        if self.error is not None:
            raise self.error
        self.built.append(spec.agent)

    create = update = _build

    async def status(self, agent: str) -> ContainerStatus:
        return ContainerStatus.DOWN


def activities_of(acts: LifecycleActivities) -> dict[str, Callable[[str], Any]]:
    return {"container_create": acts.container_create, "container_update": acts.container_update}


@pytest.mark.parametrize("which", ["container_create", "container_update"])
async def test_a_build_heartbeats_until_the_backend_is_done(
    settings: HiveSettings, engine: Any, which: str
) -> None:
    backend = GatedBackend()
    beats = Beats()
    env = environment(beats, heartbeat_timeout=1.5, activity_type=which)  # a beat every 0.5 s
    run = asyncio.create_task(
        env.run(activities_of(lifecycle(settings, engine, backend))[which], AGENT)
    )

    await beats.wait_for(3)  # the build is still going: it has not been released
    assert not run.done() and backend.built == []
    backend.release.set()
    await run

    assert backend.built == [AGENT]
    assert container_status(engine) == "down"


async def test_a_nixos_build_longer_than_the_heartbeat_timeout_heartbeats_throughout(
    settings: HiveSettings, engine: Any, fake: FakeInstall, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_NIXOS_BUILD_SECONDS", "4")
    beats = Beats()
    env = environment(beats, heartbeat_timeout=1.5, activity_type="container_create")
    started = time.monotonic()

    await env.run(lifecycle(settings, engine, nixos(settings, fake)).container_create, AGENT)

    ended = time.monotonic()
    assert ended - started >= 4
    # No gap as long as the heartbeat timeout, from the start to the end of the build.
    gaps = [b - a for a, b in zip([started, *beats.times], [*beats.times, ended], strict=True)]
    assert max(gaps) < 1.5, gaps
    assert [argv[0] for argv in fake.argvs()] == ["create", "status"]
    assert container_status(engine) == "down"


async def test_a_cancelled_build_is_killed(
    settings: HiveSettings, engine: Any, fake: FakeInstall, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_NIXOS_BUILD_SECONDS", "120")
    beats = Beats()
    env = environment(beats, heartbeat_timeout=1.5, activity_type="container_create")
    acts = lifecycle(settings, engine, nixos(settings, fake))
    run = asyncio.create_task(env.run(acts.container_create, AGENT))
    # Into the build: the CLI wrote the container's .conf, then started nix (checked as the
    # activity heartbeats: the build has no event of its own to wait on).
    while not fake.conf("h-alpha").exists():
        await beats.wait_for(len(beats.times) + 1)
    building = pids_with_cwd(settings.state_path / "nixos-work" / "h-alpha")
    assert building, "no nixos-container process was building"

    env.cancel()  # what a heartbeat timeout or a cancelled workflow does to the activity
    with pytest.raises(asyncio.CancelledError):
        await run

    assert wait_gone(building, timeout=10) == []
    assert fake.system_source("h-alpha") is None  # it never finished
    assert [argv[0] for argv in fake.argvs()] == ["create"]


@pytest.mark.parametrize("kind", list(Kind))
async def test_permanent_failures_are_not_retried(
    settings: HiveSettings, engine: Any, kind: Kind
) -> None:
    backend = GatedBackend(BackendError(kind, f"it failed ({kind})", "do this"))
    backend.release.set()
    env = environment(Beats(), heartbeat_timeout=60, activity_type="container_create")

    with pytest.raises(ApplicationError) as caught:
        await env.run(lifecycle(settings, engine, backend).container_create, AGENT)

    error = caught.value
    assert error.non_retryable is (kind in PERMANENT)
    assert error.type == ("BackendError:permanent" if kind in PERMANENT else "BackendError")
    assert error.message == f"it failed ({kind})\n  → do this"
    assert error.details == (kind.value,)


BUILDER_LOG = "\n".join(f"compiling part {i}" for i in range(1, 41))
REAL_ERROR = "error: attribute 'hive-agent' missing, at /nix/store/x-source/agent.nix:3:5"


@pytest.mark.parametrize("which", ["container_create", "container_update"])
async def test_a_failed_nixos_build_is_permanent_and_says_how_it_ended(
    settings: HiveSettings,
    engine: Any,
    fake: FakeInstall,
    monkeypatch: pytest.MonkeyPatch,
    which: str,
) -> None:
    acts = lifecycle(settings, engine, nixos(settings, fake))
    env = environment(Beats(), heartbeat_timeout=60, activity_type=which)
    if which == "container_update":
        await env.run(acts.container_create, AGENT)
    fake.clear_log()
    monkeypatch.setenv("FAKE_NIXOS_BUILD_SECONDS", "0.4")  # nix's progress lines come first
    monkeypatch.setenv("FAKE_NIXOS_BUILD_FAILURE", f"{BUILDER_LOG}\n{REAL_ERROR}")

    with pytest.raises(ApplicationError) as caught:
        await env.run(activities_of(acts)[which], AGENT)

    error = caught.value
    assert error.non_retryable and error.type == "BackendError:permanent"
    text = error.message
    assert text.startswith("building container h-alpha from its flake failed (`nixos-container ")
    assert "error: builder for '/nix/store/" in text  # which derivation
    assert f"> {REAL_ERROR}" in text and "> compiling part 40" in text  # its last lines
    assert "compiling part 1\n" not in text and "building '/nix/store" not in text
    assert "failed to build container from flake" in text  # the CLI's die
    hint = text.rsplit("\n  → ", 1)[1]
    if which == "container_create":
        assert "nothing of the container was left behind" in hint and "spawn" in hint
        assert [argv[0] for argv in fake.argvs()] == ["create", "destroy"]
    else:
        assert "keeps its previous system" in hint and "apply again" in hint
        assert [argv[0] for argv in fake.argvs()] == ["update"]
    assert len(text) < 2000  # fits the approval's note
