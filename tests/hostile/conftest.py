"""The world the hostile tests attack, and how to tell that it did not change.

`hostile_world` (one per module): a real SQLite store with the agents alice, bob, hm1nd, carol
and dave; a real Broker (its waker only records, standing for Temporal's signal); config repos
for alice (with crafted commits: symlinks, `..` entries, extra files…), carol (whose proposed repo
is a symlink) and dave (whose objects dir is one); a Lifecycle and OperatorService on the real
Temporal dev server (no worker: a workflow that a refused call started would just wait there);
alice's and hm1nd's MCP servers (hm1nd's with the manager tools); and the dashboard app with an
httpx client that sends the CSRF header.

`world.snapshot()` is everything a refused call must leave alone: every row of every table, every
file under the state dir (config repos, credentials, objects, refs) and the workflows started
since the world was built.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError

from api.app import create_app
from api.csrf import HEADER
from api.manager_tools import manager_tools
from api.mcp_server import AgentMcpServer, build_agent_mcp
from control.lifecycle import Lifecycle
from control.operator import OperatorService
from control.runtime import CoreRuntime
from hyperhive import config_repo
from hyperhive.broker import Broker
from hyperhive.bus import EventBus
from hyperhive.metrics import HiveMetrics
from hyperhive.settings import HiveSettings
from hyperhive.store.agents import register_agent, set_container_status
from hyperhive.store.db import begin, make_engine, migrate
from tests.hostile.corpus import CORPUS, MAX_BODY_BYTES, RECV_MAX_WAIT_S
from tests.rig.broker import RecordingWaker

WORLD_AGENTS = ("alice", "bob", "hm1nd", "carol", "dave")
REV = "1" * 40
GIT_ENV = {
    "PATH": os.environ.get("PATH", os.defpath),
    "HOME": "/nonexistent",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": os.devnull,
    "LC_ALL": "C",
    "GIT_AUTHOR_NAME": "hm1nd",
    "GIT_AUTHOR_EMAIL": "hm1nd@localhost",
    "GIT_COMMITTER_NAME": "hm1nd",
    "GIT_COMMITTER_EMAIL": "hm1nd@localhost",
}
# Files that change without anything being stored (SQLite's journal, git's index).
# apply_commit's flock file (hive-c0re.lock) is created empty by the first writer and stays so.
_VOLATILE = {"hive.db", "hive.db-wal", "hive.db-shm", "hive.db-journal", "index", "hive-c0re.lock"}


def git(repo: Path, *args: str, stdin: bytes | None = None) -> bytes:
    proc = subprocess.run(
        ["git", "-C", str(repo), *args], env=GIT_ENV, input=stdin, capture_output=True, check=True
    )
    return proc.stdout.strip()


def _raw_tree(entries: list[tuple[str, bytes, str]]) -> bytes:
    """A tree object's bytes: (mode, name, hex oid), sorted as git sorts them."""

    def key(entry: tuple[str, bytes, str]) -> bytes:
        mode, name, _ = entry
        return name + (b"/" if mode == "40000" else b"")

    return b"".join(
        mode.encode() + b" " + name + b"\0" + bytes.fromhex(oid)
        for mode, name, oid in sorted(entries, key=key)
    )


def craft_commit(repo: Path, spec: dict[str, Any]) -> str:
    """A commit on top of HEAD whose top-level tree is the config files of HEAD changed by `spec`:
    name → text/bytes (a file), None (removed), ("symlink", target), ("dir",), ("submodule",).
    Written with `hash-object --literally`, which takes names git itself would refuse."""
    head = git(repo, "rev-parse", "HEAD").decode()
    entries: dict[bytes, tuple[str, str]] = {}
    for name in config_repo.CONFIG_FILES:
        entries[name.encode()] = ("100644", git(repo, "rev-parse", f"HEAD:{name}").decode())

    def blob(data: bytes) -> str:
        return git(repo, "hash-object", "-w", "--stdin", stdin=data).decode()

    for name, value in spec.items():
        key = name.encode("utf-8", "surrogatepass")
        if value is None:
            entries.pop(key, None)
        elif isinstance(value, str | bytes):
            entries[key] = ("100644", blob(value.encode() if isinstance(value, str) else value))
        elif value[0] == "symlink":
            entries[key] = ("120000", blob(value[1].encode()))
        elif value[0] == "dir":
            inner = _raw_tree([("100644", b"passwd", blob(b"root:x:0:0::/root:/bin/sh\n"))])
            tree = git(
                repo, "hash-object", "-t", "tree", "--literally", "-w", "--stdin", stdin=inner
            ).decode()
            entries[key] = ("40000", tree)
        elif value[0] == "submodule":
            entries[key] = ("160000", head)
        else:
            raise ValueError(value)
    raw = _raw_tree([(mode, name, oid) for name, (mode, oid) in entries.items()])
    tree = git(
        repo, "hash-object", "-t", "tree", "--literally", "-w", "--stdin", stdin=raw
    ).decode()
    return git(repo, "commit-tree", tree, "-p", head, "-m", "crafted").decode()


