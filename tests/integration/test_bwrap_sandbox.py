"""The bwrap backend for real: real bubblewrap, real claude, the fake model behind the real proxy.

Inside an agent's sandbox: only its own mounts (no state dir, no other agent's files, sockets or
credentials, no checkout), no capabilities, no network but its loopback (host ports, Temporal
and the dashboard unreachable), its data written through to the host; and the real claude CLI
reaching the model through /run/hive/model.sock and hive-c0re through /run/hive/mcp.sock.

As root (as the tests run here), the sandbox is the unprivileged sandbox uid on the host, root
only in its own user namespace: /proc/sys is not writable, its files are the sandbox uid's on
the host, and what hive-c0re (root) makes for it (sockets, credentials, a new agent's repo for
hm1nd) is given to that uid before each exec, without following the agent's symlinks.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import stat
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from activities.backends import BackendError, BackendErrorKind, select_backend
from activities.backends.base import ContainerSpec, ContainerStatus, Mount
from activities.backends.bwrap import BwrapBackend
from activities.backends.mounts import CONFIG_SUBDIR, CONTAINER_VIEW, agent_mounts
from activities.backends.ownership import adopt
from activities.claude_command import claude_argv, claude_env, hive_mcp_config
from api.mcp_server import AgentMcpSockets
from api.model_proxy import ModelProxies
from hyperhive import config_repo
from hyperhive.broker import Broker
from hyperhive.credentials import CredentialKind, save_credentials
from hyperhive.domain import MANAGER_NAME
from hyperhive.settings import HiveSettings
from hyperhive.store import agents as agent_store
from tests.fakes.anthropic_api import FakeAnthropic, Text, tool_result_text
from tests.fakes.fixtures import REPO_ROOT
from tests.rig.agent_scripts import Wake, hive_responder, send, wake_of
from tests.rig.hive_process import pids_mentioning, wait_gone

pytestmark = pytest.mark.integration

TIMEOUT = 60.0
# Everything at the top of a sandbox (/bin, /lib… only where the host has them).
SANDBOX_ROOT = {
    *("bin", "sbin", "lib", "lib32", "lib64", "libx32"),
    *("dev", "etc", "hive", "opt", "proc", "root", "run", "tmp", "usr", "work"),
}
AS_ROOT = os.geteuid() == 0
as_root_only = pytest.mark.skipif(not AS_ROOT, reason="hive-c0re as root only")


def host_uid(settings: HiveSettings) -> int:
    """The host uid a sandbox runs as: the sandbox uid under root, else the caller."""
    return settings.sandbox_uid if AS_ROOT else os.geteuid()


@pytest.fixture
def settings(hive_settings: HiveSettings, claude_bin: Path, fake_model: FakeAnthropic):
    return hive_settings.model_copy(
        update={
            "claude_bin": str(claude_bin),
            "agent_extra_env": {"ANTHROPIC_BASE_URL": fake_model.base_url},
        }
    )


@pytest.fixture
async def backend(settings: HiveSettings) -> AsyncIterator[BwrapBackend]:
    backend = BwrapBackend(settings)
    for agent in ("alice", "bob", MANAGER_NAME):
        await up(backend, settings, agent)
    yield backend
    for agent in ("alice", "bob", MANAGER_NAME):
        await backend.destroy(agent)


@pytest.fixture
async def served(
    settings: HiveSettings, broker: Broker, backend: BwrapBackend
) -> AsyncIterator[tuple[AgentMcpSockets, ModelProxies]]:
    """What hive-c0re serves each agent of a sandboxed backend: its MCP and model sockets."""
    sockets = AgentMcpSockets(settings, broker)
    proxies = ModelProxies(settings)
    for agent in ("alice", "bob"):
        await sockets.start(agent)
        await proxies.start(agent)
    yield sockets, proxies
    await proxies.stop_all()
    await sockets.stop_all()


async def up(backend: BwrapBackend, settings: HiveSettings, agent: str) -> None:
    spec = ContainerSpec(
        agent, settings.state_path / "applied" / agent, agent_mounts(settings, agent)
    )
    await backend.create(spec)
    await backend.start(agent)


async def run_in(
    backend: BwrapBackend,
    agent: str,
    argv: list[str],
    *,
    stdin: bytes = b"",
    env: dict[str, str] | None = None,
    timeout: float = TIMEOUT,
) -> tuple[int, str, str]:
    process = await backend.exec(
        agent, argv, env=env or {"LANG": "C.UTF-8"}, stdin=stdin, host_cwd=Path("/")
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def python_in(backend: BwrapBackend, agent: str, code: str) -> Any:
    """Run `code` with the sandbox's Python; it prints one JSON document, returned here."""
    rc, out, err = await run_in(backend, agent, [backend.layout().python, "-I", "-c", code])
    assert rc == 0, f"rc={rc}\n{out}\n{err}"
    return json.loads(out)


