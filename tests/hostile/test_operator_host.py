"""What an agent, a local user or another program on the host can do to the operator (security
review, "operator host").

1. Agent text in the operator's terminal. Before: `hive list`, `status`, `logs` and `approvals`
   printed what agents wrote (their status, their messages, claude's stream, approval
   descriptions) raw, so an agent's `set_status("\\x1b[2J\\x1b]0;pwned\\x07")` cleared the
   operator's screen and retitled the window, and C1 controls (`\\x9b`, a one-byte CSI), bidi
   overrides (`\\u202e`) and `\\r` hid or reordered what was shown. Here alice's real turn (the
   fake model scripting her tool calls) sets such a status, sends such a message and writes such
   a reply; a turn event and an approval description are planted in the store too. Every one of
   those commands, run for real against the real hive-c0re, prints no raw control and still
   shows the text, escaped (`\\x1b`, `\\x9b`, `\\u202e`); `--json` gives the exact text back.
2. Private state off NixOS. Before: hive.db and temporal.db were 0644, the state and run dirs
   0755, so any local user read every message, approval and workflow history. Here a state dir,
   run dir and store left loose by an older version (0755/0644, umask 022) are found private
   once the real `hive c0re` is up (dirs 0700, 0711 as root; files 0600), and so is an older
   temporal.db under `hive up` with the embedded Temporal.
3. API keys in `ps`. Before: the nixos backend ran `nixos-container run h-<name> -- setpriv … --
   env -i --chdir=/work ANTHROPIC_API_KEY=… claude …`, so every local user saw the key (or
   CLAUDE_CODE_OAUTH_TOKEN) in /proc/<pid>/cmdline of that process and its children. Here a
   real turn (the turn activity, the nixos backend, the fake `nixos-container` on PATH, the real
   claude and the fake model) runs with a secret-looking key while every process's command line
   is read throughout: the key is in none, nor in any argv the CLI was given; it travelled in a
   0600 `.hive-env-*` file, gone after the turn, and reached the model API.
4. A squatted page port. Before: an agent's stored page port was linked from the dashboard even
   when another program held that port at start-up, so the operator's click went to that
   program. Here a socket holds alice's stored port when the real hive-c0re starts: the
   dashboard, `/api/agents`, `hive list --json` and `hive urls` give her no link to it (bob,
   whose port is free, gets his), and the daemon's output says why.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import stat
import sys
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment

from activities.backends.base import AgentView, ContainerSpec
from activities.backends.mounts import agent_mounts
from activities.backends.nixos import NixosBackend
from activities.backends.process import host_view
from activities.turns import TurnActivities
from api.mcp_server import AgentMcpSockets
from hyperhive.broker import Broker
from hyperhive.bus import EventBus
from hyperhive.models import NewApproval, TurnRequest
from hyperhive.settings import HiveSettings
from hyperhive.store import approvals as approval_store
from hyperhive.store.agents import append_turn_events, register_agent, set_agent_port
from hyperhive.store.db import make_engine, migrate
from tests.fakes.anthropic_api import FakeAnthropic, Text, ToolUse
from tests.fakes.nixos_container import FakeInstall
from tests.rig.agent_scripts import for_agent, send
from tests.rig.broker import RecordingWaker
from tests.rig.c0re import RunningC0re, StartC0re, register_spawned
from tests.rig.hive_process import HiveEnv, HiveProcess
from tests.rig.polling import eventually

pytestmark = pytest.mark.integration

# -- 1. agent text in the operator's terminal -------------------------------------------------

# What a terminal acts on: C0 controls but newline and tab (ESC, BEL, CR…), DEL and C1 (0x9b is
# a one-byte CSI), bidi overrides and isolates, line and paragraph separators.
RAW_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\u2028\u2029]")

# Clear the screen, retitle the window, a C1 CSI, a right-to-left override, a carriage return.
STATUS = "\x1b[2J\x1b]0;pwned\x07\x9b31m\u202eSTATUS\rok"
BODY = "MARK-BODY \x1b[2J\x1b]0;pwned\x07 \x9b31m \u202egnp.exe \rline"
REPLY = "REPLY \x1b[31mred\x1b[0m \x9b2J \u2066iso\u2069 \rREPLY-END"
EVENT = "EVENT \x1b]0;pwned\x07\x9b6n\u202dltr\u202c"
HIVE_EVENT = "HIVE-EVENT \x1b[1A\x1b[2K\u202e\x9b"
DESCRIPTION = "DESC \x1b[2J\x1b]0;pwned\x07\x9b31m\u202e\r(approve me)"


def assistant_text(text: str) -> dict[str, Any]:
    """As claude's stream-json reports a reply."""
    message = {"role": "assistant", "content": [{"type": "text", "text": text}]}
    return {"type": "assistant", "message": message, "session_id": "s"}


