# services.hive-c0re: the hyperhive host daemon on NixOS (nixosModules.hive-c0re).
#
# - hive-c0re.service runs `hive c0re` as root (nixos-container needs root) with the state dir
#   /var/lib/hyperhive and the run dir /run/hyperhive (host.sock, agents/<name>/mcp.sock).
# - Temporal: services.hive-c0re.temporal.address, or (null, the default) hive-temporal.service,
#   an embedded `temporal server start-dev` on loopback with its SQLite DB in the state dir; with
#   its Web UI on, HIVE_TEMPORAL_UI_URL points the dashboard's workflow links at it. A cluster
#   may need TLS, mTLS and an API key (temporal.tls, temporal.apiKeyFile): hive reads those files
#   when it connects, so secrets stay out of the Nix store.
# - The store: SQLite in the state dir, or PostgreSQL (database.url); its password comes from a
#   pgpass file (database.passwordFile, PGPASSFILE), never from the URL. Several hosts share one
#   Temporal cluster and one PostgreSQL, each with its own hostId (HIVE_HOST_ID).
# - Agents are imperative nixos-containers h-<name> on private veth networks (ve-*), with NAT
#   egress; see nix/agent.nix for how they are kept off the host's services.
# - `hive` on the system PATH is the CLI with the daemon's environment; it speaks to the admin
#   socket <run dir>/host.sock (mode 0660, group adminGroup), so the admins need no root.
{ self }:
{
  config,
  lib,
  pkgs,
  ...
}:
let
  cfg = config.services.hive-c0re;
  system = pkgs.stdenv.hostPlatform.system;

  loopback = "127.0.0.1";
  runDir = "/run/hyperhive";
  embeddedTemporal = cfg.temporal.address == null;
  temporalAddress =
    if embeddedTemporal then "${loopback}:${toString cfg.ports.temporal}" else cfg.temporal.address;
  # hive links workflow histories to the embedded UI only when it starts Temporal itself; here
  # HIVE_TEMPORAL_ADDRESS is always set, so the module names the UI it runs.
  temporalUiUrl =
    if cfg.temporal.ui.url != null then
      cfg.temporal.ui.url
    else if embeddedTemporal && cfg.temporal.ui.enable then
      "http://${loopback}:${toString cfg.ports.temporalUi}"
    else
      null;

  tls = cfg.temporal.tls;
  # Only the paths go into the environment (and so the store); hive reads the files at connect.
  temporalAuthEnvironment = lib.optionalAttrs (!embeddedTemporal) (
    lib.optionalAttrs tls.enable { HIVE_TEMPORAL_TLS = "true"; }
    // lib.optionalAttrs (tls.caFile != null) { HIVE_TEMPORAL_TLS_CA = "${tls.caFile}"; }
    // lib.optionalAttrs (tls.certFile != null) { HIVE_TEMPORAL_TLS_CERT = "${tls.certFile}"; }
    // lib.optionalAttrs (tls.keyFile != null) { HIVE_TEMPORAL_TLS_KEY = tls.keyFile; }
    // lib.optionalAttrs (tls.serverName != null) {
      HIVE_TEMPORAL_TLS_SERVER_NAME = tls.serverName;
    }
    // lib.optionalAttrs (cfg.temporal.apiKeyFile != null) {
      HIVE_TEMPORAL_API_KEY_FILE = cfg.temporal.apiKeyFile;
    }
  );
  temporalAuthSet =
    tls.enable
    || tls.caFile != null
    || tls.certFile != null
    || tls.keyFile != null
    || tls.serverName != null
    || cfg.temporal.apiKeyFile != null;

  # A secret file's option takes a path string: a Nix path literal would be copied into the
  # store, which every local user can read.
  secretFile =
    example: what:
    lib.mkOption {
      type = lib.types.nullOr (lib.types.strMatching "/[^[:space:]]+");
      default = null;
      inherit example;
      description = ''
        Absolute path, as a string, of the file holding ${what}; hive-c0re (root) reads it when
        it connects. Not a Nix path literal (./file), which would be copied into the Nix store.
      '';
    };

  # HiveSettings.host_id's pattern (builtins.match matches whole strings: no ^…$).
  hostIdPattern = "[a-z0-9][a-z0-9-]{0,30}";

  # The store's URL (SQLAlchemy's form, dialect+driver://user[:password]@host[:port]/db?query),
  # read here only as far as the module needs: a password in it, PostgreSQL, and where its
  # server is. null: SQLite in the state dir.
  dbUrl = if cfg.database.url == null then "" else cfg.database.url;
  postgresDatabase = builtins.match "postgresql(\\+[A-Za-z0-9_]+)?://.*" dbUrl != null;
  # What SQLAlchemy reads as a password (user:password@), or libpq's password= parameter.
  dbUrlHasPassword =
    builtins.match "[A-Za-z0-9_+]+://[^:/]*:[^@]+@.*" dbUrl != null
    || builtins.match ".*[?&]password=.*" dbUrl != null;
  dbHost =
    let
      afterScheme = builtins.match "[A-Za-z0-9_+]+://(.*)" dbUrl;
      rest = if afterScheme == null then "" else lib.head afterScheme;
      withoutUser = builtins.match "[^:/]*(:[^@]*)?@(.*)" rest;
      hostPart = if withoutUser == null then rest else builtins.elemAt withoutUser 1;
      ipv6 = builtins.match "\\[([^]/?]+)].*" hostPart;
      urlHost =
        if ipv6 != null then lib.head ipv6 else lib.head (builtins.match "([^/:?]*).*" hostPart);
      # libpq's host= parameter wins over the URL's host (e.g. a unix socket directory).
      queryHost = builtins.match ".*[?&]host=([^&]*).*" dbUrl;
    in
    if queryHost != null then lib.head queryHost else urlHost;
  # No host (the default unix socket), a socket directory, or loopback: this machine.
  localDatabase =
    lib.elem dbHost [
      ""
      "localhost"
      "::1"
    ]
    || lib.hasPrefix "127." dbHost
    || lib.hasPrefix "/" dbHost
    || builtins.match "%2[fF].*" dbHost != null;
  remoteDatabase = cfg.database.url != null && !localDatabase;

  natInterface = cfg.nat.externalInterface;

  # systemd's StateDirectory= lives under /var/lib; elsewhere tmpfiles makes the dir.
  underVarLib = lib.hasPrefix "/var/lib/" cfg.stateDir;
  stateDirectory = lib.removePrefix "/var/lib/" cfg.stateDir;

  # The settings of hyperhive/settings.py (HIVE_*) for hive-c0re and the `hive` CLI.
  hiveEnvironment = {
    HIVE_STATE_DIR = cfg.stateDir;
    HIVE_RUN_DIR = runDir;
    HIVE_HOST_ID = cfg.hostId;
    HIVE_ADMIN_GROUP = cfg.adminGroup;
    HIVE_ACCESS_TOKEN_REQUIRED = if cfg.accessToken.enable then "true" else "false";
    HIVE_CONTAINER_BACKEND = cfg.backend;
    HIVE_BIND_HOST = cfg.bindHost;
    HIVE_DASHBOARD_PORT = toString cfg.ports.dashboard;
    HIVE_MANAGER_PORT = toString cfg.ports.manager;
    HIVE_AGENT_PORT_MIN = toString cfg.ports.agents.from;
    HIVE_AGENT_PORT_MAX = toString cfg.ports.agents.to;
    HIVE_TEMPORAL_ADDRESS = temporalAddress;
    HIVE_TEMPORAL_NAMESPACE = cfg.temporal.namespace;
    HIVE_TEMPORAL_PORT = toString cfg.ports.temporal;
    HIVE_TEMPORAL_UI_PORT = toString cfg.ports.temporalUi;
    # Which hyperhive the agents' flakes are pinned to (the package has no git checkout).
    HIVE_HYPERHIVE_FLAKE_URL = cfg.flake.url;
    HIVE_HYPERHIVE_REV = cfg.flake.rev;
  }
  // lib.optionalAttrs (temporalUiUrl != null) { HIVE_TEMPORAL_UI_URL = temporalUiUrl; }
  // lib.optionalAttrs (cfg.spawnHost != null) { HIVE_SPAWN_HOST = cfg.spawnHost; }
  // lib.optionalAttrs (cfg.database.url != null) { HIVE_DB_URL = cfg.database.url; }
  // temporalAuthEnvironment
  // cfg.extraEnvironment;

  temporalArgs = [
    (lib.getExe cfg.temporal.package)
    "server"
    "start-dev"
    "--ip"
    loopback
    "--port"
    (toString cfg.ports.temporal)
    "--db-filename"
    "${cfg.stateDir}/temporal.db"
    "--namespace"
    cfg.temporal.namespace
    "--log-level"
    "warn"
    "--sqlite-pragma"
    "journal_mode=wal"
    # As hyperhive/embedded_temporal.py: the agents' workflows are searchable by HiveAgent, and
    # the dev server's default poll rate adds ~30 ms to every workflow task.
    "--search-attribute"
    "HiveAgent=Keyword"
    "--dynamic-config-value"
    "history.transferProcessorMaxPollRPS=1000"
  ]
  ++ (
    if cfg.temporal.ui.enable then
      [
        "--ui-ip"
        loopback
        "--ui-port"
        (toString cfg.ports.temporalUi)
      ]
    else
      [ "--headless" ]
  );

  hiveCli = pkgs.writeShellScriptBin "hive" ''
    # `hive` with the environment of hive-c0re.service (state dir, Temporal, run dir).
    ${lib.concatStringsSep "\n" (
      lib.mapAttrsToList (name: value: "export ${name}=${lib.escapeShellArg value}") hiveEnvironment
    )}
    exec ${lib.getExe' cfg.package "hive"} "$@"
  '';

  port =
    default: what:
    lib.mkOption {
      type = lib.types.port;
      inherit default;
      description = what;
    };
in
{
  options.services.hive-c0re = {
    enable = lib.mkEnableOption "hive-c0re, the hyperhive host daemon";

    package = lib.mkOption {
      type = lib.types.package;
      # A PostgreSQL store needs psycopg, which only hyperhive-postgres has.
      default =
        if postgresDatabase then
          self.packages.${system}.hyperhive-postgres
        else
          self.packages.${system}.default;
      defaultText = lib.literalExpression ''
        if database.url is a postgresql URL
        then hyperhive.packages.''${pkgs.system}.hyperhive-postgres
        else hyperhive.packages.''${pkgs.system}.default'';
      description = ''
        The hyperhive package (`hive`, `hive-agent`). A PostgreSQL database.url needs one with
        psycopg (hyperhive-postgres, the default then).
      '';
    };

    hostId = lib.mkOption {
      type = lib.types.strMatching hostIdPattern;
      default = "local";
      example = "beta";
      description = ''
        This host's id (HIVE_HOST_ID): its agents, containers and task queue hive-host-<id>. Hosts
        that share a Temporal cluster (temporal.address) and a PostgreSQL store (database.url)
        each need their own. Changing it leaves the agents spawned under the old id unserved.
      '';
    };

    spawnHost = lib.mkOption {
      type = lib.types.nullOr (lib.types.strMatching hostIdPattern);
      default = null;
      example = "alpha";
      description = ''
        Host id new agents are spawned on (HIVE_SPAWN_HOST). null: the up host with the fewest
        agents.
      '';
    };

    database = {
      url = lib.mkOption {
        type = lib.types.nullOr (lib.types.strMatching "[A-Za-z0-9_+]+://[^[:space:]]*");
        default = null;
        example = "postgresql+psycopg://hive@db.internal/hive";
        description = ''
          SQLAlchemy URL of the store (HIVE_DB_URL); null: SQLite at stateDir/hive.db. Several
          hosts share one PostgreSQL. It ends up in the Nix store, so it must not carry a
          password: use passwordFile, or peer (unix socket) or certificate authentication.
        '';
      };
      passwordFile =
        secretFile "/run/secrets/hive-pgpass"
          "the database password, as a pgpass file given to libpq as PGPASSFILE: lines of `host:port:database:user:password` (`*` matches any), owned by root, mode 0600 (libpq ignores a file that group or others may read)";
    };

    stateDir = lib.mkOption {
      type = lib.types.path;
      default = "/var/lib/hyperhive";
      description = ''
        Persistent state (HIVE_STATE_DIR): the SQLite store, the embedded Temporal's
        temporal.db, the agents' config repos and homes. Owned by root, mode 0750.
      '';
    };

    bindHost = lib.mkOption {
      type = lib.types.str;
      default = loopback;
      description = ''
        Address the dashboard and agent pages bind to (HIVE_BIND_HOST). Keep it on loopback: agent
        containers must not reach them (reach them from elsewhere through an SSH tunnel or a
        reverse proxy with authentication).
      '';
    };

    accessToken.enable = lib.mkOption {
      type = lib.types.bool;
      default = true;
      description = ''
        The dashboard and agent pages ask for an access token (HIVE_ACCESS_TOKEN_REQUIRED): on a
        shared host every local account reaches loopback. hive-c0re keeps the token in
        <state dir>/secrets/access-token and writes a copy for the admins to
        ${runDir}/access-token (mode 0640, group adminGroup); `hive urls` prints the page links
        with it, and scripts send `Authorization: Bearer $(cat ${runDir}/access-token)`.
      '';
    };

    ports = {
      dashboard = port 7000 "Dashboard, broker API and /health (HIVE_DASHBOARD_PORT).";
      manager = port 8000 "hm1nd's agent page (HIVE_MANAGER_PORT).";
      agents = {
        from = port 8100 "First port of the agent pages (HIVE_AGENT_PORT_MIN).";
        to = port 8999 "Last port of the agent pages (HIVE_AGENT_PORT_MAX).";
      };
      temporal = port 7233 "gRPC port of the embedded Temporal server (HIVE_TEMPORAL_PORT).";
      temporalUi = port 8233 "Web UI port of the embedded Temporal server (temporal.ui.enable).";
    };

    temporal = {
      address = lib.mkOption {
        type = lib.types.nullOr lib.types.str;
        default = null;
        example = "temporal.internal:7233";
        description = ''
          host:port of a Temporal cluster (HIVE_TEMPORAL_ADDRESS). null runs hive-temporal.service:
          `temporal server start-dev` on 127.0.0.1:ports.temporal with its DB at
          stateDir/temporal.db. A cluster needs the search attribute HiveAgent (Keyword).
        '';
      };
      namespace = lib.mkOption {
        type = lib.types.str;
        default = "default";
        description = "Temporal namespace (HIVE_TEMPORAL_NAMESPACE).";
      };
      tls = {
        enable = lib.mkOption {
          type = lib.types.bool;
          default = false;
          description = ''
            Speak TLS to temporal.address (HIVE_TEMPORAL_TLS), verifying the server against the
            system CAs unless caFile is set. Any other tls option, or apiKeyFile, turns TLS on too.
          '';
        };
        caFile = lib.mkOption {
          type = lib.types.nullOr lib.types.path;
          default = null;
          example = "/etc/ssl/temporal-ca.pem";
          description = ''
            PEM CA bundle the server's certificate is verified against (HIVE_TEMPORAL_TLS_CA), for
            a cluster with a private CA. Public: a path literal may put it in the Nix store.
          '';
        };
        certFile = lib.mkOption {
          type = lib.types.nullOr lib.types.path;
          default = null;
          example = "/etc/hyperhive/temporal-client.pem";
          description = ''
            PEM client certificate for mTLS (HIVE_TEMPORAL_TLS_CERT); needs keyFile.
          '';
        };
        keyFile =
          secretFile "/run/secrets/temporal-client.key"
            "the client private key for mTLS (HIVE_TEMPORAL_TLS_KEY)";
        serverName = lib.mkOption {
          type = lib.types.nullOr (lib.types.strMatching "[A-Za-z0-9.-]+");
          default = null;
          example = "temporal.internal";
          description = ''
            Name the server's certificate must carry, also sent as SNI
            (HIVE_TEMPORAL_TLS_SERVER_NAME); null: the host of temporal.address.
          '';
        };
      };
      apiKeyFile =
        secretFile "/run/secrets/temporal-api-key"
          "the API key (HIVE_TEMPORAL_API_KEY_FILE), e.g. for Temporal Cloud";
      package = lib.mkOption {
        type = lib.types.package;
        default = pkgs.temporal-cli;
        defaultText = lib.literalExpression "pkgs.temporal-cli";
        description = "The `temporal` CLI: the embedded server, and `temporal …` for operators.";
      };
      ui = {
        enable = lib.mkOption {
          type = lib.types.bool;
          default = false;
          description = ''
            Serve the embedded server's Web UI on 127.0.0.1:ports.temporalUi, which the dashboard,
            `hive urls` and approvals then link workflow histories to (HIVE_TEMPORAL_UI_URL). Off,
            the server runs with --headless (no UI) and there are no such links.
          '';
        };
        url = lib.mkOption {
          type = lib.types.nullOr (lib.types.strMatching "https?://[^[:space:]]+");
          default = null;
          example = "https://temporal.example.org";
          description = ''
            The Temporal Web UI's URL for those links (HIVE_TEMPORAL_UI_URL). null: the embedded
            server's UI, http://127.0.0.1:ports.temporalUi, when ui.enable is on, else no links.
            Set it when people reach the UI elsewhere (a reverse proxy, a tunnel on another port)
            or for a cluster's UI (temporal.address).
          '';
        };
      };
    };

    adminGroup = lib.mkOption {
      type = lib.types.str;
      default = "hive-admin";
      description = ''
        Group of the hive's operators: it owns the run dir (mode 0750) and the admin socket
        <run dir>/host.sock (mode 0660, HIVE_ADMIN_GROUP), which the `hive` CLI speaks to.
      '';
    };

    backend = lib.mkOption {
      type = lib.types.enum [
        "nixos"
        "bwrap"
        "process"
        "auto"
      ];
      default = "nixos";
      description = "Container backend (HIVE_CONTAINER_BACKEND); nixos: nixos-containers.";
    };

    flake = {
      url = lib.mkOption {
        type = lib.types.str;
        default = "path:${self.outPath}";
        defaultText = lib.literalExpression ''"path:''${hyperhive.outPath}"'';
        description = ''
          The hyperhive flake every agent container is built from (its generated flake's
          `hyperhive` input; HIVE_HYPERHIVE_FLAKE_URL). The default is this flake's store path, so
          containers build offline from what the host already has (commit flake.lock).
        '';
      };
      rev = lib.mkOption {
        type = lib.types.str;
        default = self.narHash or self.outPath;
        defaultText = lib.literalExpression "hyperhive.narHash";
        description = ''
          The revision recorded in each agent's pin (HIVE_HYPERHIVE_REV); agents pinned to another
          are updated by the hive-auto-update schedule.
        '';
      };
    };

    extraEnvironment = lib.mkOption {
      type = lib.types.attrsOf lib.types.str;
      default = { };
      example = {
        HIVE_MAX_TURNS_PER_HOUR = "30";
        HIVE_AGENT_EXTRA_ENV = ''{"ANTHROPIC_BASE_URL": "https://llm-gateway.internal"}'';
      };
      description = ''
        More environment for hive-c0re and the `hive` CLI: any HIVE_* setting (see the
        configuration table in README.md), overriding the module's.
      '';
    };

    isolateContainers = lib.mkOption {
      type = lib.types.bool;
      default = true;
      description = ''
        Refuse new connections from agent containers (interfaces ve-*) to the host itself, except
        DNS. This holds even if root inside a container removes its own egress filter.
      '';
    };

    nat.externalInterface = lib.mkOption {
      type = lib.types.nullOr lib.types.str;
      default = null;
      example = "eth0";
      description = "Interface the containers' NAT egress leaves by (null: any).";
    };
  };

  config = lib.mkIf cfg.enable (
    lib.mkMerge [
      {
        assertions = [
          {
            assertion = cfg.ports.agents.from <= cfg.ports.agents.to;
            message =
              "services.hive-c0re.ports.agents: from (${toString cfg.ports.agents.from}) "
              + "is above to (${toString cfg.ports.agents.to})";
          }
          {
            assertion = embeddedTemporal -> !temporalAuthSet;
            message =
              "services.hive-c0re.temporal.tls and temporal.apiKeyFile are for a Temporal "
              + "cluster: set temporal.address (the embedded server speaks no TLS)";
          }
          {
            assertion = (tls.certFile == null) == (tls.keyFile == null);
            message =
              "services.hive-c0re.temporal.tls: certFile and keyFile go together (mTLS needs "
              + "the client certificate and its key)";
          }
          {
            assertion = lib.all (f: f == null || !lib.hasPrefix "/nix/store/" f) [
              tls.keyFile
              cfg.temporal.apiKeyFile
            ];
            message =
              "services.hive-c0re.temporal: keyFile and apiKeyFile must not be in the Nix store, "
              + "which every local user can read (use e.g. /run/secrets/…)";
          }
          {
            assertion = !dbUrlHasPassword;
            message =
              "services.hive-c0re.database.url must not carry a password (user:password@ or "
              + "password=): it would be in the Nix store, which every local user can read. Put it "
              + "in a pgpass file given as database.passwordFile, or use peer (unix socket) or "
              + "certificate authentication";
          }
          {
            assertion =
              cfg.database.passwordFile == null
              || !lib.hasPrefix "/nix/store/" cfg.database.passwordFile;
            message =
              "services.hive-c0re.database.passwordFile must not be in the Nix store, which every "
              + "local user can read (use e.g. /run/secrets/…)";
          }
          {
            assertion = cfg.database.passwordFile != null -> postgresDatabase;
            message =
              "services.hive-c0re.database.passwordFile is for a PostgreSQL store: set "
              + "database.url to a postgresql+psycopg:// URL";
          }
        ];
        warnings = lib.optional (cfg.isolateContainers && !config.networking.firewall.enable) ''
          services.hive-c0re.isolateContainers needs networking.firewall.enable: without the
          firewall, agent containers can reach services on the host's addresses.
        '';

        # Since NixOS 25.11 this defaults to `config.containers != { }`: hive-c0re's containers
        # are imperative, so it must be set.
        boot.enableContainers = true;
        nix.settings.experimental-features = [
          "nix-command"
          "flakes"
        ];

        # Egress for the containers' private networks.
        networking.nat = {
          enable = true;
          internalInterfaces = [ "ve-+" ];
          externalInterface = lib.mkIf (natInterface != null) natInterface;
        };

        users.groups.${cfg.adminGroup} = { };

        environment.systemPackages = [
          hiveCli
          cfg.temporal.package
        ];

        systemd.tmpfiles.rules = lib.optional (!underVarLib) "d ${cfg.stateDir} 0750 root root -";

        systemd.services.hive-c0re = {
          description = "hive-c0re, the hyperhive host daemon";
          wantedBy = [ "multi-user.target" ];
          # A cluster, and a PostgreSQL on another machine, are reached over the network; the
          # embedded server is this host's own unit, and so may the PostgreSQL be.
          after = [
            "network.target"
          ]
          ++ lib.optional embeddedTemporal "hive-temporal.service"
          ++ lib.optional (!embeddedTemporal || remoteDatabase) "network-online.target"
          ++ lib.optional (postgresDatabase && localDatabase) "postgresql.service";
          wants = lib.optional (!embeddedTemporal || remoteDatabase) "network-online.target";
          requires = lib.optional embeddedTemporal "hive-temporal.service";
          path = [
            pkgs.nixos-container
            config.nix.package
            pkgs.git
            config.systemd.package
            pkgs.coreutils
            pkgs.util-linux
            pkgs.findutils
            pkgs.e2fsprogs
            pkgs.iproute2
          ]
          ++ lib.optional (cfg.backend == "bwrap") pkgs.bubblewrap;
          # PGPASSFILE (libpq's): only the path is in the store; the `hive` CLI needs no database.
          environment =
            config.nix.envVars
            // {
              HOME = cfg.stateDir;
            }
            // lib.optionalAttrs (cfg.database.passwordFile != null) {
              PGPASSFILE = cfg.database.passwordFile;
            }
            // hiveEnvironment;
          serviceConfig = {
            ExecStart = "${lib.getExe' cfg.package "hive"} c0re";
            # The run dir belongs to the admins' group.
            ExecStartPre = "${pkgs.coreutils}/bin/chgrp ${cfg.adminGroup} ${runDir}";
            StateDirectory = lib.mkIf underVarLib stateDirectory;
            StateDirectoryMode = "0750";
            RuntimeDirectory = "hyperhive";
            RuntimeDirectoryMode = "0750";
            # Running containers bind-mount <run dir>/agents/<name>: a restart must not remove it.
            RuntimeDirectoryPreserve = "yes";
            # nixos-container create/update write ./.tmp in the working dir.
            WorkingDirectory = cfg.stateDir;
            Restart = "on-failure";
            RestartSec = 5;
          };
        };
      }

      (lib.mkIf embeddedTemporal {
        systemd.services.hive-temporal = {
          description = "Temporal dev server for hive-c0re";
          wantedBy = [ "multi-user.target" ];
          after = [ "network.target" ];
          before = [ "hive-c0re.service" ];
          environment.HOME = cfg.stateDir;
          serviceConfig = {
            ExecStart = lib.escapeShellArgs temporalArgs;
            StateDirectory = lib.mkIf underVarLib stateDirectory;
            StateDirectoryMode = "0750";
            WorkingDirectory = cfg.stateDir;
            Restart = "on-failure";
            RestartSec = 5;
            # It needs its DB and loopback, nothing else.
            ReadWritePaths = [ cfg.stateDir ];
            ProtectSystem = "strict";
            ProtectHome = true;
            PrivateTmp = true;
            PrivateDevices = true;
            NoNewPrivileges = true;
            ProtectKernelTunables = true;
            ProtectKernelModules = true;
            ProtectControlGroups = true;
            RestrictAddressFamilies = [
              "AF_INET"
              "AF_INET6"
              "AF_UNIX"
            ];
          };
        };
      })

      # Host side of the containers' isolation (nix/agent.nix has the container side).
      (lib.mkIf (cfg.isolateContainers && !config.networking.nftables.enable) {
        networking.firewall.extraCommands = ''
          # hive-c0re: agent containers (ve-*) may open no connection to the host but DNS.
          ip46tables -I nixos-fw 1 -i ve-+ -p tcp ! --dport 53 -m conntrack --ctstate NEW \
            -j nixos-fw-refuse
          ip46tables -I nixos-fw 1 -i ve-+ -p udp ! --dport 53 -m conntrack --ctstate NEW \
            -j nixos-fw-refuse
        '';
      })
      (lib.mkIf (cfg.isolateContainers && config.networking.nftables.enable) {
        networking.nftables.tables.hive-c0re-isolation = {
          family = "inet";
          content = ''
            # hive-c0re: agent containers (ve-*) may open no connection to the host but DNS.
            chain input {
              type filter hook input priority filter - 1; policy accept;
              iifname "ve-*" ct state new meta l4proto { tcp, udp } th dport != 53 reject
            }
          '';
        };
      })
    ]
  );
}