PROBE = """
import json, os, socket

def readable(p):
    try:
        with open(p, 'rb') as f:
            f.read(1)
        return True
    except OSError:
        return False

def writes(p):
    try:
        with open(p, 'w') as f:
            f.write('x')
        return True
    except OSError:
        return False

def opens_for_writing(p):
    try:
        open(p, 'w').close()
        return True
    except OSError:
        return False

def connects(p):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(p)
        return True
    except OSError as e:
        return type(e).__name__
    finally:
        s.close()

def cmdline(pid):
    try:
        with open(f'/proc/{pid}/cmdline', 'rb') as f:
            return f.read().replace(b'\\0', b' ').decode()
    except OSError:
        return None

probe = json.loads(os.environ['PROBE'])
lines = open('/proc/self/status').read().splitlines()
status = dict(line.split(':\\t', 1) for line in lines if ':\\t' in line)
cmdlines = [c for c in (cmdline(p) for p in os.listdir('/proc') if p.isdigit()) if c is not None]
print(json.dumps({
    'exists': {p: os.path.lexists(p) for p in probe['hidden']},
    'readable': {p: readable(p) for p in probe['hidden']},
    'run_hive': sorted(os.listdir('/run/hive')),
    'run': sorted(os.listdir('/run')),
    'root_dir': sorted(os.listdir('/')),
    'home': sorted(os.listdir('/root')),
    'cwd': os.getcwd(),
    'hostname': socket.gethostname(),
    'uid': os.getuid(),
    'uid_map': open('/proc/self/uid_map').read().split(),
    'cap_eff': status['CapEff'].strip(),
    'cap_bnd': status['CapBnd'].strip(),
    'no_new_privs': status['NoNewPrivs'].strip(),
    'swappiness': writes('/proc/sys/vm/swappiness'),
    'core_pattern': opens_for_writing('/proc/sys/kernel/core_pattern'),
    'config': open('/hive/config/CLAUDE.md').read(),
    'sockets': [connects('/run/hive/mcp.sock'), connects('/run/hive/model.sock')],
    'interfaces': [name for _, name in socket.if_nameindex()],
    'cmdlines': cmdlines,
    'passwd': open('/etc/passwd').read(),
    'writes': {p: writes(p) for p in probe['writes']},
}))
"""


