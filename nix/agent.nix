# The base of every agent container h-<name>.
{ lib, ... }:
{
  options.hyperhive.agent = {
    model = lib.mkOption {
      type = lib.types.str;
      default = "";
      description = "Model for this agent's claude turns; empty = the CLI default.";
    };
  };

  config = {
    boot.isContainer = true;
  };
}
