"""The `bwrap` backend: every turn of an agent runs in a bubblewrap sandbox (DESIGN §1, §3).

Agents run their full coding tools (Bash, Write, …) in it: the sandbox is the security boundary.

What the agent sees (`/` is a tmpfs bwrap makes, remounted read-only at the end):

- its bind mounts (activities.backends.mounts): /run/hive (its run dir: its MCP socket and its
  model proxy socket, nothing of any other agent), /root/.claude (credentials, sessions), /work,
  and for hm1nd /agents (every agent's proposed repo), all writable; and its applied Claude Code
  config at /hive/config, read-only. Recorded when the container is created or updated;
- read-only: /usr (with /bin, /lib… as on the host), a few public files of /etc, a generated
  /etc/passwd, group, hosts and nsswitch.conf, Python (its base prefix at its own path, the venv
  at /opt/hive/venv), hive's in-container package (agent_harness, which imports none of hive's
  others) at /opt/hive/src, and the claude binary's directory at /opt/hive/claude unless it
  lives in /usr (all of them must be world-readable on the host: the sandbox is not root there);
- its own /proc, a minimal /dev, tmpfs /tmp, /dev/shm and HOME (/root).

Never: the state dir (hive.db, other agents' homes and work, repos), other agents' run dirs, the
host's /etc secrets (shadow, npmrc, pip.conf, ssh), or the checkout hive runs from: only the
harness's package directory is bound, so a state dir inside the checkout stays invisible. It does
learn host *paths*: /proc/self/mountinfo prints each mount's root within its filesystem, so the
host paths of its bind sources (state dir, run dir, checkout, Python) show there. Nothing practical
hides them (the kernel prints them for every process; masking the file per pid is not possible,
and only a filesystem of its own per mount would change the root shown); they grant no access.

Who it is. The agent is root (uid 0, HOME=/root) only inside a user namespace of its own, which
maps exactly one host uid, with no capabilities and no_new_privs:

- hive-c0re as root: the host uid is HiveSettings.sandbox_uid (HIVE_SANDBOX_UID, gid the same
  number). bwrap itself stays root, to reach bind sources only root can (a Python under /root,
  a 0700 state dir), makes the ipc, pid, net, uts (and cgroup) namespaces but no user namespace
  (as root it would make a 0 -> 0 one, where nobody can become another uid), keeps only
  cap_setuid/cap_setgid, and runs `setpriv --reuid U --regid U --clear-groups --no-new-privs --
  unshare --user --map-root-user --wd /work -- setpriv --bounding-set=-all --inh-caps=-all --
  <command>` (SETPRIV, UNSHARE from util-linux, checked once with a probe). /proc/sys, the host's
  kernel settings, is then not writable (its files are host root's), and what the agent writes
  is U's on the host. Its writable mount sources must be U's: hive-c0re makes them, its sockets,
  pasted credentials and new agents' repos as root, so before every exec each one is adopted
  (activities.backends.ownership: fd-relative, never following the agent's links, walking only
  directories U does not own yet). The read-only ones are made readable by U. Every agent's
  sandbox runs as the same U (apart from one another by their namespaces, not by uid). The
  tmpfs /tmp, /dev/shm and HOME are host root's (nobody inside): made 1777/0777.
- hive-c0re unprivileged: `--unshare-all --unshare-user --uid 0 --gid 0`: bwrap maps 0 to the
  caller, whose files the agent's are.

Namespaces: mount, pid, ipc, uts, net, cgroup, user, as above. The network is only the sandbox's
loopback; the model API is reached through `hive-agent run` (agent_harness.sandbox_run), which
forwards 127.0.0.1:MODEL_PORT to /run/hive/model.sock, where hive-c0re serves a per-agent proxy
(api.model_proxy.ModelProxies: `needs_model_proxy`). Temporal, the dashboard, the admin socket
and every other host port are unreachable (their loopback is not this loopback), and so are
abstract unix sockets (they belong to the network namespace).

Processes: bwrap is started as the leader of its own process group (the turn kills the group),
with PR_SET_PDEATHSIG so it dies with hive-c0re, and `--die-with-parent` so the sandbox dies
with bwrap (the sandbox's pid 1, bwrap's, stays root and keeps it: the command's own is reset by
its change of uid, but it dies with its pid namespace). No `--new-session`: with no controlling
terminal (start_new_session) there is no TIOCSTI to guard against, and the whole sandbox stays
in the group the caller kills.

Secrets in the environment (API keys, OAuth tokens) reach the sandbox through bwrap's own
environment, never its argv (any host user can read a command line).

There is no image to build: create/start/stop/update/destroy are bookkeeping in a small state
file per container (`<state>/containers/h-<name>.bwrap`, JSON with the ContainerSpec's mounts);
each exec makes a fresh sandbox from it, so `update` takes effect at the next turn. `stop` and
`destroy` also kill the sandboxes this process started for the agent.

The sandbox itself, as bwrap's arguments, the command run inside and its environment, is built in
activities.backends.bwrap_layout; this module keeps the records, prepares the mounts and runs it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from activities.backends.base import (
    AgentView,
    BackendError,
    BackendErrorKind,
    ContainerSpec,
    ContainerStatus,
    Mount,
)
from activities.backends.bwrap_layout import (
    SETPRIV,
    UNSHARE,
    HiveLayout,
    as_root,
    bwrap_args,
    drop_argv,
    generated_etc,
    hive_agent_argv,
    hive_layout,
    sandbox_command,
    sandbox_env,
)
from activities.backends.mounts import CONTAINER_VIEW
from activities.backends.ownership import adopt, share_read_only
from hyperhive.child_process import LiveProcesses, dying_with_parent
from hyperhive.domain import InvalidName, check_agent_name
from hyperhive.settings import HiveSettings

log = logging.getLogger(__name__)

BWRAP_HINT = (
    "install bubblewrap (Debian/Ubuntu: apt-get install bubblewrap), or set "
    "HIVE_CONTAINER_BACKEND=process for development without isolation"
)
STDOUT_LIMIT = 16 * 1024 * 1024  # one stream-json line can carry a large tool result


@dataclass(frozen=True)
class _Record:
    status: ContainerStatus
    flake_dir: str
    mounts: tuple[Mount, ...]

    def to_json(self) -> str:
        return json.dumps(
            {
                "status": self.status.value,
                "flake_dir": self.flake_dir,
                "mounts": [
                    {"host": str(m.host), "container": m.container, "writable": m.writable}
                    for m in self.mounts
                ],
            },
            indent=2,
        )

    @classmethod
    def from_json(cls, text: str) -> _Record:
        data: dict[str, Any] = json.loads(text)
        return cls(
            status=ContainerStatus(data["status"]),
            flake_dir=str(data.get("flake_dir", "")),
            mounts=tuple(
                Mount(Path(m["host"]), str(m["container"]), bool(m.get("writable", False)))
                for m in data.get("mounts", [])
            ),
        )


class BwrapBackend:
    name = "bwrap"
    # The container is the security boundary: agents' tools run without prompts inside.
    sandboxed = True
    # hive-c0re must serve api.model_proxy for every agent: the sandbox has no other way out.
    needs_model_proxy = True

    def __init__(self, settings: HiveSettings, *, bwrap: str = "bwrap") -> None:
        self._settings = settings
        self._bwrap = bwrap
        self._live = LiveProcesses()
        self._drop_checked = False

    # -- the interface ---------------------------------------------------------------------------

    def view(self, agent: str) -> AgentView:
        return CONTAINER_VIEW

    def hive_agent_command(self) -> list[str]:
        """`hive-agent` inside: the sandbox's Python with hive's packages first on sys.path."""
        return hive_agent_argv(self.layout().python)

    async def create(self, spec: ContainerSpec) -> None:
        path = self._state_file(spec.agent)
        if path.exists():
            return
        self._write(spec.agent, _Record(ContainerStatus.DOWN, str(spec.flake_dir), spec.mounts))

    async def start(self, agent: str) -> None:
        record = self._require(agent)
        self._require_bwrap()
        await self._require_drop()
        if record.status is not ContainerStatus.UP:
            self._write(agent, _replace_status(record, ContainerStatus.UP))

    async def stop(self, agent: str) -> None:
        record = self._read(agent)
        self._live.kill(agent)
        if record is not None and record.status is not ContainerStatus.DOWN:
            self._write(agent, _replace_status(record, ContainerStatus.DOWN))

    async def update(self, spec: ContainerSpec) -> None:
        record = self._require(spec.agent)
        # Running sandboxes keep their mounts; the next turn gets the new ones.
        self._write(spec.agent, _Record(record.status, str(spec.flake_dir), spec.mounts))

    async def destroy(self, agent: str) -> None:
        self._live.kill(agent)
        self._state_file(agent).unlink(missing_ok=True)

    async def status(self, agent: str) -> ContainerStatus:
        record = self._read(agent)
        return record.status if record is not None else ContainerStatus.ABSENT

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
        record = self._read(agent)
        if record is None or record.status is not ContainerStatus.UP:
            raise BackendError(
                BackendErrorKind.NOT_RUNNING,
                f"container h-{agent} is {'absent' if record is None else record.status.value}: "
                "nothing runs in it",
                "start the agent's container first (spawning the agent does)",
            )
        bwrap = self._require_bwrap()
        await self._require_drop()
        layout = self.layout()
        await asyncio.to_thread(self._prepare_mounts, agent, record.mounts)
        argv = list(argv)
        if argv and argv[0] in (self._settings.claude_bin, layout.claude_host):
            if layout.claude is None:
                raise FileNotFoundError(2, "claude not found on this host", argv[0])
            argv[0] = layout.claude
        data = generated_etc(agent)
        pipes: list[int] = []
        try:
            data_args: list[str] = []
            for dest, content in data.items():
                fd = _pipe_with(content)
                pipes.append(fd)
                # Readable by all (bwrap would make it 0600, host root's, nobody's inside).
                data_args += ["--perms", "0644", "--ro-bind-data", str(fd), dest]
            args = bwrap_args(agent, record.mounts, layout, data_args)
            inner = sandbox_command(self._settings.sandbox_uid, layout.python, argv)
            # A turn must not outlive hive-c0re: after a crash it is retried, not duplicated.
            command, preexec = dying_with_parent([bwrap, *args, "--", *inner])
            process = await asyncio.create_subprocess_exec(
                *command,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                cwd="/",
                env=sandbox_env(env),
                start_new_session=True,
                preexec_fn=preexec,
                pass_fds=pipes,
                limit=STDOUT_LIMIT,
            )
        finally:
            for fd in pipes:
                os.close(fd)
        self._live.add(agent, process)
        assert process.stdin is not None
        # A sandbox that fails to start closes its stdin early: its exit code and stderr say why.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            process.stdin.write(stdin)
            await process.stdin.drain()
        if not keep_stdin:
            process.stdin.close()
        return process

    # -- the sandbox -----------------------------------------------------------------------------

    def layout(self) -> HiveLayout:
        """Where hive's Python, packages and claude go inside (the same for every agent)."""
        return hive_layout(self._settings)

    # -- helpers ---------------------------------------------------------------------------------

    def _require_bwrap(self) -> str:
        found = shutil.which(self._bwrap)
        if found is None:
            raise BackendError(
                BackendErrorKind.UNAVAILABLE,
                f"bubblewrap ({self._bwrap}) is not installed or not on PATH: agents' sandboxes "
                "cannot run",
                BWRAP_HINT,
            )
        return found

    async def _require_drop(self) -> None:
        """As root: setpriv and unshare are there, and the sandbox uid can make a user namespace
        (checked once per backend: a few ms)."""
        if self._drop_checked or not as_root():
            return
        missing = [tool for tool in (SETPRIV, UNSHARE) if not os.access(tool, os.X_OK)]
        if missing:
            raise BackendError(
                BackendErrorKind.UNAVAILABLE,
                f"{' and '.join(missing)} not found: hive-c0re runs as root, and agents' bwrap "
                "sandboxes need setpriv and unshare (util-linux) to run as the unprivileged "
                f"uid {self._settings.sandbox_uid} instead of root",
                "install util-linux (Debian/Ubuntu: apt-get install util-linux), or run hive-c0re "
                "as an unprivileged user",
            )
        probe = await asyncio.create_subprocess_exec(
            *drop_argv(self._settings.sandbox_uid, cwd=None),
            "/usr/bin/true",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            cwd="/",
        )
        _, err = await probe.communicate()
        if probe.returncode != 0:
            raise BackendError(
                BackendErrorKind.UNAVAILABLE,
                f"uid {self._settings.sandbox_uid} cannot make a user namespace on this host, so "
                "agents' bwrap sandboxes cannot run unprivileged: "
                f"{err.decode(errors='replace').strip() or f'exit {probe.returncode}'}",
                "allow unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1; "
                "on Ubuntu 24.04+ kernel.apparmor_restrict_unprivileged_userns=0), or run "
                "hive-c0re as an unprivileged user",
            )
        self._drop_checked = True

    def _prepare_mounts(self, agent: str, mounts: Iterable[Mount]) -> None:
        """Mount sources exist; as root, the writable ones belong to the sandbox uid
        (activities.backends.ownership) and the read-only ones are readable by it."""
        if not as_root():
            _make_mount_dirs(mounts)
            return
        uid = self._settings.sandbox_uid
        for mount in mounts:
            try:
                if mount.writable:
                    adopt(mount.host, uid, uid)
                else:
                    share_read_only(mount.host)
            except OSError as e:
                raise BackendError(
                    BackendErrorKind.FAILED,
                    f"cannot give {mount.host} ({mount.container} in container h-{agent}) to "
                    f"the sandbox uid {uid}: {e}",
                    "check that the state and run dirs are on a local filesystem where root "
                    "can change owners (not NFS with root_squash)",
                ) from e

    def _state_file(self, agent: str) -> Path:
        try:
            check_agent_name(agent)
        except InvalidName as e:
            kind = (
                BackendErrorKind.NAME_TOO_LONG if len(agent) > 9 else BackendErrorKind.INVALID_NAME
            )
            raise BackendError(kind, str(e), "choose another name") from e
        return self._settings.state_path / "containers" / f"h-{agent}.bwrap"

    def _read(self, agent: str) -> _Record | None:
        path = self._state_file(agent)
        try:
            return _Record.from_json(path.read_text())
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError) as e:
            raise BackendError(
                BackendErrorKind.FAILED,
                f"the state file of container h-{agent} ({path}) is damaged: {e}",
                "destroy the container and create it again",
            ) from e

    def _require(self, agent: str) -> _Record:
        record = self._read(agent)
        if record is None:
            raise BackendError(
                BackendErrorKind.NOT_FOUND,
                f"container h-{agent} does not exist",
                "spawn the agent first",
            )
        return record

    def _write(self, agent: str, record: _Record) -> None:
        path = self._state_file(agent)
        path.parent.mkdir(parents=True, exist_ok=True)
        _make_mount_dirs(record.mounts)
        temp = path.with_name(path.name + ".tmp")
        temp.write_text(record.to_json())
        temp.replace(path)


def _make_mount_dirs(mounts: Iterable[Mount]) -> None:
    """The agent's mount sources, made if missing (bwrap refuses to bind a missing source): its
    writable data dirs private to it (credentials live in one), the read-only ones readable."""
    for mount in mounts:
        if not os.path.lexists(mount.host):
            mount.host.mkdir(parents=True, mode=0o700 if mount.writable else 0o755, exist_ok=True)


def _replace_status(record: _Record, status: ContainerStatus) -> _Record:
    return _Record(status, record.flake_dir, record.mounts)


def _pipe_with(content: bytes) -> int:
    """A pipe's read end holding `content` (small: it must fit the pipe buffer)."""
    read_fd, write_fd = os.pipe()
    try:
        os.write(write_fd, content)
    finally:
        os.close(write_fd)
    return read_fd