async def test_an_agent_sees_only_its_own_mounts(
    settings: HiveSettings, backend: BwrapBackend, served: Any
):
    state = settings.state_path
    (state / "hive.db").write_bytes(b"SQLite format 3\0 secrets")
    bob = settings.agent_state_dir("bob")
    (bob / "home" / ".claude" / ".credentials.json").write_text('{"claudeAiOauth": {}}')
    (bob / "work").mkdir(parents=True, exist_ok=True)
    (bob / "work" / "plans.txt").write_text("bob's")
    # alice's applied config, as the turn writes it (root, even with a private umask).
    config = settings.agent_state_dir("alice") / CONFIG_SUBDIR
    config.mkdir(exist_ok=True)
    config.chmod(0o700)
    (config / "CLAUDE.md").write_text("be brief")
    (config / "CLAUDE.md").chmod(0o600)
    secret_paths = [
        str(state / "hive.db"),
        str(state),
        str(bob / "home" / ".claude" / ".credentials.json"),
        str(bob / "work" / "plans.txt"),
        str(settings.agent_socket_path("bob")),
        str(settings.agent_run_dir("bob") / "model.sock"),
        str(settings.run_path),
        str(REPO_ROOT / "pyproject.toml"),
        str(REPO_ROOT / ".hive"),
        str(REPO_ROOT / "api"),
        # hive's own code: the harness alone (agent_harness), not the kernel.
        "/opt/hive/src/hyperhive",
        "/etc/shadow",
        "/agents",
    ]
    writes = [
        "/work/probe.txt",
        "/root/.claude/probe.txt",
        "/root/tmpfs.txt",
        "/tmp/t.txt",
        "/etc/evil",
        "/probe",
        "/opt/hive/src/x",
        "/usr/evil",
        "/hive/config/CLAUDE.md",
        "/hive/config/new",
        "/proc/sys/kernel/hostname",
    ]
    probe = json.dumps({"hidden": secret_paths, "writes": writes})
    result = await python_in(
        backend, "alice", f"import os; os.environ['PROBE'] = {probe!r}\n" + PROBE
    )

    assert not any(result["exists"].values()), result["exists"]
    assert not any(result["readable"].values()), result["readable"]
    # Its own sockets, nothing of bob's: the socket path is the identity.
    assert result["run_hive"] == ["mcp.sock", "model.sock"]
    assert result["run"] == ["hive"]
    assert {"etc", "opt", "proc", "root", "run", "tmp", "usr", "work"} <= set(result["root_dir"])
    assert set(result["root_dir"]) <= SANDBOX_ROOT, result["root_dir"]
    assert ".claude" in result["home"]
    assert result["cwd"] == CONTAINER_VIEW.work
    assert result["hostname"] == "h-alice"
    assert result["uid"] == 0
    # Root inside its own user namespace only: on the host, the sandbox uid (as root) or the
    # caller, one uid mapped.
    assert result["uid_map"] == ["0", str(host_uid(settings)), "1"]
    assert int(result["cap_eff"], 16) == 0, "no capabilities, even as root"
    if AS_ROOT:
        assert int(result["cap_bnd"], 16) == 0, "none to regain"
        assert result["no_new_privs"] == "1"
    assert result["swappiness"] is False, "/proc/sys is not writable"
    assert result["core_pattern"] is False
    assert result["config"] == "be brief", "its applied config, readable"
    assert result["sockets"] == [True, True], "its sockets (root's on the host) connect"
    assert result["interfaces"] == ["lo"], "no network but its own loopback"
    # Its own pid namespace: only the sandbox's processes (bwrap's init, `hive-agent run`, this
    # probe) are visible, none of the host's.
    own = ("/usr/bin/bwrap ", "bwrap ", backend.layout().python + " ")
    assert len(result["cmdlines"]) == 3, result["cmdlines"]
    assert all(c.startswith(own) for c in result["cmdlines"]), result["cmdlines"]
    assert result["passwd"].startswith("root:x:0:0:")
    assert len(result["passwd"].splitlines()) == 2

    # Its data persists on the host; everything else is read-only or a throwaway tmpfs.
    assert result["writes"] == {
        "/work/probe.txt": True,
        "/root/.claude/probe.txt": True,
        "/root/tmpfs.txt": True,
        "/tmp/t.txt": True,
        "/etc/evil": False,
        "/probe": False,
        "/opt/hive/src/x": False,
        "/usr/evil": False,
        "/hive/config/CLAUDE.md": False,
        "/hive/config/new": False,
        "/proc/sys/kernel/hostname": False,
    }
    alice = settings.agent_state_dir("alice")
    assert (alice / "work" / "probe.txt").read_text() == "x"
    # On the host its files are the sandbox uid's, never root's.
    assert (alice / "work" / "probe.txt").stat().st_uid == host_uid(settings)
    assert (alice / "home" / ".claude" / "probe.txt").stat().st_uid == host_uid(settings)
    assert (config / "CLAUDE.md").read_text() == "be brief"
    assert not (config / "new").exists()
    assert (alice / "home" / ".claude" / "probe.txt").read_text() == "x"
    assert not (alice / "home" / "tmpfs.txt").exists()
    # bob's data is untouched.
    assert (bob / "work" / "plans.txt").read_text() == "bob's"


