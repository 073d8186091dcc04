"""The `nixos` backend: each agent in a NixOS container, driven by the `nixos-container` CLI.

How the CLI behaves (REFERENCE §4; nixpkgs `nixos-container.pl`), and what this module does
about it:

- Exit codes are unstable (Perl `die` exits with errno): any non-zero is a failure, classified
  from stderr (nixos_errors), and the error carries the output's last lines (nix's error).
- `create`/`update --flake` build a NixOS system: minutes, printing little. The lifecycle
  activities heartbeat meanwhile; a cancelled call kills the CLI's process group (the build).
- `create`/`update --flake` run `nix build -o .tmp` in the *current directory*: every call runs in
  a writable dir of its own per container (`<work_dir>/h-<name>`), and create/update of one
  container are serialized, so no two builds share a ./.tmp.
- Bind mounts have no CLI flag: they go into the container's .conf as EXTRA_NSPAWN_FLAGS
  (nixos_conf), rewritten after every `create` (a fresh .conf) and `update` (which keeps it).
- A failed flake build in `create` leaves the .conf behind (the script only cleans up after a
  failed `nix-env`), and so does a hive-c0re that dies mid-build: a create that finds the
  container "already exists" without a system profile finishes the build with `update`, and a
  create whose build fails destroys what it made, so the next attempt starts clean.
- `run` is `nsenter … su root -l -c "exec …"`: su resets the environment, changes to /root and
  starts the command in a new session. So the command is
  `setpriv --pdeathsig=KILL -- env -i --chdir=/work /bin/sh -c '<source $0, rm it, exec "$@">'
  /work/.hive-env-<random> argv…`: the environment (PATH the container's, not the host's) is in
  that 0600 file, never in argv where `ps` on the host shows it; `env -i` makes it exactly that
  environment, `--chdir` the agent's working dir, and `setpriv` makes the command die with su,
  which the caller's process-group kill reaches although the command is in another session.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import secrets
import shlex
import signal
from collections.abc import Mapping, Sequence
from pathlib import Path

from activities.backends.base import (
    AgentView,
    BackendError,
    BackendErrorKind,
    ContainerSpec,
    ContainerStatus,
)
from activities.backends.mounts import CONTAINER_VIEW
from activities.backends.nixos_conf import (
    make_sources,
    make_sources_from_conf,
    nspawn_flags,
    write_flags,
)
from activities.backends.nixos_errors import (
    HINTS,
    UPDATE_BUILD_HINT,
    CliResult,
    classify,
    failure,
)
from hyperhive.child_process import die_with_parent, kill_process_group
from hyperhive.domain import InvalidName, container_name
from hyperhive.settings import HiveSettings

log = logging.getLogger(__name__)

Kind = BackendErrorKind

FLAKE_ATTR = "container"
# A NixOS login PATH for root: the caller's PATH is the host's and means nothing inside.
CONTAINER_PATH = ":".join(
    (
        "/run/wrappers/bin",
        "/root/.nix-profile/bin",
        "/nix/profile/bin",
        "/etc/profiles/per-user/root/bin",
        "/nix/var/nix/profiles/default/bin",
        "/run/current-system/sw/bin",
    )
)

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_FLAKE_DIR_FORBIDDEN = re.compile(r"[\s#?\"]")


class NixosBackend:
    name = "nixos"
    # The container is the security boundary: agents' tools run without prompts inside.
    sandboxed = True

    def __init__(
        self,
        settings: HiveSettings,
        *,
        cli: str = "nixos-container",
        conf_dir: Path = Path("/etc/nixos-containers"),
        work_dir: Path | None = None,
        profiles_dir: Path = Path("/nix/var/nix/profiles/per-container"),
        container_path: str = CONTAINER_PATH,
    ) -> None:
        """`conf_dir` holds the containers' .conf files (/etc/containers on hosts whose
        system.stateVersion is before 22.05); `work_dir` (default <state>/nixos-work) is where
        the CLI runs, since it writes ./.tmp; `profiles_dir` holds each container's system
        profile; `container_path` is the PATH commands get inside a container."""
        self._settings = settings
        self._cli = cli
        self._conf_dir = conf_dir
        self._work_dir = work_dir if work_dir is not None else settings.state_path / "nixos-work"
        self._profiles_dir = profiles_dir
        self._container_path = container_path
        self._build_locks: dict[str, asyncio.Lock] = {}

    def view(self, agent: str) -> AgentView:
        return CONTAINER_VIEW

    def hive_agent_command(self) -> list[str]:
        # On the container's PATH: the agent module installs hyperhive in the container.
        return ["hive-agent"]

    # --- the protocol ----------------------------------------------------------------------

    async def create(self, spec: ContainerSpec) -> None:
        name = self._container(spec.agent)
        flags = nspawn_flags(name, spec.mounts)
        ref = self._flake_ref(name, spec.flake_dir)
        async with self._build_lock(name):
            result = await self._call(name, "create", name, "--flake", ref)
            if result.returncode != 0:
                kind = classify(result.stderr) or Kind.FAILED
                if kind is Kind.BUILD_FAILED:
                    await self._undo_create(name)
                    raise self._failure(result, kind)
                if kind is not Kind.ALREADY_EXISTS:
                    raise self._failure(result, kind)
                if not self._has_system(name):
                    # Made by a create that died mid-build (or whose build failed before we
                    # could clean up): finish it rather than leave a container that cannot start.
                    log.warning("container %s exists without a system; building it", name)
                    built = await self._call(name, "update", name, "--flake", ref)
                    if built.returncode != 0:
                        await self._undo_create(name)
                        raise self._failure(built, classify(built.stderr) or Kind.FAILED)
            make_sources(spec.mounts)
            write_flags(self._conf(name), name, flags)

    async def start(self, agent: str) -> None:
        name = self._container(agent)
        # nspawn refuses to start when a bind source is missing (e.g. the run dir after a reboot).
        make_sources_from_conf(self._conf(name))
        result = await self._call(name, "start", name)
        if result.returncode != 0:
            raise self._failure(result, classify(result.stderr) or Kind.START_FAILED)

    async def stop(self, agent: str) -> None:
        name = self._container(agent)
        result = await self._call(name, "stop", name)
        if result.returncode != 0:
            kind = classify(result.stderr) or Kind.STOP_FAILED
            if kind is not Kind.NOT_FOUND:  # a missing container is already stopped
                raise self._failure(result, kind)

    async def update(self, spec: ContainerSpec) -> None:
        name = self._container(spec.agent)
        flags = nspawn_flags(name, spec.mounts)
        ref = self._flake_ref(name, spec.flake_dir)
        async with self._build_lock(name):
            result = await self._call(name, "update", name, "--flake", ref)
            if result.returncode != 0:
                raise self._update_failure(result)
            make_sources(spec.mounts)
            mounts_changed = write_flags(self._conf(name), name, flags)
        if mounts_changed and await self.status(spec.agent) is ContainerStatus.UP:
            # nspawn reads its bind mounts only when the container starts (e.g. a hyperhive
            # update that adds one): restart it so the next turn has them.
            log.info("bind mounts of %s changed: restarting it", name)
            await self.stop(spec.agent)
            await self.start(spec.agent)

    async def destroy(self, agent: str) -> None:
        name = self._container(agent)
        result = await self._call(name, "destroy", name)
        if result.returncode != 0:
            kind = classify(result.stderr) or Kind.FAILED
            if kind is not Kind.NOT_FOUND:
                hint = ""
                if "declarative container" in result.stderr:
                    hint = f"{name} is declared in the host's NixOS config: remove it there"
                raise self._failure(result, kind, hint)

    async def status(self, agent: str) -> ContainerStatus:
        name = self._container(agent)
        result = await self._call(name, "status", name)
        out = result.stdout.strip()
        if result.returncode == 0 and out in (ContainerStatus.UP, ContainerStatus.DOWN):
            return ContainerStatus(out)
        kind = classify(result.stderr)
        if result.returncode != 0 and (kind is Kind.NOT_FOUND or out == "gone"):
            return ContainerStatus.ABSENT
        raise self._failure(result, kind or Kind.FAILED)

    async def exec(
        self,
        agent: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        stdin: bytes,
        host_cwd: Path,
        keep_stdin: bool = False,
    ) -> asyncio.subprocess.Process:
        """`nixos-container run h-<name> -- …` in the container's working dir (view().work;
        `host_cwd` is the same dir seen from the host). The environment travels in a 0600 file
        there, which the command reads and removes before it starts: in argv it would show in
        `ps` on the host (API keys, OAuth tokens)."""
        name = self._container(agent)
        workdir = self.view(agent).work
        if not argv:
            raise BackendError(Kind.FAILED, f"nothing to run in container {name}: argv is empty")
        env_text = env_file_text({**env, "PATH": self._container_path}, name)
        state = await self.status(agent)
        if state is not ContainerStatus.UP:
            kind = Kind.NOT_FOUND if state is ContainerStatus.ABSENT else Kind.NOT_RUNNING
            raise BackendError(
                kind,
                f"cannot run {argv[0]} in container {name}: it is {state.value}",
                "spawn the agent first" if kind is Kind.NOT_FOUND else "start the container first",
            )
        env_file = write_env_file(host_cwd, env_text, name)
        inner = self._inner_command(workdir, argv, f"{workdir}/{env_file.name}")
        command = [self._cli, "run", name, "--", *inner]
        cwd = self._cwd(name)
        log.debug("in %s: %s", cwd, shlex.join(command))
        try:
            process = await asyncio.create_subprocess_exec(
                *command,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                cwd=cwd,
                start_new_session=True,
                # A turn must not outlive hive-c0re: after a crash it is retried, not duplicated.
                preexec_fn=die_with_parent(signal.SIGKILL),
                limit=16 * 1024 * 1024,  # one stream-json line can carry a large tool result
            )
        except OSError as exc:
            env_file.unlink(missing_ok=True)
            raise self._cannot_run(exc) from exc
        assert process.stdin is not None
        try:
            process.stdin.write(stdin)
            await process.stdin.drain()
        except (BrokenPipeError, ConnectionResetError):
            keep_stdin = False  # it exited already: its exit code and stderr say why
        if not keep_stdin:
            process.stdin.close()
        return process

    # --- helpers ---------------------------------------------------------------------------

    def _container(self, agent: str) -> str:
        try:
            return container_name(agent)
        except InvalidName as exc:
            kind = Kind.NAME_TOO_LONG if len(agent) > 9 else Kind.INVALID_NAME
            raise BackendError(
                kind, f"no container can be named for agent {agent!r}: {exc}"
            ) from None

    def _flake_ref(self, name: str, flake_dir: Path) -> str:
        path = str(flake_dir.absolute())
        bad = _FLAKE_DIR_FORBIDDEN.search(path)
        if bad:
            raise BackendError(
                Kind.BAD_PATH,
                f"cannot build {name} from {path!r}: a flake reference cannot hold "
                f"{bad.group()!r} unescaped",
                "move the hive state dir (HIVE_STATE_DIR) to a path without spaces, '#' or '?'",
            )
        return f"{path}#{FLAKE_ATTR}"

    def _build_lock(self, name: str) -> asyncio.Lock:
        return self._build_locks.setdefault(name, asyncio.Lock())

    def _cwd(self, name: str) -> Path:
        cwd = self._work_dir / name
        try:
            cwd.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BackendError(
                Kind.UNAVAILABLE,
                f"cannot make nixos-container's working dir {cwd}: {exc.strerror}",
                "nixos-container create/update write ./.tmp in their working dir: give the "
                "backend a writable work_dir",
            ) from exc
        return cwd

    def _cannot_run(self, exc: OSError) -> BackendError:
        return BackendError(
            Kind.UNAVAILABLE,
            f"cannot run {self._cli}: {exc.strerror or exc}",
            HINTS[Kind.UNAVAILABLE],
        )

    async def _call(self, name: str, *args: str) -> CliResult:
        """Run the CLI to completion in the container's working dir."""
        argv = [self._cli, *args]
        cwd = self._cwd(name)
        log.debug("in %s: %s", cwd, shlex.join(argv))
        try:
            process = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                cwd=cwd,
                start_new_session=True,
                preexec_fn=die_with_parent(signal.SIGKILL),
            )
        except OSError as exc:
            raise self._cannot_run(exc) from exc
        try:
            stdout, stderr = await process.communicate()
        except asyncio.CancelledError:
            # A cancelled activity must not leave a build running; what it half-made the next
            # create finishes or the next destroy removes.
            kill_process_group(process.pid)
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(process.wait())
            raise
        assert process.returncode is not None
        return CliResult(
            argv,
            process.returncode,
            stdout.decode(errors="replace"),
            stderr.decode(errors="replace"),
        )

    def _failure(self, result: CliResult, kind: BackendErrorKind, hint: str = "") -> BackendError:
        return failure(result, kind, hint)

    def _update_failure(self, result: CliResult) -> BackendError:
        kind = classify(result.stderr)
        if kind is Kind.BUILD_FAILED:
            # Deterministic (see base.PERMANENT), and the running container is untouched.
            return self._failure(result, kind, UPDATE_BUILD_HINT)
        if kind is Kind.UPDATE_FAILED:
            # The reload, after the new system was built and set: no build failure, so it stays
            # retryable. A retry costs a no-op build (the system is in the store) and another
            # reload, which may well work (a container mid-start, a unit slow to stop); one that
            # fails every time ends after the workflow's few attempts with this hint.
            name = result.container
            return self._failure(
                result,
                kind,
                "the new system is installed but the running container did not switch to it: "
                f"restart the container (stop, start); `journalctl -u container@{name}` says why",
            )
        if kind in (Kind.NOT_FOUND, Kind.INVALID_NAME, Kind.UNAVAILABLE):
            return self._failure(result, kind)
        # Unrecognized (a crash, a `die` without a message): retryable, like any unknown.
        return self._failure(result, Kind.UPDATE_FAILED)

    async def _undo_create(self, name: str) -> None:
        result = await self._call(name, "destroy", name)
        if result.returncode != 0:
            log.warning("could not remove the half-made container %s: %s", name, result.stderr)

    def _has_system(self, name: str) -> bool:
        return (self._profiles_dir / name / "system").exists()

    def _conf(self, name: str) -> Path:
        return self._conf_dir / f"{name}.conf"

    def _inner_command(self, workdir: str, argv: Sequence[str], env_file: str) -> list[str]:
        return [
            "setpriv",
            "--pdeathsig=KILL",
            "--",
            "env",
            "-i",
            f"--chdir={workdir}",
            "/bin/sh",
            "-c",
            _SOURCE_ENV_THEN_EXEC,
            env_file,
            *argv,
        ]


