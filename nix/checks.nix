# checks.<system>: `nix flake check` builds the package and runs these.
{
  pkgs,
  self,
  nixpkgs,
}:
let
  hyperhive = self.packages.${pkgs.stdenv.hostPlatform.system}.default;
  project = (builtins.fromTOML (builtins.readFile ../pyproject.toml)).project;

  # The source as an editable install, as in `make test`'s .venv: tests start `hive` and
  # `hive-agent` from beside the interpreter, and subprocesses import the hyperhive under test.
  editable = pkgs.python3Packages.mkPythonEditablePackage {
    pname = project.name;
    inherit (project) version scripts;
    root = "${self}";
    dependencies = hyperhive.pythonDependencies;
  };

  # What tests/unit and tests/workflows import: the package's dependencies, psycopg for the
  # PostgreSQL runs and the test tools. Not playwright, hypothesis or schemathesis: the browser
  # and hostile tests that need them are not run here.
  python = pkgs.python3.withPackages (
    ps:
    [ editable ]
    ++ hyperhive.pythonDependencies
    ++ [
      ps.psycopg
      ps.pytest
      ps.pytest-asyncio
      ps.pytest-timeout
      ps.httpx
    ]
  );

  temporal-test-server = pkgs.callPackage ./temporal-test-server.nix { };

  # The tests that cannot pass in the build sandbox.
  deselected = [
    # It reads the fake nixos-container's `#!/usr/bin/env python3`, which patchShebangs rewrites
    # (the sandbox has no /usr/bin/env).
    "tests/unit/backends/test_fake_nixos_container.py::test_installed_on_path_as_an_executable"
    # It gives the admin socket to the group `daemon`, which takes root: the build runs as nixbld,
    # and the sandbox's /etc/group has no such group.
    "tests/unit/api/test_admin_socket_group.py::test_the_socket_is_given_to_the_admin_group"
  ];
in
{
  package = hyperhive;

  # ruff check + ruff format --check, with pyproject.toml's settings.
  ruff = pkgs.runCommand "hyperhive-ruff" { nativeBuildInputs = [ pkgs.ruff ]; } ''
    cd ${self}
    ruff check --no-cache .
    ruff format --check --no-cache .
    touch $out
  '';

  # tests/unit (SQLite and PostgreSQL) and tests/workflows (the time-skipping server), against
  # the source tree, as `make unit` runs them but for the tests marked integration (the real
  # claude CLI). tests/rig/temporal.py finds `temporal` (the admin socket's tests run the dev
  # server) and `temporal-test-server` on PATH; the nixos backend's tests run its command lines
  # (setpriv) through the fake nixos-container, whose own tests use ps.
  pytest =
    pkgs.runCommand "hyperhive-pytest"
      {
        nativeBuildInputs = [
          python
          pkgs.git
          pkgs.postgresql
          pkgs.temporal-cli
          temporal-test-server
          pkgs.util-linux
          pkgs.procps
        ];
      }
      ''
        cp -r ${self} src
        chmod -R u+w src
        cd src
        export HOME=$TMPDIR
        # The fake nixos-container is run through its `#!/usr/bin/env python3`, and the build
        # sandbox has no /usr/bin/env.
        patchShebangs tests/fakes
        python -m pytest -q -p no:cacheprovider -m "not integration" tests/unit tests/workflows \
          ${pkgs.lib.concatMapStringsSep " " (test: "--deselect ${test}") deselected}
        touch $out
      '';

  vm = import ./tests/vm.nix { inherit pkgs self nixpkgs; };
}