async def test_the_manager_alone_sees_the_proposed_repos(
    settings: HiveSettings, backend: BwrapBackend
):
    proposed = settings.state_path / "proposed" / "alice"
    proposed.mkdir(parents=True)
    (proposed / "CLAUDE.md").write_text("be nice")
    rc, out, err = await run_in(backend, MANAGER_NAME, ["sh", "-c", "cat /agents/alice/CLAUDE.md"])
    assert (rc, out) == (0, "be nice"), err
    rc, out, err = await run_in(backend, "alice", ["sh", "-c", "ls /agents"])
    assert rc != 0 and "No such file" in err


async def test_host_services_are_unreachable_from_the_sandbox(
    backend: BwrapBackend, dev_server: Any
):
    """A host service on 127.0.0.1 (a stand-in, and the real Temporal dev server) answers the
    host but not the sandbox; nor does a host abstract unix socket."""

    async def hello(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"hello")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(hello, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    abstract = f"\0hive-test-{uuid.uuid4().hex}"
    unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    unix.bind(abstract)
    unix.listen(1)
    temporal_host, temporal_port = dev_server.client.service_client.config.target_host.rsplit(
        ":", 1
    )
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert await reader.read() == b"hello"
        writer.close()
        host_temporal = socket.create_connection((temporal_host, int(temporal_port)), timeout=5)
        host_temporal.close()

        code = f"""
import json, socket
def tcp(host, port):
    try:
        socket.create_connection((host, port), timeout=5).close()
        return 'connected'
    except OSError as e:
        return type(e).__name__
def abstract(name):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(name)
        return 'connected'
    except OSError as e:
        return type(e).__name__
print(json.dumps({{
    'service': tcp('127.0.0.1', {port}),
    'temporal': tcp({temporal_host!r}, {temporal_port}),
    'outside': tcp('192.0.2.1', 80),
    'abstract': abstract({abstract!r}),
}}))
"""
        result = await python_in(backend, "alice", code)
        assert result == {
            "service": "ConnectionRefusedError",
            "temporal": "ConnectionRefusedError",
            "outside": "OSError",  # ENETUNREACH: no route at all
            "abstract": "ConnectionRefusedError",
        }
    finally:
        server.close()
        unix.close()


async def test_claude_in_the_sandbox_reaches_the_model_and_hive(
    settings: HiveSettings,
    backend: BwrapBackend,
    served: Any,
    broker: Broker,
    fake_model: FakeAnthropic,
):
    """One turn as the turn activity runs it: claude in alice's sandbox calls the model through
    /run/hive/model.sock and hive's send tool through /run/hive/mcp.sock."""
    fake_model.script(send("bob", "hello from the sandbox"), Text("done"))
    bridge = backend.hive_agent_command()
    view = backend.view("alice")
    session_id = str(uuid.uuid4())
    argv = claude_argv(
        settings.claude_bin,
        session_id=session_id,
        resume=False,
        mcp_config=hive_mcp_config(
            command=bridge[0],
            args=(*bridge[1:], "mcp"),
            env={"HIVE_MCP_SOCKET": view.mcp_socket, "HIVE_AGENT": "alice"},
        ),
    )
    env = claude_env(
        {"LANG": "C.UTF-8", "PATH": os.environ["PATH"]},
        home=view.home,
        extra={**settings.agent_extra_env, "ANTHROPIC_API_KEY": "dummy"},
    )
    rc, out, err = await run_in(backend, "alice", argv, stdin=b"say hello to bob", env=env)
    events = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    result = events[-1]
    assert result["type"] == "result" and result["is_error"] is False, f"{out}\n{err}"
    assert rc == 0
    init = next(e for e in events if e.get("subtype") == "init")
    assert init["cwd"] == "/work"
    assert init["mcp_servers"] == [{"name": "hive", "status": "connected"}]

    message = await broker.recv("bob")
    assert message is not None
    assert (message.sender, message.body) == ("alice", "hello from the sandbox")
    assert tool_result_text(fake_model.last_tool_results()[0]).startswith("sent #")
    # Its session is on the host, where the next turn's --resume finds it.
    sessions = settings.agent_state_dir("alice") / "home" / ".claude" / "projects" / "-work"
    assert (sessions / f"{session_id}.jsonl").is_file()


async def test_bookkeeping_and_refusals(settings: HiveSettings, tmp_path: Path):
    backend = BwrapBackend(settings)
    assert await backend.status("carol") is ContainerStatus.ABSENT
    with pytest.raises(BackendError) as absent:
        await backend.exec("carol", ["true"], env={}, stdin=b"", host_cwd=Path("/"))
    assert absent.value.kind is BackendErrorKind.NOT_RUNNING
    with pytest.raises(BackendError) as missing:
        await backend.start("carol")
    assert missing.value.kind is BackendErrorKind.NOT_FOUND

    spec = ContainerSpec("carol", tmp_path / "flake", agent_mounts(settings, "carol"))
    await backend.create(spec)
    await backend.create(spec)  # idempotent
    assert await backend.status("carol") is ContainerStatus.DOWN
    with pytest.raises(BackendError) as down:
        await backend.exec("carol", ["true"], env={}, stdin=b"", host_cwd=Path("/"))
    assert down.value.kind is BackendErrorKind.NOT_RUNNING
    await backend.start("carol")
    await backend.start("carol")
    assert await backend.status("carol") is ContainerStatus.UP
    recorded = json.loads((settings.state_path / "containers" / "h-carol.bwrap").read_text())
    assert [m["container"] for m in recorded["mounts"]] == [
        "/run/hive",
        "/root/.claude",
        "/work",
        "/hive/config",
    ]

    # update re-reads the mounts: the next sandbox has the new one.
    extra = tmp_path / "extra"
    extra.mkdir()
    (extra / "f").write_text("new mount")
    await backend.update(
        ContainerSpec("carol", spec.flake_dir, (*spec.mounts, Mount(extra, "/data")))
    )
    assert await backend.status("carol") is ContainerStatus.UP
    rc, out, _ = await run_in(backend, "carol", ["sh", "-c", "cat /data/f; touch /data/g"])
    assert rc != 0 and out == "new mount"  # read-only

    # stop kills what runs in it, and refuses further execs.
    sleeper = await backend.exec("carol", ["sleep", "60"], env={}, stdin=b"", host_cwd=Path("/"))
    await asyncio.sleep(0.3)  # let sleep start in the sandbox (it prints nothing to wait for)
    await backend.stop("carol")
    assert await asyncio.wait_for(sleeper.wait(), 10) == -9
    assert await backend.status("carol") is ContainerStatus.DOWN
    with pytest.raises(BackendError):
        await backend.exec("carol", ["true"], env={}, stdin=b"", host_cwd=Path("/"))
    await backend.stop("carol")  # idempotent

    await backend.destroy("carol")
    await backend.destroy("carol")
    assert await backend.status("carol") is ContainerStatus.ABSENT
    # The agent's data survives.
    assert (settings.agent_state_dir("carol") / "work").is_dir()

    with pytest.raises(BackendError) as invalid:
        await backend.create(ContainerSpec("../x", tmp_path, ()))
    assert invalid.value.kind is BackendErrorKind.INVALID_NAME


async def test_a_sandbox_dies_with_hive_c0re(settings: HiveSettings, backend: BwrapBackend):
    """The process that started a sandbox (hive-c0re) is SIGKILLed: the sandbox goes with it."""
    marker = f"sandbox-{uuid.uuid4().hex}"
    code = f"""
import asyncio, pathlib
from activities.backends.bwrap import BwrapBackend
from hyperhive.settings import HiveSettings
settings = HiveSettings.model_validate_json({settings.model_dump_json()!r})
async def main():
    p = await BwrapBackend(settings).exec(
        "alice", ["sh", "-c", "echo up; exec sleep 600 {marker}"], env={{}}, stdin=b"",
        host_cwd=pathlib.Path("/"))
    print((await p.stdout.readline()).decode().strip(), flush=True)
    await asyncio.sleep(600)  # stand for hive-c0re: live until the test SIGKILLs it
asyncio.run(main())
"""
    parent = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, stdout=asyncio.subprocess.PIPE, cwd=REPO_ROOT
    )
    assert parent.stdout is not None
    assert await asyncio.wait_for(parent.stdout.readline(), TIMEOUT) == b"up\n"
    sandboxed = [pid for pid in pids_mentioning(marker) if pid != parent.pid]
    assert sandboxed, "bwrap and the sandboxed sleep are visible from the host"
    parent.kill()
    await parent.wait()
    assert wait_gone(sandboxed, timeout=10) == []