def terminal_output(hive: RunningC0re, *args: str) -> str:
    """`hive <args>`'s stdout, which must be done and safe to print, stderr too."""
    done = hive.hive(*args)
    assert done.returncode == 0, f"hive {' '.join(args)}: {done.stdout}{done.stderr}"
    for stream, text in (("stdout", done.stdout), ("stderr", done.stderr)):
        for found in RAW_CONTROL.finditer(text):
            start = max(0, found.start() - 40)
            raise AssertionError(
                f"`hive {' '.join(args)}` printed a raw {found.group()!r} on {stream}: "
                f"…{text[start : found.end() + 40]!r}…"
            )
    return done.stdout


def plant(hive: RunningC0re) -> None:
    """A turn event (claude's stream-json reply, and hive-c0re's own line) and an approval
    whose texts came from an agent."""
    engine = hive.engine()
    try:
        events = [(1, "assistant", assistant_text(EVENT)), (2, "hive", {"text": HIVE_EVENT})]
        append_turn_events(engine, "alice", "planted", events)
        approval_store.create_approval(
            engine,
            NewApproval(
                kind="spawn",
                agent="mallory",
                requester="hm1nd",
                description=DESCRIPTION,
                workflow_id="hive-spawn-mallory-planted",
            ),
        )
    finally:
        engine.dispose()


async def test_agent_text_reaches_the_operators_terminal_escaped(
    start_c0re: StartC0re, fake_model: FakeAnthropic
) -> None:
    # alice's turn: a hostile status, a hostile message to the operator, a hostile reply.
    fake_model.script_when(
        for_agent("alice"),
        ToolUse("mcp__hive__set_status", {"text": STATUS}),
        send("operator", BODY),
        Text(REPLY),
    )
    hive = await start_c0re(["alice"])
    await hive.send("alice", "go")
    notice = await hive.notice("MARK-BODY")
    assert notice.body == BODY, "the broker keeps what the agent sent, as it sent it"
    await hive.wait_status("alice", lambda s: s.turns_total >= 1)
    plant(hive)

    # The status line: clipped to one line (the \r is whitespace), every control escaped.
    shown_status = r"\x1b[2J\x1b]0;pwned\x07\x9b31m\u202eSTATUS ok"
    listed = terminal_output(hive, "list")
    assert shown_status in listed, listed
    status = terminal_output(hive, "status")
    assert shown_status in status, status
    assert "1 approval pending" in status, status

    logs = terminal_output(hive, "logs", "alice")
    # Tool calls show their arguments as JSON (ESC as \u001b); what JSON leaves raw is escaped.
    expected = [
        r'mcp__hive__set_status(text="\u001b[2J\u001b]0;pwned\u0007\x9b31m\u202eSTATUS\rok")',
        r'mcp__hive__send(to="operator", body="MARK-BODY \u001b[2J\u001b]0;pwned\u0007 \x9b31m '
        r'\u202egnp.exe \rline")',
        # claude's reply, and the turn's result that repeats it: the \r starts a new line.
        r"[text] REPLY \x1b[31mred\x1b[0m \x9b2J \u2066iso\u2069",
        r"[text] EVENT \x1b]0;pwned\x07\x9b6n\u202dltr\u202c",
        r"[hive] HIVE-EVENT \x1b[1A\x1b[2K\u202e\x9b",
    ]
    for line in expected:
        assert line in logs, f"{line!r} not in:\n{logs}"
    assert re.search(r"\n +REPLY-END\n", logs), logs

    approvals = terminal_output(hive, "approvals")
    assert r"DESC \x1b[2J\x1b]0;pwned\x07\x9b31m\u202e (approve me)" in approvals, approvals
    pending = terminal_output(hive, "approvals", "--pending")
    assert r"\x1b[2J" in pending, pending

    # --json: still nothing raw, and the exact texts come back from the JSON.
    [agent] = json.loads(terminal_output(hive, "list", "--json"))
    assert agent["status_text"] == STATUS
    as_status = json.loads(terminal_output(hive, "status", "--json"))
    assert as_status["agents"][0]["status_text"] == STATUS
    [approval] = json.loads(terminal_output(hive, "approvals", "--json"))
    assert approval["description"] == DESCRIPTION


