"""The fake `nixos-container` on its own, against REFERENCE §4 and nixpkgs' nixos-container.pl.

If the fake drifts from the real CLI, the backend's tests prove nothing: these pin its parsing,
its messages (curly quotes included), its state files and its exec chain.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.fakes.nixos_container import FakeInstall
from tests.rig.polling import eventually_sync

FAKE = Path(__file__).resolve().parents[2] / "fakes" / "nixos_container.py"
ERRNO_ISH = {1, 2, 17, 22, 255}


@pytest.fixture
def fake(tmp_path: Path) -> FakeInstall:
    return FakeInstall(tmp_path / "fake")


@pytest.fixture
def cwd(tmp_path: Path) -> Path:
    path = tmp_path / "cwd"
    path.mkdir()
    return path


def make_flake(directory: Path, *extra: str, attr: str = "container") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "flake.nix").write_text(
        f"{{ outputs = _: {{ nixosConfigurations.{attr} = 1; }}; }}"
    )
    for name in extra:
        (directory / name).write_text("")
    return directory


def run(
    fake: FakeInstall,
    *args: str,
    cwd: Path,
    stdin: str = "",
    extra_env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    env = fake.env()
    env.update(extra_env or {})
    return subprocess.run(
        ["nixos-container", *args],
        cwd=cwd,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def failed(result: subprocess.CompletedProcess[str], message: str) -> None:
    """A `die`: non-zero (errno-ish, unstable) exit and the message on stderr."""
    assert result.returncode in ERRNO_ISH, (result.returncode, result.stderr)
    assert message in result.stderr, result.stderr


def prog(fake: FakeInstall) -> str:
    """Perl's $0: the path the script was started by (found on PATH)."""
    return str(fake.cli)


def test_installed_on_path_as_an_executable(fake: FakeInstall) -> None:
    assert os.access(FAKE, os.X_OK)
    assert FAKE.read_text().startswith("#!/usr/bin/env python3\n")
    assert fake.cli.resolve() == FAKE


def test_every_invocation_is_logged_with_argv_and_cwd(fake: FakeInstall, cwd: Path) -> None:
    run(fake, "status", "h-a", cwd=cwd)
    run(fake, "--bogus", cwd=cwd)
    assert fake.calls() == [
        {"argv": ["status", "h-a"], "cwd": str(cwd)},
        {"argv": ["--bogus"], "cwd": str(cwd)},
    ]


def test_refuses_to_run_without_a_fake_root(fake: FakeInstall, cwd: Path) -> None:
    env = fake.env()
    del env["FAKE_NIXOS_ROOT"]
    result = subprocess.run(
        ["nixos-container", "list"], cwd=cwd, env=env, capture_output=True, text=True, check=False
    )
    assert result.returncode != 0 and "FAKE_NIXOS_ROOT" in result.stderr


# --- argument parsing --------------------------------------------------------------------------


def test_help_prints_usage(fake: FakeInstall, cwd: Path) -> None:
    result = run(fake, "--help", cwd=cwd)
    assert result.returncode == 0
    assert result.stdout.startswith("Usage: nixos-container list\n")
    assert "nixos-container run <container-name> -- args..." in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--frob"], "Unknown option: frob\n"),
        (["create", "h-a", "--flake"], "Option flake requires an argument\n"),
        (["create", "h-a", "--help=x"], "Option help does not take an argument\n"),
        # Getopt::Long takes unique prefixes, so a command without `--` is parsed as options.
        (["run", "h-a", "ls", "-l"], "Option l is ambiguous (local-address, log-format)\n"),
    ],
)
def test_getopt_errors_exit_1(fake: FakeInstall, cwd: Path, args: list[str], message: str) -> None:
    result = run(fake, *args, cwd=cwd)
    assert result.returncode == 1
    assert result.stderr == message


def test_options_may_come_anywhere_and_be_abbreviated(fake: FakeInstall, tmp_path: Path) -> None:
    flake = make_flake(tmp_path / "flake")
    assert run(fake, "--fl", f"{flake}#container", "create", "h-a", cwd=tmp_path).returncode == 0
    assert f"FLAKE={flake}\n" in fake.conf("h-a").read_text()
    assert run(fake, "create", "--FLAKE=" + str(flake), "h-b", cwd=tmp_path).returncode == 0


