#!/usr/bin/env python3
"""A fake `nixos-container` (nixpkgs `nixos-container.pl`) for tests; REFERENCE §4.

Installed on PATH as `nixos-container` (a symlink in a temporary bin dir). It reproduces what
hyperhive depends on, in the order the real Perl script does it:

- Getopt::Long parsing (gnu_getopt, no_bundling: options anywhere until `--`, `--opt=value` or
  `--opt value`, unique prefixes, case-insensitive), `Unknown option: x` and exit 1.
- `$0: no action specified`, `$0: no container name specified`, `$0: invalid container name`
  (`^[a-zA-Z0-9_-]+$`), `$0: container ‘X’ already exists`, `$0: container name ‘X’ is too long`
  (create, > 11 characters), `$0: container ‘X’ does not exist` (status also prints `gone`;
  destroy exits 0), `$0: unknown action ‘X’`, `$0: failed to build container from flake 'REF'`,
  `$0: failed to start container` / `stop` / `reload`, `unable to get container's main PID`.
- Exit codes of `die` are unstable (Perl uses errno): one of 1, 2, 17, 22, 255 at random.
- `create --flake REF[#attr]` writes the .conf first (PRIVATE_NETWORK=1, HOST_ADDRESS=10.233.N.1,
  LOCAL_ADDRESS=10.233.N.2, HOST_BRIDGE=, HOST_PORT=, AUTO_START=0, FLAKE=REF), then "builds":
  the `nix build -o .tmp` symlink is made in the *current directory* (so an unwritable cwd fails
  the build and two creates in one cwd race on it), read back and removed. Like the real script,
  a failed flake build leaves the .conf and the profile dir behind.
- `update NAME` without flags rebuilds from `FLAKE=`; it never touches the .conf, so
  EXTRA_NSPAWN_FLAGS survive; `create` writes a fresh .conf.
- `run NAME -- cmd…` stands in for `nsenter … su root -l -c "exec cmd…"`: it forks, the child
  starts a new session (as shadow's `su -c` does), changes to the container's /root, resets the
  environment to a login one and execs `cmd` *on the host*; the parent forwards SIGTERM/SIGINT/
  SIGQUIT and exits with the child's code. Stdio passes straight through.

A "flake" is a directory: the build fails when it has no flake.nix, when flake.nix does not
mention the attribute, or when it contains a file named BROKEN (its text is the failed builder's
log). A system built from a flake dir containing FAIL_START, FAIL_STOP or FAIL_RELOAD fails that
systemctl operation.

A flake build that takes time (FAKE_NIXOS_BUILD_SECONDS) prints what `nix build` prints on a
non-terminal meanwhile: the derivations it will build, then `building '…drv'...` as it starts
each; an instant one prints nothing, as for a system already in the store. A failed builder ends
stderr as nix ends it: `error: builder for '…drv' failed with exit code 1;`, its last log lines
(at most `log-lines`, 25), the `nix log` hint, the failed dependency of the system, then the
CLI's own `die`.

Environment: FAKE_NIXOS_ROOT (required; all state lives under it, see the paths below),
FAKE_NIXOS_LOG (append one JSON line {"argv", "cwd"} per invocation), FAKE_NIXOS_BUILD_DELAY
(seconds between writing ./.tmp and reading it back; widens the race window),
FAKE_NIXOS_BUILD_SECONDS (how long each flake build of `create`/`update` takes),
FAKE_NIXOS_BUILD_FAILURE (when set, every flake build fails, after its build time, with this as
the builder's log, as a BROKEN file does).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import random
import re
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any, NoReturn

PROG = sys.argv[0]
EXIT_CODES = (1, 2, 17, 22, 255)

USAGE = """\
Usage: nixos-container list
       nixos-container create <container-name>
         [--nixos-path <path>]
         [--system-path <path>]
         [--config <string>]
         [--config-file <path>]
         [--flake <flakeref>]
         [--ensure-unique-name]
         [--auto-start]
         [--bridge <iface>]
         [--port <port>]
         [--host-address <string>]
         [--local-address <string>]
       nixos-container destroy <container-name>
       nixos-container restart <container-name>
       nixos-container start <container-name>
       nixos-container stop <container-name>
       nixos-container terminate <container-name>
       nixos-container status <container-name>
       nixos-container update <container-name>
         [--config <string>]
         [--config-file <path>]
         [--flake <flakeref>]
         [--nixos-path <path>]
       nixos-container login <container-name>
       nixos-container root-login <container-name>
       nixos-container run <container-name> -- args...
       nixos-container show-ip <container-name>
       nixos-container show-host-key <container-name>
