# A hand-written stand-in for nixpkgs (lib, pkgs, lib.nixosSystem and a small module system),
# enough to evaluate flake.nix's outputs and nix/*.nix with the Debian nix-bin (Nix 2.8), which
# cannot evaluate nixpkgs itself. tests/nix/eval.nix drives it; tests/nix/test_nix_files.py checks
# what comes out.
#
# It follows nixpkgs where the modules depend on it, and is stricter where that catches mistakes:
# - mkIf is { _type = "if"; condition; content; }, mkMerge { _type = "merge"; contents; },
#   mkOverride/mkDefault/mkForce { _type = "override"; priority; content; }; definitions are pushed
#   down without evaluating conditions (as nixpkgs' pushDownProperties), so modules may read
#   `config` in their conditions; the lowest priority wins, lists concatenate, `lines` join.
# - options need a type and a description; defaults and final values are type-checked.
# - getExe needs meta.mainProgram; unfree packages throw unless nixpkgs' config allows them.
# - a module may read only options something declares (nixosBase declares the NixOS ones used).
let
  inherit (builtins)
    all
    any
    attrNames
    attrValues
    concatLists
    concatMap
    concatStringsSep
    elem
    filter
    foldl'
    functionArgs
    hasAttr
    head
    intersectAttrs
    isAttrs
    isBool
    isFunction
    isInt
    isList
    isPath
    isString
    listToAttrs
    mapAttrs
    match
    parseDrvName
    removeAttrs
    replaceStrings
    stringLength
    substring
    typeOf
    ;

  envOr =
    name: fallback:
    let
      v = builtins.getEnv name;
    in
    if v == "" then fallback else v;

  unique = foldl' (acc: x: if elem x acc then acc else acc ++ [ x ]) [ ];

  lib = rec {
    inherit
      all
      any
      attrNames
      attrValues
      concatStringsSep
      elem
      filter
      head
      mapAttrs
      ;
    inherit unique;

    optional = cond: x: if cond then [ x ] else [ ];
    optionals = cond: xs: if cond then xs else [ ];
    optionalString = cond: s: if cond then s else "";
    optionalAttrs = cond: a: if cond then a else { };
    concatMapStringsSep = sep: f: xs: concatStringsSep sep (map f xs);
    mapAttrsToList = f: a: map (n: f n a.${n}) (attrNames a);
    filterAttrs =
      pred: a:
      listToAttrs (
        concatMap (n: if pred n a.${n} then [ (nameValuePair n a.${n}) ] else [ ]) (attrNames a)
      );
    nameValuePair = name: value: { inherit name value; };
    genAttrs = names: f: listToAttrs (map (n: nameValuePair n (f n)) names);
    recursiveUpdate =
      a: b:
      a
      // mapAttrs (
        n: v:
        if isAttrs v && isAttrs (a.${n} or null) && !isDrv v then recursiveUpdate a.${n} v else v
      ) b;
    hasPrefix = prefix: s: substring 0 (stringLength prefix) s == prefix;
    removePrefix =
      prefix: s:
      if hasPrefix prefix s then substring (stringLength prefix) (stringLength s) s else s;
    versionAtLeast = v: other: builtins.compareVersions v other >= 0;
    # As nixpkgs: safe words stay bare, anything else is single-quoted.
    escapeShellArg =
      arg:
      let
        s = toString arg;
      in
      if match "[[:alnum:],._+:@%/-]+" s == null then
        "'${replaceStrings [ "'" ] [ "'\\''" ] s}'"
      else
        s;
    escapeShellArgs = concatMapStringsSep " " escapeShellArg;
    makeBinPath = xs: concatStringsSep ":" (map (p: "${p}/bin") xs);
    getName = x: x.pname or (parseDrvName x.name).name;
    getExe =
      x:
      let
        missing = throw "stub lib.getExe: ${getName x} has no meta.mainProgram";
      in
      "${x}/bin/${x.meta.mainProgram or missing}";
    getExe' = x: bin: "${x}/bin/${bin}";
    isDerivation = isDrv;

    licenses = {
      mit = {
        spdxId = "MIT";
        free = true;
      };
      asl20 = {
        spdxId = "Apache-2.0";
        free = true;
      };
      unfree = {
        shortName = "unfree";
        free = false;
      };
    };
    sourceTypes.binaryNativeCode = {
      shortName = "binaryNativeCode";
      isSource = false;
    };
    platforms.linux = [
      "x86_64-linux"
      "aarch64-linux"
    ];

    literalExpression = text: {
      _type = "literalExpression";
      inherit text;
    };

    mkOption =
      attrs:
      if !(attrs ? type) then
        throw "stub lib.mkOption: every option needs a type"
      else if !(attrs ? description) then
        throw "stub lib.mkOption: every option needs a description"
      else
        attrs // { _type = "option"; };
    mkEnableOption =
      name:
      mkOption {
        type = types.bool;
        default = false;
        example = true;
        description = "Whether to enable ${name}.";
      };
    mkIf = condition: content: {
      _type = "if";
      inherit condition content;
    };
    mkMerge = contents: {
      _type = "merge";
      inherit contents;
    };
    mkOverride = priority: content: {
      _type = "override";
      inherit priority content;
    };
    mkDefault = mkOverride 1000;
    mkForce = mkOverride 50;

    types =
      let
        mk =
          name: check: extra:
          {
            _type = "option-type";
            inherit name check;
          }
          // extra;
      in
      rec {
        str = mk "str" isString { };
        lines = mk "lines" isString { };
        bool = mk "bool" isBool { };
        int = mk "int" isInt { };
        port = mk "port" (x: isInt x && x >= 0 && x <= 65535) { };
        path = mk "path" (x: isPath x || (isString x && substring 0 1 x == "/")) { };
        package = mk "package" isDrv { };
        anything = mk "anything" (_: true) { };
        enum = values: mk "enum" (x: elem x values) { inherit values; };
        strMatching =
          pattern: mk "strMatching" (x: isString x && match pattern x != null) { inherit pattern; };
        nullOr = t: mk "nullOr" (x: x == null || t.check x) { elemType = t; };
        listOf = t: mk "listOf" (x: isList x && all t.check x) { elemType = t; };
        attrsOf =
          t:
          mk "attrsOf" (x: isAttrs x && !isDrv x && all t.check (attrValues x)) {
            elemType = t;
          };
        ints.between =
          lo: hi: mk "intBetween" (x: isInt x && x >= lo && x <= hi) { inherit lo hi; };
      };
  };

  isDrv = x: isAttrs x && (x.type or null) == "derivation";
  propType = x: if isAttrs x then x._type or null else null;
  isOption = x: propType x == "option";

  # ------------------------------------------------------------------------------------------
  # packages

  mkDrv =
    name: attrs:
    {
      type = "derivation";
      inherit name;
      pname = (parseDrvName name).name;
      outPath = "/nix/store/00000000000000000000000000000000-${name}";
      meta = { };
    }
    // attrs;

  mkPkgs =
    {
      system ? "x86_64-linux",
      config ? { },
      overlays ? [ ],
      # Which MCP SDK this nixpkgs has: eval.nix's callers set these (see nixpkgs/default.nix).
      mcpVersion ? envOr "HYPERHIVE_STUB_MCP_VERSION" "2.3.0",
      mcp2Version ? envOr "HYPERHIVE_STUB_MCP2_VERSION" null,
    }:
    let
      unfreeAllowed =
        pkg: (config.allowUnfree or false) || (config.allowUnfreePredicate or (_: false)) pkg;
      unfree =
        name: attrs:
        let
          meta = (attrs.meta or { }) // {
            license = lib.licenses.unfree;
          };
          drv = mkDrv name (attrs // { inherit meta; });
        in
        if unfreeAllowed drv then
          drv
        else
          throw "stub nixpkgs: Package ‘${name}’ has an unfree license, refusing to evaluate.";
      tool = name: mainProgram: mkDrv name { meta.mainProgram = mainProgram; };

      python3Packages =
        let
          py =
            name: version:
            mkDrv "python3.13-${name}-${version}" {
              pname = name;
              inherit version;
            };
        in
        {
          buildPythonApplication =
            attrs:
            if !(attrs.pyproject or false) then
              throw "stub buildPythonApplication: set pyproject = true"
            else
              mkDrv "${attrs.pname}-${attrs.version}" (attrs // (attrs.passthru or { }));
          # As nixpkgs: root is a string (expanded at run time), scripts are PEP 621's.
          mkPythonEditablePackage =
            {
              pname,
              version,
              root,
              dependencies ? [ ],
              scripts ? { },
              ...
            }:
            if !(isString root) then
              throw "stub mkPythonEditablePackage: root must be a string"
            else
              mkDrv "python3.13-${pname}-${version}" {
                inherit
                  pname
                  version
                  root
                  dependencies
                  scripts
                  ;
                editable = true;
              };
          mcp = py "mcp" mcpVersion;
          mcp_1 = py "mcp" "1.27.1";
        }
        // lib.optionalAttrs (mcp2Version != null) { mcp_2 = py "mcp" mcp2Version; }
        // lib.genAttrs [
          "temporalio"
          "fastapi"
          "uvicorn"
          "sqlmodel"
          "jinja2"
          "sse-starlette"
          "prometheus-client"
          "pydantic"
          "pydantic-settings"
          "psycopg"
          "hatchling"
          "pytest"
          "pytest-asyncio"
          "pytest-timeout"
          "httpx"
          "mypy"
        ] (n: py n "1.0");

      pkgs = {
        inherit lib system config;
        stdenv = {
          hostPlatform.system = system;
          mkDerivation =
            attrs:
            if !(attrs ? pname && attrs ? version) then
              throw "stub stdenv.mkDerivation: give pname and version"
            else
              mkDrv "${attrs.pname}-${attrs.version}" attrs;
        };
        # A fixed-output fetch: it needs a hash.
        fetchurl =
          {
            url,
            hash,
          }:
          mkDrv (baseNameOf url) { inherit url hash; };
        unzip = tool "unzip-6.0" "unzip";
        autoPatchelfHook = mkDrv "auto-patchelf-hook" { };
        callPackage = callPackageWith pkgs;
        inherit python3Packages;
        python3 = tool "python3-3.13" "python3" // {
          pkgs = python3Packages;
          withPackages = f: mkDrv "python3-3.13-env" { pythonPackages = f python3Packages; };
        };
        writeShellScriptBin =
          name: text:
          mkDrv name {
            inherit text;
            meta.mainProgram = name;
          };
        runCommand =
          name: env: script:
          mkDrv name { inherit env script; };
        mkShell = attrs: mkDrv "nix-shell" attrs;
        testers.runNixOSTest = test: mkDrv "vm-test-run-${test.name}" { inherit test; };

        temporal-cli = tool "temporal-cli-1.8.0" "temporal";
        claude-code = unfree "claude-code-2.1.90" {
          meta.mainProgram = "claude";
          # For the tests: what this nixpkgs' config lets through.
          _unfreeAllowed = {
            claude-code = unfreeAllowed (mkDrv "claude-code-2.1.90" { });
            other = unfreeAllowed (mkDrv "some-other-unfree-1.0" { });
          };
        };
        nixos-container = tool "nixos-container" "nixos-container";
        nix = tool "nix-2.31" "nix";
        systemd = tool "systemd-258" "systemctl";
        git = tool "git-2.51" "git";
        coreutils = mkDrv "coreutils-9.8" { };
        util-linux = mkDrv "util-linux-2.41" { };
        findutils = mkDrv "findutils-4.10" { };
        e2fsprogs = mkDrv "e2fsprogs-1.47" { };
        iproute2 = tool "iproute2-6.16" "ip";
        procps = tool "procps-4.0" "ps";
        bubblewrap = tool "bubblewrap-0.11" "bwrap";
        curl = tool "curl-8.16" "curl";
        ruff = tool "ruff-0.14" "ruff";
        nodejs = tool "nodejs-22" "node";
        postgresql = mkDrv "postgresql-17" { };
        nixfmt = tool "nixfmt-1.1" "nixfmt";
      };
    in
    if overlays != [ ] then throw "stub nixpkgs: overlays are not supported" else pkgs;

  callPackageWith =
    autoArgs: fn: args:
    let
      f = if isFunction fn then fn else import fn;
      call =
        args:
        f (intersectAttrs (functionArgs f) autoArgs // args)
        // {
          override = more: call (args // more);
        };
    in
    call args;

  # ------------------------------------------------------------------------------------------
  # the module system

  absent = {
    _type = "absent";
  };
  isAbsent = x: propType x == "absent";

  # The properties on a definition, down to its value (conditions not evaluated).
  peel = d: if elem (propType d) [ "if" "override" ] then peel d.content else d;
  isNamespaceDef =
    d:
    let
      p = peel d;
    in
    if propType p == "merge" then
      any isNamespaceDef p.contents
    else
      isAttrs p && !isDrv p && !(p ? _type);

  # An attrset definition as plain attrsets whose values carry its properties.
  pushDown =
    d:
    let
      t = propType d;
    in
    if t == "merge" then
      concatMap pushDown d.contents
    else if t == "if" then
      map (mapAttrs (_: lib.mkIf d.condition)) (pushDown d.content)
    else if t == "override" then
      map (mapAttrs (_: lib.mkOverride d.priority)) (pushDown d.content)
    else if isAttrs d && !isDrv d && !(d ? _type) then
      [ d ]
    else
      [ ];

  # A leaf definition's values with their priorities; false conditions drop out.
  discharge =
    priority: d:
    let
      t = propType d;
    in
    if t == "if" then
      (if d.condition then discharge priority d.content else [ ])
    else if t == "override" then
      discharge d.priority d.content
    else if t == "merge" then
      concatMap (discharge priority) d.contents
    else
      [ { inherit priority; value = d; } ];

  showPath = concatStringsSep ".";

  mergeValues =
    path: typeName: values:
    if typeName == "listOf" || all isList values then
      concatLists values
    else if typeName == "lines" then
      concatStringsSep "\n" values
    else if all (v: v == head values) values then
      head values
    else
      throw "stub modules: ${showPath path} has conflicting definitions";

  # The value of one option (or undeclared leaf) from its definitions; absent if none.
  mergeDefs =
    path: typeName: defs:
    let
      discharged = concatMap (discharge 100) defs;
      best = foldl' (m: d: if d.priority < m then d.priority else m) 10000 discharged;
      winners = map (d: d.value) (filter (d: d.priority == best) discharged);
    in
    if winners == [ ] then absent else mergeValues path typeName winners;

  evalOption =
    path: opt: defs:
    let
      merged = mergeDefs path opt.type.name defs;
      value = if !isAbsent merged then merged else if opt ? default then opt.default else absent;
    in
    if isAbsent value || opt.type.check value then
      value
    else
      throw "stub modules: ${showPath path} = ${typeOf value} is not a valid ${opt.type.name}";

  # The config at `path`: options from `decl` (an option, a tree of them, or null), values from
  # the definitions `defs`; undeclared attrsets are namespaces, other undeclared values leaves.
  evalNode =
    path: decl: defs:
    if isOption decl then
      evalOption path decl defs
    else if (decl != null && defs == [ ]) || (defs != [ ] && all isNamespaceDef defs) then
      let
        pushed = concatMap pushDown defs;
        declared = if decl == null then [ ] else attrNames decl;
        names = unique (declared ++ concatMap attrNames pushed);
        child =
          n:
          evalNode (path ++ [ n ]) (if decl == null then null else decl.${n} or null) (
            concatMap (d: lib.optional (hasAttr n d) d.${n}) pushed
          );
      in
      # Names do not depend on conditions (modules read `config` in them); absent values stay
      # until `clean`.
      lib.genAttrs names child
    else
      mergeDefs path "" defs;

  # The config without the values no definition or default gave (and without namespaces that
  # held nothing else).
  isNamespace = v: isAttrs v && !isDrv v && !(v ? _type);
  clean =
    v:
    if isNamespace v then
      lib.filterAttrs (n: x: !(isNamespace v.${n} && v.${n} != { } && x == { })) (
        mapAttrs (_: clean) (lib.filterAttrs (_: x: !isAbsent x) v)
      )
    else if isList v then
      map clean v
    else
      v;

  mergeDecls =
    a: b:
    a
    // mapAttrs (
      n: v:
      if !(a ? ${n}) then
        v
      else if isOption v || isOption a.${n} then
        throw "stub modules: option ${n} is declared twice"
      else
        mergeDecls a.${n} v
    ) b;

  evalModules =
    {
      modules,
      pkgs,
      specialArgs ? { },
    }:
    let
      args = {
        inherit config lib pkgs;
        options = declarations;
      }
      // specialArgs;
      load =
        m:
        let
          m1 = if isPath m || isString m then import m else m;
          m2 = if isFunction m1 then m1 args else m1;
          # Without options/config every attribute but imports is config (the shorthand).
          m3 =
            if m2 ? options || m2 ? config then
              m2
            else
              {
                imports = m2.imports or [ ];
                config = removeAttrs m2 [ "imports" ];
              };
        in
        [ m3 ] ++ concatMap load (m3.imports or [ ]);
      loaded = concatMap load modules;
      declarations = foldl' mergeDecls { } (map (m: m.options or { }) loaded);
      config = evalNode [ ] declarations (map (m: m.config or { }) loaded);
    in
    {
      config = clean config;
      options = describeOptions [ ] declarations config;
    };

  # Every option as "a.b.c" = { type; default; value; … }, JSON-friendly.
  describeOptions =
    path: decls: config:
    foldl' (
      acc: n:
      let
        d = decls.${n};
        p = path ++ [ n ];
        value = config.${n} or null;
      in
      acc
      // (
        if isOption d then
          {
            ${showPath p} = {
              type = d.type.name;
              description = d.description;
              value = if value == null || isAbsent value then null else value;
            }
            // lib.optionalAttrs (d ? default) {
              inherit (d) default;
              defaultValid = d.type.check d.default;
            }
            // lib.optionalAttrs (d ? defaultText) { inherit (d) defaultText; }
            // lib.optionalAttrs (d.type ? values) { inherit (d.type) values; }
            // lib.optionalAttrs (d.type ? pattern) { inherit (d.type) pattern; }
            // lib.optionalAttrs (d.type ? elemType) { elemType = d.type.elemType.name; };
          }
        else
          describeOptions p d (if isAttrs value then value else { })
      )
    ) { } (attrNames decls);

  # The NixOS options hyperhive's modules read or define with merge semantics.
  nixosBase =
    { pkgs, ... }:
    let
      opt = type: default: lib.mkOption {
        inherit type default;
        description = "stub NixOS option";
      };
      inherit (lib) types;
    in
    {
      options = {
        assertions = opt (types.listOf types.anything) [ ];
        warnings = opt (types.listOf types.str) [ ];
        boot.isContainer = opt types.bool false;
        boot.enableContainers = opt types.bool false;
        environment.systemPackages = opt (types.listOf types.package) [ ];
        networking = {
          enableIPv6 = opt types.bool true;
          nftables.enable = opt types.bool false;
          firewall = {
            enable = opt types.bool true;
            extraCommands = opt types.lines "";
            extraStopCommands = opt types.lines "";
            allowedTCPPorts = opt (types.listOf types.port) [ ];
          };
          nat = {
            enable = opt types.bool false;
            internalInterfaces = opt (types.listOf types.str) [ ];
            externalInterface = opt (types.nullOr types.str) null;
          };
        };
        nix = {
          package = opt types.package pkgs.nix;
          # The real default is {} on current Nix; a value shows that the module merges it.
          envVars = opt (types.attrsOf types.str) { NIX_STUB_ENV = "from nix.envVars"; };
          settings.experimental-features = opt (types.listOf types.str) [ ];
        };
        systemd.package = opt types.package pkgs.systemd;
        systemd.tmpfiles.rules = opt (types.listOf types.str) [ ];
        system.build.toplevel = opt types.package (mkDrv "nixos-system-stub" { });
      };
    };

  nixosSystem =
    {
      system,
      modules,
      specialArgs ? { },
    }:
    evalModules {
      modules = [ nixosBase ] ++ modules;
      pkgs = mkPkgs { inherit system; };
      inherit specialArgs;
    };

  # A nixpkgs flake input: `import nixpkgs { … }` is mkPkgs (nixpkgs/default.nix), and lib has
  # nixosSystem.
  nixpkgs = {
    outPath = toString ./nixpkgs;
    lib = lib // {
      inherit nixosSystem;
    };
  };

  # A flake's outputs with `self` (outPath a fake store path, so nothing is copied).
  flake =
    {
      root,
      inputs,
    }:
    let
      outputs = (import (root + "/flake.nix")).outputs (inputs // { inherit self; });
      self = outputs // {
        outPath = "/nix/store/00000000000000000000000000000000-source";
        narHash = "sha256-0000000000000000000000000000000000000000000=";
        inherit inputs outputs;
      };
    in
    self;
in
{
  inherit
    lib
    mkDrv
    mkPkgs
    evalModules
    nixosBase
    nixosSystem
    nixpkgs
    flake
    ;
}