@dataclass
class Snapshot:
    rows: dict[str, list[tuple[Any, ...]]]
    files: dict[str, str]
    refs: dict[str, str]
    workflows: list[tuple[str, str]]

    def diff(self, other: Snapshot) -> list[str]:
        """What changed, in words (empty: nothing)."""
        changes = []
        for table in sorted(set(self.rows) | set(other.rows)):
            before, after = self.rows.get(table, []), other.rows.get(table, [])
            if before != after:
                added = [r for r in after if r not in before]
                removed = [r for r in before if r not in after]
                changes.append(f"table {table}: +{added[:3]} -{removed[:3]}")
        for path in sorted(set(self.files) | set(other.files)):
            if self.files.get(path) != other.files.get(path):
                changes.append(f"file {path}: {self.files.get(path)} → {other.files.get(path)}")
        if self.refs != other.refs:
            changes.append(f"refs: {self.refs} → {other.refs}")
        if self.workflows != other.workflows:
            changes.append(f"workflows: {self.workflows} → {other.workflows}")
        return changes


@dataclass
class World:
    settings: HiveSettings
    engine: sa.Engine
    client: Client
    broker: Broker
    waker: RecordingWaker
    lifecycle: Lifecycle
    operator: OperatorService
    app: FastAPI
    http: httpx.AsyncClient
    mcp: dict[str, AgentMcpServer]
    crafted: dict[str, str]
    placeholders: dict[str, str]
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    watched_ids: set[str] = field(default_factory=set)

    @property
    def state(self) -> Path:
        return self.settings.state_path

    def rows(self) -> dict[str, list[tuple[Any, ...]]]:
        inspector = sa.inspect(self.engine)
        out = {}
        with begin(self.engine) as conn:
            for table in inspector.get_table_names():
                result = conn.execute(sa.text(f'SELECT * FROM "{table}"'))
                out[table] = sorted((tuple(r) for r in result), key=repr)
        return out

    def files(self) -> dict[str, str]:
        out = {}
        for root, _dirs, names in os.walk(self.state):
            for name in names:
                path = Path(root) / name
                if name in _VOLATILE:
                    continue
                rel = str(path.relative_to(self.state))
                if path.is_symlink():
                    out[rel] = "symlink→" + os.readlink(path)
                elif "/objects/" in rel:
                    # A git object's name is the hash of its content: its presence says it all.
                    out[rel] = "object"
                else:
                    st = path.stat()
                    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
                    out[rel] = f"{oct(st.st_mode)} {digest}"
        return out

    def refs(self) -> dict[str, str]:
        out = {}
        for kind in ("proposed", "applied"):
            for repo in sorted((self.state / kind).iterdir()):
                if (repo / ".git" / "HEAD").is_file() and not repo.is_symlink():
                    out[f"{kind}/{repo.name}"] = (
                        git(repo, "for-each-ref").decode() + git(repo, "rev-parse", "HEAD").decode()
                    )
        return out

    async def workflows(self) -> list[tuple[str, str]]:
        """Workflows started since the world was built, and those in `watched_ids`."""
        found: set[tuple[str, str]] = set()
        query = f'StartTime >= "{self.started_at.isoformat().replace("+00:00", "Z")}"'
        async for wf in self.client.list_workflows(query):
            found.add((wf.id, wf.run_id))
        # Listing is eventually consistent; describe is not.
        for workflow_id in sorted(self.watched_ids):
            try:
                described = await self.client.get_workflow_handle(workflow_id).describe()
            except RPCError:
                continue
            found.add((described.id, described.run_id))
        return sorted(found)

    async def snapshot(self) -> Snapshot:
        rows, files, refs = await asyncio.to_thread(
            lambda: (self.rows(), self.files(), self.refs())
        )
        return Snapshot(rows, files, refs, await self.workflows())

    async def terminate_new(
        self, before: list[tuple[str, str]], after: list[tuple[str, str]]
    ) -> None:
        """Stop workflows a call started, so that no worker ever runs them."""
        for workflow_id, run_id in set(after) - set(before):
            handle = self.client.get_workflow_handle(workflow_id, run_id=run_id)
            try:
                if (await handle.describe()).status == WorkflowExecutionStatus.RUNNING:
                    await handle.terminate(reason="hostile test cleanup")
            except RPCError:
                pass


