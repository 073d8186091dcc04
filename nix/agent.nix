# nixosModules.agent: the base of every agent container h-<name>.
#
# hive-c0re builds each container from the flake it generates in applied/<name>
# (hyperhive/agent_flake.py):
#   nixosConfigurations.container = nixpkgs.lib.nixosSystem {
#     modules = [ hyperhive.nixosModules.agent ./agent.nix { hyperhive.agent.name = "<name>"; } ];
#   };
# and bind-mounts into it (EXTRA_NSPAWN_FLAGS, activities/backends/mounts.py):
#   /run/hive      <run dir>/agents/<name>/: its MCP socket mcp.sock, which is its identity
#   /root/.claude  its credentials and claude's sessions
#   /work          its working directory
#   /hive/config   read-only: its applied CLAUDE.md and settings.json, written before each turn
#   /agents        hm1nd only: every agent's proposed config repo
# Turns run as `nixos-container run h-<name> -- … claude -p …` with the hive MCP server
# `hive-agent mcp`; both are on the container's PATH (environment.systemPackages).
#
# Network. `nixos-container create` puts the container on a private veth network
# (PRIVATE_NETWORK=1: 10.233.N.2 inside, 10.233.N.1 on the host's ve-h-<name>), and
# services.hive-c0re gives it NAT egress (networking.nat for ve-+). An agent needs DNS and HTTPS to
# the model API, nothing else, and must not reach the host's services. Two layers:
#   1. Here, in the container: an egress filter (OUTPUT) lets out loopback, replies, DNS (53) and
#      hyperhive.agent.network.allowedTCPPorts (443), and before that rejects every private,
#      shared and link-local range, so the host (10.233.N.1), the LAN and cloud metadata
#      endpoints are refused, even on 443.
#   2. On the host (services.hive-c0re.isolateContainers): new connections from ve-* to the host
#      are refused except DNS. Root in the container could remove layer 1; it cannot touch this.
# hive-c0re, Temporal and the dashboard bind loopback only, so they are out of reach either way:
# an agent talks to the hive through /run/hive/mcp.sock alone.
{ self }:
{
  config,
  lib,
  pkgs,
  ...
}:
let
  cfg = config.hyperhive.agent;
  system = pkgs.stdenv.hostPlatform.system;

  blocked4 = [
    "10.0.0.0/8"
    "100.64.0.0/10"
    "169.254.0.0/16"
    "172.16.0.0/12"
    "192.168.0.0/16"
  ];
  blocked6 = [
    "fc00::/7"
    "fe80::/10"
  ];
  tcpPorts = map toString cfg.network.allowedTCPPorts;
  tcpPortSet = lib.concatStringsSep ", " tcpPorts;

  iptablesRules = ''
    # hyperhive egress filter (nix/agent.nix): DNS and the model API only.
    ip46tables -N hive-egress 2>/dev/null || true
    ip46tables -F hive-egress
    ip46tables -D OUTPUT -j hive-egress 2>/dev/null || true
    ip46tables -A OUTPUT -j hive-egress
    ip46tables -A hive-egress -o lo -j RETURN
    ip46tables -A hive-egress -m conntrack --ctstate ESTABLISHED,RELATED -j RETURN
    ip46tables -A hive-egress -p udp --dport 53 -j RETURN
    ip46tables -A hive-egress -p tcp --dport 53 -j RETURN
    ${lib.concatMapStringsSep "\n" (net: "iptables -w -A hive-egress -d ${net} -j REJECT") blocked4}
    ${lib.optionalString config.networking.enableIPv6 (
      lib.concatMapStringsSep "\n" (net: "ip6tables -w -A hive-egress -d ${net} -j REJECT") blocked6
    )}
    ${lib.concatMapStringsSep "\n" (
      p: "ip46tables -A hive-egress -p tcp --dport ${p} -j RETURN"
    ) tcpPorts}
    ip46tables -A hive-egress -j REJECT
  '';

  nftablesTable = ''
    # hyperhive egress filter (nix/agent.nix): DNS and the model API only.
    chain output {
      type filter hook output priority filter; policy accept;
      oifname "lo" accept
      ct state established,related accept
      meta l4proto { tcp, udp } th dport 53 accept
      ip daddr { ${lib.concatStringsSep ", " blocked4} } reject
      ip6 daddr { ${lib.concatStringsSep ", " blocked6} } reject
      ${lib.optionalString (tcpPorts != [ ]) "tcp dport { ${tcpPortSet} } accept"}
      reject
    }
  '';