"""

FLAG_OPTIONS = (
    "help",
    "ensure-unique-name",
    "auto-start",
    "impure",
    "commit-lock-file",
    "no-registries",
    "no-update-lock-file",
    "no-write-lock-file",
    "no-allow-dirty",
    "recreate-lock-file",
)
VALUE_OPTIONS = (
    "bridge",
    "port",
    "system-path",
    "signal",
    "nixos-path",
    "config",
    "config-file",
    "host-address",
    "local-address",
    "flake",
    "log-format",
    "update-input",
)
PAIR_OPTIONS = ("option", "override-input")
ALL_OPTIONS = FLAG_OPTIONS + VALUE_OPTIONS + PAIR_OPTIONS

NAME_RE = re.compile(r"^[a-zA-Z0-9_-]+$")
FLAKE_ATTR_RE = re.compile(r"^(.*)#([^#\"]+)$")
MARKERS = ("FAIL_START", "FAIL_STOP", "FAIL_RELOAD")
# What a container's system needs built besides itself (the last one is where a build fails).
DEPENDENCIES = ("hive-agent-0.1.0", "unit-hive-agent.service", "system-units", "etc")
LOG_LINES = 25  # nix.conf `log-lines`: how much of a failed builder's log nix shows


def die(message: str, *, line: int | None = None) -> NoReturn:
    """Perl `die`: a message without a trailing newline gets ` at SCRIPT line N.`"""
    if not message.endswith("\n"):
        message += f" at {PROG} line {line or 1}.\n"
    sys.stderr.write(message)
    sys.stderr.flush()
    sys.exit(random.choice(EXIT_CODES))


def current_dir() -> str:
    try:
        return os.getcwd()
    except FileNotFoundError:  # removed under us
        return os.environ.get("PWD", ".") + " (deleted)"


def log_invocation() -> None:
    path = os.environ.get("FAKE_NIXOS_LOG")
    if not path:
        return
    record = json.dumps({"argv": sys.argv[1:], "cwd": current_dir()}) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, record.encode())
    finally:
        os.close(fd)


# --- paths ---------------------------------------------------------------------------------------


class Paths:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.conf_dir = root / "etc" / "nixos-containers"
        self.state_dir = root / "var" / "lib" / "nixos-containers"
        self.profiles = root / "nix" / "var" / "nix" / "profiles" / "per-container"
        self.gcroots = root / "nix" / "var" / "nix" / "gcroots" / "per-container"
        self.store = root / "nix" / "store"
        self.units = root / "run" / "systemd"
        self.lock = root / "run" / "lock" / "nixos-container"

    def conf(self, name: str) -> Path:
        return self.conf_dir / f"{name}.conf"

    def unit(self, name: str) -> Path:
        """The fake systemd state of container@NAME: JSON, absent when never started."""
        return self.units / f"container@{name}.json"


# --- Getopt::Long ----------------------------------------------------------------------------


class Options:
    def __init__(self) -> None:
        self.values: dict[str, str] = {}
        self.flags: set[str] = set()
        self.nix_flags: list[str] = []


def parse_args(argv: list[str]) -> tuple[Options, list[str]]:
    opts = Options()
    positional: list[str] = []
    errors: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if arg == "--":
            positional.extend(argv[i:])
            break
        if not arg.startswith("-") or arg == "-":
            positional.append(arg)  # permute: options may follow arguments
            continue
        body = arg[2:] if arg.startswith("--") else arg[1:]
        given, has_value, inline = body.partition("=")
        key = given.lower()
        matches = [name for name in ALL_OPTIONS if name == key] or [
            name for name in ALL_OPTIONS if name.startswith(key)
        ]
        if not key or not matches:
            errors.append(f"Unknown option: {given}\n")
            continue
        if len(matches) > 1:
            errors.append(f"Option {given} is ambiguous ({', '.join(sorted(matches))})\n")
            continue
        name = matches[0]
        if name in FLAG_OPTIONS:
            if has_value:
                errors.append(f"Option {name} does not take an argument\n")
                continue
            if name == "help":
                sys.stdout.write(USAGE)
                sys.exit(0)
            opts.flags.add(name)
            if name not in ("ensure-unique-name", "auto-start"):
                opts.nix_flags.append(f"--{name}")
            continue
        wanted = 1 if name in VALUE_OPTIONS else 2
        values = [inline] if has_value else []
        while len(values) < wanted and i < len(argv):
            values.append(argv[i])
            i += 1
        if len(values) < wanted:
            errors.append(f"Option {name} requires an argument\n")
            continue
        if name in VALUE_OPTIONS:
            opts.values[name] = values[0]
            if name in ("log-format", "update-input"):
                opts.nix_flags += [f"--{name}", values[0]]
        else:
            opts.nix_flags += [f"--{name}", *values]
    if errors:
        sys.stderr.write("".join(errors))
        sys.exit(1)
    return opts, positional


# --- builds ------------------------------------------------------------------------------------


def flake_dir(ref: str) -> Path | None:
    for prefix in ("path:", "git+file://"):
        if ref.startswith(prefix):
            ref = ref[len(prefix) :]
            break
    else:
        if not ref.startswith(("/", ".")):
            return None  # a registry name or a remote ref: nothing the fake can build
    return Path(ref.split("?", 1)[0]).absolute()


def nix_build(paths: Paths, ref: str, attr: str) -> Path | None:
    """`nix build -o .tmp REF#nixosConfigurations."attr".config.system.build.toplevel`."""
    directory = flake_dir(ref)
    if directory is None:
        sys.stderr.write(f"error: cannot find flake 'flake:{ref}' in the flake registries\n")
        return None
    if not directory.is_dir():
        sys.stderr.write(f"error: path '{directory}' does not exist\n")
        return None
    flake_nix = directory / "flake.nix"
    if not flake_nix.is_file():
        sys.stderr.write(f"error: path '{flake_nix}' does not exist\n")
        return None
    if attr not in flake_nix.read_text(errors="replace"):
        sys.stderr.write(
            f"error: flake 'path:{directory}' does not provide attribute "
            f"'nixosConfigurations.\"{attr}\".config.system.build.toplevel'\n"
        )
        return None
    digest = hashlib.sha256(str(directory).encode() + b"\0" + attr.encode())
    for entry in sorted(directory.iterdir()):
        if entry.is_file():
            digest.update(entry.name.encode() + b"\0" + entry.read_bytes() + b"\0")
    drv = f"{digest.hexdigest()[:32]}-nixos-system-{attr}"
    deps = [f"{hashlib.sha256(f'{drv}/{n}'.encode()).hexdigest()[:32]}-{n}" for n in DEPENDENCIES]
    failure = os.environ.get("FAKE_NIXOS_BUILD_FAILURE")
    if (directory / "BROKEN").exists():
        failure = (directory / "BROKEN").read_text(errors="replace").strip() or "BROKEN"
    # A failed builder stops the build: the system that needed it is never started.
    build_progress([*deps, drv], deps if failure else [*deps, drv])
    if failure:
        builder_failed(deps[-1], drv, failure)
        return None
    out = paths.store / drv
    out.mkdir(parents=True, exist_ok=True)
    (out / "source").write_text(f"{directory}\n")
    (out / "markers").write_text(
        "".join(f"{m}\n" for m in MARKERS if (directory / m).exists()),
    )
    # The out link: made last, replacing whatever ./.tmp was, like nix's atomic rename.
    link = Path(".tmp")
    temp = Path(f".tmp.{os.getpid()}.tmp")
    try:
        temp.unlink(missing_ok=True)
        temp.symlink_to(out)
        os.replace(temp, link)
    except OSError as exc:
        sys.stderr.write(f"error: creating symlink '{current_dir()}/{link}': {exc.strerror}\n")
        return None
    return out


def build_progress(planned: list[str], built: list[str]) -> None:
    """What `nix build` prints while it builds: the `planned` derivations, then each of `built`
    as it starts, FAKE_NIXOS_BUILD_SECONDS in all; nothing when that is 0."""
    seconds = float(os.environ.get("FAKE_NIXOS_BUILD_SECONDS", "0") or 0)
    if seconds <= 0:
        return
    sys.stderr.write(f"these {len(planned)} derivations will be built:\n")
    sys.stderr.write("".join(f"  /nix/store/{drv}.drv\n" for drv in planned))
    for drv in built:
        sys.stderr.write(f"building '/nix/store/{drv}.drv'...\n")
        sys.stderr.flush()
        time.sleep(seconds / len(built))  # a slow build: its time is what a test watches


def builder_failed(failed: str, system: str, log: str) -> None:
    """nix's report of a builder that failed with `log`, and of the system that needed it."""
    lines = log.splitlines()[-LOG_LINES:] or [""]
    sys.stderr.write(
        f"error: builder for '/nix/store/{failed}.drv' failed with exit code 1;\n"
        f"       last {len(lines)} log lines:\n"
        + "".join(f"       > {line}\n" for line in lines)
        + "       For full logs, run:\n"
        f"         nix log /nix/store/{failed}.drv\n"
        f"error: 1 dependencies of derivation '/nix/store/{system}.drv' failed to build\n"
    )


