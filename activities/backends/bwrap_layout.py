"""The bwrap backend's sandbox, as arguments (activities.backends.bwrap runs them; its docstring
says what the agent sees and who it is, and why).

- hive_layout: where hive's Python, its in-container package and claude appear inside;
- bwrap_args: bwrap's options for one sandbox (namespaces, /usr and the root links, public /etc
  files, tmpfs /tmp, /dev/shm and HOME, hive's binds, the agent's mounts, a read-only `/`);
- sandbox_command: what runs inside, the uid drop (drop_argv, as root) then `hive-agent run`
  forwarding MODEL_PORT to the model proxy socket, then the turn's command;
- sandbox_env, generated_etc: the environment and the /etc files the sandbox gets instead of the
  host's.

No processes and no writes: the host is only looked at (is hive-c0re root, where do Python and
claude live, which root entries are links).
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import agent_harness
from activities.backends.base import BackendError, BackendErrorKind, Mount
from activities.backends.mounts import CONTAINER_VIEW, agent_mounts
from agent_harness.sandbox_run import DEFAULT_MODEL_SOCKET
from hyperhive.domain import MANAGER_NAME
from hyperhive.settings import HiveSettings

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
# The harness alone: it imports none of hive's other packages (the kernel stays on the host).
IN_CONTAINER_PACKAGES = (agent_harness,)
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


@dataclass(frozen=True)
class HiveLayout:
    """Where hive's Python, its in-container package and claude are, inside the sandbox."""

    binds: tuple[tuple[str, str], ...]  # (host path, sandbox path), read-only, in order
    python: str
    claude: str | None  # None: claude_bin cannot be found on this host
    claude_host: str | None


def as_root() -> bool:
    """hive-c0re runs as root: its sandboxes then run as HiveSettings.sandbox_uid."""
    return os.geteuid() == 0


def hive_layout(settings: HiveSettings) -> HiveLayout:
    """Where hive's Python, packages and claude go inside (the same for every agent)."""
    binds: list[tuple[str, str]] = []
    prefix = Path(sys.prefix)
    base = Path(sys.base_prefix).resolve()
    if not _under(base, Path("/usr")):
        # Its own path: a venv's python links there, and the interpreter may have an
        # absolute RUNPATH to it. Must not be hidden by (or create dirs in) an agent's mount.
        clash = _clash(str(base), _reserved(settings))
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
    claude_host = _claude_host(settings)
    claude: str | None = None
    if claude_host is not None:
        real = Path(claude_host)
        if _under(real, Path("/usr")):
            claude = str(real)
        else:
            binds.append((str(real.parent), str(CLAUDE_DIR)))
            claude = str(CLAUDE_DIR / real.name)
    return HiveLayout(tuple(binds), python, claude, claude_host)


def _reserved(settings: HiveSettings) -> set[str]:
    """Where agents' containers mount their own data (the manager's mounts are a superset)."""
    return {m.container for m in agent_mounts(settings, MANAGER_NAME)} | {
        CONTAINER_VIEW.work,
        "/run/hive",
    }


def _claude_host(settings: HiveSettings) -> str | None:
    configured = settings.claude_bin
    found = configured if "/" in configured else shutil.which(configured)
    if found is None or not os.path.isfile(found):
        return None
    return os.path.realpath(found)


def bwrap_args(
    agent: str,
    mounts: Iterable[Mount],
    layout: HiveLayout,
    data_args: Sequence[str] = (),
) -> list[str]:
    """bwrap's options for one sandbox of `agent` (without the command)."""
    mounts = list(mounts)
    reserved = {m.container for m in mounts}
    root = as_root()
    if root:
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
    args += ["--perms", "0777" if root else "0700", "--tmpfs", CONTAINER_VIEW.home]
    # Directories made so far; the others above a mount point get an explicit --dir (0755):
    # bwrap would make them 0700, closed to the sandbox uid (/opt, /run, /root/.pyenv).
    made = {"/", "/usr", "/proc", "/dev", "/etc", CONTAINER_VIEW.home}
    for host, inside in layout.binds:
        clash = _clash(inside, reserved)
        if clash is not None:
            raise BackendError(
                BackendErrorKind.FAILED,
                f"container h-{agent} mounts {clash}, over {inside} where the sandbox needs {host}",
                "mount the agent's data elsewhere",
            )
        args += [*_parent_dirs(inside, made), "--ro-bind", host, inside]
    for mount in mounts:
        bind = "--bind" if mount.writable else "--ro-bind"
        args += [*_parent_dirs(mount.container, made), bind, str(mount.host), mount.container]
    # As root, bwrap (without capabilities) cannot enter /work, the sandbox uid's: unshare
    # does (drop_argv).
    args += ["--remount-ro", "/", "--chdir", "/" if root else CONTAINER_VIEW.work]
    return args


def sandbox_command(sandbox_uid: int, python: str, argv: Sequence[str]) -> list[str]:
    """What bwrap runs inside: the uid drop (as root), then `hive-agent run`, which forwards
    127.0.0.1:MODEL_PORT to the model proxy socket, then `argv`."""
    return [
        *drop_argv(sandbox_uid),
        *hive_agent_argv(python),
        "run",
        "--model-socket",
        MODEL_SOCKET,
        "--port",
        str(MODEL_PORT),
        "--",
        *argv,
    ]


def drop_argv(uid: int, cwd: str | None = CONTAINER_VIEW.work) -> list[str]:
    """What runs the command inside bwrap: as root, the sandbox uid `uid`, root in its own user
    namespace (uid_map `0 <uid> 1`) with no capabilities left, in `cwd`; else nothing."""
    if not as_root():
        return []
    wd = [f"--wd={cwd}"] if cwd is not None else []
    return [
        *(SETPRIV, f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--no-new-privs"),
        *("--", UNSHARE, "--user", "--map-root-user", *wd),
        *("--", SETPRIV, "--bounding-set=-all", "--inh-caps=-all", "--"),
    ]


def hive_agent_argv(python: str) -> list[str]:
    """`hive-agent` inside: the sandbox's Python with the harness first on sys.path."""
    boot = (
        f"import sys;sys.path.insert(0,{str(SRC_DIR)!r});"
        "from agent_harness.cli import main;sys.exit(main())"
    )
    # -I: no PYTHON* variables, no user site, and not the cwd (/work) on sys.path.
    return [python, "-I", "-c", boot]


def sandbox_env(env: Mapping[str, str]) -> dict[str, str]:
    """The turn's environment as the sandbox gets it (through bwrap's own environment)."""
    inside = {k: v for k, v in env.items() if k.lower() not in DROPPED_ENV}
    inside.update(
        PATH=SANDBOX_PATH,
        HOME=CONTAINER_VIEW.home,
        ANTHROPIC_BASE_URL=f"http://127.0.0.1:{MODEL_PORT}",
    )
    return inside


def generated_etc(agent: str) -> dict[str, bytes]:
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


def _parent_dirs(path: str, made: set[str]) -> list[str]:
    """`--dir` for each directory above `path` not in `made` (which they are then added to)."""
    args: list[str] = []
    for parent in reversed(PurePosixPath(path).parents):
        if str(parent) not in made:
            made.add(str(parent))
            args += ["--dir", str(parent)]
    return args


def _under(path: Path | str, parent: Path | str) -> bool:
    return Path(path) == Path(parent) or Path(parent) in Path(path).parents


def _clash(path: str, mount_points: Iterable[str]) -> str | None:
    """The mount point `path` is at, under, or above, if any."""
    for point in mount_points:
        if _under(path, point) or _under(point, path):
            return point
    return None