def test_missing_action_and_name(fake: FakeInstall, cwd: Path) -> None:
    failed(run(fake, cwd=cwd), f"{prog(fake)}: no action specified\n")
    failed(run(fake, "start", cwd=cwd), f"{prog(fake)}: no container name specified\n")


def test_host_address_needs_local_address(fake: FakeInstall, cwd: Path) -> None:
    failed(
        run(fake, "create", "h-a", "--host-address", "10.0.0.1", cwd=cwd),
        "With --host-address set, --local-address is required as well! at ",
    )


@pytest.mark.parametrize("name", ["bad.name", "a b", "ä", "h/x"])
def test_invalid_container_name(fake: FakeInstall, cwd: Path, name: str) -> None:
    for action in ("create", "start", "status", "destroy"):
        failed(run(fake, action, name, cwd=cwd), f"{prog(fake)}: invalid container name\n")


def test_unknown_action_is_checked_after_the_container(fake: FakeInstall, tmp_path: Path) -> None:
    failed(run(fake, "frob", "h-a", cwd=tmp_path), "container ‘h-a’ does not exist\n")
    run(fake, "create", "h-a", "--flake", str(make_flake(tmp_path / "f")), cwd=tmp_path)
    failed(run(fake, "frob", "h-a", cwd=tmp_path), f"{prog(fake)}: unknown action ‘frob’\n")


def test_exit_codes_are_unstable(fake: FakeInstall, cwd: Path) -> None:
    codes = {run(fake, "start", "h-missing", cwd=cwd).returncode for _ in range(15)}
    assert codes <= ERRNO_ISH
    assert len(codes) > 1


# --- create ------------------------------------------------------------------------------------


def test_create_from_a_flake(fake: FakeInstall, tmp_path: Path, cwd: Path) -> None:
    flake = make_flake(tmp_path / "agent")

    result = run(fake, "create", "h-alpha", "--flake", f"{flake}#container", cwd=cwd)

    assert result.returncode == 0, result.stderr
    assert result.stderr == "host IP is 10.233.1.1, container IP is 10.233.1.2\n"
    assert fake.conf("h-alpha").read_text() == (
        "PRIVATE_NETWORK=1\nHOST_ADDRESS=10.233.1.1\nLOCAL_ADDRESS=10.233.1.2\n"
        f"HOST_BRIDGE=\nHOST_PORT=\nAUTO_START=0\nFLAKE={flake}\n"
    )
    assert fake.system_source("h-alpha") == flake
    assert not (cwd / ".tmp").exists() and not (cwd / ".tmp").is_symlink()
    assert run(fake, "status", "h-alpha", cwd=cwd).stdout == "down\n"
    assert run(fake, "list", cwd=cwd).stdout == "h-alpha\n"
    # The next container gets the next free address pair.
    run(fake, "create", "h-beta", "--flake", str(flake), cwd=cwd)
    assert "HOST_ADDRESS=10.233.2.1\n" in fake.conf("h-beta").read_text()


def test_create_name_length_limit(fake: FakeInstall, tmp_path: Path) -> None:
    flake = str(make_flake(tmp_path / "f"))
    assert run(fake, "create", "h-123456789", "--flake", flake, cwd=tmp_path).returncode == 0
    failed(
        run(fake, "create", "h-1234567890", "--flake", flake, cwd=tmp_path),
        f"{prog(fake)}: container name ‘h-1234567890’ is too long\n",
    )
    assert not fake.conf("h-1234567890").exists()


def test_create_of_an_existing_container(fake: FakeInstall, tmp_path: Path) -> None:
    flake = str(make_flake(tmp_path / "f"))
    run(fake, "create", "h-a", "--flake", flake, cwd=tmp_path)
    failed(
        run(fake, "create", "h-a", "--flake", flake, cwd=tmp_path),
        f"{prog(fake)}: container ‘h-a’ already exists\n",
    )


