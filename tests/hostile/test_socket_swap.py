"""An agent racing hive-c0re on its own socket dir cannot reach a host file (issue 13, "private
state": `bind_unix_socket` chmod-ed after bind in a dir the agent owns).

An agent's socket dir is writable from its sandbox, and hive-c0re may run as root: between the
bind and the chmod, the agent could swap the socket's name for a symlink to /etc/shadow and have
it made 0660. Here an attacker thread swaps `mcp.sock` for a symlink to a victim file as fast as
it can while the real `bind_unix_socket` binds there again and again: the victim's mode and
content never change, and every bind either serves a socket or is refused with a clear error.
"""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

from api.unix_socket import bind_unix_socket
from hyperhive.errors import HiveError

ROUNDS = 300
ATTACKER = """
import os, stat, sys, threading
victim, path = sys.argv[1], sys.argv[2]
stop = threading.Event()
threading.Thread(target=lambda: (sys.stdin.readline(), stop.set()), daemon=True).start()
print("swapping", flush=True)
swaps = 0
while not stop.is_set():
    try:
        if not stat.S_ISSOCK(os.lstat(path).st_mode):
            continue
    except FileNotFoundError:
        continue
    # A socket appeared: put the victim in its place before hive-c0re's next step.
    link = f"{path}.swap-{swaps}"
    os.symlink(victim, link)
    os.replace(link, path)
    swaps += 1
print(swaps)
"""


def test_swapping_the_socket_for_a_symlink_never_touches_the_target(tmp_path: Path) -> None:
    tmp_path.chmod(0o700)
    agent_dir = tmp_path / "agents" / "alice"
    agent_dir.mkdir(parents=True)
    agent_dir.chmod(0o777)  # the agent's own, writable from its sandbox
    victim = tmp_path / "shadow"
    victim.write_text("root:secret\n")
    victim.chmod(0o600)
    path = agent_dir / "mcp.sock"
    # Another process, as the agent is: it swaps without waiting for hive-c0re's GIL.
    attacker = subprocess.Popen(
        [sys.executable, "-c", ATTACKER, os.fspath(victim), os.fspath(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert attacker.stdout is not None and attacker.stdout.readline() == "swapping\n"
    served = refused = 0
    try:
        for _ in range(ROUNDS):
            # A fresh start each round (the attacker's last symlink is refused as not a socket).
            if path.is_symlink():
                path.unlink()
            try:
                sock = bind_unix_socket(path, "alice's MCP", HiveError)
            except HiveError as e:
                assert e.hint, e
                refused += 1
                continue
            sock.close()
            served += 1
    finally:
        out, _ = attacker.communicate("stop\n", timeout=30)
    swaps = int(out)
    print(f"{swaps} swaps, {served} served, {refused} refused")
    assert stat.S_IMODE(victim.stat().st_mode) == 0o600, "the target's mode was changed"
    assert victim.read_text() == "root:secret\n"
    # It raced often (how often depends on the machine's load).
    assert swaps > ROUNDS // 10, f"the attacker swapped only {swaps} times"
    assert served + refused == ROUNDS and served > 0, (served, refused)
    # Once the attacker stops, the socket is served where it belongs.
    path.unlink(missing_ok=True)
    sock = bind_unix_socket(path, "alice's MCP", HiveError)
    try:
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client.connect(os.fspath(path))
        client.close()
        assert stat.S_ISSOCK(path.lstat().st_mode)
    finally:
        sock.close()