async def test_logs_json_stays_json_whatever_an_agent_wrote(start_c0re: StartC0re) -> None:
    hive = await start_c0re(["alice"])
    plant(hive)
    out = terminal_output(hive, "logs", "alice", "--json")
    [assistant, hive_line] = [json.loads(line)["payload"] for line in out.splitlines()]
    assert assistant["message"]["content"][0]["text"] == EVENT
    assert hive_line["text"] == HIVE_EVENT


# -- 2. private state off NixOS ---------------------------------------------------------------


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def loosen(*paths: Path) -> None:
    """As an older hive-c0re under umask 022 left them."""
    for path in paths:
        os.chmod(path, 0o755 if path.is_dir() else 0o644)


@contextlib.contextmanager
def umask(value: int) -> Iterator[None]:
    old = os.umask(value)
    try:
        yield
    finally:
        os.umask(old)


def modes_under(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): oct(mode(p))
        for p in sorted([root, *root.rglob("*")])
        if not p.is_symlink() and "/.git" not in str(p)
    }


# What the daemon leaves a dir it made private: 0700; 0711 as root (bwrap sandboxes then run as
# another uid that must pass through to its own agent's dirs).
PRIVATE_DIR = 0o711 if os.geteuid() == 0 else 0o700


def assert_modes(expected: dict[Path, int]) -> None:
    wrong = {str(p): oct(mode(p)) for p, want in expected.items() if mode(p) != want}
    wanted = {str(p): oct(m) for p, m in expected.items()}
    assert not wrong, f"not private: {wrong}; wanted {wanted}"


def sqlite_files(path: Path) -> list[Path]:
    """The database and whichever of its -wal and -shm exist."""
    companions = [path.with_name(path.name + suffix) for suffix in ("-wal", "-shm")]
    return [path, *(p for p in companions if p.exists())]


def from_a_shell(env: HiveEnv, command: str) -> HiveProcess:
    """`hive <command>` under what a shell usually has, umask 022: files 0644 and dirs 0755
    unless made otherwise."""
    with umask(0o022):
        return HiveProcess(env, command)


async def ready_and_healthy(process: HiveProcess, env: HiveEnv) -> None:
    process.wait_ready()
    await healthy(env)


async def healthy(env: HiveEnv) -> None:
    async with httpx.AsyncClient(timeout=30) as http:
        response = await http.get(f"{env.dashboard}/health")
    assert response.status_code == 200, response.text