def build_flake(paths: Paths, flake: str, attr: str) -> Path:
    """The Perl buildFlake(): build, then read ./.tmp back and unlink it."""
    if nix_build(paths, flake, attr) is None:
        die(f"{PROG}: failed to build container from flake '{flake}'\n")
    # A slow build, for tests that catch create mid-way (./.tmp is there, the system not yet).
    time.sleep(float(os.environ.get("FAKE_NIXOS_BUILD_DELAY", "0") or 0))
    try:
        system_path = Path(os.readlink(".tmp"))
    except OSError:
        die("Died", line=181)  # `readlink(...) or die;` when another create took ./.tmp
    Path(".tmp").unlink(missing_ok=True)
    return system_path


def set_profile(profile_dir: Path, system_path: Path) -> bool:
    """`nix-env -p PROFILE/system --set PATH`."""
    if not system_path.is_dir():
        sys.stderr.write(f"error: path '{system_path}' is not in the Nix store\n")
        return False
    profile_dir.mkdir(parents=True, exist_ok=True)
    link = profile_dir / "system"
    temp = profile_dir / ".system.tmp"
    temp.unlink(missing_ok=True)
    temp.symlink_to(system_path)
    os.replace(temp, link)
    return True


def build_config(paths: Paths, name: str, config_text: str) -> Path | None:
    """`nix-env -f <nixpkgs/nixos> --set -A system` with a generated configuration.nix."""
    if "BROKEN" in config_text:
        sys.stderr.write("error: undefined variable 'BROKEN'\n")
        return None
    drv = hashlib.sha256(config_text.encode()).hexdigest()[:32] + f"-nixos-system-{name}"
    out = paths.store / drv
    out.mkdir(parents=True, exist_ok=True)
    (out / "source").write_text("configuration.nix\n")
    (out / "markers").write_text("")
    return out


