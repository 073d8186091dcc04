{
  description = "hyperhive: a swarm of Claude Code agents in containers, on Temporal";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-26.05";

  outputs =
    { self, nixpkgs }:
    let
      systems = [
        "x86_64-linux"
        "aarch64-linux"
      ];
      forAllSystems = f: nixpkgs.lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
    in
    {
      packages = forAllSystems (pkgs: {
        default = pkgs.callPackage ./nix/package.nix { src = self; };
      });

      nixosModules = {
        hive-c0re = import ./nix/module.nix { inherit self; };
        agent = ./nix/agent.nix;
      };
    };
}
