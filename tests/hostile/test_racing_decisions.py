"""Operators racing on one approval each learn what actually happened (issue 13, "approvals").

Before: 10 concurrent approve/deny over the admin socket all answered `ok` with the decision they
asked for; the final state was approved, yet 5 callers had been told "denied". Here 10 real
`hive approve` / `hive deny` commands race on a real spawn approval of the real daemon: exactly
one succeeds, every other exits non-zero naming the decision in force and who made it, and the
hive did what that one decision says (bob exists, or does not).
"""

from __future__ import annotations

import asyncio
import json
import subprocess

import pytest

from tests.rig.c0re import StartC0re
from tests.rig.hive_process import HIVE

pytestmark = pytest.mark.integration


async def test_ten_racing_decisions_one_wins_and_everyone_is_told_which(
    start_c0re: StartC0re,
) -> None:
    hive = await start_c0re(["alice"])
    asked = hive.hive("spawn", "bob", "--purpose", "review the racing test", "--json")
    assert asked.returncode == 0, asked.stdout + asked.stderr
    await hive.notice("spawn bob")  # the operator is told once the approval waits
    approval = hive.pending_approval("spawn")

    async def decide(i: int) -> tuple[str, int, str]:
        verb = "approve" if i % 2 else "deny"
        proc = await asyncio.create_subprocess_exec(
            HIVE,
            verb,
            str(approval.id),
            "--by",
            f"op{i}",
            env=hive.env.environ(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        out, err = await proc.communicate()
        assert proc.returncode is not None
        return verb, proc.returncode, (out + err).decode()

    answers = await asyncio.gather(*(decide(i) for i in range(10)))
    winners = [(verb, text) for verb, rc, text in answers if rc == 0]
    assert len(winners) == 1, answers
    verb, _ = winners[0]
    verdict = "approved" if verb == "approve" else "denied"
    decided = next(a for a in hive.approvals() if a.id == approval.id)
    assert decided.status == verdict and decided.decided_by is not None, decided
    for _, rc, text in answers:
        if rc != 0:
            assert f"approval #{approval.id} is already {verdict} by {decided.decided_by}" in text
            assert "the first decision stands" in text
    if verdict == "approved":
        await hive.notice("bob is up", timeout=180)
    listed = json.loads(hive.hive("list", "--json").stdout)
    names = {agent["name"] for agent in listed}
    assert ("bob" in names) == (verdict == "approved"), names