def config_text(opts: Options) -> str:
    if "config" in opts.values:
        return opts.values["config"]
    if "config-file" in opts.values:
        return Path(opts.values["config-file"]).read_text()
    return ""


def markers(profile_dir: Path) -> set[str]:
    try:
        return set((profile_dir / "system" / "markers").read_text().split())
    except OSError:
        return set()


# --- container state ---------------------------------------------------------------------------


def read_unit(paths: Paths, name: str) -> dict[str, object]:
    try:
        data = json.loads(paths.unit(name).read_text())
    except (OSError, ValueError):
        return {"ActiveState": "inactive"}
    return data if isinstance(data, dict) else {"ActiveState": "inactive"}


def write_unit(paths: Paths, name: str, data: dict[str, object]) -> None:
    paths.units.mkdir(parents=True, exist_ok=True)
    paths.unit(name).write_text(json.dumps(data) + "\n")


def is_running(paths: Paths, name: str) -> bool:
    return read_unit(paths, name).get("ActiveState") == "active"


def conf_value(text: str, key: str) -> str | None:
    found = re.search(rf"^{key}=(.*)$", text, re.MULTILINE)
    if found is None:
        return None
    value = found.group(1)
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        value = value[1:-1]
    return value


def systemctl_failed(verb: str, name: str) -> None:
    sys.stderr.write(
        f"Job for container@{name}.service failed because the control process exited with "
        f'error code.\nSee "systemctl status container@{name}.service" and '
        f'"journalctl -xeu container@{name}.service" for details.\n'
        if verb == "start"
        else f"Job for container@{name}.service failed.\n"
    )


