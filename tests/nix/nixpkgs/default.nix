# `import nixpkgs { system; config; }` for flake.nix when its nixpkgs input is the stub
# (tests/nix/stub.nix). Which MCP SDK it has comes from HYPERHIVE_STUB_MCP_VERSION and
# HYPERHIVE_STUB_MCP2_VERSION in the environment, since an import cannot take more arguments.
args: (import ../stub.nix).mkPkgs args
