"""What an agent sees of its sandbox; run inside it by the agent's Bash tool (see
test_agents_do_work.py). Prints one JSON object.

    python3 probe.py STATE_DIR RUN_DIR TEMPORAL_HOST:PORT DASHBOARD_HOST:PORT
"""

import json
import os
import socket
import sys
from pathlib import Path

MODEL_PORT = 8787  # the sandbox's loopback forwarder to its model proxy


def tcp(address: str) -> str:
    host, port = address.rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
        return "connected"
    except ConnectionRefusedError:
        return "refused"
    except OSError as e:
        return type(e).__name__


def through_the_proxy(target: str) -> str:
    """A raw request line, as no HTTP library would send it."""
    with socket.create_connection(("127.0.0.1", MODEL_PORT), timeout=10) as s:
        request = f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        s.sendall(request.encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return data.decode(errors="replace")[:400]


def write_error(path: str) -> str:
    try:
        with open(path, "w") as f:
            f.write("10")
        return "written"
    except OSError as e:
        return type(e).__name__


def main() -> None:
    state, run, temporal, dashboard = sys.argv[1:5]
    lines = Path("/proc/self/status").read_text().splitlines()
    status = dict(line.split(":\t", 1) for line in lines if ":\t" in line)
    tricks = [
        f"%2Fv1%2F@{dashboard}/api/csrf",
        f"/%2Fv1%2F@{dashboard}/api/csrf",
        f"http://{dashboard}/api/csrf",
        f"//{dashboard}/api/csrf",
        "/v1/../api/csrf",
        "/v1/%2e%2e/api/csrf",
        f"/v1/messages@{dashboard}/api/csrf",
        "/api/csrf",
    ]
    sysctls = ("/proc/sys/vm/swappiness", "/proc/sys/kernel/core_pattern")
    found = {
        "uid_map": Path("/proc/self/uid_map").read_text().split(),
        "proc_sys": {path: write_error(path) for path in sysctls},
        "cap_eff": int(status["CapEff"], 16),
        "seen": {
            "state": os.path.exists(state),
            "other_agent": os.path.exists(f"{state}/agents/hm1nd"),
            "other_socket": os.path.exists(f"{run}/agents/hm1nd/mcp.sock"),
        },
        "tcp": {"temporal": tcp(temporal), "dashboard": tcp(dashboard)},
        "proxy": {target: through_the_proxy(target) for target in tricks},
        "proxy_api": through_the_proxy("/"),
    }
    print(json.dumps(found))


if __name__ == "__main__":
    main()
