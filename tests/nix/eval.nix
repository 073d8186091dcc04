# What tests/nix/test_nix_files.py evaluates:
#   nix-instantiate --eval --strict --json tests/nix/eval.nix -A <attr> [--argstr host JSON] …
# with flake.nix's nixpkgs input replaced by the stub (tests/nix/stub.nix).
{
  # JSON of a NixOS module (plain config) added to the host, e.g. {"services":{"hive-c0re":…}}.
  host ? "{}",
  # JSON of a module added next to nixosModules.agent.
  agent ? "{}",
  # A directory holding a flake.nix (and agent.nix) made by hyperhive.agent_flake.
  agentFlakeDir ? "",
  # The version of a `mcp` given to hyperhive.override.
  mcpOverride ? "2.9.0",
  system ? "x86_64-linux",
}:
let
  stub = import ./stub.nix;
  inherit (stub) lib;
  root = ../..;
  flakeFile = import (root + "/flake.nix");
  hyperhive = stub.flake {
    inherit root;
    inputs.nixpkgs = stub.nixpkgs;
  };

  names = map (p: p.pname or p.name);
  pkg = hyperhive.packages.${system}.default;

  system' = modules: stub.nixosSystem { inherit system modules; };
  summary = evaluated: {
    inherit (evaluated) config options;
    packages = map (p: {
      inherit (p) name;
      text = p.text or null;
    }) evaluated.config.environment.systemPackages;
  };

  vm = hyperhive.checks.${system}.vm.test;
in
{
  flake = {
    inherit (flakeFile) description;
    inputs = lib.mapAttrs (_: i: i.url or null) flakeFile.inputs;
    systems = lib.attrNames hyperhive.packages;
    packages = lib.attrNames hyperhive.packages.${system};
    nixosModules = lib.attrNames hyperhive.nixosModules;
    devShells = lib.attrNames hyperhive.devShells.${system};
    devShellPackages = names hyperhive.devShells.${system}.default.packages;
    checks = lib.attrNames hyperhive.checks.${system};
    formatter = hyperhive.formatter.${system}.name;
    unfreeAllowed = hyperhive.packages.${system}.claude-code._unfreeAllowed;
    ruff = hyperhive.checks.${system}.ruff.script;
    pytest =
      let
        check = hyperhive.checks.${system}.pytest;
        inputs = check.env.nativeBuildInputs;
        input = pname: lib.head (lib.filter (p: (p.pname or null) == pname) inputs);
        python = input "python3";
        testServer = input "temporal-test-server";
      in
      {
        inherit (check) script;
        inputs = names inputs;
        pythonPackages = names python.pythonPackages;
        editable = map (p: {
          inherit (p) pname version root scripts;
          dependencies = names p.dependencies;
        }) (lib.filter (p: p.editable or false) python.pythonPackages);
        testServer = {
          inherit (testServer)
            version
            unpackPhase
            installPhase
            dontStrip
            ;
          inherit (testServer.src) url hash;
          inherit (testServer.meta) platforms mainProgram;
          nativeBuildInputs = names testServer.nativeBuildInputs;
        };
        source = hyperhive.outPath;
      };
    vm = {
      inherit (vm) name testScript;
      host = summary (system' [ vm.nodes.host ]);
    };
  };

  package = {
    inherit (pkg)
      pname
      version
      pyproject
      postPatch
      pythonRemoveDeps
      pythonRelaxDeps
      makeWrapperArgs
      doCheck
      pythonImportsCheck
      ;
    buildSystem = names pkg.build-system;
    dependencies = names pkg.dependencies;
    optionalDependencies = lib.mapAttrs (_: names) pkg.optional-dependencies;
    mainProgram = pkg.meta.mainProgram;
    mcpVersion = pkg.mcpSdk.version;
    runtimePath = map toString pkg.runtimePath;
    postgresDependencies = names hyperhive.packages.${system}.hyperhive-postgres.dependencies;
    overriddenMcpVersion =
      (pkg.override {
        mcp = stub.mkDrv "python3.13-mcp-${mcpOverride}" {
          pname = "mcp";
          version = mcpOverride;
        };
      }).mcpSdk.version;
  };

  host =
    let
      evaluated = system' [
        hyperhive.nixosModules.hive-c0re
        (builtins.fromJSON host)
      ];
    in
    summary evaluated
    // {
      # The Python packages of services.hive-c0re.package (psycopg: hyperhive-postgres).
      packageDependencies = names evaluated.config.services.hive-c0re.package.dependencies;
    };

  agent = summary (system' [
    hyperhive.nixosModules.agent
    (builtins.fromJSON agent)
  ]);

  agentFlake =
    let
      file = /. + agentFlakeDir + "/flake.nix";
      generated = import file;
      outputs = generated.outputs {
        self = generated;
        inherit hyperhive;
        nixpkgs = stub.nixpkgs;
      };
    in
    {
      inherit (generated) description;
      inputs = lib.mapAttrs (_: i: i.url or i.follows or null) generated.inputs;
      container = summary outputs.nixosConfigurations.container;
    };
}