async def test_without_bwrap_nothing_runs(settings: HiveSettings, tmp_path: Path):
    backend = BwrapBackend(settings, bwrap="no-such-bwrap")
    await backend.create(ContainerSpec("carol", tmp_path, agent_mounts(settings, "carol")))
    with pytest.raises(BackendError) as start:
        await backend.start("carol")
    assert start.value.kind is BackendErrorKind.UNAVAILABLE
    assert "apt-get install bubblewrap" in start.value.hint
    # Marked up by a backend that had it, then bwrap went away.
    await BwrapBackend(settings).start("carol")
    with pytest.raises(BackendError) as exec_:
        await backend.exec("carol", ["true"], env={}, stdin=b"", host_cwd=Path("/"))
    assert exec_.value.kind is BackendErrorKind.UNAVAILABLE


def test_auto_selects_bwrap_where_it_is_installed(settings: HiveSettings):
    for choice in ("auto", "bwrap"):
        chosen = select_backend(settings.model_copy(update={"container_backend": choice}))
        assert chosen.name == "bwrap"
        assert getattr(chosen, "needs_model_proxy", False) is True
    process = select_backend(settings.model_copy(update={"container_backend": "process"}))
    assert process.name == "process"


async def test_hm1nd_commits_to_a_repo_hive_c0re_just_made(
    settings: HiveSettings, backend: BwrapBackend
):
    """SpawnWorkflow makes alice's proposed repo on the host (as root, here); hm1nd's next turn
    commits to it at /agents/alice with no "dubious ownership", and hive-c0re reads the commit."""
    state = settings.state_path
    await asyncio.to_thread(
        config_repo.init_agent_repos,
        state,
        "alice",
        purpose="Test things.",
        hyperhive_rev="1" * 40,
        hyperhive_flake_url="/src/hyperhive",
    )
    proposed = config_repo.proposed_dir(state, "alice")
    assert proposed.stat().st_uid == os.geteuid()
    script = (
        "echo 'Be thorough.' >> /agents/alice/CLAUDE.md && git -C /agents/alice add -A && "
        "git -C /agents/alice commit -q -m x && git -C /agents/alice rev-parse HEAD"
    )
    rc, out, err = await run_in(backend, MANAGER_NAME, ["sh", "-c", script])
    assert rc == 0, err
    assert "dubious" not in err
    sha = out.strip()
    assert await asyncio.to_thread(config_repo.proposed_head, state, "alice") == sha
    assert await asyncio.to_thread(config_repo.validate_commit, state, "alice", sha) == [
        "CLAUDE.md"
    ]
    # The whole repo was given to the sandbox uid; the applied one stays hive-c0re's.
    owners = {p.lstat().st_uid for p in [proposed, *proposed.rglob("*")]}
    assert owners == {host_uid(settings)}
    applied = config_repo.applied_dir(state, "alice")
    assert {p.lstat().st_uid for p in applied.rglob("*")} == {os.geteuid()}


