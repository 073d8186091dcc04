# checks.<system>: `nix flake check` builds the package and runs these.
{
  pkgs,
  self,
  nixpkgs,
}:
let
  hyperhive = self.packages.${pkgs.stdenv.hostPlatform.system}.default;
  python = pkgs.python3.withPackages (
    ps:
    hyperhive.pythonDependencies
    ++ [
      ps.psycopg
      ps.pytest
      ps.pytest-asyncio
      ps.httpx
    ]
  );
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

  # The unit tests (tests/unit), SQLite and PostgreSQL, against the source tree.
  pytest =
    pkgs.runCommand "hyperhive-pytest"
      {
        nativeBuildInputs = [
          python
          pkgs.git
          pkgs.postgresql
        ];
      }
      ''
        cp -r ${self} src
        chmod -R u+w src
        cd src
        export HOME=$TMPDIR
        python -m pytest -q -p no:cacheprovider -m "not integration" tests/unit
        touch $out
      '';

  vm = import ./tests/vm.nix { inherit pkgs self nixpkgs; };
}
