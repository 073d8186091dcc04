"""The `nixos` backend: each agent in a NixOS container, driven by the `nixos-container` CLI.

How the CLI behaves (REFERENCE §4; nixpkgs `nixos-container.pl`), and what this module does
about it:

- Exit codes are unstable (Perl `die` exits with errno): any non-zero is a failure and the kind of
  failure is read from stderr, preferring its last line (the `die` message) over the nix output
  before it, which may say "does not exist" about a file.
- `create`/`update --flake` run `nix build -o .tmp` in the *current directory*: every call runs in
  a writable dir of its own per container (`<work_dir>/h-<name>`), and create/update of one
  container are serialized, so no two builds share a ./.tmp.
- Bind mounts have no CLI flag: they go into the container's .conf as EXTRA_NSPAWN_FLAGS, which
  reaches systemd-nspawn unquoted (bash word-splits it; ':' separates source from target), so
  paths with spaces, ':' or shell-special characters are refused. `create` writes a fresh .conf,
  `update` keeps it: the flags are (re)written after both.
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
from dataclasses import dataclass
from pathlib import Path

from activities.backends.base import (
    AgentView,
    BackendError,
    BackendErrorKind,
    ContainerSpec,
    ContainerStatus,
    Mount,
)
from activities.backends.mounts import CONTAINER_VIEW
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
STDERR_TAIL_CHARS = 800

# What survives EXTRA_NSPAWN_FLAGS unquoted: bash word splitting and globbing, and nspawn's
# SOURCE:TARGET syntax.
_SAFE_PATH = re.compile(r"/[A-Za-z0-9._+,@=%/-]*")
_SAFE_PATH_CHARS = "letters, digits and . _ + , @ = % / -"
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_FLAKE_DIR_FORBIDDEN = re.compile(r"[\s#?\"]")
_FLAGS_LINE = "EXTRA_NSPAWN_FLAGS="

# The CLI's own messages (its `die`s), most specific first.
_CLASSIFY: tuple[tuple[re.Pattern[str], BackendErrorKind], ...] = (
    (re.compile(r"container ‘[^’]*’ already exists"), Kind.ALREADY_EXISTS),
    (re.compile(r"container ‘[^’]*’ does not exist"), Kind.NOT_FOUND),
    (re.compile(r"container name ‘[^’]*’ is too long"), Kind.NAME_TOO_LONG),
    (re.compile(r"invalid container name"), Kind.INVALID_NAME),
    (re.compile(r"failed to (build|set)( initial)? container"), Kind.BUILD_FAILED),
    (re.compile(r"failed to start container"), Kind.START_FAILED),
    (re.compile(r"failed to (stop|terminate) container"), Kind.STOP_FAILED),
    (re.compile(r"failed to reload container"), Kind.UPDATE_FAILED),
    (re.compile(r"unable to get container's main PID"), Kind.NOT_RUNNING),
    (re.compile(r"Permission denied|Operation not permitted|must be root"), Kind.UNAVAILABLE),
)

_SUMMARY = {
    Kind.ALREADY_EXISTS: "container {name} already exists",
    Kind.NOT_FOUND: "container {name} does not exist",
    Kind.NAME_TOO_LONG: "container name {name} is too long for nixos-container (at most 11)",
    Kind.INVALID_NAME: "nixos-container refused the container name {name}",
    Kind.BUILD_FAILED: "building container {name} from its flake failed",
    Kind.START_FAILED: "container {name} failed to start",
    Kind.STOP_FAILED: "container {name} failed to stop",
    Kind.UPDATE_FAILED: "updating container {name} failed",
    Kind.NOT_RUNNING: "container {name} is not running",
    Kind.UNAVAILABLE: "nixos-container cannot manage containers here",
    Kind.FAILED: "nixos-container {verb} {name} failed",
}

_HINT = {
    Kind.ALREADY_EXISTS: "destroy it first if it is to be made afresh",
    Kind.NOT_FOUND: "spawn the agent first; if it exists, check that the backend's conf_dir is "
    "the host's nixos-container dir",
    Kind.NAME_TOO_LONG: "agent names have at most 9 characters (h-<name> must fit in 11)",
    Kind.INVALID_NAME: "agent names use lowercase letters, digits and '-'",
    Kind.BUILD_FAILED: "fix the agent's flake (the nix error is above); nothing was left behind, "
    "so the create can simply be retried",
    Kind.START_FAILED: "see `systemctl status container@{name}` and "
    "`journalctl -u container@{name}`",
    Kind.STOP_FAILED: "see `journalctl -u container@{name}`; `nixos-container terminate {name}` "
    "kills it",
    Kind.UPDATE_FAILED: "the container keeps its previous system; fix the agent's flake (the nix "
    "error is above) and apply again",
    Kind.NOT_RUNNING: "start the container first",
    Kind.UNAVAILABLE: "the nixos backend needs NixOS with boot.enableContainers = true and "
    "hive-c0re running as root; elsewhere set HIVE_CONTAINER_BACKEND=bwrap",
    Kind.FAILED: "see the message above; `journalctl -u container@{name}` may say more",
}


def classify(stderr: str) -> BackendErrorKind | None:
    """The kind of a nixos-container failure from its stderr, or None if unrecognized."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    for text in (lines[-1] if lines else "", stderr):
        for pattern, kind in _CLASSIFY:
            if pattern.search(text):
                return kind
    return None