async def test_credentials_pasted_between_turns_are_readable(
    settings: HiveSettings, backend: BwrapBackend
):
    """hive-c0re (root) stores credentials 0600 after the agent's first turn; the next sees them."""
    rc, _, err = await run_in(backend, "alice", ["sh", "-c", "ls -a /root/.claude"])
    assert rc == 0, err
    claude = settings.agent_state_dir("alice") / "home" / ".claude"
    key = "sk-ant-api03-alices-own-key-" + "Q" * 24
    save_credentials(claude, CredentialKind.API_KEY, key)
    (claude / ".credentials.json").write_text('{"claudeAiOauth": {}}')
    (claude / ".credentials.json").chmod(0o600)
    rc, out, err = await run_in(
        backend,
        "alice",
        ["sh", "-c", "cat /root/.claude/hive-auth.json /root/.claude/.credentials.json"],
    )
    assert rc == 0, err
    assert key in out and "claudeAiOauth" in out
    assert stat.S_IMODE((claude / ".credentials.json").stat().st_mode) == 0o600


@as_root_only
async def test_adoption_never_follows_the_agents_symlinks(
    settings: HiveSettings, backend: BwrapBackend, tmp_path: Path
):
    """Links the agent plants in its mounts (to host files it cannot see) are given to the
    sandbox uid themselves; their targets keep their owner, even a link inside a directory
    hive-c0re made (walked in full)."""
    victim = tmp_path / "victim"
    victim.write_text("root's")
    victim_dir = tmp_path / "victim-dir"
    victim_dir.mkdir()
    (victim_dir / "f").write_text("root's")
    script = (
        f"ln -s {victim} /work/file-link && ln -s {victim_dir} /work/dir-link && "
        "ln -s /etc/shadow /work/shadow && ln -s / /work/root-link && "
        f"ln -s {victim} /root/.claude/.credentials.json && "
        f"mkdir /work/mine && ln -s {victim_dir} /work/mine/inner"
    )
    rc, _, err = await run_in(backend, "alice", ["sh", "-c", script])
    assert rc == 0, err
    # A directory hive-c0re made in work, holding a link to a host file.
    work = settings.agent_state_dir("alice") / "work"
    (work / "fresh" / "sub").mkdir(parents=True)
    (work / "fresh" / "sub" / "link").symlink_to(victim)
    (work / "fresh" / "sub" / "shadow").symlink_to("/etc/shadow")
    shadow = os.stat("/etc/shadow")
    rc, _, err = await run_in(backend, "alice", ["true"])  # adopts again
    assert rc == 0, err

    uid = settings.sandbox_uid
    for target in (victim, victim_dir, victim_dir / "f"):
        assert target.stat().st_uid == 0, target
    after = os.stat("/etc/shadow")
    assert (after.st_uid, after.st_gid, after.st_mode) == (
        shadow.st_uid,
        shadow.st_gid,
        shadow.st_mode,
    )
    assert os.stat("/").st_uid == 0
    claude = settings.agent_state_dir("alice") / "home" / ".claude"
    for link in (
        work / "file-link",
        work / "dir-link",
        work / "shadow",
        work / "root-link",
        work / "mine" / "inner",
        work / "fresh" / "sub" / "link",
        work / "fresh" / "sub" / "shadow",
        claude / ".credentials.json",
    ):
        assert link.is_symlink() and link.lstat().st_uid == uid, link
    assert (work / "fresh" / "sub").stat().st_uid == uid