@pytest.mark.parametrize(
    ("setup", "nix_error"),
    [
        ("no-dir", "error: path '{flake}' does not exist"),
        ("no-flake-nix", "error: path '{flake}/flake.nix' does not exist"),
        ("BROKEN", "error: builder for '/nix/store/"),
        ("wrong-attr", 'does not provide attribute \'nixosConfigurations."container"'),
    ],
)
def test_create_build_failure(
    fake: FakeInstall, tmp_path: Path, cwd: Path, setup: str, nix_error: str
) -> None:
    flake = tmp_path / "flake"
    if setup == "no-flake-nix":
        flake.mkdir()
    elif setup == "BROKEN":
        make_flake(flake, "BROKEN")
    elif setup == "wrong-attr":
        make_flake(flake, attr="other")

    result = run(fake, "create", "h-a", "--flake", f"{flake}#container", cwd=cwd)

    failed(result, nix_error.format(flake=flake))
    # The flake part only, in straight quotes; the last line.
    assert result.stderr.endswith(f"{prog(fake)}: failed to build container from flake '{flake}'\n")
    # Like the real script, a failed flake build cleans nothing up.
    assert fake.conf("h-a").exists()
    assert fake.system_source("h-a") is None
    failed(run(fake, "start", "h-a", cwd=cwd), "failed to start container")


def test_create_from_a_registry_flake_fails(fake: FakeInstall, cwd: Path) -> None:
    result = run(fake, "create", "h-a", "--flake", "nixpkgs#container", cwd=cwd)
    failed(result, "cannot find flake 'flake:nixpkgs' in the flake registries")
    assert result.stderr.endswith("failed to build container from flake 'nixpkgs'\n")


def test_create_attr_from_the_flake_ref(fake: FakeInstall, tmp_path: Path, cwd: Path) -> None:
    flake = make_flake(tmp_path / "f", attr="other")
    assert run(fake, "create", "h-a", "--flake", f"{flake}#other", cwd=cwd).returncode == 0
    failed(run(fake, "create", "h-b", "--flake", f"{flake}", cwd=cwd), "failed to build")


def test_failed_config_build_removes_what_it_made(fake: FakeInstall, cwd: Path) -> None:
    result = run(fake, "create", "h-a", "--config", "BROKEN", cwd=cwd)
    failed(result, f"{prog(fake)}: failed to build initial container configuration\n")
    assert not fake.conf("h-a").exists()
    assert run(fake, "create", "h-a", "--config", "{ }", cwd=cwd).returncode == 0


def test_create_writes_dot_tmp_in_its_cwd(fake: FakeInstall, tmp_path: Path, cwd: Path) -> None:
    flake = make_flake(tmp_path / "f")
    env = fake.env()
    env["FAKE_NIXOS_BUILD_DELAY"] = "1"
    process = subprocess.Popen(
        ["nixos-container", "create", "h-a", "--flake", str(flake)],
        cwd=cwd,
        env=env,
        stderr=subprocess.PIPE,
    )

    def link() -> Path | None:
        ended = process.poll() is not None  # looked at first: once ended, no link can show up
        if (cwd / ".tmp").is_symlink():
            return Path(os.readlink(cwd / ".tmp"))
        assert not ended, f"create ended (rc={process.returncode}) and no ./.tmp link was seen"
        return None

    seen = eventually_sync(link, timeout=10, interval=0.01, what="create's ./.tmp link")
    assert process.wait(timeout=10) == 0
    assert seen is not None and seen.parent == fake.paths.store
    assert not (cwd / ".tmp").is_symlink()  # read back and removed


def test_create_needs_a_writable_cwd(fake: FakeInstall, tmp_path: Path) -> None:
    flake = make_flake(tmp_path / "f")
    gone = tmp_path / "gone"
    gone.mkdir()
    # Root may write anywhere, so make the cwd unwritable by removing it once the fake is in it.
    result = subprocess.run(
        ["nixos-container", "create", "h-a", "--flake", str(flake)],
        cwd=gone,
        env=fake.env(),
        preexec_fn=lambda: os.rmdir(os.getcwd()),
        capture_output=True,
        text=True,
        check=False,
    )
    failed(result, "error: creating symlink '")
    assert result.stderr.endswith(f"failed to build container from flake '{flake}'\n")