def nspawn_flags(paths: Paths, name: str) -> list[str] | str:
    """EXTRA_NSPAWN_FLAGS as bash word-splits them, or why systemd-nspawn would refuse them."""
    value = conf_value(paths.conf(name).read_text(), "EXTRA_NSPAWN_FLAGS") or ""
    flags = value.split()
    for flag in flags:
        option, _, spec = flag.partition("=")
        if option not in ("--bind", "--bind-ro"):
            return f"systemd-nspawn: unrecognized option '{flag}'"
        source, _, target = spec.partition(":")
        if not source.startswith("/") or not target.startswith("/") or ":" in target:
            return f"systemd-nspawn: Failed to parse {option}= argument: {spec}"
        if not Path(source).exists():
            return f"systemd-nspawn: Failed to stat {source}: No such file or directory"
    return flags


def start_problem(paths: Paths, name: str, profile_dir: Path) -> str:
    """Why `systemctl start container@NAME` would fail, or ""."""
    flags = nspawn_flags(paths, name)
    if isinstance(flags, str):
        return flags
    if "_" in name:
        return f"Failed to add interface ve-{name} to bridge: Invalid argument"
    if not (profile_dir / "system").exists():
        return f"{profile_dir}/system: No such file or directory"
    if "FAIL_START" in markers(profile_dir):
        return "container init failed (FAIL_START)"
    return ""


def start_container(paths: Paths, name: str, profile_dir: Path, root: Path) -> None:
    if is_running(paths, name):
        return
    problem = start_problem(paths, name, profile_dir)
    if problem:
        systemctl_failed("start", name)
        sys.stderr.write(f"{problem}\n")
        die(f"{PROG}: failed to start container\n")
    root.mkdir(parents=True, exist_ok=True)
    write_unit(
        paths,
        name,
        {
            "ActiveState": "active",
            "system": os.readlink(profile_dir / "system"),
            "nspawn_flags": nspawn_flags(paths, name),
        },
    )


def stop_container(paths: Paths, name: str, profile_dir: Path) -> None:
    if not is_running(paths, name):
        return
    if "FAIL_STOP" in markers(profile_dir):
        systemctl_failed("stop", name)
        die(f"{PROG}: failed to stop container\n")
    write_unit(paths, name, {"ActiveState": "inactive"})


def get_leader(paths: Paths, name: str) -> None:
    if not is_running(paths, name):
        die("unable to get container's main PID\n")