def nspawn_flags(container: str, mounts: Sequence[Mount]) -> str:
    """EXTRA_NSPAWN_FLAGS for `mounts`; BackendError for a path nspawn would not get intact."""
    flags = []
    for mount in mounts:
        for what, path in (("host path", str(mount.host)), ("container path", mount.container)):
            if _SAFE_PATH.fullmatch(path):
                continue
            if not path.startswith("/"):
                problem = "is not absolute"
            else:
                bad = next(ch for ch in path if not _SAFE_PATH.fullmatch(f"/{ch}"))
                problem = {" ": "contains a space", ":": "contains ':'"}.get(
                    bad, f"contains {bad!r}"
                )
            raise BackendError(
                Kind.FAILED,
                f"cannot bind-mount {mount.host} at {mount.container} in {container}: the {what} "
                f"{path!r} {problem}, and nixos-container hands bind mounts to systemd-nspawn "
                "unquoted (EXTRA_NSPAWN_FLAGS is split on whitespace, ':' separates source and "
                f"target), so paths may contain only {_SAFE_PATH_CHARS}",
                "move the hive state and run dirs (HIVE_STATE_DIR, HIVE_RUN_DIR) to such a path",
            )
        option = "--bind" if mount.writable else "--bind-ro"
        flags.append(f"{option}={mount.host}:{mount.container}")
    return " ".join(flags)


def _bind_sources(flags_value: str) -> list[Path]:
    sources = []
    for flag in flags_value.split():
        option, _, spec = flag.partition("=")
        if option in ("--bind", "--bind-ro") and spec.startswith("/"):
            sources.append(Path(spec.partition(":")[0]))
    return sources


def _tail(text: str) -> str:
    text = text.strip()
    if len(text) > STDERR_TAIL_CHARS:
        text = "…" + text[-STDERR_TAIL_CHARS:]
    return text


@dataclass(frozen=True)
class CliResult:
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str

    @property
    def verb(self) -> str:
        return self.argv[1] if len(self.argv) > 1 else ""

    @property
    def container(self) -> str:
        return self.argv[2] if len(self.argv) > 2 else ""


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
                        raise self._failure(built, classify(built.stderr) or Kind.BUILD_FAILED)
            self._make_sources(spec.mounts)
            self._write_flags(name, flags)

    async def start(self, agent: str) -> None:
        name = self._container(agent)
        # nspawn refuses to start when a bind source is missing (e.g. the run dir after a reboot).
        self._make_sources_from_conf(name)
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
                kind = classify(result.stderr)
                if kind is Kind.UPDATE_FAILED:  # the reload, after the new system was set
                    raise self._failure(
                        result,
                        kind,
                        "the new system is installed but the running container did not switch "
                        "to it: restart the container (stop, start); "
                        f"`journalctl -u container@{name}` says why",
                    )
                if kind not in (Kind.NOT_FOUND, Kind.INVALID_NAME, Kind.UNAVAILABLE):
                    kind = Kind.UPDATE_FAILED
                raise self._failure(result, kind)
            self._make_sources(spec.mounts)
            mounts_changed = self._write_flags(name, flags)
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
                Kind.FAILED,
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
            _HINT[Kind.UNAVAILABLE],
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
        name = result.container
        summary = _SUMMARY[kind].format(name=name, verb=result.verb)
        said = _tail(result.stderr) or _tail(result.stdout) or "no output"
        return BackendError(
            kind,
            f"{summary} (`{shlex.join(result.argv)}` exited with {result.returncode}): {said}",
            hint or _HINT[kind].format(name=name),
        )

    async def _undo_create(self, name: str) -> None:
        result = await self._call(name, "destroy", name)
        if result.returncode != 0:
            log.warning("could not remove the half-made container %s: %s", name, result.stderr)

    def _has_system(self, name: str) -> bool:
        return (self._profiles_dir / name / "system").exists()

    def _conf(self, name: str) -> Path:
        return self._conf_dir / f"{name}.conf"

    def _write_flags(self, name: str, flags: str) -> bool:
        """Put EXTRA_NSPAWN_FLAGS into an existing .conf (never create one: that is the CLI's
        record that the container exists). True if that changed the .conf."""
        conf = self._conf(name)
        try:
            text = conf.read_text()
            mode = conf.stat().st_mode & 0o7777
        except FileNotFoundError:
            raise BackendError(
                Kind.FAILED,
                f"nixos-container made {name} but its config {conf} is not there",
                "point the backend's conf_dir at the host's nixos-container dir "
                "(/etc/nixos-containers; /etc/containers before system.stateVersion 22.05)",
            ) from None
        lines = [line for line in text.splitlines() if not line.startswith(_FLAGS_LINE)]
        if flags:
            lines.append(f'{_FLAGS_LINE}"{flags}"')
        new = "".join(f"{line}\n" for line in lines)
        if new == text:
            return False
        temp = conf.with_name(f".{conf.name}.hive-tmp")
        temp.write_text(new)
        os.chmod(temp, mode)
        os.replace(temp, conf)
        return True

    def _make_sources(self, mounts: Sequence[Mount]) -> None:
        for mount in mounts:
            mount.host.mkdir(mode=0o700, parents=True, exist_ok=True)

    def _make_sources_from_conf(self, name: str) -> None:
        try:
            text = self._conf(name).read_text()
        except FileNotFoundError:
            return  # the CLI says it does not exist
        for line in text.splitlines():
            if line.startswith(_FLAGS_LINE):
                value = line[len(_FLAGS_LINE) :].strip().strip('"')
                for source in _bind_sources(value):
                    source.mkdir(mode=0o700, parents=True, exist_ok=True)

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
