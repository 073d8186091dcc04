"""The `bwrap` backend: every turn of an agent runs in a bubblewrap sandbox (DESIGN §1, §3).

Agents run their full coding tools (Bash, Write, …) in it: the sandbox is the security boundary.

What the agent sees (`/` is a tmpfs bwrap makes, remounted read-only at the end):

- its bind mounts (activities.backends.mounts): /run/hive (its run dir: its MCP socket and its
  model proxy socket, nothing of any other agent), /root/.claude (credentials, sessions), /work,
  and for hm1nd /agents (every agent's proposed repo), all writable; and its applied Claude Code
  config at /hive/config, read-only. Recorded when the container is created or updated;
- read-only: /usr (with /bin, /lib… as on the host), a few public files of /etc, a generated
  /etc/passwd, group, hosts and nsswitch.conf, Python (its base prefix at its own path, the venv
  at /opt/hive/venv), hive's two in-container packages (agent_harness, hyperhive) at
  /opt/hive/src, and the claude binary's directory at /opt/hive/claude unless it lives in /usr
  (all of them must be world-readable on the host: the sandbox is not root there);
- its own /proc, a minimal /dev, tmpfs /tmp, /dev/shm and HOME (/root).

Never: the state dir (hive.db, other agents' homes and work, repos), other agents' run dirs, the
host's /etc secrets (shadow, npmrc, pip.conf, ssh), or the checkout hive runs from: only the two
package directories are bound, so a state dir inside the checkout stays invisible. It does learn
host *paths*: /proc/self/mountinfo prints each mount's root within its filesystem, so the host
paths of its bind sources (state dir, run dir, checkout, Python) show there. Nothing practical
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
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import agent_harness
import hyperhive
from activities.backends.base import (
    AgentView,
    BackendError,
    BackendErrorKind,
    ContainerSpec,
    ContainerStatus,
    Mount,
)
from activities.backends.mounts import CONTAINER_VIEW, agent_mounts
from activities.backends.ownership import adopt, share_read_only
from agent_harness.sandbox_run import DEFAULT_MODEL_SOCKET
from hyperhive.child_process import dying_with_parent, kill_process_group
from hyperhive.domain import MANAGER_NAME, InvalidName, check_agent_name
from hyperhive.settings import HiveSettings

log = logging.getLogger(__name__)

BWRAP_HINT = (
    "install bubblewrap (Debian/Ubuntu: apt-get install bubblewrap), or set "
    "HIVE_CONTAINER_BACKEND=process for development without isolation"
)
# As root, the sandbox drops to HiveSettings.sandbox_uid in its own user namespace with these
# (util-linux; inside they come from the host's /usr, which the sandbox shows read-only).
SETPRIV = "/usr/bin/setpriv"
UNSHARE = "/usr/bin/unshare"
# The namespaces `--unshare-all` would give, but for the user namespace: as root bwrap would make
# a 0 -> 0 one, in which setpriv cannot become the sandbox uid (EINVAL). `unshare --user` makes it.
NAMESPACES_AS_ROOT = (
    "--unshare-ipc",
    "--unshare-pid",
    "--unshare-net",
    "--unshare-uts",
    "--unshare-cgroup-try",
)
# Inside the sandbox: where claude finds the model API (its own loopback; see sandbox_run).
MODEL_PORT = 8787
MODEL_SOCKET = DEFAULT_MODEL_SOCKET
# Where hive's own code appears inside.
HIVE_DIR = PurePosixPath("/opt/hive")
VENV_DIR = HIVE_DIR / "venv"
SRC_DIR = HIVE_DIR / "src"
CLAUDE_DIR = HIVE_DIR / "claude"
IN_CONTAINER_PACKAGES = (agent_harness, hyperhive)
SANDBOX_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Top-level links/dirs of a Debian root (merged /usr makes most of them symlinks).
ROOT_ENTRIES = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
# Public, needed-to-run parts of the host's /etc (dynamic linker, CA certificates, time zone,
# Debian alternatives for /usr/bin links). Not passwd/shadow, npmrc, pip.conf, ssh, gitconfig.
ETC_ENTRIES = (
    "alternatives",
    "ca-certificates",
    "ca-certificates.conf",
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "localtime",
    "timezone",
    "os-release",
    "protocols",
    "services",
    "mime.types",
    "ssl",
    "terminfo",
)
# Proxies of the host mean nothing in a sandbox without a network; the model API goes through
# MODEL_PORT, and hive-c0re's proxy uses the host's settings.
DROPPED_ENV = frozenset({"http_proxy", "https_proxy", "all_proxy", "no_proxy"})
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


@dataclass(frozen=True)
class HiveLayout:
    """Where hive's Python, its in-container packages and claude are, inside the sandbox."""

    binds: tuple[tuple[str, str], ...]  # (host path, sandbox path), read-only, in order
    python: str
    claude: str | None  # None: claude_bin cannot be found on this host
    claude_host: str | None