def terminate_container(paths: Paths, name: str) -> None:
    get_leader(paths, name)
    write_unit(paths, name, {"ActiveState": "inactive"})


def clear_container_state(profile_dir: Path, gcroots_dir: Path, root: Path, conf: Path) -> None:
    for directory in (profile_dir, gcroots_dir, root):
        if directory.is_symlink():
            directory.unlink()
        elif directory.exists():
            shutil.rmtree(directory)
    try:
        conf.unlink()
    except OSError:
        die("Died", line=213)


def run_in_container(paths: Paths, name: str, root: Path, command: list[str]) -> NoReturn:
    get_leader(paths, name)
    home = root / "root"
    home.mkdir(parents=True, exist_ok=True)
    login_env = {
        "HOME": "/root",
        "USER": "root",
        "LOGNAME": "root",
        "SHELL": "/run/current-system/sw/bin/bash",
        # Stands in for the container's login PATH: the fake runs commands on the host.
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
    }
    sys.stdout.flush()
    sys.stderr.flush()
    forwarded = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)
    # Blocked across the fork, so none is lost before the parent forwards them (as su does).
    signal.pthread_sigmask(signal.SIG_BLOCK, forwarded)
    child = os.fork()
    if child == 0:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, forwarded)
        os.setsid()  # shadow's `su -c` runs the command in a new session
        os.chdir(home)
        if not command:
            os._exit(0)
        try:
            os.execvpe(command[0], command, login_env)
        except OSError:
            os.write(2, f"-bash: line 1: exec: {command[0]}: not found\n".encode())
            os._exit(127)

    def forward(signum: int, _frame: object) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signum)

    for signum in forwarded:
        signal.signal(signum, forward)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, forwarded)
    while True:
        try:
            _, status = os.waitpid(child, 0)
            break
        except InterruptedError:
            continue
    if os.WIFEXITED(status):
        os._exit(os.WEXITSTATUS(status))
    os._exit(128 + os.WTERMSIG(status))


# --- actions -----------------------------------------------------------------------------------


def create(paths: Paths, opts: Options, name: str, flake: str | None, attr: str) -> None:
    paths.lock.parent.mkdir(parents=True, exist_ok=True)
    with paths.lock.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if "ensure-unique-name" in opts.flags:
            base = name
            number = 0
            while paths.conf(name).exists() or (paths.state_dir / name).exists():
                name = f"{base}-{number}"
                number += 1
        conf = paths.conf(name)
        root = paths.state_dir / name
        if conf.exists():
            die(f"{PROG}: container ‘{name}’ already exists\n")
        if len(name) > 11:
            die(f"{PROG}: container name ‘{name}’ is too long\n")
        used: set[str] = set()
        for other in sorted(paths.conf_dir.glob("*.conf")):
            text = other.read_text()
            for key in ("HOST_ADDRESS", "LOCAL_ADDRESS"):
                found = re.search(rf"^{key}=([0-9.]+)$", text, re.MULTILINE)
                if found:
                    used.add(found.group(1))
        host_address = opts.values.get("host-address")
        local_address = opts.values.get("local-address")
        if host_address is None:
            for number in range(1, 255):
                host_address = f"10.233.{number}.1"
                local_address = f"10.233.{number}.2"
                if host_address not in used and local_address not in used:
                    break
            else:
                die(f"{PROG}: out of IP addresses\n")
        lines = [
            "PRIVATE_NETWORK=1\n",
            f"HOST_ADDRESS={host_address}\n",
            f"LOCAL_ADDRESS={local_address}\n",
            f"HOST_BRIDGE={opts.values.get('bridge', '')}\n",
            f"HOST_PORT={opts.values.get('port', '')}\n",
            f"AUTO_START={1 if 'auto-start' in opts.flags else 0}\n",
        ]
        if flake is not None:
            lines.append(f"FLAKE={flake}\n")
        conf.write_text("".join(lines))
    sys.stderr.write(f"host IP is {host_address}, container IP is {local_address}\n")
    profile_dir = paths.profiles / name
    profile_dir.mkdir(parents=True, exist_ok=True)
    system_path: Path | None = None
    if flake is not None:
        # No cleanup on failure here: the real script leaves the .conf and profile dir behind.
        system_path = build_flake(paths, flake, attr)
    elif "system-path" in opts.values:
        system_path = Path(opts.values["system-path"])
    if system_path is not None:
        if not set_profile(profile_dir, system_path):
            clear_container_state(profile_dir, paths.gcroots / name, root, conf)
            die(f"{PROG}: failed to set initial container configuration\n")
    else:
        (root / "etc" / "nixos").mkdir(parents=True, exist_ok=True)
        text = config_text(opts)
        (root / "etc" / "nixos" / "configuration.nix").write_text(text)
        built = build_config(paths, name, text)
        if built is None or not set_profile(profile_dir, built):
            clear_container_state(profile_dir, paths.gcroots / name, root, conf)
            die(f"{PROG}: failed to build initial container configuration\n")
    if "ensure-unique-name" in opts.flags:
        print(name)