in
{
  options.hyperhive.agent = {
    name = lib.mkOption {
      type = lib.types.strMatching "^[a-z][a-z0-9-]{0,8}$";
      example = "alice";
      description = "The agent's name; its container is h-<name>. Set by the generated flake.";
    };

    # No longer read: an agent's model and permissions are Claude Code's own settings, in the
    # settings.json of its config repo, which every backend's turns read (hyperhive.agent_config).
    # Kept so that an agent.nix that still sets them evaluates; a warning says where they went.
    model = lib.mkOption {
      type = lib.types.str;
      default = "";
      description = "Deprecated and ignored: set \"model\" in the agent's settings.json.";
    };

    permissionMode = lib.mkOption {
      type = lib.types.enum [
        ""
        "acceptEdits"
        "auto"
        "bypassPermissions"
        "default"
        "dontAsk"
        "plan"
      ];
      default = "";
      description = ''
        Deprecated and ignored: set "permissions": { "defaultMode": … } in the agent's
        settings.json.
      '';
    };

    extraPackages = lib.mkOption {
      type = lib.types.listOf lib.types.package;
      default = [ ];
      example = lib.literalExpression "[ pkgs.ripgrep pkgs.python3 ]";
      description = "More programs on the agent's PATH.";
    };

    package = lib.mkOption {
      type = lib.types.package;
      default = self.packages.${system}.default;
      defaultText = lib.literalExpression "hyperhive.packages.\${pkgs.system}.default";
      description = "The hyperhive package: `hive-agent`, the harness run inside the container.";
    };

    claudePackage = lib.mkOption {
      type = lib.types.package;
      default = self.packages.${system}.claude-code;
      defaultText = lib.literalExpression "hyperhive.packages.\${pkgs.system}.claude-code";
      description = "Claude Code (`claude`), nixpkgs' claude-code (unfree: allowed for it alone).";
    };

    network = {
      restrictEgress = lib.mkOption {
        type = lib.types.bool;
        default = true;
        description = ''
          Filter the container's outgoing traffic: loopback, replies, DNS and allowedTCPPorts only,
          never to private, shared or link-local addresses (the host, the LAN, metadata services).
        '';
      };
      allowedTCPPorts = lib.mkOption {
        type = lib.types.listOf lib.types.port;
        default = [ 443 ];
        description = "TCP ports the agent may open on public addresses (the model API: 443).";
      };
      nameservers = lib.mkOption {
        type = lib.types.listOf lib.types.str;
        default = [ ];
        example = [
          "1.1.1.1"
          "9.9.9.9"
        ];
        description = ''
          DNS servers for the container. Empty: the host's resolv.conf, which does not work when
          the host resolves through a loopback stub (systemd-resolved, dnsmasq on 127.0.0.1).
        '';
      };
    };
  };

  config = lib.mkMerge [
    {
      boot.isContainer = true;
      system.stateVersion = lib.mkDefault "26.05";
      networking.hostName = lib.mkDefault "h-${cfg.name}";
      documentation.enable = lib.mkDefault false;

      environment.systemPackages = [
        cfg.package
        cfg.claudePackage
        pkgs.git
      ]
      ++ cfg.extraPackages;

      # Who this container is, for people and tools inside it.
      environment.etc."hyperhive/agent.json".text = builtins.toJSON { inherit (cfg) name; };
    }

    (lib.mkIf (cfg.network.nameservers != [ ]) {
      networking.useHostResolvConf = false;
      networking.nameservers = cfg.network.nameservers;
    })

    (lib.mkIf (cfg.network.restrictEgress && !config.networking.nftables.enable) {
      networking.firewall.extraCommands = iptablesRules;
      networking.firewall.extraStopCommands = ''
        ip46tables -D OUTPUT -j hive-egress 2>/dev/null || true
      '';
    })
    (lib.mkIf (cfg.network.restrictEgress && config.networking.nftables.enable) {
      networking.nftables.tables.hive-egress = {
        family = "inet";
        content = nftablesTable;
      };
    })
    {
      warnings =
        lib.optional (cfg.network.restrictEgress && !config.networking.firewall.enable) ''
          hyperhive.agent.network.restrictEgress needs networking.firewall.enable in the container:
          without it agent ${cfg.name} can reach its host's and LAN's addresses.
        ''
        ++ lib.optional (cfg.model != "" || cfg.permissionMode != "") ''
          hyperhive.agent.model and hyperhive.agent.permissionMode are ignored: agent ${cfg.name}'s
          model and permissions are "model" and "permissions" in the settings.json of its config
          repo.
        '';
    }
  ];
}
