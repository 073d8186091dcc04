# checks.<system>.vm: a NixOS VM with services.hive-c0re spawns an agent through the CLI.
#
#   nix build .#checks.x86_64-linux.vm     (or `nix flake check`; needs KVM, on NixOS or with
#                                           nix configured for system-features = kvm nixos-test)
#
# The VM has no network: the agent's container must build from what is already in its store.
# So the agent's system (hyperhive's agent module + the initial agent.nix, which changes nothing)
# is built here, outside the VM, with the same nixpkgs.lib.nixosSystem the generated flake calls,
# and put into the VM's store; inside, `nixos-container create --flake` only evaluates and finds
# everything built. The hyperhive flake (path:<store path>, with its committed flake.lock) and
# nixpkgs' source are in the VM's store through the host system and the container's registry.
#
# hive-c0re pins the agent's flake to HIVE_HYPERHIVE_FLAKE_URL/HIVE_HYPERHIVE_REV (set by the
# module): an installed hyperhive has no git checkout to pin to.
#
# `hive` here is the module's CLI wrapper, run as root; it asks hive-c0re over the admin socket
# /run/hyperhive/host.sock, as the members of services.hive-c0re.adminGroup do.
{
  pkgs,
  self,
  nixpkgs,
}:
let
  agent = "alice";
  system = pkgs.stdenv.hostPlatform.system;
  agentSystem = nixpkgs.lib.nixosSystem {
    inherit system;
    modules = [
      self.nixosModules.agent
      { hyperhive.agent.name = agent; }
    ];
  };
in
pkgs.testers.runNixOSTest {
  name = "hyperhive";

  nodes.host =
    { pkgs, ... }:
    {
      imports = [ self.nixosModules.hive-c0re ];

      services.hive-c0re = {
        enable = true;
        # Only the agent under test: hm1nd would be one more container to build.
        extraEnvironment.HIVE_CREATE_MANAGER = "false";
      };

      environment.systemPackages = [
        pkgs.curl
        pkgs.python3
      ];
      # A service on all of the host's addresses, open in its firewall: the containers still must
      # not reach it.
      networking.firewall.allowedTCPPorts = [ 9999 ];
      nix.settings = {
        substituters = pkgs.lib.mkForce [ ];
        flake-registry = "";
      };

      virtualisation = {
        memorySize = 4096;
        diskSize = 8192;
        cores = 2;
        writableStore = true;
        additionalPaths = [
          agentSystem.config.system.build.toplevel
          self.outPath
          nixpkgs.outPath
        ];
      };
    };

  testScript = ''
    host.wait_for_unit("hive-temporal.service")
    host.wait_for_unit("hive-c0re.service")
    host.wait_for_open_port(7000)
    host.wait_until_succeeds("curl -sf http://127.0.0.1:7000/health", timeout=120)

    with subtest("spawn ${agent} through the CLI and approve it"):
        host.succeed("hive spawn ${agent} --purpose 'VM test agent'")
        host.wait_until_succeeds("hive approvals | grep -q pending", timeout=60)
        host.succeed("hive approve 1 --note 'VM test'")

    with subtest("its container h-${agent} is up"):
        host.wait_until_succeeds(
            "test \"$(nixos-container status h-${agent})\" = up", timeout=900
        )
        host.succeed("nixos-container run h-${agent} -- sh -c 'command -v hive-agent claude'")
        host.succeed("test -S /run/hyperhive/agents/${agent}/mcp.sock")

    with subtest("the container cannot reach the host's services"):
        host.succeed(
            "systemd-run --unit=probe /run/current-system/sw/bin/python3 -m http.server 9999"
        )
        host.wait_for_open_port(9999)
        host_ip = host.succeed(
            "sed -n 's/^HOST_ADDRESS=//p' /etc/nixos-containers/h-${agent}.conf"
        ).strip()
        host.succeed(f"curl -sf --max-time 5 http://{host_ip}:9999/ >/dev/null")
        for port in (9999, 7000, 7233):
            host.fail(
                f"nixos-container run h-${agent} -- "
                f"timeout 5 bash -c 'exec 3<>/dev/tcp/{host_ip}/{port}'"
            )
        host.succeed("nixos-container run h-${agent} -- iptables -S hive-egress")
  '';
}