class BwrapBackend:
    name = "bwrap"
    # The container is the security boundary: agents' tools run without prompts inside.
    sandboxed = True
    # hive-c0re must serve api.model_proxy for every agent: the sandbox has no other way out.
    needs_model_proxy = True

    def __init__(self, settings: HiveSettings, *, bwrap: str = "bwrap") -> None:
        self._settings = settings
        self._bwrap = bwrap
        self._live: dict[str, set[asyncio.subprocess.Process]] = {}
        self._drop_checked = False

    # -- the interface ---------------------------------------------------------------------------

    def view(self, agent: str) -> AgentView:
        return CONTAINER_VIEW

    def hive_agent_command(self) -> list[str]:
        """`hive-agent` inside: the sandbox's Python with hive's packages first on sys.path."""
        return _hive_agent_argv(self.layout().python)

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
        self._kill_live(agent)
        if record is not None and record.status is not ContainerStatus.DOWN:
            self._write(agent, _replace_status(record, ContainerStatus.DOWN))

    async def update(self, spec: ContainerSpec) -> None:
        record = self._require(spec.agent)
        # Running sandboxes keep their mounts; the next turn gets the new ones.
        self._write(spec.agent, _Record(record.status, str(spec.flake_dir), spec.mounts))

    async def destroy(self, agent: str) -> None:
        self._kill_live(agent)
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
        data = _generated_etc(agent)
        pipes: list[int] = []
        try:
            data_args: list[str] = []
            for dest, content in data.items():
                fd = _pipe_with(content)
                pipes.append(fd)
                # Readable by all (bwrap would make it 0600, host root's, nobody's inside).
                data_args += ["--perms", "0644", "--ro-bind-data", str(fd), dest]
            args = self.bwrap_args(agent, record.mounts, layout, data_args)
            inner = [
                *self.drop_argv(),
                *_hive_agent_argv(layout.python),
                "run",
                "--model-socket",
                MODEL_SOCKET,
                "--port",
                str(MODEL_PORT),
                "--",
                *argv,
            ]
            # A turn must not outlive hive-c0re: after a crash it is retried, not duplicated.
            command, preexec = dying_with_parent([bwrap, *args, "--", *inner])
            process = await asyncio.create_subprocess_exec(
                *command,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                cwd="/",
                env=self.sandbox_env(env),
                start_new_session=True,
                preexec_fn=preexec,
                pass_fds=pipes,
                limit=STDOUT_LIMIT,
            )
        finally:
            for fd in pipes:
                os.close(fd)
        live = self._live.setdefault(agent, set())
        live.difference_update({p for p in live if p.returncode is not None})
        live.add(process)
        assert process.stdin is not None
        # A sandbox that fails to start closes its stdin early: its exit code and stderr say why.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            process.stdin.write(stdin)
            await process.stdin.drain()
        process.stdin.close()
        return process

    # -- the sandbox -----------------------------------------------------------------------------

    def layout(self) -> HiveLayout:
        """Where hive's Python, packages and claude go inside (the same for every agent)."""
        binds: list[tuple[str, str]] = []
        prefix = Path(sys.prefix)
        base = Path(sys.base_prefix).resolve()
        if not _under(base, Path("/usr")):
            # Its own path: a venv's python links there, and the interpreter may have an
            # absolute RUNPATH to it. Must not be hidden by (or create dirs in) an agent's mount.
            clash = _clash(str(base), self._reserved())
            if clash is not None:
                raise BackendError(
                    BackendErrorKind.UNAVAILABLE,
                    f"Python's base prefix {base} lies under {clash}, where agents' containers "
                    "mount their own data, so the bwrap sandbox cannot show it",
                    "install Python (and hive's venv) elsewhere, e.g. under /opt or /usr/local",
                )
            binds.append((str(base), str(base)))
        if prefix.resolve() != base:  # a venv: shown at /opt/hive/venv (its python links to base)
            binds.append((str(prefix.resolve()), str(VENV_DIR)))
            try:
                relative = Path(sys.executable).relative_to(prefix)
            except ValueError:
                relative = Path("bin") / "python3"
            python = str(VENV_DIR / relative.as_posix())
        else:
            python = os.path.realpath(sys.executable)
        for package in IN_CONTAINER_PACKAGES:
            host = Path(package.__file__ or "").resolve().parent
            binds.append((str(host), str(SRC_DIR / host.name)))
        claude_host = self._claude_host()
        claude: str | None = None
        if claude_host is not None:
            real = Path(claude_host)
            if _under(real, Path("/usr")):
                claude = str(real)
            else:
                binds.append((str(real.parent), str(CLAUDE_DIR)))
                claude = str(CLAUDE_DIR / real.name)
        return HiveLayout(tuple(binds), python, claude, claude_host)

    def bwrap_args(
        self,
        agent: str,
        mounts: Iterable[Mount],
        layout: HiveLayout,
        data_args: Sequence[str] = (),
    ) -> list[str]:
        """bwrap's options for one sandbox of `agent` (without the command)."""
        mounts = list(mounts)
        reserved = {m.container for m in mounts}
        as_root = _as_root()
        if as_root:
            # bwrap keeps root to bind what only root can reach (a Python under /root, the state
            # dir) and hands over to drop_argv() with just the capabilities to change uid.
            args = [*NAMESPACES_AS_ROOT, "--die-with-parent", "--cap-drop", "ALL"]
            args += ["--cap-add", "cap_setuid", "--cap-add", "cap_setgid"]
        else:
            # Look like root inside (HOME=/root, IS_SANDBOX=1), owning files as the caller does.
            args = ["--unshare-all", "--die-with-parent", "--cap-drop", "ALL"]
            args += ["--unshare-user", "--uid", "0", "--gid", "0"]
        args += ["--hostname", f"h-{agent}", "--ro-bind", "/usr", "/usr"]
        for entry in ROOT_ENTRIES:
            if os.path.islink(entry):
                args += ["--symlink", os.readlink(entry), entry]
            elif os.path.isdir(entry):
                args += ["--ro-bind", entry, entry]
        # The sandbox's own /tmp and /dev/shm: fresh tmpfs, not the host's. As root, bwrap makes
        # them (and HOME) owned by host root, nobody inside: open to all, like /tmp. Only the
        # sandbox's processes, all one uid, ever see them.
        args += ["--proc", "/proc", "--dev", "/dev", "--perms", "1777", "--tmpfs", "/tmp"]  # noqa: S108
        args += ["--perms", "1777", "--tmpfs", "/dev/shm", "--dir", "/etc"]  # noqa: S108
        for name in ETC_ENTRIES:
            args += ["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"]
        args += data_args
        # HOME: a private tmpfs; only /root/.claude (a mount) persists.
        args += ["--perms", "0777" if as_root else "0700", "--tmpfs", CONTAINER_VIEW.home]
        # Directories made so far; the others above a mount point get an explicit --dir (0755):
        # bwrap would make them 0700, closed to the sandbox uid (/opt, /run, /root/.pyenv).
        made = {"/", "/usr", "/proc", "/dev", "/etc", CONTAINER_VIEW.home}
        for host, inside in layout.binds:
            clash = _clash(inside, reserved)
            if clash is not None:
                raise BackendError(
                    BackendErrorKind.FAILED,
                    f"container h-{agent} mounts {clash}, over {inside} where the sandbox needs "
                    f"{host}",
                    "mount the agent's data elsewhere",
                )
            args += [*_parent_dirs(inside, made), "--ro-bind", host, inside]
        for mount in mounts:
            bind = "--bind" if mount.writable else "--ro-bind"
            args += [*_parent_dirs(mount.container, made), bind, str(mount.host), mount.container]
        # As root, bwrap (without capabilities) cannot enter /work, the sandbox uid's: unshare
        # does (drop_argv).
        args += ["--remount-ro", "/", "--chdir", "/" if as_root else CONTAINER_VIEW.work]
        return args

    def drop_argv(self, cwd: str | None = CONTAINER_VIEW.work) -> list[str]:
        """What runs the command inside bwrap: as root, the sandbox uid, root in its own user
        namespace (uid_map `0 <uid> 1`) with no capabilities left, in `cwd`; else nothing."""
        if not _as_root():
            return []
        uid = self._settings.sandbox_uid
        wd = [f"--wd={cwd}"] if cwd is not None else []
        return [
            *(SETPRIV, f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--no-new-privs"),
            *("--", UNSHARE, "--user", "--map-root-user", *wd),
            *("--", SETPRIV, "--bounding-set=-all", "--inh-caps=-all", "--"),
        ]

    def sandbox_env(self, env: Mapping[str, str]) -> dict[str, str]:
        """The turn's environment as the sandbox gets it (through bwrap's own environment)."""
        inside = {k: v for k, v in env.items() if k.lower() not in DROPPED_ENV}
        inside.update(
            PATH=SANDBOX_PATH,
            HOME=CONTAINER_VIEW.home,
            ANTHROPIC_BASE_URL=f"http://127.0.0.1:{MODEL_PORT}",
        )
        return inside

    # -- helpers ---------------------------------------------------------------------------------

    def _reserved(self) -> set[str]:
        """Where agents' containers mount their own data (the manager's mounts are a superset)."""
        return {m.container for m in agent_mounts(self._settings, MANAGER_NAME)} | {
            CONTAINER_VIEW.work,
            "/run/hive",
        }

    def _claude_host(self) -> str | None:
        configured = self._settings.claude_bin
        found = configured if "/" in configured else shutil.which(configured)
        if found is None or not os.path.isfile(found):
            return None
        return os.path.realpath(found)

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
        if self._drop_checked or not _as_root():
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
            *self.drop_argv(cwd=None),
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
        if not _as_root():
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

    def _kill_live(self, agent: str) -> None:
        for process in self._live.pop(agent, set()):
            if process.returncode is None:
                kill_process_group(process.pid)

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


def _hive_agent_argv(python: str) -> list[str]:
    boot = (
        f"import sys;sys.path.insert(0,{str(SRC_DIR)!r});"
        "from agent_harness.cli import main;sys.exit(main())"
    )
    # -I: no PYTHON* variables, no user site, and not the cwd (/work) on sys.path.
    return [python, "-I", "-c", boot]


def _make_mount_dirs(mounts: Iterable[Mount]) -> None:
    """The agent's mount sources, made if missing (bwrap refuses to bind a missing source): its
    writable data dirs private to it (credentials live in one), the read-only ones readable."""
    for mount in mounts:
        if not os.path.lexists(mount.host):
            mount.host.mkdir(parents=True, mode=0o700 if mount.writable else 0o755, exist_ok=True)


def _parent_dirs(path: str, made: set[str]) -> list[str]:
    """`--dir` for each directory above `path` not in `made` (which they are then added to)."""
    args: list[str] = []
    for parent in reversed(PurePosixPath(path).parents):
        if str(parent) not in made:
            made.add(str(parent))
            args += ["--dir", str(parent)]
    return args


def _as_root() -> bool:
    """hive-c0re runs as root: its sandboxes then run as HiveSettings.sandbox_uid."""
    return os.geteuid() == 0


def _replace_status(record: _Record, status: ContainerStatus) -> _Record:
    return _Record(status, record.flake_dir, record.mounts)


def _under(path: Path | str, parent: Path | str) -> bool:
    return Path(path) == Path(parent) or Path(parent) in Path(path).parents


def _clash(path: str, mount_points: Iterable[str]) -> str | None:
    """The mount point `path` is at, under, or above, if any."""
    for point in mount_points:
        if _under(path, point) or _under(point, path):
            return point
    return None


def _generated_etc(agent: str) -> dict[str, bytes]:
    """/etc files written for the sandbox instead of the host's."""
    host = f"h-{agent}"
    return {
        "/etc/passwd": b"root:x:0:0:root:/root:/bin/sh\n"
        b"nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
        "/etc/group": b"root:x:0:\nnogroup:x:65534:\n",
        "/etc/hosts": f"127.0.0.1\tlocalhost {host}\n::1\tlocalhost {host}\n".encode(),
        "/etc/hostname": f"{host}\n".encode(),
        "/etc/nsswitch.conf": b"passwd: files\ngroup: files\nhosts: files\n",
    }


def _pipe_with(content: bytes) -> int:
    """A pipe's read end holding `content` (small: it must fit the pipe buffer)."""
    read_fd, write_fd = os.pipe()
    try:
        os.write(write_fd, content)
    finally:
        os.close(write_fd)
    return read_fd