def update(paths: Paths, opts: Options, name: str, flake: str | None, attr: str) -> None:
    profile_dir = paths.profiles / name
    if flake is None and "config" not in opts.values and "config-file" not in opts.values:
        flake = conf_value(paths.conf(name).read_text(), "FLAKE")
    if flake is not None:
        system_path = build_flake(paths, flake, attr)
        if not set_profile(profile_dir, system_path):
            die(f"{PROG}: failed to set container configuration\n")
    else:
        built = build_config(paths, name, config_text(opts))
        if built is None or not set_profile(profile_dir, built):
            die(f"{PROG}: failed to build container configuration\n")
    if is_running(paths, name):
        sys.stderr.write("reloading container...\n")
        if "FAIL_RELOAD" in markers(profile_dir):
            systemctl_failed("reload", name)
            die(f"{PROG}: failed to reload container\n")
        unit = read_unit(paths, name)
        unit["system"] = os.readlink(profile_dir / "system")
        write_unit(paths, name, unit)


def main() -> None:
    log_invocation()
    root_env = os.environ.get("FAKE_NIXOS_ROOT")
    if not root_env:
        sys.stderr.write("fake nixos-container: FAKE_NIXOS_ROOT is not set\n")
        sys.exit(2)
    paths = Paths(Path(root_env))
    opts, args = parse_args(sys.argv[1:])

    has_host = "host-address" in opts.values
    has_local = "local-address" in opts.values
    if has_host != has_local:
        die("With --host-address set, --local-address is required as well!", line=125)
    if not args or not args[0] or args[0] == "0":
        die(f"{PROG}: no action specified\n")
    action = args[0]
    if "config-file" in opts.values and "config" in opts.values:
        die(
            "--config and --config-file are mutually incompatible. "
            "Please define one or the other, but not both",
            line=132,
        )
    flake = opts.values.get("flake")
    attr = "container"
    if flake is not None:
        split = FLAKE_ATTR_RE.match(flake)
        if split:
            flake, attr = split.group(1), split.group(2)

    paths.conf_dir.mkdir(parents=True, exist_ok=True)
    paths.state_dir.mkdir(parents=True, exist_ok=True)

    if action == "list":
        for conf in sorted(paths.conf_dir.glob("*.conf")):
            print(conf.name[: -len(".conf")])
        return

    if len(args) < 2 or not args[1] or args[1] == "0":
        die(f"{PROG}: no container name specified\n")
    name = args[1]
    if not NAME_RE.match(name):
        die(f"{PROG}: invalid container name\n")

    if action == "create":
        create(paths, opts, name, flake, attr)
        return

    root = paths.state_dir / name
    profile_dir = paths.profiles / name
    gcroots_dir = paths.gcroots / name
    conf = paths.conf(name)
    if not conf.exists():
        if action == "destroy":
            return
        if action == "status":
            print("gone")
            sys.stdout.flush()
        die(f"{PROG}: container ‘{name}’ does not exist\n")

    if action == "destroy":
        if not os.access(conf, os.W_OK):
            die(
                f"{PROG}: cannot destroy declarative container "
                "(remove it from your configuration.nix instead)\n"
            )
        if is_running(paths, name):
            terminate_container(paths, name)
        clear_container_state(profile_dir, gcroots_dir, root, conf)
        paths.unit(name).unlink(missing_ok=True)
    elif action == "restart":
        stop_container(paths, name, profile_dir)
        start_container(paths, name, profile_dir, root)
    elif action == "start":
        start_container(paths, name, profile_dir, root)
    elif action == "stop":
        stop_container(paths, name, profile_dir)
    elif action == "terminate":
        terminate_container(paths, name)
    elif action == "status":
        print("up" if is_running(paths, name) else "down")
    elif action == "update":
        update(paths, opts, name, flake, attr)
    elif action in ("login", "root-login"):
        get_leader(paths, name)
        die(f"fake nixos-container: {action} needs a terminal and is not emulated\n")
    elif action == "run":
        run_in_container(paths, name, root, args[2:])
    elif action == "show-ip":
        address = re.search(r"^LOCAL_ADDRESS=([0-9.]+)(/[0-9]+)?$", conf.read_text(), re.M)
        if address is None:
            die(f"{PROG}: cannot get IP address\n")
        print(address.group(1))
    elif action == "show-host-key":
        key = root / "etc" / "ssh" / "ssh_host_ed25519_key.pub"
        if not key.exists():
            key = root / "etc" / "ssh" / "ssh_host_ecdsa_key.pub"
        if not key.is_file():
            sys.exit(1)
        sys.stdout.write(key.read_text())
    else:
        die(f"{PROG}: unknown action ‘{action}’\n")


