# services.hive-c0re: the host daemon.
{ self }:
{
  config,
  lib,
  pkgs,
  ...
}:
let
  cfg = config.services.hive-c0re;
in
{
  options.services.hive-c0re = {
    enable = lib.mkEnableOption "hive-c0re, the hyperhive host daemon";
    package = lib.mkOption {
      type = lib.types.package;
      default = self.packages.${pkgs.stdenv.hostPlatform.system}.default;
      defaultText = lib.literalExpression "hyperhive.packages.\${system}.default";
      description = "The hyperhive package.";
    };
    stateDir = lib.mkOption {
      type = lib.types.str;
      default = "/var/lib/hyperhive";
      description = "Store, Temporal history and config repos.";
    };
  };

  config = lib.mkIf cfg.enable {
    boot.enableContainers = true;
    nix.settings.experimental-features = [
      "nix-command"
      "flakes"
    ];
    systemd.services.hive-c0re = {
      description = "hive-c0re (hyperhive)";
      wantedBy = [ "multi-user.target" ];
      after = [ "network.target" ];
      path = [
        pkgs.nixos-container
        config.nix.package
        pkgs.git
        pkgs.coreutils
      ];
      environment = {
        HIVE_STATE_DIR = cfg.stateDir;
        HIVE_RUN_DIR = "/run/hyperhive";
        HIVE_CONTAINER_BACKEND = "nixos";
      };
      serviceConfig = {
        ExecStart = "${lib.getExe' cfg.package "hive"} up";
        StateDirectory = "hyperhive";
        RuntimeDirectory = "hyperhive";
        WorkingDirectory = cfg.stateDir;
        Restart = "on-failure";
      };
    };
  };
}