@as_root_only
def test_adopt_gives_what_root_made_and_skips_what_the_agent_owns(tmp_path: Path):
    uid = 990123
    root = tmp_path / "work"
    outside = tmp_path / "outside"
    outside.write_text("root's")
    (root / "repo" / ".git" / "objects").mkdir(parents=True)
    (root / "repo" / ".git" / "objects" / "ab").write_text("blob")
    (root / "repo" / "link").symlink_to(outside)
    (root / "top.txt").write_text("new")
    (root / "top-link").symlink_to(outside)
    (root / "agents").mkdir()
    os.chown(root / "agents", uid, uid)
    (root / "agents" / "roots.txt").write_text("below an owned dir")

    assert adopt(root, uid, uid) == 8
    given = [
        root,
        root / "repo",
        root / "repo" / ".git",
        root / "repo" / ".git" / "objects",
        root / "repo" / ".git" / "objects" / "ab",
        root / "repo" / "link",
        root / "top.txt",
        root / "top-link",
    ]
    for path in given:
        assert (path.lstat().st_uid, path.lstat().st_gid) == (uid, uid), path
    # A directory it owns is the agent's own: not walked (a large /work costs nothing).
    assert (root / "agents" / "roots.txt").stat().st_uid == 0
    assert outside.stat().st_uid == 0
    assert adopt(root, uid, uid) == 0  # nothing new: nothing done

    # The mount source itself is never a link (to be followed).
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "link-root").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(OSError):
        adopt(tmp_path / "link-root", uid, uid)
    assert (tmp_path / "elsewhere").stat().st_uid == 0


