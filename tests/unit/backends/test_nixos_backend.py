"""The nixos backend against the fake `nixos-container` (tests/fakes/nixos_container.py) on PATH.

Every test asserts the exact command lines (argv and cwd) the backend ran, from the fake's log.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from pathlib import Path

import pytest

from activities.backends import nixos
from activities.backends.base import (
    AgentView,
    BackendError,
    BackendErrorKind,
    ContainerSpec,
    ContainerStatus,
    Mount,
)
from activities.backends.mounts import CONTAINER_VIEW, agent_mounts
from activities.backends.nixos import NixosBackend
from activities.backends.nixos_errors import classify
from hyperhive.child_process import kill_process_group
from hyperhive.settings import HiveSettings
from tests.fakes.nixos_container import FakeInstall
from tests.rig.polling import eventually

Kind = BackendErrorKind


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeInstall:
    install = FakeInstall(tmp_path / "fake")
    for key, value in install.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("FAKE_NIXOS_BUILD_DELAY", raising=False)
    return install


@pytest.fixture
def settings(tmp_path: Path) -> HiveSettings:
    return HiveSettings(state_dir=tmp_path / "state")


def make_backend(settings: HiveSettings, fake: FakeInstall, **kwargs: object) -> NixosBackend:
    options: dict[str, object] = {
        "conf_dir": fake.paths.conf_dir,
        "profiles_dir": fake.paths.profiles,
        "container_path": os.environ["PATH"],  # the fake runs "container" commands on the host
    }
    options.update(kwargs)
    return NixosBackend(settings, **options)  # type: ignore[arg-type]


@pytest.fixture
def backend(settings: HiveSettings, fake: FakeInstall) -> NixosBackend:
    return make_backend(settings, fake)


def flake(settings: HiveSettings, agent: str, *extra_files: str) -> Path:
    directory = settings.state_path / "applied" / agent
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "flake.nix").write_text(
        "{ outputs = _: { nixosConfigurations.container = {}; }; }\n"
    )
    for name in extra_files:
        (directory / name).write_text(f"{name}\n")
    return directory


def spec(settings: HiveSettings, agent: str, *extra_files: str) -> ContainerSpec:
    return ContainerSpec(
        agent=agent,
        flake_dir=flake(settings, agent, *extra_files),
        mounts=agent_mounts(settings, agent),
    )


def ref(settings: HiveSettings, agent: str) -> str:
    return f"{settings.state_path / 'applied' / agent}#container"


def workdir(settings: HiveSettings, container: str) -> str:
    return str(settings.state_path / "nixos-work" / container)


def conf_flags(fake: FakeInstall, container: str) -> list[str]:
    return [
        line
        for line in fake.conf(container).read_text().splitlines()
        if line.startswith("EXTRA_NSPAWN_FLAGS=")
    ]


def expected_flags(settings: HiveSettings, agent: str) -> str:
    state = settings.state_path
    flags = [
        f"--bind={settings.run_path}/agents/{agent}:/run/hive",
        f"--bind={state}/agents/{agent}/home/.claude:/root/.claude",
        f"--bind={state}/agents/{agent}/work:/work",
        f"--bind-ro={state}/agents/{agent}/config:/hive/config",
    ]
    if agent == "hm1nd":
        flags.append(f"--bind={state}/proposed:/agents")
    return 'EXTRA_NSPAWN_FLAGS="' + " ".join(flags) + '"'


# --- create ------------------------------------------------------------------------------------


async def test_view_and_hive_agent_command(backend: NixosBackend) -> None:
    assert backend.name == "nixos"
    assert backend.view("alpha") == CONTAINER_VIEW
    assert backend.hive_agent_command() == ["hive-agent"]


async def test_create_runs_the_cli_in_a_work_dir_and_writes_bind_mounts(
    backend: NixosBackend, settings: HiveSettings, fake: FakeInstall
) -> None:
    await backend.create(spec(settings, "alpha"))

    assert fake.calls() == [
        {
            "argv": ["create", "h-alpha", "--flake", ref(settings, "alpha")],
            "cwd": workdir(settings, "h-alpha"),
        }
    ]
    lines = fake.conf("h-alpha").read_text().splitlines()
    # What create wrote stays; the flags come last, once.
    assert lines[:3] == ["PRIVATE_NETWORK=1", "HOST_ADDRESS=10.233.1.1", "LOCAL_ADDRESS=10.233.1.2"]
    assert f"FLAKE={settings.state_path / 'applied' / 'alpha'}" in lines
    assert conf_flags(fake, "h-alpha") == [expected_flags(settings, "alpha")]
    assert lines[-1] == expected_flags(settings, "alpha")
    # nspawn refuses missing bind sources: create makes them.
    for mount in agent_mounts(settings, "alpha"):
        assert mount.host.is_dir()
    assert fake.system_source("h-alpha") == settings.state_path / "applied" / "alpha"
    assert await backend.status("alpha") is ContainerStatus.DOWN


async def test_manager_gets_the_proposed_repos_read_write(
    backend: NixosBackend, settings: HiveSettings, fake: FakeInstall
) -> None:
    await backend.create(spec(settings, "hm1nd"))

    assert fake.argvs() == [["create", "h-hm1nd", "--flake", ref(settings, "hm1nd")]]
    assert conf_flags(fake, "h-hm1nd") == [expected_flags(settings, "hm1nd")]
    assert f"--bind={settings.state_path}/proposed:/agents" in expected_flags(settings, "hm1nd")
    await backend.start("hm1nd")
    assert fake.unit("h-hm1nd")["nspawn_flags"] == expected_flags(settings, "hm1nd").split('"')[
        1
    ].split(" ")


async def test_read_only_mounts_use_bind_ro(
    backend: NixosBackend, settings: HiveSettings, fake: FakeInstall, tmp_path: Path
) -> None:
    source = tmp_path / "shared"
    mounts = (Mount(source, "/shared"), Mount(tmp_path / "rw", "/rw", writable=True))
    await backend.create(ContainerSpec("alpha", flake(settings, "alpha"), mounts))

    assert conf_flags(fake, "h-alpha") == [
        f'EXTRA_NSPAWN_FLAGS="--bind-ro={source}:/shared --bind={tmp_path}/rw:/rw"'
    ]


async def test_create_is_idempotent(
    backend: NixosBackend, settings: HiveSettings, fake: FakeInstall
) -> None:
    await backend.create(spec(settings, "alpha"))
    await backend.start("alpha")
    before = fake.conf("h-alpha").read_text()

    await backend.create(spec(settings, "alpha"))  # "already exists": fine, left as it is

    create = ["create", "h-alpha", "--flake", ref(settings, "alpha")]
    assert fake.argvs() == [create, ["start", "h-alpha"], create]
    assert fake.conf("h-alpha").read_text() == before
    assert await backend.status("alpha") is ContainerStatus.UP


async def test_recreated_container_gets_its_flags_again(
    backend: NixosBackend, settings: HiveSettings, fake: FakeInstall
) -> None:
    await backend.create(spec(settings, "alpha"))
    await backend.destroy("alpha")
    await backend.create(spec(settings, "alpha"))

    assert conf_flags(fake, "h-alpha") == [expected_flags(settings, "alpha")]


async def test_create_build_failure_is_classified_and_cleaned_up(
    backend: NixosBackend, settings: HiveSettings, fake: FakeInstall
) -> None:
    broken = spec(settings, "alpha", "BROKEN")

    with pytest.raises(BackendError) as caught:
        await backend.create(broken)

    error = caught.value
    assert error.kind is Kind.BUILD_FAILED
    assert "building container h-alpha from its flake failed" in error.what
    assert f"failed to build container from flake '{broken.flake_dir}'" in error.what
    assert "builder for" in error.what  # the nix error, from the CLI's stderr
    assert "fix what nix's error above points at" in error.hint
    assert error.permanent  # the same flake fails the same way: not retried
    # The real CLI leaves the .conf after a failed flake build; the backend removes it.
    assert fake.argvs() == [
        ["create", "h-alpha", "--flake", ref(settings, "alpha")],
        ["destroy", "h-alpha"],
    ]
    assert not fake.conf("h-alpha").exists()
    assert await backend.status("alpha") is ContainerStatus.ABSENT

    (broken.flake_dir / "BROKEN").unlink()
    await backend.create(broken)
    assert await backend.status("alpha") is ContainerStatus.DOWN


async def test_missing_flake_nix_is_a_build_failure_not_a_missing_container(
    backend: NixosBackend, settings: HiveSettings
) -> None:
    broken = spec(settings, "alpha")
    (broken.flake_dir / "flake.nix").unlink()

    with pytest.raises(BackendError) as caught:
        await backend.create(broken)

    # nix says "path '…/flake.nix' does not exist"; the CLI's last line decides.
    assert caught.value.kind is Kind.BUILD_FAILED
    assert "flake.nix' does not exist" in caught.value.what


async def test_create_finishes_a_half_made_container(
    backend: NixosBackend, settings: HiveSettings, fake: FakeInstall
) -> None:
    # The real CLI leaves a .conf without a system after a failed flake build (and so does a
    # hive-c0re killed mid-build): made here by calling the CLI directly.
    broken = spec(settings, "alpha", "BROKEN")
    proc = await asyncio.create_subprocess_exec(
        "nixos-container",
        "create",
        "h-alpha",
        "--flake",
        ref(settings, "alpha"),
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await proc.communicate()
    assert proc.returncode != 0 and b"failed to build container from flake" in stderr
    assert fake.conf("h-alpha").exists() and fake.system_source("h-alpha") is None
    (broken.flake_dir / "BROKEN").unlink()
    fake.clear_log()

    await backend.create(broken)

    assert fake.argvs() == [
        ["create", "h-alpha", "--flake", ref(settings, "alpha")],
        ["update", "h-alpha", "--flake", ref(settings, "alpha")],
    ]
    assert fake.system_source("h-alpha") == broken.flake_dir
    await backend.start("alpha")
    assert await backend.status("alpha") is ContainerStatus.UP


async def test_cancelled_create_kills_the_cli_and_the_next_create_recovers(
    backend: NixosBackend,
    settings: HiveSettings,
    fake: FakeInstall,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FAKE_NIXOS_BUILD_DELAY", "30")
    task = asyncio.create_task(backend.create(spec(settings, "alpha")))
    await eventually(
        fake.conf("h-alpha").exists, timeout=20, interval=0.02, what="the create to start"
    )
    await asyncio.sleep(0.2)  # into the 30 s build (nothing tells when it begins): cancel mid-way
    started = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert time.monotonic() - started < 5
    assert fake.system_source("h-alpha") is None  # killed mid-build

    monkeypatch.setenv("FAKE_NIXOS_BUILD_DELAY", "0")
    await backend.create(spec(settings, "alpha"))
    assert fake.argvs()[-2:] == [
        ["create", "h-alpha", "--flake", ref(settings, "alpha")],
        ["update", "h-alpha", "--flake", ref(settings, "alpha")],
    ]
    assert conf_flags(fake, "h-alpha") == [expected_flags(settings, "alpha")]


async def test_concurrent_creates_do_not_race_on_dot_tmp(
    backend: NixosBackend,
    settings: HiveSettings,
    fake: FakeInstall,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Each create holds ./.tmp for this long; in one shared cwd they would take each other's
    # system or die (see test_fake_nixos_container.py::test_creates_in_one_cwd_race).
    monkeypatch.setenv("FAKE_NIXOS_BUILD_DELAY", "0.4")
    agents = ["alpha", "beta", "gamma"]

    await asyncio.gather(*(backend.create(spec(settings, a)) for a in agents))

    for agent in agents:
        assert fake.system_source(f"h-{agent}") == settings.state_path / "applied" / agent
    assert sorted(fake.argvs()) == sorted(
        ["create", f"h-{a}", "--flake", ref(settings, a)] for a in agents
    )
    assert {call["cwd"] for call in fake.calls()} == {workdir(settings, f"h-{a}") for a in agents}


async def test_concurrent_creates_of_one_container_are_serialized(
    backend: NixosBackend,
    settings: HiveSettings,
    fake: FakeInstall,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FAKE_NIXOS_BUILD_DELAY", "0.3")

    await asyncio.gather(*(backend.create(spec(settings, "alpha")) for _ in range(3)))

    assert fake.argvs() == [["create", "h-alpha", "--flake", ref(settings, "alpha")]] * 3
    assert fake.system_source("h-alpha") == settings.state_path / "applied" / "alpha"
    assert conf_flags(fake, "h-alpha") == [expected_flags(settings, "alpha")]


@pytest.mark.parametrize(
    ("where", "bad", "problem"),
    [
        ("state", "my hive", "contains a space"),
        ("state", "hive:1", "contains ':'"),
        ("state", "hive*", "contains '*'"),
        ("container", "/work dir", "contains a space"),
        ("container", "work", "is not absolute"),
    ],
)
async def test_unsafe_mount_paths_are_refused(
    fake: FakeInstall, tmp_path: Path, where: str, bad: str, problem: str
) -> None:
    settings = HiveSettings(state_dir=tmp_path / (bad if where == "state" else "state"))
    backend = make_backend(settings, fake)
    mounts = agent_mounts(settings, "alpha")
    if where == "container":
        mounts = (*mounts, Mount(tmp_path / "x", bad, writable=True))
    bad_spec = ContainerSpec("alpha", tmp_path / "flake", mounts)

    for operation in (backend.create, backend.update):
        with pytest.raises(BackendError) as caught:
            await operation(bad_spec)
        assert caught.value.kind is Kind.BAD_PATH and caught.value.permanent
        assert problem in caught.value.what
        assert "unquoted" in caught.value.what
        assert "HIVE_STATE_DIR" in caught.value.hint
    assert fake.calls() == []  # refused before anything was made


async def test_flake_dir_that_is_no_flake_reference_is_refused(
    backend: NixosBackend, settings: HiveSettings, fake: FakeInstall, tmp_path: Path
) -> None:
    for name in ("a#b", "a b", "a?b"):
        with pytest.raises(BackendError) as caught:
            await backend.create(ContainerSpec("alpha", tmp_path / name))
        assert caught.value.kind is Kind.BAD_PATH and caught.value.permanent
        assert "HIVE_STATE_DIR" in caught.value.hint
    assert fake.calls() == []


# --- names -------------------------------------------------------------------------------------


async def test_invalid_agent_names_are_refused_before_the_cli(
    backend: NixosBackend, settings: HiveSettings, fake: FakeInstall
) -> None:
    with pytest.raises(BackendError) as caught:
        await backend.create(ContainerSpec("waytoolong", settings.state_path))
    assert caught.value.kind is Kind.NAME_TOO_LONG
    with pytest.raises(BackendError) as caught:
        await backend.status("Bad_Name")
    assert caught.value.kind is Kind.INVALID_NAME
    assert fake.calls() == []


@pytest.fixture
def unchecked_names(monkeypatch: pytest.MonkeyPatch) -> None:
    """Reach the CLI's own name checks, past the backend's."""
    monkeypatch.setattr(nixos, "container_name", lambda agent: f"h-{agent}")


@pytest.mark.usefixtures("unchecked_names")
async def test_cli_name_too_long_is_classified(
    backend: NixosBackend, settings: HiveSettings, fake: FakeInstall
) -> None:
    with pytest.raises(BackendError) as caught:
        await backend.create(
            ContainerSpec("waytoolong", flake(settings, "waytoolong"), agent_mounts(settings, "x"))
        )
    assert caught.value.kind is Kind.NAME_TOO_LONG
    assert "container name ‘h-waytoolong’ is too long" in caught.value.what
    assert fake.argvs() == [["create", "h-waytoolong", "--flake", ref(settings, "waytoolong")]]


@pytest.mark.usefixtures("unchecked_names")
async def test_cli_invalid_name_is_classified(backend: NixosBackend, fake: FakeInstall) -> None:
    for operation in (backend.start, backend.status, backend.stop, backend.destroy):
        with pytest.raises(BackendError) as caught:
            await operation("bad.x")
        assert caught.value.kind is Kind.INVALID_NAME, operation
        assert "invalid container name" in caught.value.what
    assert fake.argvs() == [
        ["start", "h-bad.x"],
        ["status", "h-bad.x"],
        ["stop", "h-bad.x"],
        ["destroy", "h-bad.x"],
    ]


# --- start, stop, status, destroy --------------------------------------------------------------


async def test_lifecycle_command_lines(
    backend: NixosBackend, settings: HiveSettings, fake: FakeInstall
) -> None:
    assert await backend.status("alpha") is ContainerStatus.ABSENT
    await backend.create(spec(settings, "alpha"))
    assert await backend.status("alpha") is ContainerStatus.DOWN
    await backend.start("alpha")
    await backend.start("alpha")  # idempotent
    assert await backend.status("alpha") is ContainerStatus.UP
    await backend.stop("alpha")
    await backend.stop("alpha")  # idempotent
    assert await backend.status("alpha") is ContainerStatus.DOWN
    await backend.destroy("alpha")
    await backend.destroy("alpha")  # idempotent
    assert await backend.status("alpha") is ContainerStatus.ABSENT
    await backend.stop("alpha")  # a missing container is stopped

    cwd = workdir(settings, "h-alpha")
    assert [call["cwd"] for call in fake.calls()] == [cwd] * 13
    assert fake.argvs() == [
        ["status", "h-alpha"],
        ["create", "h-alpha", "--flake", ref(settings, "alpha")],
        ["status", "h-alpha"],
        ["start", "h-alpha"],
        ["start", "h-alpha"],
        ["status", "h-alpha"],
        ["stop", "h-alpha"],
        ["stop", "h-alpha"],
        ["status", "h-alpha"],
        ["destroy", "h-alpha"],
        ["destroy", "h-alpha"],
        ["status", "h-alpha"],
        ["stop", "h-alpha"],
    ]


async def test_start_of_a_missing_container_is_not_found(
    backend: NixosBackend, fake: FakeInstall
) -> None:
    with pytest.raises(BackendError) as caught:
        await backend.start("alpha")
    assert caught.value.kind is Kind.NOT_FOUND
    assert "container ‘h-alpha’ does not exist" in caught.value.what
    assert "spawn the agent first" in caught.value.hint
    assert fake.argvs() == [["start", "h-alpha"]]


async def test_start_failure_is_classified(
    backend: NixosBackend, settings: HiveSettings, fake: FakeInstall
) -> None:
    await backend.create(spec(settings, "alpha", "FAIL_START"))
    with pytest.raises(BackendError) as caught:
        await backend.start("alpha")
    assert caught.value.kind is Kind.START_FAILED
    assert "failed to start container" in caught.value.what
    assert "journalctl -u container@h-alpha" in caught.value.hint
    assert fake.argvs()[-1] == ["start", "h-alpha"]


async def test_start_remakes_missing_bind_sources(
    backend: NixosBackend, settings: HiveSettings, fake: FakeInstall
) -> None:
    await backend.create(spec(settings, "alpha"))
    run_dir = settings.agent_run_dir("alpha")
    run_dir.rmdir()  # e.g. /run after a reboot

    await backend.start("alpha")

    assert run_dir.is_dir()
    assert await backend.status("alpha") is ContainerStatus.UP


async def test_stop_failure_is_classified(
    backend: NixosBackend, settings: HiveSettings, fake: FakeInstall
) -> None:
    await backend.create(spec(settings, "alpha", "FAIL_STOP"))
    await backend.start("alpha")
    with pytest.raises(BackendError) as caught:
        await backend.stop("alpha")
    assert caught.value.kind is Kind.STOP_FAILED
    assert "failed to stop container" in caught.value.what


async def test_destroy_of_a_running_container_keeps_bind_mounted_data(
    backend: NixosBackend, settings: HiveSettings, fake: FakeInstall
) -> None:
    await backend.create(spec(settings, "alpha"))
    await backend.start("alpha")
    keep = settings.agent_state_dir("alpha") / "work" / "notes.txt"
    keep.write_text("kept")

    await backend.destroy("alpha")

    assert fake.argvs()[-1] == ["destroy", "h-alpha"]
    assert not fake.conf("h-alpha").exists()
    assert not (fake.paths.state_dir / "h-alpha").exists()
    assert keep.read_text() == "kept"
    assert await backend.status("alpha") is ContainerStatus.ABSENT


# --- update ------------------------------------------------------------------------------------


async def test_update_rebuilds_reloads_and_keeps_the_flags(
    backend: NixosBackend, settings: HiveSettings, fake: FakeInstall
) -> None:
    the_spec = spec(settings, "alpha")
    await backend.create(the_spec)
    await backend.start("alpha")
    first = fake.unit("h-alpha")["system"]
    (the_spec.flake_dir / "agent.nix").write_text("{ }\n")

    await backend.update(the_spec)

    assert fake.argvs()[-1] == ["update", "h-alpha", "--flake", ref(settings, "alpha")]
    assert fake.calls()[-1]["cwd"] == workdir(settings, "h-alpha")
    assert fake.unit("h-alpha")["system"] != first  # reloaded into the new system
    assert conf_flags(fake, "h-alpha") == [expected_flags(settings, "alpha")]


async def test_update_restarts_a_running_container_whose_bind_mounts_changed(
    backend: NixosBackend, settings: HiveSettings, fake: FakeInstall
) -> None:
    """A container made by an older hyperhive lacks a mount (here: the agent's config dir); nspawn
    reads mounts only at start, so an update that adds one restarts the container."""
    the_spec = spec(settings, "alpha")
    old = ContainerSpec(the_spec.agent, the_spec.flake_dir, the_spec.mounts[:3])
    await backend.create(old)
    await backend.start("alpha")
    assert "/hive/config" not in json.dumps(fake.unit("h-alpha")["nspawn_flags"])

    await backend.update(the_spec)
    assert fake.argvs()[-2:] == [["stop", "h-alpha"], ["start", "h-alpha"]]
    assert "/hive/config" in json.dumps(fake.unit("h-alpha")["nspawn_flags"])
    assert await backend.status("alpha") is ContainerStatus.UP

    calls = len(fake.argvs())
    await backend.update(the_spec)  # nothing changed: no restart
    assert [a[0] for a in fake.argvs()[calls:]] == ["update"]


async def test_update_build_failure_is_a_permanent_build_failure(
    backend: NixosBackend, settings: HiveSettings, fake: FakeInstall
) -> None:
    the_spec = spec(settings, "alpha")
    await backend.create(the_spec)
    await backend.start("alpha")
    running = fake.unit("h-alpha")["system"]
    (the_spec.flake_dir / "BROKEN").write_text("error: attribute 'x' missing\n")

    with pytest.raises(BackendError) as caught:
        await backend.update(the_spec)

    assert caught.value.kind is Kind.BUILD_FAILED and caught.value.permanent
    assert "failed to build container from flake" in caught.value.what
    assert "attribute 'x' missing" in caught.value.what
    assert "keeps its previous system" in caught.value.hint
    assert "apply again" in caught.value.hint
    assert fake.unit("h-alpha")["system"] == running
    assert await backend.status("alpha") is ContainerStatus.UP


async def test_update_reload_failure_is_update_failed(
    backend: NixosBackend, settings: HiveSettings
) -> None:
    the_spec = spec(settings, "alpha")
    await backend.create(the_spec)
    await backend.start("alpha")
    (the_spec.flake_dir / "FAIL_RELOAD").write_text("")

    with pytest.raises(BackendError) as caught:
        await backend.update(the_spec)

    # Not a build failure: the new system is built and set; a retry only reloads again.
    assert caught.value.kind is Kind.UPDATE_FAILED and not caught.value.permanent
    assert "failed to reload container" in caught.value.what
    assert "restart the container" in caught.value.hint


async def test_update_of_a_missing_container_is_not_found(
    backend: NixosBackend, settings: HiveSettings, fake: FakeInstall
) -> None:
    with pytest.raises(BackendError) as caught:
        await backend.update(spec(settings, "alpha"))
    assert caught.value.kind is Kind.NOT_FOUND
    assert fake.argvs() == [["update", "h-alpha", "--flake", ref(settings, "alpha")]]
    assert not fake.conf("h-alpha").exists()  # the flags never make a .conf of their own


# --- exec --------------------------------------------------------------------------------------


class HostViewBackend(NixosBackend):
    """The fake runs "container" commands on the host, so the working dir must be a host dir."""

    def view(self, agent: str) -> AgentView:
        return AgentView(
            home="/root",
            work=str(self._settings.agent_state_dir(agent) / "work"),
            mcp_socket="/run/hive/mcp.sock",
        )


@pytest.fixture
async def running(settings: HiveSettings, fake: FakeInstall) -> HostViewBackend:
    backend = HostViewBackend(
        settings,
        conf_dir=fake.paths.conf_dir,
        profiles_dir=fake.paths.profiles,
        container_path=os.environ["PATH"],
    )
    await backend.create(spec(settings, "alpha"))
    await backend.start("alpha")
    fake.clear_log()
    return backend


async def test_exec_command_line(
    backend: NixosBackend, settings: HiveSettings, fake: FakeInstall
) -> None:
    await backend.create(spec(settings, "alpha"))
    await backend.start("alpha")
    fake.clear_log()

    work = settings.agent_state_dir("alpha") / "work"
    work.mkdir(parents=True, exist_ok=True)
    secret = "sk-ant-api03-secret"
    process = await backend.exec(
        "alpha",
        ["claude", "-p", 'it\'s a "test"'],
        env={"HOME": "/root", "PATH": "/host/bin", "ANTHROPIC_API_KEY": secret},
        stdin=b"",
        host_cwd=work,
    )
    await process.communicate()

    calls = fake.calls()
    # The environment is in a 0600 file in the work dir, never on a command line.
    assert secret not in json.dumps(calls)
    env_file = fake.argvs()[1][12]
    assert env_file.startswith("/work/.hive-env-")
    assert calls == [
        {"argv": ["status", "h-alpha"], "cwd": workdir(settings, "h-alpha")},
        {
            "argv": [
                "run",
                "h-alpha",
                "--",
                "setpriv",
                "--pdeathsig=KILL",
                "--",
                "env",
                "-i",
                "--chdir=/work",
                "/bin/sh",
                "-c",
                'set -a; . "$0"; rm -f -- "$0"; set +a; exec "$@"',
                env_file,
                "claude",
                "-p",
                'it\'s a "test"',
            ],
            "cwd": workdir(settings, "h-alpha"),
        },
    ]


async def test_exec_runs_inside_with_exactly_the_given_env_stdin_and_cwd(
    running: HostViewBackend, settings: HiveSettings
) -> None:
    script = 'env | sort; printf "cwd=%s\\n" "$(pwd)"; printf "in=%s\\n" "$(cat)"; exit 7'
    work = settings.agent_state_dir("alpha") / "work"
    work.mkdir(parents=True, exist_ok=True)
    process = await running.exec(
        "alpha",
        ["sh", "-c", script],
        env={"HOME": "/root", "FOO": "bar baz", "QUOTE": "it's $HOME `id`"},
        stdin=b"the prompt",
        host_cwd=work,
    )
    stdout, stderr = await process.communicate()

    assert process.returncode == 7, stderr
    lines = stdout.decode().splitlines()
    env_lines = sorted(line for line in lines if not line.startswith(("cwd=", "in=")))
    # `env -i`: nothing of su's login environment (USER, LOGNAME, SHELL) leaks in; sh adds PWD.
    assert [line for line in env_lines if not line.startswith(("PWD=", "SHLVL=", "_="))] == [
        "FOO=bar baz",
        "HOME=/root",
        f"PATH={os.environ['PATH']}",
        "QUOTE=it's $HOME `id`",
    ]
    assert f"cwd={settings.agent_state_dir('alpha') / 'work'}" in lines
    assert "in=the prompt" in lines
    assert not list(work.glob(".hive-env-*")), "the environment file is removed before the run"


async def test_exec_is_its_own_process_group_and_the_group_kill_reaches_inside(
    running: HostViewBackend, settings: HiveSettings
) -> None:
    # `su -c` starts the command in a new session, out of reach of the caller's group kill;
    # setpriv --pdeathsig makes it die with su.
    process = await running.exec(
        "alpha",
        ["sh", "-c", "echo $$; exec sleep 60"],
        env={},
        stdin=b"",
        host_cwd=settings.agent_state_dir("alpha") / "work",
    )
    assert process.stdout is not None
    inner = int((await asyncio.wait_for(process.stdout.readline(), 10)).decode())
    assert os.getpgid(process.pid) == process.pid
    assert os.getsid(inner) != os.getsid(process.pid)  # su's setsid, reproduced by the fake

    kill_process_group(process.pid, signal.SIGKILL)

    try:
        await eventually(
            lambda: not alive(inner),
            timeout=5,
            what="the command inside to die with the exec's process group",
        )
    finally:
        if alive(inner):
            os.kill(inner, signal.SIGKILL)
    # asyncio's wait() also waits for the pipes, which a surviving command would hold open.
    await asyncio.wait_for(process.wait(), 5)


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


async def test_exec_in_a_stopped_container_is_not_running(
    backend: NixosBackend, settings: HiveSettings, fake: FakeInstall
) -> None:
    await backend.create(spec(settings, "alpha"))
    fake.clear_log()

    with pytest.raises(BackendError) as caught:
        await backend.exec("alpha", ["true"], env={}, stdin=b"", host_cwd=Path("/"))

    assert caught.value.kind is Kind.NOT_RUNNING
    assert "start the container" in caught.value.hint
    assert fake.argvs() == [["status", "h-alpha"]]


async def test_exec_in_a_missing_container_is_not_found(
    backend: NixosBackend, fake: FakeInstall
) -> None:
    with pytest.raises(BackendError) as caught:
        await backend.exec("alpha", ["true"], env={}, stdin=b"", host_cwd=Path("/"))
    assert caught.value.kind is Kind.NOT_FOUND
    assert fake.argvs() == [["status", "h-alpha"]]


async def test_cli_not_running_message_is_classified(
    backend: NixosBackend, settings: HiveSettings
) -> None:
    # The container stopping between the status check and `run`: the CLI's own message.
    await backend.create(spec(settings, "alpha"))
    proc = await asyncio.create_subprocess_exec(
        "nixos-container", "run", "h-alpha", "--", "true", stderr=asyncio.subprocess.PIPE
    )
    _, stderr = await proc.communicate()
    assert proc.returncode != 0
    assert classify(stderr.decode()) is Kind.NOT_RUNNING


async def test_exec_refuses_an_environment_it_cannot_pass(
    running: HostViewBackend, fake: FakeInstall
) -> None:
    for argv, env in ((["true"], {"BAD-NAME": "x"}), (["true"], {"NUL": "a\0b"}), ([], {})):
        with pytest.raises(BackendError) as caught:
            await running.exec("alpha", argv, env=env, stdin=b"", host_cwd=Path("/"))
        assert caught.value.kind is Kind.FAILED
    assert fake.calls() == []


# --- the environment ---------------------------------------------------------------------------


async def test_missing_cli_is_unavailable(settings: HiveSettings, fake: FakeInstall) -> None:
    backend = make_backend(settings, fake, cli="/nonexistent/nixos-container")
    with pytest.raises(BackendError) as caught:
        await backend.status("alpha")
    assert caught.value.kind is Kind.UNAVAILABLE
    assert "HIVE_CONTAINER_BACKEND=bwrap" in caught.value.hint


async def test_unusable_work_dir_is_unavailable(
    settings: HiveSettings, fake: FakeInstall, tmp_path: Path
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    backend = make_backend(settings, fake, work_dir=blocker / "work")
    with pytest.raises(BackendError) as caught:
        await backend.create(spec(settings, "alpha"))
    assert caught.value.kind is Kind.UNAVAILABLE
    assert "./.tmp" in caught.value.hint
    assert fake.calls() == []


async def test_default_work_dir_is_under_the_state_dir(
    settings: HiveSettings, fake: FakeInstall
) -> None:
    backend = NixosBackend(settings, conf_dir=fake.paths.conf_dir)
    await backend.status("alpha")
    assert fake.calls()[0]["cwd"] == str(settings.state_path / "nixos-work" / "h-alpha")


async def test_wrong_conf_dir_is_reported(
    settings: HiveSettings, fake: FakeInstall, tmp_path: Path
) -> None:
    backend = make_backend(settings, fake, conf_dir=tmp_path / "elsewhere")
    with pytest.raises(BackendError) as caught:
        await backend.create(spec(settings, "alpha"))
    assert caught.value.kind is Kind.FAILED
    assert "conf_dir" in caught.value.hint
