"""`hive up` cold start: from launch to the dashboard answering 200 on /health (fresh state dir).

    .venv/bin/python -m bench.cold_start [RUNS]

Each run uses a new state dir (a first start: migrations, a new Temporal DB, hm1nd's spawn
started) and free ports; it stops the stack with SIGINT afterwards.
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from tests.rig.ports import free_ports

HIVE = str(Path(sys.executable).parent / "hive")


def one_run() -> float:
    with tempfile.TemporaryDirectory() as tmp:
        dashboard, temporal, ui = free_ports(3)
        env = {k: v for k, v in os.environ.items() if not k.startswith("HIVE_")}
        env.update(
            HIVE_STATE_DIR=f"{tmp}/state",
            HIVE_DASHBOARD_PORT=str(dashboard),
            HIVE_TEMPORAL_PORT=str(temporal),
            HIVE_TEMPORAL_UI_PORT=str(ui),
            HIVE_CONTAINER_BACKEND="process",
        )
        started = time.perf_counter()
        proc = subprocess.Popen(
            [HIVE, "up"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            while True:
                try:
                    with urllib.request.urlopen(
                        f"http://127.0.0.1:{dashboard}/health", timeout=1
                    ) as response:
                        if response.status == 200:
                            return time.perf_counter() - started
                except OSError:
                    time.sleep(0.01)
                if proc.poll() is not None:
                    raise SystemExit(f"hive up exited with {proc.returncode}")
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(60)


def main(runs: int) -> None:
    times = [one_run() for _ in range(runs)]
    print(
        f"hive up → /health 200 over {runs} runs: median {statistics.median(times):.2f} s, "
        f"min {min(times):.2f} s, max {max(times):.2f} s"
    )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5)