# `env -i` leaves only what the file sets; `set -a` exports it; the file is gone before argv runs.
_SOURCE_ENV_THEN_EXEC = 'set -a; . "$0"; rm -f -- "$0"; set +a; exec "$@"'


def env_file_text(env: Mapping[str, str], container: str) -> str:
    """`env` as lines a shell sources (values quoted), or BackendError for a name or value that
    cannot be passed."""
    lines = []
    for key, value in env.items():
        if not _ENV_NAME.fullmatch(key):
            raise BackendError(
                Kind.FAILED,
                f"cannot pass the environment variable {key!r} into container {container}",
                "variable names may contain only letters, digits and '_'",
            )
        if "\0" in value:
            raise BackendError(Kind.FAILED, f"the environment variable {key} holds a NUL character")
        lines.append(f"{key}={shlex.quote(value)}\n")
    return "".join(lines)


def write_env_file(directory: Path, text: str, container: str) -> Path:
    """Write `text` to a new 0600 file of a random name in `directory`, never through a symlink
    the agent planted (O_EXCL, O_NOFOLLOW)."""
    path = directory / f".hive-env-{secrets.token_hex(8)}"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except OSError as exc:
        raise BackendError(
            Kind.FAILED,
            f"cannot write the environment of a command in container {container} to "
            f"{directory}: {exc.strerror}",
            "check that the agent's work dir exists and hive-c0re can write it",
        ) from exc
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    return path