async def test_loose_state_and_run_dirs_and_store_are_made_private(
    tmp_path: Path, dev_server: WorkflowEnvironment, claude_bin: Path, hive_run_dir: Path
) -> None:
    # A store an older version made (alice registered) and the dirs it used, left 0755/0644.
    state = tmp_path / "state"
    run = hive_run_dir
    engine = make_engine(f"sqlite:///{state / 'hive.db'}")
    migrate(engine)
    host_id = f"t{uuid.uuid4().hex[:10]}"
    register_spawned(state, engine, "alice", host_id)
    engine.dispose()
    # Below the state dir too: 0711 above lets anyone open a path whose name they guess.
    for sub in ("applied", "proposed", "secrets"):
        (state / sub).mkdir(exist_ok=True)
    (state / "agents" / "alice" / "work").mkdir(parents=True, exist_ok=True)
    loosen(
        state,
        state / "hive.db",
        run,
        *(state / sub for sub in ("applied", "proposed", "secrets", "agents")),
        state / "agents" / "alice" / "work",
    )
    env = HiveEnv.fresh(state)
    # As start_c0re runs it, but with nothing made by this process after the loosening.
    env.extra.update(
        HIVE_RUN_DIR=str(run),
        HIVE_HOST_ID=host_id,
        HIVE_TEMPORAL_ADDRESS=dev_server.client.service_client.config.target_host,
        HIVE_CLAUDE_BIN=str(claude_bin),
        HIVE_CONTAINER_BACKEND="process",
        HIVE_CREATE_MANAGER="false",
    )
    daemon = from_a_shell(env, "c0re")
    try:
        await ready_and_healthy(daemon, env)
        stores = sqlite_files(state / "hive.db")
        assert len(stores) == 3, f"the running store is in WAL mode: {stores}"
        secrets = state / "secrets"
        kept = list(secrets.iterdir())
        assert secrets / "csrf.key" in kept, modes_under(state)
        assert_modes(
            {
                state: PRIVATE_DIR,
                run: PRIVATE_DIR,
                **{store: 0o600 for store in stores},
                **{secret: 0o600 for secret in kept},
                state / "logs": 0o700,
                state / "secrets": 0o700,
                state / "applied": 0o700,
                state / "proposed": 0o700,
                state / "agents": PRIVATE_DIR,
                state / "agents" / "alice" / "home": 0o700,
                state / "agents" / "alice" / "home" / ".claude": 0o700,
                state / "agents" / "alice" / "work": 0o700,
            }
        )
    finally:
        daemon.kill()


async def test_hive_up_makes_an_older_loose_temporal_db_private(tmp_path: Path) -> None:
    state = tmp_path / "state"
    env = HiveEnv.fresh(state)
    # A first `hive up` makes temporal.db and hive.db; then they are left as an older version
    # under umask 022 would have them.
    first = HiveProcess(env, "up")
    try:
        await ready_and_healthy(first, env)
    finally:
        assert first.interrupt() == 0, first.output()
    older = [state, state / "run", *sqlite_files(state / "temporal.db")]
    older += sqlite_files(state / "hive.db")
    loosen(*older)
    assert mode(state / "temporal.db") == 0o644

    again = from_a_shell(env, "up")
    try:
        await ready_and_healthy(again, env)
        temporal = sqlite_files(state / "temporal.db")
        assert len(temporal) == 3, f"Temporal's store is in WAL mode: {temporal}"
        assert_modes(
            {
                state: PRIVATE_DIR,
                state / "run": PRIVATE_DIR,
                **{store: 0o600 for store in temporal + sqlite_files(state / "hive.db")},
            }
        )
    finally:
        assert again.interrupt() == 0, again.output()


# -- 3. API keys in `ps` ----------------------------------------------------------------------

SECRET_KEY = "sk-ant-api03-" + "S3cr3tK3y" * 9 + "-END"


class HostNixos(NixosBackend):
    """The nixos backend as it is, but for what the fake `nixos-container` cannot fake: it runs
    the "container's" commands on the host, so the agent's paths are its host paths, and the
    MCP bridge is this venv's hive-agent."""

    def view(self, agent: str) -> AgentView:
        return host_view(self._settings, agent)

    def hive_agent_command(self) -> list[str]:
        return [str(Path(sys.executable).parent / "hive-agent")]