def test_creates_in_one_cwd_race(fake: FakeInstall, tmp_path: Path, cwd: Path) -> None:
    """Why the backend gives every container its own cwd: ./.tmp is shared."""
    env = fake.env()
    env["FAKE_NIXOS_BUILD_DELAY"] = "2"  # both must write ./.tmp before either reads it back
    flakes = {name: make_flake(tmp_path / name) for name in ("h-a", "h-b")}
    processes = {
        name: subprocess.Popen(
            ["nixos-container", "create", name, "--flake", str(flake)],
            cwd=cwd,
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, flake in flakes.items()
    }
    results = {name: (p.wait(timeout=20), p.communicate()[1]) for name, p in processes.items()}

    died = [name for name, (code, err) in results.items() if code != 0 and "Died at " in err]
    wrong = [
        name
        for name, (code, _) in results.items()
        if code == 0 and fake.system_source(name) != flakes[name]
    ]
    assert died and wrong, results  # one took the other's system, the other found no ./.tmp


def test_ensure_unique_name(fake: FakeInstall, tmp_path: Path) -> None:
    flake = str(make_flake(tmp_path / "f"))
    run(fake, "create", "h-a", "--flake", flake, cwd=tmp_path)
    result = run(fake, "create", "h-a", "--flake", flake, "--ensure-unique-name", cwd=tmp_path)
    assert result.returncode == 0 and result.stdout == "h-a-0\n"


# --- long and failing builds ------------------------------------------------------------------

BUILDER_LOG = "\n".join(f"builder step {i}" for i in range(1, 31)) + "\nerror: the real error"


def test_a_long_build_prints_nix_progress_meanwhile(
    fake: FakeInstall, tmp_path: Path, cwd: Path
) -> None:
    flake = make_flake(tmp_path / "f")
    started = time.monotonic()
    process = subprocess.Popen(
        ["nixos-container", "create", "h-a", "--flake", f"{flake}#container"],
        cwd=cwd,
        env={**fake.env(), "FAKE_NIXOS_BUILD_SECONDS": "1.5"},
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    # The plan and the first derivation come at once, before the build is over.
    first = [process.stderr.readline() for _ in range(7)]
    assert process.poll() is None, "the build ended before its first progress lines were read"
    rest = process.stderr.read()
    assert process.wait(timeout=30) == 0
    elapsed = time.monotonic() - started

    assert elapsed >= 1.5
    assert first[0] == "host IP is 10.233.1.1, container IP is 10.233.1.2\n"
    assert first[1] == "these 5 derivations will be built:\n"
    planned = [line.strip() for line in first[2:7]]
    assert all(d.startswith("/nix/store/") and d.endswith(".drv") for d in planned), planned
    assert planned[-1].endswith("-nixos-system-container.drv")
    started_lines = rest.splitlines()
    assert started_lines == [f"building '{drv}'..." for drv in planned]
    assert fake.system_source("h-a") == flake


def test_an_instant_build_prints_no_progress(fake: FakeInstall, tmp_path: Path, cwd: Path) -> None:
    flake = make_flake(tmp_path / "f")
    result = run(
        fake,
        "create",
        "h-a",
        "--flake",
        str(flake),
        cwd=cwd,
        extra_env={"FAKE_NIXOS_BUILD_SECONDS": "0"},
    )
    assert result.returncode == 0 and "derivations will be built" not in result.stderr


@pytest.mark.parametrize("action", ["create", "update"])
def test_a_failing_build_prints_what_nix_and_the_cli_print(
    fake: FakeInstall, tmp_path: Path, cwd: Path, action: str
) -> None:
    flake = make_flake(tmp_path / "f")
    if action == "update":
        assert run(fake, "create", "h-a", "--flake", str(flake), cwd=cwd).returncode == 0
    failing = {"FAKE_NIXOS_BUILD_FAILURE": BUILDER_LOG, "FAKE_NIXOS_BUILD_SECONDS": "0.5"}
    started = time.monotonic()

    result = run(fake, action, "h-a", "--flake", f"{flake}#container", cwd=cwd, extra_env=failing)

    assert time.monotonic() - started >= 0.5  # it fails after building for a while
    failed(result, "error: builder for '/nix/store/")
    lines = result.stderr.splitlines()
    [plan] = [i for i, line in enumerate(lines) if line.endswith("derivations will be built:")]
    built = [line for line in lines if line.startswith("building '")]
    # The failed builder's derivation was the last to start; the system never started.
    failed_drv = built[-1][len("building '") : -len("'...")]
    assert lines[plan + 1 : plan + 6][3].strip() == failed_drv
    assert not any("nixos-system-container.drv'..." in line for line in built)
    # nix shows the builder's last `log-lines` (25) lines, then points at the rest.
    at = lines.index(f"error: builder for '{failed_drv}' failed with exit code 1;")
    assert lines[at + 1] == "       last 25 log lines:"
    assert lines[at + 2 : at + 27] == [
        f"       > {line}" for line in BUILDER_LOG.splitlines()[-25:]
    ]
    assert lines[at + 26] == "       > error: the real error"
    assert lines[at + 27 :] == [
        "       For full logs, run:",
        f"         nix log {failed_drv}",
        f"error: 1 dependencies of derivation '{lines[plan + 5].strip()}' failed to build",
        f"{prog(fake)}: failed to build container from flake '{flake}'",
    ]
    if action == "create":  # like the real script, it leaves the .conf behind
        assert fake.conf("h-a").exists() and fake.system_source("h-a") is None
    else:  # the container keeps the system it had
        assert fake.system_source("h-a") == flake


def test_a_broken_flake_s_text_is_the_builder_log(
    fake: FakeInstall, tmp_path: Path, cwd: Path
) -> None:
    flake = make_flake(tmp_path / "f")
    (flake / "BROKEN").write_text("compiling\nerror: attribute 'x' missing\n")
    result = run(fake, "create", "h-a", "--flake", str(flake), cwd=cwd)
    failed(result, "       last 2 log lines:\n       > compiling\n       > error: attribute 'x'")


# --- other actions -----------------------------------------------------------------------------


def test_missing_container(fake: FakeInstall, cwd: Path) -> None:
    for action in ("start", "stop", "update", "terminate", "run", "show-ip"):
        failed(run(fake, action, "h-a", cwd=cwd), f"{prog(fake)}: container ‘h-a’ does not exist\n")
    status = run(fake, "status", "h-a", cwd=cwd)
    failed(status, "container ‘h-a’ does not exist")
    assert status.stdout == "gone\n"
    destroy = run(fake, "destroy", "h-a", cwd=cwd)
    assert destroy.returncode == 0 and destroy.stderr == ""


def test_start_stop_status_destroy(fake: FakeInstall, tmp_path: Path, cwd: Path) -> None:
    run(fake, "create", "h-a", "--flake", str(make_flake(tmp_path / "f")), cwd=cwd)
    assert run(fake, "start", "h-a", cwd=cwd).returncode == 0
    assert run(fake, "start", "h-a", cwd=cwd).returncode == 0
    assert run(fake, "status", "h-a", cwd=cwd).stdout == "up\n"
    assert fake.unit("h-a")["ActiveState"] == "active"
    assert run(fake, "stop", "h-a", cwd=cwd).returncode == 0
    assert run(fake, "stop", "h-a", cwd=cwd).returncode == 0
    assert run(fake, "status", "h-a", cwd=cwd).stdout == "down\n"
    run(fake, "start", "h-a", cwd=cwd)
    assert run(fake, "destroy", "h-a", cwd=cwd).returncode == 0  # terminates it first
    assert not fake.conf("h-a").exists()
    assert not (fake.paths.state_dir / "h-a").exists()
    assert not (fake.paths.profiles / "h-a").exists()
    assert run(fake, "status", "h-a", cwd=cwd).stdout == "gone\n"


def test_terminate_needs_a_running_container(fake: FakeInstall, tmp_path: Path) -> None:
    run(fake, "create", "h-a", "--flake", str(make_flake(tmp_path / "f")), cwd=tmp_path)
    failed(run(fake, "terminate", "h-a", cwd=tmp_path), "unable to get container's main PID\n")


def test_show_ip(fake: FakeInstall, tmp_path: Path) -> None:
    run(fake, "create", "h-a", "--flake", str(make_flake(tmp_path / "f")), cwd=tmp_path)
    assert run(fake, "show-ip", "h-a", cwd=tmp_path).stdout == "10.233.1.2\n"


@pytest.mark.parametrize(
    ("flags", "problem"),
    [
        ('"--bind={missing}:/x"', "Failed to stat"),
        ('"--private-users=pick"', "unrecognized option"),
        ('"--bind=relative:/x"', "Failed to parse --bind= argument"),
    ],
)
def test_start_checks_extra_nspawn_flags(
    fake: FakeInstall, tmp_path: Path, flags: str, problem: str
) -> None:
    run(fake, "create", "h-a", "--flake", str(make_flake(tmp_path / "f")), cwd=tmp_path)
    with fake.conf("h-a").open("a") as conf:
        conf.write(f"EXTRA_NSPAWN_FLAGS={flags.format(missing=tmp_path / 'missing')}\n")
    result = run(fake, "start", "h-a", cwd=tmp_path)
    failed(result, problem)
    assert result.stderr.endswith(f"{prog(fake)}: failed to start container\n")


def test_start_passes_extra_nspawn_flags(fake: FakeInstall, tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    run(fake, "create", "h-a", "--flake", str(make_flake(tmp_path / "f")), cwd=tmp_path)
    with fake.conf("h-a").open("a") as conf:
        conf.write(f'EXTRA_NSPAWN_FLAGS="--bind={tmp_path}/src:/a --bind-ro=/:/b"\n')
    assert run(fake, "start", "h-a", cwd=tmp_path).returncode == 0
    assert fake.unit("h-a")["nspawn_flags"] == [f"--bind={tmp_path}/src:/a", "--bind-ro=/:/b"]


def test_underscores_fail_at_start(fake: FakeInstall, tmp_path: Path) -> None:
    created = run(fake, "create", "h_a", "--flake", str(make_flake(tmp_path / "f")), cwd=tmp_path)
    assert created.returncode == 0  # the name passes create's checks
    failed(run(fake, "start", "h_a", cwd=tmp_path), "failed to start container\n")


def test_start_and_stop_failures(fake: FakeInstall, tmp_path: Path) -> None:
    run(
        fake,
        "create",
        "h-a",
        "--flake",
        str(make_flake(tmp_path / "a", "FAIL_START")),
        cwd=tmp_path,
    )
    result = run(fake, "start", "h-a", cwd=tmp_path)
    failed(result, "Job for container@h-a.service failed")
    assert result.stderr.endswith(f"{prog(fake)}: failed to start container\n")

    run(
        fake, "create", "h-b", "--flake", str(make_flake(tmp_path / "b", "FAIL_STOP")), cwd=tmp_path
    )
    run(fake, "start", "h-b", cwd=tmp_path)
    failed(run(fake, "stop", "h-b", cwd=tmp_path), f"{prog(fake)}: failed to stop container\n")


# --- update ------------------------------------------------------------------------------------


def test_update_keeps_the_conf_and_create_rewrites_it(fake: FakeInstall, tmp_path: Path) -> None:
    flake = str(make_flake(tmp_path / "f"))
    run(fake, "create", "h-a", "--flake", flake, cwd=tmp_path)
    with fake.conf("h-a").open("a") as conf:
        conf.write('EXTRA_NSPAWN_FLAGS="--bind-ro=/:/host"\n')
    conf_before = fake.conf("h-a").read_text()

    assert run(fake, "update", "h-a", "--flake", flake, cwd=tmp_path).returncode == 0
    assert run(fake, "update", "h-a", cwd=tmp_path).returncode == 0
    assert fake.conf("h-a").read_text() == conf_before

    run(fake, "destroy", "h-a", cwd=tmp_path)
    run(fake, "create", "h-a", "--flake", flake, cwd=tmp_path)
    assert "EXTRA_NSPAWN_FLAGS" not in fake.conf("h-a").read_text()


def test_update_without_flags_rebuilds_from_the_recorded_flake(
    fake: FakeInstall, tmp_path: Path, cwd: Path
) -> None:
    flake = make_flake(tmp_path / "f")
    run(fake, "create", "h-a", "--flake", f"{flake}#container", cwd=cwd)
    run(fake, "start", "h-a", cwd=cwd)
    before = fake.unit("h-a")["system"]
    (flake / "agent.nix").write_text("{ }")

    result = run(fake, "update", "h-a", cwd=cwd)

    assert result.returncode == 0
    assert result.stderr == "reloading container...\n"
    assert fake.unit("h-a")["system"] != before
    assert fake.unit("h-a")["system"] == os.readlink(fake.paths.profiles / "h-a" / "system")


def test_update_failures(fake: FakeInstall, tmp_path: Path, cwd: Path) -> None:
    flake = make_flake(tmp_path / "f")
    run(fake, "create", "h-a", "--flake", str(flake), cwd=cwd)
    run(fake, "start", "h-a", cwd=cwd)
    system = fake.unit("h-a")["system"]

    (flake / "BROKEN").write_text("")
    result = run(fake, "update", "h-a", cwd=cwd)
    assert result.stderr.endswith(f"{prog(fake)}: failed to build container from flake '{flake}'\n")
    failed(result, "builder for")
    assert fake.unit("h-a")["system"] == system

    (flake / "BROKEN").unlink()
    (flake / "FAIL_RELOAD").write_text("")
    failed(run(fake, "update", "h-a", cwd=cwd), f"{prog(fake)}: failed to reload container\n")


# --- run ---------------------------------------------------------------------------------------


@pytest.fixture
def up(fake: FakeInstall, tmp_path: Path, cwd: Path) -> str:
    run(fake, "create", "h-a", "--flake", str(make_flake(tmp_path / "f")), cwd=cwd)
    run(fake, "start", "h-a", cwd=cwd)
    return "h-a"


def test_run_passes_stdio_and_exit_code(fake: FakeInstall, cwd: Path, up: str) -> None:
    result = run(
        fake,
        "run",
        up,
        "--",
        "sh",
        "-c",
        'printf "%s|" "$1" "$(cat)"; echo oops >&2; exit 42',
        "sh",
        "it's an arg",
        cwd=cwd,
        stdin="from stdin",
    )
    assert result.returncode == 42
    assert result.stdout == "it's an arg|from stdin|"
    assert result.stderr == "oops\n"


def test_run_is_a_login_shell_in_a_new_session(fake: FakeInstall, cwd: Path, up: str) -> None:
    result = run(
        fake,
        "run",
        up,
        "--",
        "sh",
        "-c",
        'echo "$HOME|$USER|$FOO|$(pwd)"; ps -o sid= -p $$',
        cwd=cwd,
        extra_env={"FOO": "from the caller"},
    )
    line, sid = result.stdout.splitlines()
    assert line == f"/root|root||{fake.paths.state_dir / up / 'root'}"  # su -l: env reset, cd ~
    assert int(sid) != os.getsid(0)


def test_run_in_a_stopped_container(fake: FakeInstall, tmp_path: Path, cwd: Path) -> None:
    run(fake, "create", "h-a", "--flake", str(make_flake(tmp_path / "f")), cwd=cwd)
    result = run(fake, "run", "h-a", "--", "true", cwd=cwd)
    failed(result, "unable to get container's main PID\n")
    assert result.stderr == "unable to get container's main PID\n"  # no "$0: " prefix


def test_run_of_a_missing_program(fake: FakeInstall, cwd: Path, up: str) -> None:
    result = run(fake, "run", up, "--", "no-such-program-here", cwd=cwd)
    assert result.returncode == 127
    assert "exec: no-such-program-here: not found" in result.stderr


def test_run_forwards_sigterm_like_su(fake: FakeInstall, cwd: Path, up: str) -> None:
    process = subprocess.Popen(
        ["nixos-container", "run", up, "--", "sh", "-c", "echo ready; exec sleep 30"],
        cwd=cwd,
        env=fake.env(),
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    assert process.stdout.readline() == "ready\n"
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=10) == 128 + signal.SIGTERM


def test_run_survives_a_group_kill_without_pdeathsig(fake: FakeInstall, cwd: Path, up: str) -> None:
    """Why the backend wraps commands in `setpriv --pdeathsig`: su's setsid escapes killpg."""
    process = subprocess.Popen(
        ["nixos-container", "run", up, "--", "sh", "-c", "echo $$; exec sleep 30"],
        cwd=cwd,
        env=fake.env(),
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert process.stdout is not None
    inner = int(process.stdout.readline())
    try:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
        time.sleep(0.2)  # a negative check: give the kill time to reach inside, then see it did not
        assert Path(f"/proc/{inner}").exists()
        state = Path(f"/proc/{inner}/stat").read_text().rsplit(")", 1)[1].split()[0]
        assert state not in ("Z", "X")
    finally:
        os.kill(inner, signal.SIGKILL)
