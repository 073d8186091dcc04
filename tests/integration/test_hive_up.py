"""`hive up` as a user runs it: the real embedded Temporal dev server, hive-c0re, Ctrl-C."""

from __future__ import annotations

import os
import signal
import socket
from pathlib import Path

import httpx
import pytest
from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest
from temporalio.client import Client

from tests.rig.hive_process import HiveEnv, HiveProcess, pids_mentioning, run_hive, wait_gone

pytestmark = pytest.mark.integration


async def _workflow_ids(target: str, query: str) -> set[str]:
    client = await Client.connect(target)
    return {wf.id async for wf in client.list_workflows(query)}


async def test_up_serves_then_ctrl_c_leaves_nothing_and_history_survives(tmp_path: Path) -> None:
    env = HiveEnv.fresh(tmp_path / "state")
    hive = HiveProcess(env, "up")
    try:
        hive.wait_ready()
        out = hive.output()
        assert env.dashboard in out and env.temporal_ui in out
        # Private by default: nobody else on the host lists the state or reads the stores.
        for directory in (env.state_dir, env.state_dir / "run"):
            assert directory.stat().st_mode & 0o066 == 0, oct(directory.stat().st_mode)
        for store in ("hive.db", "hive.db-wal", "temporal.db"):
            mode = (env.state_dir / store).stat().st_mode
            assert mode & 0o077 == 0, (store, oct(mode))

        async with httpx.AsyncClient(timeout=30) as http:
            health = await http.get(f"{env.dashboard}/health", params={"deep": "true"})
            assert health.status_code == 200, health.text
            body = health.json()
            assert body["status"] == "ok"
            assert body["temporal"]["embedded"] is True
            assert body["round_trip"]["ok"] is True
            assert body["store"]["schema_version"] >= 1

            page = await http.get(env.dashboard)
            assert page.status_code == 200
            assert "hive-c0re" in page.text and env.temporal_ui in page.text

            ui = await http.get(env.temporal_ui)
            assert ui.status_code == 200

        client = await Client.connect(env.temporal_target)
        attrs = await client.operator_service.list_search_attributes(
            ListSearchAttributesRequest(namespace="default")
        )
        assert "HiveAgent" in attrs.custom_attributes

        before = await _workflow_ids(env.temporal_target, "WorkflowType='HealthCheckWorkflow'")
        assert before, "the start-up round trip should have left a workflow in history"
        server_pids = pids_mentioning(str(env.state_dir))
        assert server_pids, "the embedded Temporal server should be running"
    finally:
        rc = hive.interrupt()
    assert rc == 0, hive.output()
    assert "hive-c0re stopped." in hive.output()
    assert wait_gone(server_pids) == []
    assert pids_mentioning(str(env.state_dir)) == []

    again = HiveProcess(env, "up")
    try:
        again.wait_ready()
        after = await _workflow_ids(env.temporal_target, "WorkflowType='HealthCheckWorkflow'")
        assert before <= after, "history from the first run must survive the restart"
        assert len(after) > len(before)
    finally:
        assert again.interrupt() == 0, again.output()


def test_up_refuses_a_taken_port_and_starts_nothing(tmp_path: Path) -> None:
    env = HiveEnv.fresh(tmp_path / "state")
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", env.dashboard_port))
        squatter.listen()
        result = run_hive(env, "up")
    assert result.returncode == 2
    assert f"port {env.dashboard_port}" in result.stderr
    assert "HIVE_DASHBOARD_PORT" in result.stderr
    assert "already in use" in result.stderr
    assert pids_mentioning(str(env.state_dir)) == []


def test_up_refuses_a_state_dir_it_cannot_write(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    env = HiveEnv.fresh(blocker / "state")
    result = run_hive(env, "up")
    assert result.returncode == 2
    assert "HIVE_STATE_DIR" in result.stderr
    assert str(blocker / "state") in result.stderr
    assert "Traceback" not in result.stderr


def test_second_up_on_the_same_state_dir_is_refused(tmp_path: Path) -> None:
    env = HiveEnv.fresh(tmp_path / "state")
    first = HiveProcess(env, "up")
    try:
        first.wait_ready()
        second = run_hive(env, "up")
        assert second.returncode == 2
        assert "is in use by pid" in second.stderr
    finally:
        assert first.interrupt() == 0, first.output()


def test_sigkill_of_hive_up_takes_the_embedded_server_with_it(tmp_path: Path) -> None:
    env = HiveEnv.fresh(tmp_path / "state")
    hive = HiveProcess(env, "up")
    try:
        hive.wait_ready()
        server_pids = pids_mentioning(str(env.state_dir))
        assert server_pids
        os.kill(hive.proc.pid, signal.SIGKILL)
        hive.finish()
        assert wait_gone(server_pids) == []
    finally:
        hive.kill()


async def test_up_with_an_external_cluster_starts_no_server(tmp_path: Path, dev_server) -> None:
    env = HiveEnv.fresh(tmp_path / "state")
    target = dev_server.client.service_client.config.target_host
    env.extra["HIVE_TEMPORAL_ADDRESS"] = target
    hive = HiveProcess(env, "up")
    try:
        hive.wait_ready()
        assert pids_mentioning(f"--db-filename {env.state_dir}") == []
        async with httpx.AsyncClient(timeout=30) as http:
            body = (await http.get(f"{env.dashboard}/health", params={"deep": "true"})).json()
        assert body["status"] == "ok"
        assert body["temporal"]["embedded"] is False
        assert body["temporal"]["address"] == target
    finally:
        assert hive.interrupt() == 0, hive.output()


def test_invalid_setting_is_reported_by_name(tmp_path: Path) -> None:
    env = HiveEnv.fresh(tmp_path / "state")
    env.extra["HIVE_DASHBOARD_PORT"] = "seventy"
    result = run_hive(env, "up")
    assert result.returncode == 2
    assert "HIVE_DASHBOARD_PORT" in result.stderr
    assert "Traceback" not in result.stderr


def test_unusable_store_url_is_reported_without_a_traceback(tmp_path: Path) -> None:
    env = HiveEnv.fresh(tmp_path / "state")
    env.extra["HIVE_DB_URL"] = "nosuchdb://x/y"
    result = run_hive(env, "up")
    assert result.returncode == 2
    assert "HIVE_DB_URL" in result.stderr
    assert "Traceback" not in result.stderr
    assert pids_mentioning(str(env.state_dir)) == []
