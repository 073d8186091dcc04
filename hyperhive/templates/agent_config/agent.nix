# agent.nix: the NixOS module of agent ${agent}'s container (h-${agent}).
#
# It is imported next to hyperhive's agent module by the flake hive-c0re generates, so anything a
# NixOS module can set goes here: extra packages, services, the hyperhive.agent.network options.
# It shapes the container on NixOS hosts (the nixos backend); the bwrap and process backends run
# the host's programs and read only CLAUDE.md and settings.json. The model and the permissions
# of the agent's claude are in settings.json. hm1nd edits this repo in /agents/${agent} and
# commits; a change reaches the agent only after an operator approves the commit.
{ pkgs, ... }:
{
  # Tools this agent needs, for example:
  # hyperhive.agent.extraPackages = [ pkgs.ripgrep pkgs.python3 ];
}