@dataclass
class CmdlineWatch:
    """Reads every process's /proc/<pid>/cmdline over and over, in a thread, until stopped:
    `leaks` are the command lines that held `secret`, `seen` those that held `marker`."""

    secret: str = field(repr=False)
    marker: str
    leaks: set[str] = field(default_factory=set, repr=False)
    seen: set[str] = field(default_factory=set, repr=False)
    rounds: int = 0
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)

    def run(self) -> None:
        secret, marker = self.secret.encode(), self.marker.encode()
        while not self._stop.is_set():
            for entry in os.scandir("/proc"):
                if not entry.name.isdigit():
                    continue
                try:
                    with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                        cmdline = f.read()
                except OSError:
                    continue  # gone already
                if secret in cmdline:
                    self.leaks.add(cmdline.replace(b"\0", b" ").decode(errors="replace"))
                if marker in cmdline:
                    self.seen.add(cmdline.replace(b"\0", b" ").decode(errors="replace"))
            self.rounds += 1

    @contextlib.contextmanager
    def running(self) -> Iterator[CmdlineWatch]:
        thread = threading.Thread(target=self.run, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            thread.join()


def env_file_spy(bin_dir: Path, log: Path) -> None:
    """A `setpriv` first on the PATH `nixos-container run` execs with, which notes the mode of
    the environment file it is handed and whether the key is in it, then execs the real one."""
    real = shutil.which("setpriv")
    assert real, "setpriv (util-linux) is needed"
    # The key is looked for from a file: in grep's argv it would be a leak the watch sees.
    pattern = bin_dir / "key-pattern"
    pattern.write_text(SECRET_KEY + "\n")
    (bin_dir / "setpriv").write_text(
        "#!/bin/sh\n"
        'for arg in "$@"; do case "$arg" in */.hive-env-*)\n'
        f'  printf "%s %s %s\\n" "$arg" "$(stat -c %a "$arg")" '
        f'"$(grep -c -F -f {pattern} "$arg")" >> {log}\n'
        "esac; done\n"
        f'exec {real} "$@"\n'
    )
    (bin_dir / "setpriv").chmod(0o755)


async def test_a_nixos_turn_keeps_the_api_key_out_of_every_command_line(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fake_model: FakeAnthropic,
    claude_bin: Path,
    hive_run_dir: Path,
) -> None:
    fake = FakeInstall(tmp_path / "fake")
    for key, value in fake.env().items():
        monkeypatch.setenv(key, value)
    spy_log = tmp_path / "env-files.log"
    env_file_spy(fake.bin_dir, spy_log)
    settings = HiveSettings(
        state_dir=tmp_path / "state",
        run_dir=hive_run_dir,
        claude_bin=str(claude_bin),
        api_key=SECRET_KEY,
        agent_extra_env={"ANTHROPIC_BASE_URL": fake_model.base_url},
    )
    engine = make_engine(settings.database_url)
    migrate(engine)
    register_spawned(settings.state_path, engine, "alice", "nixos")
    broker = Broker(engine, EventBus(), RecordingWaker(), settings)
    sockets = AgentMcpSockets(settings, broker)
    backend = HostNixos(
        settings,
        conf_dir=fake.paths.conf_dir,
        profiles_dir=fake.paths.profiles,
        container_path=os.environ["PATH"],  # the fake runs "container" commands on the host
    )
    try:
        flake = settings.state_path / "applied" / "alice"
        await backend.create(ContainerSpec("alice", flake, agent_mounts(settings, "alice")))
        await backend.start("alice")
        await sockets.start("alice")
        await broker.send("operator", "alice", "hello")
        fake_model.script_when(for_agent("alice"), Text("done"))
        turns = TurnActivities(settings, engine, EventBus(), backend)
        request = TurnRequest(agent="alice", turn_id="t-1", session_id=str(uuid.uuid4()))
        with CmdlineWatch(SECRET_KEY, ".hive-env-").running() as watch:
            result = await ActivityEnvironment().run(turns.run_turn, request)
    finally:
        await sockets.stop_all()
        await broker.aclose()
        engine.dispose()

    assert result.error_class == "none", result
    assert not watch.leaks, f"the key showed in {len(watch.leaks)} command lines: {watch.leaks}"
    # The watch was looking while the turn ran: it saw the command that carried the env file.
    assert any("nixos-container run h-alice" in c for c in watch.seen), (watch.rounds, watch.seen)
    runs = [argv for argv in fake.argvs() if argv[:2] == ["run", "h-alice"]]
    assert len(runs) == 1, fake.argvs()
    assert not [a for argv in fake.argvs() for a in argv if SECRET_KEY in a], fake.argvs()
    [env_file] = [a for a in runs[0] if "/.hive-env-" in a]
    # It held the key, 0600, when the command got it; it is gone now.
    assert spy_log.read_text().split() == [env_file, "600", "1"]
    assert not Path(env_file).exists()
    assert not list((settings.agent_state_dir("alice") / "work").glob(".hive-env-*"))
    # And the key did reach claude: it is what claude sent the model API.
    [turn] = fake_model.turn_requests()
    assert turn.headers.get("x-api-key") == SECRET_KEY, turn.headers


# -- 4. a squatted page port ------------------------------------------------------------------


async def said(hive: RunningC0re, text: str, timeout: float = 30) -> str:
    """The daemon's output once it holds `text` (its reader threads append lines as they come;
    the output has no event to wait on)."""

    def output() -> str | None:
        out = hive.process.output()
        return out if text in out else None

    return await eventually(
        output,
        what=lambda: f"hive c0re to say {text!r}; it said:\n{hive.process.output()[-4000:]}",
        timeout=timeout,
        interval=0.05,
    )


async def test_a_squatted_page_port_gets_no_link(tmp_path: Path, start_c0re: StartC0re) -> None:
    # alice was given a page port on an earlier run; another program holds it now.
    squatter = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    squatter.bind(("127.0.0.1", 0))
    squatter.listen()
    port = squatter.getsockname()[1]
    try:
        engine = make_engine(f"sqlite:///{tmp_path / 'state' / 'hive.db'}")
        migrate(engine)
        register_agent(engine, "alice", "earlier")
        set_agent_port(engine, "alice", port)
        engine.dispose()

        hive = await start_c0re(["alice", "bob"], host_id="earlier")
        out = await said(hive, f"cannot serve alice's page on 127.0.0.1:{port}")
        assert "meanwhile it is at" in out and "/agents/alice/" in out, out[-4000:]

        async with httpx.AsyncClient(timeout=30, base_url=hive.env.dashboard) as http:
            agents = {a["name"]: a for a in (await http.get("/api/agents")).json()}
            dashboard = (await http.get("/")).text
            alice_page = (await http.get("/agents/alice/")).text
            # bob's port was free: his link is handed out, and his page answers there.
            bob_url = agents["bob"]["page_url"]
            assert bob_url and bob_url.startswith("http://127.0.0.1:"), agents["bob"]
            assert (await http.get(bob_url)).status_code == 200
        assert agents["alice"]["agent_port"] == port, "the stored port is kept for later"
        assert agents["alice"]["page_url"] is None, agents["alice"]
        assert f'href="{bob_url}"' in dashboard
        for page, html in (("/", dashboard), ("/agents/alice/", alice_page)):
            assert f":{port}" not in html, f"{page} links the squatted port {port}"

        listed = {a["name"]: a for a in json.loads(hive.hive("list", "--json").stdout)}
        assert listed["alice"]["page_url"] is None and listed["bob"]["page_url"] == bob_url
        assert f":{port}" not in hive.hive("list").stdout
        urls = json.loads(hive.hive("urls", "--json").stdout)
        assert urls["agents"] == {"alice": f"{hive.env.dashboard}/agents/alice/", "bob": bob_url}
    finally:
        squatter.close()
