"""`hive` as it runs on NixOS, with the fake `nixos-container` (tests/fakes/nixos_container.py).

`python -m tests.fakes.nixos_hive c0re` is `hive c0re` whose nixos backend (HIVE_CONTAINER_BACKEND
=nixos) finds the containers' .conf files and system profiles where the fake keeps them, under
FAKE_NIXOS_ROOT, instead of /etc/nixos-containers and /nix/var/nix/profiles: the one thing the
real `hive c0re` cannot be told. The fake must be first on PATH as `nixos-container`
(FakeInstall.env()). `nixos_hive_command` writes an executable that runs this, for tests that
start `hive` through tests.rig.hive_process.
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def nixos_hive_command(bin_dir: Path) -> Path:
    """An executable `hive` in `bin_dir` that runs this module with this interpreter."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    path = bin_dir / "hive"
    path.write_text(
        "#!/bin/sh\n"
        f"PYTHONPATH={shlex.quote(str(REPO_ROOT))}${{PYTHONPATH:+:$PYTHONPATH}} exec "
        f'{shlex.quote(sys.executable)} -m tests.fakes.nixos_hive "$@"\n'
    )
    path.chmod(0o755)
    return path


def main() -> None:
    import hive_c0re.c0re
    from activities.backends import ContainerBackend, NixosBackend, select_backend
    from hive_c0re.cli import main as hive_main
    from hyperhive.settings import HiveSettings
    from tests.fakes.nixos_container import Paths

    paths = Paths(Path(os.environ["FAKE_NIXOS_ROOT"]))

    def backend(settings: HiveSettings) -> ContainerBackend:
        if settings.container_backend != "nixos":
            return select_backend(settings)
        return NixosBackend(settings, conf_dir=paths.conf_dir, profiles_dir=paths.profiles)

    hive_c0re.c0re.select_backend = backend  # type: ignore[attr-defined]
    hive_main(sys.argv[1:])


if __name__ == "__main__":
    main()
