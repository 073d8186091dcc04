"""The state dir's disk fills up: sends fail clearly, nothing is corrupted, and it recovers.

The state dir (store, agent homes and work dirs) is a small tmpfs mounted for the test (this
needs root, as in CI; without it the test fails and says why). A filler file takes every free
block, then the operator keeps sending messages big enough that SQLite needs new pages: at the
latest once the WAL's already allocated pages are used up, a send must fail. What the operator
must get is an error that says the disk is full (HTTP 5xx with `message` and `hint`), not a bare
500; and hive-c0re must survive it. Once the filler is removed, the next send works, everything
accepted is delivered to the agent, the refused bodies are nowhere in the store, every stored
body is whole, and the SQLite file passes `PRAGMA integrity_check`.
"""

from __future__ import annotations

import asyncio
import errno
import os
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.fakes.anthropic_api import FakeAnthropic, Text
from tests.faults import stored_rows
from tests.rig.agent_scripts import wake_of
from tests.rig.polling import eventually

pytestmark = [pytest.mark.integration, pytest.mark.faults]

TMPFS_SIZE = "32m"
BODY_BYTES = 48 * 1024  # under HIVE_MAX_BODY_BYTES (64 KiB): refused only for want of space


@pytest.fixture
def state_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """tmp_path/state on its own small tmpfs. Requested before start_c0re, so it is unmounted
    after hive-c0re is gone."""
    state = tmp_path / "state"
    state.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE},mode=0700", "tmpfs", str(state)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.fail(
            f"cannot mount a tmpfs for the state dir ({mounted.stderr.strip()}): the disk-full "
            "test needs root (or CAP_SYS_ADMIN); run the suite as root as CI does",
            pytrace=False,
        )
    try:
        yield state
    finally:
        if subprocess.run(["umount", str(state)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(state)], check=False)


def _fill(path: Path) -> int:
    """Write `path` until the filesystem has no block left; return the bytes written."""
    written = 0
    chunk = 1 << 20
    with path.open("wb", buffering=0) as out:
        while chunk >= 512:
            try:
                written += out.write(b"\0" * chunk)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                chunk //= 2
    return written


async def _post(hive, to: str, body: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=60) as http:
        return await http.post(
            f"{hive.env.dashboard}/api/messages",
            json={"to": to, "body": body},
            headers=await hive.csrf_headers(http),
        )


async def _fill_and_send(hive, state: Path) -> tuple[Path, list[str], str, httpx.Response]:
    """Fill the disk, then send until a send is refused: (filler, accepted bodies, the refused
    body, its response)."""
    filler = state / "filler"
    _fill(filler)
    accepted: list[str] = []
    for n in range(200):
        body = f"while full {n:03d} " + "x" * BODY_BYTES
        response = await _post(hive, "a", body)
        if response.status_code != 201:
            print(f"{len(accepted)} sends fit, then: {response.status_code} {response.text}")
            return filler, accepted, body, response
        accepted.append(body)
    raise AssertionError(f"{len(accepted)} sends of {BODY_BYTES} bytes all fit on a full disk")


async def test_a_full_state_disk_loses_and_corrupts_nothing_and_recovers(
    state_tmpfs: Path, start_c0re, fake_model: FakeAnthropic
):
    seen: list[str] = []

    def respond(request):
        if (wake := wake_of(request)) is not None:
            seen.append(wake.body)
        return Text("noted")

    fake_model.responder = respond
    hive = await start_c0re(agents=["a"])
    assert hive.env.state_dir == state_tmpfs
    await hive.send("a", "before the disk filled")
    await hive.wait_status("a", lambda s: s.turns_total == 1 and s.state == "idle", timeout=90)

    filler, accepted, refused, _ = await _fill_and_send(hive, state_tmpfs)
    assert hive.process.proc.poll() is None, "hive-c0re died of the full disk"

    os.unlink(filler)
    await hive.send("a", "after the space came back")

    def all_delivered():
        rows = stored_rows(hive)
        done = len(rows) == len(accepted) + 2 and all(r.delivered_at for r in rows)
        return rows if done else None

    await eventually(
        lambda: asyncio.to_thread(all_delivered),
        what="every accepted message delivered",
        timeout=180,
        interval=0.5,
    )
    await hive.wait_status("a", lambda s: s.state == "idle", timeout=120)
    bodies = [r.body for r in stored_rows(hive)]
    # Whole bodies only, in order; the refused one nowhere.
    assert bodies == ["before the disk filled", *accepted, "after the space came back"]
    assert set(seen) == set(bodies), "every message reached the model"

    db = sqlite3.connect(f"file:{state_tmpfs / 'hive.db'}?mode=ro", uri=True)
    try:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert db.execute(
            "SELECT count(*) FROM messages WHERE body = ?", (refused,)
        ).fetchone() == (0,)
    finally:
        db.close()


async def test_a_send_refused_for_a_full_disk_says_the_disk_is_full(
    state_tmpfs: Path, start_c0re, fake_model: FakeAnthropic
):
    fake_model.responder = lambda request: Text("noted")
    hive = await start_c0re(agents=["a"])
    filler, _, _, response = await _fill_and_send(hive, state_tmpfs)
    try:
        assert 500 <= response.status_code < 600, response.text
        assert response.headers.get("content-type", "").startswith("application/json"), (
            f"{response.status_code} {response.headers.get('content-type')}: {response.text}"
        )
        error = response.json()
        assert error.get("ok") is False and error.get("message") and error.get("hint"), error
        said = f"{error['message']} {error['hint']}".lower()
        assert "disk" in said or "space" in said, error
    finally:
        os.unlink(filler)
