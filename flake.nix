{
  description = "hyperhive: a swarm of Claude Code agents in containers, on Temporal";

  # NixOS 25.11 is end of life. hyperhive needs the MCP Python SDK 2.x: nixpkgs has it as
  # python3Packages.mcp from nixos-26.05 on (1.x stays as mcp_1); nix/package.nix checks the
  # version and says what to do when it is 1.x.
  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-26.05";

  outputs =
    { self, nixpkgs }:
    let
      lib = nixpkgs.lib;
      systems = [
        "x86_64-linux"
        "aarch64-linux"
      ];
      # claude-code is unfree: allow exactly that package.
      pkgsFor =
        system:
        import nixpkgs {
          inherit system;
          config.allowUnfreePredicate = pkg: builtins.elem (lib.getName pkg) [ "claude-code" ];
        };
      forAllSystems = f: lib.genAttrs systems (system: f (pkgsFor system));
    in
    {
      packages = forAllSystems (pkgs: rec {
        hyperhive = pkgs.callPackage ./nix/package.nix { src = self; };
        hyperhive-postgres = hyperhive.override { withPostgres = true; };
        claude-code = pkgs.claude-code;
        default = hyperhive;
      });

      nixosModules = {
        hive-c0re = import ./nix/module.nix { inherit self; };
        agent = import ./nix/agent.nix { inherit self; };
        default = self.nixosModules.hive-c0re;
      };

      devShells = forAllSystems (pkgs: {
        default = pkgs.mkShell {
          packages = [
            (pkgs.python3.withPackages (
              ps:
              self.packages.${pkgs.stdenv.hostPlatform.system}.default.pythonDependencies
              ++ [
                ps.psycopg
                ps.pytest
                ps.pytest-asyncio
                ps.pytest-timeout
                ps.httpx
                ps.mypy
              ]
            ))
            pkgs.ruff
            pkgs.temporal-cli
            pkgs.claude-code
            pkgs.nodejs
            pkgs.git
            pkgs.postgresql
            pkgs.nixfmt
          ];
        };
      });

      checks = forAllSystems (pkgs: import ./nix/checks.nix { inherit pkgs self nixpkgs; });

      formatter = forAllSystems (pkgs: pkgs.nixfmt);
    };
}