# -- end to end through hive-c0re ------------------------------------------------------------------


async def test_an_agent_in_bwrap_answers_the_operator(
    start_c0re, fake_model: FakeAnthropic, claude_bin: Path, dev_server: Any
):
    """hive-c0re with HIVE_CONTAINER_BACKEND=bwrap: the operator writes to alice, whose claude
    (in its sandbox) replies with mcp__hive__send; the reply reaches the operator."""

    def behaviour(wake: Wake):
        if wake.agent == "alice" and wake.sender == "operator":
            return send("operator", f"sandboxed reply to: {wake.body}")
        return None

    fake_model.responder = hive_responder(behaviour)
    hive = await start_c0re(agents=["alice"], container_backend="bwrap")
    settings = HiveSettings(
        state_dir=hive.env.state_dir,
        run_dir=hive.run_dir,
        claude_bin=str(claude_bin),
        agent_extra_env={"ANTHROPIC_BASE_URL": fake_model.base_url},
    )
    backend = BwrapBackend(settings)
    # The container the spawn workflow would have made.
    await up(backend, settings, "alice")
    # hive-c0re serves the model proxy of a sandboxed agent; until it is wired there, the test
    # stands in for it.
    proxies = ModelProxies(settings)
    if not (settings.agent_run_dir("alice") / "model.sock").exists():
        await proxies.start("alice")
    try:
        await hive.send("alice", "are you boxed?")
        reply = await hive.operator_recv(wait_seconds=90)
        assert reply is not None, hive.process.output()[-3000:]
        assert (reply.sender, reply.body) == ("alice", "sandboxed reply to: are you boxed?")
        assert wake_of(fake_model.turn_requests()[0]) is not None
        status = await hive.wait_status("alice", lambda s: s.turns_total == 1 and s.state == "idle")
        assert status.turns_total == 1

        engine = hive.engine()
        try:
            events = agent_store.turn_events(engine, "alice")
        finally:
            engine.dispose()
        init = next(e for e in events if e.kind == "system")
        assert init.payload["cwd"] == "/work"  # it ran in the sandbox

        # The done-when of the sandbox: neither Temporal nor the dashboard is reachable from it.
        temporal = dev_server.client.service_client.config.target_host
        code = f"""
import json, socket
def tcp(address):
    host, port = address.rsplit(':', 1)
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
        return 'connected'
    except OSError as e:
        return type(e).__name__
print(json.dumps([tcp({temporal!r}), tcp('127.0.0.1:{hive.env.dashboard_port}')]))
"""
        assert await python_in(backend, "alice", code) == [
            "ConnectionRefusedError",
            "ConnectionRefusedError",
        ]
        socket.create_connection(("127.0.0.1", hive.env.dashboard_port), timeout=5).close()
    finally:
        await proxies.stop_all()