# --- for tests -----------------------------------------------------------------------------


class FakeInstall:
    """The fake on PATH as `nixos-container`, its state root and its invocation log."""

    def __init__(self, base: Path) -> None:
        self.bin_dir = base / "bin"
        self.paths = Paths(base / "nixos-root")
        self.log = base / "nixos-container.jsonl"
        self.bin_dir.mkdir(parents=True, exist_ok=True)
        link = self.bin_dir / "nixos-container"
        if not link.is_symlink():
            link.symlink_to(Path(__file__).resolve())

    @property
    def cli(self) -> Path:
        return self.bin_dir / "nixos-container"

    def env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        env = dict(os.environ if base is None else base)
        env["PATH"] = f"{self.bin_dir}{os.pathsep}{env.get('PATH', '/usr/bin:/bin')}"
        env["FAKE_NIXOS_ROOT"] = str(self.paths.root)
        env["FAKE_NIXOS_LOG"] = str(self.log)
        return env

    def apply(self, monkeypatch: Any) -> None:
        """This process's environment (so hive-c0re's children) gets the fake, with builds as
        fast and sound as by default; a test sets a knob after this."""
        for key, value in self.env().items():
            monkeypatch.setenv(key, value)
        for knob in (
            "FAKE_NIXOS_BUILD_DELAY",
            "FAKE_NIXOS_BUILD_SECONDS",
            "FAKE_NIXOS_BUILD_FAILURE",
        ):
            monkeypatch.delenv(knob, raising=False)

    def calls(self) -> list[dict[str, object]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines() if line]

    def argvs(self) -> list[list[str]]:
        return [list(call["argv"]) for call in self.calls()]  # type: ignore[call-overload]

    def clear_log(self) -> None:
        self.log.unlink(missing_ok=True)

    def conf(self, name: str) -> Path:
        return self.paths.conf(name)

    def unit(self, name: str) -> dict[str, object]:
        return read_unit(self.paths, name)

    def system_source(self, name: str) -> Path | None:
        """The flake dir the container's current system profile was built from."""
        try:
            return Path((self.paths.profiles / name / "system" / "source").read_text().strip())
        except OSError:
            return None


if __name__ == "__main__":
    main()