def _crafted_specs() -> dict[str, dict[str, Any]]:
    return {c.name: c.args["tree"] for c in CORPUS if "tree" in c.args}


@pytest.fixture(scope="module")
async def hostile_world(dev_server: Any) -> AsyncIterator[World]:
    state_dir = Path(tempfile.mkdtemp(prefix="hive-hostile-"))
    run_dir = Path(tempfile.mkdtemp(prefix="hive-run-"))
    settings = HiveSettings(
        state_dir=state_dir,
        run_dir=run_dir,
        host_id="hostile",
        max_body_bytes=MAX_BODY_BYTES,
        recv_max_wait_s=RECV_MAX_WAIT_S,
        # schemathesis drives the app in process with Host: testserver.
        allowed_hosts="testserver",
    )
    engine = make_engine(settings.database_url)
    migrate(engine)
    for name in WORLD_AGENTS:
        register_agent(engine, name, settings.host_id)
        # Each has a container, as a spawned agent has (one without could be spawned again).
        set_container_status(engine, name, "up")
    state = settings.state_path
    config_repo.init_agent_repos(
        state, "alice", purpose="Be hostile-tested.", hyperhive_rev=REV, hyperhive_flake_url="/x"
    )
    alice = state / "proposed" / "alice"
    crafted = {label: craft_commit(alice, spec) for label, spec in _crafted_specs().items()}
    placeholders = {
        "{head}": git(alice, "rev-parse", "HEAD").decode(),
        "{tree}": git(alice, "rev-parse", "HEAD^{tree}").decode(),
        "{blob}": git(alice, "rev-parse", "HEAD:agent.nix").decode(),
    }
    # carol's proposed repo is a symlink to a repo elsewhere; dave's objects dir is a symlink.
    elsewhere = state.parent / f"{state.name}-elsewhere"
    shutil.copytree(alice, elsewhere, symlinks=True)
    (state / "proposed" / "carol").symlink_to(elsewhere)
    dave = state / "proposed" / "dave"
    (dave / ".git").mkdir(parents=True)
    (dave / ".git" / "objects").symlink_to(alice / ".git" / "objects")
    # Every agent's credentials dir as a spawned agent has it.
    for name in WORLD_AGENTS:
        (settings.agent_state_dir(name) / "home" / ".claude").mkdir(mode=0o700, parents=True)

    waker = RecordingWaker()
    broker = Broker(engine, EventBus(), waker, settings, recheck_interval_s=60)
    client = dev_server.client
    lifecycle = Lifecycle(client, settings, engine)
    runtime = CoreRuntime(settings, engine, client, broker, lifecycle, metrics=HiveMetrics(engine))
    operator = OperatorService(runtime)
    app = create_app(runtime, operator=operator)
    token = app.state.csrf.token
    transport = httpx.ASGITransport(app=app)
    mcp = {
        "alice": build_agent_mcp("alice", broker),
        "hm1nd": build_agent_mcp("hm1nd", broker, extra_tools=manager_tools(lifecycle, engine)),
    }
    async with httpx.AsyncClient(
        transport=transport, base_url="http://127.0.0.1", headers={HEADER: token}
    ) as http:
        world = World(
            settings=settings,
            engine=engine,
            client=client,
            broker=broker,
            waker=waker,
            lifecycle=lifecycle,
            operator=operator,
            app=app,
            http=http,
            mcp=mcp,
            crafted=crafted,
            placeholders=placeholders,
        )
        yield world
    await broker.aclose()
    engine.dispose()
    shutil.rmtree(state_dir, ignore_errors=True)
    shutil.rmtree(elsewhere, ignore_errors=True)
    shutil.rmtree(run_dir, ignore_errors=True)
